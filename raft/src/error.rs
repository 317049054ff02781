//! The error type of the log store. Callers branch on it: `Corrupt` and `Gap` mean the data on disk
//! cannot be trusted (stop, page an operator), `Closed` and `WriterFailed` mean this store instance
//! is unusable (restart), `Io` may be transient.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in [`SegmentLogStore`](crate::SegmentLogStore) and its helpers.
#[derive(thiserror::Error, Debug)]
pub enum LogError {
    /// A file system call failed.
    #[error("log i/o failed while {op} {path}: {source}")]
    Io {
        /// What the store was doing, e.g. "reading segment".
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A file holds bytes that fail validation (checksum, framing, header, index). The store never
    /// serves such a record.
    #[error("log file {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// Segment files do not form one contiguous run of log indexes.
    #[error(
        "log segment {path} breaks index continuity: expected first index {expected}, found {found}"
    )]
    Gap {
        path: PathBuf,
        expected: u64,
        found: u64,
    },

    /// A small state file could not be encoded or decoded with postcard.
    #[error("log codec failed: {0}")]
    Codec(#[from] postcard::Error),

    /// An entry's application data could not be encoded.
    #[error("log entry does not encode: {0}")]
    Encode(String),

    /// The log's configuration is unusable.
    #[error("invalid log config: {0}")]
    Config(String),

    /// An append does not continue the log.
    #[error("append rejected: entry index {found} does not continue the log at index {expected}")]
    NonContiguous { expected: u64, found: u64 },

    /// An append targets an index that was already purged.
    #[error("append rejected: entry index {index} is not after the purged index {purged}")]
    BeforePurged { index: u64, purged: u64 },

    /// A single record is larger than the format allows.
    #[error("log record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },

    /// Recovery found less log than was durably committed before: records that were fsynced
    /// and acknowledged are unreadable (media corruption, not a torn tail). The store refuses
    /// to open rather than silently drop them.
    #[error(
        "log in {dir} recovers only up to index {recovered:?}, but entries up to {committed} were \
         committed after an fsync: acknowledged records are unreadable (see the corruption \
         warning above); refusing to start. If the previous run used flush = \"async\", the tail \
         may have been lost legitimately: start once with flush = \"async\" to accept the loss"
    )]
    CommittedLost {
        dir: PathBuf,
        committed: u64,
        recovered: Option<u64>,
    },

    /// The log ends below the snapshot the state machine restored from. The log is made durable
    /// before any snapshot that covers it, so this means acknowledged entries were lost; the
    /// store refuses to open and deletes nothing.
    #[error(
        "log in {dir} recovers only up to index {recovered:?}, but the state snapshot covers up to \
         {snapshot}: log entries the snapshot was built from are missing (damaged or deleted \
         segment files); refusing to start and deleting nothing"
    )]
    BehindSnapshot {
        dir: PathBuf,
        snapshot: u64,
        recovered: Option<u64>,
    },

    /// The log does not hold the entries right after the snapshot in use, so the state cannot
    /// be rebuilt.
    #[error(
        "log in {dir} starts at index {first}, but the state snapshot in use covers only up to \
         {snapshot}: the entries in between are missing; refusing to start"
    )]
    SnapshotGap {
        dir: PathBuf,
        snapshot: u64,
        first: u64,
    },

    /// Another store instance holds the directory lock.
    #[error("log directory {dir} is locked by another store instance")]
    Locked { dir: PathBuf },

    /// The background writer hit an I/O error earlier; after a failed write or fsync the page cache
    /// cannot be trusted, so the store refuses every further write until it is reopened.
    #[error("log writer failed earlier and refuses further writes: {reason}")]
    WriterFailed { reason: String },

    /// The store was shut down.
    #[error("log store is closed")]
    Closed,
}

impl LogError {
    /// The log's bytes failed their checks (a damaged or missing part of this copy), as
    /// opposed to a call that failed or a store that stopped: a replica with peers is repaired
    /// from them rather than retried.
    pub fn is_damage(&self) -> bool {
        matches!(self, LogError::Corrupt { .. } | LogError::Gap { .. })
    }

    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl ToString) -> Self {
        LogError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.to_string(),
        }
    }
}

/// openraft's storage traits speak `io::Error`; keep the kind of real I/O failures.
impl From<LogError> for io::Error {
    fn from(err: LogError) -> Self {
        let kind = match &err {
            LogError::Io { source, .. } => source.kind(),
            LogError::Corrupt { .. }
            | LogError::Gap { .. }
            | LogError::Codec(_)
            | LogError::Encode(_)
            | LogError::CommittedLost { .. }
            | LogError::BehindSnapshot { .. }
            | LogError::SnapshotGap { .. } => io::ErrorKind::InvalidData,
            LogError::NonContiguous { .. }
            | LogError::BeforePurged { .. }
            | LogError::RecordTooLarge { .. }
            | LogError::Config(_) => io::ErrorKind::InvalidInput,
            LogError::Locked { .. } => io::ErrorKind::WouldBlock,
            LogError::WriterFailed { .. } | LogError::Closed => io::ErrorKind::BrokenPipe,
        };
        io::Error::new(kind, err)
    }
}

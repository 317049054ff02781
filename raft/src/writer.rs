//! The writer: the only code that changes a log's files. It executes write operations in the
//! order they were planned and does group commit: it keeps taking queued operations without
//! waiting, and only when the queue runs dry (or a barrier needs it) issues one fsync per dirty
//! segment and fires every `IOFlushed` callback gathered meanwhile. [`Writer`] is one log's part;
//! the thread that runs it, shared by every log of a node (ADR 0009), is [`thread`].

mod thread;

pub use thread::LogWriter;
pub(crate) use thread::WriterLink;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use openraft::RaftTypeConfig;
use openraft::storage::IOFlushed;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::segment::{Preallocation, SegmentFile};
use crate::snapshot_file;
use crate::vfs::Vfs;
use crate::{FlushMode, LogError};

/// Where an awaited operation reports back.
pub(crate) type Reply = oneshot::Sender<Result<(), LogError>>;

/// Past this many written-but-unflushed bytes (over every log of the thread) the writer flushes
/// even if more work is queued, so callbacks are not held back indefinitely under a constant
/// stream of appends.
pub(crate) const MAX_UNFLUSHED_BYTES: u64 = 32 * 1024 * 1024;

pub(crate) enum WriteOp<C: RaftTypeConfig> {
    /// Creates the file with its header; the header is made durable before the name.
    CreateSegment {
        segment: Arc<SegmentFile>,
        created_ms: i64,
    },
    Append {
        segment: Arc<SegmentFile>,
        offset: u64,
        bytes: Bytes,
        /// Published as `written_seq` once written, which lets the cache evict these entries.
        seq: u64,
    },
    /// Fires when everything queued before it is flushed according to the [`FlushMode`].
    Flushed(IOFlushed<C>),
    /// The segment is full: write its footer at `at` (where its records end) and fsync it; it
    /// is never appended to again.
    Seal {
        segment: Arc<SegmentFile>,
        footer: Bytes,
        at: u64,
    },
    Truncate {
        /// Whole segments to delete, newest first, so a crash midway leaves no hole.
        remove: Vec<Arc<SegmentFile>>,
        /// The segment cut back to the given byte length.
        cut: Option<(Arc<SegmentFile>, u64)>,
        done: Reply,
    },
    /// Persists openraft's purge point. Deletes nothing unless `remove` says so (see
    /// `SegmentLogStore::purge_upto`).
    Purge {
        purged_state: Vec<u8>,
        /// Whole segments to delete, oldest first.
        remove: Vec<Arc<SegmentFile>>,
        done: Reply,
    },
    /// Deletes whole segments, oldest first, so a crash midway leaves no hole.
    Compact {
        remove: Vec<Arc<SegmentFile>>,
        done: Reply,
    },
    SaveVote {
        vote_state: Vec<u8>,
        done: Reply,
    },
    /// Not awaited; only the newest value queued is written, once per flush.
    SaveCommitted {
        committed_state: Vec<u8>,
    },
    /// Fsync everything written so far, in any flush mode.
    Sync {
        done: Reply,
    },
    Shutdown {
        done: Reply,
    },
}

/// How often, at most, the committed log id is saved while appends flow (it is always saved on
/// shutdown).
const COMMITTED_SAVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Files holding the small persistent state next to the segments, and the seam they live on.
#[derive(Clone, Debug)]
pub(crate) struct StateFiles {
    pub(crate) vfs: Arc<dyn Vfs>,
    pub(crate) dir: PathBuf,
    pub(crate) vote: PathBuf,
    pub(crate) committed: PathBuf,
    pub(crate) purged: PathBuf,
}

impl StateFiles {
    pub(crate) fn new(vfs: Arc<dyn Vfs>, dir: PathBuf) -> Self {
        StateFiles {
            vfs,
            vote: dir.join("vote.bin"),
            committed: dir.join("committed.bin"),
            purged: dir.join("purged.bin"),
            dir,
        }
    }
}

/// What the writer shares with the rest of the store.
#[derive(Default)]
pub(crate) struct WriterStatus {
    /// Highest append sequence number whose bytes are in their file (not necessarily fsynced).
    written_seq: AtomicU64,
    /// Set once, on the first I/O failure.
    failure: Mutex<Option<String>>,
    /// Where fsyncs are recorded, once the owner registers metrics.
    metrics: Mutex<Option<crate::log_metrics::LogMetrics>>,
}

impl WriterStatus {
    pub(crate) fn written_seq(&self) -> u64 {
        self.written_seq.load(Ordering::Acquire)
    }

    pub(crate) fn set_metrics(&self, metrics: crate::log_metrics::LogMetrics) {
        *self.metrics.lock() = Some(metrics);
    }

    pub(crate) fn check(&self) -> Result<(), LogError> {
        match self.failure.lock().as_ref() {
            Some(reason) => Err(LogError::WriterFailed {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

pub(crate) struct Writer<C: RaftTypeConfig> {
    files: StateFiles,
    mode: FlushMode,
    preallocation: Preallocation,
    status: Arc<WriterStatus>,
    /// Segments written since their last fsync.
    dirty: Vec<Arc<SegmentFile>>,
    callbacks: Vec<IOFlushed<C>>,
    max_seq: u64,
    committed_state: Option<Vec<u8>>,
    /// When the committed id was last written: at most once per [`COMMITTED_SAVE_INTERVAL`].
    last_committed_save: Instant,
    unflushed_bytes: u64,
    /// Anything since the last flush that a flush would complete.
    unflushed: bool,
    last_sync: Instant,
    failure: Option<String>,
}

impl<C: RaftTypeConfig> Writer<C> {
    pub(crate) fn new(
        files: StateFiles,
        mode: FlushMode,
        preallocation: Preallocation,
        status: Arc<WriterStatus>,
    ) -> Self {
        Writer {
            files,
            mode,
            preallocation,
            status,
            dirty: Vec::new(),
            callbacks: Vec::new(),
            max_seq: 0,
            committed_state: None,
            last_committed_save: Instant::now(),
            unflushed_bytes: 0,
            unflushed: false,
            last_sync: Instant::now(),
            failure: None,
        }
    }

    /// Whether anything was written or queued since the last flush.
    pub(crate) fn unflushed(&self) -> bool {
        self.unflushed
    }

    /// Bytes written since the last flush.
    pub(crate) fn unflushed_bytes(&self) -> u64 {
        self.unflushed_bytes
    }

    pub(crate) fn handle(&mut self, op: WriteOp<C>) {
        if let Some(reason) = &self.failure {
            reject(op, reason);
            return;
        }
        let result = match op {
            // The header is made durable before the name, so a segment that exists after a
            // crash has a durable header and a bad one is damage, not a torn write.
            WriteOp::CreateSegment {
                segment,
                created_ms,
            } => segment
                .create_on_disk(self.files.vfs.as_ref(), created_ms)
                .and_then(|()| segment.sync_data())
                .and_then(|()| self.files.vfs.sync_dir(&self.files.dir))
                .map_err(|e| LogError::io("creating segment", &segment.path, e)),
            WriteOp::Append {
                segment,
                offset,
                bytes,
                seq,
            } => {
                let written = segment
                    .write_preallocated(&bytes, offset, self.preallocation)
                    .map_err(|e| LogError::io("writing segment", &segment.path, e));
                if written.is_ok() {
                    self.mark_dirty(&segment);
                    self.max_seq = self.max_seq.max(seq);
                    self.unflushed_bytes += bytes.len() as u64;
                    self.unflushed = true;
                }
                written
            }
            WriteOp::Flushed(callback) => {
                self.callbacks.push(callback);
                self.unflushed = true;
                Ok(())
            }
            WriteOp::Seal {
                segment,
                footer,
                at,
            } => {
                let sealed = segment
                    .write_footer(&footer, at)
                    .and_then(|()| segment.sync_data())
                    .map_err(|e| LogError::io("sealing segment", &segment.path, e));
                if sealed.is_ok() {
                    self.dirty.retain(|d| !Arc::ptr_eq(d, &segment));
                }
                sealed
            }
            WriteOp::SaveCommitted { committed_state } => {
                self.committed_state = Some(committed_state);
                self.unflushed = true;
                Ok(())
            }
            WriteOp::Truncate { remove, cut, done } => {
                let result = self.barrier().and_then(|()| self.truncate(remove, cut));
                self.reply(done, result)
            }
            WriteOp::Purge {
                purged_state,
                remove,
                done,
            } => {
                let result = self
                    .barrier()
                    .and_then(|()| self.purge(purged_state, remove));
                self.reply(done, result)
            }
            WriteOp::Compact { remove, done } => {
                let result = self.barrier().and_then(|()| self.remove_segments(&remove));
                self.reply(done, result)
            }
            WriteOp::SaveVote { vote_state, done } => {
                // The log before a vote is made durable first, in any flush mode: a vote that
                // outlived the entries it followed (async mode, a power cut) would leave a
                // single voter that voted for itself with no membership, which never leads.
                let result = self
                    .barrier()
                    .and_then(|()| self.try_sync_dirty())
                    .and_then(|()| {
                        snapshot_file::write_atomic(
                            self.files.vfs.as_ref(),
                            &self.files.vote,
                            &vote_state,
                        )
                        .map_err(|e| LogError::io("saving vote", &self.files.vote, e))
                    });
                self.reply(done, result)
            }
            WriteOp::Sync { done } => {
                let result = self.barrier().and_then(|()| self.try_sync_dirty());
                self.reply(done, result)
            }
            // Handled by the thread, which closes the log and forgets it.
            WriteOp::Shutdown { done } => {
                let _ = done.send(Err(LogError::Closed));
                Ok(())
            }
        };
        if let Err(err) = result {
            self.fail(err);
        }
    }

    /// Sends an awaited op's result; a failure is also returned so the writer poisons itself.
    fn reply(&self, done: Reply, result: Result<(), LogError>) -> Result<(), LogError> {
        match result {
            Ok(()) => {
                let _ = done.send(Ok(()));
                Ok(())
            }
            Err(err) => {
                let _ = done.send(Err(LogError::WriterFailed {
                    reason: err.to_string(),
                }));
                Err(err)
            }
        }
    }

    fn mark_dirty(&mut self, segment: &Arc<SegmentFile>) {
        if !self.dirty.iter().any(|d| Arc::ptr_eq(d, segment)) {
            self.dirty.push(segment.clone());
        }
    }

    /// Completes everything queued so far before an operation that must come after it.
    fn barrier(&mut self) -> Result<(), LogError> {
        if self.unflushed {
            self.flush();
        }
        match &self.failure {
            Some(reason) => Err(LogError::WriterFailed {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The group commit: publish what was written, fsync (in `Sync` mode), then fire callbacks.
    pub(crate) fn flush(&mut self) {
        self.unflushed = false;
        self.unflushed_bytes = 0;
        self.status
            .written_seq
            .store(self.max_seq, Ordering::Release);
        let due = match self.mode {
            FlushMode::Sync => true,
            FlushMode::Async { interval } => self.last_sync.elapsed() >= interval,
        };
        let synced = if due {
            let (started, syncing, appends) =
                (Instant::now(), !self.dirty.is_empty(), self.callbacks.len());
            let synced = self.try_sync_dirty();
            if syncing
                && synced.is_ok()
                && let Some(m) = self.status.metrics.lock().as_ref()
            {
                m.fsync_seconds
                    .record(started.elapsed().as_secs_f64(), &m.attributes);
                m.batch_appends.record(appends as u64, &m.attributes);
            }
            synced
        } else {
            Ok(())
        };
        if let Err(err) = synced {
            self.fail(err);
            return;
        }
        for callback in self.callbacks.drain(..) {
            callback.io_completed(Ok(()));
        }
        // Losing the newest committed id only makes Raft re-learn it, so it is written without
        // fsync and at most once per interval: replacing a file by rename makes ext4 flush it,
        // which on every commit was a large share of the cost of a send.
        if self.last_committed_save.elapsed() >= COMMITTED_SAVE_INTERVAL
            && let Some(state) = self.committed_state.take()
        {
            self.last_committed_save = Instant::now();
            if let Err(err) =
                snapshot_file::write_relaxed(self.files.vfs.as_ref(), &self.files.committed, &state)
            {
                tracing::warn!(path = %self.files.committed.display(), error = %err, "saving committed log id failed");
            }
        }
    }

    fn try_sync_dirty(&mut self) -> Result<(), LogError> {
        for segment in &self.dirty {
            segment
                .sync_data()
                .map_err(|e| LogError::io("syncing segment", &segment.path, e))?;
        }
        self.dirty.clear();
        self.last_sync = Instant::now();
        Ok(())
    }

    pub(crate) fn sync_dirty(&mut self) {
        if let Err(err) = self.try_sync_dirty() {
            self.fail(err);
        }
    }

    /// In `Async` mode with unsynced data: how long until the background fsync is due.
    pub(crate) fn time_to_background_sync(&self) -> Option<std::time::Duration> {
        match self.mode {
            FlushMode::Async { interval } if !self.dirty.is_empty() && self.failure.is_none() => {
                Some(interval.saturating_sub(self.last_sync.elapsed()))
            }
            _ => None,
        }
    }

    fn truncate(
        &mut self,
        remove: Vec<Arc<SegmentFile>>,
        cut: Option<(Arc<SegmentFile>, u64)>,
    ) -> Result<(), LogError> {
        self.remove_segments(&remove)?;
        if let Some((segment, len)) = cut {
            segment
                .truncate(len)
                .map_err(|e| LogError::io("truncating segment", &segment.path, e))?;
        }
        Ok(())
    }

    fn purge(
        &mut self,
        purged_state: Vec<u8>,
        remove: Vec<Arc<SegmentFile>>,
    ) -> Result<(), LogError> {
        // Persist the purge point before deleting anything below it.
        snapshot_file::write_atomic(self.files.vfs.as_ref(), &self.files.purged, &purged_state)
            .map_err(|e| LogError::io("saving purged log id", &self.files.purged, e))?;
        self.remove_segments(&remove)
    }

    fn remove_segments(&mut self, remove: &[Arc<SegmentFile>]) -> Result<(), LogError> {
        if remove.is_empty() {
            return Ok(());
        }
        for segment in remove {
            self.dirty.retain(|d| !Arc::ptr_eq(d, segment));
            match self.files.vfs.remove_file(&segment.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("deleting segment", &segment.path, e)),
            }
        }
        self.files
            .vfs
            .sync_dir(&self.files.dir)
            .map_err(|e| LogError::io("syncing", &self.files.dir, e))
    }

    /// Final flush on shutdown: everything fsynced, the committed id saved durably.
    pub(crate) fn close(&mut self) -> Result<(), LogError> {
        self.barrier()?;
        self.try_sync_dirty()?;
        if let Some(state) = self.committed_state.take() {
            snapshot_file::write_atomic(self.files.vfs.as_ref(), &self.files.committed, &state)
                .map_err(|e| LogError::io("saving committed log id", &self.files.committed, e))?;
        }
        Ok(())
    }

    /// Poisons the writer: after a failed write or fsync nothing written since the last good fsync
    /// can be trusted (the kernel may have dropped the dirty pages), so every pending and future
    /// operation fails until the store is reopened and recovery re-reads the files.
    fn fail(&mut self, err: LogError) {
        let reason = err.to_string();
        tracing::error!(error = %reason, "log writer failed; refusing further writes");
        *self.status.failure.lock() = Some(reason.clone());
        for callback in self.callbacks.drain(..) {
            callback.io_completed(Err(io::Error::other(reason.clone())));
        }
        self.committed_state = None;
        self.unflushed = false;
        self.failure = Some(reason);
    }
}

pub(crate) fn reject<C: RaftTypeConfig>(op: WriteOp<C>, reason: &str) {
    let err = || LogError::WriterFailed {
        reason: reason.to_string(),
    };
    match op {
        WriteOp::Flushed(callback) => callback.io_completed(Err(io::Error::other(err()))),
        WriteOp::Truncate { done, .. }
        | WriteOp::Purge { done, .. }
        | WriteOp::Compact { done, .. }
        | WriteOp::SaveVote { done, .. }
        | WriteOp::Sync { done }
        | WriteOp::Shutdown { done } => {
            let _ = done.send(Err(err()));
        }
        WriteOp::CreateSegment { .. }
        | WriteOp::Append { .. }
        | WriteOp::Seal { .. }
        | WriteOp::SaveCommitted { .. } => {}
    }
}

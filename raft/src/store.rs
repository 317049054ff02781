//! `SegmentLogStore`: the in-memory index over the segment files (which record lives where), the
//! planner that turns appends, truncations and purges into ordered writer operations, recovery at
//! open, and the read paths (cache first, then positional reads with checksum verification).

use std::fmt;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use openraft::RaftTypeConfig;
use openraft::alias::{LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::LogError;
use crate::cache::EntryCache;
use crate::codec::{
    EncodeError, MAX_RECORD_PAYLOAD, SEGMENT_HEADER_LEN, decode_payload, decode_record,
    encode_record,
};
use crate::segment::{Scan, SegmentFile, parse_segment_file_name, scan_segment};
use crate::snapshot_file;
use crate::vfs::{StdVfs, Vfs, VfsLock};
use crate::writer::{StateFiles, WriteOp, Writer, WriterStatus};

#[cfg(test)]
mod power_loss;
mod raft_impl;
#[cfg(test)]
mod tests;

const LOCK_FILE: &str = "LOCK";

/// When an append counts as persisted, i.e. when openraft's `IOFlushed` callback fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushMode {
    /// Group commit: the callback fires after fsync. Appends that queue up while an fsync runs are
    /// written and fsynced together, one fsync per batch.
    Sync,
    /// The callback fires once the bytes are handed to the OS (`write(2)`); a background fsync runs
    /// every `interval`. Risk: a power loss (not a process crash) can lose up to the last interval
    /// of acknowledged entries.
    Async { interval: Duration },
}

/// How a [`SegmentLogStore`] lays out and flushes its files.
#[derive(Clone, Debug)]
pub struct LogStoreConfig {
    /// Directory holding the segments and the small state files; created if missing.
    pub dir: PathBuf,
    /// A segment is sealed once it reaches this size (the record that crosses it still goes in).
    pub segment_bytes: u64,
    pub flush: FlushMode,
    /// Budget of the recent-entry cache, counted in encoded record bytes.
    pub cache_bytes: usize,
    /// What openraft's `purge` does. `false` (the store, where the log holds the messages):
    /// purge only moves openraft's purge point, and segments go when the owner calls
    /// [`SegmentLogStore::compact_below`]. `true` (the controller, whose snapshot holds
    /// everything): purge also compacts up to the purge point.
    pub compact_on_purge: bool,
    /// The storage seam every file goes through.
    pub vfs: Arc<dyn Vfs>,
}

impl Default for LogStoreConfig {
    fn default() -> Self {
        LogStoreConfig {
            dir: PathBuf::from("."),
            segment_bytes: 64 * 1024 * 1024,
            flush: FlushMode::Sync,
            cache_bytes: 64 * 1024 * 1024,
            compact_on_purge: false,
            vfs: StdVfs::shared(),
        }
    }
}

/// One segment as seen by retention and tiering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Index of the first record in the file (which may already be purged logically).
    pub first_index: u64,
    /// Index of the last record in the file; `None` for a segment without records.
    pub last_index: Option<u64>,
    /// File length in bytes, header included.
    pub bytes: u64,
    /// Full: fsynced and never appended to again. Only a Raft truncation of uncommitted entries can
    /// still cut a sealed segment, so tiering should copy sealed segments whose `last_index` is
    /// committed.
    pub sealed: bool,
    pub modified: SystemTime,
    pub path: PathBuf,
}

/// In-memory view of one segment file.
struct SegmentMeta {
    file: Arc<SegmentFile>,
    /// Byte offset of each record; never empty for a segment in the index.
    offsets: Vec<u64>,
    /// Bytes in the file once every planned write is done.
    end: u64,
    sealed: bool,
    modified: SystemTime,
}

impl SegmentMeta {
    fn first_index(&self) -> u64 {
        self.file.first_index
    }

    fn last_index(&self) -> Option<u64> {
        (!self.offsets.is_empty()).then(|| self.file.first_index + self.offsets.len() as u64 - 1)
    }

    fn info(&self) -> SegmentInfo {
        SegmentInfo {
            first_index: self.first_index(),
            last_index: self.last_index(),
            bytes: self.end,
            sealed: self.sealed,
            modified: self.modified,
            path: self.file.path.clone(),
        }
    }
}

/// Everything the planner and the readers share, behind one lock.
struct LogIndex<C: RaftTypeConfig> {
    segments: Vec<SegmentMeta>,
    /// Log id of the last record in the files; `None` when there is none.
    last_log_id: Option<LogIdOf<C>>,
    last_purged: Option<LogIdOf<C>>,
    vote: Option<VoteOf<C>>,
    committed: Option<LogIdOf<C>>,
    /// Compaction never deletes a segment holding an index at or above this: what the state
    /// machine's kept snapshot generations need to be replayed (`None`: nothing may go).
    replay_floor: Option<u64>,
    /// Bumped by every truncation, so a read planned before one can tell.
    truncations: u64,
    cache: EntryCache<C::Entry>,
    next_seq: u64,
    /// `None` once shut down.
    tx: Option<Sender<WriteOp<C>>>,
}

impl<C: RaftTypeConfig> LogIndex<C> {
    fn last_index(&self) -> Option<u64> {
        self.segments.last().and_then(SegmentMeta::last_index)
    }

    /// First index a reader can get: the files' first record. openraft's purge point does not
    /// hide anything: purge is a logical floor for openraft, the files hold what is retained.
    fn first_live_index(&self) -> Option<u64> {
        let first = self.segments.first()?.first_index();
        (Some(first) <= self.last_index()).then_some(first)
    }

    fn sender(&self) -> Result<Sender<WriteOp<C>>, LogError> {
        self.tx.clone().ok_or(LogError::Closed)
    }

    fn segment_containing(&self, index: u64) -> Option<&SegmentMeta> {
        let after = self.segments.partition_point(|s| s.first_index() <= index);
        let segment = self.segments.get(after.checked_sub(1)?)?;
        (segment.last_index()? >= index).then_some(segment)
    }

    /// Plans the read of `[lo, hi)` from the files: one positional read per segment. Planned
    /// under the lock, executed by [`read_planned`] without it, so cold reads never hold up
    /// appends.
    fn plan_file_read(&self, lo: u64, hi: u64) -> Result<Vec<PlannedRead>, LogError> {
        let mut plan = Vec::new();
        let mut index = lo;
        while index < hi {
            let segment = self.segment_containing(index).ok_or_else(|| {
                LogError::corrupt(
                    self.segments
                        .first()
                        .map_or_else(PathBuf::new, |s| s.file.path.clone()),
                    0,
                    format!("index {index} is inside the log but in no segment"),
                )
            })?;
            let first = segment.first_index();
            let upto = segment.last_index().map_or(index, |last| last.min(hi - 1));
            let a = (index - first) as usize;
            let b = (upto - first) as usize;
            let start = segment.offsets[a];
            let end = segment.offsets.get(b + 1).copied().unwrap_or(segment.end);
            plan.push(PlannedRead {
                file: segment.file.clone(),
                first_index: index,
                last_index: upto,
                start,
                len: (end - start) as usize,
            });
            index = upto + 1;
        }
        Ok(plan)
    }
}

/// One positional read of consecutive records of one segment.
struct PlannedRead {
    file: Arc<SegmentFile>,
    first_index: u64,
    last_index: u64,
    start: u64,
    len: usize,
}

/// Executes a read plan, verifying every record (framing, checksum, decode, index).
fn read_planned<E: DeserializeOwned + RaftEntry>(
    plan: &[PlannedRead],
    out: &mut Vec<E>,
) -> Result<(), LogError> {
    for read in plan {
        let path = &read.file.path;
        let buf = read
            .file
            .read_at(read.len, read.start)
            .map_err(|e| LogError::io("reading segment", path, e))?;
        let mut pos = 0usize;
        for expected in read.first_index..=read.last_index {
            let at = read.start + pos as u64;
            let (payload, used) =
                decode_record(&buf[pos..]).map_err(|e| LogError::corrupt(path, at, e))?;
            let entry: E = decode_payload(payload).map_err(|e| LogError::corrupt(path, at, e))?;
            if entry.index() != expected {
                return Err(LogError::corrupt(
                    path,
                    at,
                    format!("record holds index {}, expected {expected}", entry.index()),
                ));
            }
            out.push(entry);
            pos += used;
        }
    }
    Ok(())
}

struct Inner<C: RaftTypeConfig> {
    cfg: LogStoreConfig,
    state: RwLock<LogIndex<C>>,
    status: Arc<WriterStatus>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    /// Holds the directory's advisory lock for as long as this store lives.
    dir_lock: Mutex<Option<VfsLock>>,
}

impl<C: RaftTypeConfig> Drop for Inner<C> {
    fn drop(&mut self) {
        // Closing the channel makes the writer flush and exit; wait for it so the directory lock is
        // released only after the last write.
        self.state.get_mut().tx = None;
        if let Some(thread) = self.writer_thread.get_mut().take()
            && thread.join().is_err()
        {
            tracing::error!(dir = %self.cfg.dir.display(), "log writer thread panicked");
        }
    }
}

/// Segmented, checksummed Raft log storage for openraft. Clones share one store.
pub struct SegmentLogStore<C: RaftTypeConfig> {
    inner: Arc<Inner<C>>,
}

impl<C: RaftTypeConfig> Clone for SegmentLogStore<C> {
    fn clone(&self) -> Self {
        SegmentLogStore {
            inner: self.inner.clone(),
        }
    }
}

/// Read access to the log by index, for readers outside openraft. Cheap to clone; sees appends the
/// moment they return.
pub struct LogHandle<C: RaftTypeConfig> {
    inner: Arc<Inner<C>>,
}

impl<C: RaftTypeConfig> Clone for LogHandle<C> {
    fn clone(&self) -> Self {
        LogHandle {
            inner: self.inner.clone(),
        }
    }
}

impl<C: RaftTypeConfig> fmt::Debug for SegmentLogStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentLogStore")
            .field("dir", &self.inner.cfg.dir)
            .finish_non_exhaustive()
    }
}

impl<C: RaftTypeConfig> fmt::Debug for LogHandle<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogHandle")
            .field("dir", &self.inner.cfg.dir)
            .finish_non_exhaustive()
    }
}

impl<C> SegmentLogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone,
{
    /// Opens (or creates) the log in `cfg.dir` and recovers it: every segment is scanned, a torn
    /// tail of the last segment is cut off, corruption anywhere else is an error. Runs the scan on
    /// tokio's blocking pool, so it must be called inside a tokio runtime. For a state machine
    /// with snapshots use [`open_for_snapshot`](Self::open_for_snapshot).
    pub async fn open(cfg: LogStoreConfig) -> Result<Self, LogError> {
        Self::open_for_snapshot(cfg, None).await
    }

    /// Opens the log for a state machine whose newest readable snapshot covers up to
    /// `snapshot` and checks that the log can continue it: the recovered log must reach the
    /// snapshot (the log is made durable before any snapshot that covers it, so a log that ends
    /// below it lost acknowledged data: [`LogError::BehindSnapshot`], and nothing is deleted), and
    /// it must hold every entry after it ([`LogError::SnapshotGap`]). When the snapshot is older
    /// than openraft's saved purge point (the state machine fell back to an older snapshot
    /// generation), the purge point is lowered to it: purge is logical, the entries are there.
    pub async fn open_for_snapshot(
        cfg: LogStoreConfig,
        snapshot: Option<LogIdOf<C>>,
    ) -> Result<Self, LogError> {
        let dir = cfg.dir.clone();
        tokio::task::spawn_blocking(move || Self::open_blocking(cfg, snapshot))
            .await
            .map_err(|e| LogError::io("joining the open task for", dir, io::Error::other(e)))?
    }

    fn open_blocking(cfg: LogStoreConfig, snapshot: Option<LogIdOf<C>>) -> Result<Self, LogError> {
        let dir = cfg.dir.clone();
        let vfs = cfg.vfs.clone();
        crate::vfs::create_dir_all(vfs.as_ref(), &dir)
            .map_err(|e| LogError::io("creating", &dir, e))?;
        let dir_lock = lock_dir(vfs.as_ref(), &dir)?;
        let files = StateFiles::new(vfs.clone(), dir.clone());

        let vote: Option<VoteOf<C>> = read_state(vfs.as_ref(), &files.vote)?;
        // The committed id is written without fsync (losing it only makes Raft re-learn it), so
        // after a power loss the file may fail its checksum: treat that as absent.
        let mut committed: Option<LogIdOf<C>> = match read_state(vfs.as_ref(), &files.committed) {
            Ok(c) => c,
            Err(err @ LogError::Corrupt { .. }) => {
                tracing::warn!(error = %err, "ignoring an unreadable committed log id");
                None
            }
            Err(err) => return Err(err),
        };
        let mut last_purged: Option<LogIdOf<C>> = read_state(vfs.as_ref(), &files.purged)?;

        let (segments, last_log_id) = recover_segments::<C>(vfs.as_ref(), &dir, cfg.segment_bytes)?;

        let last_index = last_log_id
            .as_ref()
            .or(last_purged.as_ref())
            .map(|id| id.index());
        if let Some(c) = &committed
            && last_index.is_none_or(|last| c.index() > last)
        {
            // In `Sync` mode the committed id is only written after the fsync that made those
            // entries durable, so recovering less than it means durable records were lost to
            // corruption, which recovery must not paper over.
            if cfg.flush == FlushMode::Sync {
                return Err(LogError::CommittedLost {
                    dir: dir.clone(),
                    committed: c.index(),
                    recovered: last_index,
                });
            }
            // In `Async` mode a power loss can legitimately lose the unsynced tail; Raft
            // re-learns the commit point.
            tracing::warn!(
                committed = c.index(),
                last_index,
                "saved committed log id is beyond the recovered log; ignoring it"
            );
            committed = None;
        }

        if let Some(snap) = &snapshot {
            if last_index.is_none_or(|last| last < snap.index()) {
                return Err(LogError::BehindSnapshot {
                    dir: dir.clone(),
                    snapshot: snap.index(),
                    recovered: last_index,
                });
            }
            let first_physical = segments.first().map(SegmentMeta::first_index);
            if let Some(first) = first_physical
                && first > snap.index() + 1
            {
                return Err(LogError::SnapshotGap {
                    dir: dir.clone(),
                    snapshot: snap.index(),
                    first,
                });
            }
            if last_purged
                .as_ref()
                .is_some_and(|p| p.index() > snap.index())
            {
                if first_physical.is_none() {
                    return Err(LogError::SnapshotGap {
                        dir: dir.clone(),
                        snapshot: snap.index(),
                        first: last_index.map_or(0, |l| l + 1),
                    });
                }
                tracing::warn!(
                    dir = %dir.display(),
                    purged = ?last_purged.as_ref().map(|p| p.index()),
                    snapshot = snap.index(),
                    "lowering the purge point to the snapshot in use (an older generation)"
                );
                let state = postcard::to_allocvec(&Some(snap))?;
                snapshot_file::write_atomic(vfs.as_ref(), &files.purged, &state)
                    .map_err(|e| LogError::io("saving purged log id", &files.purged, e))?;
                last_purged = Some(snap.clone());
            }
            if committed.as_ref().is_some_and(|c| c.index() < snap.index()) {
                committed = Some(snap.clone());
            }
        }

        let status = Arc::new(WriterStatus::default());
        let (tx, rx) = mpsc::channel();
        let writer = Writer::<C>::new(files.clone(), cfg.flush, status.clone());
        let writer_thread = std::thread::Builder::new()
            .name("vela-raft-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LogError::io("spawning the writer thread for", &dir, e))?;

        tracing::info!(
            dir = %dir.display(),
            segments = segments.len(),
            first_index = segments.first().map(SegmentMeta::first_index),
            last_index = last_log_id.as_ref().map(|id| id.index()),
            "opened raft log"
        );
        let cache = EntryCache::new(cfg.cache_bytes);
        let state = LogIndex {
            segments,
            last_log_id,
            last_purged,
            vote,
            committed,
            replay_floor: None,
            truncations: 0,
            cache,
            next_seq: 1,
            tx: Some(tx),
        };
        Ok(SegmentLogStore {
            inner: Arc::new(Inner {
                cfg,
                state: RwLock::new(state),
                status,
                writer_thread: Mutex::new(Some(writer_thread)),
                dir_lock: Mutex::new(Some(dir_lock)),
            }),
        })
    }

    /// A read handle sharing this store.
    pub fn reader(&self) -> LogHandle<C> {
        LogHandle {
            inner: self.inner.clone(),
        }
    }

    /// The segment files, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.inner
            .state
            .read()
            .segments
            .iter()
            .map(SegmentMeta::info)
            .collect()
    }

    /// Fsyncs everything appended so far, whatever the flush mode.
    pub async fn sync(&self) -> Result<(), LogError> {
        let (done, rx) = oneshot::channel();
        self.inner
            .state
            .read()
            .sender()?
            .send(WriteOp::Sync { done })
            .map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// Flushes and fsyncs everything, stops the writer and releases the directory lock. Later
    /// writes fail with [`LogError::Closed`]; reads keep working. Idempotent.
    pub async fn shutdown(&self) -> Result<(), LogError> {
        let (done, rx) = oneshot::channel();
        let Some(tx) = self.inner.state.write().tx.take() else {
            return Ok(());
        };
        tx.send(WriteOp::Shutdown { done })
            .map_err(|_| LogError::Closed)?;
        let result = rx.await.map_err(|_| LogError::Closed)?;
        let thread = self.inner.writer_thread.lock().take();
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| {
                    LogError::io(
                        "joining the writer of",
                        &self.inner.cfg.dir,
                        io::Error::other(e),
                    )
                })?
                .map_err(|_| {
                    LogError::io(
                        "joining the writer of",
                        &self.inner.cfg.dir,
                        io::Error::other("writer thread panicked"),
                    )
                })?;
        }
        self.inner.dir_lock.lock().take();
        result
    }

    /// Plans an append: encodes outside the lock, then under it assigns every record its segment
    /// and offset, caches the entries (readable from now on) and queues the writes in order.
    pub(crate) fn append_entries<I>(
        &self,
        entries: I,
        callback: Option<IOFlushed<C>>,
    ) -> Result<(), LogError>
    where
        I: IntoIterator<Item = C::Entry>,
    {
        let mut buf = Vec::new();
        let mut records: Vec<(C::Entry, usize)> = Vec::new();
        for entry in entries {
            if let Some((prev, _)) = records.last()
                && entry.index() != prev.index() + 1
            {
                return Err(LogError::NonContiguous {
                    expected: prev.index() + 1,
                    found: entry.index(),
                });
            }
            let len = encode_record(&entry, &mut buf).map_err(|e| match e {
                EncodeError::Codec(e) => LogError::Codec(e),
                EncodeError::BadLength(len) => LogError::RecordTooLarge {
                    len,
                    max: MAX_RECORD_PAYLOAD,
                },
            })?;
            records.push((entry, len));
        }
        let bytes = Bytes::from(buf);

        let mut guard = self.inner.state.write();
        let st = &mut *guard;
        self.inner.status.check()?;
        let tx = st.sender()?;
        let Some((first, _)) = records.first() else {
            if let Some(callback) = callback {
                tx.send(WriteOp::Flushed(callback))
                    .map_err(|_| LogError::Closed)?;
            }
            return Ok(());
        };
        match (st.last_index(), &st.last_purged) {
            (Some(last), _) if first.index() != last + 1 => {
                return Err(LogError::NonContiguous {
                    expected: last + 1,
                    found: first.index(),
                });
            }
            (None, Some(purged)) if first.index() <= purged.index() => {
                return Err(LogError::BeforePurged {
                    index: first.index(),
                    purged: purged.index(),
                });
            }
            _ => {}
        }

        let seq = st.next_seq;
        st.next_seq += 1;
        let now = SystemTime::now();
        let mut ops = Vec::with_capacity(4);
        // The run of bytes going to one segment: (segment, file offset, start in `bytes`).
        let mut chunk: Option<(Arc<SegmentFile>, u64, usize)> = None;
        let mut pos = 0usize;
        for (entry, len) in records {
            let index = entry.index();
            if st.segments.last().is_none_or(|s| s.sealed) {
                let file = Arc::new(SegmentFile::planned(&self.inner.cfg.dir, index));
                ops.push(WriteOp::CreateSegment(file.clone()));
                st.segments.push(SegmentMeta {
                    file,
                    offsets: Vec::new(),
                    end: SEGMENT_HEADER_LEN as u64,
                    sealed: false,
                    modified: now,
                });
            }
            let Some(segment) = st.segments.last_mut() else {
                return Err(LogError::Closed);
            };
            let chunk_ref = chunk.get_or_insert_with(|| (segment.file.clone(), segment.end, pos));
            segment.offsets.push(segment.end);
            segment.end += len as u64;
            segment.modified = now;
            pos += len;
            st.last_log_id = Some(entry.log_id());
            st.cache.push(index, Arc::new(entry), len, seq);
            if segment.end >= self.inner.cfg.segment_bytes {
                segment.sealed = true;
                let (file, offset, start) = (chunk_ref.0.clone(), chunk_ref.1, chunk_ref.2);
                chunk = None;
                ops.push(WriteOp::Append {
                    segment: file,
                    offset,
                    bytes: bytes.slice(start..pos),
                    seq,
                });
                ops.push(WriteOp::Seal(segment.file.clone()));
            }
        }
        if let Some((segment, offset, start)) = chunk {
            ops.push(WriteOp::Append {
                segment,
                offset,
                bytes: bytes.slice(start..pos),
                seq,
            });
        }
        if let Some(callback) = callback {
            ops.push(WriteOp::Flushed(callback));
        }
        st.cache.evict(self.inner.status.written_seq());
        for op in ops {
            tx.send(op).map_err(|_| LogError::Closed)?;
        }
        Ok(())
    }

    /// Removes every entry after `last_log_id` (all of them for `None`) and waits until the files
    /// are cut.
    pub(crate) async fn truncate_after(
        &self,
        last_log_id: Option<LogIdOf<C>>,
    ) -> Result<(), LogError> {
        let keep_upto = last_log_id.as_ref().map(|id| id.index());
        let (done, rx) = oneshot::channel();
        {
            let mut guard = self.inner.state.write();
            let st = &mut *guard;
            self.inner.status.check()?;
            let tx = st.sender()?;
            let Some(last) = st.last_index() else {
                return Ok(());
            };
            if keep_upto.is_some_and(|k| k >= last) {
                return Ok(());
            }
            let mut remove = Vec::new();
            while st
                .segments
                .last()
                .is_some_and(|s| keep_upto.is_none_or(|k| s.first_index() > k))
            {
                if let Some(segment) = st.segments.pop() {
                    remove.push(segment.file);
                }
            }
            let mut cut = None;
            if let (Some(segment), Some(k)) = (st.segments.last_mut(), keep_upto) {
                let keep = (k - segment.first_index() + 1) as usize;
                if keep < segment.offsets.len() {
                    let new_end = segment.offsets[keep];
                    segment.offsets.truncate(keep);
                    segment.end = new_end;
                    segment.sealed = new_end >= self.inner.cfg.segment_bytes;
                    segment.modified = SystemTime::now();
                    cut = Some((segment.file.clone(), new_end));
                }
            }
            st.last_log_id = if st.segments.is_empty() {
                None
            } else {
                last_log_id
            };
            st.cache.truncate_after(keep_upto);
            st.truncations += 1;
            tx.send(WriteOp::Truncate { remove, cut, done })
                .map_err(|_| LogError::Closed)?;
        }
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// openraft's purge: persists `log_id` as the purge point. It deletes nothing (purge is a
    /// logical floor: the files hold what retention keeps), except with `compact_on_purge`,
    /// where it then compacts up to the purge point, and when the purge point passes the end of
    /// the files (a snapshot replaced the whole log), where every segment goes.
    pub(crate) async fn purge_upto(&self, log_id: LogIdOf<C>) -> Result<(), LogError> {
        let purged_state = postcard::to_allocvec(&Some(&log_id))?;
        let (done, rx) = oneshot::channel();
        let compact = {
            let mut guard = self.inner.state.write();
            let st = &mut *guard;
            self.inner.status.check()?;
            let tx = st.sender()?;
            if st
                .last_purged
                .as_ref()
                .is_some_and(|p| p.index() >= log_id.index())
            {
                return Ok(());
            }
            let upto = log_id.index();
            let mut remove = Vec::new();
            // Only a purge point beyond the last entry means the log was replaced (a snapshot
            // from elsewhere); purging up to the last entry keeps it.
            if st.last_index().is_some_and(|last| last < upto) {
                remove = st.segments.drain(..).map(|s| s.file).collect();
                st.last_log_id = None;
                st.cache.purge_upto(upto);
            }
            st.last_purged = Some(log_id);
            tx.send(WriteOp::Purge {
                purged_state,
                remove,
                done,
            })
            .map_err(|_| LogError::Closed)?;
            self.inner.cfg.compact_on_purge.then_some(upto + 1)
        };
        rx.await.map_err(|_| LogError::Closed)??;
        if let Some(below) = compact {
            self.compact_below(below).await?;
        }
        Ok(())
    }

    /// Tells compaction which entries the state machine's kept snapshots need: no segment holding
    /// an index at or above `floor` is ever deleted. `None` protects everything.
    pub fn set_replay_floor(&self, floor: Option<u64>) {
        self.inner.state.write().replay_floor = floor;
    }

    /// Deletes the whole segments below `below` (retention), oldest first, and returns the
    /// segments deleted. A segment goes only if every record in it is below `below`, below the
    /// replay floor and at or below openraft's purge point: compaction never removes what a
    /// kept snapshot or openraft may still read.
    pub async fn compact_below(&self, below: u64) -> Result<Vec<SegmentInfo>, LogError> {
        let (done, rx) = oneshot::channel();
        let removed = {
            let mut guard = self.inner.state.write();
            let st = &mut *guard;
            self.inner.status.check()?;
            let tx = st.sender()?;
            let Some(floor) = st.replay_floor else {
                return Ok(Vec::new());
            };
            let purged_next = st.last_purged.as_ref().map_or(0, |p| p.index() + 1);
            let limit = below.min(floor).min(purged_next);
            let mut removed = Vec::new();
            // The newest segment always stays: appends continue it.
            while st.segments.len() > 1
                && st
                    .segments
                    .first()
                    .and_then(SegmentMeta::last_index)
                    .is_some_and(|last| last < limit)
            {
                removed.push(st.segments.remove(0));
            }
            if removed.is_empty() {
                return Ok(Vec::new());
            }
            let infos: Vec<SegmentInfo> = removed.iter().map(SegmentMeta::info).collect();
            if let Some(last) = infos.last().and_then(|i| i.last_index) {
                st.cache.purge_upto(last);
            }
            tx.send(WriteOp::Compact {
                remove: removed.into_iter().map(|s| s.file).collect(),
                done,
            })
            .map_err(|_| LogError::Closed)?;
            infos
        };
        rx.await.map_err(|_| LogError::Closed)??;
        Ok(removed)
    }

    pub(crate) async fn save_vote(&self, vote: &VoteOf<C>) -> Result<(), LogError> {
        let vote_state = postcard::to_allocvec(&Some(vote))?;
        let (done, rx) = oneshot::channel();
        {
            let st = self.inner.state.read();
            self.inner.status.check()?;
            st.sender()?
                .send(WriteOp::SaveVote { vote_state, done })
                .map_err(|_| LogError::Closed)?;
        }
        rx.await.map_err(|_| LogError::Closed)??;
        self.inner.state.write().vote = Some(vote.clone());
        Ok(())
    }

    pub(crate) fn save_committed(&self, committed: Option<LogIdOf<C>>) -> Result<(), LogError> {
        let committed_state = postcard::to_allocvec(&committed)?;
        let mut st = self.inner.state.write();
        self.inner.status.check()?;
        st.sender()?
            .send(WriteOp::SaveCommitted { committed_state })
            .map_err(|_| LogError::Closed)?;
        st.committed = committed;
        Ok(())
    }

    pub(crate) fn read_committed(&self) -> Option<LogIdOf<C>> {
        self.inner.state.read().committed.clone()
    }

    /// `(last purged, last log id)`: openraft's log state. Without entries the last log id is the
    /// last purged one.
    pub(crate) fn log_state(&self) -> (Option<LogIdOf<C>>, Option<LogIdOf<C>>) {
        let st = self.inner.state.read();
        let last = st.last_log_id.clone().or_else(|| st.last_purged.clone());
        (st.last_purged.clone(), last)
    }
}

impl<C> LogHandle<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone,
{
    /// The entry at `index`; `None` if it is purged or not appended yet.
    pub fn entry(&self, index: u64) -> Result<Option<C::Entry>, LogError> {
        Ok(self.entry_shared(index)?.map(Arc::unwrap_or_clone))
    }

    /// Like [`entry`](Self::entry) without copying a cached entry.
    pub fn entry_shared(&self, index: u64) -> Result<Option<Arc<C::Entry>>, LogError> {
        loop {
            let (plan, truncations) = {
                let st = self.inner.state.read();
                let (Some(first), Some(last)) = (st.first_live_index(), st.last_index()) else {
                    return Ok(None);
                };
                if index < first || index > last {
                    return Ok(None);
                }
                if let Some(entry) = st.cache.get(index) {
                    return Ok(Some(entry.clone()));
                }
                (st.plan_file_read(index, index + 1)?, st.truncations)
            };
            let mut out = Vec::with_capacity(1);
            read_planned(&plan, &mut out)?;
            if self.inner.state.read().truncations == truncations {
                return Ok(out.pop().map(Arc::new));
            }
        }
    }

    /// The entries in `range` that the log holds, in order and without holes. Reads from the
    /// files run without the log's lock; a truncation that overlaps one makes it start over, so
    /// the result is always one consistent view of the log.
    pub fn entries<R: RangeBounds<u64>>(&self, range: R) -> Result<Vec<C::Entry>, LogError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        loop {
            let (plan, cached, truncations, lo, hi) = {
                let st = self.inner.state.read();
                let (Some(first), Some(last)) = (st.first_live_index(), st.last_index()) else {
                    return Ok(Vec::new());
                };
                let lo = start.max(first);
                let hi = end.min(last.saturating_add(1));
                if lo >= hi {
                    return Ok(Vec::new());
                }
                // The cache holds a suffix of the log; everything before it is in the files.
                let cached_from = st.cache.first_index().map_or(hi, |c| c.clamp(lo, hi));
                let mut cached = Vec::with_capacity((hi - cached_from) as usize);
                for index in cached_from..hi {
                    let entry = st.cache.get(index).ok_or_else(|| {
                        LogError::corrupt(
                            &self.inner.cfg.dir,
                            0,
                            format!("cached suffix misses index {index}"),
                        )
                    })?;
                    cached.push(entry.clone());
                }
                (
                    st.plan_file_read(lo, cached_from)?,
                    cached,
                    st.truncations,
                    lo,
                    hi,
                )
            };
            let mut out = Vec::with_capacity((hi - lo).min(64 * 1024) as usize);
            read_planned(&plan, &mut out)?;
            if self.inner.state.read().truncations != truncations {
                continue;
            }
            out.extend(cached.into_iter().map(Arc::unwrap_or_clone));
            return Ok(out);
        }
    }

    /// [`entries`](Self::entries) without what openraft purged: openraft's view of the log.
    pub(crate) fn entries_after_purge<R: RangeBounds<u64>>(
        &self,
        range: R,
    ) -> Result<Vec<C::Entry>, LogError> {
        let after_purge = self
            .inner
            .state
            .read()
            .last_purged
            .as_ref()
            .map_or(0, |p| p.index() + 1);
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => Bound::Included(e),
            Bound::Excluded(&e) => Bound::Excluded(e),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.entries((Bound::Included(start.max(after_purge)), end))
    }

    /// First index that can be read, if any entry exists. Entries openraft purged stay
    /// readable here until compaction deletes their segment.
    pub fn first_index(&self) -> Option<u64> {
        self.inner.state.read().first_live_index()
    }

    /// Index of the newest entry, if any entry exists.
    pub fn last_index(&self) -> Option<u64> {
        let st = self.inner.state.read();
        st.first_live_index().and(st.last_index())
    }

    /// Log id of the newest entry, if any entry exists.
    pub fn last_log_id(&self) -> Option<LogIdOf<C>> {
        let st = self.inner.state.read();
        st.first_live_index().and(st.last_log_id.clone())
    }

    /// The committed log id last saved by openraft.
    pub fn committed(&self) -> Option<LogIdOf<C>> {
        self.inner.state.read().committed.clone()
    }

    pub(crate) fn vote(&self) -> Option<VoteOf<C>> {
        self.inner.state.read().vote.clone()
    }
}

/// Takes the advisory lock that keeps two stores off one directory.
fn lock_dir(vfs: &dyn Vfs, dir: &Path) -> Result<VfsLock, LogError> {
    let path = dir.join(LOCK_FILE);
    vfs.try_lock(&path)
        .map_err(|e| LogError::io("locking", &path, e))?
        .ok_or_else(|| LogError::Locked {
            dir: dir.to_path_buf(),
        })
}

fn read_state<T: DeserializeOwned>(vfs: &dyn Vfs, path: &Path) -> Result<Option<T>, LogError> {
    match snapshot_file::read(vfs, path)? {
        None => Ok(None),
        Some(bytes) => {
            decode_payload::<Option<T>>(&bytes).map_err(|e| LogError::corrupt(path, 0, e))
        }
    }
}

/// Scans every segment in `dir`, oldest first, and checks they form one run of indexes.
fn recover_segments<C>(
    vfs: &dyn Vfs,
    dir: &Path,
    segment_bytes: u64,
) -> Result<(Vec<SegmentMeta>, Option<LogIdOf<C>>), LogError>
where
    C: RaftTypeConfig,
{
    let mut listing = Vec::new();
    for name in vfs
        .list_files(dir)
        .map_err(|e| LogError::io("listing", dir, e))?
    {
        if let Some(first) = parse_segment_file_name(&name) {
            listing.push((first, dir.join(name)));
        }
    }
    listing.sort();

    let mut segments: Vec<SegmentMeta> = Vec::with_capacity(listing.len());
    let mut last_log_id = None;
    let count = listing.len();
    for (i, (first, path)) in listing.into_iter().enumerate() {
        let is_last = i + 1 == count;
        let scan = scan_segment::<C::Entry, _>(vfs, path, first, is_last, |e| e.index())?;
        let (file, scanned) = match scan {
            Scan::TornHeader { path, len } => {
                tracing::warn!(segment = %path.display(), bytes = len, "removing last log segment with a torn header");
                remove_leftover(vfs, &path, "removing torn segment")?;
                continue;
            }
            Scan::Segment(file, scanned) => (file, scanned),
        };
        if scanned.dropped_bytes > 0 {
            tracing::warn!(
                segment = %file.path.display(),
                dropped_bytes = scanned.dropped_bytes,
                kept_records = scanned.offsets.len(),
                reason = scanned.tail_reason.as_deref().unwrap_or(""),
                "truncated torn tail of the last log segment"
            );
        }
        let Some(last_entry) = scanned.last_entry else {
            if is_last {
                tracing::info!(segment = %file.path.display(), "removing last log segment without records");
                remove_leftover(vfs, &file.path, "removing empty segment")?;
                continue;
            }
            return Err(LogError::corrupt(
                &file.path,
                SEGMENT_HEADER_LEN as u64,
                "sealed segment holds no records",
            ));
        };
        if let Some(prev) = segments.last() {
            let expected = prev.last_index().map_or(prev.first_index(), |l| l + 1);
            if first != expected {
                return Err(LogError::Gap {
                    path: file.path.clone(),
                    expected,
                    found: first,
                });
            }
        }
        let modified = file
            .handle()
            .and_then(|f| f.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        last_log_id = Some(last_entry.log_id());
        segments.push(SegmentMeta {
            file: Arc::new(file),
            offsets: scanned.offsets,
            end: scanned.end,
            sealed: true,
            modified,
        });
    }
    // Every segment but the newest was sealed before the next one was created.
    if let Some(last) = segments.last_mut() {
        last.sealed = last.end >= segment_bytes;
        // A process crash leaves written-but-unsynced bytes in the page cache; make what was
        // recovered durable before serving it.
        last.file
            .sync_data()
            .map_err(|e| LogError::io("syncing recovered segment", &last.file.path, e))?;
    }
    Ok((segments, last_log_id))
}

/// Removes a last segment that holds nothing (a crash during its creation). The removal is not
/// synced on its own: if a power cut undoes it, the next open finds the same leftover and
/// removes it again, and the next segment the writer creates syncs the directory anyway.
fn remove_leftover(vfs: &dyn Vfs, path: &Path, op: &'static str) -> Result<(), LogError> {
    vfs.remove_file(path).map_err(|e| LogError::io(op, path, e))
}

//! `SegmentLogStore`: the in-memory index over the segment files (which segment holds which
//! indexes, and where the active segment's records start), the planner that turns appends,
//! truncations and purges into ordered writer operations (`plan`), recovery at open
//! (`recovery`), and the read paths (`read`).
//!
//! Memory does not grow with the log: a sealed segment is described by a few numbers; the byte
//! offsets of its records stay in its footer until a read needs them (ADR 0007).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::LogError;
use crate::cache::EntryCache;
use crate::codec::{FooterTrailer, MAX_SEGMENT_BYTES};
use crate::entry::LogTypes;
use crate::segment::SegmentFile;
use crate::vfs::{StdVfs, Vfs, VfsLock};
use crate::writer::{LogWriter, WriteOp, WriterLink, WriterStatus};
use openraft::alias::{LogIdOf, VoteOf};

mod plan;
#[cfg(test)]
mod power_loss;
mod raft_impl;
mod read;
mod recovery;
#[cfg(test)]
mod tests;

pub use read::{LogHandle, ScrubReport};

const LOCK_FILE: &str = "LOCK";
/// Largest `segment_bytes`: the record that crosses the limit still goes in (up to 256 MiB), and
/// a segment must stay below what the footer's 32-bit offsets index.
pub const MAX_SEGMENT_SIZE: u64 = 2 * 1024 * 1024 * 1024;

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
    /// At most [`MAX_SEGMENT_SIZE`].
    pub segment_bytes: u64,
    pub flush: FlushMode,
    /// Budget of the recent-entry cache, counted in encoded record bytes.
    pub cache_bytes: usize,
    /// What openraft's `purge` does. `false` (the store, where the log holds the messages):
    /// purge only moves openraft's purge point, and segments go when the owner calls
    /// [`SegmentLogStore::compact_below`]. `true` (the controller, whose snapshot holds
    /// everything): purge also compacts up to the purge point.
    pub compact_on_purge: bool,
    /// How far ahead of its records the writer fills the active segment with zeros, so most
    /// fsyncs flush data only (ADR 0015). 0 turns it off. Never past `segment_bytes`.
    pub preallocate_bytes: u64,
    /// The storage seam every file goes through.
    pub vfs: Arc<dyn Vfs>,
}

/// The default of [`LogStoreConfig::preallocate_bytes`].
pub const DEFAULT_PREALLOCATE_BYTES: u64 = 1024 * 1024;

impl Default for LogStoreConfig {
    fn default() -> Self {
        LogStoreConfig {
            dir: PathBuf::from("."),
            segment_bytes: 64 * 1024 * 1024,
            flush: FlushMode::Sync,
            cache_bytes: 64 * 1024 * 1024,
            compact_on_purge: false,
            preallocate_bytes: DEFAULT_PREALLOCATE_BYTES,
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
    /// File length in bytes, header and footer included.
    pub bytes: u64,
    /// Full: its footer is written, it is fsynced and never appended to again. Only a Raft
    /// truncation of uncommitted entries can still cut a sealed segment, so tiering should copy
    /// sealed segments whose `last_index` is committed.
    pub sealed: bool,
    /// When the last record was appended (from the footer of a sealed segment).
    pub modified: SystemTime,
    /// When the first record was appended.
    pub created: SystemTime,
    pub path: PathBuf,
}

/// In-memory view of one segment file.
pub(crate) struct SegmentMeta {
    pub(crate) file: Arc<SegmentFile>,
    /// Records in the segment.
    pub(crate) count: u64,
    /// Where the records end: the file's end for the active segment, where the footer starts
    /// for a sealed one.
    pub(crate) records_end: u64,
    /// Byte offset of each record. Kept for the active segment; for a sealed segment only until
    /// the writer has written its footer (`pinned_until`), then read from the footer on demand.
    pub(crate) offsets: Option<Vec<u32>>,
    /// A write sequence number queued after the seal; the offsets go once it is written.
    pub(crate) pinned_until: Option<u64>,
    /// The footer of a sealed segment (absent only if it was found damaged at open).
    pub(crate) footer: Option<FooterTrailer>,
    /// Never appended to again.
    pub(crate) sealed: bool,
    /// What recovery found wrong with a sealed segment it could still serve (a damaged
    /// footer); reported by every scrub.
    pub(crate) damage: Option<String>,
    pub(crate) first_append_ms: i64,
    pub(crate) last_append_ms: i64,
}

impl SegmentMeta {
    pub(crate) fn first_index(&self) -> u64 {
        self.file.first_index
    }

    pub(crate) fn last_index(&self) -> Option<u64> {
        (self.count > 0).then(|| self.file.first_index + self.count - 1)
    }

    pub(crate) fn sealed(&self) -> bool {
        self.sealed
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.records_end + self.footer.map_or(0, |f| f.footer_len())
    }

    fn info(&self) -> SegmentInfo {
        SegmentInfo {
            first_index: self.first_index(),
            last_index: self.last_index(),
            bytes: self.bytes(),
            sealed: self.sealed(),
            modified: system_time(self.last_append_ms),
            created: system_time(self.first_append_ms),
            path: self.file.path.clone(),
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn system_time(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Everything the planner and the readers share, behind one lock.
pub(crate) struct LogIndex<C: LogTypes> {
    pub(crate) segments: Vec<SegmentMeta>,
    /// Log id of the last record in the files; `None` when there is none.
    pub(crate) last_log_id: Option<LogIdOf<C>>,
    pub(crate) last_purged: Option<LogIdOf<C>>,
    pub(crate) vote: Option<VoteOf<C>>,
    pub(crate) committed: Option<LogIdOf<C>>,
    /// Compaction never deletes a segment holding an index at or above this: what the state
    /// machine's kept snapshot generations need to be replayed (`None`: nothing may go).
    pub(crate) replay_floor: Option<u64>,
    /// Readers that must keep reading from an index on (a copy to another replica), by pin id:
    /// compaction never deletes a segment holding an index at or above the lowest.
    pub(crate) read_pins: std::collections::BTreeMap<u64, u64>,
    pub(crate) next_pin: u64,
    /// Bumped by every truncation, so a read planned before one can tell.
    pub(crate) truncations: u64,
    /// Segments whose offsets are pinned until their footer is written (usually none).
    pub(crate) pinned: usize,
    pub(crate) cache: EntryCache<C::Entry>,
    pub(crate) next_seq: u64,
    /// `None` once shut down.
    pub(crate) tx: Option<WriterLink<C>>,
}

impl<C: LogTypes> LogIndex<C> {
    pub(crate) fn last_index(&self) -> Option<u64> {
        self.segments.last().and_then(SegmentMeta::last_index)
    }

    /// First index a reader can get: the files' first record. openraft's purge point does not
    /// hide anything: purge is a logical floor for openraft, the files hold what is retained.
    pub(crate) fn first_live_index(&self) -> Option<u64> {
        let first = self.segments.first()?.first_index();
        (Some(first) <= self.last_index()).then_some(first)
    }

    pub(crate) fn sender(&self) -> Result<WriterLink<C>, LogError> {
        self.tx.clone().ok_or(LogError::Closed)
    }

    pub(crate) fn segment_position(&self, index: u64) -> Option<usize> {
        let after = self.segments.partition_point(|s| s.first_index() <= index);
        let pos = after.checked_sub(1)?;
        (self.segments.get(pos)?.last_index()? >= index).then_some(pos)
    }

    /// Recounts pinned segments after segments were removed (truncation, purge, compaction).
    pub(crate) fn recount_pinned(&mut self) {
        self.pinned = self
            .segments
            .iter()
            .filter(|s| s.pinned_until.is_some())
            .count();
    }

    /// Drops the offsets of sealed segments whose footer the writer has written. Called on
    /// every append, so it costs nothing unless a seal is pending.
    pub(crate) fn unpin_offsets(&mut self, written_seq: u64) {
        if self.pinned == 0 {
            return;
        }
        for segment in self.segments.iter_mut().rev() {
            if segment.pinned_until.is_some_and(|seq| seq <= written_seq) {
                segment.pinned_until = None;
                segment.offsets = None;
                self.pinned -= 1;
                if self.pinned == 0 {
                    return;
                }
            }
        }
    }
}

pub(crate) struct Inner<C: LogTypes> {
    pub(crate) cfg: LogStoreConfig,
    pub(crate) state: RwLock<LogIndex<C>>,
    pub(crate) status: Arc<WriterStatus>,
    /// The thread this log's writes go to (its own, or one shared by the node's logs).
    pub(crate) writer: Mutex<Option<LogWriter<C>>>,
    /// Holds the directory's advisory lock for as long as this store lives.
    pub(crate) dir_lock: Mutex<Option<VfsLock>>,
    /// Footer offsets of sealed segments read recently.
    pub(crate) footers: read::FooterCache,
    /// Entries decoded by recent cold reads.
    pub(crate) cold: read::ColdEntries<C::Entry>,
    /// The first damage a read of entries for Raft ran into (see
    /// [`SegmentLogStore::damage_seen`]).
    pub(crate) damage_seen: Mutex<Option<(PathBuf, u64, String)>>,
}

impl<C: LogTypes> Drop for Inner<C> {
    fn drop(&mut self) {
        // The writer flushes and closes this log first, so the directory lock is released only
        // after the last write; a thread of its own then ends with the last handle to it.
        if let Some(link) = self.state.get_mut().tx.take() {
            link.detach_blocking();
        }
        self.writer.get_mut().take();
    }
}

/// Keeps entries from compaction while it lives (see [`SegmentLogStore::pin_from`]).
pub struct ReadPin<C: LogTypes> {
    inner: Arc<Inner<C>>,
    id: u64,
}

impl<C: LogTypes> Drop for ReadPin<C> {
    fn drop(&mut self) {
        self.inner.state.write().read_pins.remove(&self.id);
    }
}

/// Segmented, checksummed Raft log storage for openraft. Clones share one store.
pub struct SegmentLogStore<C: LogTypes> {
    pub(crate) inner: Arc<Inner<C>>,
}

impl<C: LogTypes> Clone for SegmentLogStore<C> {
    fn clone(&self) -> Self {
        SegmentLogStore {
            inner: self.inner.clone(),
        }
    }
}

impl<C: LogTypes> fmt::Debug for SegmentLogStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentLogStore")
            .field("dir", &self.inner.cfg.dir)
            .finish_non_exhaustive()
    }
}

impl<C: LogTypes> SegmentLogStore<C> {
    /// Records this log's fsyncs on `metrics` from now on (replacing earlier instruments).
    pub fn set_metrics(&self, metrics: crate::log_metrics::LogMetrics) {
        self.inner.status.set_metrics(metrics);
    }

    /// Damage (a record that fails its checks, a break in the indexes) that a read of entries
    /// for Raft ran into, as the error it answered: what made openraft stop on this log. The
    /// first one seen since the log was opened.
    pub fn damage_seen(&self) -> Option<LogError> {
        self.inner
            .damage_seen
            .lock()
            .clone()
            .map(|(path, offset, reason)| LogError::Corrupt {
                path,
                offset,
                reason,
            })
    }

    /// Opens (or creates) the log in `cfg.dir` and recovers it (see `recovery`). Runs on
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
        Self::open_with(cfg, snapshot, None).await
    }

    /// As [`open_for_snapshot`](Self::open_for_snapshot), with the log's writes going to
    /// `writer`, a thread the node's logs share (ADR 0009), instead of a thread of its own.
    pub async fn open_on(
        cfg: LogStoreConfig,
        snapshot: Option<LogIdOf<C>>,
        writer: &LogWriter<C>,
    ) -> Result<Self, LogError> {
        Self::open_with(cfg, snapshot, Some(writer.clone())).await
    }

    async fn open_with(
        cfg: LogStoreConfig,
        snapshot: Option<LogIdOf<C>>,
        writer: Option<LogWriter<C>>,
    ) -> Result<Self, LogError> {
        let dir = cfg.dir.clone();
        tokio::task::spawn_blocking(move || recovery::open_blocking(cfg, snapshot, writer))
            .await
            .map_err(|e| LogError::io("joining the open task for", dir, io::Error::other(e)))?
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
        let Some(tx) = self.inner.state.write().tx.take() else {
            return Ok(());
        };
        let (done, rx) = oneshot::channel();
        // Whatever the writer answers (or if it is gone), the directory is unlocked: a failed
        // shutdown must not keep the replica from opening again.
        let result = match tx.send(WriteOp::Shutdown { done }) {
            Ok(()) => rx.await.unwrap_or(Err(LogError::Closed)),
            Err(_) => Err(LogError::Closed),
        };
        drop(tx);
        // A thread of this log's own ends with its last handle; joining it blocks.
        let writer = self.inner.writer.lock().take();
        let joined = match tokio::task::spawn_blocking(move || drop(writer)).await {
            Ok(()) => Ok(()),
            Err(e) => Err(LogError::io(
                "joining the writer of",
                &self.inner.cfg.dir,
                io::Error::other(e.to_string()),
            )),
        };
        self.inner.dir_lock.lock().take();
        joined.and(result)
    }

    /// Tells compaction which entries the state machine's kept snapshots need: no segment holding
    /// an index at or above `floor` is ever deleted. `None` protects everything.
    pub fn set_replay_floor(&self, floor: Option<u64>) {
        self.inner.state.write().replay_floor = floor;
    }

    /// The file of the sealed segment that starts at `first_index` and its length, to copy it
    /// elsewhere whole (tiering); `None` when no sealed segment starts there now. Pin the
    /// segment ([`pin_from`](Self::pin_from)) for as long as the copy runs.
    pub fn sealed_file(&self, first_index: u64) -> Option<(Arc<dyn crate::vfs::VfsFile>, u64)> {
        let st = self.inner.state.read();
        let segment = st
            .segments
            .iter()
            .find(|s| s.first_index() == first_index && s.sealed())?;
        let file = segment.file.handle().ok()?.clone();
        Some((file, segment.bytes()))
    }

    /// Keeps every entry from `from` on (that the log holds now) from compaction until the
    /// returned pin is dropped: for a reader that streams them elsewhere.
    pub fn pin_from(&self, from: u64) -> ReadPin<C> {
        let mut st = self.inner.state.write();
        let id = st.next_pin;
        st.next_pin += 1;
        st.read_pins.insert(id, from);
        ReadPin {
            inner: self.inner.clone(),
            id,
        }
    }

    /// Deletes the whole segments below `below` (retention), oldest first, and returns the
    /// segments deleted. A segment goes only if every record in it is below `below`, below the
    /// replay floor and at or below openraft's purge point: compaction never removes what a
    /// kept snapshot or openraft may still read. The newest segment always stays.
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
            let purged_next = st.last_purged.as_ref().map_or(0, |p| p.index + 1);
            let pinned = st.read_pins.values().min().copied().unwrap_or(u64::MAX);
            let limit = below.min(floor).min(purged_next).min(pinned);
            let mut removed = Vec::new();
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
            st.recount_pinned();
            let infos: Vec<SegmentInfo> = removed.iter().map(SegmentMeta::info).collect();
            if let Some(last) = infos.last().and_then(|i| i.last_index) {
                st.cache.purge_upto(last);
            }
            for segment in &removed {
                self.inner.footers.forget(segment.first_index());
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
}

/// Checks a config before anything is opened.
pub(crate) fn validate(cfg: &LogStoreConfig) -> Result<(), LogError> {
    if cfg.segment_bytes == 0 || cfg.segment_bytes > MAX_SEGMENT_SIZE {
        return Err(LogError::Config(format!(
            "segment size {} bytes is outside 1..={MAX_SEGMENT_SIZE} (the footer indexes \
             records with 32-bit offsets, below {MAX_SEGMENT_BYTES})",
            cfg.segment_bytes
        )));
    }
    Ok(())
}

//! Reading the log by index: the recent-entry cache first, then positional reads of the segment
//! files. A read is planned under the log's lock (which segment, which indexes) and executed
//! without it, so cold reads never hold up appends; a truncation that overlaps one makes it start
//! over. The record offsets of a sealed segment come from its footer, read on demand and kept in
//! a bounded cache. Every record read is verified (checksum, kind, index, decode).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::ops::{Bound, ControlFlow, RangeBounds};
use std::path::PathBuf;
use std::sync::Arc;

use openraft::alias::{LogIdOf, VoteOf};
use parking_lot::Mutex;

use super::{Inner, LogIndex, SegmentMeta};
use crate::LogError;
use crate::codec::{FooterTrailer, decode_record};
use crate::entry::{LogTypes, decode_entry};
use crate::segment::{SegmentFile, scan_records};

/// Footer offsets kept in memory, counted in offsets (4 bytes each): 4 Mi offsets = 16 MiB.
pub(crate) const FOOTER_CACHE_OFFSETS: usize = 4 * 1024 * 1024;

/// Record offsets of recently read sealed segments, oldest evicted first.
pub(crate) struct FooterCache {
    budget: usize,
    inner: Mutex<FooterCacheInner>,
}

#[derive(Default)]
struct FooterCacheInner {
    by_segment: HashMap<u64, Arc<Vec<u32>>>,
    order: VecDeque<u64>,
    held: usize,
}

impl FooterCache {
    pub(crate) fn new(budget: usize) -> Self {
        FooterCache {
            budget,
            inner: Mutex::new(FooterCacheInner::default()),
        }
    }

    fn get(&self, segment: u64) -> Option<Arc<Vec<u32>>> {
        self.inner.lock().by_segment.get(&segment).cloned()
    }

    fn put(&self, segment: u64, offsets: Arc<Vec<u32>>) {
        let mut c = self.inner.lock();
        if c.by_segment.contains_key(&segment) {
            return;
        }
        c.held += offsets.len();
        c.by_segment.insert(segment, offsets);
        c.order.push_back(segment);
        while c.held > self.budget && c.order.len() > 1 {
            let Some(old) = c.order.pop_front() else {
                break;
            };
            if let Some(gone) = c.by_segment.remove(&old) {
                c.held -= gone.len();
            }
        }
    }

    pub(crate) fn forget(&self, segment: u64) {
        let mut c = self.inner.lock();
        if let Some(gone) = c.by_segment.remove(&segment) {
            c.held -= gone.len();
            c.order.retain(|s| *s != segment);
        }
    }
}

/// Bytes of entries kept decoded after a cold read by index ([`LogHandle::entry_shared`]).
pub(crate) const COLD_ENTRY_BYTES: usize = 16 << 20;

/// Entries decoded by recent cold reads, oldest evicted first. A consumer walks through an
/// entry in steps (32 messages of an entry of hundreds): without this it read and decoded the
/// whole entry again at every step (a quarter of the CPU of a drain from disk). Each entry is
/// kept with the log's truncation count when it was read, and only served while that count is
/// unchanged, so a truncated and rewritten index never serves the old entry; indexes below the
/// log's start are refused before this is asked.
pub(crate) struct ColdEntries<E> {
    budget: usize,
    inner: Mutex<ColdInner<E>>,
}

struct ColdInner<E> {
    by_index: HashMap<u64, (u64, Arc<E>, usize)>,
    order: VecDeque<u64>,
    held: usize,
}

impl<E> ColdEntries<E> {
    pub(crate) fn new(budget: usize) -> Self {
        ColdEntries {
            budget,
            inner: Mutex::new(ColdInner {
                by_index: HashMap::new(),
                order: VecDeque::new(),
                held: 0,
            }),
        }
    }

    fn get(&self, index: u64, truncations: u64) -> Option<Arc<E>> {
        match self.inner.lock().by_index.get(&index) {
            Some((seen, entry, _)) if *seen == truncations => Some(entry.clone()),
            _ => None,
        }
    }

    fn put(&self, index: u64, truncations: u64, entry: Arc<E>, bytes: usize) {
        if bytes > self.budget {
            return;
        }
        let mut c = self.inner.lock();
        if let Some((_, _, old)) = c.by_index.insert(index, (truncations, entry, bytes)) {
            c.held -= old;
        } else {
            c.order.push_back(index);
        }
        c.held += bytes;
        while c.held > self.budget {
            let Some(old) = c.order.pop_front() else {
                break;
            };
            if let Some((_, _, gone)) = c.by_index.remove(&old) {
                c.held -= gone;
            }
        }
    }
}

/// Where the bytes of a planned read are.
enum Span {
    /// Known from the offsets in memory: `start..end` of the file.
    Bytes { start: u64, end: u64 },
    /// In a sealed segment: from its footer.
    Footer(FooterTrailer),
}

/// A planned read of consecutive records of one segment.
struct PlannedRead {
    file: Arc<SegmentFile>,
    /// Indexes `lo..=hi` of the read.
    lo: u64,
    hi: u64,
    span: Span,
}

impl<C: LogTypes> LogIndex<C> {
    /// Plans the read of `[lo, hi)` from the files: one positional read per segment.
    fn plan_file_read(&self, lo: u64, hi: u64) -> Result<Vec<PlannedRead>, LogError> {
        let mut plan = Vec::new();
        let mut index = lo;
        while index < hi {
            let segment = self
                .segment_position(index)
                .and_then(|p| self.segments.get(p))
                .ok_or_else(|| {
                    LogError::corrupt(
                        self.segments
                            .first()
                            .map_or_else(PathBuf::new, |s| s.file.path.clone()),
                        0,
                        format!("index {index} is inside the log but in no segment"),
                    )
                })?;
            let upto = segment.last_index().map_or(index, |last| last.min(hi - 1));
            let first = segment.first_index();
            let span = match (&segment.offsets, segment.footer) {
                (Some(offsets), _) => {
                    let a = (index - first) as usize;
                    let b = (upto - first) as usize;
                    let start = offsets.get(a).copied().ok_or_else(|| {
                        LogError::corrupt(&segment.file.path, 0, format!("no offset for {index}"))
                    })?;
                    let end = offsets
                        .get(b + 1)
                        .map_or(segment.records_end, |o| u64::from(*o));
                    Span::Bytes {
                        start: u64::from(start),
                        end,
                    }
                }
                (None, Some(footer)) => Span::Footer(footer),
                (None, None) => {
                    return Err(LogError::corrupt(
                        &segment.file.path,
                        0,
                        "segment has neither record offsets nor a footer",
                    ));
                }
            };
            plan.push(PlannedRead {
                file: segment.file.clone(),
                lo: index,
                hi: upto,
                span,
            });
            index = upto + 1;
        }
        Ok(plan)
    }
}

impl<C: LogTypes> Inner<C> {
    /// The byte range of a planned read: known already, or from the segment's footer (cached).
    fn byte_range(&self, read: &PlannedRead) -> Result<(u64, u64), LogError> {
        let trailer = match &read.span {
            Span::Bytes { start, end } => return Ok((*start, *end)),
            Span::Footer(trailer) => trailer,
        };
        let segment = read.file.first_index;
        let offsets = match self.footers.get(segment) {
            Some(offsets) => offsets,
            None => {
                let offsets = Arc::new(read.file.read_footer_offsets(trailer)?);
                self.footers.put(segment, offsets.clone());
                offsets
            }
        };
        let a = (read.lo - segment) as usize;
        let b = (read.hi - segment) as usize;
        let start = offsets.get(a).map(|o| u64::from(*o)).ok_or_else(|| {
            LogError::corrupt(
                &read.file.path,
                0,
                format!("no offset for index {}", read.lo),
            )
        })?;
        let end = offsets
            .get(b + 1)
            .map_or(trailer.records_end, |o| u64::from(*o));
        Ok((start, end))
    }

    /// Executes a read plan, verifying every record; returns the bytes read.
    fn read_planned(
        &self,
        plan: &[PlannedRead],
        out: &mut Vec<C::Entry>,
    ) -> Result<usize, LogError> {
        let mut bytes = 0;
        for read in plan {
            let path = &read.file.path;
            let (start, end) = self.byte_range(read)?;
            if end < start {
                return Err(LogError::corrupt(
                    path,
                    start,
                    "record offsets run backwards",
                ));
            }
            let buf = read
                .file
                .read_at((end - start) as usize, start)
                .map_err(|e| LogError::io("reading segment", path, e))?;
            bytes += buf.len();
            let mut pos = 0usize;
            for expected in read.lo..=read.hi {
                let at = start + pos as u64;
                let (head, payload, used) =
                    decode_record(&buf[pos..]).map_err(|e| LogError::corrupt(path, at, e))?;
                if head.index != expected {
                    return Err(LogError::corrupt(
                        path,
                        at,
                        format!("record holds index {}, expected {expected}", head.index),
                    ));
                }
                let entry =
                    decode_entry::<C>(head, payload).map_err(|e| LogError::corrupt(path, at, e))?;
                out.push(entry);
                pos += used;
            }
        }
        Ok(bytes)
    }
}

/// Read access to the log by index, for readers outside openraft. Cheap to clone; sees appends the
/// moment they return.
pub struct LogHandle<C: LogTypes> {
    pub(crate) inner: Arc<Inner<C>>,
}

impl<C: LogTypes> Clone for LogHandle<C> {
    fn clone(&self) -> Self {
        LogHandle {
            inner: self.inner.clone(),
        }
    }
}

impl<C: LogTypes> fmt::Debug for LogHandle<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogHandle")
            .field("dir", &self.inner.cfg.dir)
            .finish_non_exhaustive()
    }
}

fn bounds<R: RangeBounds<u64>>(range: &R) -> (u64, u64) {
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
    (start, end)
}

impl<C: LogTypes> LogHandle<C> {
    /// The entry at `index`; `None` if it is not in the files (compacted, or not appended yet).
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
                if let Some(entry) = self.inner.cold.get(index, st.truncations) {
                    return Ok(Some(entry));
                }
                (st.plan_file_read(index, index + 1)?, st.truncations)
            };
            let mut out = Vec::with_capacity(1);
            let bytes = self.inner.read_planned(&plan, &mut out)?;
            if self.inner.state.read().truncations == truncations {
                let entry = out.pop().map(Arc::new);
                if let Some(entry) = &entry {
                    let cost = C::cached_size(entry, bytes);
                    self.inner.cold.put(index, truncations, entry.clone(), cost);
                }
                return Ok(entry);
            }
        }
    }

    /// The entries in `range` that the files hold, in order and without holes. Reads from the
    /// files run without the log's lock; a truncation that overlaps one makes it start over, so
    /// the result is always one consistent view of the log.
    pub fn entries<R: RangeBounds<u64>>(&self, range: R) -> Result<Vec<C::Entry>, LogError> {
        let (start, end) = bounds(&range);
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
            self.inner.read_planned(&plan, &mut out)?;
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
            .map_or(0, |p| p.index + 1);
        let (start, end) = bounds(&range);
        self.entries(start.max(after_purge)..end)
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
        st.first_live_index().and(st.last_log_id)
    }

    /// The committed log id last saved by openraft.
    pub fn committed(&self) -> Option<LogIdOf<C>> {
        self.inner.state.read().committed
    }

    pub(crate) fn vote(&self) -> Option<VoteOf<C>> {
        self.inner.state.read().vote.clone()
    }

    /// Verifies every record of every sealed segment against its checksum and its footer, the
    /// background check that complements open (which trusts sealed segments' footers) and reads
    /// (which verify what they read). Reports what it found; it never changes a file.
    pub fn scrub(&self) -> Result<ScrubReport, LogError> {
        self.scrub_paced(|_| ControlFlow::Continue(()))
    }

    /// [`scrub`](Self::scrub), calling `between` with each segment's size after scrubbing it:
    /// the caller can pause there (to bound the scrub's read rate) or stop the scrub with
    /// `Break` (the report then covers the segments scrubbed so far and says it stopped).
    pub fn scrub_paced(
        &self,
        mut between: impl FnMut(u64) -> ControlFlow<()>,
    ) -> Result<ScrubReport, LogError> {
        type Sealed = (
            Arc<SegmentFile>,
            u64,
            u64,
            Option<Vec<u32>>,
            Option<FooterTrailer>,
            Option<String>,
        );
        // Segments are looked up one at a time: a paced scrub takes hours on a large log, and
        // a segment that retention deleted (or a truncation cut) meanwhile is skipped, not held
        // open or misreported.
        let sealed_at = |first: u64| -> Option<Sealed> {
            let st = self.inner.state.read();
            st.segments
                .iter()
                .find(|s| s.first_index() == first && s.sealed())
                .map(|s| {
                    (
                        s.file.clone(),
                        s.count,
                        s.records_end,
                        s.offsets.clone(),
                        s.footer,
                        s.damage.clone(),
                    )
                })
        };
        let firsts: Vec<u64> = {
            let st = self.inner.state.read();
            st.segments
                .iter()
                .filter(|s| s.sealed())
                .map(|s| s.first_index())
                .collect()
        };
        let mut report = ScrubReport::default();
        let decode = |head, payload: &[u8]| decode_entry::<C>(head, payload).map(|_| ());
        for first in firsts {
            let Some((file, count, records_end, offsets, footer, damage)) = sealed_at(first) else {
                continue;
            };
            report.segments += 1;
            let handle = file
                .handle()
                .map_err(|e| LogError::io("scrubbing", &file.path, e))?;
            let scanned = scan_records(
                handle.as_ref(),
                &file.path,
                file.first_index,
                records_end,
                &decode,
            )?;
            let listed = match (offsets, footer) {
                (Some(o), _) => Ok(o),
                (None, Some(t)) => file.read_footer_offsets(&t),
                (None, None) => Err(LogError::corrupt(&file.path, 0, "no offsets")),
            };
            let problem = if let Some(damage) = damage {
                Some(damage)
            } else if let Some(reason) = scanned.stopped {
                Some(format!("record at byte {}: {reason}", scanned.end))
            } else if scanned.offsets.len() as u64 != count {
                Some(format!(
                    "{} records, the footer lists {count}",
                    scanned.offsets.len()
                ))
            } else {
                match listed {
                    Ok(o) if o == scanned.offsets => None,
                    Ok(_) => Some("footer offsets differ from the records".to_string()),
                    Err(e) => Some(e.to_string()),
                }
            };
            report.records += scanned.offsets.len() as u64;
            if let Some(problem) = problem {
                tracing::error!(segment = %file.path.display(), problem = problem.as_str(), "scrub found a damaged sealed segment");
                report.damaged.push((file.path.clone(), problem));
            }
            if between(records_end).is_break() {
                report.stopped = true;
                break;
            }
        }
        Ok(report)
    }
}

/// What [`LogHandle::scrub`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScrubReport {
    pub segments: u64,
    pub records: u64,
    /// Damaged segments and what is wrong with each.
    pub damaged: Vec<(PathBuf, String)>,
    /// The caller stopped the scrub before the last segment.
    pub stopped: bool,
}

impl SegmentMeta {
    /// Record offsets of this segment, from memory or its footer.
    pub(crate) fn load_offsets(&self) -> Result<Vec<u32>, LogError> {
        match (&self.offsets, &self.footer) {
            (Some(o), _) => Ok(o.clone()),
            (None, Some(t)) => self.file.read_footer_offsets(t),
            (None, None) => Err(LogError::corrupt(&self.file.path, 0, "no offsets")),
        }
    }
}

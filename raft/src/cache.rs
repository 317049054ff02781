//! The recent-entry cache: the newest entries of the log, shared by `Arc`, so readers right behind
//! the writer never touch disk. It always holds a contiguous suffix of the log, and it pins entries
//! the writer thread has not written yet (eviction waits for their write sequence number), so a
//! cache miss always means "the record is in its file".

use std::collections::VecDeque;
use std::sync::Arc;

struct CachedEntry<E> {
    entry: Arc<E>,
    bytes: usize,
    /// Write sequence number of the append that carries this entry to disk.
    seq: u64,
}

pub(crate) struct EntryCache<E> {
    /// Index of `entries[0]`.
    first_index: u64,
    entries: VecDeque<CachedEntry<E>>,
    bytes: usize,
    capacity_bytes: usize,
}

impl<E> EntryCache<E> {
    pub(crate) fn new(capacity_bytes: usize) -> Self {
        EntryCache {
            first_index: 0,
            entries: VecDeque::new(),
            bytes: 0,
            capacity_bytes,
        }
    }

    /// Index of the oldest cached entry.
    pub(crate) fn first_index(&self) -> Option<u64> {
        (!self.entries.is_empty()).then_some(self.first_index)
    }

    pub(crate) fn get(&self, index: u64) -> Option<&Arc<E>> {
        let offset = index.checked_sub(self.first_index)?;
        self.entries
            .get(usize::try_from(offset).ok()?)
            .map(|c| &c.entry)
    }

    /// Adds the entry at `index`, which must directly follow the cached suffix. If it does not
    /// (the log restarted after being emptied), the old content is dropped: it is not the suffix
    /// any more.
    pub(crate) fn push(&mut self, index: u64, entry: Arc<E>, bytes: usize, seq: u64) {
        let next = self.first_index + self.entries.len() as u64;
        if self.entries.is_empty() || index != next {
            self.clear();
            self.first_index = index;
        }
        self.entries.push_back(CachedEntry { entry, bytes, seq });
        self.bytes += bytes;
    }

    /// Evicts the oldest entries while over capacity, but only those already written.
    pub(crate) fn evict(&mut self, written_seq: u64) {
        while self.bytes > self.capacity_bytes {
            match self.entries.front() {
                Some(front) if front.seq <= written_seq => {
                    self.bytes -= front.bytes;
                    self.entries.pop_front();
                    self.first_index += 1;
                }
                _ => break,
            }
        }
    }

    /// Drops entries with index > `index` (`None`: all).
    pub(crate) fn truncate_after(&mut self, index: Option<u64>) {
        let keep = match index {
            None => 0,
            Some(i) if i < self.first_index => 0,
            Some(i) => usize::try_from(i - self.first_index + 1).unwrap_or(usize::MAX),
        };
        while self.entries.len() > keep {
            if let Some(back) = self.entries.pop_back() {
                self.bytes -= back.bytes;
            }
        }
    }

    /// Drops entries with index <= `index`. Unwritten ones go too: purged entries are never read.
    pub(crate) fn purge_upto(&mut self, index: u64) {
        while !self.entries.is_empty() && self.first_index <= index {
            if let Some(front) = self.entries.pop_front() {
                self.bytes -= front.bytes;
            }
            self.first_index += 1;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with(range: std::ops::Range<u64>, seq: u64, cap: usize) -> EntryCache<u64> {
        let mut c = EntryCache::new(cap);
        for i in range {
            c.push(i, Arc::new(i), 10, seq);
        }
        c
    }

    #[test]
    fn eviction_respects_capacity_and_pins_unwritten() {
        let mut c = cache_with(1..11, 5, 50);
        c.evict(4); // nothing written yet
        assert_eq!(c.len(), 10);
        c.evict(5);
        assert_eq!(c.len(), 5);
        assert_eq!(c.first_index(), Some(6));
        assert_eq!(c.get(5), None);
        assert_eq!(c.get(6).map(|e| **e), Some(6));
        assert_eq!(c.get(11), None);
    }

    #[test]
    fn truncate_and_purge_keep_a_suffix() {
        let mut c = cache_with(1..11, 1, usize::MAX);
        c.truncate_after(Some(7));
        assert_eq!(c.len(), 7);
        c.purge_upto(3);
        assert_eq!(c.first_index(), Some(4));
        assert_eq!(c.len(), 4);
        c.push(8, Arc::new(8), 10, 2);
        assert_eq!(c.get(8).map(|e| **e), Some(8));
        c.truncate_after(Some(2));
        assert_eq!(c.first_index(), None);
        c.push(20, Arc::new(20), 10, 3);
        assert_eq!(c.first_index(), Some(20));
        c.purge_upto(100);
        assert_eq!(c.first_index(), None);
        c.truncate_after(None);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn non_contiguous_push_restarts_the_suffix() {
        let mut c = cache_with(1..4, 1, usize::MAX);
        c.push(10, Arc::new(10), 10, 2);
        assert_eq!(c.first_index(), Some(10));
        assert_eq!(c.len(), 1);
    }
}

//! Per-queue indexes: queue offset -> where the message's record lives in the Raft log, plus
//! what filtering and FIFO need without reading the record (interned tag, message-group hash).
//! Offsets are dense; the minimum rises when retention drops old entries.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::command::RecordRef;

/// Log index marking an entry whose record retention removed while newer entries before it in
/// the queue survive (released delay messages and dead letters point at old records).
const PURGED: u64 = u64::MAX;

/// One message in a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub log_index: u64,
    pub slot: u32,
    /// When the message entered this queue (Unix ms).
    pub store_ts_ms: i64,
    /// Interned tag ([`TagTable`]), 0 = no tag.
    pub tag: u32,
    /// FIFO message-group hash ([`message_group_hash`]), 0 = none.
    pub message_group: u64,
}

impl IndexEntry {
    pub fn record(&self) -> RecordRef {
        RecordRef {
            log_index: self.log_index,
            slot: self.slot,
        }
    }

    pub fn is_purged(&self) -> bool {
        self.log_index == PURGED
    }
}

/// The messages of one queue, by offset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueIndex {
    min_offset: u64,
    entries: VecDeque<IndexEntry>,
}

impl QueueIndex {
    /// First offset still retained.
    pub fn min_offset(&self) -> u64 {
        self.min_offset
    }

    /// The offset the next message gets.
    pub fn max_offset(&self) -> u64 {
        self.min_offset + self.entries.len() as u64
    }

    /// Appends an entry and returns its offset.
    pub fn push(&mut self, entry: IndexEntry) -> u64 {
        let offset = self.max_offset();
        self.entries.push_back(entry);
        offset
    }

    /// The live entry at `offset`, if retained and not purged.
    pub fn get(&self, offset: u64) -> Option<&IndexEntry> {
        let pos = usize::try_from(offset.checked_sub(self.min_offset)?).ok()?;
        self.entries.get(pos).filter(|e| !e.is_purged())
    }

    /// Drops every entry whose record lies below `below_log_index`: leading ones go (the
    /// minimum offset rises), later ones become purged holes so offsets stay dense.
    pub fn truncate_below(&mut self, below_log_index: u64) {
        while let Some(front) = self.entries.front() {
            if front.log_index < below_log_index || front.is_purged() {
                self.entries.pop_front();
                self.min_offset += 1;
            } else {
                break;
            }
        }
        for entry in &mut self.entries {
            if entry.log_index < below_log_index {
                entry.log_index = PURGED;
            }
        }
    }

    /// Lowest live log index referenced, if any.
    #[cfg(test)]
    pub fn lowest_log_index(&self) -> Option<u64> {
        self.entries
            .iter()
            .filter(|e| !e.is_purged())
            .map(|e| e.log_index)
            .min()
    }
}

/// Interns tags so every index entry holds a small id and filters compare exact strings once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<String>", into = "Vec<String>")]
pub struct TagTable {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
}

impl TagTable {
    /// The id of `tag`, interning it on first sight. `None` is id 0.
    pub fn intern(&mut self, tag: Option<&str>) -> u32 {
        let Some(tag) = tag else { return 0 };
        if let Some(id) = self.ids.get(tag) {
            return *id;
        }
        let name: Arc<str> = Arc::from(tag);
        self.names.push(name.clone());
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.ids.insert(name, id);
        id
    }

    /// The id of `tag` if it was ever seen.
    pub fn lookup(&self, tag: &str) -> Option<u32> {
        self.ids.get(tag).copied()
    }
}

impl From<Vec<String>> for TagTable {
    fn from(names: Vec<String>) -> Self {
        let mut table = TagTable::default();
        for name in names {
            table.intern(Some(&name));
        }
        table
    }
}

impl From<TagTable> for Vec<String> {
    fn from(table: TagTable) -> Self {
        table.names.iter().map(|n| n.to_string()).collect()
    }
}

/// The hash identifying a FIFO message group in indexes (0 = no group). FNV-1a 64: stable
/// across versions because it is persisted in snapshots. Two groups colliding only makes their
/// ordering stricter (they share one lane), never wrong.
pub fn message_group_hash(group: Option<&str>) -> u64 {
    match group {
        None => 0,
        Some(g) => vela_proto::message_group_hash(g).max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(log_index: u64) -> IndexEntry {
        IndexEntry {
            log_index,
            slot: 0,
            store_ts_ms: 0,
            tag: 0,
            message_group: 0,
        }
    }

    #[test]
    fn offsets_are_dense_and_truncation_raises_the_minimum() {
        let mut q = QueueIndex::default();
        assert_eq!(q.push(entry(10)), 0);
        assert_eq!(q.push(entry(11)), 1);
        assert_eq!(q.push(entry(3)), 2); // a released delay message points at an old record
        assert_eq!(q.push(entry(12)), 3);
        q.truncate_below(11);
        assert_eq!(q.min_offset(), 1);
        assert_eq!(q.max_offset(), 4);
        assert!(q.get(0).is_none());
        assert!(q.get(2).is_none(), "the hole for the old record is purged");
        assert_eq!(q.get(3).map(|e| e.log_index), Some(12));
        assert_eq!(q.lowest_log_index(), Some(11));
        q.truncate_below(12);
        assert_eq!(q.min_offset(), 3, "leading holes are dropped too");
    }

    #[test]
    fn tags_intern_and_survive_serialization() {
        let mut t = TagTable::default();
        assert_eq!(t.intern(None), 0);
        let a = t.intern(Some("A"));
        let b = t.intern(Some("B"));
        assert_eq!(t.intern(Some("A")), a);
        assert_ne!(a, b);
        let back: TagTable =
            postcard::from_bytes(&postcard::to_stdvec(&t).expect("encodes")).expect("decodes");
        assert_eq!(back.lookup("B"), Some(b));
        assert_eq!(back.lookup("C"), None);
    }

    #[test]
    fn group_hash_is_stable_and_never_zero_for_a_group() {
        assert_eq!(message_group_hash(None), 0);
        assert_ne!(message_group_hash(Some("")), 0);
        assert_eq!(
            message_group_hash(Some("order-1")),
            message_group_hash(Some("order-1"))
        );
        assert_ne!(
            message_group_hash(Some("order-1")),
            message_group_hash(Some("order-2"))
        );
    }
}

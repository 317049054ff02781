//! Per-queue indexes: queue offset -> where the message's record lives in the Raft log, plus
//! what filtering and FIFO need without reading the record (interned tag, message-group hash).
//! Offsets are dense; the minimum rises when retention drops old entries (ADR 0008).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::command::RecordRef;
use crate::index_db::IndexView;
use crate::index_db::history::{
    self, Event, EventKind, HistoryRows, LookupKind, Placed, encode_event, encode_lookup_key,
    encode_lookup_value, lookup_hash, queue_event_key, record_event_key,
};

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
}

/// A queue's place in the index: its key there and the offsets it holds. The entries
/// themselves live in [`Entries`] under `(key, offset)`; offsets are dense in
/// `min_offset..max_offset`. Keys are never reused, so a dropped queue's entries are
/// unreachable until garbage collection removes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueIndex {
    key: u32,
    min_offset: u64,
    max_offset: u64,
}

impl QueueIndex {
    pub fn new(key: u32) -> Self {
        Self {
            key,
            min_offset: 0,
            max_offset: 0,
        }
    }

    pub(super) fn with_offsets(key: u32, min_offset: u64, max_offset: u64) -> Self {
        Self {
            key,
            min_offset: min_offset.min(max_offset),
            max_offset,
        }
    }

    /// The queue's key in the index.
    pub fn key(&self) -> u32 {
        self.key
    }

    /// First offset still retained.
    pub fn min_offset(&self) -> u64 {
        self.min_offset
    }

    /// The offset the next message gets.
    pub fn max_offset(&self) -> u64 {
        self.max_offset
    }

    /// Takes the next offset.
    pub(super) fn take_offset(&mut self) -> u64 {
        let offset = self.max_offset;
        self.max_offset += 1;
        offset
    }

    /// Raises the first retained offset (never past the end).
    pub(super) fn raise_min(&mut self, min_offset: u64) {
        self.min_offset = self.min_offset.max(min_offset.min(self.max_offset));
    }
}

/// Index entries by `(queue key, offset)`: the applied tail in memory, the rest in the shard's
/// index file ([`crate::index_db`]) when one is attached (tests run without: then the tail holds
/// everything). A tail is frozen while it is being written to the file and stays readable until
/// the file has it.
///
/// The state decides which offsets exist (`QueueIndex`); keys outside a queue's range are never
/// read, so whatever the file holds there (entries retention already released, or entries a
/// crash left from a later, lost history) is harmless and is overwritten before it is read.
#[derive(Clone, Default)]
pub struct Entries {
    tail: BTreeMap<(u32, u64), IndexEntry>,
    /// Message lookups and events applied with the tail ([`crate::index_db::history`]).
    history: Box<HistoryRows>,
    frozen: Option<Arc<Frozen>>,
    file: Option<Arc<IndexView>>,
    /// The first read error of the file; apply checks it and stops the shard.
    failure: Arc<Mutex<Option<String>>>,
    /// Entries put so far (tells apply whether a command indexed anything).
    puts: u64,
    /// Message lookups and tracks are not recorded (`store.message_index = false`). Local: the
    /// rows are derived, so replicas may differ here without diverging.
    no_history: bool,
}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries")
            .field("tail", &self.tail.len())
            .field("frozen", &self.frozen.as_ref().map(|f| f.entries.len()))
            .field("history", &self.history.len())
            .field("file", &self.file.is_some())
            .finish()
    }
}

/// A tail moved aside for writing to the file: its entries and its history rows.
#[derive(Debug, Default)]
pub struct Frozen {
    pub entries: BTreeMap<(u32, u64), IndexEntry>,
    pub history: HistoryRows,
}

type Source<'a> = std::iter::Peekable<Box<dyn Iterator<Item = (u64, IndexEntry)> + 'a>>;

impl Entries {
    /// Entries read through `file` from now on.
    pub fn attach(&mut self, file: Arc<IndexView>) {
        self.file = Some(file);
    }

    /// Whether message lookups and tracks are recorded from now on (they are by default).
    pub fn set_history(&mut self, enabled: bool) {
        self.no_history = !enabled;
    }

    pub fn put(&mut self, key: u32, offset: u64, entry: IndexEntry) {
        self.puts += 1;
        self.tail.insert((key, offset), entry);
    }

    /// Entries put since this value was made.
    pub fn puts(&self) -> u64 {
        self.puts
    }

    pub fn get(&self, key: u32, offset: u64) -> Option<IndexEntry> {
        if let Some(e) = self.tail.get(&(key, offset)) {
            return Some(*e);
        }
        if let Some(e) = self
            .frozen
            .as_ref()
            .and_then(|f| f.entries.get(&(key, offset)))
        {
            return Some(*e);
        }
        let file = self.file.as_ref()?;
        file.get(key, offset).unwrap_or_else(|e| {
            self.fail(e);
            None
        })
    }

    /// The entries of queue `key` with offsets in `from..to`, ascending.
    pub fn range(
        &self,
        key: u32,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = (u64, IndexEntry)> + '_ {
        fn memory(
            m: &BTreeMap<(u32, u64), IndexEntry>,
            key: u32,
            from: u64,
            to: u64,
        ) -> Source<'_> {
            let it: Box<dyn Iterator<Item = (u64, IndexEntry)> + '_> = if from < to {
                Box::new(m.range((key, from)..(key, to)).map(|((_, o), e)| (*o, *e)))
            } else {
                Box::new(std::iter::empty())
            };
            it.peekable()
        }
        let tail = memory(&self.tail, key, from, to);
        let frozen = match &self.frozen {
            Some(f) => memory(&f.entries, key, from, to),
            None => (Box::new(std::iter::empty()) as Box<dyn Iterator<Item = _>>).peekable(),
        };
        let file: Source<'_> = match (&self.file, from < to) {
            (Some(file), true) => {
                let it: Box<dyn Iterator<Item = (u64, IndexEntry)> + '_> =
                    match file.range(key, from, to) {
                        Ok(it) => Box::new(it.map_while(|r| match r {
                            Ok(x) => Some(x),
                            Err(e) => {
                                self.fail(e);
                                None
                            }
                        })),
                        Err(e) => {
                            self.fail(e);
                            Box::new(std::iter::empty())
                        }
                    };
                it.peekable()
            }
            _ => (Box::new(std::iter::empty()) as Box<dyn Iterator<Item = _>>).peekable(),
        };
        Merged {
            sources: [tail, frozen, file],
        }
    }

    /// The lowest offset in `from..to` of queue `key` whose entry has one of `tags`: a hint (a
    /// stale tag key in the file can name an offset whose entry is now another), which callers
    /// confirm by reading the entry.
    pub fn first_tagged(&self, key: u32, tags: &[u32], from: u64, to: u64) -> Option<u64> {
        if from >= to || tags.is_empty() {
            return None;
        }
        let in_memory = |m: &BTreeMap<(u32, u64), IndexEntry>| {
            m.range((key, from)..(key, to))
                .find(|(_, e)| tags.contains(&e.tag))
                .map(|((_, offset), _)| *offset)
        };
        let mut first = in_memory(&self.tail);
        if let Some(frozen) = &self.frozen {
            first = earliest(first, in_memory(&frozen.entries));
        }
        if let Some(file) = &self.file {
            match file.first_tagged(key, tags, from, first.unwrap_or(to)) {
                Ok(found) => first = earliest(first, found),
                Err(e) => self.fail(e),
            }
        }
        first
    }

    /// Entries and history rows applied since the last [`Entries::freeze`] or
    /// [`Entries::flushed`].
    pub fn tail_len(&self) -> usize {
        self.tail.len() + self.history.len()
    }

    /// Moves the tail aside for writing to the file (it stays readable) and returns it. `None`
    /// when there is nothing to write, no file, or an earlier freeze is not written yet.
    pub fn freeze(&mut self) -> Option<Arc<Frozen>> {
        if self.file.is_none() || self.frozen.is_some() || self.tail_len() == 0 {
            return None;
        }
        let frozen = Arc::new(Frozen {
            entries: std::mem::take(&mut self.tail),
            history: *std::mem::take(&mut self.history),
        });
        self.frozen = Some(frozen.clone());
        Some(frozen)
    }

    /// The frozen tail is in the file, read through `file` from now on.
    pub fn flushed(&mut self, file: Arc<IndexView>) {
        self.frozen = None;
        self.file = Some(file);
    }

    /// Copies of the entries and rows applied but not yet known to be in the file (frozen and
    /// tail).
    pub fn unflushed(&self) -> Vec<Arc<Frozen>> {
        let mut parts: Vec<_> = self.frozen.iter().cloned().collect();
        if self.tail_len() > 0 {
            parts.push(Arc::new(Frozen {
                entries: self.tail.clone(),
                history: (*self.history).clone(),
            }));
        }
        parts
    }

    /// Records that the message at `record` has `text` as its id or one of its keys, indexed
    /// at `at` (queue key, offset) when it went into a queue at its append.
    pub fn put_lookup(
        &mut self,
        kind: LookupKind,
        text: &str,
        record: RecordRef,
        at: Option<Placed>,
    ) {
        if self.no_history {
            return;
        }
        self.history.lookups.push((
            encode_lookup_key(kind, lookup_hash(text), record.log_index, record.slot),
            encode_lookup_value(at),
        ));
    }

    /// Records an event of the record itself.
    pub fn put_record_event(&mut self, record: RecordRef, event: TrackEvent<'_>) {
        if self.no_history {
            return;
        }
        let key = record_event_key(record.log_index, record.slot, event.at, event.kind);
        let value = encode_event(&key, event.time_ms, event.a, event.b, event.name);
        self.history.record_events.push((key, value));
    }

    /// Records what a group did with the message at `(queue key, offset)`.
    pub fn put_queue_event(&mut self, queue: u32, offset: u64, event: TrackEvent<'_>) {
        if self.no_history {
            return;
        }
        let key = queue_event_key(queue, offset, event.at, event.kind);
        let value = encode_event(&key, event.time_ms, event.a, event.b, event.name);
        self.history.queue_events.push((key, value));
    }

    /// Records whose id or key hashes like `text` among the rows not yet in the file: `(record,
    /// where it was indexed at its append)`. Hints: the caller confirms each against the
    /// record. The file's rows are read through [`IndexView::lookup`].
    pub fn lookup_in_memory(
        &self,
        kind: LookupKind,
        text: &str,
    ) -> Vec<(RecordRef, Option<Placed>)> {
        let hash = lookup_hash(text).to_be_bytes();
        let mut found = Vec::new();
        for rows in self.history_parts() {
            for (key, value) in &rows.lookups {
                if key[4] == kind as u8 && key[5..13] == hash {
                    let (log_index, slot) = history::lookup_record(key);
                    found.push((
                        RecordRef { log_index, slot },
                        history::decode_lookup_value(value),
                    ));
                }
            }
        }
        found
    }

    /// The events, among the rows not yet in the file, of the record at `record` and of the
    /// message at each `(queue key, offset)` in `positions`.
    pub fn events_in_memory(&self, record: RecordRef, positions: &[(u32, u64)]) -> Vec<Event> {
        let start = record_event_key(record.log_index, record.slot, 0, EventKind::Stored);
        let mut out = Vec::new();
        for rows in self.history_parts() {
            for (key, value) in &rows.record_events {
                if key[..12] == start[..12] {
                    out.extend(history::decode_event(key, value).ok());
                }
            }
            for (key, value) in &rows.queue_events {
                if positions.contains(&history::queue_event_position(key)) {
                    out.extend(history::decode_event(key, value).ok());
                }
            }
        }
        out
    }

    fn history_parts(&self) -> impl Iterator<Item = &HistoryRows> {
        std::iter::once(&*self.history).chain(self.frozen.as_ref().map(|f| &f.history))
    }

    /// The file behind these entries, if any.
    pub fn file(&self) -> Option<&Arc<IndexView>> {
        self.file.as_ref()
    }

    /// The first read error of the index file, if one happened.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }

    /// An entry the state says exists is not there: the index is damaged.
    pub fn report_missing(&self, key: u32, offset: u64) {
        self.fail(format!("entry ({key}, {offset}) is missing"));
    }

    fn fail(&self, err: impl std::fmt::Display) {
        let mut failure = self.failure.lock();
        if failure.is_none() {
            tracing::error!(error = %err, "reading the queue index file failed");
            *failure = Some(err.to_string());
        }
    }

    /// Every entry in memory (tests without a file).
    #[cfg(test)]
    pub fn in_memory(&self) -> &BTreeMap<(u32, u64), IndexEntry> {
        &self.tail
    }
}

fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Merges ascending sources by offset; on equal offsets the first source wins (the tail is
/// newer than the frozen tail, which is newer than the file).
struct Merged<'a> {
    sources: [Source<'a>; 3],
}

impl Iterator for Merged<'_> {
    type Item = (u64, IndexEntry);

    fn next(&mut self) -> Option<Self::Item> {
        let lowest = self
            .sources
            .iter_mut()
            .filter_map(|s| s.peek().map(|(o, _)| *o))
            .min()?;
        let mut found = None;
        for source in &mut self.sources {
            if source.peek().is_some_and(|(o, _)| *o == lowest) {
                let item = source.next();
                found = found.or(item);
            }
        }
        found
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

/// One event of a message's track (ADR 0028): the log index of the command that did it, what
/// it was and when, and what the kind says in `a`, `b` and `name` (see [`EventKind`]).
#[derive(Debug, Clone, Copy)]
pub struct TrackEvent<'a> {
    pub at: u64,
    pub kind: EventKind,
    pub time_ms: i64,
    pub a: u64,
    pub b: u64,
    pub name: &'a str,
}

impl TrackEvent<'static> {
    /// An event that says nothing more than its kind and time.
    pub fn plain(at: u64, kind: EventKind, time_ms: i64) -> Self {
        TrackEvent {
            at,
            kind,
            time_ms,
            a: 0,
            b: 0,
            name: "",
        }
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
    fn offsets_are_dense_and_the_minimum_only_rises() {
        let mut q = QueueIndex::new(7);
        assert_eq!(q.take_offset(), 0);
        assert_eq!(q.take_offset(), 1);
        q.raise_min(1);
        q.raise_min(0);
        assert_eq!((q.min_offset(), q.max_offset()), (1, 2));
        q.raise_min(10);
        assert_eq!(q.min_offset(), 2, "never past the end");
    }

    #[test]
    fn ranges_merge_the_tail_over_the_frozen_tail() {
        let mut entries = Entries::default();
        entries.put(1, 0, entry(10));
        entries.put(1, 1, entry(11));
        entries.put(2, 0, entry(99));
        entries.frozen = Some(Arc::new(Frozen {
            entries: std::mem::take(&mut entries.tail),
            history: HistoryRows::default(),
        }));
        entries.put(1, 1, entry(21));
        entries.put(1, 2, entry(22));
        let got: Vec<(u64, u64)> = entries
            .range(1, 0, 10)
            .map(|(o, e)| (o, e.log_index))
            .collect();
        assert_eq!(got, vec![(0, 10), (1, 21), (2, 22)]);
        assert_eq!(entries.get(1, 1).map(|e| e.log_index), Some(21));
        assert_eq!(entries.get(2, 0).map(|e| e.log_index), Some(99));
        assert_eq!(entries.range(1, 2, 2).count(), 0);
        assert_eq!(entries.range(1, 3, 1).count(), 0);
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

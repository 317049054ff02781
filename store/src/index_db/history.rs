//! What `vela admin message show|find` reads (ADR 0028): a message's id and keys, and its track
//! (stored, parked, delivered, acknowledged, dead-lettered ...), as rows of the shard's index
//! file beside the queue entries. Apply derives them from the log like the entries, so every
//! replica has them, they are written with the entries' batches, made durable with them before
//! a snapshot covers them, and replay writes them again under the same keys.
//!
//! Three tables:
//! - `lookups`: `bucket u32 ‖ kind u8 ‖ hash u64 ‖ log index u64 ‖ slot u32` (25 bytes) →
//!   `queue key u32 ‖ queue id u32 ‖ offset u64` (16 bytes; all ones when the message was not
//!   indexed at its append: a delay or transaction message). The bucket is the record's log index
//!   `>> BUCKET_SHIFT`, so garbage collection drops whole buckets below the retention floor;
//!   the hash is FNV-1a 64 of the id or key. A lookup is a hint: the reader confirms it against
//!   the record (its id or keys) and the queue entry.
//! - `record_events`: `log index u64 ‖ slot u32 ‖ at u64 ‖ kind u8` (21 bytes) → event: what
//!   happened to the record itself (indexed into a queue, parked until a time, prepared,
//!   committed, rolled back, recalled). `at` is the log index of the command.
//! - `queue_events`: `queue key u32 ‖ offset u64 ‖ at u64 ‖ kind u8` (21 bytes) → event: what a
//!   consumer group did with the message at that queue position (delivered, acknowledged,
//!   invisibility changed, dead-lettered).
//!
//! An event value is `version u8 (1) ‖ time i64 ‖ a u64 ‖ b u64 ‖ name (UTF-8, rest)` followed
//! by a crc32c of key and value, checked on read (a damaged event is skipped with a warning, it
//! is never shown as something else).

use redb::{Durability, ReadOnlyTable, ReadableDatabase, WriteTransaction};
use tracing::warn;
use vela_proto::message_group_hash;

use super::{
    COLLECT_BATCH, IndexDb, IndexError, IndexRows, IndexView, LOOKUPS, QUEUE_EVENTS, RECORD_EVENTS,
    guarded,
};

/// Bytes of a lookup key and its value.
pub const LOOKUP_KEY_LEN: usize = 25;
pub const LOOKUP_VALUE_LEN: usize = 16;
/// Bytes of an event key (both event tables).
pub const EVENT_KEY_LEN: usize = 21;
/// Log indexes per lookup bucket (`1 << BUCKET_SHIFT`).
pub const BUCKET_SHIFT: u32 = 22;
const EVENT_VERSION: u8 = 1;
const EVENT_FIXED: usize = 1 + 8 + 8 + 8;

/// What a lookup key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LookupKind {
    MessageId = 1,
    Key = 2,
}

/// What happened, as stored (the numbers are part of the file format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum EventKind {
    /// Indexed into a queue: name = topic, a = queue id, b = offset.
    Stored = 1,
    /// Parked as a delay message: b = due time (Unix ms).
    Delayed = 2,
    /// Stored as a transaction half message.
    Prepared = 3,
    Committed = 4,
    RolledBack = 5,
    /// Withdrawn before its delivery time.
    Recalled = 6,
    /// Delivered to a group: name = group, a = attempt, b = invisible until (Unix ms).
    Delivered = 10,
    /// Acknowledged by a group: name = group.
    Acked = 11,
    /// Invisibility changed (a negative acknowledgement, or a longer hold): name = group,
    /// b = invisible until.
    InvisibilityChanged = 12,
    /// Moved to the group's dead-letter topic: name = group.
    DeadLettered = 13,
    /// The client a delivery (the `Delivered` event of the same command) went to: name =
    /// client id. Recorded by the leader that served the receive, not by apply, so only that
    /// replica has it.
    DeliveredTo = 14,
}

impl EventKind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Stored,
            2 => Self::Delayed,
            3 => Self::Prepared,
            4 => Self::Committed,
            5 => Self::RolledBack,
            6 => Self::Recalled,
            10 => Self::Delivered,
            11 => Self::Acked,
            12 => Self::InvisibilityChanged,
            13 => Self::DeadLettered,
            14 => Self::DeliveredTo,
            _ => return None,
        })
    }

    /// The word `vela admin message show` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Delayed => "delayed",
            Self::Prepared => "prepared",
            Self::Committed => "committed",
            Self::RolledBack => "rolled_back",
            Self::Recalled => "recalled",
            Self::Delivered => "delivered",
            Self::Acked => "acked",
            Self::InvisibilityChanged => "invisibility_changed",
            Self::DeadLettered => "dead_lettered",
            Self::DeliveredTo => "delivered_to",
        }
    }
}

/// One event of a message's track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// Log index of the command it happened in (orders events).
    pub at: u64,
    pub time_ms: i64,
    pub a: u64,
    pub b: u64,
    pub name: String,
}

/// An event row: its key and its encoded value.
pub type EventRow = ([u8; EVENT_KEY_LEN], Box<[u8]>);
/// A lookup row found: the record's log index and slot, and where it was indexed at its
/// append.
pub type LookupHit = (u64, u32, Option<Placed>);

/// Where a message went into its queue at its append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// The queue's key in the index.
    pub key: u32,
    pub queue_id: u32,
    pub offset: u64,
}

/// Rows applied but not yet in the file (part of a tail; see [`crate::state::Entries`]).
#[derive(Debug, Clone, Default)]
pub struct HistoryRows {
    pub lookups: Vec<([u8; LOOKUP_KEY_LEN], [u8; LOOKUP_VALUE_LEN])>,
    pub record_events: Vec<EventRow>,
    pub queue_events: Vec<EventRow>,
}

impl HistoryRows {
    pub fn len(&self) -> usize {
        self.lookups.len() + self.record_events.len() + self.queue_events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The stable hash of an id or key in lookup keys.
pub fn lookup_hash(text: &str) -> u64 {
    message_group_hash(text)
}

/// The lookup bucket of a log index.
pub fn bucket(log_index: u64) -> u32 {
    u32::try_from(log_index >> BUCKET_SHIFT).unwrap_or(u32::MAX)
}

pub fn encode_lookup_key(kind: LookupKind, hash: u64, log_index: u64, slot: u32) -> [u8; 25] {
    let mut key = [0u8; LOOKUP_KEY_LEN];
    key[..4].copy_from_slice(&bucket(log_index).to_be_bytes());
    key[4] = kind as u8;
    key[5..13].copy_from_slice(&hash.to_be_bytes());
    key[13..21].copy_from_slice(&log_index.to_be_bytes());
    key[21..].copy_from_slice(&slot.to_be_bytes());
    key
}

/// The first key of `(bucket, kind, hash)`: a lookup scans from here while the prefix holds.
pub fn lookup_prefix(bucket: u32, kind: LookupKind, hash: u64) -> [u8; LOOKUP_KEY_LEN] {
    let mut key = [0u8; LOOKUP_KEY_LEN];
    key[..4].copy_from_slice(&bucket.to_be_bytes());
    key[4] = kind as u8;
    key[5..13].copy_from_slice(&hash.to_be_bytes());
    key
}

/// The record a lookup key names.
pub fn lookup_record(key: &[u8; LOOKUP_KEY_LEN]) -> (u64, u32) {
    (u64_at(key, 13), u32_at(key, 21))
}

/// Where the message was indexed at its append, or `None`.
pub fn encode_lookup_value(at: Option<Placed>) -> [u8; LOOKUP_VALUE_LEN] {
    let mut value = [0xffu8; LOOKUP_VALUE_LEN];
    if let Some(p) = at {
        value[..4].copy_from_slice(&p.key.to_be_bytes());
        value[4..8].copy_from_slice(&p.queue_id.to_be_bytes());
        value[8..].copy_from_slice(&p.offset.to_be_bytes());
    }
    value
}

pub fn decode_lookup_value(value: &[u8; LOOKUP_VALUE_LEN]) -> Option<Placed> {
    (value != &[0xffu8; LOOKUP_VALUE_LEN]).then(|| Placed {
        key: u32_at(value, 0),
        queue_id: u32_at(value, 4),
        offset: u64_at(value, 8),
    })
}

/// The key of an event of the record at `(log_index, slot)`.
pub fn record_event_key(log_index: u64, slot: u32, at: u64, kind: EventKind) -> [u8; 21] {
    let mut key = [0u8; EVENT_KEY_LEN];
    key[..8].copy_from_slice(&log_index.to_be_bytes());
    key[8..12].copy_from_slice(&slot.to_be_bytes());
    key[12..20].copy_from_slice(&at.to_be_bytes());
    key[20] = kind as u8;
    key
}

/// The key of an event of the message at `(queue key, offset)`.
pub fn queue_event_key(queue: u32, offset: u64, at: u64, kind: EventKind) -> [u8; 21] {
    let mut key = [0u8; EVENT_KEY_LEN];
    key[..4].copy_from_slice(&queue.to_be_bytes());
    key[4..12].copy_from_slice(&offset.to_be_bytes());
    key[12..20].copy_from_slice(&at.to_be_bytes());
    key[20] = kind as u8;
    key
}

/// The log index of the record an event key of `record_events` belongs to.
pub fn record_event_log_index(key: &[u8; EVENT_KEY_LEN]) -> u64 {
    u64_at(key, 0)
}

/// `(queue key, offset)` of a `queue_events` key.
pub fn queue_event_position(key: &[u8; EVENT_KEY_LEN]) -> (u32, u64) {
    (u32_at(key, 0), u64_at(key, 4))
}

/// An event's value for `key`.
pub fn encode_event(
    key: &[u8; EVENT_KEY_LEN],
    time_ms: i64,
    a: u64,
    b: u64,
    name: &str,
) -> Box<[u8]> {
    let mut out = Vec::with_capacity(EVENT_FIXED + name.len() + 4);
    out.push(EVENT_VERSION);
    out.extend_from_slice(&time_ms.to_be_bytes());
    out.extend_from_slice(&a.to_be_bytes());
    out.extend_from_slice(&b.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(key), &out);
    out.extend_from_slice(&crc.to_be_bytes());
    out.into_boxed_slice()
}

/// Decodes the event stored under `key`, checking its checksum.
pub fn decode_event(key: &[u8; EVENT_KEY_LEN], value: &[u8]) -> Result<Event, String> {
    if value.len() < EVENT_FIXED + 4 {
        return Err("message event is too short".into());
    }
    let (body, crc) = value.split_at(value.len() - 4);
    let mut stored = [0u8; 4];
    stored.copy_from_slice(crc);
    if u32::from_be_bytes(stored) != crc32c::crc32c_append(crc32c::crc32c(key), body) {
        return Err("message event is damaged (checksum mismatch)".into());
    }
    if body[0] != EVENT_VERSION {
        return Err(format!(
            "message event version {} is not supported",
            body[0]
        ));
    }
    let kind =
        EventKind::from_u8(key[20]).ok_or_else(|| format!("unknown event kind {}", key[20]))?;
    let name = std::str::from_utf8(&body[EVENT_FIXED..])
        .map_err(|_| "message event name is not UTF-8".to_string())?;
    Ok(Event {
        kind,
        at: u64_at(key, 12),
        time_ms: u64_at(body, 1) as i64,
        a: u64_at(body, 9),
        b: u64_at(body, 17),
        name: name.to_owned(),
    })
}

/// The lowest `queue_events` key of `(queue key, offset)` (garbage collection ranges).
pub(super) fn queue_event_start(queue: u32, offset: u64) -> [u8; EVENT_KEY_LEN] {
    let mut key = [0u8; EVENT_KEY_LEN];
    key[..4].copy_from_slice(&queue.to_be_bytes());
    key[4..12].copy_from_slice(&offset.to_be_bytes());
    key
}

/// The lowest `record_events` key of a record, or of a log index (`slot` 0).
fn record_event_start(log_index: u64, slot: u32) -> [u8; EVENT_KEY_LEN] {
    let mut key = [0u8; EVENT_KEY_LEN];
    key[..8].copy_from_slice(&log_index.to_be_bytes());
    key[8..12].copy_from_slice(&slot.to_be_bytes());
    key
}

pub(super) fn create_history_tables(tx: &WriteTransaction) -> Result<(), redb::TableError> {
    tx.open_table(LOOKUPS)?;
    tx.open_table(RECORD_EVENTS)?;
    tx.open_table(QUEUE_EVENTS)?;
    Ok(())
}

pub(super) fn write_history(tx: &WriteTransaction, rows: &HistoryRows) -> Result<(), redb::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    // In key order: apply adds lookups in hash order (random) and events interleaved across
    // queues, and a B-tree takes sorted inserts with far fewer pages touched.
    fn sorted<K: Ord, V>(rows: &[(K, V)]) -> Vec<&(K, V)> {
        let mut order: Vec<&(K, V)> = rows.iter().collect();
        order.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        order
    }
    let mut lookups = tx.open_table(LOOKUPS)?;
    for (key, value) in sorted(&rows.lookups) {
        lookups.insert(key, value)?;
    }
    let mut records = tx.open_table(RECORD_EVENTS)?;
    for (key, value) in sorted(&rows.record_events) {
        records.insert(key, &**value)?;
    }
    let mut queues = tx.open_table(QUEUE_EVENTS)?;
    for (key, value) in sorted(&rows.queue_events) {
        queues.insert(key, &**value)?;
    }
    Ok(())
}

impl IndexDb {
    /// A file made before the history tables existed gets them (empty), durably, at open.
    pub(super) fn add_history_tables(&self) -> Result<(), IndexError> {
        let missing = {
            let tx = self
                .db()
                .begin_read()
                .map_err(|e| self.error("opening", e))?;
            match tx.open_table(LOOKUPS) {
                Ok(_) => false,
                Err(redb::TableError::TableDoesNotExist(_)) => true,
                Err(e) => return Err(self.error("opening", e)),
            }
        };
        if !missing {
            return Ok(());
        }
        self.guarded_write("adding the message history tables", || {
            let err = |e: &dyn std::fmt::Display| self.error("adding the history tables", e);
            let mut tx = self.db().begin_write().map_err(|e| err(&e))?;
            tx.set_durability(Durability::Immediate)
                .map_err(|e| err(&e))?;
            create_history_tables(&tx).map_err(|e| err(&e))?;
            tx.commit().map_err(|e| err(&e))
        })
    }

    /// Deletes the lookups and record events of records below `log_floor`.
    pub(super) fn collect_history_below(&self, log_floor: u64) -> Result<(), IndexError> {
        let err = |e: &dyn std::fmt::Display| self.error("garbage collection", e);
        // Whole buckets only: a bucket that reaches the floor keeps its keys until it is all
        // below (lookups are hints, confirmed against the record, so stale ones are harmless).
        let last_bucket = bucket(log_floor);
        let lookups_end = lookup_prefix(last_bucket, LookupKind::MessageId, 0);
        let events_end = record_event_start(log_floor, 0);
        loop {
            let mut tx = self.db().begin_write().map_err(|e| err(&e))?;
            tx.set_durability(Durability::None).map_err(|e| err(&e))?;
            let mut removed = 0u64;
            {
                let mut lookups = tx.open_table(LOOKUPS).map_err(|e| err(&e))?;
                lookups
                    .retain_in(..lookups_end, |_, _| {
                        removed += 1;
                        removed > COLLECT_BATCH
                    })
                    .map_err(|e| err(&e))?;
                let mut events = tx.open_table(RECORD_EVENTS).map_err(|e| err(&e))?;
                events
                    .retain_in(..events_end, |_, _| {
                        removed += 1;
                        removed > 2 * COLLECT_BATCH
                    })
                    .map_err(|e| err(&e))?;
            }
            tx.commit().map_err(|e| err(&e))?;
            if removed <= 2 * COLLECT_BATCH {
                return Ok(());
            }
        }
    }
}

impl IndexView {
    /// Records whose id (or key) hashes to `hash`, in lookup buckets `from..=to`: `(log index,
    /// slot, where it was indexed at its append)`. Hints, to be confirmed by the caller.
    pub fn lookup(
        &self,
        kind: LookupKind,
        hash: u64,
        from: u32,
        to: u32,
        limit: usize,
    ) -> Result<Vec<LookupHit>, IndexError> {
        guarded(&self.db.path, "lookup", || {
            let err = |e: &dyn std::fmt::Display| self.db.error("lookup", e);
            let mut found = Vec::new();
            for b in from..=to {
                let start = lookup_prefix(b, kind, hash);
                for item in self.lookups.range(start..).map_err(|e| err(&e))? {
                    let (k, v) = item.map_err(|e| err(&e))?;
                    let key = k.value();
                    if key[..13] != start[..13] {
                        break;
                    }
                    let (log_index, slot) = lookup_record(&key);
                    found.push((log_index, slot, decode_lookup_value(&v.value())));
                    if found.len() >= limit {
                        return Ok(found);
                    }
                }
            }
            Ok(found)
        })
    }

    /// Every history row of the view (lookups, record events, queue events), in batches of at
    /// most `batch` rows, for a replica copy ([`IndexView::export`]). An event whose checksum
    /// fails stops the export with an error.
    pub(super) fn export_history(
        &self,
        batch: usize,
    ) -> impl Iterator<Item = Result<IndexRows, IndexError>> + '_ {
        let batch = batch.max(1);
        let path = &self.db.path;
        let mut lookups = None;
        let mut records = None;
        let mut queues = None;
        let mut phase = 0u8;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed || phase > 2 {
                return None;
            }
            let next = guarded(path, "export", || {
                let err = |e: &dyn std::fmt::Display| self.db.error("export", e);
                let mut rows = IndexRows::default();
                while rows.len() < batch && phase <= 2 {
                    let more = match phase {
                        0 => {
                            let range = match &mut lookups {
                                Some(range) => range,
                                None => lookups.insert(
                                    self.lookups
                                        .range::<[u8; LOOKUP_KEY_LEN]>(..)
                                        .map_err(|e| err(&e))?,
                                ),
                            };
                            match range.next() {
                                Some(item) => {
                                    let (k, v) = item.map_err(|e| err(&e))?;
                                    rows.history.lookups.push((k.value(), v.value()));
                                    true
                                }
                                None => false,
                            }
                        }
                        _ => {
                            let (slot, table, out) = if phase == 1 {
                                (
                                    &mut records,
                                    &self.record_events,
                                    &mut rows.history.record_events,
                                )
                            } else {
                                (
                                    &mut queues,
                                    &self.queue_events,
                                    &mut rows.history.queue_events,
                                )
                            };
                            let range = match slot {
                                Some(range) => range,
                                None => slot.insert(
                                    table
                                        .range::<[u8; EVENT_KEY_LEN]>(..)
                                        .map_err(|e| err(&e))?,
                                ),
                            };
                            match range.next() {
                                Some(item) => {
                                    let (k, v) = item.map_err(|e| err(&e))?;
                                    let (key, value) = (k.value(), v.value());
                                    decode_event(&key, value).map_err(|e| err(&e))?;
                                    out.push((key, value.into()));
                                    true
                                }
                                None => false,
                            }
                        }
                    };
                    if !more {
                        phase += 1;
                    }
                }
                Ok((!rows.is_empty()).then_some(rows))
            });
            failed = next.is_err();
            next.transpose()
        })
    }

    /// The events of the record at `(log_index, slot)`, in log order. A damaged event is left
    /// out with a warning.
    pub fn record_events(&self, log_index: u64, slot: u32) -> Result<Vec<Event>, IndexError> {
        let start = record_event_start(log_index, slot);
        self.events(&self.record_events, start, 12)
    }

    /// The events of the message at `(queue key, offset)`, in log order.
    pub fn queue_events(&self, queue: u32, offset: u64) -> Result<Vec<Event>, IndexError> {
        self.events(&self.queue_events, queue_event_start(queue, offset), 12)
    }

    fn events(
        &self,
        table: &ReadOnlyTable<[u8; EVENT_KEY_LEN], &'static [u8]>,
        start: [u8; EVENT_KEY_LEN],
        prefix: usize,
    ) -> Result<Vec<Event>, IndexError> {
        guarded(&self.db.path, "read events", || {
            let err = |e: &dyn std::fmt::Display| self.db.error("read events", e);
            let mut out = Vec::new();
            for item in table.range(start..).map_err(|e| err(&e))? {
                let (k, v) = item.map_err(|e| err(&e))?;
                let key = k.value();
                if key[..prefix] != start[..prefix] {
                    break;
                }
                match decode_event(&key, v.value()) {
                    Ok(event) => out.push(event),
                    Err(e) => {
                        warn!(path = %self.db.path.display(), error = %e, "a message event was left out")
                    }
                }
            }
            Ok(out)
        })
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(b)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_event_golden_bytes() {
        let key = encode_lookup_key(LookupKind::Key, 0x0102_0304_0506_0708, 0x0080_0001, 5);
        assert_eq!(
            hex::encode(key),
            "00000002020102030405060708000000000080000100000005"
        );
        assert_eq!(lookup_record(&key), (0x0080_0001, 5));
        let placed = Placed {
            key: 7,
            queue_id: 2,
            offset: 9,
        };
        assert_eq!(
            hex::encode(encode_lookup_value(Some(placed))),
            "00000007000000020000000000000009"
        );
        assert_eq!(
            decode_lookup_value(&encode_lookup_value(Some(placed))),
            Some(placed)
        );
        assert_eq!(decode_lookup_value(&encode_lookup_value(None)), None);
        let key = queue_event_key(3, 4, 0x10, EventKind::Delivered);
        assert_eq!(
            hex::encode(key),
            "00000003000000000000000400000000000000100a"
        );
        let value = encode_event(&key, 1_000, 2, 3, "g");
        assert_eq!(
            hex::encode(&value),
            concat!(
                "01",
                "00000000000003e8",
                "0000000000000002",
                "0000000000000003",
                "67",
                "7f4960e3"
            )
        );
        let event = decode_event(&key, &value).expect("decodes");
        assert_eq!(
            event,
            Event {
                kind: EventKind::Delivered,
                at: 0x10,
                time_ms: 1_000,
                a: 2,
                b: 3,
                name: "g".into(),
            }
        );
        assert_eq!(
            hex::encode(record_event_key(1, 2, 3, EventKind::Stored)),
            "000000000000000100000002000000000000000301"
        );
        assert_eq!(lookup_hash("k"), message_group_hash("k"));
    }

    #[test]
    fn damaged_or_misplaced_events_are_refused() {
        let key = queue_event_key(3, 4, 0x10, EventKind::Acked);
        let mut value = encode_event(&key, 1, 0, 0, "group").into_vec();
        let other = queue_event_key(3, 5, 0x10, EventKind::Acked);
        assert!(decode_event(&other, &value).is_err(), "another key");
        value[3] ^= 1;
        assert!(decode_event(&key, &value).is_err(), "flipped bit");
        assert!(decode_event(&key, &value[..10]).is_err(), "short");
    }

    use std::collections::{BTreeMap, HashMap};
    use std::sync::Arc;

    use redb::{Database, TableDefinition};
    use vela_raft::vfs::{StdVfs, Vfs};

    use crate::index_db::{INDEX_FILE, IndexDb, VfsBackend};

    fn rows(log_index: u64, queue: u32, offset: u64) -> HistoryRows {
        let mut rows = HistoryRows::default();
        rows.lookups.push((
            encode_lookup_key(LookupKind::MessageId, lookup_hash("m"), log_index, 0),
            encode_lookup_value(Some(Placed {
                key: queue,
                queue_id: 0,
                offset,
            })),
        ));
        let key = record_event_key(log_index, 0, log_index, EventKind::Stored);
        rows.record_events
            .push((key, encode_event(&key, 1, 0, offset, "t")));
        let key = queue_event_key(queue, offset, log_index + 1, EventKind::Acked);
        rows.queue_events
            .push((key, encode_event(&key, 2, 0, 0, "g")));
        rows
    }

    #[test]
    fn rows_are_written_read_and_collected_below_the_floors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vfs = StdVfs::shared();
        let db = IndexDb::open(&vfs, dir.path(), 1 << 20).expect("opens");
        // One record in an early bucket, one in a later one.
        let late = 3 << BUCKET_SHIFT;
        db.write(&BTreeMap::new(), &rows(5, 1, 0), 5)
            .expect("writes");
        db.write(&BTreeMap::new(), &rows(late, 1, 1), late)
            .expect("writes");
        let view = db.view().expect("view");
        let found = view
            .lookup(LookupKind::MessageId, lookup_hash("m"), 0, 3, 10)
            .expect("looks up");
        let at = |offset| {
            Some(Placed {
                key: 1,
                queue_id: 0,
                offset,
            })
        };
        assert_eq!(found, vec![(5, 0, at(0)), (late, 0, at(1))]);
        let limited = view
            .lookup(LookupKind::MessageId, lookup_hash("m"), 0, 3, 1)
            .expect("looks up");
        assert_eq!(limited.len(), 1);
        assert!(
            view.lookup(LookupKind::Key, lookup_hash("m"), 0, 3, 10)
                .expect("looks up")
                .is_empty(),
            "ids and keys are apart"
        );
        assert_eq!(
            view.record_events(5, 0).expect("reads")[0].kind,
            EventKind::Stored
        );
        assert_eq!(view.queue_events(1, 1).expect("reads")[0].at, late + 1);
        drop(view);
        // Retention passed the first record (and queue 1's offset 0).
        db.collect_garbage(&HashMap::from([(1, 1)]), 2, late)
            .expect("collects");
        let view = db.view().expect("view");
        let found = view
            .lookup(LookupKind::MessageId, lookup_hash("m"), 0, 3, 10)
            .expect("looks up");
        assert_eq!(found, vec![(late, 0, at(1))]);
        assert!(view.record_events(5, 0).expect("reads").is_empty());
        assert_eq!(view.record_events(late, 0).expect("reads").len(), 1);
        assert!(view.queue_events(1, 0).expect("reads").is_empty());
        assert_eq!(view.queue_events(1, 1).expect("reads").len(), 1);
    }

    #[test]
    fn a_file_made_before_the_history_tables_gets_them_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vfs: Arc<dyn Vfs> = StdVfs::shared();
        {
            // What an earlier build created: the format, entries and tags, nothing else.
            let file = vfs
                .create_truncate(&dir.path().join(INDEX_FILE))
                .expect("creates");
            let db = Database::builder()
                .create_with_backend(VfsBackend { file })
                .expect("db");
            let tx = db.begin_write().expect("tx");
            {
                let meta: TableDefinition<&str, u64> = TableDefinition::new("meta");
                tx.open_table(meta)
                    .expect("meta")
                    .insert("format", 1)
                    .expect("format");
                tx.open_table(super::super::ENTRIES).expect("entries");
                tx.open_table(super::super::TAGS).expect("tags");
            }
            tx.commit().expect("commits");
        }
        let db = IndexDb::open(&vfs, dir.path(), 1 << 20).expect("opens an older file");
        let view = db.view().expect("view");
        assert!(
            view.lookup(LookupKind::MessageId, 1, 0, 0, 10)
                .expect("looks up")
                .is_empty()
        );
    }
}

//! Reading snapshots of snapshot format 2, whose state held every queue's entries (before the
//! index file, ADR 0008). A shard opened on such a snapshot writes the entries into its index
//! file and continues from the state without them; the next snapshot is of the current format.

use std::collections::{BTreeMap, VecDeque};

use serde::Deserialize;
use vela_proto::domain::{GroupName, ShardId, TopicName};

use super::{ConsumerQueue, IndexEntry, ParkedMessage, QueueIndex, ShardState, TagTable};
use crate::command::{RecordRef, TimerKey};

/// Format 2 marked entries whose record retention removed with this log index.
const PURGED: u64 = u64::MAX;
/// What such an entry becomes: a log index below any truncation floor (there was one, or
/// nothing would be marked), so it reads as gone, and the queue has no missing offsets.
const GONE: u64 = 0;

#[derive(Deserialize)]
struct LegacyQueue {
    min_offset: u64,
    entries: VecDeque<IndexEntry>,
}

/// `ShardState` as snapshot format 2 laid it out (postcard is positional: same fields, same
/// order).
#[derive(Deserialize)]
pub struct LegacyState {
    shard: ShardId,
    tags: TagTable,
    queues: BTreeMap<(TopicName, u32), LegacyQueue>,
    consumers: BTreeMap<(GroupName, TopicName, u32), ConsumerQueue>,
    rotation: BTreeMap<(GroupName, TopicName), u32>,
    timers: BTreeMap<TimerKey, ParkedMessage>,
    half_messages: BTreeMap<RecordRef, ParkedMessage>,
    truncated_below: u64,
    apply_version: u32,
    max_now_ms: i64,
}

/// Index entries by `(queue key, offset)`.
pub type EntryMap = BTreeMap<(u32, u64), IndexEntry>;

impl LegacyState {
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The current state and the entries its queues hold. Queues get index keys in key order.
    /// Where the log the state reads message bodies from starts.
    pub fn truncated_below(&self) -> u64 {
        self.truncated_below
    }

    pub fn upgrade(self) -> (ShardState, EntryMap) {
        let mut entries = EntryMap::new();
        let mut queues = BTreeMap::new();
        let mut next_queue_key = 0u32;
        for (name, legacy) in self.queues {
            let key = next_queue_key;
            next_queue_key = next_queue_key.saturating_add(1);
            for (i, entry) in legacy.entries.iter().enumerate() {
                let entry = if entry.log_index == PURGED {
                    IndexEntry {
                        log_index: GONE,
                        ..*entry
                    }
                } else {
                    *entry
                };
                entries.insert((key, legacy.min_offset + i as u64), entry);
            }
            let max_offset = legacy.min_offset + legacy.entries.len() as u64;
            queues.insert(
                name,
                QueueIndex::with_offsets(key, legacy.min_offset, max_offset),
            );
        }
        let state = ShardState {
            shard: self.shard,
            tags: self.tags,
            queues,
            consumers: self.consumers,
            rotation: self.rotation,
            timers: self.timers,
            half_messages: self.half_messages,
            truncated_below: self.truncated_below,
            apply_version: self.apply_version,
            max_now_ms: self.max_now_ms,
            next_queue_key,
            // Format 2 does not know; the index file gets every entry at the snapshot's index.
            last_indexing: 0,
            dedup: Default::default(),
            // Before apply version 6: raising the version starts the window's clock.
            dedup_clock_ms: 0,
            tier: Default::default(),
            topic_retention: Default::default(),
            topic_revisions: Default::default(),
            group_fence: Default::default(),
            entries: Default::default(),
        };
        (state, entries)
    }
}

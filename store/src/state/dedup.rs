//! Send deduplication (apply version 5): the messages a shard appended recently, keyed by
//! (client id, message id), with where each landed. A `ClientAppends` entry whose message is
//! already here answers the first outcome and appends nothing, so a proxy or a client may
//! resend after an ambiguous failure (a timeout, a leader change mid-append) without writing
//! the message twice.
//!
//! The window is part of the replicated state: every replica applies the same entries with the
//! same bounds ([`WINDOW_MS`] of the window's own clock, at most [`MAX_ENTRIES`] messages), so a
//! new leader deduplicates exactly as the old one would have. It is saved in snapshots (format
//! 4) after the rest of the state, its clock after it (format 5).
//!
//! The window's clock (apply version 6) follows the times the entries carry (the leader's
//! clock), but a command moves it on by at most [`MAX_STEP_MS`]: a leader whose clock jumps an
//! hour ahead would otherwise forget the whole window with its first entry, and a resend of a
//! message stored just before the jump would be stored again. Before version 6 the window ran
//! on the entries' times directly.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use vela_proto::domain::{MessageKind, MessageRecord};
use vela_proto::store_api::AppendOutcome;

use super::ApplyEffects;
use crate::command::{QueueAppend, RecordRef, TimerKey};

/// How long a sent message is remembered, in the window's clock (the time of the entries
/// applied, never running backwards nor leaping). Retries of the official clients end within seconds; a
/// proxy's retries across a leader change within its 10 s budget.
pub const WINDOW_MS: i64 = 120_000;

/// The most one command moves the window's clock on (apply version 6): a leader's clock that
/// jumps ahead shortens the window by at most this. A shard that is quiet for longer keeps its
/// window longer than [`WINDOW_MS`] of wall time (the size bound still holds).
pub const MAX_STEP_MS: i64 = 1_000;

/// Most messages remembered per shard. Above ~2,200 msg/s sustained on one shard this, not
/// [`WINDOW_MS`], bounds the window (to `MAX_ENTRIES / rate`); memory stays ~20 MiB a shard.
pub const MAX_ENTRIES: usize = 262_144;

/// A (client id, message id) pair as the window keys it: the first 16 bytes of SHA-256 over
/// both, each length-prefixed. Persisted in snapshots: pinned by a golden test.
pub type DedupKey = u128;

pub fn dedup_key(client: &str, message_id: &str) -> DedupKey {
    let mut hash = Sha256::new();
    for part in [client, message_id] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// Where a remembered message landed: what its first append answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstOutcome {
    /// Its queue offset (none for a delay message not yet due or a transaction half message).
    pub offset: Option<u64>,
    /// For a message parked outside its queue, its record: a transaction half message (the
    /// transaction id derives from it) and, from apply version 14, a delay message not yet due
    /// (its recall handle does, with its due time).
    pub half: Option<RecordRef>,
}

/// One remembered message, as a snapshot stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Sent {
    at_ms: i64,
    key: DedupKey,
    first: FirstOutcome,
}

/// The recently sent messages of one shard, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<Sent>", into = "Vec<Sent>")]
pub struct DedupWindow {
    /// `(time, key)` in the order they were appended; each key once.
    order: VecDeque<(i64, DedupKey)>,
    first: HashMap<DedupKey, FirstOutcome>,
}

impl DedupWindow {
    /// Forgets what is older than [`WINDOW_MS`] before `now_ms`, then the oldest past
    /// [`MAX_ENTRIES`].
    pub fn expire(&mut self, now_ms: i64) {
        let horizon = now_ms.saturating_sub(WINDOW_MS);
        while let Some(&(at_ms, key)) = self.order.front() {
            if at_ms >= horizon && self.order.len() <= MAX_ENTRIES {
                break;
            }
            self.order.pop_front();
            self.first.remove(&key);
        }
    }

    /// What the first append of `key` answered, if it is remembered.
    pub fn get(&self, key: DedupKey) -> Option<FirstOutcome> {
        self.first.get(&key).copied()
    }

    /// Remembers a message appended at `now_ms`. A key already remembered keeps its first
    /// outcome (callers look it up first).
    pub fn insert(&mut self, key: DedupKey, now_ms: i64, first: FirstOutcome) {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.first.entry(key) {
            slot.insert(first);
            self.order.push_back((now_ms, key));
            if self.order.len() > MAX_ENTRIES {
                self.expire(now_ms);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

impl From<Vec<Sent>> for DedupWindow {
    fn from(sent: Vec<Sent>) -> Self {
        let mut window = DedupWindow::default();
        for s in sent {
            window.insert(s.key, s.at_ms, s.first);
        }
        window
    }
}

impl From<DedupWindow> for Vec<Sent> {
    fn from(window: DedupWindow) -> Self {
        window
            .order
            .iter()
            .filter_map(|&(at_ms, key)| {
                window
                    .first
                    .get(&key)
                    .map(|&first| Sent { at_ms, key, first })
            })
            .collect()
    }
}

/// Appending with deduplication: the part of applying a `ClientAppends` entry that consults
/// and fills the window.
impl super::ShardState {
    /// [`ShardState::append`], except that a message this client sent within the window is
    /// answered with its first outcome and not appended again (its record stays in the log,
    /// unindexed, like any record nothing points at).
    pub(super) fn append_deduplicated(
        &mut self,
        first: RecordRef,
        client: Option<&str>,
        append: &QueueAppend,
        now_ms: i64,
        window_ms: i64,
        fx: &mut ApplyEffects,
    ) -> Vec<AppendOutcome> {
        let Some(client) = client else {
            return self.append(
                first,
                &append.topic,
                append.queue_id,
                now_ms,
                &append.messages,
                fx,
            );
        };
        append
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let key = dedup_key(client, &m.message_id);
                if let Some(earlier) = self.dedup.get(key) {
                    return self.first_outcome_again(m, earlier);
                }
                let record = RecordRef {
                    log_index: first.log_index,
                    slot: first
                        .slot
                        .saturating_add(u32::try_from(i).unwrap_or(u32::MAX)),
                };
                let outcome = self
                    .append(
                        record,
                        &append.topic,
                        append.queue_id,
                        now_ms,
                        std::slice::from_ref(m),
                        fx,
                    )
                    .pop()
                    .unwrap_or(AppendOutcome {
                        offset: None,
                        transaction_id: None,
                        recall_handle: None,
                    });
                let parked = outcome.transaction_id.is_some()
                    || (outcome.recall_handle.is_some()
                        && self.apply_version >= super::RECALL_RESEND_APPLY_VERSION);
                let half = parked.then_some(record);
                self.dedup.insert(
                    key,
                    window_ms,
                    FirstOutcome {
                        offset: outcome.offset,
                        half,
                    },
                );
                outcome
            })
            .collect()
    }

    /// The answer to a resend of `m`, which first landed as `earlier` said: its offset, the
    /// same transaction id, or the same recall handle (the resend carries the same due time).
    fn first_outcome_again(&self, m: &MessageRecord, earlier: FirstOutcome) -> AppendOutcome {
        let (transaction_id, recall_handle) = match (earlier.half, m.delivery_timestamp_ms) {
            (Some(record), _) if m.kind == MessageKind::Transaction => {
                (Some(self.transaction_id(record)), None)
            }
            (Some(record), Some(due_ms)) => (
                None,
                Some(super::recall_handle(
                    self.shard,
                    TimerKey {
                        due_ms,
                        log_index: record.log_index,
                        slot: record.slot,
                    },
                )),
            ),
            _ => (None, None),
        };
        AppendOutcome {
            offset: earlier.offset,
            transaction_id,
            recall_handle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: FirstOutcome = FirstOutcome {
        offset: Some(7),
        half: None,
    };

    #[test]
    fn the_key_is_pinned_and_separates_client_from_message() {
        // Persisted in snapshots: a change here makes a restarted replica forget its window.
        assert_eq!(
            format!("{:032x}", dedup_key("c@1", "m1")),
            "94d354b6039beeab5668fdb78ccb8ebf"
        );
        assert_ne!(
            dedup_key("ab", "c"),
            dedup_key("a", "bc"),
            "length prefixes keep the boundary"
        );
        assert_ne!(dedup_key("a", "m"), dedup_key("b", "m"));
    }

    #[test]
    fn remembers_the_first_outcome_only() {
        let mut w = DedupWindow::default();
        w.insert(1, 10, AT);
        w.insert(
            1,
            11,
            FirstOutcome {
                offset: Some(8),
                half: None,
            },
        );
        assert_eq!(w.get(1), Some(AT));
        assert_eq!(w.len(), 1);
        assert_eq!(w.get(2), None);
    }

    #[test]
    fn forgets_by_age() {
        let mut w = DedupWindow::default();
        w.insert(1, 0, AT);
        w.insert(2, 1_000, AT);
        w.expire(WINDOW_MS);
        assert_eq!(
            (w.get(1), w.get(2)),
            (Some(AT), Some(AT)),
            "exactly at the edge"
        );
        w.expire(WINDOW_MS + 1);
        assert_eq!((w.get(1), w.get(2)), (None, Some(AT)));
        w.expire(WINDOW_MS + 1_001);
        assert!(w.is_empty());
    }

    #[test]
    fn forgets_the_oldest_past_the_size_bound() {
        let mut w = DedupWindow::default();
        for key in 0..=MAX_ENTRIES as u128 {
            w.insert(key, 5, AT);
        }
        assert_eq!(w.len(), MAX_ENTRIES);
        assert_eq!(w.get(0), None);
        assert_eq!(w.get(1), Some(AT));
        assert_eq!(w.get(MAX_ENTRIES as u128), Some(AT));
    }

    #[test]
    fn golden_bytes_and_round_trip_in_order() {
        let mut w = DedupWindow::default();
        w.insert(3, 100, AT);
        w.insert(
            1,
            200,
            FirstOutcome {
                offset: None,
                half: Some(RecordRef {
                    log_index: 9,
                    slot: 2,
                }),
            },
        );
        let bytes = postcard::to_stdvec(&w).expect("encodes");
        assert_eq!(
            hex::encode(&bytes),
            "02c8010301070090030100010902",
            "the persisted shape of the dedup window changed: bump SNAPSHOT_FORMAT"
        );
        let back: DedupWindow = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, w);
        assert_eq!(Vec::<Sent>::from(back)[0].key, 3, "oldest first");
    }
}

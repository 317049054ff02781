//! Retention per topic (apply version 15). The store's `retention_time` is the default; a topic
//! may keep its messages longer or shorter (`vela admin topic update --retention`). The shard's
//! log is shared by its topics, so it is kept as long as the longest-kept topic on the shard
//! needs (whole segments go by `Truncate`, as before); a topic kept shorter than that loses its
//! old messages by a read-time floor: the leader's retention pass writes an `Expire` with, per
//! queue, the first offset stored within the topic's retention, and apply raises the queues'
//! first retained offsets to them. Apply never reads a clock or scans: the floors are in the
//! command.

use std::collections::BTreeMap;

use vela_proto::domain::TopicName;

use super::{ApplyEffects, ShardState};
use crate::command::ExpiryFloor;

impl ShardState {
    /// Applies a `TopicRetention`: `None` goes back to the store's retention time.
    pub(super) fn set_topic_retention(
        &mut self,
        topic: &TopicName,
        retention_ms: Option<u64>,
    ) -> bool {
        match retention_ms {
            Some(ms) => self.topic_retention.insert(topic.clone(), ms),
            None => self.topic_retention.remove(topic),
        };
        true
    }

    /// Applies an `Expire`: raises each named queue's first retained offset (never past its
    /// end), and every group there forgets what it had in flight or parked below it. Returns
    /// how many queues' floors rose.
    pub(super) fn expire(
        &mut self,
        topic: &TopicName,
        floors: &[ExpiryFloor],
        fx: &mut ApplyEffects,
    ) -> u32 {
        let mut raised = 0;
        for floor in floors {
            let Some(index) = self
                .queues
                .get_mut(&(topic.clone(), floor.queue_id))
                .filter(|index| index.key() == floor.key)
            else {
                continue;
            };
            let before = index.min_offset();
            index.raise_min(floor.offset);
            let min_offset = index.min_offset();
            if min_offset == before {
                continue;
            }
            raised += 1;
            fx.woken_topics.insert(topic.clone());
            for ((_, t, queue_id), consumer) in &mut self.consumers {
                if t == topic && *queue_id == floor.queue_id {
                    consumer.forget_gone(min_offset, |_| true);
                }
            }
        }
        raised
    }

    /// The topics with a retention of their own, in ms.
    pub fn topic_retention(&self) -> &BTreeMap<TopicName, u64> {
        &self.topic_retention
    }

    /// Restores the topic retentions a snapshot saved beside this state.
    pub fn set_topic_retentions(&mut self, retention: BTreeMap<TopicName, u64>) {
        self.topic_retention = retention;
    }

    /// The highest controller revision applied per topic (saved in a snapshot, format 8).
    pub fn topic_revisions(&self) -> &BTreeMap<TopicName, u64> {
        &self.topic_revisions
    }

    /// Restores what [`ShardState::topic_revisions`] saved.
    pub fn set_topic_revisions(&mut self, revisions: BTreeMap<TopicName, u64>) {
        self.topic_revisions = revisions;
    }

    /// What the shard remembers of consumer groups' deletions (saved in a snapshot, format 9).
    pub fn group_fence(&self) -> &super::GroupFence {
        &self.group_fence
    }

    /// Restores what [`ShardState::group_fence`] saved.
    pub fn set_group_fence(&mut self, fence: super::GroupFence) {
        self.group_fence = fence;
    }

    /// How long `topic`'s messages are kept on this shard, in ms: its own retention or
    /// `default_ms` (the store's retention time).
    pub fn retention_of(&self, topic: &TopicName, default_ms: u64) -> u64 {
        self.topic_retention
            .get(topic)
            .copied()
            .unwrap_or(default_ms)
    }

    /// How long the shard's log must be kept, in ms: the longest retention of a topic with
    /// queues here, and never less than `default_ms`.
    pub fn log_retention_ms(&self, default_ms: u64) -> u64 {
        self.topic_retention
            .iter()
            .filter(|(topic, _)| !self.queue_ids(topic).is_empty())
            .map(|(_, ms)| *ms)
            .fold(default_ms, u64::max)
    }

    /// The queues the leader's retention pass looks at, at `now_ms`: those of topics kept
    /// shorter than the shard's log that hold anything, each with its index key and the store
    /// time below which its messages expire. In memory only (no index read), so the pass takes
    /// the state's lock only briefly here and again per queue ([`ShardState::expiry_floor`]).
    /// Topics in name order, queues ascending.
    pub fn expiry_candidates(&self, default_ms: u64, now_ms: i64) -> Vec<ExpiryCandidate> {
        let log_ms = self.log_retention_ms(default_ms);
        self.queues
            .iter()
            .filter(|(_, index)| index.min_offset() < index.max_offset())
            .filter_map(|((topic, queue_id), index)| {
                let keep_ms = self.retention_of(topic, default_ms);
                (keep_ms < log_ms).then(|| ExpiryCandidate {
                    topic: topic.clone(),
                    floor: ExpiryFloor {
                        queue_id: *queue_id,
                        key: index.key(),
                        offset: index.min_offset(),
                    },
                    cutoff_ms: now_ms.saturating_sub(i64::try_from(keep_ms).unwrap_or(i64::MAX)),
                })
            })
            .collect()
    }

    /// The new first offset of a candidate queue, when messages stored before its cutoff lie
    /// above its first retained offset: one index read when its first message is still
    /// within the retention (the usual case), a binary search of store times otherwise. `None`
    /// too when the queue is gone or is another one now (its key changed).
    pub fn expiry_floor(&self, candidate: &ExpiryCandidate) -> Option<ExpiryFloor> {
        let floor = candidate.floor;
        let index = self
            .queues
            .get(&(candidate.topic.clone(), floor.queue_id))
            .filter(|index| index.key() == floor.key)?;
        let first = self.retained_entry(index, index.min_offset());
        if first.is_some_and(|e| e.store_ts_ms >= candidate.cutoff_ms) {
            return None;
        }
        let offset = self.offset_at(&candidate.topic, floor.queue_id, candidate.cutoff_ms)?;
        (offset > index.min_offset()).then_some(ExpiryFloor { offset, ..floor })
    }

    /// What the leader's retention pass expires at `now_ms`, all at once (tests; the pass
    /// itself takes [`ShardState::expiry_candidates`] and their floors one by one): per topic
    /// kept shorter than the shard's log, the queues whose first message stored within the
    /// topic's retention lies above their first retained offset, with that offset.
    #[cfg(test)]
    pub fn expiry_floors(
        &self,
        default_ms: u64,
        now_ms: i64,
    ) -> Vec<(TopicName, Vec<ExpiryFloor>)> {
        group_by_topic(
            self.expiry_candidates(default_ms, now_ms)
                .iter()
                .filter_map(|c| Some((c.topic.clone(), self.expiry_floor(c)?))),
        )
    }
}

/// A queue the leader's retention pass looks at ([`ShardState::expiry_candidates`]): `floor`
/// holds its id, its index key and its first retained offset when listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryCandidate {
    pub topic: TopicName,
    pub floor: ExpiryFloor,
    /// Messages stored before this time (Unix ms) expire.
    pub cutoff_ms: i64,
}

/// Floors in topic order grouped per topic, one `Expire` each.
pub fn group_by_topic(
    floors: impl IntoIterator<Item = (TopicName, ExpiryFloor)>,
) -> Vec<(TopicName, Vec<ExpiryFloor>)> {
    let mut out: Vec<(TopicName, Vec<ExpiryFloor>)> = Vec::new();
    for (topic, floor) in floors {
        match out.last_mut() {
            Some((last, floors)) if *last == topic => floors.push(floor),
            _ => out.push((topic, vec![floor])),
        }
    }
    out
}

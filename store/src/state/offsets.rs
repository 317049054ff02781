//! Where a consumer group stands on a queue, set on purpose (apply version 8): a new group's
//! start, decided by the leader and logged so every replica starts it at the same offset, and
//! resets (UpdateOffset, `vela admin group reset`).

use vela_proto::domain::{GroupName, GroupStart, OffsetTarget, TopicName};

use super::{ApplyEffects, ConsumerQueue, ShardState, live_range};
use crate::command::{QueueChoice, QueueOffset};

/// How the leader chooses where a group with no position on a queue starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartRule {
    /// The group's own choice (`vela admin group create --from`); `Auto` is the rule below.
    pub start: GroupStart,
    /// When the group was created (Unix ms): on a queue with older history it starts at the
    /// first message stored from then on.
    pub group_created_ms: i64,
    /// `Auto`: a queue whose first retained message was stored less than this long ago is
    /// young: the group starts at its beginning, so produce-then-subscribe on a new topic still
    /// works.
    pub young_ms: i64,
    pub now_ms: i64,
}

impl ShardState {
    /// Applies a `SetOffsets`.
    pub(super) fn set_offsets(
        &mut self,
        group: &GroupName,
        topic: &TopicName,
        offsets: &[QueueOffset],
        replace: bool,
        fx: &mut ApplyEffects,
    ) -> Vec<Option<u64>> {
        let mut out = Vec::with_capacity(offsets.len());
        for q in offsets {
            let Some(index) = self.queues.get(&(topic.clone(), q.queue_id)) else {
                out.push(None);
                continue;
            };
            let offset = q.offset.clamp(index.min_offset(), index.max_offset());
            let key = (group.clone(), topic.clone(), q.queue_id);
            let cursor = if replace {
                self.consumers.insert(key, ConsumerQueue::new(offset));
                fx.woken_topics.insert(topic.clone());
                offset
            } else {
                self.consumers
                    .entry(key)
                    .or_insert_with(|| ConsumerQueue::new(offset))
                    .cursor()
            };
            out.push(Some(cursor));
        }
        out
    }

    /// The broadcast groups' instances (ADR 0029) that hold a position on some queue, each once.
    pub fn broadcast_instances(&self) -> Vec<GroupName> {
        let mut out: Vec<GroupName> = Vec::new();
        for (group, _, _) in self.consumers.keys() {
            if group.is_broadcast_instance() && out.last() != Some(group) {
                out.push(group.clone());
            }
        }
        out
    }

    /// The offset `target` names on a queue, within its retained range; `None` when the queue
    /// never held a message.
    pub fn resolve_offset(
        &self,
        topic: &TopicName,
        queue_id: u32,
        target: OffsetTarget,
    ) -> Option<u64> {
        let index = self.queues.get(&(topic.clone(), queue_id))?;
        Some(match target {
            OffsetTarget::Earliest => index.min_offset(),
            OffsetTarget::Latest => index.max_offset(),
            OffsetTarget::AtTime(at_ms) => self.offset_at(topic, queue_id, at_ms)?,
            OffsetTarget::Offset(offset) => offset.clamp(index.min_offset(), index.max_offset()),
        })
    }

    /// The queues of `topic` (as `queues` selects them) where `group` has no position yet,
    /// each with where it starts: as the group chose (`earliest`, `latest`: since its creation,
    /// a time), or by default a dead-letter topic and a young queue from their first retained
    /// message, any other queue from the first message stored since the group was created.
    pub fn missing_starts(
        &self,
        group: &GroupName,
        topic: &TopicName,
        queues: QueueChoice,
        rule: StartRule,
    ) -> Vec<QueueOffset> {
        let mut out = Vec::new();
        for queue_id in self.selected_queues(topic, queues) {
            let key = (group.clone(), topic.clone(), queue_id);
            if self.consumers.contains_key(&key) {
                continue;
            }
            let Some(index) = self.queues.get(&(topic.clone(), queue_id)) else {
                continue;
            };
            let offset = self.start_on(topic, queue_id, index, rule);
            out.push(QueueOffset { queue_id, offset });
        }
        out
    }

    /// Where a group with no position on a queue starts there, by `rule`.
    pub(super) fn start_on(
        &self,
        topic: &TopicName,
        queue_id: u32,
        index: &super::QueueIndex,
        rule: StartRule,
    ) -> u64 {
        let first = live_range(
            &self.entries,
            self.truncated_below,
            index,
            index.min_offset(),
            index.max_offset(),
        )
        .next();
        let since = |at_ms| {
            self.offset_at(topic, queue_id, at_ms)
                .unwrap_or(index.max_offset())
        };
        match (first, rule.start) {
            // Nothing retained: wherever it ends.
            (None, _) => index.max_offset(),
            (Some((offset, _)), GroupStart::Earliest) => offset,
            (Some(_), GroupStart::Latest) => since(rule.group_created_ms),
            (Some(_), GroupStart::At(at_ms)) => since(at_ms),
            (Some((offset, _)), GroupStart::Auto) if topic.is_dead_letter() => offset,
            (Some((offset, entry)), GroupStart::Auto)
                if entry.store_ts_ms >= rule.now_ms.saturating_sub(rule.young_ms) =>
            {
                offset
            }
            (Some(_), GroupStart::Auto) => since(rule.group_created_ms),
        }
    }
}

//! Read-only queries on a shard's applied state: what the leader's tasks, the store API and
//! the admin calls ask of it (deliveries, timers, offsets, queue statistics). Nothing here
//! changes the state.

use super::*;

impl ShardState {
    /// The index of `topic`'s queue `queue_id`, if the shard has it.
    pub fn queue_index(&self, topic: &TopicName, queue_id: u32) -> Option<QueueIndex> {
        self.queues.get(&(topic.clone(), queue_id)).copied()
    }

    /// The entry at `offset` of queue `queue`, if it is retained.
    pub fn retained_entry(&self, queue: &QueueIndex, offset: u64) -> Option<IndexEntry> {
        live_entry(&self.entries, self.truncated_below, queue, offset)
    }

    /// The in-flight record of a delivery, if it is current.
    pub fn current_delivery(&self, d: &DeliveryRef) -> Option<&Inflight> {
        self.consumers
            .get(&(d.group.clone(), d.topic.clone(), d.queue_id))?
            .inflight(d.offset)
            .filter(|r| r.delivery_id == d.delivery_id)
    }

    /// The earliest due time of a delay message.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.timers.keys().next().map(|k| k.due_ms)
    }

    /// Delay messages due at `now_ms`, in due order, at most `limit`.
    pub fn due_timers(&self, now_ms: i64, limit: usize) -> Vec<TimerKey> {
        self.timers
            .keys()
            .take_while(|k| k.due_ms <= now_ms)
            .take(limit)
            .copied()
            .collect()
    }

    /// The first offset of `topic`'s queue `queue_id` stored at or after `at_ms`, or the
    /// queue's max offset (where the next message goes) when none is; `None` when the shard has
    /// no such queue. A binary search: a queue's store times never decrease (apply version 2).
    pub fn offset_at(&self, topic: &TopicName, queue_id: u32, at_ms: i64) -> Option<u64> {
        let queue = self.queues.get(&(topic.clone(), queue_id))?;
        let (mut low, mut high) = (queue.min_offset(), queue.max_offset());
        while low < high {
            let mid = low + (high - low) / 2;
            match self.entries.get(queue.key(), mid) {
                Some(entry) if entry.store_ts_ms >= at_ms => high = mid,
                // Earlier, or an entry missing from the index (reported by reads): later.
                _ => low = mid + 1,
            }
        }
        Some(low)
    }

    /// What a pull (PullMessage) of `topic`'s queue `queue_id` from offset `from` finds: up to
    /// `max` live entries whose tag matches, looking at no more than `budget` entries. A queue
    /// the shard never held reads as empty.
    pub fn pull_window(
        &self,
        topic: &TopicName,
        queue_id: u32,
        from: u64,
        filter: &TagSubscription,
        max: usize,
        budget: u64,
    ) -> PullWindow {
        let Some(queue) = self.queues.get(&(topic.clone(), queue_id)) else {
            return PullWindow::default();
        };
        let (min_offset, max_offset) = (queue.min_offset(), queue.max_offset());
        let start = from.clamp(min_offset, max_offset);
        let end = max_offset.min(start.saturating_add(budget));
        let matcher = self.matcher(filter);
        let mut entries = Vec::new();
        let mut scanned_to = end;
        for (offset, entry) in live_range(&self.entries, self.truncated_below, queue, start, end) {
            if entries.len() >= max {
                scanned_to = offset;
                break;
            }
            if matcher.matches(entry.tag) {
                entries.push((offset, entry.record(), entry.store_ts_ms));
            }
        }
        PullWindow {
            entries,
            scanned_to,
            min_offset,
            max_offset,
        }
    }

    /// Transaction half messages waiting for their end, oldest first.
    pub fn half_messages(&self) -> impl Iterator<Item = (RecordRef, &TopicName)> {
        self.half_messages.iter().map(|(r, p)| (*r, &p.topic))
    }

    /// The lowest log index a parked (delay or half) message still needs.
    pub fn lowest_parked_log_index(&self) -> Option<u64> {
        let timers = self.timers.keys().map(|k| k.log_index).min();
        let halves = self.half_messages.keys().next().map(|r| r.log_index);
        timers.into_iter().chain(halves).min()
    }

    /// Nothing in the state points below this log index.
    pub fn truncated_below(&self) -> u64 {
        self.truncated_below
    }

    pub fn has_topic(&self, topic: &TopicName) -> bool {
        !self.queue_ids(topic).is_empty()
    }

    /// Every group's progress on every queue of this shard, for the consumer metrics, without
    /// the store times (no index lookups: cheap under the state lock).
    pub fn consumer_progress(&self) -> Vec<ConsumerProgress> {
        self.consumers
            .iter()
            .filter_map(|((group, topic, queue_id), c)| {
                let queue = self.queues.get(&(topic.clone(), *queue_id))?;
                let (min, max) = (queue.min_offset(), queue.max_offset());
                let acked = c.consumer_offset().max(min);
                let cursor = c.cursor().max(min);
                Some(ConsumerProgress {
                    group: group.clone(),
                    topic: topic.clone(),
                    queue_id: *queue_id,
                    lag: max.saturating_sub(acked),
                    inflight: c.inflight_count() as u64,
                    ready: max.saturating_sub(cursor),
                    acked,
                    cursor,
                    oldest_unacked_ms: None,
                    oldest_ready_ms: None,
                })
            })
            .collect()
    }

    /// Fills in `progress`'s store times from the index (a lookup for each of its oldest
    /// unacknowledged and oldest ready messages, when there is one).
    pub fn fill_store_times(&self, progress: &mut ConsumerProgress) {
        let Some(queue) = self
            .queues
            .get(&(progress.topic.clone(), progress.queue_id))
        else {
            return;
        };
        let max = queue.max_offset();
        let stored_at = |offset: u64| {
            (offset < max)
                .then(|| self.entries.get(queue.key(), offset))
                .flatten()
                .map(|e| e.store_ts_ms)
        };
        progress.oldest_unacked_ms = stored_at(progress.acked);
        progress.oldest_ready_ms = stored_at(progress.cursor);
    }

    /// Offsets and per-group positions of `topic`'s queues.
    pub fn queue_stats(&self, topic: &TopicName, group: Option<&GroupName>) -> Vec<QueueStats> {
        self.queue_stats_with(topic, group, None)
    }

    /// As [`ShardState::queue_stats`]; with `pending`, a queue where `group` has no position
    /// yet reports where the group would start there by that rule (nothing in flight), so a
    /// group that has not received yet still shows the backlog waiting for it.
    pub fn queue_stats_with(
        &self,
        topic: &TopicName,
        group: Option<&GroupName>,
        pending: Option<offsets::StartRule>,
    ) -> Vec<QueueStats> {
        self.queues
            .range((topic.clone(), 0)..=(topic.clone(), u32::MAX))
            .map(|((_, queue_id), index)| {
                let group_stats = |(g, c): (&GroupName, &ConsumerQueue)| {
                    let consumer_offset = c.consumer_offset().max(index.min_offset());
                    GroupQueueStats {
                        group: g.clone(),
                        topic: topic.clone(),
                        queue_id: *queue_id,
                        consumer_offset,
                        inflight: c.inflight_count() as u64,
                        backlog: index.max_offset().saturating_sub(consumer_offset),
                    }
                };
                let groups = match group {
                    Some(g) => match self.consumers.get(&(g.clone(), topic.clone(), *queue_id)) {
                        Some(c) => vec![group_stats((g, c))],
                        None => pending
                            .map(|rule| {
                                let start = self.start_on(topic, *queue_id, index, rule);
                                GroupQueueStats {
                                    group: g.clone(),
                                    topic: topic.clone(),
                                    queue_id: *queue_id,
                                    consumer_offset: start,
                                    inflight: 0,
                                    backlog: index.max_offset().saturating_sub(start),
                                }
                            })
                            .into_iter()
                            .collect(),
                    },
                    None => self
                        .consumers
                        .iter()
                        .filter(|((_, t, q), _)| t == topic && q == queue_id)
                        .map(|((g, _, _), c)| group_stats((g, c)))
                        .collect(),
                };
                QueueStats {
                    topic: topic.clone(),
                    queue_id: *queue_id,
                    min_offset: index.min_offset(),
                    max_offset: index.max_offset(),
                    groups,
                }
            })
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn consumer(
        &self,
        group: &GroupName,
        topic: &TopicName,
        queue_id: u32,
    ) -> Option<&ConsumerQueue> {
        self.consumers
            .get(&(group.clone(), topic.clone(), queue_id))
    }

    #[cfg(test)]
    pub(super) fn queue(&self, topic: &TopicName, queue_id: u32) -> Option<&QueueIndex> {
        self.queues.get(&(topic.clone(), queue_id))
    }

    /// The retained entry at `offset` of a queue (tests).
    #[cfg(test)]
    pub(super) fn entry_at(
        &self,
        topic: &TopicName,
        queue_id: u32,
        offset: u64,
    ) -> Option<IndexEntry> {
        live_entry(
            &self.entries,
            self.truncated_below,
            self.queues.get(&(topic.clone(), queue_id))?,
            offset,
        )
    }

    // ---- the index file ----
}

/// One group's position on one queue, as the consumer metrics report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerProgress {
    pub group: GroupName,
    pub topic: TopicName,
    pub queue_id: u32,
    /// Every message below this offset is acknowledged.
    pub acked: u64,
    /// The next offset the group is given.
    pub cursor: u64,
    /// Messages not yet acknowledged: max offset − consumer offset.
    pub lag: u64,
    /// Delivered and not yet acknowledged.
    pub inflight: u64,
    /// Not yet delivered: max offset − the group's cursor.
    pub ready: u64,
    /// When the oldest unacknowledged message was stored (Unix ms), if there is one.
    pub oldest_unacked_ms: Option<i64>,
    /// When the oldest message not yet delivered was stored (Unix ms), if there is one.
    pub oldest_ready_ms: Option<i64>,
}

//! Receives, as apply runs them: expired deliveries first (redelivered, or dead-lettered once
//! their attempts are used up), then FIFO lane heads that are free again, then messages never
//! delivered to the group, within the bounds the command gives (apply version 4) or this build's
//! limits (receives before it); and the availability check of receives before apply version 4.

use vela_proto::domain::GroupName;

use super::ConsumerQueue;
use super::TrackEvent;
use super::{
    ApplyEffects, Availability, IndexEntry, MAX_PARKED, PopProbe, ShardState, TagMatcher, deadline,
    live_entry, live_range,
};
use crate::command::{
    CommandResponse, PickedRange, PopCommand, PoppedMessage, QueueChoice, ScanRange,
};
use crate::index_db::history::EventKind;

/// Most expired in-flight messages one POP looks at per queue (bounds one apply's work).
const EXPIRY_SCAN_LIMIT: usize = 1024;
/// Most index entries one POP (or availability check) walks per queue past the cursor, so a
/// long run of filtered-out messages cannot stall the apply loop; the next POP continues.
const CURSOR_SCAN_LIMIT: u64 = 65_536;

/// How far one queue's part of a receive may go.
#[derive(Debug, Clone, Copy)]
struct QueueBounds<'a> {
    skip_to: Option<u64>,
    /// `None`: [`CURSOR_SCAN_LIMIT`] past the cursor (receives before apply version 4).
    scan_to: Option<u64>,
    expiries: usize,
    /// `PopPicked`: the never-delivered offsets that match (ascending); every other one up to
    /// `scan_to` does not. `None`: the filter decides.
    picked: Option<&'a [u64]>,
}

impl QueueBounds<'_> {
    const LEGACY: QueueBounds<'static> = QueueBounds {
        skip_to: None,
        scan_to: None,
        expiries: EXPIRY_SCAN_LIMIT,
        picked: None,
    };

    fn ranged(r: &ScanRange) -> Self {
        QueueBounds {
            skip_to: Some(r.skip_to),
            scan_to: Some(r.scan_to),
            expiries: r.expiries as usize,
            picked: None,
        }
    }
}

impl ShardState {
    /// The queue a receive of `(group, topic)` starts at, advancing the turn, so queues are
    /// served fairly.
    fn take_turn(&mut self, pop: &PopCommand, queues: usize) -> usize {
        if pop.queues != QueueChoice::All || queues == 0 {
            return 0;
        }
        let turn = self
            .rotation
            .entry((pop.group.clone(), pop.topic.clone()))
            .or_insert(0);
        let start = *turn as usize % queues;
        *turn = turn.wrapping_add(1);
        start
    }

    /// A receive as first released: queues in turn, scan limits of this build.
    pub(super) fn pop(
        &mut self,
        log_index: u64,
        pop: &PopCommand,
        fx: &mut ApplyEffects,
    ) -> CommandResponse {
        let queue_ids = self.selected_queues(&pop.topic, pop.queues);
        let start = self.take_turn(pop, queue_ids.len());
        let order: Vec<(u32, QueueBounds)> = (0..queue_ids.len())
            .map(|i| {
                (
                    queue_ids[(start + i) % queue_ids.len()],
                    QueueBounds::LEGACY,
                )
            })
            .collect();
        self.pop_queues(log_index, pop, &order, fx)
    }

    /// A receive the leader bounded ([`StoreCommand::PopRanges`]).
    pub(super) fn pop_ranges(
        &mut self,
        log_index: u64,
        pop: &PopCommand,
        ranges: &[ScanRange],
        fx: &mut ApplyEffects,
    ) -> CommandResponse {
        let queues = self.selected_queues(&pop.topic, pop.queues).len();
        self.take_turn(pop, queues);
        let order: Vec<(u32, QueueBounds)> = ranges
            .iter()
            .map(|r| (r.queue_id, QueueBounds::ranged(r)))
            .collect();
        self.pop_queues(log_index, pop, &order, fx)
    }

    /// A receive whose matches the leader picked ([`StoreCommand::PopPicked`]).
    pub(super) fn pop_picked(
        &mut self,
        log_index: u64,
        pop: &PopCommand,
        picks: &[PickedRange],
        fx: &mut ApplyEffects,
    ) -> CommandResponse {
        let queues = self.selected_queues(&pop.topic, pop.queues).len();
        self.take_turn(pop, queues);
        let order: Vec<(u32, QueueBounds)> = picks
            .iter()
            .map(|p| {
                (
                    p.range.queue_id,
                    QueueBounds {
                        picked: Some(&p.offsets),
                        ..QueueBounds::ranged(&p.range)
                    },
                )
            })
            .collect();
        self.pop_queues(log_index, pop, &order, fx)
    }

    fn pop_queues(
        &mut self,
        log_index: u64,
        pop: &PopCommand,
        order: &[(u32, QueueBounds)],
        fx: &mut ApplyEffects,
    ) -> CommandResponse {
        let matcher = self.matcher(&pop.filter);
        let mut delivered: Vec<PoppedMessage> = Vec::new();
        let mut dead_letters = Vec::new();
        for (queue_id, bounds) in order {
            if delivered.len() >= pop.max as usize {
                break;
            }
            let before = delivered.len();
            let key = self.pop_queue(
                log_index,
                pop,
                *queue_id,
                *bounds,
                &matcher,
                &mut delivered,
                &mut dead_letters,
                fx,
            );
            if let Some(key) = key {
                for m in &delivered[before..] {
                    self.entries.put_queue_event(
                        key,
                        m.offset,
                        TrackEvent {
                            at: log_index,
                            kind: EventKind::Delivered,
                            time_ms: pop.now_ms,
                            a: u64::from(m.attempt),
                            b: u64::try_from(m.visible_at_ms).unwrap_or(0),
                            name: pop.group.as_str(),
                        },
                    );
                }
            }
        }
        let dead_lettered = u32::try_from(dead_letters.len()).unwrap_or(u32::MAX);
        for (key, offset, entry) in dead_letters {
            self.entries.put_queue_event(
                key,
                offset,
                TrackEvent {
                    at: log_index,
                    kind: EventKind::DeadLettered,
                    time_ms: pop.now_ms,
                    a: 0,
                    b: 0,
                    name: pop.group.as_str(),
                },
            );
            self.push_dead_letter(&pop.group, entry, log_index, pop.now_ms, fx);
        }
        CommandResponse::Popped {
            delivery_id: log_index,
            messages: delivered,
            dead_lettered,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn pop_queue(
        &mut self,
        log_index: u64,
        pop: &PopCommand,
        queue_id: u32,
        bounds: QueueBounds,
        matcher: &TagMatcher,
        out: &mut Vec<PoppedMessage>,
        dead_letters: &mut Vec<(u32, u64, IndexEntry)>,
        fx: &mut ApplyEffects,
    ) -> Option<u32> {
        let apply_version = self.apply_version;
        let truncated_below = self.truncated_below;
        let index = self.queues.get(&(pop.topic.clone(), queue_id)).copied()?;
        let entries = &self.entries;
        let consumer = self
            .consumers
            .entry((pop.group.clone(), pop.topic.clone(), queue_id))
            .or_insert_with(|| ConsumerQueue::new(index.min_offset()));
        consumer.raise_cursor_to(index.min_offset());
        if let Some(skip_to) = bounds.skip_to {
            consumer.raise_cursor_to(skip_to.min(index.max_offset()));
        }
        let max = pop.max as usize;
        let visible_at_ms = deadline(pop.now_ms, pop.invisible_ms);
        let deliver =
            |offset: u64, entry: &IndexEntry, attempt: u32, out: &mut Vec<PoppedMessage>| {
                out.push(PoppedMessage {
                    topic: pop.topic.clone(),
                    queue_id,
                    offset,
                    record: entry.record(),
                    attempt,
                    store_ts_ms: entry.store_ts_ms,
                    visible_at_ms,
                });
            };

        // 1. In-flight messages whose invisibility ran out: redeliver, or dead-letter them.
        for offset in consumer.expired(pop.now_ms, bounds.expiries) {
            if out.len() >= max {
                break;
            }
            let (Some(entry), Some(attempts)) = (
                live_entry(entries, truncated_below, &index, offset),
                consumer.inflight(offset).map(|r| r.attempts),
            ) else {
                consumer.remove_inflight(offset);
                continue;
            };
            if attempts >= pop.max_attempts {
                consumer.remove_inflight(offset);
                dead_letters.push((index.key(), offset, entry));
            } else if !matcher.matches(entry.tag) {
                // The subscription changed since: RocketMQ acks what no longer matches.
                consumer.remove_inflight(offset);
            } else if let Some(attempt) = consumer.redeliver(offset, log_index, visible_at_ms) {
                deliver(offset, &entry, attempt, out);
            }
        }

        // 2. FIFO: parked messages whose group is free again, in offset order.
        while out.len() < max {
            let Some((offset, lane)) = consumer.take_ready() else {
                break;
            };
            match live_entry(entries, truncated_below, &index, offset) {
                Some(entry) if matcher.matches(entry.tag) => {
                    consumer.deliver(offset, lane, log_index, visible_at_ms);
                    deliver(offset, &entry, 1, out);
                }
                _ => consumer.settle_lane(lane),
            }
        }

        // 3. Messages never delivered to this group.
        let scan_end = index.max_offset().min(
            bounds
                .scan_to
                .unwrap_or_else(|| consumer.cursor().saturating_add(CURSOR_SCAN_LIMIT)),
        );
        let bounded_parking = apply_version >= 3;
        // Offsets without a live entry are skipped; the walk reads the index in order.
        let mut live = live_range(
            entries,
            truncated_below,
            &index,
            consumer.cursor(),
            scan_end,
        );
        while out.len() < max && consumer.cursor() < scan_end {
            let Some((offset, entry)) = live.next() else {
                consumer.raise_cursor_to(scan_end);
                break;
            };
            consumer.raise_cursor_to(offset);
            let matched = match bounds.picked {
                Some(picked) => picked.binary_search(&offset).is_ok(),
                None => matcher.matches(entry.tag),
            };
            if !matched {
                consumer.advance_cursor();
                continue;
            }
            let lane = if pop.fifo { entry.message_group } else { 0 };
            if lane != 0 && consumer.lane_blocked(lane) {
                if bounded_parking && consumer.parked() >= MAX_PARKED {
                    // Parking is full: the cursor waits here until parked messages go out.
                    break;
                }
                consumer.advance_cursor();
                consumer.park(offset, lane);
                continue;
            }
            consumer.advance_cursor();
            consumer.deliver(offset, lane, log_index, visible_at_ms);
            deliver(offset, &entry, 1, out);
        }
        drop(live);
        if consumer.has_ready() {
            fx.woken_topics.insert(pop.topic.clone());
        }
        Some(index.key())
    }

    /// Moves a message to `group`'s dead-letter topic (in the command at log index `at`).
    pub(super) fn push_dead_letter(
        &mut self,
        group: &GroupName,
        entry: IndexEntry,
        at: u64,
        now_ms: i64,
        fx: &mut ApplyEffects,
    ) {
        let dlq = if self.apply_version >= super::BROADCAST_APPLY_VERSION {
            // A broadcast instance's dead letters are its group's.
            group.dead_letter_owner().dead_letter_topic()
        } else {
            group.dead_letter_topic()
        };
        fx.woken_topics.insert(dlq.clone());
        // Same record, no body copy: the DLQ entry points at the original Append.
        let (_, offset) = self.push_entry(
            dlq.clone(),
            0,
            IndexEntry {
                store_ts_ms: now_ms,
                ..entry
            },
        );
        self.put_stored(entry.record(), at, now_ms, &dlq, 0, offset);
    }

    /// Whether a POP matching `probe` could deliver something at `now_ms` (no state change).
    pub fn availability(&self, probe: PopProbe<'_>, now_ms: i64) -> Availability {
        let matcher = self.matcher(probe.filter);
        let mut earliest: Option<i64> = None;
        for queue_id in self.selected_queues(probe.topic, probe.queues) {
            let Some(index) = self.queues.get(&(probe.topic.clone(), queue_id)) else {
                continue;
            };
            let consumer =
                self.consumers
                    .get(&(probe.group.clone(), probe.topic.clone(), queue_id));
            if let Some(c) = consumer {
                match c.first_deadline() {
                    Some(at) if at <= now_ms => return Availability::Now,
                    Some(at) => earliest = Some(earliest.map_or(at, |e| e.min(at))),
                    None => {}
                }
                if c.has_ready() {
                    return Availability::Now;
                }
            }
            let cursor = consumer
                .map_or(index.min_offset(), |c| c.cursor())
                .max(index.min_offset());
            let scan_end = index
                .max_offset()
                .min(cursor.saturating_add(CURSOR_SCAN_LIMIT));
            if scan_end < index.max_offset() {
                // Too far to look: a POP will at least move the cursor on.
                return Availability::Now;
            }
            for (_, entry) in
                live_range(&self.entries, self.truncated_below, index, cursor, scan_end)
            {
                if !matcher.matches(entry.tag) {
                    continue;
                }
                let lane = if probe.fifo { entry.message_group } else { 0 };
                if lane == 0 || !consumer.is_some_and(|c| c.lane_blocked(lane)) {
                    return Availability::Now;
                }
                if self.apply_version >= 3 && consumer.is_some_and(|c| c.parked() >= MAX_PARKED) {
                    // The cursor waits at a message it cannot park: nothing further is
                    // deliverable until parked messages go out.
                    break;
                }
            }
        }
        earliest.map_or(Availability::Nothing, Availability::NotBefore)
    }
}

//! One consumer group's position on one queue: the cursor (next never-delivered offset), the
//! in-flight deliveries with a time-ordered deadline index, and for FIFO groups one lane per
//! message group (its in-flight message and the messages the cursor passed while it was busy).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

/// A delivered, unacknowledged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inflight {
    pub visible_at_ms: i64,
    /// Deliveries so far (1 after the first).
    pub attempts: u32,
    /// Log index of the command that made the current delivery.
    pub delivery_id: u64,
    /// The FIFO lane (message-group hash) this message occupies, 0 = none.
    pub lane: u64,
}

/// The messages of one message group that a FIFO consumer has not finished.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Lane {
    inflight: Option<u64>,
    /// Offsets the cursor passed while the lane was busy, in order.
    pending: VecDeque<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerQueue {
    cursor: u64,
    inflight: BTreeMap<u64, Inflight>,
    /// `(visible_at_ms, offset)` of every in-flight message, so expiry is a range scan.
    deadlines: BTreeSet<(i64, u64)>,
    lanes: BTreeMap<u64, Lane>,
    /// Heads of lanes with nothing in flight: offset -> lane. Deliverable now, in offset order.
    ready: BTreeMap<u64, u64>,
    /// Offsets parked in lanes (the sum of every lane's `pending`), kept so the parking bound is
    /// checked in constant time.
    parked: u64,
}

impl ConsumerQueue {
    pub fn new(cursor: u64) -> Self {
        Self {
            cursor,
            ..Self::default()
        }
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Moves the cursor past `offset` and returns it.
    pub fn advance_cursor(&mut self) -> u64 {
        let at = self.cursor;
        self.cursor += 1;
        at
    }

    pub fn raise_cursor_to(&mut self, min_offset: u64) {
        self.cursor = self.cursor.max(min_offset);
    }

    pub fn inflight_count(&self) -> usize {
        self.inflight.len()
    }

    pub fn inflight(&self, offset: u64) -> Option<&Inflight> {
        self.inflight.get(&offset)
    }

    #[cfg(test)]
    pub fn inflight_offsets(&self) -> impl Iterator<Item = (u64, &Inflight)> {
        self.inflight.iter().map(|(o, i)| (*o, i))
    }

    #[cfg(test)]
    pub fn pending_offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.lanes.values().flat_map(|l| l.pending.iter().copied())
    }

    /// Every offset below this is acknowledged, filtered out or dropped by retention.
    pub fn consumer_offset(&self) -> u64 {
        let first_inflight = self.inflight.keys().next().copied().unwrap_or(u64::MAX);
        let first_pending = self
            .lanes
            .values()
            .filter_map(|l| l.pending.front().copied())
            .min()
            .unwrap_or(u64::MAX);
        self.cursor.min(first_inflight).min(first_pending)
    }

    /// The earliest time an in-flight message becomes visible again.
    pub fn first_deadline(&self) -> Option<i64> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// In-flight messages visible again at `now_ms`, earliest first, at most `limit`.
    pub fn expired(&self, now_ms: i64, limit: usize) -> Vec<u64> {
        self.deadlines
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(limit)
            .map(|(_, o)| *o)
            .collect()
    }

    /// How many in-flight messages are visible again at `now_ms`, counting at most `limit`.
    pub fn expired_count(&self, now_ms: i64, limit: usize) -> usize {
        self.deadlines
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(limit)
            .count()
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Whether a message of `lane` must wait: an earlier one of its group is unfinished.
    pub fn lane_blocked(&self, lane: u64) -> bool {
        self.lanes
            .get(&lane)
            .is_some_and(|l| l.inflight.is_some() || !l.pending.is_empty())
    }

    /// Parks `offset` behind the unfinished messages of its group.
    pub fn park(&mut self, offset: u64, lane: u64) {
        self.lanes
            .entry(lane)
            .or_default()
            .pending
            .push_back(offset);
        self.parked += 1;
    }

    /// Offsets parked behind busy message groups.
    pub fn parked(&self) -> u64 {
        self.parked
    }

    /// Takes the earliest deliverable parked message off its lane. The caller either delivers
    /// it ([`Self::deliver`]) or drops it ([`Self::settle_lane`]).
    pub fn take_ready(&mut self) -> Option<(u64, u64)> {
        let (offset, lane) = self.ready.pop_first()?;
        if let Some(l) = self.lanes.get_mut(&lane) {
            let head = l.pending.pop_front();
            debug_assert_eq!(head, Some(offset), "ready holds lane heads only");
            if head.is_some() {
                self.parked = self.parked.saturating_sub(1);
            }
        }
        Some((offset, lane))
    }

    /// Records a first delivery.
    pub fn deliver(&mut self, offset: u64, lane: u64, delivery_id: u64, visible_at_ms: i64) {
        if lane != 0 {
            self.lanes.entry(lane).or_default().inflight = Some(offset);
        }
        self.inflight.insert(
            offset,
            Inflight {
                visible_at_ms,
                attempts: 1,
                delivery_id,
                lane,
            },
        );
        self.deadlines.insert((visible_at_ms, offset));
    }

    /// Delivers an expired in-flight message again; returns the new attempt number.
    pub fn redeliver(&mut self, offset: u64, delivery_id: u64, visible_at_ms: i64) -> Option<u32> {
        let rec = self.inflight.get_mut(&offset)?;
        self.deadlines.remove(&(rec.visible_at_ms, offset));
        rec.visible_at_ms = visible_at_ms;
        rec.delivery_id = delivery_id;
        rec.attempts = rec.attempts.saturating_add(1);
        self.deadlines.insert((visible_at_ms, offset));
        Some(rec.attempts)
    }

    /// Replaces delivery `delivery_id` of `offset` by a new one visible at `visible_at_ms`.
    pub fn change_visibility(
        &mut self,
        offset: u64,
        delivery_id: u64,
        new_delivery_id: u64,
        visible_at_ms: i64,
    ) -> bool {
        let Some(rec) = self
            .inflight
            .get_mut(&offset)
            .filter(|r| r.delivery_id == delivery_id)
        else {
            return false;
        };
        self.deadlines.remove(&(rec.visible_at_ms, offset));
        rec.visible_at_ms = visible_at_ms;
        rec.delivery_id = new_delivery_id;
        self.deadlines.insert((visible_at_ms, offset));
        true
    }

    /// Finishes delivery `delivery_id` of `offset` (ack or dead letter). `None` if that
    /// delivery is not current.
    pub fn finish(&mut self, offset: u64, delivery_id: u64) -> Option<Inflight> {
        if self.inflight.get(&offset)?.delivery_id != delivery_id {
            return None;
        }
        self.remove_inflight(offset)
    }

    /// Removes an in-flight record whatever its delivery (expiry into the DLQ, retention).
    pub fn remove_inflight(&mut self, offset: u64) -> Option<Inflight> {
        let rec = self.inflight.remove(&offset)?;
        self.deadlines.remove(&(rec.visible_at_ms, offset));
        if rec.lane != 0 {
            if let Some(l) = self.lanes.get_mut(&rec.lane)
                && l.inflight == Some(offset)
            {
                l.inflight = None;
            }
            self.settle_lane(rec.lane);
        }
        Some(rec)
    }

    /// After a lane's in-flight or head message finished: exposes the next head, or forgets
    /// the lane when it is empty.
    pub fn settle_lane(&mut self, lane: u64) {
        let Some(l) = self.lanes.get(&lane) else {
            return;
        };
        if l.inflight.is_some() {
            return;
        }
        match l.pending.front() {
            Some(head) => {
                self.ready.insert(*head, lane);
            }
            None => {
                self.lanes.remove(&lane);
            }
        }
    }

    /// Retention: forgets in-flight and parked messages that are gone (below `min_offset` or
    /// `is_live` false) and moves the cursor up to `min_offset`.
    pub fn forget_gone(&mut self, min_offset: u64, is_live: impl Fn(u64) -> bool) {
        self.raise_cursor_to(min_offset);
        let gone: Vec<u64> = self
            .inflight
            .keys()
            .copied()
            .filter(|o| *o < min_offset || !is_live(*o))
            .collect();
        for offset in gone {
            self.remove_inflight(offset);
        }
        for lane in self.lanes.values_mut() {
            lane.pending.retain(|o| *o >= min_offset && is_live(*o));
        }
        self.parked = self.lanes.values().map(|l| l.pending.len() as u64).sum();
        self.ready.clear();
        let lanes: Vec<u64> = self.lanes.keys().copied().collect();
        for lane in lanes {
            self.settle_lane(lane);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_release_their_next_message_in_order() {
        let mut c = ConsumerQueue::new(0);
        c.deliver(0, 7, 100, 50);
        assert!(c.lane_blocked(7));
        c.park(2, 7);
        c.park(5, 7);
        assert!(!c.has_ready());
        assert!(c.finish(0, 99).is_none(), "wrong delivery id");
        assert!(c.finish(0, 100).is_some());
        assert_eq!(c.take_ready(), Some((2, 7)));
        c.deliver(2, 7, 101, 60);
        assert!(!c.has_ready());
        c.remove_inflight(2);
        assert_eq!(c.take_ready(), Some((5, 7)));
        c.settle_lane(7);
        assert!(!c.lane_blocked(7), "an empty lane is forgotten");
    }

    #[test]
    fn consumer_offset_is_the_lowest_unfinished_offset() {
        let mut c = ConsumerQueue::new(0);
        for _ in 0..10 {
            c.advance_cursor();
        }
        assert_eq!(c.consumer_offset(), 10);
        c.deliver(4, 0, 1, 5);
        assert_eq!(c.consumer_offset(), 4);
        c.deliver(6, 9, 1, 5);
        c.park(3, 9);
        assert_eq!(c.consumer_offset(), 3);
    }

    #[test]
    fn deadlines_follow_redelivery_and_changes() {
        let mut c = ConsumerQueue::new(0);
        c.deliver(1, 0, 10, 100);
        c.deliver(2, 0, 10, 50);
        assert_eq!(c.expired(60, 10), vec![2]);
        assert_eq!(c.redeliver(2, 11, 200), Some(2));
        assert_eq!(c.first_deadline(), Some(100));
        assert!(c.change_visibility(1, 10, 12, 300));
        assert!(!c.change_visibility(1, 10, 13, 400), "old delivery is dead");
        assert_eq!(c.expired(250, 10), vec![2]);
        assert_eq!(c.inflight(1).map(|r| r.attempts), Some(1));
    }
}

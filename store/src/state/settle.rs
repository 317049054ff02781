//! Settling deliveries: a change of invisibility, an ack, a move to the dead-letter topic, the
//! end of a transaction, each with its event in the message's track (ADR 0028).

use super::*;

impl ShardState {
    /// Makes the current delivery `d` visible again at `visible_at_ms`, under the delivery id
    /// `new_delivery_id` (the command's log index for a change, `d`'s own for a renewal).
    /// Records what `d`'s group did with its message (ADR 0028).
    pub(super) fn put_queue_event(
        &mut self,
        d: &DeliveryRef,
        at: u64,
        kind: EventKind,
        time_ms: i64,
        a: u64,
        b: u64,
    ) {
        if let Some(queue) = self.queues.get(&(d.topic.clone(), d.queue_id)) {
            self.entries.put_queue_event(
                queue.key(),
                d.offset,
                TrackEvent {
                    at,
                    kind,
                    time_ms,
                    a,
                    b,
                    name: d.group.as_str(),
                },
            );
        }
    }

    pub(super) fn change_visibility(
        &mut self,
        d: &DeliveryRef,
        new_delivery_id: u64,
        visible_at_ms: i64,
    ) -> Result<ChangedDelivery, ApplyError> {
        let changed = self
            .consumers
            .get_mut(&(d.group.clone(), d.topic.clone(), d.queue_id))
            .is_some_and(|c| {
                c.change_visibility(d.offset, d.delivery_id, new_delivery_id, visible_at_ms)
            });
        if changed {
            Ok(ChangedDelivery {
                delivery_id: new_delivery_id,
                visible_at_ms,
            })
        } else {
            Err(ApplyError::StaleReceipt(d.to_string()))
        }
    }

    /// Ends a delivery: an ack (`dead_letter_at` = None) or a move to the DLQ. `(at, time)`:
    /// the command's log index and time, for the message's track.
    pub(super) fn finish(
        &mut self,
        d: &DeliveryRef,
        (at, time_ms): (u64, i64),
        dead_letter_at: Option<i64>,
        fx: &mut ApplyEffects,
    ) -> Result<(), ApplyError> {
        let stale = || ApplyError::StaleReceipt(d.to_string());
        let consumer = self
            .consumers
            .get_mut(&(d.group.clone(), d.topic.clone(), d.queue_id))
            .ok_or_else(stale)?;
        let rec = consumer.finish(d.offset, d.delivery_id).ok_or_else(stale)?;
        if (rec.lane != 0 && consumer.has_ready()) || consumer.inflight_count() + 1 == MAX_INFLIGHT
        {
            fx.woken_topics.insert(d.topic.clone());
        }
        if let Some(now_ms) = dead_letter_at {
            let entry = self
                .queues
                .get(&(d.topic.clone(), d.queue_id))
                .and_then(|q| live_entry(&self.entries, self.truncated_below, q, d.offset));
            match entry {
                Some(entry) => {
                    self.put_queue_event(d, at, EventKind::DeadLettered, time_ms, 0, 0);
                    self.push_dead_letter(&d.group, entry, at, now_ms, fx);
                }
                None => warn!(delivery = %d, "dead letter dropped: retention removed the message"),
            }
        } else {
            self.put_queue_event(d, at, EventKind::Acked, time_ms, 0, 0);
        }
        Ok(())
    }

    pub(super) fn end_transaction(
        &mut self,
        at: u64,
        topic: &TopicName,
        transaction_id: &str,
        resolution: TransactionEnd,
        now_ms: i64,
        fx: &mut ApplyEffects,
    ) -> Result<(), ApplyError> {
        let not_found = || ApplyError::TransactionNotFound(transaction_id.to_owned());
        let record = self
            .parse_transaction_id(transaction_id)
            .ok_or_else(not_found)?;
        if self
            .half_messages
            .get(&record)
            .is_none_or(|p| &p.topic != topic)
        {
            return Err(not_found());
        }
        let parked = self.half_messages.remove(&record).ok_or_else(not_found)?;
        let ended = match resolution {
            TransactionEnd::Commit => EventKind::Committed,
            TransactionEnd::Rollback => EventKind::RolledBack,
        };
        self.entries
            .put_record_event(record, TrackEvent::plain(at, ended, now_ms));
        if resolution == TransactionEnd::Commit {
            let (topic, queue_id, due) =
                (parked.topic.clone(), parked.queue_id, parked.deliver_at_ms);
            match self.place(record, parked, now_ms, fx) {
                Some((_, offset)) => self.put_stored(record, at, now_ms, &topic, queue_id, offset),
                None => self.entries.put_record_event(
                    record,
                    TrackEvent {
                        at,
                        kind: EventKind::Delayed,
                        time_ms: now_ms,
                        a: 0,
                        b: due.and_then(|d| u64::try_from(d).ok()).unwrap_or(0),
                        name: "",
                    },
                ),
            }
        }
        Ok(())
    }
}

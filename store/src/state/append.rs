//! Appending: a record goes into its queue (its next offset), the timer set (a delay message
//! not yet due) or the parked half messages (a transaction), and gets its lookup rows and
//! track (ADR 0028).

use super::*;

impl ShardState {
    /// Appends `messages` to one queue; their records take consecutive slots from `first`.
    /// Transaction half messages are parked, delay messages not yet due go to the timer set,
    /// everything else gets the queue's next offsets.
    pub(super) fn append(
        &mut self,
        first: RecordRef,
        topic: &TopicName,
        queue_id: u32,
        now_ms: i64,
        messages: &[MessageRecord],
        fx: &mut ApplyEffects,
    ) -> Vec<AppendOutcome> {
        messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let record = RecordRef {
                    log_index: first.log_index,
                    slot: first
                        .slot
                        .saturating_add(u32::try_from(i).unwrap_or(u32::MAX)),
                };
                let parked = ParkedMessage {
                    topic: topic.clone(),
                    queue_id,
                    tag: self.tags.intern(m.tag.as_deref()),
                    message_group: message_group_hash(m.message_group.as_deref()),
                    deliver_at_ms: m.delivery_timestamp_ms,
                };
                if m.kind == MessageKind::Transaction {
                    self.half_messages.insert(record, parked);
                    self.put_lookups(m, record, None);
                    self.entries.put_record_event(
                        record,
                        TrackEvent::plain(record.log_index, EventKind::Prepared, now_ms),
                    );
                    AppendOutcome {
                        offset: None,
                        transaction_id: Some(self.transaction_id(record)),
                        recall_handle: None,
                    }
                } else {
                    let due_ms = parked.deliver_at_ms;
                    let placed = self.place(record, parked, now_ms, fx);
                    let at = placed.map(|(key, offset)| Placed {
                        key,
                        queue_id,
                        offset,
                    });
                    self.put_lookups(m, record, at);
                    if let (None, Some(due_ms)) = (placed, due_ms) {
                        self.entries.put_record_event(
                            record,
                            TrackEvent {
                                at: record.log_index,
                                kind: EventKind::Delayed,
                                time_ms: now_ms,
                                a: 0,
                                b: u64::try_from(due_ms).unwrap_or(0),
                                name: "",
                            },
                        );
                    }
                    let offset = placed.map(|(_, offset)| offset);
                    // Not indexed: parked as a delay message, which a recall can withdraw.
                    let recall_handle = match (offset, due_ms) {
                        (None, Some(due_ms)) => Some(recall_handle(
                            self.shard,
                            TimerKey {
                                due_ms,
                                log_index: record.log_index,
                                slot: record.slot,
                            },
                        )),
                        _ => None,
                    };
                    AppendOutcome {
                        offset,
                        transaction_id: None,
                        recall_handle,
                    }
                }
            })
            .collect()
    }

    /// Makes the message at `record` findable by its id and keys (ADR 0028).
    pub(super) fn put_lookups(&mut self, m: &MessageRecord, record: RecordRef, at: Option<Placed>) {
        self.entries
            .put_lookup(LookupKind::MessageId, &m.message_id, record, at);
        for key in &m.keys {
            self.entries.put_lookup(LookupKind::Key, key, record, at);
        }
    }

    /// Records that the record at `record` went into a queue at `(key, offset)` (released,
    /// committed, or moved to a dead-letter topic).
    pub(super) fn put_stored(
        &mut self,
        record: RecordRef,
        at: u64,
        now_ms: i64,
        topic: &TopicName,
        queue_id: u32,
        offset: u64,
    ) {
        self.entries.put_record_event(
            record,
            TrackEvent {
                at,
                kind: EventKind::Stored,
                time_ms: now_ms,
                a: u64::from(queue_id),
                b: offset,
                name: topic.as_str(),
            },
        );
    }

    /// Puts a released message where it belongs now: its queue, or the timer set when its
    /// delivery time is still ahead. Returns the queue key and offset when indexed.
    pub(super) fn place(
        &mut self,
        record: RecordRef,
        parked: ParkedMessage,
        now_ms: i64,
        fx: &mut ApplyEffects,
    ) -> Option<(u32, u64)> {
        match parked.deliver_at_ms {
            Some(due_ms) if due_ms > now_ms => {
                self.timers.insert(
                    TimerKey {
                        due_ms,
                        log_index: record.log_index,
                        slot: record.slot,
                    },
                    parked,
                );
                fx.timers_changed = true;
                None
            }
            _ => Some(self.index(record, &parked, now_ms, fx)),
        }
    }

    /// Indexes a message into its queue; returns the queue key and offset.
    pub(super) fn index(
        &mut self,
        record: RecordRef,
        parked: &ParkedMessage,
        store_ts_ms: i64,
        fx: &mut ApplyEffects,
    ) -> (u32, u64) {
        fx.woken_topics.insert(parked.topic.clone());
        self.push_entry(
            parked.topic.clone(),
            parked.queue_id,
            IndexEntry {
                log_index: record.log_index,
                slot: record.slot,
                store_ts_ms,
                tag: parked.tag,
                message_group: parked.message_group,
            },
        )
    }

    /// Appends `entry` to a queue (created on first use) and returns its key and offset.
    pub(super) fn push_entry(
        &mut self,
        topic: TopicName,
        queue_id: u32,
        entry: IndexEntry,
    ) -> (u32, u64) {
        let next_key = &mut self.next_queue_key;
        let queue = self.queues.entry((topic, queue_id)).or_insert_with(|| {
            let key = *next_key;
            // 4 billion queues on one shard is out of reach; saturating keeps apply total.
            *next_key = next_key.saturating_add(1);
            QueueIndex::new(key)
        });
        let offset = queue.take_offset();
        self.entries.put(queue.key(), offset, entry);
        (queue.key(), offset)
    }
}

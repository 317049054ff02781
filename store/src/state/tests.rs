//! Consumer-state transitions of the pure shard state machine, one behaviour per test, and a
//! property test that runs random command sequences against a model.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use vela_proto::domain::{GroupName, MessageKind, MessageRecord, TopicName};
use vela_proto::store_api::AppendOutcome;

use super::*;
use crate::command::{
    ApplyError, CommandResponse, DeliveryRef, PopCommand, PoppedMessage, QueueAppend, QueueChoice,
    StoreCommand, TagSubscription, TransactionEnd,
};

const INVISIBLE: u64 = 30_000;

fn topic(name: &str) -> TopicName {
    TopicName::new(name).expect("valid topic")
}

fn group(name: &str) -> GroupName {
    GroupName::new(name).expect("valid group")
}

fn message(tag: Option<&str>, message_group: Option<&str>) -> MessageRecord {
    MessageRecord {
        message_id: "id".into(),
        topic: topic("orders"),
        kind: if message_group.is_some() {
            MessageKind::Fifo
        } else {
            MessageKind::Normal
        },
        tag: tag.map(str::to_owned),
        keys: vec![],
        message_group: message_group.map(str::to_owned),
        delivery_timestamp_ms: None,
        born_timestamp_ms: 0,
        born_host: "test".into(),
        trace_context: None,
        properties: vec![],
        body: Bytes::from_static(b"body"),
    }
}

/// Applies commands at consecutive log indexes, like a Raft log would.
struct Harness {
    state: ShardState,
    last_index: u64,
    now_ms: i64,
    fx: ApplyEffects,
}

impl Harness {
    fn new() -> Self {
        Self {
            state: ShardState::new(0),
            last_index: 0,
            now_ms: 1_000_000,
            fx: ApplyEffects::default(),
        }
    }

    fn apply(&mut self, command: StoreCommand) -> CommandResponse {
        self.last_index += 1;
        self.fx = ApplyEffects::default();
        self.state.apply(self.last_index, &command, &mut self.fx)
    }

    fn append_to(
        &mut self,
        topic_name: &str,
        queue_id: u32,
        messages: Vec<MessageRecord>,
    ) -> Vec<AppendOutcome> {
        let command = StoreCommand::Append {
            topic: topic(topic_name),
            queue_id,
            now_ms: self.now_ms,
            messages,
        };
        match self.apply(command) {
            CommandResponse::Appended(outcomes) => outcomes,
            other => panic!("unexpected response {other:?}"),
        }
    }

    fn append(&mut self, messages: Vec<MessageRecord>) -> Vec<AppendOutcome> {
        self.append_to("orders", 0, messages)
    }

    fn pop_with(&mut self, f: impl FnOnce(&mut PopCommand)) -> Vec<PoppedMessage> {
        let mut pop = PopCommand {
            group: group("billing"),
            topic: topic("orders"),
            queues: QueueChoice::All,
            max: 32,
            invisible_ms: INVISIBLE,
            filter: TagSubscription::All,
            fifo: false,
            max_attempts: 3,
            now_ms: self.now_ms,
        };
        f(&mut pop);
        let index = self.last_index + 1;
        match self.apply(StoreCommand::Pop(pop)) {
            CommandResponse::Popped {
                delivery_id,
                messages,
            } => {
                assert_eq!(
                    delivery_id, index,
                    "a delivery is named by its POP's log index"
                );
                messages
            }
            other => panic!("unexpected response {other:?}"),
        }
    }

    fn pop(&mut self) -> Vec<PoppedMessage> {
        self.pop_with(|_| {})
    }

    fn pop_offsets(&mut self) -> Vec<u64> {
        self.pop().iter().map(|m| m.offset).collect()
    }

    fn ack(&mut self, d: DeliveryRef) -> Result<(), ApplyError> {
        match self.apply(StoreCommand::Ack {
            deliveries: vec![d],
        }) {
            CommandResponse::Acked(mut results) => results.remove(0),
            other => panic!("unexpected response {other:?}"),
        }
    }

    fn advance(&mut self, ms: i64) {
        self.now_ms += ms;
    }
}

/// The delivery a popped message names, for group "billing", issued at `delivery_id`.
fn delivery(m: &PoppedMessage, delivery_id: u64) -> DeliveryRef {
    DeliveryRef {
        group: group("billing"),
        topic: m.topic.clone(),
        queue_id: m.queue_id,
        offset: m.offset,
        delivery_id,
    }
}

fn popped_with_id(h: &mut Harness) -> (u64, Vec<PoppedMessage>) {
    let id = h.last_index + 1;
    (id, h.pop())
}

#[test]
fn pop_delivers_in_offset_order_and_ack_finishes() {
    let mut h = Harness::new();
    let outcomes = h.append(vec![
        message(None, None),
        message(None, None),
        message(None, None),
    ]);
    assert_eq!(
        outcomes.iter().map(|o| o.offset).collect::<Vec<_>>(),
        vec![Some(0), Some(1), Some(2)]
    );
    let (id, first) = {
        let id = h.last_index + 1;
        (id, h.pop_with(|p| p.max = 2))
    };
    assert_eq!(
        first
            .iter()
            .map(|m| (m.offset, m.attempt))
            .collect::<Vec<_>>(),
        vec![(0, 1), (1, 1)]
    );
    assert_eq!(
        first[0].record,
        RecordRef {
            log_index: 1,
            slot: 0
        }
    );
    assert_eq!(
        first[1].record,
        RecordRef {
            log_index: 1,
            slot: 1
        }
    );
    assert_eq!(first[0].visible_at_ms, h.now_ms + INVISIBLE as i64);
    assert_eq!(h.ack(delivery(&first[0], id)), Ok(()));
    assert_eq!(
        h.ack(delivery(&first[0], id)),
        Err(ApplyError::StaleReceipt(
            delivery(&first[0], id).to_string()
        ))
    );
    assert_eq!(h.pop_offsets(), vec![2]);
    assert!(h.pop().is_empty());
    let stats = h
        .state
        .queue_stats(&topic("orders"), Some(&group("billing")));
    assert_eq!(
        stats[0].groups[0].consumer_offset, 1,
        "offset 1 is still in flight"
    );
    assert_eq!(stats[0].groups[0].inflight, 2);
    assert_eq!(stats[0].groups[0].backlog, 2);
}

#[test]
fn expired_messages_are_redelivered_with_the_next_attempt() {
    let mut h = Harness::new();
    h.append(vec![message(None, None)]);
    let (first_id, first) = popped_with_id(&mut h);
    h.advance(INVISIBLE as i64 - 1);
    assert!(
        h.pop().is_empty(),
        "still invisible one ms before the deadline"
    );
    h.advance(1);
    let (second_id, second) = popped_with_id(&mut h);
    assert_eq!(second.len(), 1);
    assert_eq!((second[0].offset, second[0].attempt), (0, 2));
    assert!(
        h.ack(delivery(&first[0], first_id)).is_err(),
        "the first delivery's handle died"
    );
    assert_eq!(h.ack(delivery(&second[0], second_id)), Ok(()));
    h.advance(10 * INVISIBLE as i64);
    assert!(h.pop().is_empty(), "an acked message never comes back");
}

#[test]
fn ack_after_the_deadline_but_before_redelivery_succeeds() {
    let mut h = Harness::new();
    h.append(vec![message(None, None)]);
    let (id, first) = popped_with_id(&mut h);
    h.advance(INVISIBLE as i64 * 3);
    assert_eq!(h.ack(delivery(&first[0], id)), Ok(()));
    assert!(h.pop().is_empty());
}

#[test]
fn change_invisible_replaces_the_handle_and_keeps_attempts() {
    let mut h = Harness::new();
    h.append(vec![message(None, None)]);
    let (id, first) = popped_with_id(&mut h);
    let change_index = h.last_index + 1;
    let response = h.apply(StoreCommand::ChangeInvisible {
        delivery: delivery(&first[0], id),
        invisible_ms: 100_000,
        now_ms: h.now_ms,
    });
    let visible_at = h.now_ms + 100_000;
    assert_eq!(
        response,
        CommandResponse::InvisibilityChanged(Ok(ChangedDelivery {
            delivery_id: change_index,
            visible_at_ms: visible_at
        }))
    );
    // The old handle is dead for both change and ack.
    let again = h.apply(StoreCommand::ChangeInvisible {
        delivery: delivery(&first[0], id),
        invisible_ms: 1,
        now_ms: h.now_ms,
    });
    assert!(matches!(
        again,
        CommandResponse::InvisibilityChanged(Err(ApplyError::StaleReceipt(_)))
    ));
    assert!(h.ack(delivery(&first[0], id)).is_err());
    // Past the original deadline it stays invisible; past the new one it comes back as attempt 2.
    h.advance(INVISIBLE as i64 + 1);
    assert!(h.pop().is_empty());
    h.advance(100_000);
    let redelivered = h.pop();
    assert_eq!(
        redelivered[0].attempt, 2,
        "change-invisible does not count as a delivery"
    );
    // And the new handle was killed by that redelivery.
    assert!(h.ack(delivery(&first[0], change_index)).is_err());
}

#[test]
fn ack_with_the_handle_from_change_invisible_works() {
    let mut h = Harness::new();
    h.append(vec![message(None, None)]);
    let (id, first) = popped_with_id(&mut h);
    let change_index = h.last_index + 1;
    h.apply(StoreCommand::ChangeInvisible {
        delivery: delivery(&first[0], id),
        invisible_ms: 50_000,
        now_ms: h.now_ms,
    });
    assert_eq!(h.ack(delivery(&first[0], change_index)), Ok(()));
    h.advance(1_000_000);
    assert!(h.pop().is_empty());
}

#[test]
fn messages_move_to_the_dead_letter_queue_after_max_attempts() {
    let mut h = Harness::new();
    h.append(vec![message(Some("A"), None)]);
    for attempt in 1..=3 {
        let got = h.pop();
        assert_eq!(
            got.iter().map(|m| m.attempt).collect::<Vec<_>>(),
            vec![attempt]
        );
        h.advance(INVISIBLE as i64);
    }
    assert!(
        h.pop().is_empty(),
        "the fourth delivery goes to the DLQ instead"
    );
    let dlq = group("billing").dead_letter_topic();
    assert!(h.fx.woken_topics.contains(&dlq));
    let dlq_index = h.state.queue(&dlq, 0).expect("dlq queue exists");
    assert_eq!(dlq_index.max_offset(), 1);
    let entry = dlq_index.get(0).expect("entry");
    assert_eq!(
        entry.record(),
        RecordRef {
            log_index: 1,
            slot: 0
        },
        "no body copy: same record"
    );
    assert_eq!(entry.store_ts_ms, h.now_ms);
    // The DLQ is consumable like any topic, by any group.
    let from_dlq = h.pop_with(|p| {
        p.topic = dlq.clone();
        p.group = group("dlq-reader");
    });
    assert_eq!(from_dlq.len(), 1);
    assert_eq!(from_dlq[0].topic, dlq);
    assert_eq!((from_dlq[0].attempt, from_dlq[0].record.log_index), (1, 1));
    let stats = h
        .state
        .queue_stats(&topic("orders"), Some(&group("billing")));
    assert_eq!(stats[0].groups[0].backlog, 0);
}

#[test]
fn dead_letter_command_moves_a_delivered_message_now() {
    let mut h = Harness::new();
    h.append(vec![message(None, None), message(None, None)]);
    let (id, got) = popped_with_id(&mut h);
    let response = h.apply(StoreCommand::DeadLetter {
        delivery: delivery(&got[1], id),
        now_ms: h.now_ms,
    });
    assert_eq!(response, CommandResponse::DeadLettered(Ok(())));
    let again = h.apply(StoreCommand::DeadLetter {
        delivery: delivery(&got[1], id),
        now_ms: h.now_ms,
    });
    assert!(matches!(
        again,
        CommandResponse::DeadLettered(Err(ApplyError::StaleReceipt(_)))
    ));
    let dlq = h
        .state
        .queue(&group("billing").dead_letter_topic(), 0)
        .expect("dlq");
    assert_eq!(dlq.get(0).map(|e| e.record()), Some(got[1].record));
    h.advance(INVISIBLE as i64);
    assert_eq!(
        h.pop_offsets(),
        vec![0],
        "only the other message comes back"
    );
}

#[test]
fn tag_filters_compare_exact_tags_and_skip_the_rest() {
    let mut h = Harness::new();
    h.append(vec![
        message(Some("A"), None),
        message(Some("B"), None),
        message(None, None),
        message(Some("A"), None),
        message(Some("AB"), None),
    ]);
    let got = h.pop_with(|p| p.filter = TagSubscription::Tags(vec!["A".into()]));
    assert_eq!(got.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![0, 3]);
    // Skipped messages count as consumed for this group; another group still sees them.
    let c = h
        .state
        .consumer(&group("billing"), &topic("orders"), 0)
        .expect("consumer");
    assert_eq!(c.cursor(), 5);
    let other = h.pop_with(|p| {
        p.group = group("audit");
        p.filter = TagSubscription::Tags(vec!["B".into(), "never-seen".into()]);
    });
    assert_eq!(other.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![1]);
    let none = h.pop_with(|p| {
        p.group = group("nobody");
        p.filter = TagSubscription::Tags(vec!["Z".into()]);
    });
    assert!(none.is_empty());
    assert_eq!(
        h.state
            .consumer(&group("nobody"), &topic("orders"), 0)
            .map(|c| c.cursor()),
        Some(5)
    );
}

#[test]
fn fifo_keeps_group_order_and_does_not_block_other_groups() {
    let mut h = Harness::new();
    h.append(vec![
        message(None, Some("g1")), // 0
        message(None, Some("g1")), // 1
        message(None, Some("g2")), // 2
        message(None, Some("g1")), // 3
        message(None, None),       // 4
        message(None, Some("g2")), // 5
    ]);
    let fifo = |p: &mut PopCommand| p.fifo = true;
    let id = h.last_index + 1;
    let first = h.pop_with(fifo);
    assert_eq!(
        first.iter().map(|m| m.offset).collect::<Vec<_>>(),
        vec![0, 2, 4]
    );
    assert!(
        h.pop_with(fifo).is_empty(),
        "both groups have a message in flight"
    );
    assert_eq!(
        h.state.availability(
            PopProbe {
                group: &group("billing"),
                topic: &topic("orders"),
                queues: QueueChoice::All,
                filter: &TagSubscription::All,
                fifo: true
            },
            h.now_ms
        ),
        Availability::NotBefore(h.now_ms + INVISIBLE as i64)
    );
    // Acking g2's message frees g2 only.
    h.ack(delivery(&first[1], id)).expect("ack g2");
    assert!(
        h.fx.woken_topics.contains(&topic("orders")),
        "a freed group wakes long polls"
    );
    assert_eq!(
        h.pop_with(fifo)
            .iter()
            .map(|m| m.offset)
            .collect::<Vec<_>>(),
        vec![5]
    );
    // g1's head expires: it is redelivered before anything later of g1.
    h.advance(INVISIBLE as i64);
    let id2 = h.last_index + 1;
    let again = h.pop_with(fifo);
    assert_eq!(
        again
            .iter()
            .map(|m| (m.offset, m.attempt))
            .collect::<Vec<_>>(),
        vec![(0, 2), (4, 2), (5, 2)]
    );
    h.ack(delivery(&again[0], id2)).expect("ack g1 head");
    let id3 = h.last_index + 1;
    let next = h.pop_with(fifo);
    assert_eq!(next.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![1]);
    h.ack(delivery(&next[0], id3)).expect("ack");
    assert_eq!(
        h.pop_with(fifo)
            .iter()
            .map(|m| m.offset)
            .collect::<Vec<_>>(),
        vec![3]
    );
    let stats = h
        .state
        .queue_stats(&topic("orders"), Some(&group("billing")));
    assert_eq!(stats[0].groups[0].consumer_offset, 3);
}

#[test]
fn fifo_dead_letter_unblocks_the_group() {
    let mut h = Harness::new();
    h.append(vec![message(None, Some("g")), message(None, Some("g"))]);
    let fifo = |p: &mut PopCommand| {
        p.fifo = true;
        p.max_attempts = 1;
    };
    assert_eq!(
        h.pop_with(fifo)
            .iter()
            .map(|m| m.offset)
            .collect::<Vec<_>>(),
        vec![0]
    );
    h.advance(INVISIBLE as i64);
    assert_eq!(
        h.pop_with(fifo)
            .iter()
            .map(|m| m.offset)
            .collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(
        h.state
            .queue(&group("billing").dead_letter_topic(), 0)
            .map(|q| q.max_offset()),
        Some(1)
    );
}

#[test]
fn delay_messages_are_released_in_due_order() {
    let mut h = Harness::new();
    let now = h.now_ms;
    let delayed = |due: i64| MessageRecord {
        delivery_timestamp_ms: Some(due),
        kind: MessageKind::Delay,
        ..message(None, None)
    };
    let outcomes = h.append(vec![
        delayed(now + 300),
        delayed(now + 100),
        message(None, None),
        delayed(now - 5),
    ]);
    assert_eq!(
        outcomes.iter().map(|o| o.offset).collect::<Vec<_>>(),
        vec![None, None, Some(0), Some(1)]
    );
    assert!(h.fx.timers_changed);
    assert_eq!(h.state.next_due_ms(), Some(now + 100));
    assert!(h.state.due_timers(now + 99, 10).is_empty());
    h.advance(400);
    let due = h.state.due_timers(h.now_ms, 10);
    assert_eq!(due.iter().map(|k| k.slot).collect::<Vec<_>>(), vec![1, 0]);
    assert_eq!(h.state.lowest_parked_log_index(), Some(1));
    let response = h.apply(StoreCommand::Release {
        due: due.clone(),
        now_ms: h.now_ms,
    });
    assert_eq!(response, CommandResponse::Released { indexed: 2 });
    assert_eq!(
        h.apply(StoreCommand::Release {
            due,
            now_ms: h.now_ms
        }),
        CommandResponse::Released { indexed: 0 },
        "releasing twice is harmless"
    );
    let got = h.pop();
    assert_eq!(
        got.iter()
            .map(|m| (m.offset, m.record.slot))
            .collect::<Vec<_>>(),
        vec![(0, 2), (1, 3), (2, 1), (3, 0)]
    );
    assert_eq!(
        got[2].store_ts_ms, h.now_ms,
        "store time of a delay message is its release"
    );
    assert_eq!(h.state.next_due_ms(), None);
    assert_eq!(h.state.lowest_parked_log_index(), None);
}

#[test]
fn transactions_commit_into_the_queue_or_roll_back() {
    let mut h = Harness::new();
    let half = || MessageRecord {
        kind: MessageKind::Transaction,
        ..message(None, None)
    };
    let outcomes = h.append(vec![half(), half()]);
    assert_eq!(
        outcomes[0],
        AppendOutcome {
            offset: None,
            transaction_id: Some("0-1-0".into())
        }
    );
    assert!(h.pop().is_empty(), "half messages are invisible");
    let end = |h: &mut Harness, id: &str, resolution, topic_name: &str| {
        h.apply(StoreCommand::EndTransaction {
            topic: topic(topic_name),
            transaction_id: id.into(),
            resolution,
            now_ms: h.now_ms,
        })
    };
    let not_found = |id: &str| {
        CommandResponse::TransactionEnded(Err(ApplyError::TransactionNotFound(id.into())))
    };
    assert_eq!(
        end(&mut h, "0-1-0", TransactionEnd::Commit, "other"),
        not_found("0-1-0"),
        "wrong topic"
    );
    assert_eq!(
        end(&mut h, "0-1-0", TransactionEnd::Commit, "orders"),
        CommandResponse::TransactionEnded(Ok(()))
    );
    assert_eq!(
        end(&mut h, "0-1-0", TransactionEnd::Commit, "orders"),
        not_found("0-1-0"),
        "already ended"
    );
    assert_eq!(
        end(&mut h, "0-1-1", TransactionEnd::Rollback, "orders"),
        CommandResponse::TransactionEnded(Ok(()))
    );
    assert_eq!(
        end(&mut h, "7-1-1", TransactionEnd::Commit, "orders"),
        not_found("7-1-1"),
        "other shard"
    );
    assert_eq!(
        end(&mut h, "garbage", TransactionEnd::Commit, "orders"),
        not_found("garbage")
    );
    let got = h.pop();
    assert_eq!(
        got.iter().map(|m| m.record.slot).collect::<Vec<_>>(),
        vec![0],
        "only the committed one"
    );
}

#[test]
fn committed_transaction_with_a_future_delivery_time_waits_for_it() {
    let mut h = Harness::new();
    let due = h.now_ms + 1_000;
    h.append(vec![MessageRecord {
        kind: MessageKind::Transaction,
        delivery_timestamp_ms: Some(due),
        ..message(None, None)
    }]);
    h.apply(StoreCommand::EndTransaction {
        topic: topic("orders"),
        transaction_id: "0-1-0".into(),
        resolution: TransactionEnd::Commit,
        now_ms: h.now_ms,
    });
    assert_eq!(h.state.next_due_ms(), Some(due));
}

#[test]
fn truncation_drops_old_entries_and_the_state_pointing_at_them() {
    let mut h = Harness::new();
    h.append(vec![message(None, None), message(None, None)]); // log 1: offsets 0, 1
    h.append(vec![message(None, None)]); // log 2: offset 2
    let (id, got) = popped_with_id(&mut h); // all three in flight
    assert_eq!(got.len(), 3);
    h.append(vec![message(None, None)]); // log 4: offset 3
    h.apply(StoreCommand::Truncate { below_log_index: 2 });
    let index = h.state.queue(&topic("orders"), 0).expect("queue");
    assert_eq!((index.min_offset(), index.max_offset()), (2, 4));
    assert!(
        h.ack(delivery(&got[0], id)).is_err(),
        "in-flight records below are gone"
    );
    assert_eq!(h.ack(delivery(&got[2], id)), Ok(()));
    let stats = h
        .state
        .queue_stats(&topic("orders"), Some(&group("billing")));
    assert_eq!(stats[0].min_offset, 2);
    assert_eq!(stats[0].groups[0].consumer_offset, 3);
    // A group that never consumed starts at the new minimum.
    let fresh = h.pop_with(|p| p.group = group("late"));
    assert_eq!(
        fresh.iter().map(|m| m.offset).collect::<Vec<_>>(),
        vec![2, 3]
    );
}

#[test]
fn drop_topic_and_drop_group_forget_state() {
    let mut h = Harness::new();
    h.append(vec![message(None, None)]);
    h.append_to("other", 0, vec![message(None, None)]);
    let (id, got) = popped_with_id(&mut h);
    h.apply(StoreCommand::DropGroup {
        group: group("billing"),
    });
    assert!(h.ack(delivery(&got[0], id)).is_err());
    assert_eq!(h.pop_offsets(), vec![0], "a recreated group starts over");
    h.apply(StoreCommand::DropTopic {
        topic: topic("orders"),
    });
    assert!(!h.state.has_topic(&topic("orders")));
    assert!(h.state.has_topic(&topic("other")));
    assert!(h.pop().is_empty());
    assert!(h.state.queue_stats(&topic("orders"), None).is_empty());
}

#[test]
fn all_queue_pops_rotate_the_starting_queue() {
    let mut h = Harness::new();
    for q in 0..3 {
        h.append_to("orders", q, vec![message(None, None), message(None, None)]);
    }
    let queues: Vec<u32> = (0..3)
        .map(|_| h.pop_with(|p| p.max = 1)[0].queue_id)
        .collect();
    assert_eq!(queues, vec![0, 1, 2]);
    let one = h.pop_with(|p| p.queues = QueueChoice::One(2));
    assert_eq!(
        one.iter()
            .map(|m| (m.queue_id, m.offset))
            .collect::<Vec<_>>(),
        vec![(2, 1)]
    );
    assert!(
        h.pop_with(|p| p.queues = QueueChoice::One(9)).is_empty(),
        "unknown queue is empty"
    );
}

#[test]
fn availability_matches_what_a_pop_would_do() {
    let mut h = Harness::new();
    let g = group("billing");
    let t = topic("orders");
    let tags_b = TagSubscription::Tags(vec!["B".into()]);
    let probe = |filter| PopProbe {
        group: &g,
        topic: &t,
        queues: QueueChoice::All,
        filter,
        fifo: false,
    };
    assert_eq!(
        h.state.availability(probe(&TagSubscription::All), h.now_ms),
        Availability::Nothing
    );
    h.append(vec![message(Some("A"), None)]);
    assert_eq!(
        h.state.availability(probe(&TagSubscription::All), h.now_ms),
        Availability::Now
    );
    assert_eq!(
        h.state.availability(probe(&tags_b), h.now_ms),
        Availability::Nothing,
        "filtered out"
    );
    h.pop();
    let deadline = h.now_ms + INVISIBLE as i64;
    assert_eq!(
        h.state.availability(probe(&TagSubscription::All), h.now_ms),
        Availability::NotBefore(deadline)
    );
    assert_eq!(
        h.state.availability(probe(&TagSubscription::All), deadline),
        Availability::Now
    );
}

#[test]
fn snapshots_round_trip_exactly() {
    let mut h = Harness::new();
    h.append(vec![
        message(Some("A"), Some("g")),
        message(Some("A"), Some("g")),
        message(None, None),
    ]);
    h.append(vec![MessageRecord {
        kind: MessageKind::Transaction,
        ..message(None, None)
    }]);
    h.append(vec![MessageRecord {
        delivery_timestamp_ms: Some(h.now_ms + 10),
        ..message(None, None)
    }]);
    h.pop_with(|p| p.fifo = true);
    let bytes = postcard::to_stdvec(&h.state).expect("encodes");
    let back: ShardState = postcard::from_bytes(&bytes).expect("decodes");
    assert_eq!(back, h.state);
}

fn named(id: &str, f: impl FnOnce(&mut MessageRecord)) -> MessageRecord {
    let mut m = MessageRecord {
        message_id: id.into(),
        ..message(None, None)
    };
    f(&mut m);
    m
}

fn sub(queue_id: u32, messages: Vec<MessageRecord>) -> QueueAppend {
    QueueAppend {
        topic: topic("orders"),
        queue_id,
        messages,
    }
}

/// The message ids a POP delivered, by (queue, offset), read through the entry they name.
fn read_back(
    entries: &BTreeMap<u64, StoreCommand>,
    popped: &[PoppedMessage],
) -> BTreeMap<(u32, u64), String> {
    popped
        .iter()
        .map(|m| {
            let record = entries
                .get(&m.record.log_index)
                .and_then(|c| c.record(m.record.slot))
                .expect("a delivered record is readable through its entry");
            ((m.queue_id, m.offset), record.message_id.clone())
        })
        .collect()
}

#[test]
fn a_batch_applies_each_sub_append_like_its_own_append() {
    let mut h = Harness::new();
    let mut entries = BTreeMap::new();
    let single = StoreCommand::Append {
        topic: topic("orders"),
        queue_id: 0,
        now_ms: h.now_ms,
        messages: vec![named("first", |_| {})],
    };
    h.apply(single.clone());
    entries.insert(h.last_index, single);
    let batch = StoreCommand::AppendBatch {
        now_ms: h.now_ms,
        appends: vec![
            sub(0, vec![named("a", |_| {}), named("b", |_| {})]),
            sub(1, vec![named("c", |_| {})]),
            sub(0, vec![named("d", |_| {})]),
        ],
    };
    let response = h.apply(batch.clone());
    entries.insert(h.last_index, batch);
    let offsets = |outcomes: &[AppendOutcome]| outcomes.iter().map(|o| o.offset).collect();
    let CommandResponse::AppendedBatch(outcomes) = response else {
        panic!("unexpected response {response:?}");
    };
    assert_eq!(
        outcomes.iter().map(|o| offsets(o)).collect::<Vec<Vec<_>>>(),
        vec![vec![Some(1), Some(2)], vec![Some(0)], vec![Some(3)]],
        "offsets continue per queue, in sub-append order"
    );
    assert!(h.fx.woken_topics.contains(&topic("orders")));
    let got = h.pop();
    assert_eq!(
        read_back(&entries, &got),
        BTreeMap::from([
            ((0, 0), "first".to_owned()),
            ((0, 1), "a".to_owned()),
            ((0, 2), "b".to_owned()),
            ((0, 3), "d".to_owned()),
            ((1, 0), "c".to_owned()),
        ])
    );
    assert_eq!(
        got.iter()
            .filter(|m| m.record.log_index == 2)
            .map(|m| m.record.slot)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([0, 1, 2, 3]),
        "slots run on across sub-appends"
    );
}

#[test]
fn delay_and_transaction_sub_appends_park_under_their_batch_slots() {
    let mut h = Harness::new();
    let due = h.now_ms + 1_000;
    let batch = StoreCommand::AppendBatch {
        now_ms: h.now_ms,
        appends: vec![
            sub(0, vec![named("plain", |_| {})]),
            sub(
                0,
                vec![named("late", |m| {
                    m.kind = MessageKind::Delay;
                    m.delivery_timestamp_ms = Some(due);
                })],
            ),
            sub(
                1,
                vec![named("half", |m| m.kind = MessageKind::Transaction)],
            ),
        ],
    };
    let response = h.apply(batch.clone());
    let entries = BTreeMap::from([(h.last_index, batch)]);
    assert_eq!(
        response,
        CommandResponse::AppendedBatch(vec![
            vec![AppendOutcome {
                offset: Some(0),
                transaction_id: None
            }],
            vec![AppendOutcome {
                offset: None,
                transaction_id: None
            }],
            vec![AppendOutcome {
                offset: None,
                transaction_id: Some("0-1-2".into())
            }],
        ])
    );
    assert!(h.fx.timers_changed);
    assert_eq!(
        h.state.due_timers(due, 10),
        vec![TimerKey {
            due_ms: due,
            log_index: 1,
            slot: 1
        }]
    );
    assert_eq!(
        h.apply(StoreCommand::EndTransaction {
            topic: topic("orders"),
            transaction_id: "0-1-2".into(),
            resolution: TransactionEnd::Commit,
            now_ms: h.now_ms,
        }),
        CommandResponse::TransactionEnded(Ok(()))
    );
    h.advance(1_000);
    let release = h.state.due_timers(h.now_ms, 10);
    assert_eq!(
        h.apply(StoreCommand::Release {
            due: release,
            now_ms: h.now_ms
        }),
        CommandResponse::Released { indexed: 1 }
    );
    let got = h.pop();
    assert_eq!(
        read_back(&entries, &got),
        BTreeMap::from([
            ((0, 0), "plain".to_owned()),
            ((0, 1), "late".to_owned()),
            ((1, 0), "half".to_owned()),
        ])
    );
}

#[test]
fn a_batch_of_one_append_matches_the_plain_append() {
    let messages = || {
        vec![
            named("x", |_| {}),
            named("y", |m| m.kind = MessageKind::Transaction),
        ]
    };
    let mut plain = Harness::new();
    let mut batched = Harness::new();
    let CommandResponse::Appended(expected) = plain.apply(StoreCommand::Append {
        topic: topic("orders"),
        queue_id: 3,
        now_ms: plain.now_ms,
        messages: messages(),
    }) else {
        panic!("append answers Appended");
    };
    let response = batched.apply(StoreCommand::AppendBatch {
        now_ms: batched.now_ms,
        appends: vec![sub(3, messages())],
    });
    assert_eq!(response, CommandResponse::AppendedBatch(vec![expected]));
    assert_eq!(plain.state, batched.state);
}

mod model {
    //! Random command sequences against the state machine, checked against a model of what
    //! each group was told: deliveries, acks and dead letters.

    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    const QUEUES: u32 = 2;
    const MAX_ATTEMPTS: u32 = 3;

    #[derive(Debug, Clone)]
    enum Op {
        Append {
            queue_id: u32,
            messages: Vec<SentMessage>,
        },
        /// Several appends coalesced into one entry.
        AppendBatch {
            appends: Vec<(u32, Vec<SentMessage>)>,
        },
        Pop {
            fifo_group: bool,
            max: u32,
        },
        Ack {
            fifo_group: bool,
            pick: usize,
        },
        Change {
            fifo_group: bool,
            pick: usize,
        },
        Advance {
            ms: u32,
        },
        Release,
    }

    /// A message as the model sends it: tag, message group, delay (ms).
    type SentMessage = (Option<u8>, Option<u8>, Option<u16>);

    fn messages() -> impl Strategy<Value = Vec<SentMessage>> {
        prop::collection::vec(
            (
                prop::option::of(0u8..3),
                prop::option::of(0u8..3),
                prop::option::weighted(0.2, 0u16..2000),
            ),
            1..4,
        )
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..QUEUES, messages()).prop_map(|(queue_id, messages)| Op::Append { queue_id, messages }),
            2 => prop::collection::vec((0..QUEUES, messages()), 1..4)
                .prop_map(|appends| Op::AppendBatch { appends }),
            4 => (any::<bool>(), 1u32..5).prop_map(|(fifo_group, max)| Op::Pop { fifo_group, max }),
            3 => (any::<bool>(), any::<usize>()).prop_map(|(fifo_group, pick)| Op::Ack { fifo_group, pick }),
            1 => (any::<bool>(), any::<usize>()).prop_map(|(fifo_group, pick)| Op::Change { fifo_group, pick }),
            2 => (0u32..40_000).prop_map(|ms| Op::Advance { ms }),
            1 => Just(Op::Release),
        ]
    }

    /// What one consumer group has been told.
    #[derive(Default)]
    struct GroupModel {
        /// record -> current delivery (ref) and deliveries so far.
        outstanding: BTreeMap<RecordRef, (DeliveryRef, u32)>,
        finished: BTreeSet<RecordRef>,
        delivered: BTreeSet<RecordRef>,
    }

    struct Model {
        /// record -> (tag, message group) as sent.
        sent: BTreeMap<RecordRef, (Option<u8>, Option<u8>)>,
        groups: [GroupModel; 2],
        dlq_seen: [u64; 2],
    }

    fn names(fifo_group: bool) -> (GroupName, usize) {
        if fifo_group {
            (group("ordered"), 1)
        } else {
            (group("tagged"), 0)
        }
    }

    /// The "tagged" group subscribes to tag 0 or 1; the "ordered" FIFO group to everything.
    fn filter(fifo_group: bool) -> TagSubscription {
        if fifo_group {
            TagSubscription::All
        } else {
            TagSubscription::Tags(vec!["t0".into(), "t1".into()])
        }
    }

    fn matches(fifo_group: bool, tag: Option<u8>) -> bool {
        fifo_group || matches!(tag, Some(0 | 1))
    }

    fn record_dead_letters(h: &Harness, model: &mut Model) -> Result<(), TestCaseError> {
        for (fifo_group, slot) in [(false, 0usize), (true, 1usize)] {
            let (g, _) = names(fifo_group);
            let Some(dlq) = h.state.queue(&g.dead_letter_topic(), 0) else {
                continue;
            };
            for offset in model.dlq_seen[slot]..dlq.max_offset() {
                let record = dlq
                    .get(offset)
                    .map(|e| e.record())
                    .ok_or_else(|| TestCaseError::fail("dlq hole"))?;
                let gm = &mut model.groups[slot];
                let (_, attempts) = gm
                    .outstanding
                    .remove(&record)
                    .ok_or_else(|| TestCaseError::fail("dlq of a message not in flight"))?;
                prop_assert_eq!(attempts, MAX_ATTEMPTS, "dead-lettered before max attempts");
                gm.finished.insert(record);
            }
            model.dlq_seen[slot] = dlq.max_offset();
        }
        Ok(())
    }

    fn check_pop(
        h: &Harness,
        model: &mut Model,
        fifo_group: bool,
        delivery_id: u64,
        got: &[PoppedMessage],
    ) -> Result<(), TestCaseError> {
        let (g, slot) = names(fifo_group);
        for m in got {
            let (tag, message_group) = *model
                .sent
                .get(&m.record)
                .ok_or_else(|| TestCaseError::fail("unknown record"))?;
            prop_assert!(matches(fifo_group, tag), "delivered a filtered-out message");
            let gm = &mut model.groups[slot];
            prop_assert!(
                !gm.finished.contains(&m.record),
                "acked or dead-lettered message delivered again"
            );
            let previous = gm.outstanding.get(&m.record).map(|(_, n)| *n).unwrap_or(0);
            prop_assert_eq!(m.attempt, previous + 1, "attempt numbers count deliveries");
            prop_assert!(m.attempt <= MAX_ATTEMPTS);
            if fifo_group && message_group.is_some() {
                // Nothing else of this message group on this queue may be unfinished, and
                // every earlier one must have been delivered.
                let index = h
                    .state
                    .queue(&topic("orders"), m.queue_id)
                    .ok_or_else(|| TestCaseError::fail("queue"))?;
                for earlier in index.min_offset()..m.offset {
                    let Some(e) = index.get(earlier) else {
                        continue;
                    };
                    if model.sent.get(&e.record()).map(|s| s.1) != Some(message_group) {
                        continue;
                    }
                    prop_assert!(
                        gm.delivered.contains(&e.record()),
                        "FIFO order broken: earlier message skipped"
                    );
                    prop_assert!(
                        !gm.outstanding.contains_key(&e.record()),
                        "FIFO: two messages of a group in flight"
                    );
                }
            }
            let d = DeliveryRef {
                group: g.clone(),
                topic: m.topic.clone(),
                queue_id: m.queue_id,
                offset: m.offset,
                delivery_id,
            };
            gm.outstanding.insert(m.record, (d, m.attempt));
            gm.delivered.insert(m.record);
        }
        Ok(())
    }

    fn pop_cmd(h: &Harness, fifo_group: bool, max: u32) -> StoreCommand {
        StoreCommand::Pop(PopCommand {
            group: names(fifo_group).0,
            topic: topic("orders"),
            queues: QueueChoice::All,
            max,
            invisible_ms: INVISIBLE,
            filter: filter(fifo_group),
            fifo: fifo_group,
            max_attempts: MAX_ATTEMPTS,
            now_ms: h.now_ms,
        })
    }

    fn records(h: &Harness, messages: &[SentMessage]) -> Vec<MessageRecord> {
        messages
            .iter()
            .map(|(tag, mg, delay)| MessageRecord {
                delivery_timestamp_ms: delay.map(|d| h.now_ms + i64::from(d)),
                ..message(
                    tag.map(|t| format!("t{t}")).as_deref(),
                    mg.map(|g| format!("g{g}")).as_deref(),
                )
            })
            .collect()
    }

    /// Records what an entry at `log_index` sent; its records take slots in order.
    fn sent(model: &mut Model, log_index: u64, messages: &[SentMessage]) {
        for (slot, (tag, mg, _)) in messages.iter().enumerate() {
            model.sent.insert(
                RecordRef {
                    log_index,
                    slot: slot as u32,
                },
                (*tag, *mg),
            );
        }
    }

    fn step(h: &mut Harness, model: &mut Model, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Append { queue_id, messages } => {
                h.append_to("orders", queue_id, records(h, &messages));
                sent(model, h.last_index, &messages);
            }
            Op::AppendBatch { appends } => {
                let command = StoreCommand::AppendBatch {
                    now_ms: h.now_ms,
                    appends: appends
                        .iter()
                        .map(|(queue_id, messages)| QueueAppend {
                            topic: topic("orders"),
                            queue_id: *queue_id,
                            messages: records(h, messages),
                        })
                        .collect(),
                };
                let CommandResponse::AppendedBatch(outcomes) = h.apply(command) else {
                    return Err(TestCaseError::fail("append batch answered something else"));
                };
                prop_assert_eq!(
                    outcomes.iter().map(Vec::len).collect::<Vec<_>>(),
                    appends.iter().map(|(_, m)| m.len()).collect::<Vec<_>>()
                );
                let all: Vec<SentMessage> = appends.into_iter().flat_map(|(_, m)| m).collect();
                sent(model, h.last_index, &all);
            }
            Op::Pop { fifo_group, max } => {
                let id = h.last_index + 1;
                let command = pop_cmd(h, fifo_group, max);
                let CommandResponse::Popped { messages, .. } = h.apply(command) else {
                    return Err(TestCaseError::fail("pop answered something else"));
                };
                record_dead_letters(h, model)?;
                check_pop(h, model, fifo_group, id, &messages)?;
            }
            Op::Ack { fifo_group, pick } | Op::Change { fifo_group, pick } => {
                let slot = names(fifo_group).1;
                let gm = &model.groups[slot];
                if gm.outstanding.is_empty() {
                    return Ok(());
                }
                let (record, (d, attempts)) = gm
                    .outstanding
                    .iter()
                    .nth(pick % gm.outstanding.len())
                    .map(|(r, v)| (*r, v.clone()))
                    .ok_or_else(|| TestCaseError::fail("pick"))?;
                if matches!(op, Op::Ack { .. }) {
                    prop_assert_eq!(
                        h.ack(d.clone()),
                        Ok(()),
                        "the current delivery must be ackable"
                    );
                    prop_assert!(h.ack(d).is_err(), "an ack is not accepted twice");
                    let gm = &mut model.groups[slot];
                    gm.outstanding.remove(&record);
                    gm.finished.insert(record);
                } else {
                    let id = h.last_index + 1;
                    let response = h.apply(StoreCommand::ChangeInvisible {
                        delivery: d.clone(),
                        invisible_ms: INVISIBLE,
                        now_ms: h.now_ms,
                    });
                    prop_assert!(matches!(
                        response,
                        CommandResponse::InvisibilityChanged(Ok(_))
                    ));
                    prop_assert!(h.ack(d.clone()).is_err(), "the old handle died");
                    let new = DeliveryRef {
                        delivery_id: id,
                        ..d
                    };
                    model.groups[slot]
                        .outstanding
                        .insert(record, (new, attempts));
                }
            }
            Op::Advance { ms } => h.advance(i64::from(ms)),
            Op::Release => {
                let due = h.state.due_timers(h.now_ms, 1000);
                let now_ms = h.now_ms;
                h.apply(StoreCommand::Release { due, now_ms });
            }
        }
        Ok(())
    }

    fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut h = Harness::new();
        let mut model = Model {
            sent: BTreeMap::new(),
            groups: Default::default(),
            dlq_seen: [0, 0],
        };
        for op in ops {
            step(&mut h, &mut model, op)?;
        }
        // Drain: let everything become visible, receive and ack it all, until quiet.
        let mut quiet_rounds = 0;
        for _ in 0..500 {
            let before: usize = model
                .groups
                .iter()
                .map(|g| g.delivered.len() + g.finished.len())
                .sum();
            for op in [
                Op::Advance { ms: 40_000 },
                Op::Release,
                Op::Pop {
                    fifo_group: false,
                    max: 32,
                },
                Op::Pop {
                    fifo_group: true,
                    max: 32,
                },
            ] {
                step(&mut h, &mut model, op)?;
            }
            for fifo_group in [false, true] {
                while !model.groups[names(fifo_group).1].outstanding.is_empty() {
                    step(
                        &mut h,
                        &mut model,
                        Op::Ack {
                            fifo_group,
                            pick: 0,
                        },
                    )?;
                }
            }
            let after: usize = model
                .groups
                .iter()
                .map(|g| g.delivered.len() + g.finished.len())
                .sum();
            quiet_rounds = if after == before { quiet_rounds + 1 } else { 0 };
            if quiet_rounds == 2 {
                break;
            }
        }
        // Drained: every message was delivered to each group it matches, and finished.
        prop_assert_eq!(h.state.next_due_ms(), None);
        for (fifo_group, slot) in [(false, 0usize), (true, 1usize)] {
            let gm = &model.groups[slot];
            for (record, (tag, _)) in &model.sent {
                if matches(fifo_group, *tag) {
                    prop_assert!(
                        gm.finished.contains(record),
                        "message {:?} lost for group {}",
                        record,
                        slot
                    );
                } else {
                    prop_assert!(!gm.delivered.contains(record));
                }
            }
            let (g, _) = names(fifo_group);
            for stats in h.state.queue_stats(&topic("orders"), Some(&g)) {
                for s in stats.groups {
                    prop_assert_eq!(s.backlog, 0);
                    prop_assert_eq!(s.inflight, 0);
                }
            }
        }
        let snapshot: ShardState = postcard::from_bytes(
            &postcard::to_stdvec(&h.state).map_err(|e| TestCaseError::fail(e.to_string()))?,
        )
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&snapshot, &h.state);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        #[test]
        fn random_sequences_keep_the_delivery_invariants(ops in prop::collection::vec(op(), 1..80)) {
            run(ops)?;
        }
    }
}

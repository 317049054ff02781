//! POP and ACK on one group: offset order, redelivery after the invisibility deadline with the
//! next attempt, changes of invisibility that replace the handle, dead letters (after max
//! attempts or on request), tag filters, all-queue rotation, and availability agreeing with
//! what a POP would do.

use super::*;

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
    let entry = h.state.entry_at(&dlq, 0, 0).expect("entry");
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
        .entry_at(&group("billing").dead_letter_topic(), 0, 0)
        .expect("dlq");
    assert_eq!(dlq.record(), got[1].record);
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
        sql: None,
        highest_first: false,
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

//! FIFO consumption: one message in flight per message group, in group order, without blocking
//! other groups; a dead-lettered head unblocks its group.

use super::*;

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
                fifo: true,
                sql: None,
                highest_first: false,
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
fn parking_behind_a_busy_group_is_bounded_from_apply_version_3() {
    let fifo = |p: &mut PopCommand| {
        p.fifo = true;
        p.max = 32;
    };
    let run = |version: u32| {
        let mut h = Harness::new();
        h.apply(StoreCommand::SetApplyVersion { version });
        // One message of group g goes in flight; everything after it in g must wait.
        h.append(vec![message(None, Some("g"))]);
        let id = h.last_index + 1;
        let head = h.pop_with(fifo);
        assert_eq!(head.len(), 1);
        let behind = (MAX_PARKED + 10) as usize;
        for _ in 0..behind / 1000 + 1 {
            h.append(vec![message(None, Some("g")); 1000]);
        }
        h.append(vec![message(None, Some("other"))]);
        let other_offset = h
            .state
            .queue(&topic("orders"), 0)
            .map(|q| q.max_offset() - 1)
            .expect("queue");
        let mut delivered = Vec::new();
        for _ in 0..8 {
            delivered.extend(h.pop_with(fifo).into_iter().map(|m| m.offset));
        }
        let consumer = h
            .state
            .consumer(&group("billing"), &topic("orders"), 0)
            .expect("consumer");
        (
            consumer.parked(),
            delivered.contains(&other_offset),
            h,
            id,
            head,
        )
    };

    // Version 2 parks everything (memory grows with the backlog of a busy group).
    let (parked, other_out, _, _, _) = run(2);
    assert!(parked > MAX_PARKED, "{parked}");
    assert!(other_out, "other groups are never blocked");

    // Version 3 stops at the bound: the cursor waits, memory stays bounded.
    let (parked, other_out, mut h, id, head) = run(3);
    assert_eq!(parked, MAX_PARKED);
    assert!(!other_out, "past the bound the cursor waits");
    // Finishing the head frees its group: parked messages go out in order and the cursor moves
    // on again.
    h.ack(delivery(&head[0], id)).expect("acks");
    let next = h.pop_with(fifo);
    assert_eq!(next.len(), 1, "one in flight per group");
    assert_eq!(next[0].offset, 1, "the first parked message, in order");
}

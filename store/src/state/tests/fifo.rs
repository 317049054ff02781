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

//! POP invisibility, through the SDK, with a clock the test moves forward:
//! - an unacked message comes back after its invisible duration with the attempt raised, and
//!   the first delivery's handle is dead;
//! - change-invisible returns a new handle that acks; the old one is rejected (40013);
//! - after max attempts a message moves to %DLQ%<group>, where it can be consumed;
//! - a consumer that shuts down gives back what it did not ack within about a second, not at
//!   the end of its invisible duration; one that vanishes (its Telemetry stream just ends) does
//!   after the proxy's grace.

use std::time::Duration;

use vela_sdk::Message;

use crate::harness::{Node, drain, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_redelivered_with_attempts_raised() {
    let node = Node::start().await;
    let topic = unique("inv");
    let producer = node.producer(&topic).await;
    let id = producer
        .send(Message::builder(&topic).body("x").build().unwrap())
        .await
        .unwrap()
        .message_id;
    let consumer = node.consumer(&unique("g"), &topic, "*").await;

    let first = consumer.receive(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].message_id, id);
    assert_eq!(first[0].delivery_attempt, 1);
    // Still invisible: nothing to receive.
    assert!(
        consumer
            .receive(1, Duration::from_secs(10))
            .await
            .unwrap()
            .is_empty()
    );

    node.clock.advance(Duration::from_secs(11));
    let second = consumer.receive(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].message_id, id);
    assert_eq!(second[0].delivery_attempt, 2);

    let stale = consumer.ack(&first[0]).await.unwrap_err();
    assert!(stale.is_invalid_receipt_handle(), "{stale}");
    consumer.ack(&second[0]).await.unwrap();
    node.clock.advance(Duration::from_secs(11));
    assert!(
        consumer
            .receive(1, Duration::from_secs(10))
            .await
            .unwrap()
            .is_empty()
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_invisible_then_ack() {
    let node = Node::start().await;
    let topic = unique("cid");
    let producer = node.producer(&topic).await;
    producer
        .send(Message::builder(&topic).body("y").build().unwrap())
        .await
        .unwrap();
    let consumer = node.consumer(&unique("g"), &topic, "*").await;

    let mut m = consumer
        .receive(1, Duration::from_secs(10))
        .await
        .unwrap()
        .remove(0);
    let before = m.clone();
    consumer
        .change_invisible_duration(&mut m, Duration::from_secs(30))
        .await
        .unwrap();
    assert_ne!(m.receipt_handle(), before.receipt_handle());

    // The original deadline passes, but the message stays invisible (it was extended).
    node.clock.advance(Duration::from_secs(15));
    assert!(
        consumer
            .receive(1, Duration::from_secs(10))
            .await
            .unwrap()
            .is_empty()
    );

    let old = consumer.ack(&before).await.unwrap_err();
    assert!(old.is_invalid_receipt_handle(), "{old}");
    consumer.ack(&m).await.unwrap();
    node.clock.advance(Duration::from_secs(60));
    assert!(
        consumer
            .receive(1, Duration::from_secs(10))
            .await
            .unwrap()
            .is_empty()
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_messages_move_to_the_dead_letter_queue() {
    let node = Node::start().await;
    let topic = unique("dlq");
    let group = unique("dlqg");
    node.admin(&["group", "create", &group, "--max-attempts", "2"])
        .await
        .unwrap();
    let producer = node.producer(&topic).await;
    let id = producer
        .send(Message::builder(&topic).body("poison").build().unwrap())
        .await
        .unwrap()
        .message_id;
    let consumer = node.consumer(&group, &topic, "*").await;

    for attempt in 1..=2 {
        let got = consumer.receive(1, Duration::from_secs(10)).await.unwrap();
        assert_eq!(got.len(), 1, "attempt {attempt}");
        assert_eq!(got[0].delivery_attempt, attempt);
        node.clock.advance(Duration::from_secs(11));
    }
    assert!(
        consumer
            .receive(1, Duration::from_secs(10))
            .await
            .unwrap()
            .is_empty()
    );

    let dlq_topic = format!("%DLQ%{group}");
    let dlq = node.consumer(&unique("dlq-reader"), &dlq_topic, "*").await;
    let got = drain(&dlq, 1, true, 3).await;
    let m = got.get(&id).expect("dead letter delivered");
    assert_eq!(&m.body[..], b"poison");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departing_consumer_gives_its_messages_back_within_seconds() {
    let node = Node::start().await;
    let topic = unique("leave");
    let group = unique("leave-g");
    let producer = node.producer(&topic).await;
    let leaving = node.consumer(&group, &topic, "*").await;
    let staying = node.consumer(&group, &topic, "*").await;
    assert!(
        drain(&leaving, 1, false, 1).await.is_empty(),
        "primes the group"
    );
    for body in ["a", "b", "c"] {
        producer
            .send(Message::builder(&topic).body(body).build().unwrap())
            .await
            .unwrap();
    }
    // Held for an hour by the consumer that leaves; one of them acked first.
    let mut held = Vec::new();
    while held.len() < 3 {
        held.extend(leaving.receive(3, Duration::from_secs(3600)).await.unwrap());
    }
    leaving.ack(&held[0]).await.unwrap();
    leaving.shutdown().await.unwrap();

    // Back within seconds on the real clock (nobody moves the test clock here).
    let started = std::time::Instant::now();
    let back = drain(&staying, 2, true, 10).await;
    let mut ids: Vec<&String> = back.keys().collect();
    ids.sort();
    let mut want = vec![&held[1].message_id, &held[2].message_id];
    want.sort();
    assert_eq!(ids, want, "the two unacked messages, and not the acked one");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "given back in {:?}, not after the hour",
        started.elapsed()
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_consumer_gives_its_messages_back_after_the_grace() {
    let node = Node::start_with(|c| c.proxy.client_release_grace = Duration::from_secs(1)).await;
    let topic = unique("vanish");
    let group = unique("vanish-g");
    let producer = node.producer(&topic).await;
    let vanishing = node.consumer(&group, &topic, "*").await;
    let staying = node.consumer(&group, &topic, "*").await;
    assert!(
        drain(&vanishing, 1, false, 1).await.is_empty(),
        "primes the group"
    );
    for body in ["a", "b"] {
        producer
            .send(Message::builder(&topic).body(body).build().unwrap())
            .await
            .unwrap();
    }
    let mut held = Vec::new();
    while held.len() < 2 {
        held.extend(
            vanishing
                .receive(2, Duration::from_secs(3600))
                .await
                .unwrap(),
        );
    }
    // Gone without a word, as a crashed process: its Telemetry stream just ends.
    drop(vanishing);

    let back = drain(&staying, 2, true, 10).await;
    let mut ids: Vec<&String> = back.keys().collect();
    ids.sort();
    let mut want = vec![&held[0].message_id, &held[1].message_id];
    want.sort();
    assert_eq!(ids, want, "given back after the grace, not after the hour");
    node.stop().await;
}

//! Restart with the same data dir keeps every acknowledged message and every ack:
//! - acked messages never come back; never-delivered ones are delivered after the restart;
//! - in-flight ones come back once their invisibility ends, with the attempt raised;
//! - offsets continue where they were; topics and groups survive.

use std::collections::HashSet;
use std::time::Duration;

use vela_sdk::Message;

use crate::harness::{Node, drain, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_messages_acks_and_offsets() {
    let mut node = Node::start().await;
    let topic = unique("durable");
    let group = unique("durable-g");
    node.admin(&["topic", "create", &topic, "--queues", "1"])
        .await
        .unwrap();
    node.admin(&["group", "create", &group]).await.unwrap();
    let producer = node.producer(&topic).await;
    let mut sent = Vec::new();
    for i in 0..100 {
        let r = producer
            .send(
                Message::builder(&topic)
                    .body(format!("m{i}"))
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.offset, i64::from(i));
        sent.push(r.message_id);
    }
    producer.shutdown().await.unwrap();

    let consumer = node.consumer(&group, &topic, "*").await;
    let mut acked = HashSet::new();
    let mut in_flight = HashSet::new();
    while acked.len() + in_flight.len() < 60 {
        for m in consumer.receive(10, Duration::from_secs(60)).await.unwrap() {
            if acked.len() < 40 {
                consumer.ack(&m).await.unwrap();
                acked.insert(m.message_id.clone());
            } else {
                in_flight.insert(m.message_id.clone());
            }
        }
    }
    consumer.shutdown().await.unwrap();

    node.restart().await;

    let out = node.admin(&["topic", "list"]).await.unwrap();
    assert!(out.contains(&topic), "{out}");
    let consumer = node.consumer(&group, &topic, "*").await;
    let expected_fresh: HashSet<_> = sent
        .iter()
        .filter(|id| !acked.contains(*id) && !in_flight.contains(*id))
        .cloned()
        .collect();
    let fresh = drain(&consumer, expected_fresh.len(), true, 3).await;
    assert_eq!(
        fresh.keys().cloned().collect::<HashSet<_>>(),
        expected_fresh
    );
    assert!(fresh.values().all(|m| m.delivery_attempt == 1));

    node.clock.advance(Duration::from_secs(61));
    let back = drain(&consumer, in_flight.len(), true, 3).await;
    assert_eq!(back.keys().cloned().collect::<HashSet<_>>(), in_flight);
    assert!(back.values().all(|m| m.delivery_attempt == 2));
    assert!(
        consumer
            .receive(32, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );

    let producer = node.producer(&topic).await;
    let r = producer
        .send(Message::builder(&topic).body("after").build().unwrap())
        .await
        .unwrap();
    assert_eq!(r.offset, 100, "offsets continue after restart");
    let out = node
        .admin(&["queues", &topic, "--group", &group])
        .await
        .unwrap();
    assert!(out.contains(&group), "{out}");
    producer.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
    node.stop().await;
}

//! Produce and consume through `vela-sdk` against an in-process standalone node:
//! - single, batch and async sends are all delivered once, with body, tag, keys, properties;
//! - a tag filter only sees matching messages; separate groups each get every message;
//! - after everything is acked a receive comes back empty.

use std::collections::HashSet;

use vela_sdk::Message;

use crate::harness::{Node, drain, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_batch_and_async_sends_are_delivered_once() {
    let node = Node::start().await;
    let topic = unique("orders");
    let producer = node.producer(&topic).await;

    let mut sent = HashSet::new();
    for i in 0..50 {
        let tag = if i % 2 == 0 { "A" } else { "B" };
        let m = Message::builder(&topic)
            .body(format!("single-{i}"))
            .tag(tag)
            .keys([format!("k{i}")])
            .property("seq", i.to_string())
            .build()
            .unwrap();
        let r = producer.send(m).await.unwrap();
        assert!(r.offset >= 0);
        sent.insert(r.message_id);
    }
    let batch: Vec<Message> = (0..20)
        .map(|i| {
            Message::builder(&topic)
                .body(format!("batch-{i}"))
                .tag("A")
                .build()
                .unwrap()
        })
        .collect();
    let receipts = producer.send_batch(batch).await.unwrap();
    assert_eq!(receipts.len(), 20);
    sent.extend(receipts.into_iter().map(|r| r.message_id));
    let pending: Vec<_> = (0..20)
        .map(|i| {
            producer.send_async(
                Message::builder(&topic)
                    .body(format!("async-{i}"))
                    .tag("B")
                    .build()
                    .unwrap(),
            )
        })
        .collect();
    for p in pending {
        sent.insert(p.await.unwrap().message_id);
    }
    assert_eq!(sent.len(), 90, "message ids are unique");

    let all = node.consumer(&unique("all"), &topic, "*").await;
    let got = drain(&all, 90, true, 3).await;
    assert_eq!(got.keys().cloned().collect::<HashSet<_>>(), sent);
    for m in got.values() {
        assert_eq!(m.delivery_attempt, 1);
        assert_eq!(m.topic, topic);
        let body = String::from_utf8(m.body.to_vec()).unwrap();
        if let Some(i) = body.strip_prefix("single-") {
            assert_eq!(m.keys, vec![format!("k{i}")]);
            assert_eq!(m.properties.get("seq").map(String::as_str), Some(i));
            let want = if i.parse::<u32>().unwrap() % 2 == 0 {
                "A"
            } else {
                "B"
            };
            assert_eq!(m.tag.as_deref(), Some(want));
        }
    }
    let again = all
        .receive(32, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert!(again.is_empty(), "acked messages came back: {again:?}");

    // A second group sees everything again, filtered to tag A: 25 singles + 20 batch.
    let only_a = node.consumer(&unique("only-a"), &topic, "A").await;
    let got_a = drain(&only_a, 45, true, 3).await;
    assert_eq!(got_a.len(), 45);
    assert!(got_a.values().all(|m| m.tag.as_deref() == Some("A")));

    all.shutdown().await.unwrap();
    only_a.shutdown().await.unwrap();
    producer.shutdown().await.unwrap();
    node.stop().await;
}

/// `SimpleConsumer::ack_many`: one request acknowledges many messages, each with its own
/// result (a stale handle fails alone), and none of the acknowledged ones comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_messages_are_acknowledged_in_one_request_each_with_its_result() {
    use std::time::Duration;
    let node = Node::start().await;
    let topic = unique("ack-many");
    let group = unique("g");
    node.admin(&["topic", "create", &topic, "--queues", "2"])
        .await
        .unwrap();
    node.admin(&["group", "create", &group, "--from", "earliest"])
        .await
        .unwrap();
    let producer = node.producer(&topic).await;
    for i in 0..6 {
        producer
            .send(
                Message::builder(&topic)
                    .body(format!("m{i}"))
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
    }
    let consumer = node.consumer(&group, &topic, "*").await;
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.len() < 6 {
        assert!(
            std::time::Instant::now() < deadline,
            "received {}",
            got.len()
        );
        got.extend(consumer.receive(32, Duration::from_secs(30)).await.unwrap());
    }
    // One handle goes stale: its invisibility changed, so the old handle no longer acks.
    let stale = got[2].clone();
    consumer
        .change_invisible_duration(&mut got[2], Duration::from_secs(30))
        .await
        .unwrap();
    let mut batch = got.clone();
    batch[2] = stale;
    let results = consumer.ack_many(&batch).await;
    assert_eq!(results.len(), 6);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.is_ok(), i != 2, "message {i}: {r:?}");
    }
    // The others are acknowledged: only the renewed one is still in flight.
    let queues: serde_json::Value = serde_json::from_str(
        &node
            .admin(&["queues", &topic, "--group", &group, "--output", "json"])
            .await
            .unwrap(),
    )
    .unwrap();
    let inflight: u64 = queues
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|q| q["groups"].as_array().cloned().unwrap_or_default())
        .map(|g| g["inflight"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(inflight, 1, "{queues}");
    assert!(consumer.ack_many(&[]).await.is_empty());
    consumer.ack(&got[2]).await.unwrap();
    node.stop().await;
}

/// A producer restarted under the same instance name that sends a message again with the same
/// id (as a route with `--keep-message-id` does after a restart) has it stored once; another
/// producer's message of that id is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_producer_restarted_resends_once() {
    let node = Node::start().await;
    let topic = unique("resend");
    let named = |name: &str| {
        vela_sdk::Producer::builder(node.client_config())
            .topics([topic.clone()])
            .instance_name(name)
            .build()
    };
    let message = || {
        Message::builder(&topic)
            .message_id("01000000000000000000000000000000BB")
            .body("once")
            .build()
            .unwrap()
    };
    let first = named("copier-1").await.unwrap();
    let sent = first.send(message()).await.unwrap();
    first.shutdown().await.unwrap();
    let again = named("copier-1").await.unwrap();
    assert_eq!(again.client_id(), "copier-1");
    assert_eq!(
        again.send(message()).await.unwrap(),
        sent,
        "answered as the first"
    );
    named("copier-2")
        .await
        .unwrap()
        .send(message())
        .await
        .unwrap();
    let consumer = node.consumer(&unique("g"), &topic, "*").await;
    let mut delivered = 0;
    for _ in 0..3 {
        for m in consumer
            .receive(32, std::time::Duration::from_secs(60))
            .await
            .unwrap()
        {
            consumer.ack(&m).await.unwrap();
            delivered += 1;
        }
    }
    assert_eq!(delivered, 2, "copier-1's message once, copier-2's once");
    let bad = vela_sdk::Producer::builder(node.client_config())
        .instance_name("no spaces")
        .build()
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("instance name"), "{bad}");
}

//! Priority messages (RocketMQ 5.4's PRIORITY): on a topic of type priority a message goes
//! to the queue its priority names (clamped to the last), and receives read the highest
//! queue first, so a backlog of low-priority messages enqueued first waits for the urgent
//! ones. Within one priority, messages keep their order.

use std::time::Duration;

use vela_sdk::{Message, MessageKind, SendReceipt};

use crate::harness::{Node, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priorities_are_received_first() {
    let node = Node::start().await;
    let topic = unique("prio");
    let group = unique("g");
    node.admin(&[
        "topic", "create", &topic, "--type", "priority", "--queues", "4",
    ])
    .await
    .unwrap();
    node.admin(&["group", "create", &group]).await.unwrap();
    let consumer = node.consumer(&group, &topic, "*").await;
    let producer = node.producer(&topic).await;
    let send = |body: String, priority: u32| {
        let producer = &producer;
        let topic = &topic;
        async move {
            let m = Message::builder(topic)
                .body(body)
                .priority(priority)
                .build()
                .unwrap();
            assert_eq!(m.kind(), MessageKind::Priority);
            producer.send(m).await.unwrap()
        }
    };
    let mut low: Vec<SendReceipt> = Vec::new();
    for i in 0..8 {
        low.push(send(format!("low-{i}"), 0).await);
    }
    send("mid".into(), 1).await;
    for i in 0..2 {
        send(format!("high-{i}"), 3).await;
    }
    // Past the last queue: clamped to it, after the two already there.
    send("top".into(), 9).await;

    let mut order = Vec::new();
    let mut priorities = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while order.len() < 12 {
        assert!(std::time::Instant::now() < deadline, "received {order:?}");
        // Small batches: each receive takes the highest priorities still waiting.
        for m in consumer.receive(2, Duration::from_secs(30)).await.unwrap() {
            order.push(String::from_utf8_lossy(&m.body).into_owned());
            priorities.push(m.priority);
            consumer.ack(&m).await.unwrap();
        }
    }
    let mut expected: Vec<String> = vec!["high-0".into(), "high-1".into(), "top".into()];
    expected.push("mid".into());
    expected.extend((0..8).map(|i| format!("low-{i}")));
    assert_eq!(order, expected);
    assert_eq!(priorities[2], Some(9), "the priority sent, not its queue");
    assert_eq!(priorities[3], Some(1));
    assert_eq!(low[0].offset, 0);

    // A priority topic takes only priority messages.
    let plain = producer
        .send(Message::builder(&topic).body("plain").build().unwrap())
        .await
        .unwrap_err();
    assert!(
        plain.to_string().contains("PRIORITY") || plain.to_string().contains("Normal"),
        "{plain}"
    );
    node.stop().await;
}

//! Delay messages: invisible until their delivery timestamp, then delivered promptly (the
//! observed lateness is printed; the bound asserted is only a generous liveness bound).

use std::time::{Duration, SystemTime};

use vela_sdk::Message;

use crate::harness::{Node, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_messages_become_visible_at_their_timestamp() {
    let node = Node::start().await;
    let topic = unique("delay");
    let producer = node.producer(&topic).await;
    let consumer = node.consumer(&unique("g"), &topic, "*").await;

    let due = SystemTime::now() + Duration::from_millis(2500);
    producer
        .send(
            Message::builder(&topic)
                .body("later")
                .delivery_timestamp(due)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    producer
        .send(Message::builder(&topic).body("now").build().unwrap())
        .await
        .unwrap();

    let first = consumer.receive(32, Duration::from_secs(30)).await.unwrap();
    let bodies: Vec<_> = first.iter().map(|m| m.body.to_vec()).collect();
    assert_eq!(
        bodies,
        vec![b"now".to_vec()],
        "the delayed message came early"
    );
    for m in &first {
        consumer.ack(m).await.unwrap();
    }

    let mut arrived = None;
    let give_up = SystemTime::now() + Duration::from_secs(15);
    while arrived.is_none() && SystemTime::now() < give_up {
        let got = consumer.receive(32, Duration::from_secs(30)).await.unwrap();
        if let Some(m) = got.into_iter().next() {
            arrived = Some((SystemTime::now(), m));
        }
    }
    let (at, m) = arrived.expect("delayed message never arrived");
    assert_eq!(&m.body[..], b"later");
    // Timestamps travel with millisecond precision.
    let due_ms = due
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let at_ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert!(at_ms >= due_ms, "delivered {} ms early", due_ms - at_ms);
    println!("delay lateness: {} ms", at_ms - due_ms);
    assert!(m.delivery_timestamp.is_some());
    consumer.ack(&m).await.unwrap();
    node.stop().await;
}

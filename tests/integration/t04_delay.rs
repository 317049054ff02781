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

/// RecallMessage: a delay message recalled before its time is never delivered, even after a
/// restart replays the log; recalling it again, or recalling one already delivered, is
/// NOT_FOUND (40400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recalled_delay_message_is_never_delivered() {
    let mut node = Node::start().await;
    let topic = unique("recall");
    let producer = node.producer(&topic).await;
    let group = unique("g");
    let due = SystemTime::now() + Duration::from_secs(3);
    let delayed = |body: &str| {
        Message::builder(&topic)
            .body(body.to_owned())
            .delivery_timestamp(due)
            .build()
            .unwrap()
    };
    let keep = producer.send(delayed("keep")).await.unwrap();
    let drop = producer.send(delayed("recalled")).await.unwrap();
    let handle = drop.recall_handle.clone().expect("a recall handle");
    assert!(keep.recall_handle.is_some());
    let plain = producer
        .send(Message::builder(&topic).body("now").build().unwrap())
        .await
        .unwrap();
    assert_eq!(plain.recall_handle, None, "nothing to recall");

    assert_eq!(
        producer.recall(&topic, &handle).await.unwrap(),
        drop.message_id
    );
    let again = producer.recall(&topic, &handle).await.unwrap_err();
    assert_eq!(
        again.code(),
        Some(vela_sdk::StatusCode::NotFound),
        "{again}"
    );
    producer.shutdown().await.unwrap();

    // The recall is in the log: a restart that replays it keeps the message withdrawn.
    node.restart().await;
    let consumer = node.consumer(&group, &topic, "*").await;
    let mut bodies = Vec::new();
    let give_up = SystemTime::now() + Duration::from_secs(20);
    // Past the due time by a margin, so a message that was not withdrawn would have come.
    while SystemTime::now() < give_up
        && (bodies.len() < 2 || SystemTime::now() < due + Duration::from_secs(2))
    {
        for m in consumer.receive(32, Duration::from_secs(30)).await.unwrap() {
            bodies.push(String::from_utf8_lossy(&m.body).into_owned());
            consumer.ack(&m).await.unwrap();
        }
    }
    bodies.sort();
    assert_eq!(
        bodies,
        vec!["keep", "now"],
        "the recalled message never came"
    );

    let producer = node.producer(&topic).await;
    let late = producer
        .recall(&topic, keep.recall_handle.as_deref().unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        late.code(),
        Some(vela_sdk::StatusCode::NotFound),
        "delivered already: {late}"
    );
    node.stop().await;
}

/// A send the client retries (the same message id, from the same client id, as after a lost
/// answer) is stored once and answered as the first was: with the same recall handle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_delay_message_gets_the_same_recall_handle() {
    use vela_proto::pb::rocketmq as pb;
    let node = Node::start().await;
    let topic = unique("recall-resend");
    node.admin(&["topic", "create", &topic, "--type", "delay"])
        .await
        .unwrap();
    let mut client = crate::harness::raw_client(&node).await;
    let due = SystemTime::now() + Duration::from_secs(600);
    let due = due.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let message = pb::Message {
        topic: crate::harness::resource(&topic),
        user_properties: Default::default(),
        system_properties: Some(pb::SystemProperties {
            message_id: "01000000000000000000000000000000AA".into(),
            body_encoding: pb::Encoding::Identity as i32,
            message_type: pb::MessageType::Delay as i32,
            delivery_timestamp: Some(prost_types::Timestamp {
                seconds: i64::try_from(due.as_secs()).unwrap(),
                nanos: 0,
            }),
            ..Default::default()
        }),
        body: b"later".to_vec().into(),
    };
    let mut handles = Vec::new();
    for _ in 0..2 {
        let sent = client
            .send_message(crate::harness::raw_req(pb::SendMessageRequest {
                messages: vec![message.clone()],
            }))
            .await
            .unwrap()
            .into_inner();
        let entry = &sent.entries[0];
        assert_eq!(
            entry.status.as_ref().map(|s| s.code),
            Some(pb::Code::Ok as i32)
        );
        handles.push(entry.recall_handle.clone());
    }
    assert!(!handles[0].is_empty(), "the first send has a handle");
    assert_eq!(handles[0], handles[1], "the resend has the same one");
    let recalled = client
        .recall_message(crate::harness::raw_req(pb::RecallMessageRequest {
            topic: crate::harness::resource(&topic),
            recall_handle: handles[1].clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(recalled.status.map(|s| s.code), Some(pb::Code::Ok as i32));
    node.stop().await;
}

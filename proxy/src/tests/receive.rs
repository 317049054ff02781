//! ReceiveMessage, AckMessage and ChangeInvisibleDuration: the exact order of the receive
//! stream, long polling, and handles that a change of invisibility replaces.

use super::*;

#[tokio::test]
async fn send_receive_ack_in_the_exact_stream_order() {
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Normal, 2).await;
    h.group("billing").await;
    let mut client = h.client().await;

    let sent = send_one(&mut client, message("orders", "MSG-1", b"hello")).await;
    assert_eq!(code(&sent.status), Code::Ok as i32);
    assert_eq!(sent.entries.len(), 1);
    assert_eq!(sent.entries[0].message_id, "MSG-1");
    assert_eq!(code(&sent.entries[0].status), Code::Ok as i32);

    let items = receive_all(&mut client, req(receive_request("orders", "billing", 15))).await;
    assert_eq!(items.len(), 3, "status, one message, timestamp: {items:?}");
    assert!(matches!(&items[0], Content::Status(s) if s.code == Code::Ok as i32));
    let Content::Message(m) = &items[1] else {
        panic!("second item is the message")
    };
    assert!(matches!(&items[2], Content::DeliveryTimestamp(_)));
    assert_eq!(m.topic, resource("orders"));
    assert_eq!(m.body, Bytes::from_static(b"hello"));
    let props = m.system_properties.as_ref().expect("system properties");
    assert_eq!(props.message_id, "MSG-1");
    assert_eq!(props.body_encoding, pb::Encoding::Identity as i32);
    assert_eq!(
        props.body_digest.as_ref().map(|d| d.checksum.as_str()),
        Some("5D41402ABC4B2A76B9719D911017C592")
    );
    assert_eq!(props.delivery_attempt, Some(1));
    assert_eq!(props.tag.as_deref(), Some("TagA"));

    let handle = handle_of(&items[1]);
    let ack = |handle: String| pb::AckMessageRequest {
        group: resource("billing"),
        topic: resource("orders"),
        entries: vec![pb::AckMessageEntry {
            message_id: "MSG-1".into(),
            receipt_handle: handle,
            lite_topic: None,
        }],
    };
    let acked = client
        .ack_message(req(ack(handle.clone())))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&acked.status), Code::Ok as i32);
    assert_eq!(acked.entries.len(), 1);

    let again = client
        .ack_message(req(ack(handle)))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(
        code(&again.status),
        Code::InvalidReceiptHandle as i32,
        "a used handle is stale"
    );
    assert_eq!(
        code(&again.entries[0].status),
        Code::InvalidReceiptHandle as i32
    );

    // Nothing left: MESSAGE_NOT_FOUND, then the timestamp, then the end.
    let empty = receive_all(&mut client, req(receive_request("orders", "billing", 15))).await;
    assert_eq!(empty.len(), 2, "{empty:?}");
    assert!(matches!(&empty[0], Content::Status(s) if s.code == Code::MessageNotFound as i32));
    assert!(matches!(&empty[1], Content::DeliveryTimestamp(_)));
}

/// A proxy that long-polls up to 5 s, with topic `orders` (one queue) and group `billing`.
async fn long_polling_harness() -> Harness {
    let h = Harness::start(ProxyConfig {
        max_long_polling: Duration::from_secs(5),
        ..test_config()
    })
    .await;
    h.topic("orders", TopicType::Normal, 1).await;
    h.group("billing").await;
    h
}

#[tokio::test]
async fn long_polling_returns_a_message_sent_while_waiting() {
    let h = long_polling_harness().await;
    let mut consumer = h.client().await;
    let mut producer = h.client().await;
    let waiting = tokio::spawn(async move {
        receive_all(&mut consumer, req(receive_request("orders", "billing", 15))).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = send_one(&mut producer, message("orders", "LATE", b"late")).await;
    assert_eq!(code(&sent.status), Code::Ok as i32);
    let items = tokio::time::timeout(Duration::from_secs(4), waiting)
        .await
        .expect("poll ends early")
        .expect("task");
    assert_eq!(items.len(), 3, "{items:?}");
}

#[tokio::test]
async fn change_invisible_duration_replaces_the_handle() {
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Normal, 1).await;
    h.group("billing").await;
    let mut client = h.client().await;
    send_one(&mut client, message("orders", "M", b"x")).await;
    let items = receive_all(&mut client, req(receive_request("orders", "billing", 15))).await;
    let old = handle_of(&items[1]);

    let change = |handle: String, secs: i64| pb::ChangeInvisibleDurationRequest {
        group: resource("billing"),
        topic: resource("orders"),
        receipt_handle: handle,
        invisible_duration: Some(prost_types::Duration {
            seconds: secs,
            nanos: 0,
        }),
        message_id: "M".into(),
        lite_topic: None,
        suspend: None,
    };
    let too_long = client
        .change_invisible_duration(req(change(old.clone(), 13 * 3600)))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&too_long.status), Code::IllegalInvisibleTime as i32);
    assert_eq!(
        too_long.receipt_handle, old,
        "a failed change hands the old handle back"
    );

    let changed = client
        .change_invisible_duration(req(change(old.clone(), 1)))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&changed.status), Code::Ok as i32);
    assert!(!changed.receipt_handle.is_empty() && changed.receipt_handle != old);

    let ack = |handle: String| pb::AckMessageRequest {
        group: resource("billing"),
        topic: resource("orders"),
        entries: vec![pb::AckMessageEntry {
            message_id: "M".into(),
            receipt_handle: handle,
            lite_topic: None,
        }],
    };
    let stale = client
        .ack_message(req(ack(old)))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&stale.status), Code::InvalidReceiptHandle as i32);
    let wrong_group = client
        .ack_message(req(pb::AckMessageRequest {
            group: resource("other"),
            ..ack(changed.receipt_handle.clone())
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&wrong_group.status), Code::InvalidReceiptHandle as i32);
    let fresh = client
        .ack_message(req(ack(changed.receipt_handle)))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&fresh.status), Code::Ok as i32);
}

/// Draining a proxy for maintenance: once shutdown starts, a long poll already waiting is
/// answered normally at the end of its wait (not cut off), the server then stops, and new
/// connections are refused, so clients move to another proxy.
#[tokio::test]
async fn a_draining_proxy_answers_the_long_polls_in_flight_then_stops() {
    let h = long_polling_harness().await;
    let mut consumer = h.client().await;
    let mut request = receive_request("orders", "billing", 15);
    request.long_polling_timeout = Some(prost_types::Duration {
        seconds: 2,
        nanos: 0,
    });
    let waiting = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let items = receive_all(&mut consumer, req(request)).await;
        (items, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.shutdown.cancel();
    let (items, waited) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the long poll ends")
        .expect("the long poll ends with a reply, not a broken stream");
    assert!(
        matches!(items.first(), Some(Content::Status(s)) if s.code == Code::MessageNotFound as i32),
        "{items:?}"
    );
    assert!(
        waited >= Duration::from_millis(1500),
        "the long poll was cut short after {waited:?}"
    );
    let stopped = tokio::time::timeout(Duration::from_secs(10), h.server)
        .await
        .expect("server stops");
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
    let refused = MessagingServiceClient::connect(format!("http://{}", h.addr)).await;
    assert!(
        refused.is_err(),
        "a stopped proxy still accepts connections"
    );
}

/// A receive names the shards of the topic's queues; a dead-letter topic's receive names every
/// shard any topic has queues on (a message is dead-lettered on the shard that held it).
#[tokio::test]
async fn receives_name_the_topics_shards_and_dead_letters_every_shard() {
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Normal, 1).await;
    h.topic("wide", TopicType::Normal, 2).await;
    h.group("billing").await;
    let mut client = h.client().await;
    receive_all(&mut client, req(receive_request("orders", "billing", 15))).await;
    assert_eq!(*h.store.last_pop_shards.lock(), Some(vec![0]));
    receive_all(
        &mut client,
        req(receive_request("%DLQ%billing", "billing", 15)),
    )
    .await;
    assert_eq!(*h.store.last_pop_shards.lock(), Some(vec![0, 1]));
}

#[tokio::test]
async fn a_departing_client_gives_back_what_it_did_not_settle() {
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Normal, 1).await;
    h.group("billing").await;
    let mut client = h.client().await;
    for id in ["A", "B", "C"] {
        send_one(&mut client, message("orders", id, b"x")).await;
    }
    let items = receive_all(&mut client, req(receive_request("orders", "billing", 60))).await;
    let handles = message_handles(&items);
    assert_eq!(handles.len(), 3);
    // One acked, one renewed (its new handle is what gets released), one left as delivered.
    let ack = ack_one(&mut client, "A", &handles[0]).await;
    assert_eq!(code(&ack.status), Code::Ok as i32);
    let renewed = client
        .change_invisible_duration(req(pb::ChangeInvisibleDurationRequest {
            group: resource("billing"),
            topic: resource("orders"),
            receipt_handle: handles[1].clone(),
            invisible_duration: Some(prost_types::Duration {
                seconds: 120,
                nanos: 0,
            }),
            message_id: "B".into(),
            ..Default::default()
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&renewed.status), Code::Ok as i32);
    h.store.invisibility_changes.lock().clear();

    // Another client of the group leaving gives back nothing of this one's.
    let mut other = Request::new(pb::NotifyClientTerminationRequest {
        group: resource("billing"),
    });
    other
        .metadata_mut()
        .insert("x-mq-client-id", "other@1@0@x".parse().expect("ascii"));
    let bye = client
        .notify_client_termination(other)
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&bye.status), Code::Ok as i32);
    assert!(h.store.invisibility_changes.lock().is_empty());

    let bye = client
        .notify_client_termination(req(pb::NotifyClientTerminationRequest {
            group: resource("billing"),
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&bye.status), Code::Ok as i32);
    let mut released = h.store.invisibility_changes.lock().clone();
    released.sort_unstable();
    assert_eq!(
        released,
        vec![(1, Duration::from_secs(1)), (2, Duration::from_secs(1))],
        "the renewed and the untouched delivery come back in a second; the acked one does not"
    );
}

#[tokio::test]
async fn a_client_whose_streams_all_end_gives_back_what_it_holds_after_a_grace() {
    let h = Harness::start(ProxyConfig {
        client_release_grace: Duration::from_millis(300),
        ..test_config()
    })
    .await;
    h.topic("orders", TopicType::Normal, 1).await;
    h.group("billing").await;
    let mut client = h.client().await;
    // The client's Telemetry stream (same client id as its receive).
    let (stream_tx, stream_rx) = tokio::sync::mpsc::channel::<pb::TelemetryCommand>(4);
    let mut replies = client
        .telemetry(req(tokio_stream::wrappers::ReceiverStream::new(stream_rx)))
        .await
        .expect("call")
        .into_inner();
    send_one(&mut client, message("orders", "A", b"x")).await;
    let items = receive_all(&mut client, req(receive_request("orders", "billing", 60))).await;
    assert_eq!(message_handles(&items).len(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        h.store.invisibility_changes.lock().is_empty(),
        "held while its stream is open"
    );

    // The client vanishes: its stream ends, and none reopens within the grace.
    drop(stream_tx);
    while replies.message().await.ok().flatten().is_some() {}
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.store.invisibility_changes.lock().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "never given back after the client went away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        h.store.invisibility_changes.lock().clone(),
        vec![(0, Duration::from_secs(1))]
    );
}

//! Bad input across the RPCs: protocol codes for each mistake with the server still serving,
//! requests without a client id, and codes the Rust 5.0.0 client cannot decode never sent to it.

use std::sync::atomic::Ordering;

use super::*;

#[tokio::test]
async fn bad_input_gets_protocol_codes_and_the_server_keeps_serving() {
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Normal, 1).await;
    h.group("billing").await;
    let mut client = h.client().await;

    // Body over max_body_size (64 bytes here).
    let big = send_one(&mut client, message("orders", "BIG", &[b'x'; 65])).await;
    assert_eq!(code(&big.status), Code::MessageBodyTooLarge as i32);
    assert_eq!(big.entries.len(), 1);
    assert_eq!(big.entries[0].message_id, "BIG");

    // Unknown topic.
    let unknown = send_one(&mut client, message("nope", "N", b"x")).await;
    assert_eq!(code(&unknown.status), Code::TopicNotFound as i32);

    // Wrong type for the topic.
    let mut fifo = message("orders", "F", b"x");
    if let Some(p) = fifo.system_properties.as_mut() {
        p.message_type = MessageType::Fifo as i32;
        p.message_group = Some("g".into());
    }
    let conflict = send_one(&mut client, fifo).await;
    assert_eq!(
        code(&conflict.status),
        Code::MessagePropertyConflictWithType as i32
    );

    // Forged handle on ack.
    let forged = client
        .ack_message(req(pb::AckMessageRequest {
            group: resource("billing"),
            topic: resource("orders"),
            entries: vec![pb::AckMessageEntry {
                message_id: "M".into(),
                receipt_handle: "forged!!".into(),
                lite_topic: None,
            }],
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&forged.status), Code::InvalidReceiptHandle as i32);
    assert_eq!(forged.entries.len(), 1);

    // Ack with no entries still answers one entry (Rust indexes entries[0]).
    let empty = client
        .ack_message(rust_req(pb::AckMessageRequest {
            group: resource("billing"),
            topic: resource("orders"),
            entries: vec![],
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&empty.status), Code::BadRequest as i32);
    assert_eq!(empty.entries.len(), 1);

    // Invisible duration under 10 s.
    let items = receive_all(&mut client, req(receive_request("orders", "billing", 5))).await;
    assert!(
        matches!(&items[0], Content::Status(s) if s.code == Code::IllegalInvisibleTime as i32),
        "{items:?}"
    );
    assert!(matches!(items.last(), Some(Content::DeliveryTimestamp(_))));

    // Unknown group.
    let items = receive_all(&mut client, req(receive_request("orders", "ghost", 15))).await;
    assert!(
        matches!(&items[0], Content::Status(s) if s.code == Code::ConsumerGroupNotFound as i32)
    );

    // A deadline that leaves less than the minimum long polling is served with what is left
    // (an answer before the deadline, not ILLEGAL_POLLING_TIME).
    let mut short = req(receive_request("orders", "billing", 15));
    short.set_timeout(Duration::from_millis(150));
    let items = receive_all(&mut client, short).await;
    assert!(
        matches!(&items[0], Content::Status(s) if s.code != Code::IllegalPollingTime as i32),
        "{items:?}"
    );

    // Empty send request.
    let none = client
        .send_message(req(pb::SendMessageRequest { messages: vec![] }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&none.status), Code::BadRequest as i32);
    // Too many messages in one send, too many entries in one ack: refused whole.
    let flood = client
        .send_message(req(pb::SendMessageRequest {
            messages: vec![message("orders", "F", b"x"); 1025],
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&flood.status), Code::BadRequest as i32);
    let acks = client
        .ack_message(rust_req(pb::AckMessageRequest {
            group: resource("billing"),
            topic: resource("orders"),
            entries: vec![
                pb::AckMessageEntry {
                    message_id: "M".into(),
                    receipt_handle: "h".into(),
                    lite_topic: None,
                };
                1025
            ],
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&acks.status), Code::BadRequest as i32);

    // An UpdateOffset without a group is refused at the boundary; unimplemented RPCs answer
    // NOT_IMPLEMENTED in the status.
    let update = client
        .update_offset(req(pb::UpdateOffsetRequest::default()))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&update.status), Code::IllegalConsumerGroup as i32);
    let recall = client
        .recall_message(req(pb::RecallMessageRequest::default()))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&recall.status), Code::IllegalTopic as i32);
    let mut pull = client
        .pull_message(req(pb::PullMessageRequest::default()))
        .await
        .expect("call")
        .into_inner();
    let first = pull.message().await.expect("item").and_then(|i| i.content);
    assert!(
        matches!(&first, Some(pb::pull_message_response::Content::Status(s)) if s.code == Code::IllegalConsumerGroup as i32),
        "a pull without a group is refused: {first:?}"
    );
    assert!(pull.message().await.expect("end").is_none());

    // Still serving.
    let ok = send_one(&mut client, message("orders", "OK", b"fine")).await;
    assert_eq!(code(&ok.status), Code::Ok as i32);
}

#[tokio::test]
async fn missing_client_id_is_rejected_everywhere() {
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Normal, 1).await;
    let mut client = h.client().await;
    let route = client
        .query_route(Request::new(pb::QueryRouteRequest {
            topic: resource("orders"),
            endpoints: None,
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&route.status), Code::ClientIdRequired as i32);

    let sent = client
        .send_message(Request::new(pb::SendMessageRequest {
            messages: vec![message("orders", "A", b"x"), message("orders", "B", b"y")],
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&sent.status), Code::ClientIdRequired as i32);
    assert_eq!(
        sent.entries
            .iter()
            .map(|e| e.message_id.as_str())
            .collect::<Vec<_>>(),
        vec!["A", "B"]
    );
    assert_eq!(h.store.append_calls.load(Ordering::Relaxed), 0);

    let items = receive_all(
        &mut client,
        Request::new(receive_request("orders", "billing", 15)),
    )
    .await;
    assert!(matches!(&items[0], Content::Status(s) if s.code == Code::ClientIdRequired as i32));

    let hb = client
        .heartbeat(Request::new(pb::HeartbeatRequest::default()))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&hb.status), Code::ClientIdRequired as i32);
}

#[tokio::test]
async fn sends_name_their_client_to_the_store_and_a_malformed_id_is_refused() {
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Normal, 1).await;
    let mut client = h.client().await;
    let ok = send_one(&mut client, message("orders", "A", b"x")).await;
    assert_eq!(code(&ok.status), Code::Ok as i32);
    assert_eq!(
        h.store
            .last_client_id
            .lock()
            .as_ref()
            .map(|c| c.to_string()),
        Some("test@1@0@x".to_owned()),
        "the store deduplicates by the client id the header names"
    );

    let mut long = req(pb::SendMessageRequest {
        messages: vec![message("orders", "B", b"y")],
    });
    long.metadata_mut()
        .insert("x-mq-client-id", "c".repeat(300).parse().expect("ascii"));
    let refused = client.send_message(long).await.expect("call").into_inner();
    assert_eq!(code(&refused.status), Code::BadRequest as i32);
    assert!(
        refused
            .status
            .as_ref()
            .is_some_and(|s| s.message.contains("x-mq-client-id")),
        "{refused:?}"
    );
    assert_eq!(h.store.append_calls.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn rust_clients_never_see_codes_they_cannot_decode() {
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Normal, 1).await;
    let mut client = h.client().await;
    let empty_body = || pb::SendMessageRequest {
        messages: vec![message("orders", "E", b"")],
    };
    let python = client
        .send_message(req(empty_body()))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&python.status), Code::MessageBodyEmpty as i32);
    let rust = client
        .send_message(rust_req(empty_body()))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&rust.status), Code::BadRequest as i32);
    assert_eq!(code(&rust.entries[0].status), Code::BadRequest as i32);
}

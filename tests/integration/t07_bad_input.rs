//! Bad input over raw gRPC gets the protocol's status codes and never takes the server down:
//! unknown topic and group, oversized body, forged and stale receipt handles, illegal
//! invisible time, missing client id, malformed names and batch sizes.

use std::time::Duration;

use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use vela_proto::pb::rocketmq as pb;
use vela_proto::pb::rocketmq::messaging_service_client::MessagingServiceClient;

use crate::harness::{Node, raw_client as client, raw_req as req, resource, unique};

fn message(topic: &str, body: Vec<u8>) -> pb::Message {
    pb::Message {
        topic: resource(topic),
        user_properties: Default::default(),
        system_properties: Some(pb::SystemProperties {
            message_id: format!("01{:032X}", rand_id()),
            body_encoding: pb::Encoding::Identity as i32,
            message_type: pb::MessageType::Normal as i32,
            ..Default::default()
        }),
        body: body.into(),
    }
}

fn rand_id() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    u128::from(N.fetch_add(1, Ordering::Relaxed))
}

fn code(status: &Option<pb::Status>) -> i32 {
    status.as_ref().map_or(0, |s| s.code)
}

async fn send(c: &mut MessagingServiceClient<Channel>, m: pb::Message) -> pb::SendMessageResponse {
    c.send_message(req(pb::SendMessageRequest { messages: vec![m] }))
        .await
        .unwrap()
        .into_inner()
}

async fn receive(
    c: &mut MessagingServiceClient<Channel>,
    group: &str,
    topic: &str,
    invisible: Option<Duration>,
    batch: i32,
) -> Vec<pb::receive_message_response::Content> {
    let r = pb::ReceiveMessageRequest {
        group: resource(group),
        message_queue: Some(pb::MessageQueue {
            topic: resource(topic),
            id: 0,
            ..Default::default()
        }),
        filter_expression: Some(pb::FilterExpression {
            r#type: pb::FilterType::Tag as i32,
            expression: "*".into(),
        }),
        batch_size: batch,
        invisible_duration: invisible.map(|d| prost_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: 0,
        }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration {
            seconds: 5,
            nanos: 0,
        }),
        attempt_id: None,
    };
    let mut request = req(r);
    request.set_timeout(Duration::from_secs(10));
    let mut stream = c.receive_message(request).await.unwrap().into_inner();
    let mut items = Vec::new();
    while let Some(item) = stream.message().await.unwrap() {
        items.push(item.content.unwrap());
    }
    items
}

fn first_status(items: &[pb::receive_message_response::Content]) -> i32 {
    match items.first() {
        Some(pb::receive_message_response::Content::Status(s)) => s.code,
        other => panic!("stream must start with a status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_protocol_codes_and_the_server_keeps_serving() {
    let node = Node::start_with(|c| {
        c.proxy.auto_create_topics = false;
        c.proxy.auto_create_groups = false;
    })
    .await;
    let topic = unique("strict");
    let group = unique("strict-g");
    node.admin(&["topic", "create", &topic]).await.unwrap();
    node.admin(&["group", "create", &group]).await.unwrap();
    let mut c = client(&node).await;

    // Unknown topic: route and send both answer TOPIC_NOT_FOUND.
    let route = c
        .query_route(req(pb::QueryRouteRequest {
            topic: resource("no-such-topic"),
            endpoints: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&route.status), pb::Code::TopicNotFound as i32);
    let r = send(&mut c, message("no-such-topic", b"x".to_vec())).await;
    assert_eq!(code(&r.status), pb::Code::TopicNotFound as i32);
    assert_eq!(r.entries.len(), 1);

    // Oversized body.
    let r = send(&mut c, message(&topic, vec![0u8; 4 * 1024 * 1024 + 1])).await;
    assert_eq!(code(&r.status), pb::Code::MessageBodyTooLarge as i32);

    // Malformed topic name.
    let r = send(&mut c, message("bad topic!", b"x".to_vec())).await;
    assert_eq!(code(&r.status), pb::Code::IllegalTopic as i32);

    // A tag longer than 255 bytes.
    let mut long_tag = message(&topic, b"x".to_vec());
    long_tag.system_properties.as_mut().unwrap().tag = Some("t".repeat(300));
    let r = send(&mut c, long_tag).await;
    assert_eq!(code(&r.status), pb::Code::IllegalMessageTag as i32);

    // A request with no message still answers one entry (Rust 5.0.0 indexes entries[0]).
    let r = c
        .send_message(req(pb::SendMessageRequest { messages: vec![] }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), pb::Code::BadRequest as i32);
    assert_eq!(r.entries.len(), 1);

    // A dead-letter topic of a group that does not exist is not found.
    let items = receive(
        &mut c,
        &group,
        "%DLQ%no-such-group",
        Some(Duration::from_secs(30)),
        1,
    )
    .await;
    assert_eq!(first_status(&items), pb::Code::TopicNotFound as i32);

    // Missing client id.
    let mut no_id = Request::new(pb::SendMessageRequest {
        messages: vec![message(&topic, b"x".to_vec())],
    });
    no_id
        .metadata_mut()
        .insert("x-mq-language", MetadataValue::from_static("PYTHON"));
    let r = c.send_message(no_id).await.unwrap().into_inner();
    assert_eq!(code(&r.status), pb::Code::ClientIdRequired as i32);

    // Unknown group, illegal invisible time, illegal batch size.
    let items = receive(
        &mut c,
        "no-such-group",
        &topic,
        Some(Duration::from_secs(30)),
        1,
    )
    .await;
    assert_eq!(first_status(&items), pb::Code::ConsumerGroupNotFound as i32);
    let items = receive(&mut c, &group, &topic, Some(Duration::from_secs(1)), 1).await;
    assert_eq!(first_status(&items), pb::Code::IllegalInvisibleTime as i32);
    let items = receive(&mut c, &group, &topic, Some(Duration::from_secs(30)), 0).await;
    assert_eq!(first_status(&items), pb::Code::BadRequest as i32);

    // Forged and stale receipt handles.
    let ack = |handle: String| pb::AckMessageRequest {
        group: resource(&group),
        topic: resource(&topic),
        entries: vec![pb::AckMessageEntry {
            message_id: "m".into(),
            receipt_handle: handle,
            lite_topic: None,
        }],
    };
    let r = c
        .ack_message(req(ack("forged-handle".into())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), pb::Code::InvalidReceiptHandle as i32);
    assert_eq!(r.entries.len(), 1);

    let ok = send(&mut c, message(&topic, b"real".to_vec())).await;
    assert_eq!(code(&ok.status), pb::Code::Ok as i32);
    let items = receive(&mut c, &group, &topic, Some(Duration::from_secs(30)), 1).await;
    assert_eq!(first_status(&items), pb::Code::Ok as i32);
    let handle = items
        .iter()
        .find_map(|i| match i {
            pb::receive_message_response::Content::Message(m) => {
                m.system_properties.as_ref()?.receipt_handle.clone()
            }
            _ => None,
        })
        .expect("a message with a receipt handle");
    assert!(matches!(
        items.last(),
        Some(pb::receive_message_response::Content::DeliveryTimestamp(_))
    ));
    // Tamper with one character: rejected.
    let mut tampered = handle.clone().into_bytes();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    let r = c
        .ack_message(req(ack(String::from_utf8(tampered).unwrap())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), pb::Code::InvalidReceiptHandle as i32);
    // The real handle acks once; the second ack is stale.
    let r = c
        .ack_message(req(ack(handle.clone())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), pb::Code::Ok as i32);
    let r = c.ack_message(req(ack(handle))).await.unwrap().into_inner();
    assert_eq!(code(&r.status), pb::Code::InvalidReceiptHandle as i32);

    // A request without its queue is refused; unimplemented RPCs answer with a status
    // instead of failing the call.
    let r = c
        .get_offset(req(pb::GetOffsetRequest {
            group: resource(&group),
            message_queue: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), pb::Code::BadRequest as i32);
    let r = c
        .update_offset(req(pb::UpdateOffsetRequest {
            group: resource(&group),
            message_queue: None,
            offset: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), pb::Code::BadRequest as i32);
    let r = c
        .recall_message(req(pb::RecallMessageRequest {
            topic: resource(&topic),
            recall_handle: "x".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        code(&r.status),
        pb::Code::BadRequest as i32,
        "a recall handle no send answered"
    );

    // Still serving.
    let ok = send(&mut c, message(&topic, b"still here".to_vec())).await;
    assert_eq!(code(&ok.status), pb::Code::Ok as i32);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_clients_never_get_codes_they_cannot_decode() {
    let node = Node::start().await;
    let topic = unique("rustcodes");
    let mut c = client(&node).await;
    let mut r = Request::new(pb::SendMessageRequest {
        messages: vec![message(&topic, Vec::new())],
    });
    r.metadata_mut()
        .insert("x-mq-client-id", MetadataValue::from_static("rust@1#0"));
    r.metadata_mut()
        .insert("x-mq-language", MetadataValue::from_static("RUST"));
    let resp = c.send_message(r).await.unwrap().into_inner();
    // An empty body is MESSAGE_BODY_EMPTY (41302) for newer clients, which Rust 5.0.0 cannot decode.
    assert_eq!(code(&resp.status), pb::Code::BadRequest as i32);
    node.stop().await;
}

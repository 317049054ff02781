//! Service tests: the real server on 127.0.0.1:0, called with the generated tonic clients,
//! over the test-only fakes in `fakes`. What they show:
//! - the receive stream is exactly Status -> messages -> delivery_timestamp -> end;
//! - bad input gets its protocol code (40402, 41301, 40013, 40011, 40017, 40018, 41302/40000)
//!   and the server keeps serving;
//! - a batch send is one store append, one entry per message in order;
//! - Telemetry answers every Settings and stays open until the client leaves;
//! - ChangeInvisibleDuration hands out a new handle and kills the old one;
//! - the admin service creates, describes and deletes, with gRPC status codes;
//! - `serve` stops on its token even with a Telemetry stream open.

mod fakes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use bytesize::ByteSize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Request;
use tonic::transport::Channel;
use vela_proto::pb::admin::{self as api, admin_service_client::AdminServiceClient};
use vela_proto::pb::rocketmq::{
    self as pb, ClientType, Code, MessageType, messaging_service_client::MessagingServiceClient,
    receive_message_response::Content, settings::PubSub, telemetry_command::Command,
};
use vela_proto::receipt::ReceiptCodec;
use vela_proto::{ControllerApi, GroupName, GroupSpec, TopicName, TopicSpec, TopicType};

use self::fakes::{FakeController, FakeStore};
use crate::{ProxyConfig, ProxyContext, ProxyMetrics, serve};

struct Harness {
    addr: SocketAddr,
    store: Arc<FakeStore>,
    controller: Arc<FakeController>,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), crate::ProxyError>>,
}

fn test_config() -> ProxyConfig {
    ProxyConfig {
        min_long_polling: Duration::from_millis(200),
        max_long_polling: Duration::from_millis(400),
        max_body_size: ByteSize::b(64),
        ..ProxyConfig::default()
    }
}

impl Harness {
    async fn start(config: ProxyConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let store = Arc::new(FakeStore::default());
        let controller = Arc::new(FakeController::default());
        let ctx = ProxyContext {
            config,
            store: store.clone(),
            controller: controller.clone(),
            receipts: ReceiptCodec::new(b"test-secret-0123456789"),
            clock: vela_proto::clock::system_clock(),
            metrics: ProxyMetrics::unregistered(),
            listen_addr: addr,
        };
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, ctx, shutdown.clone()));
        Self {
            addr,
            store,
            controller,
            shutdown,
            server,
        }
    }

    async fn client(&self) -> MessagingServiceClient<Channel> {
        MessagingServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    async fn topic(&self, name: &str, topic_type: TopicType, queues: u32) {
        let spec = TopicSpec {
            name: TopicName::new(name).expect("valid"),
            topic_type,
            queue_count: queues,
            auto_created: false,
        };
        self.controller
            .create_topic(spec)
            .await
            .expect("topic created");
    }

    async fn group(&self, name: &str) {
        let spec = GroupSpec {
            name: GroupName::new(name).expect("valid"),
            fifo: false,
            max_attempts: 17,
            auto_created: false,
        };
        self.controller
            .create_group(spec)
            .await
            .expect("group created");
    }
}

/// A request with the headers a Python client sends.
fn req<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("x-mq-client-id", "test@1@0@x".parse().expect("ascii"));
    r.metadata_mut()
        .insert("x-mq-language", "PYTHON".parse().expect("ascii"));
    r.metadata_mut()
        .insert("x-mq-namespace", "".parse().expect("ascii"));
    r
}

/// A request with the headers the Rust 5.0.0 client sends.
fn rust_req<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("x-mq-client-id", "vm@4242#0".parse().expect("ascii"));
    r.metadata_mut()
        .insert("x-mq-language", "RUST".parse().expect("ascii"));
    r
}

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.into(),
    })
}

fn message(topic: &str, id: &str, body: &'static [u8]) -> pb::Message {
    pb::Message {
        topic: resource(topic),
        user_properties: Default::default(),
        system_properties: Some(pb::SystemProperties {
            tag: Some("TagA".into()),
            keys: vec!["k1".into()],
            message_id: id.into(),
            body_encoding: pb::Encoding::Identity as i32,
            message_type: MessageType::Normal as i32,
            born_host: "test".into(),
            ..Default::default()
        }),
        body: Bytes::from_static(body),
    }
}

fn receive_request(topic: &str, group: &str, invisible_secs: i64) -> pb::ReceiveMessageRequest {
    pb::ReceiveMessageRequest {
        group: resource(group),
        message_queue: Some(pb::MessageQueue {
            topic: resource(topic),
            ..Default::default()
        }),
        filter_expression: Some(pb::FilterExpression {
            r#type: pb::FilterType::Tag as i32,
            expression: "*".into(),
        }),
        batch_size: 16,
        invisible_duration: Some(prost_types::Duration {
            seconds: invisible_secs,
            nanos: 0,
        }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration {
            seconds: 5,
            nanos: 0,
        }),
        attempt_id: None,
    }
}

fn code(status: &Option<pb::Status>) -> i32 {
    status.as_ref().map_or(0, |s| s.code)
}

/// Collects a whole receive stream.
async fn receive_all(
    client: &mut MessagingServiceClient<Channel>,
    request: Request<pb::ReceiveMessageRequest>,
) -> Vec<Content> {
    let mut stream = client
        .receive_message(request)
        .await
        .expect("receive call")
        .into_inner();
    let mut items = Vec::new();
    while let Some(item) = stream.message().await.expect("stream item") {
        items.push(item.content.expect("every item has content"));
    }
    items
}

async fn send_one(
    client: &mut MessagingServiceClient<Channel>,
    msg: pb::Message,
) -> pb::SendMessageResponse {
    client
        .send_message(req(pb::SendMessageRequest {
            messages: vec![msg],
        }))
        .await
        .expect("send call")
        .into_inner()
}

fn handle_of(item: &Content) -> String {
    match item {
        Content::Message(m) => m
            .system_properties
            .as_ref()
            .and_then(|p| p.receipt_handle.clone())
            .expect("delivered messages carry a handle"),
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn route_for_known_and_unknown_topics() {
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Normal, 4).await;
    let mut client = h.client().await;
    let endpoints = crate::route::endpoints_of("10.1.2.3", 8081);

    let route = client
        .query_route(req(pb::QueryRouteRequest {
            topic: resource("orders"),
            endpoints: Some(endpoints.clone()),
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&route.status), Code::Ok as i32);
    assert_eq!(route.message_queues.len(), 4);
    assert_eq!(route.message_queues[0].id, 0);
    let broker = route.message_queues[0].broker.as_ref().expect("broker");
    assert_eq!(
        broker.endpoints.as_ref(),
        Some(&endpoints),
        "the client's access point is echoed"
    );
    assert_eq!(
        route.message_queues[0].accept_message_types,
        vec![MessageType::Normal as i32]
    );

    let missing = client
        .query_route(req(pb::QueryRouteRequest {
            topic: resource("nope"),
            endpoints: None,
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&missing.status), Code::TopicNotFound as i32);

    let bad = client
        .query_route(req(pb::QueryRouteRequest {
            topic: resource("bad name"),
            endpoints: None,
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&bad.status), Code::IllegalTopic as i32);
}

#[tokio::test]
async fn auto_created_topics_are_mixed() {
    let h = Harness::start(ProxyConfig {
        auto_create_topics: true,
        ..test_config()
    })
    .await;
    let mut client = h.client().await;
    let route = client
        .query_route(req(pb::QueryRouteRequest {
            topic: resource("fresh"),
            endpoints: None,
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&route.status), Code::Ok as i32);
    assert_eq!(route.message_queues.len(), 8);
    assert_eq!(
        route.message_queues[0].accept_message_types,
        vec![1, 2, 3, 4]
    );
    let endpoints = route.message_queues[0]
        .broker
        .as_ref()
        .and_then(|b| b.endpoints.as_ref())
        .expect("endpoints");
    assert_eq!(
        endpoints.addresses[0].port,
        i32::from(h.addr.port()),
        "falls back to the listen address"
    );
    let created = h
        .controller
        .get_topic(&TopicName::new("fresh").expect("valid"))
        .await
        .expect("get");
    assert!(created.is_some_and(|t| t.auto_created && t.topic_type == TopicType::Mixed));
}

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

#[tokio::test]
async fn long_polling_returns_a_message_sent_while_waiting() {
    let h = Harness::start(ProxyConfig {
        max_long_polling: Duration::from_secs(5),
        ..test_config()
    })
    .await;
    h.topic("orders", TopicType::Normal, 1).await;
    h.group("billing").await;
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

    // A deadline that leaves less than the minimum long polling.
    let mut short = req(receive_request("orders", "billing", 15));
    short.set_timeout(Duration::from_millis(150));
    let items = receive_all(&mut client, short).await;
    assert!(
        matches!(&items[0], Content::Status(s) if s.code == Code::IllegalPollingTime as i32),
        "{items:?}"
    );

    // Empty send request.
    let none = client
        .send_message(req(pb::SendMessageRequest { messages: vec![] }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&none.status), Code::BadRequest as i32);

    // Unimplemented RPCs answer NOT_IMPLEMENTED in the status.
    let offset = client
        .get_offset(req(pb::GetOffsetRequest::default()))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&offset.status), Code::NotImplemented as i32);
    let mut pull = client
        .pull_message(req(pb::PullMessageRequest::default()))
        .await
        .expect("call")
        .into_inner();
    let first = pull.message().await.expect("item").and_then(|i| i.content);
    assert!(
        matches!(first, Some(pb::pull_message_response::Content::Status(s)) if s.code == Code::NotImplemented as i32)
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

#[tokio::test]
async fn a_batch_is_one_append_with_entries_in_order() {
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Normal, 4).await;
    let mut client = h.client().await;
    let messages = vec![
        message("orders", "A", b"1"),
        message("orders", "B", b"2"),
        message("orders", "C", b"3"),
    ];
    let sent = client
        .send_message(rust_req(pb::SendMessageRequest { messages }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&sent.status), Code::Ok as i32);
    assert_eq!(
        sent.entries
            .iter()
            .map(|e| e.message_id.as_str())
            .collect::<Vec<_>>(),
        vec!["A", "B", "C"]
    );
    assert_eq!(
        sent.entries.iter().map(|e| e.offset).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(h.store.append_calls.load(Ordering::Relaxed), 1);

    // One bad message among good ones: MULTIPLE_RESULTS, good ones still stored.
    let messages = vec![
        message("orders", "D", b"4"),
        message("orders", "E", b""),
        message("orders", "F", b"6"),
    ];
    let mixed = client
        .send_message(req(pb::SendMessageRequest { messages }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&mixed.status), Code::MultipleResults as i32);
    let codes: Vec<i32> = mixed.entries.iter().map(|e| code(&e.status)).collect();
    assert_eq!(
        codes,
        vec![
            Code::Ok as i32,
            Code::MessageBodyEmpty as i32,
            Code::Ok as i32
        ]
    );
    assert_eq!(h.store.append_calls.load(Ordering::Relaxed), 2);
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

#[tokio::test]
async fn transactions_and_dead_letters() {
    let h = Harness::start(test_config()).await;
    h.topic("txn", TopicType::Transaction, 1).await;
    h.group("billing").await;
    let mut client = h.client().await;
    let mut half = message("txn", "T1", b"pay");
    if let Some(p) = half.system_properties.as_mut() {
        p.message_type = MessageType::Transaction as i32;
    }
    let sent = send_one(&mut client, half).await;
    assert_eq!(code(&sent.status), Code::Ok as i32);
    let txn = sent.entries[0].transaction_id.clone();
    assert!(!txn.is_empty());

    let end = |transaction_id: String| pb::EndTransactionRequest {
        topic: resource("txn"),
        message_id: "T1".into(),
        transaction_id,
        resolution: pb::TransactionResolution::Commit as i32,
        source: pb::TransactionSource::SourceClient as i32,
        trace_context: String::new(),
    };
    let unknown = client
        .end_transaction(req(end("nope".into())))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&unknown.status), Code::InvalidTransactionId as i32);
    let committed = client
        .end_transaction(req(end(txn)))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&committed.status), Code::Ok as i32);

    let items = receive_all(&mut client, req(receive_request("txn", "billing", 15))).await;
    assert_eq!(
        items.len(),
        3,
        "the committed message is delivered: {items:?}"
    );
    let forwarded = client
        .forward_message_to_dead_letter_queue(req(pb::ForwardMessageToDeadLetterQueueRequest {
            group: resource("billing"),
            topic: resource("txn"),
            receipt_handle: handle_of(&items[1]),
            message_id: "T1".into(),
            delivery_attempt: 1,
            max_delivery_attempts: 1,
            lite_topic: None,
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&forwarded.status), Code::Ok as i32);
    assert_eq!(h.store.dead_lettered(), 1);
}

fn producer_settings() -> pb::TelemetryCommand {
    pb::TelemetryCommand {
        status: None,
        command: Some(Command::Settings(pb::Settings {
            client_type: Some(ClientType::Producer as i32),
            request_timeout: Some(prost_types::Duration {
                seconds: 3,
                nanos: 0,
            }),
            pub_sub: Some(PubSub::Publishing(pb::Publishing {
                topics: vec![pb::Resource {
                    resource_namespace: String::new(),
                    name: "orders".into(),
                }],
                max_body_size: 0,
                validate_message_type: true,
            })),
            ..Default::default()
        })),
    }
}

#[tokio::test]
async fn telemetry_answers_each_settings_and_stays_open() {
    let h = Harness::start(ProxyConfig {
        auto_create_groups: true,
        ..test_config()
    })
    .await;
    let mut client = h.client().await;
    let (tx, rx) = mpsc::channel(4);
    // The call completes once headers arrive, before any client message is sent (Rust's start).
    let mut replies = tokio::time::timeout(
        Duration::from_secs(5),
        client.telemetry(req(ReceiverStream::new(rx))),
    )
    .await
    .expect("headers come at once")
    .expect("telemetry call")
    .into_inner();

    tx.send(producer_settings()).await.expect("send settings");
    let reply = replies.message().await.expect("reply").expect("not ended");
    assert_eq!(code(&reply.status), Code::Ok as i32);
    let Some(Command::Settings(settings)) = reply.command else {
        panic!("settings reply")
    };
    let Some(PubSub::Publishing(p)) = settings.pub_sub else {
        panic!("publishing")
    };
    assert_eq!(p.max_body_size, 64);
    assert!(settings.backoff_policy.is_some());

    // Odd commands are ignored, repeated settings answered again.
    tx.send(pb::TelemetryCommand::default())
        .await
        .expect("send");
    tx.send(pb::TelemetryCommand {
        status: None,
        command: Some(Command::ThreadStackTrace(pb::ThreadStackTrace {
            nonce: "n".into(),
            thread_stack_trace: None,
        })),
    })
    .await
    .expect("send");
    let consumer = pb::TelemetryCommand {
        status: None,
        command: Some(Command::Settings(pb::Settings {
            client_type: Some(ClientType::SimpleConsumer as i32),
            pub_sub: Some(PubSub::Subscription(pb::Subscription {
                group: resource("fresh-group"),
                ..Default::default()
            })),
            ..Default::default()
        })),
    };
    tx.send(consumer).await.expect("send");
    let reply = replies.message().await.expect("reply").expect("not ended");
    let Some(Command::Settings(settings)) = reply.command else {
        panic!("settings reply")
    };
    let Some(PubSub::Subscription(s)) = settings.pub_sub else {
        panic!("subscription")
    };
    assert_eq!(s.receive_batch_size, Some(32));
    assert_eq!(s.fifo, Some(false));
    assert!(
        h.controller
            .get_group(&GroupName::new("fresh-group").expect("valid"))
            .await
            .expect("get")
            .is_some()
    );

    // Open until the client leaves.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), replies.message())
            .await
            .is_err(),
        "stream stays open"
    );
    drop(tx);
    let end = tokio::time::timeout(Duration::from_secs(5), replies.message())
        .await
        .expect("ends after the client");
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test]
async fn heartbeat_and_termination_are_ok() {
    let h = Harness::start(ProxyConfig {
        auto_create_groups: true,
        ..test_config()
    })
    .await;
    let mut client = h.client().await;
    let hb = client
        .heartbeat(req(pb::HeartbeatRequest {
            group: resource("g1"),
            client_type: ClientType::SimpleConsumer as i32,
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&hb.status), Code::Ok as i32);
    assert!(
        h.controller
            .get_group(&GroupName::new("g1").expect("valid"))
            .await
            .expect("get")
            .is_some()
    );
    let bye = client
        .notify_client_termination(rust_req(pb::NotifyClientTerminationRequest {
            group: resource("g1"),
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&bye.status), Code::Ok as i32);
}

#[tokio::test]
async fn push_consumer_assignments() {
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Normal, 4).await;
    h.group("billing").await;
    let mut client = h.client().await;
    let assignment = client
        .query_assignment(req(pb::QueryAssignmentRequest {
            topic: resource("orders"),
            group: resource("billing"),
            endpoints: None,
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&assignment.status), Code::Ok as i32);
    assert_eq!(
        assignment.assignments.len(),
        1,
        "one poller covers every queue"
    );
    let queue = assignment.assignments[0]
        .message_queue
        .as_ref()
        .expect("queue");
    assert_eq!(queue.id, 0);
    assert!(
        queue
            .broker
            .as_ref()
            .and_then(|b| b.endpoints.as_ref())
            .is_some()
    );
}

#[tokio::test]
async fn admin_manages_topics_and_groups() {
    let h = Harness::start(test_config()).await;
    let mut admin = h.admin().await;
    let created = admin
        .create_topic(api::CreateTopicRequest {
            name: "orders".into(),
            topic_type: api::TopicType::Fifo as i32,
            queue_count: 0,
        })
        .await
        .expect("created")
        .into_inner();
    let topic = created.topic.expect("topic");
    assert_eq!(
        (topic.queue_count, topic.topic_type),
        (8, api::TopicType::Fifo as i32)
    );

    let dup = admin
        .create_topic(api::CreateTopicRequest {
            name: "orders".into(),
            topic_type: 0,
            queue_count: 1,
        })
        .await
        .expect_err("duplicate");
    assert_eq!(dup.code(), tonic::Code::AlreadyExists);
    let bad = admin
        .create_topic(api::CreateTopicRequest {
            name: "bad name".into(),
            topic_type: 0,
            queue_count: 1,
        })
        .await
        .expect_err("invalid");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let listed = admin
        .list_topics(api::ListTopicsRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.topics.len(), 1);
    let described = admin
        .describe_topic(api::DescribeTopicRequest {
            name: "orders".into(),
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(described.topic.map(|t| t.name), Some("orders".to_owned()));

    admin
        .create_group(api::CreateGroupRequest {
            name: "billing".into(),
            fifo: true,
            max_attempts: 0,
        })
        .await
        .expect("group");
    let group = admin
        .describe_group(api::DescribeGroupRequest {
            name: "billing".into(),
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(
        group.group.map(|g| (g.fifo, g.max_attempts)),
        Some((true, 17))
    );

    let info = admin
        .cluster_info(api::ClusterInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.mode, "standalone");
    assert_eq!(info.shard_count, 2);

    admin
        .delete_topic(api::DeleteTopicRequest {
            name: "orders".into(),
        })
        .await
        .expect("deleted");
    let gone = admin
        .describe_topic(api::DescribeTopicRequest {
            name: "orders".into(),
        })
        .await
        .expect_err("gone");
    assert_eq!(gone.code(), tonic::Code::NotFound);
    assert!(gone.message().contains("orders"));
    // The messaging side sees the deletion at once (this proxy dropped its cache entry).
    let mut client = h.client().await;
    let route = client
        .query_route(req(pb::QueryRouteRequest {
            topic: resource("orders"),
            endpoints: None,
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&route.status), Code::TopicNotFound as i32);
}

#[tokio::test]
async fn serve_stops_on_its_token_with_telemetry_open() {
    let h = Harness::start(test_config()).await;
    let mut client = h.client().await;
    let (tx, rx) = mpsc::channel(4);
    let mut replies = client
        .telemetry(req(ReceiverStream::new(rx)))
        .await
        .expect("call")
        .into_inner();
    tx.send(producer_settings()).await.expect("send");
    replies.message().await.expect("reply").expect("not ended");

    h.shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), h.server)
        .await
        .expect("server stops");
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
    drop(tx);
}

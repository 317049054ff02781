//! Service tests: the real server on 127.0.0.1:0, called with the generated tonic clients,
//! over the test-only fakes in `fakes`. This module holds the shared `Harness` and request
//! helpers; the tests are split by RPC. What they show:
//! - `route`: QueryRoute answers known and unknown topics, auto-created topics are mixed, and
//!   QueryAssignment gives a push consumer one poller for every queue;
//! - `receive`: the receive stream is exactly Status -> messages -> delivery_timestamp -> end;
//!   long polling returns a message sent while waiting; ChangeInvisibleDuration hands out a new
//!   handle and kills the old one;
//! - `send`: a batch send is one store append, one entry per message in order; a transaction
//!   commits into the queue and a delivery can be sent to the dead-letter queue;
//! - `errors`: bad input gets its protocol code (40402, 41301, 40013, 40011, 40017,
//!   41302/40000) and the server keeps serving; a missing client id is rejected everywhere; the
//!   Rust client never sees a code it cannot decode;
//! - `telemetry`: Telemetry answers every Settings and stays open until the client leaves;
//!   heartbeat and termination are OK; `serve` stops on its token even with a Telemetry stream
//!   open;
//! - `admin`: the admin service creates, describes and deletes, with gRPC status codes;
//! - `offsets`: GetOffset answers a group's position on a queue, QueryOffset a queue's
//!   beginning, end and the offset at a time, UpdateOffset moves the group.

mod admin;
mod errors;
pub(crate) mod fakes;
mod offsets;
mod receipts;
mod receive;
mod route;
mod send;
mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytesize::ByteSize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Request;
use tonic::transport::Channel;
use vela_proto::pb::admin::admin_service_client::AdminServiceClient;
use vela_proto::pb::rocketmq::{
    self as pb, Code, MessageType, messaging_service_client::MessagingServiceClient,
    receive_message_response::Content,
};
use vela_proto::receipt_keys::ConfiguredKeys;
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
            // No key files: handles are signed with the controller's managed keys (ADR 0030).
            receipts: ConfiguredKeys::default(),
            clock: vela_proto::clock::system_clock(),
            metrics: ProxyMetrics::unregistered(),
            tracer: vela_telemetry::traces::MessageTracer::off(),
            listen_addr: addr,
            tls: None,
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
            start: vela_proto::GroupStart::Auto,
            retry: Default::default(),
            broadcast: false,
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

/// The receipt handles of the messages a receive delivered.
fn message_handles(items: &[Content]) -> Vec<String> {
    items
        .iter()
        .filter(|i| matches!(i, Content::Message(_)))
        .map(handle_of)
        .collect()
}

/// Acks one delivery of group `billing` on topic `orders`.
async fn ack_one(
    client: &mut MessagingServiceClient<Channel>,
    message_id: &str,
    handle: &str,
) -> pb::AckMessageResponse {
    client
        .ack_message(req(pb::AckMessageRequest {
            group: resource("billing"),
            topic: resource("orders"),
            entries: vec![pb::AckMessageEntry {
                message_id: message_id.into(),
                receipt_handle: handle.into(),
                lite_topic: None,
            }],
        }))
        .await
        .expect("call")
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

#[test]
fn the_admin_address_heartbeats_name_is_reachable() {
    let admin: std::net::SocketAddr = "0.0.0.0:9877".parse().expect("addr");
    assert_eq!(
        crate::advertised_admin("10.1.2.3:8081", admin),
        "10.1.2.3:9877"
    );
    let bound: std::net::SocketAddr = "127.0.0.2:9877".parse().expect("addr");
    assert_eq!(
        crate::advertised_admin("10.1.2.3:8081", bound),
        "127.0.0.2:9877"
    );
    assert_eq!(crate::advertised_admin("[::1]:8081", admin), "[::1]:9877");
}

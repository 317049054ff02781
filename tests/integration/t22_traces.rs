//! Traces across producer → proxy (issue 9): a message whose `trace_context` names a sampled
//! producer span gets a proxy span in the same trace, child of the producer's, exported over
//! OTLP; a message without a context, or with an unsampled one, gets none.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use vela_proto::pb::rocketmq as pb;

use crate::harness::{Node, raw_client, raw_req, unique};

/// Spans an in-process OTLP/gRPC receiver got.
#[derive(Clone, Default)]
pub struct Spans(pub Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Spans {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        self.0.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// An OTLP/gRPC trace receiver on loopback.
pub async fn trace_receiver() -> (Spans, std::net::SocketAddr) {
    let spans = Spans::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(spans.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (spans, addr)
}

fn message(topic: &str, id: &str, trace_context: Option<&str>) -> pb::Message {
    pb::Message {
        topic: Some(pb::Resource {
            name: topic.to_owned(),
            ..Default::default()
        }),
        user_properties: Default::default(),
        system_properties: Some(pb::SystemProperties {
            message_id: id.to_owned(),
            body_encoding: pb::Encoding::Identity as i32,
            message_type: pb::MessageType::Normal as i32,
            trace_context: trace_context.map(str::to_owned),
            ..Default::default()
        }),
        body: b"traced".to_vec().into(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_message_continues_its_producers_trace() {
    let (spans, otlp) = trace_receiver().await;
    let node = Node::start_with(|c| {
        c.telemetry.otlp.endpoint = Some(format!("http://{otlp}"));
        c.telemetry.otlp.interval = Duration::from_secs(1);
    })
    .await;
    let topic = unique("traced");
    node.admin(&["topic", "create", &topic]).await.unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let mut client = raw_client(&node).await;
    let sent = client
        .send_message(raw_req(pb::SendMessageRequest {
            messages: vec![
                message(&topic, "01AA", Some(&format!("00-{trace_id}-{parent}-01"))),
                message(&topic, "01BB", None),
                message(
                    &topic,
                    "01CC",
                    Some("00-11111111111111111111111111111111-2222222222222222-00"),
                ),
                message(&topic, "01DD", Some("not a traceparent")),
            ],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.status.map(|s| s.code), Some(pb::Code::Ok as i32));

    let deadline = Instant::now() + Duration::from_secs(30);
    let span = loop {
        if let Some(span) = spans.0.lock().unwrap().first().cloned() {
            break span;
        }
        assert!(Instant::now() < deadline, "no span exported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(span.name, format!("{topic} publish"));
    assert_eq!(hex(&span.trace_id), trace_id);
    assert_eq!(hex(&span.parent_span_id), parent);
    assert_eq!(
        span.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    );
    let attr = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value)
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    assert_eq!(
        attr("messaging.system"),
        Some(Value::StringValue("rocketmq".into()))
    );
    assert_eq!(
        attr("messaging.message.id"),
        Some(Value::StringValue("01AA".into()))
    );
    assert_eq!(
        attr("messaging.destination.name"),
        Some(Value::StringValue(topic.clone()))
    );
    // Stopping flushes what is batched: still only the sampled message's span.
    node.stop().await;
    let all = spans.0.lock().unwrap().clone();
    assert_eq!(all.len(), 1, "{all:?}");
}

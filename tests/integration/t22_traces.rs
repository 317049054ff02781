//! Traces across SDK → proxy → store → consumer (issue 9): a message whose `trace_context`
//! names a sampled producer span gets a proxy span and a store span in the same trace, children
//! of the producer's, exported over OTLP; a message without a context, or with an unsampled one, gets none. With
//! a tracer provider installed, vela-sdk's send span starts the trace and its receive span
//! links to it.

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

    // The proxy's span and the store's, both in the producer's trace.
    let deadline = Instant::now() + Duration::from_secs(30);
    let exported = loop {
        let exported = spans.0.lock().unwrap().clone();
        if exported.len() >= 2 {
            break exported;
        }
        assert!(Instant::now() < deadline, "spans exported: {exported:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let store = by_name(&exported, &format!("store {topic}"));
    assert_eq!(hex(&store.trace_id), trace_id);
    assert_eq!(hex(&store.parent_span_id), parent);
    assert!(
        store.attributes.iter().any(|kv| kv.key == "vela.shard"),
        "{store:?}"
    );
    assert!(store.end_time_unix_nano >= store.start_time_unix_nano);
    let span = by_name(&exported, &format!("publish {topic}")).clone();
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
    // Stopping flushes what is batched: still only the sampled message's spans.
    node.stop().await;
    let all = spans.0.lock().unwrap().clone();
    assert_eq!(all.len(), 2, "{all:?}");
}

/// What the spans of one trace look like, by name.
fn by_name<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span {name} in {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

/// Installs the application's tracer provider (vela-sdk records on the global one), exporting
/// to `otlp` from the provider's own thread: a simple exporter would block a runtime worker on
/// each span while the receiver needs one to answer. `shutdown` flushes it.
fn app_tracer_provider(otlp: std::net::SocketAddr) -> opentelemetry_sdk::trace::SdkTracerProvider {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{otlp}"))
        .build()
        .unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    provider
}

/// Flushes the application's provider (off the runtime: its shutdown blocks) and returns every
/// span the receiver got.
async fn flushed(
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
    spans: &Spans,
) -> Vec<Span> {
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .unwrap();
    spans.0.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_starts_the_trace_the_proxy_continues_it_and_the_consumer_links_to_it() {
    let (spans, otlp) = trace_receiver().await;
    let provider = app_tracer_provider(otlp);
    let node = Node::start_with(|c| {
        c.telemetry.otlp.endpoint = Some(format!("http://{otlp}"));
        c.telemetry.otlp.interval = Duration::from_secs(1);
    })
    .await;
    let topic = unique("traced-sdk");
    let group = unique("traced-sdk-g");
    let producer = node.producer(&topic).await;
    let consumer = node.consumer(&group, &topic, "*").await;
    assert!(
        consumer
            .receive(1, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    producer
        .send(
            vela_sdk::Message::builder(&topic)
                .body("traced")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.is_empty() {
        got = consumer.receive(1, Duration::from_secs(30)).await.unwrap();
    }
    let producer_span = got[0]
        .trace_context()
        .expect("the message carries its producer's span");
    consumer.ack(&got[0]).await.unwrap();
    drop((producer, consumer));
    node.stop().await;
    let all = flushed(provider, &spans).await;
    let send = by_name(&all, &format!("send {topic}"));
    let publish = by_name(&all, &format!("publish {topic}"));
    let receive = by_name(&all, &format!("receive {topic}"));
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    assert_eq!(send.kind, SpanKind::Producer as i32);
    assert_eq!(receive.kind, SpanKind::Consumer as i32);
    assert_eq!(hex(&send.trace_id), producer_span.trace_id().to_string());
    assert_eq!(hex(&send.span_id), producer_span.span_id().to_string());
    assert_eq!(
        publish.trace_id, send.trace_id,
        "the proxy continues the producer's trace"
    );
    assert_eq!(publish.parent_span_id, send.span_id);
    // SDK → proxy → store: the store's span is in the same trace, under the send.
    let stored = by_name(&all, &format!("store {topic}"));
    assert_eq!(stored.trace_id, send.trace_id);
    assert_eq!(stored.parent_span_id, send.span_id);
    assert!(
        receive
            .links
            .iter()
            .any(|l| l.trace_id == send.trace_id && l.span_id == send.span_id),
        "the receive links to the send: {receive:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_listener_runs_in_a_process_span_linked_to_the_send() {
    use opentelemetry::trace::Tracer;
    let (spans, otlp) = trace_receiver().await;
    let provider = app_tracer_provider(otlp);
    let node = Node::start().await;
    let topic = unique("traced-push");
    let group = unique("traced-push-g");
    node.admin(&["group", "create", &group, "--from", "earliest"])
        .await
        .unwrap();
    let producer = node.producer(&topic).await;
    for body in ["ok", "fail"] {
        producer
            .send(
                vela_sdk::Message::builder(&topic)
                    .body(body)
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let consumer = vela_sdk::PushConsumer::builder(node.client_config(), &group)
        .subscribe(&topic, vela_sdk::FilterExpression::all())
        .listener(move |m: vela_sdk::MessageView| {
            let tx = tx.clone();
            async move {
                let body = String::from_utf8_lossy(&m.body).into_owned();
                // A span the application makes while processing: a child of `process`.
                let tracer = opentelemetry::global::tracer("app");
                let mut work = tracer
                    .start_with_context(format!("work {body}"), &opentelemetry::Context::current());
                opentelemetry::trace::Span::end(&mut work);
                let _ = tx.send(body.clone());
                if body == "ok" {
                    vela_sdk::ConsumeResult::Success
                } else {
                    vela_sdk::ConsumeResult::Failure
                }
            }
        })
        .build()
        .await
        .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        let body = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the listener was called")
            .unwrap();
        seen.insert(body);
    }
    consumer.shutdown().await.unwrap();
    producer.shutdown().await.unwrap();
    node.stop().await;
    let all = flushed(provider, &spans).await;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    let sends: Vec<&Span> = all
        .iter()
        .filter(|s| s.name == format!("send {topic}"))
        .collect();
    assert_eq!(sends.len(), 2, "{all:?}");
    for (body, failed) in [("ok", false), ("fail", true)] {
        let work = by_name(&all, &format!("work {body}"));
        let process = all
            .iter()
            .find(|s| s.span_id == work.parent_span_id)
            .unwrap_or_else(|| panic!("no parent of work {body}: {all:?}"));
        assert_eq!(process.name, format!("process {topic}"));
        assert_eq!(process.kind, SpanKind::Consumer as i32);
        assert!(
            sends.iter().any(|s| process
                .links
                .iter()
                .any(|l| l.trace_id == s.trace_id && l.span_id == s.span_id)),
            "process links to its send: {process:?}"
        );
        let status = process.status.as_ref().map_or(0, |s| s.code);
        assert_eq!(
            status == StatusCode::Error as i32,
            failed,
            "{body}: {process:?}"
        );
    }
}

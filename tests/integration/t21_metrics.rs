//! Metrics (issue 9, ADR 0022): one set of instruments feeds `/metrics` and OTLP. Traffic with
//! known counts (sends, acks, a delivery in flight, a dead letter, messages left ready) must
//! arrive with those values at an in-process OTLP receiver, over gRPC and over HTTP; the names
//! a collector's OTLP→Prometheus translation makes of them equal the names `/metrics` shows;
//! every name is in the catalog `docs/metrics.md` documents, and none starts with `_`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vela_sdk::Message;
use vela_telemetry::prometheus::translated_name;

use crate::harness::{Node, unique};

/// What the receiver got, newest last.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<ExportMetricsServiceRequest>>>);

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// An OTLP/gRPC receiver on loopback.
async fn grpc_receiver() -> (Received, std::net::SocketAddr) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = MetricsServiceServer::new(received.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (received, addr)
}

/// An OTLP/HTTP (protobuf) receiver on loopback: `POST /v1/metrics`.
async fn http_receiver() -> (Received, std::net::SocketAddr) {
    let (received, app) = receiver_app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (received, addr)
}

/// The same over HTTPS, with the server certificate of `certs` (signed by its CA).
async fn https_receiver(certs: &crate::t19_tls::Certs) -> (Received, std::net::SocketAddr) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&certs.server_cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&certs.server_key).unwrap();
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let (received, app) = receiver_app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (received, addr)
}

/// The router of an OTLP/HTTP receiver and what it received.
fn receiver_app() -> (Received, axum::Router) {
    use axum::body::Bytes;
    use prost::Message as _;
    let received = Received::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/metrics",
        axum::routing::post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                match ExportMetricsServiceRequest::decode(body) {
                    Ok(request) => {
                        sink.0.lock().unwrap().push(request);
                        (
                            axum::http::StatusCode::OK,
                            [("content-type", "application/x-protobuf")],
                            ExportMetricsServiceResponse {
                                partial_success: None,
                            }
                            .encode_to_vec(),
                        )
                    }
                    Err(_) => (
                        axum::http::StatusCode::BAD_REQUEST,
                        [("content-type", "text/plain")],
                        b"not an export request".to_vec(),
                    ),
                }
            }
        }),
    );
    (received, app)
}

/// One OTLP number or histogram point, flattened: the metric's translated name, its
/// attributes and its value (a histogram's count).
#[derive(Debug, Clone)]
struct Point {
    name: String,
    attrs: BTreeMap<String, String>,
    value: f64,
}

fn points(request: &ExportMetricsServiceRequest) -> Vec<Point> {
    let mut out = Vec::new();
    for rm in &request.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let attrs = |kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
                    kvs.iter()
                        .map(|kv| {
                            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(AnyValue::StringValue(s)) => s.clone(),
                                Some(AnyValue::BoolValue(b)) => b.to_string(),
                                Some(AnyValue::IntValue(i)) => i.to_string(),
                                other => format!("{other:?}"),
                            };
                            (kv.key.clone(), value)
                        })
                        .collect::<BTreeMap<_, _>>()
                };
                let number =
                    |p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint| match p.value {
                        Some(number_data_point::Value::AsInt(i)) => i as f64,
                        Some(number_data_point::Value::AsDouble(d)) => d,
                        None => f64::NAN,
                    };
                match &m.data {
                    Some(Data::Sum(sum)) => {
                        let name = translated_name(&m.name, &m.unit, sum.is_monotonic);
                        for p in &sum.data_points {
                            out.push(Point {
                                name: name.clone(),
                                attrs: attrs(&p.attributes),
                                value: number(p),
                            });
                        }
                    }
                    Some(Data::Gauge(gauge)) => {
                        let name = translated_name(&m.name, &m.unit, false);
                        for p in &gauge.data_points {
                            out.push(Point {
                                name: name.clone(),
                                attrs: attrs(&p.attributes),
                                value: number(p),
                            });
                        }
                    }
                    Some(Data::Histogram(h)) => {
                        let name = translated_name(&m.name, &m.unit, false);
                        for p in &h.data_points {
                            out.push(Point {
                                name: name.clone(),
                                attrs: attrs(&p.attributes),
                                value: p.count as f64,
                            });
                        }
                    }
                    other => panic!("{}: unexpected OTLP data {other:?}", m.name),
                }
            }
        }
    }
    out
}

/// The sum of the points of `name` whose attributes include every `(key, value)` of `having`.
fn total(points: &[Point], name: &str, having: &[(&str, &str)]) -> f64 {
    points
        .iter()
        .filter(|p| p.name == name)
        .filter(|p| {
            having
                .iter()
                .all(|(k, v)| p.attrs.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|p| p.value)
        .sum()
}

/// Waits for an export in which `check` holds, and returns its points.
async fn until_exported(received: &Received, check: impl Fn(&[Point]) -> bool) -> Vec<Point> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let latest = received.0.lock().unwrap().last().cloned();
        if let Some(request) = latest {
            let points = points(&request);
            if check(&points) {
                return points;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no OTLP export with the expected values: {:?}",
            received.0.lock().unwrap().last().map(points)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The body of `/metrics` at `addr`.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// The family names of a scrape (`# TYPE` lines; counters with their `_total`). `/metrics`
/// answers this test's plain request in the Prometheus text format.
fn scraped_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| match l.split_once(' ') {
            // The Prometheus text format names a counter family `x_total` (OpenMetrics: `x`).
            Some((name, "counter")) if !name.ends_with("_total") => format!("{name}_total"),
            Some((name, _)) => name.to_owned(),
            None => l.to_owned(),
        })
        .collect()
}

/// The value of the sample line of `name` whose labels include every `key="value"` given.
fn scraped(text: &str, name: &str, having: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            having
                .iter()
                .all(|(k, v)| l.contains(&format!(r#"{k}="{v}""#)))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_and_metrics_carry_the_same_names_and_the_counts_of_the_traffic() {
    let (received, otlp) = grpc_receiver().await;
    let node = Node::start_with(|c| {
        c.telemetry.otlp.endpoint = Some(format!("http://{otlp}"));
        c.telemetry.otlp.interval = Duration::from_secs(1);
        c.cluster.name = Some("metrics-test".into());
    })
    .await;
    let topic = unique("metrics");
    let group = unique("metrics-g");
    node.admin(&["group", "create", &group, "--max-attempts", "1"])
        .await
        .unwrap();
    let producer = node.producer(&topic).await;
    let consumer = node.consumer(&group, &topic, "*").await;
    assert!(
        consumer
            .receive(1, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    for i in 0..6 {
        let message = Message::builder(&topic)
            .body(format!("m{i}"))
            .build()
            .unwrap();
        producer.send(message).await.unwrap();
    }
    // Two acknowledged, one left in flight until it dead-letters (one attempt allowed), one
    // more left in flight, two never received.
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(
            consumer
                .receive(3 - got.len() as u32, Duration::from_secs(60))
                .await
                .unwrap(),
        );
    }
    for m in &got[..2] {
        consumer.ack(m).await.unwrap();
    }
    node.clock.advance(Duration::from_secs(61));
    let mut more = Vec::new();
    while more.is_empty() {
        more = consumer.receive(1, Duration::from_secs(60)).await.unwrap();
    }

    let topic_label = [("topic", topic.as_str())];
    let group_labels = [
        ("topic", topic.as_str()),
        ("consumer_group", group.as_str()),
    ];
    let exported = until_exported(&received, |p| {
        total(p, "rocketmq_messages_in_total", &topic_label) == 6.0
            && total(p, "rocketmq_send_to_dlq_messages_total", &group_labels) == 1.0
            && total(p, "rocketmq_consumer_lag_messages", &group_labels) == 3.0
    })
    .await;
    let text = scrape(node.http()).await;

    // The counts, alike in both.
    for (name, having, want) in [
        ("rocketmq_messages_in_total", &topic_label[..], 6.0),
        ("rocketmq_message_size", &topic_label[..], 6.0),
        ("rocketmq_messages_out_total", &group_labels[..], 4.0),
        (
            "rocketmq_send_to_dlq_messages_total",
            &group_labels[..],
            1.0,
        ),
        ("rocketmq_consumer_lag_messages", &group_labels[..], 3.0),
        (
            "rocketmq_consumer_inflight_messages",
            &group_labels[..],
            1.0,
        ),
        ("rocketmq_consumer_ready_messages", &group_labels[..], 2.0),
    ] {
        assert_eq!(total(&exported, name, having), want, "OTLP {name}");
        let scraped_name = if name == "rocketmq_message_size" {
            "rocketmq_message_size_count"
        } else {
            name
        };
        assert_eq!(
            scraped(&text, scraped_name, having),
            want,
            "/metrics {name}\n{text}"
        );
    }
    assert!(total(&exported, "rocketmq_throughput_in_total", &topic_label) == 12.0);
    assert!(
        scraped(&text, "rocketmq_consumer_lag_latency", &group_labels) >= 61_000.0,
        "{text}"
    );
    assert!(
        total(
            &exported,
            "rocketmq_rpc_latency",
            &[("request_code", "SendMessage"), ("response_code", "OK")]
        ) >= 6.0
    );
    // Labels: the cluster's name and every role of the standalone process.
    for role in ["proxy", "store", "controller"] {
        assert!(
            exported.iter().any(
                |p| p.attrs.get("node_type").map(String::as_str) == Some(role)
                    && p.attrs.get("cluster").map(String::as_str) == Some("metrics-test")
            ),
            "no {role} metric"
        );
    }

    // One catalog: what OTLP carries translates to exactly the names /metrics shows, and both
    // are documented.
    let otlp_names: BTreeSet<String> = exported.iter().map(|p| p.name.clone()).collect();
    let scraped_names = scraped_names(&text);
    let catalog: BTreeSet<String> = vela_telemetry::catalog::METRICS
        .iter()
        .map(|s| s.to_string())
        .collect();
    for name in otlp_names.iter().chain(&scraped_names) {
        assert!(!name.starts_with('_'), "{name}");
        assert!(catalog.contains(name), "{name} is not in docs/metrics.md");
    }
    for name in [
        "rocketmq_messages_in_total",
        "rocketmq_messages_out_total",
        "rocketmq_throughput_in_total",
        "rocketmq_throughput_out_total",
        "rocketmq_message_size",
        "rocketmq_rpc_latency",
        "rocketmq_send_to_dlq_messages_total",
        "rocketmq_consumer_lag_messages",
        "rocketmq_consumer_lag_latency",
        "rocketmq_consumer_inflight_messages",
        "rocketmq_consumer_ready_messages",
        "rocketmq_consumer_queueing_latency",
        "rocketmq_consumer_connections",
        "rocketmq_producer_connections",
        "rocketmq_proxy_up",
        "rocketmq_storage_size",
        "rocketmq_topic_number",
        "rocketmq_consumer_group_number",
        "vela_raft_term",
        "vela_raft_leader",
        "vela_raft_apply_lag_entries",
        "vela_raft_leader_changes_total",
        "vela_raft_fsync_seconds",
        "vela_raft_fsync_batch_appends",
        "vela_store_log_segments",
        "vela_store_log_bytes",
        "vela_raft_write_seconds",
        "vela_store_index_bytes",
        "vela_store_runtime_lag_seconds",
        "vela_store_saturated",
    ] {
        assert!(otlp_names.contains(name), "{name} not exported over OTLP");
        assert!(scraped_names.contains(name), "{name} not at /metrics");
    }
    drop((producer, consumer));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_over_http_delivers_the_same_counts() {
    let (received, otlp) = http_receiver().await;
    let node = Node::start_with(|c| {
        c.telemetry.otlp.endpoint = Some(format!("http://{otlp}"));
        c.telemetry.otlp.protocol = vela_telemetry::otlp::OtlpProtocol::Http;
        c.telemetry.otlp.interval = Duration::from_secs(1);
    })
    .await;
    sends_are_exported(&node, &received, "metrics-http", 3).await;
    node.stop().await;
}

/// Sends `n` messages to a new topic and waits until `received` has them counted.
async fn sends_are_exported(node: &Node, received: &Received, topic: &str, n: u32) {
    let topic = unique(topic);
    let producer = node.producer(&topic).await;
    for _ in 0..n {
        producer
            .send(Message::builder(&topic).body("x").build().unwrap())
            .await
            .unwrap();
    }
    let topic_label = [("topic", topic.as_str())];
    until_exported(received, |p| {
        total(p, "rocketmq_messages_in_total", &topic_label) == f64::from(n)
    })
    .await;
}

/// OTLP/HTTP over TLS to a collector whose certificate an internal CA signed, trusted through
/// `telemetry.otlp.ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_over_https_trusts_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = crate::t19_tls::make_certs(dir.path(), "vela-otlp-test-ca");
    let (received, otlp) = https_receiver(&certs).await;
    let ca = certs.ca.clone();
    let node = Node::start_with(|c| {
        c.telemetry.otlp.endpoint = Some(format!("https://{otlp}"));
        c.telemetry.otlp.protocol = vela_telemetry::otlp::OtlpProtocol::Http;
        c.telemetry.otlp.interval = Duration::from_secs(1);
        c.telemetry.otlp.ca_file = Some(ca);
    })
    .await;
    sends_are_exported(&node, &received, "metrics-https", 2).await;
    node.stop().await;
}

/// Client metrics: a proxy with `proxy.client_metrics_endpoint` names the collector in its
/// Settings, and vela-sdk exports `rocketmq_send_cost_time` and `rocketmq_delivery_latency`
/// (a push consumer also `rocketmq_await_time` and `rocketmq_process_time`) there (without one, Settings say `on: false`: `settings.rs` and `sdk/src/metrics.rs` test
/// both sides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_export_their_metrics_where_the_proxy_says() {
    use vela_sdk::{ClientConfig, FilterExpression, Producer, SimpleConsumer};
    let (received, collector) = grpc_receiver().await;
    let node = Node::start_with(|c| {
        c.proxy.client_metrics_endpoint = Some(collector.to_string());
    })
    .await;
    let config = ClientConfig::builder()
        .endpoint(node.endpoint())
        .metrics_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let topic = unique("client-metrics");
    let group = unique("client-metrics-g");
    let producer = Producer::builder(config.clone())
        .topics([topic.as_str()])
        .build()
        .await
        .unwrap();
    let consumer = SimpleConsumer::builder(config.clone(), &group)
        .subscribe(&topic, FilterExpression::tag("*"))
        .await_duration(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    assert!(
        consumer
            .receive(1, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    for _ in 0..3 {
        producer
            .send(Message::builder(&topic).body("m").build().unwrap())
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    while got.is_empty() {
        got = consumer.receive(1, Duration::from_secs(30)).await.unwrap();
    }
    let topic_label = [("topic", topic.as_str())];
    let points = until_exported(&received, |p| {
        total(p, "rocketmq_send_cost_time", &topic_label) == 3.0
    })
    .await;
    assert_eq!(
        total(
            &points,
            "rocketmq_send_cost_time",
            &[("topic", topic.as_str()), ("invocation_status", "success")]
        ),
        3.0
    );
    let points = until_exported(&received, |p| {
        total(p, "rocketmq_delivery_latency", &topic_label) >= 1.0
    })
    .await;
    assert!(
        points.iter().any(|p| p.name == "rocketmq_delivery_latency"
            && p.attrs.get("consumer_group") == Some(&group)),
        "{points:?}"
    );
    // A push consumer also records how long each message waited for its listener and how
    // long the listener ran, by result.
    let push = vela_sdk::PushConsumer::builder(config, unique("client-metrics-push"))
        .subscribe(&topic, FilterExpression::tag("*"))
        .listener(|_m| async { vela_sdk::ConsumeResult::Success })
        .build()
        .await
        .unwrap();
    let success = [("topic", topic.as_str()), ("invocation_status", "success")];
    until_exported(&received, |p| {
        total(p, "rocketmq_process_time", &success) == 3.0
            && total(p, "rocketmq_await_time", &topic_label) == 3.0
    })
    .await;
    push.shutdown().await.unwrap();
    drop((producer, consumer, got));
    node.stop().await;
}

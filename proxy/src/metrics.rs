//! The proxy's metrics (`docs/metrics.md`), named as RocketMQ 5's proxy and broker name them so
//! existing queries and alerts keep working. Recorded once per request or batch on
//! OpenTelemetry instruments; the process serves them at `/metrics` and over OTLP.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableCounter, ObservableGauge};
use parking_lot::Mutex;
use vela_proto::pb::rocketmq::{self as pb, ClientType, Code, Language};
use vela_telemetry::{KeyValue, MetricsHub, NodeLabels, NodeType, is_system};

/// RocketMQ's message-size buckets, bytes.
const SIZE_BUCKETS: [f64; 6] = [
    1024.0,
    4096.0,
    512.0 * 1024.0,
    1024.0 * 1024.0,
    2.0 * 1024.0 * 1024.0,
    4.0 * 1024.0 * 1024.0,
];
/// RocketMQ's RPC-latency buckets, milliseconds.
const RPC_BUCKETS_MS: [f64; 9] = [1.0, 3.0, 5.0, 7.0, 10.0, 100.0, 1000.0, 2000.0, 3000.0];

/// Auth decisions by result (`vela_auth_decisions_total`), counted by the guard.
#[derive(Debug, Default)]
pub(crate) struct AuthDecisions {
    allowed: AtomicU64,
    unauthenticated: AtomicU64,
    forbidden: AtomicU64,
    unavailable: AtomicU64,
}

impl AuthDecisions {
    pub fn count<T>(&self, decided: &Result<T, crate::auth::AuthFailure>) {
        use crate::auth::AuthFailure;
        let counter = match decided {
            Ok(_) => &self.allowed,
            Err(AuthFailure::Unauthenticated(_)) => &self.unauthenticated,
            Err(AuthFailure::Forbidden(_)) => &self.forbidden,
            Err(AuthFailure::Unavailable(_)) => &self.unavailable,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn by_result(&self) -> [(&'static str, u64); 4] {
        [
            ("allowed", self.allowed.load(Ordering::Relaxed)),
            (
                "unauthenticated",
                self.unauthenticated.load(Ordering::Relaxed),
            ),
            ("forbidden", self.forbidden.load(Ordering::Relaxed)),
            ("unavailable", self.unavailable.load(Ordering::Relaxed)),
        ]
    }
}

/// Who is on one Telemetry stream, as the connection gauges count it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Connection {
    producer: bool,
    language: String,
    version: String,
    consume_mode: &'static str,
}

/// The proxy's metrics; make once per process, share the `Arc`.
pub struct ProxyMetrics {
    labels: NodeLabels,
    messages_in: Counter<u64>,
    throughput_in: Counter<u64>,
    message_size: Histogram<u64>,
    messages_out: Counter<u64>,
    throughput_out: Counter<u64>,
    dead_letters: Counter<u64>,
    commits: Counter<u64>,
    rollbacks: Counter<u64>,
    transaction_checks: Counter<u64>,
    rpc_latency: Histogram<f64>,
    connections: Arc<Mutex<HashMap<u64, Connection>>>,
    auth_decisions: Arc<AuthDecisions>,
    _gauges: Vec<ObservableGauge<i64>>,
    _auth_counter: ObservableCounter<u64>,
}

impl std::fmt::Debug for ProxyMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyMetrics").finish_non_exhaustive()
    }
}

impl ProxyMetrics {
    /// Makes the instruments on `meter`. `proxy_mode` is `local` (standalone) or `cluster`.
    pub fn new(meter: &Meter, labels: NodeLabels, proxy_mode: &'static str) -> Arc<Self> {
        let counter = |name: &'static str, help: &'static str| {
            meter.u64_counter(name).with_description(help).build()
        };
        let connections: Arc<Mutex<HashMap<u64, Connection>>> = Arc::default();
        let connection_gauge = |producers: bool| {
            let (name, help) = if producers {
                (
                    "rocketmq_producer_connections",
                    "Producers with an open Telemetry stream to this proxy",
                )
            } else {
                (
                    "rocketmq_consumer_connections",
                    "Consumers with an open Telemetry stream to this proxy",
                )
            };
            let connections = connections.clone();
            let labels = labels.clone();
            meter
                .i64_observable_gauge(name)
                .with_description(help)
                .with_callback(move |o| {
                    let mut counts: BTreeMap<Connection, i64> = BTreeMap::new();
                    for c in connections.lock().values() {
                        if c.producer == producers {
                            *counts.entry(c.clone()).or_default() += 1;
                        }
                    }
                    for (c, count) in counts {
                        let mut attrs = labels.with([
                            KeyValue::new("language", c.language),
                            KeyValue::new("version", c.version),
                            KeyValue::new("protocol_type", "grpc"),
                        ]);
                        if !producers {
                            attrs.push(KeyValue::new("consume_mode", c.consume_mode));
                        }
                        o.observe(count, &attrs);
                    }
                })
                .build()
        };
        let up = {
            let attrs = labels.with([KeyValue::new("proxy_mode", proxy_mode)]);
            meter
                .i64_observable_gauge("rocketmq_proxy_up")
                .with_description("1 while the proxy serves")
                .with_callback(move |o| o.observe(1, &attrs))
                .build()
        };
        let gauges = vec![connection_gauge(true), connection_gauge(false), up];
        let auth_decisions = Arc::new(AuthDecisions::default());
        let auth_counter = {
            let (decisions, labels) = (auth_decisions.clone(), labels.clone());
            meter
                .u64_observable_counter("vela_auth_decisions_total")
                .with_description(
                    "Requests the proxy authenticated and authorized, by result (auth on only)",
                )
                .with_callback(move |o| {
                    for (result, count) in decisions.by_result() {
                        if count > 0 {
                            o.observe(count, &labels.with([KeyValue::new("result", result)]));
                        }
                    }
                })
                .build()
        };
        Arc::new(Self {
            messages_in: counter("rocketmq_messages_in_total", "Messages produced"),
            throughput_in: counter(
                "rocketmq_throughput_in_total",
                "Body bytes of the messages produced",
            ),
            message_size: meter
                .u64_histogram("rocketmq_message_size")
                .with_description("Body size of each message produced, bytes")
                .with_boundaries(SIZE_BUCKETS.to_vec())
                .build(),
            messages_out: counter("rocketmq_messages_out_total", "Messages delivered"),
            throughput_out: counter(
                "rocketmq_throughput_out_total",
                "Body bytes of the messages delivered",
            ),
            dead_letters: counter(
                "rocketmq_send_to_dlq_messages_total",
                "Messages moved to a group's dead-letter queue",
            ),
            commits: counter(
                "rocketmq_commit_messages_total",
                "Transaction half messages committed (by their producer or its checker)",
            ),
            rollbacks: counter(
                "rocketmq_rollback_messages_total",
                "Transaction half messages rolled back by their producer or its checker",
            ),
            transaction_checks: counter(
                "vela_transaction_checks_total",
                "Transaction check-backs sent to producers",
            ),
            rpc_latency: meter
                .f64_histogram("rocketmq_rpc_latency")
                .with_description(
                    "Time to answer a client RPC, milliseconds (ReceiveMessage includes its long poll)",
                )
                .with_boundaries(RPC_BUCKETS_MS.to_vec())
                .build(),
            connections,
            auth_decisions,
            _gauges: gauges,
            _auth_counter: auth_counter,
            labels,
        })
    }

    /// Where the auth guard counts its decisions.
    pub(crate) fn auth_decisions(&self) -> Arc<AuthDecisions> {
        self.auth_decisions.clone()
    }

    /// Metrics on a hub of their own (tests, embedding without `/metrics`).
    pub fn unregistered() -> Arc<Self> {
        Self::new(
            &MetricsHub::standalone().meter("vela-proxy"),
            NodeLabels::unnamed(NodeType::Proxy),
            "local",
        )
    }

    /// Messages of one kind accepted for `topic`; `sizes` are their body lengths.
    pub(crate) fn produced(
        &self,
        topic: &str,
        message_type: &'static str,
        sizes: impl Iterator<Item = usize>,
    ) {
        let (mut count, mut bytes) = (0u64, 0u64);
        let size_attrs = self.labels.with([
            KeyValue::new("topic", topic.to_owned()),
            KeyValue::new("message_type", message_type),
        ]);
        for size in sizes {
            count += 1;
            bytes += size as u64;
            self.message_size.record(size as u64, &size_attrs);
        }
        let mut attrs = size_attrs;
        attrs.push(KeyValue::new("is_system", is_system(topic)));
        self.messages_in.add(count, &attrs);
        self.throughput_in.add(bytes, &attrs);
    }

    /// Messages delivered to `group`; `retried` of them (and `retried_bytes`) were
    /// redeliveries.
    pub(crate) fn delivered(
        &self,
        topic: &str,
        group: &str,
        (messages, bytes): (u64, u64),
        (retried, retried_bytes): (u64, u64),
    ) {
        let system = is_system(topic) || is_system(group);
        for (is_retry, count, size) in [
            (false, messages - retried, bytes - retried_bytes),
            (true, retried, retried_bytes),
        ] {
            if count == 0 {
                continue;
            }
            let attrs = self.labels.with([
                KeyValue::new("topic", topic.to_owned()),
                KeyValue::new("consumer_group", group.to_owned()),
                KeyValue::new("is_retry", is_retry),
                KeyValue::new("is_system", system),
            ]);
            self.messages_out.add(count, &attrs);
            self.throughput_out.add(size, &attrs);
        }
    }

    /// A consumer forwarded a message of `topic` to `group`'s dead-letter queue.
    pub(crate) fn dead_lettered(&self, topic: &str, group: &str) {
        self.dead_letters.add(
            1,
            &self.labels.with([
                KeyValue::new("topic", topic.to_owned()),
                KeyValue::new("consumer_group", group.to_owned()),
            ]),
        );
    }

    /// A transaction ended through this proxy.
    pub(crate) fn transaction_ended(&self, topic: &str, committed: bool) {
        let attrs = self.labels.with([KeyValue::new("topic", topic.to_owned())]);
        if committed {
            self.commits.add(1, &attrs);
        } else {
            self.rollbacks.add(1, &attrs);
        }
    }

    /// A check-back went to a producer of `topic`.
    pub(crate) fn transaction_checked(&self, topic: &str) {
        self.transaction_checks.add(
            1,
            &self.labels.with([KeyValue::new("topic", topic.to_owned())]),
        );
    }

    pub(crate) fn observe_rpc(&self, rpc: &'static str, code: i32, elapsed: Duration) {
        let code = Code::try_from(code).map_or("UNKNOWN", |c| c.as_str_name());
        self.rpc_latency.record(
            elapsed.as_secs_f64() * 1000.0,
            &self.labels.with([
                KeyValue::new("protocol_type", "grpc"),
                KeyValue::new("request_code", rpc),
                KeyValue::new("response_code", code),
            ]),
        );
    }

    /// Telemetry stream `stream` sent `settings`: it is counted as a producer or consumer
    /// connection until [`ProxyMetrics::stream_closed`].
    pub(crate) fn settings_seen(&self, stream: u64, settings: &pb::Settings) {
        let client_type = settings
            .client_type
            .and_then(|t| ClientType::try_from(t).ok());
        let mut connections = self.connections.lock();
        let known = connections.get(&stream).cloned();
        let producer = match (&settings.pub_sub, client_type) {
            (Some(pb::settings::PubSub::Publishing(_)), _) | (None, Some(ClientType::Producer)) => {
                true
            }
            (Some(pb::settings::PubSub::Subscription(_)), _) | (None, Some(_)) => false,
            (None, None) => match &known {
                Some(k) => k.producer,
                None => return,
            },
        };
        let consume_mode = match client_type {
            Some(ClientType::PushConsumer | ClientType::LitePushConsumer) => "push",
            Some(ClientType::SimpleConsumer | ClientType::LiteSimpleConsumer) => "simple",
            Some(ClientType::PullConsumer) => "pull",
            _ => known.as_ref().map_or("unknown", |k| k.consume_mode),
        };
        let (language, version) = match &settings.user_agent {
            Some(ua) => (
                Language::try_from(ua.language)
                    .map_or("unknown", |l| l.as_str_name())
                    .to_ascii_lowercase(),
                ua.version.chars().take(32).collect(),
            ),
            None => known.as_ref().map_or_else(
                || ("unknown".to_owned(), String::new()),
                |k| (k.language.clone(), k.version.clone()),
            ),
        };
        connections.insert(
            stream,
            Connection {
                producer,
                language,
                version,
                consume_mode: if producer { "" } else { consume_mode },
            },
        );
    }

    pub(crate) fn stream_closed(&self, stream: u64) {
        self.connections.lock().remove(&stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_rocketmq_names() {
        let hub = MetricsHub::standalone();
        let m = ProxyMetrics::new(
            &hub.meter("vela-proxy"),
            NodeLabels::new("c", NodeType::Proxy, "p"),
            "local",
        );
        m.produced("orders", "normal", [4usize, 6].into_iter());
        m.delivered("orders", "billing", (3, 15), (1, 5));
        m.observe_rpc("SendMessage", Code::Ok as i32, Duration::from_millis(3));
        m.transaction_ended("pay", true);
        m.transaction_ended("pay", true);
        m.transaction_ended("pay", false);
        m.transaction_checked("pay");
        m.dead_lettered("orders", "billing");
        m.settings_seen(
            7,
            &pb::Settings {
                client_type: Some(ClientType::SimpleConsumer as i32),
                user_agent: Some(pb::Ua {
                    language: Language::Python as i32,
                    version: "5.1.2".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        m.settings_seen(
            8,
            &pb::Settings {
                client_type: Some(ClientType::Producer as i32),
                ..Default::default()
            },
        );
        m.stream_closed(8);
        let text = hub.prometheus_text().expect("encodes");
        // Labels come sorted by name; the common ones are cluster, node_id, node_type.
        let c = r#"cluster="c""#;
        let n = r#"node_id="p",node_type="proxy""#;
        for line in [
            format!(r#"rocketmq_commit_messages_total{{{c},{n},topic="pay"}} 2"#),
            format!(r#"rocketmq_rollback_messages_total{{{c},{n},topic="pay"}} 1"#),
            format!(r#"vela_transaction_checks_total{{{c},{n},topic="pay"}} 1"#),
            format!(
                r#"rocketmq_messages_in_total{{{c},is_system="false",message_type="normal",{n},topic="orders"}} 2"#
            ),
            format!(
                r#"rocketmq_throughput_in_total{{{c},is_system="false",message_type="normal",{n},topic="orders"}} 10"#
            ),
            format!(
                r#"rocketmq_message_size_count{{{c},message_type="normal",{n},topic="orders"}} 2"#
            ),
            format!(
                r#"rocketmq_messages_out_total{{{c},consumer_group="billing",is_retry="false",is_system="false",{n},topic="orders"}} 2"#
            ),
            format!(
                r#"rocketmq_messages_out_total{{{c},consumer_group="billing",is_retry="true",is_system="false",{n},topic="orders"}} 1"#
            ),
            format!(
                r#"rocketmq_throughput_out_total{{{c},consumer_group="billing",is_retry="false",is_system="false",{n},topic="orders"}} 10"#
            ),
            format!(
                r#"rocketmq_send_to_dlq_messages_total{{{c},consumer_group="billing",{n},topic="orders"}} 1"#
            ),
            format!(
                r#"rocketmq_rpc_latency_count{{{c},{n},protocol_type="grpc",request_code="SendMessage",response_code="OK"}} 1"#
            ),
            format!(
                r#"rocketmq_consumer_connections{{{c},consume_mode="simple",language="python",{n},protocol_type="grpc",version="5.1.2"}} 1"#
            ),
            format!(r#"rocketmq_proxy_up{{{c},{n},proxy_mode="local"}} 1"#),
        ] {
            assert!(text.contains(&line), "{line}\nnot in\n{text}");
        }
        assert!(
            !text.contains("rocketmq_producer_connections{"),
            "the producer's stream closed:\n{text}"
        );
    }
}

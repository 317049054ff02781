//! Prometheus metrics of the proxy, named as RocketMQ names them (`rocketmq-facts.md` §6.1)
//! so existing dashboards keep working, plus an RPC latency histogram. Updated once per
//! batch, not per message.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InLabels {
    topic: String,
    message_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutLabels {
    topic: String,
    consumer_group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: &'static str,
    code: i32,
}

type LatencyFamily = Family<RpcLabels, Histogram, fn() -> Histogram>;

/// The proxy's metrics; register once, share the `Arc`.
#[derive(Debug)]
pub struct ProxyMetrics {
    messages_in: Family<InLabels, Counter>,
    messages_out: Family<OutLabels, Counter>,
    throughput_in: Family<InLabels, Counter>,
    throughput_out: Family<OutLabels, Counter>,
    commits: Family<TopicLabel, Counter>,
    rollbacks: Family<TopicLabel, Counter>,
    transaction_checks: Family<TopicLabel, Counter>,
    rpc_latency: LatencyFamily,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~33 s: unary calls sit at the low end, long polls near 20 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self {
            messages_in: Family::default(),
            messages_out: Family::default(),
            throughput_in: Family::default(),
            throughput_out: Family::default(),
            commits: Family::default(),
            rollbacks: Family::default(),
            transaction_checks: Family::default(),
            rpc_latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl ProxyMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Self::default();
        // prometheus-client appends `_total` to counters.
        registry.register(
            "rocketmq_messages_in",
            "Messages produced",
            m.messages_in.clone(),
        );
        registry.register(
            "rocketmq_messages_out",
            "Messages delivered",
            m.messages_out.clone(),
        );
        registry.register(
            "rocketmq_throughput_in",
            "Bytes produced",
            m.throughput_in.clone(),
        );
        registry.register(
            "rocketmq_throughput_out",
            "Bytes delivered",
            m.throughput_out.clone(),
        );
        registry.register(
            "rocketmq_commit_messages",
            "Transaction half messages committed (by their producer or its checker)",
            m.commits.clone(),
        );
        registry.register(
            "rocketmq_rollback_messages",
            "Transaction half messages rolled back by their producer or its checker",
            m.rollbacks.clone(),
        );
        registry.register(
            "vela_transaction_checks",
            "Transaction check-backs sent to producers",
            m.transaction_checks.clone(),
        );
        registry.register(
            "vela_rpc_latency_seconds",
            "Latency of MessagingService calls by RPC and response code",
            m.rpc_latency.clone(),
        );
        Arc::new(m)
    }

    /// Metrics that are not exported anywhere (tests, embedding without a registry).
    pub fn unregistered() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub(crate) fn produced(
        &self,
        topic: &str,
        message_type: &'static str,
        messages: u64,
        bytes: u64,
    ) {
        let labels = InLabels {
            topic: topic.to_owned(),
            message_type,
        };
        self.messages_in.get_or_create(&labels).inc_by(messages);
        self.throughput_in.get_or_create(&labels).inc_by(bytes);
    }

    pub(crate) fn delivered(&self, topic: &str, group: &str, messages: u64, bytes: u64) {
        let labels = OutLabels {
            topic: topic.to_owned(),
            consumer_group: group.to_owned(),
        };
        self.messages_out.get_or_create(&labels).inc_by(messages);
        self.throughput_out.get_or_create(&labels).inc_by(bytes);
    }

    /// A transaction ended through this proxy.
    pub(crate) fn transaction_ended(&self, topic: &str, committed: bool) {
        let labels = TopicLabel {
            topic: topic.to_owned(),
        };
        if committed {
            self.commits.get_or_create(&labels).inc();
        } else {
            self.rollbacks.get_or_create(&labels).inc();
        }
    }

    /// A check-back went to a producer of `topic`.
    pub(crate) fn transaction_checked(&self, topic: &str) {
        self.transaction_checks
            .get_or_create(&TopicLabel {
                topic: topic.to_owned(),
            })
            .inc();
    }

    pub(crate) fn observe_rpc(&self, rpc: &'static str, code: i32, elapsed: Duration) {
        self.rpc_latency
            .get_or_create(&RpcLabels { rpc, code })
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn exports_rocketmq_names() {
        let mut registry = Registry::default();
        let m = ProxyMetrics::register(&mut registry);
        m.produced("orders", "normal", 2, 10);
        m.delivered("orders", "billing", 1, 5);
        m.observe_rpc("SendMessage", 20000, Duration::from_millis(3));
        m.transaction_ended("pay", true);
        m.transaction_ended("pay", true);
        m.transaction_ended("pay", false);
        m.transaction_checked("pay");
        let mut text = String::new();
        encode(&mut text, &registry).expect("encodes");
        for line in [
            r#"rocketmq_commit_messages_total{topic="pay"} 2"#,
            r#"rocketmq_rollback_messages_total{topic="pay"} 1"#,
            r#"vela_transaction_checks_total{topic="pay"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            text.contains(r#"rocketmq_messages_in_total{topic="orders",message_type="normal"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"rocketmq_throughput_in_total{topic="orders",message_type="normal"} 10"#
            )
        );
        assert!(
            text.contains(
                r#"rocketmq_messages_out_total{topic="orders",consumer_group="billing"} 1"#
            )
        );
        assert!(text.contains(
            r#"rocketmq_throughput_out_total{topic="orders",consumer_group="billing"} 5"#
        ));
        assert!(
            text.contains(r#"vela_rpc_latency_seconds_count{rpc="SendMessage",code="20000"} 1"#)
        );
    }
}

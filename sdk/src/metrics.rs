//! The client's own metrics, with the official RocketMQ clients' names and buckets
//! (`rocketmq_send_cost_time`, `rocketmq_delivery_latency`), exported over OTLP/gRPC to the
//! collector the server names in its Settings (`metric.on` with `endpoints`), every
//! `ClientConfig::metrics_interval`, and once more on shutdown. Each client has its own meter
//! provider; nothing is exported while the server names no collector.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;
use parking_lot::Mutex;
use tracing::{debug, warn};
use vela_telemetry::otlp::{OtlpConfig, Pusher};
use vela_telemetry::{MetricsHub, TelemetryConfig};

/// The official clients' buckets, milliseconds.
const COST_BUCKETS_MS: [f64; 7] = [1.0, 5.0, 10.0, 20.0, 50.0, 200.0, 500.0];
/// The official clients' buckets for a push consumer's wait before its listener, milliseconds.
const AWAIT_BUCKETS_MS: [f64; 7] = [1.0, 5.0, 20.0, 100.0, 1000.0, 5000.0, 10000.0];
/// The official clients' buckets for a push consumer's listener run, milliseconds.
const PROCESS_BUCKETS_MS: [f64; 7] = [1.0, 5.0, 10.0, 100.0, 1000.0, 10000.0, 60000.0];

/// One client's instruments and its exporter.
pub(crate) struct ClientMetrics {
    hub: MetricsHub,
    client_id: String,
    send_cost: Histogram<f64>,
    delivery_latency: Histogram<f64>,
    await_time: Histogram<f64>,
    process_time: Histogram<f64>,
    /// The collector exported to now, and its exporter.
    pusher: Mutex<Option<(String, Arc<Pusher>)>>,
}

impl ClientMetrics {
    pub fn new(client_id: &str) -> Arc<Self> {
        let hub = MetricsHub::new(&TelemetryConfig {
            resource: [("service.name".to_owned(), "rocketmq-client".to_owned())].into(),
            ..TelemetryConfig::default()
        });
        let meter = hub.meter("vela-sdk");
        Arc::new(Self {
            send_cost: meter
                .f64_histogram("rocketmq_send_cost_time")
                .with_description("Time a send took, retries included, milliseconds")
                .with_boundaries(COST_BUCKETS_MS.to_vec())
                .build(),
            delivery_latency: meter
                .f64_histogram("rocketmq_delivery_latency")
                .with_description(
                    "From when a message became deliverable to when this client received it, milliseconds",
                )
                .with_boundaries(COST_BUCKETS_MS.to_vec())
                .build(),
            await_time: meter
                .f64_histogram("rocketmq_await_time")
                .with_description(
                    "From when a push consumer received a message to when its listener started, milliseconds",
                )
                .with_boundaries(AWAIT_BUCKETS_MS.to_vec())
                .build(),
            process_time: meter
                .f64_histogram("rocketmq_process_time")
                .with_description("How long a push consumer's listener ran, milliseconds")
                .with_boundaries(PROCESS_BUCKETS_MS.to_vec())
                .build(),
            hub,
            client_id: client_id.to_owned(),
            pusher: Mutex::new(None),
        })
    }

    /// One send call to `topic` (each of its messages is counted).
    pub fn sent(&self, topic: &str, messages: usize, ok: bool, took: Duration) {
        let attrs = [
            KeyValue::new("topic", topic.to_owned()),
            KeyValue::new("client_id", self.client_id.clone()),
            KeyValue::new("invocation_status", if ok { "success" } else { "failure" }),
        ];
        let ms = took.as_secs_f64() * 1000.0;
        for _ in 0..messages {
            self.send_cost.record(ms, &attrs);
        }
    }

    /// A message of `topic` received for `group`, deliverable for `latency`.
    pub fn delivered(&self, topic: &str, group: &str, latency: Duration) {
        self.delivery_latency.record(
            latency.as_secs_f64() * 1000.0,
            &[
                KeyValue::new("topic", topic.to_owned()),
                KeyValue::new("client_id", self.client_id.clone()),
                KeyValue::new("consumer_group", group.to_owned()),
            ],
        );
    }

    /// A push consumer's listener took a message of `topic` for `group` after it waited
    /// `awaited` since its receipt, and ran for `took` (`ok`: it answered success).
    pub fn consumed(&self, topic: &str, group: &str, awaited: Duration, took: Duration, ok: bool) {
        let labels = [
            KeyValue::new("topic", topic.to_owned()),
            KeyValue::new("client_id", self.client_id.clone()),
            KeyValue::new("consumer_group", group.to_owned()),
        ];
        self.await_time
            .record(awaited.as_secs_f64() * 1000.0, &labels);
        let [topic, client_id, group] = labels;
        self.process_time.record(
            took.as_secs_f64() * 1000.0,
            &[
                topic,
                client_id,
                group,
                KeyValue::new("invocation_status", if ok { "success" } else { "failure" }),
            ],
        );
    }

    /// Exports what is recorded to `collector` (`host:port`), or drops the exporter when the
    /// server names none. Call on the tokio runtime.
    pub async fn export_to(&self, collector: Option<&str>, timeout: Duration) {
        let Some(collector) = collector else {
            if self.pusher.lock().take().is_some() {
                debug!(client_id = %self.client_id, "the server no longer asks for client metrics");
            }
            return;
        };
        let pusher = {
            let mut current = self.pusher.lock();
            match current.as_ref() {
                Some((at, pusher)) if at == collector => pusher.clone(),
                _ => {
                    let config = OtlpConfig {
                        endpoint: Some(format!("http://{collector}")),
                        timeout,
                        ..OtlpConfig::default()
                    };
                    match Pusher::new(&config) {
                        Ok(pusher) => {
                            let pusher = Arc::new(pusher);
                            *current = Some((collector.to_owned(), pusher.clone()));
                            pusher
                        }
                        Err(e) => {
                            warn!(client_id = %self.client_id, %collector, error = %e, "cannot export client metrics");
                            return;
                        }
                    }
                }
            }
        };
        if let Err(e) = pusher.push(&self.hub).await {
            debug!(client_id = %self.client_id, %collector, error = %e, "client metric export failed");
        }
    }
}

/// Where the server's Settings say client metrics go (`host:port`), if anywhere.
pub(crate) fn collector_of(metric: Option<&vela_proto::pb::rocketmq::Metric>) -> Option<String> {
    let metric = metric.filter(|m| m.on)?;
    let address = metric.endpoints.as_ref()?.addresses.first()?;
    let port = u16::try_from(address.port).ok().filter(|p| *p > 0)?;
    let host = &address.host;
    Some(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vela_proto::pb::rocketmq as pb;

    #[test]
    fn the_collector_comes_from_settings_only_when_on() {
        let endpoints = pb::Endpoints {
            scheme: pb::AddressScheme::DomainName as i32,
            addresses: vec![pb::Address {
                host: "otel".into(),
                port: 4317,
            }],
        };
        let on = pb::Metric {
            on: true,
            endpoints: Some(endpoints.clone()),
        };
        assert_eq!(collector_of(Some(&on)).as_deref(), Some("otel:4317"));
        let off = pb::Metric {
            on: false,
            endpoints: Some(endpoints),
        };
        assert_eq!(collector_of(Some(&off)), None);
        assert_eq!(collector_of(None), None);
    }
}

//! The client's own metrics, with the official RocketMQ clients' names and buckets
//! (`rocketmq_send_cost_time`, `rocketmq_delivery_latency`), exported over OTLP/gRPC to the
//! collector the server names in its Settings (`metric.on` with `endpoints`), every
//! `ClientConfig::metrics_interval`, and once more on shutdown. Each client has its own meter
//! provider; nothing is exported while the server names no collector.

use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, MeterProvider};
use opentelemetry_otlp::{MetricExporter, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
};
use parking_lot::Mutex;
use tracing::{debug, warn};

/// The official clients' buckets, milliseconds.
const COST_BUCKETS_MS: [f64; 7] = [1.0, 5.0, 10.0, 20.0, 50.0, 200.0, 500.0];

#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// One client's instruments and its exporter.
pub(crate) struct ClientMetrics {
    _provider: SdkMeterProvider,
    reader: Arc<ManualReader>,
    client_id: String,
    send_cost: Histogram<f64>,
    delivery_latency: Histogram<f64>,
    /// The collector exported to now, and its exporter.
    exporter: Mutex<Option<(String, Arc<MetricExporter>)>>,
}

impl ClientMetrics {
    pub fn new(client_id: &str) -> Arc<Self> {
        let reader = Arc::new(
            ManualReader::builder()
                .with_temporality(Temporality::Cumulative)
                .build(),
        );
        let provider = SdkMeterProvider::builder()
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("rocketmq-client")
                    .build(),
            )
            .with_reader(SharedReader(reader.clone()))
            .build();
        let meter = provider.meter("vela-sdk");
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
            _provider: provider,
            reader,
            client_id: client_id.to_owned(),
            exporter: Mutex::new(None),
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

    /// Exports what is recorded to `collector` (`host:port`), or drops the exporter when the
    /// server names none. Call on the tokio runtime.
    pub async fn export_to(&self, collector: Option<&str>, timeout: Duration) {
        let Some(collector) = collector else {
            if self.exporter.lock().take().is_some() {
                debug!(client_id = %self.client_id, "the server no longer asks for client metrics");
            }
            return;
        };
        let exporter = {
            let mut current = self.exporter.lock();
            match current.as_ref() {
                Some((at, exporter)) if at == collector => exporter.clone(),
                _ => {
                    let built = MetricExporter::builder()
                        .with_tonic()
                        .with_endpoint(format!("http://{collector}"))
                        .with_timeout(timeout)
                        .with_temporality(Temporality::Cumulative)
                        .build();
                    match built {
                        Ok(exporter) => {
                            let exporter = Arc::new(exporter);
                            *current = Some((collector.to_owned(), exporter.clone()));
                            exporter
                        }
                        Err(e) => {
                            warn!(client_id = %self.client_id, %collector, error = %e, "cannot export client metrics");
                            return;
                        }
                    }
                }
            }
        };
        let mut rm = ResourceMetrics::default();
        if let Err(e) = self.reader.collect(&mut rm) {
            debug!(error = %e, "collecting client metrics failed");
            return;
        }
        match tokio::time::timeout(timeout, exporter.export(&rm)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(client_id = %self.client_id, %collector, error = %e, "client metric export failed")
            }
            Err(_) => {
                debug!(client_id = %self.client_id, %collector, "client metric export timed out")
            }
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

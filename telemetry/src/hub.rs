//! One meter provider per process, read on demand: by `/metrics` on every scrape and by the
//! OTLP exporter on its interval. Both read the same cumulative aggregation, so the two never
//! disagree.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Stream, Temporality,
};
use serde::{Deserialize, Serialize};

use crate::DEFAULT_CARDINALITY_LIMIT;
use crate::otlp::OtlpConfig;

/// `[telemetry]`: where metrics go besides `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Pushes metrics to an OpenTelemetry collector when `otlp.endpoint` is set.
    pub otlp: OtlpConfig,
    /// Extra OTLP resource attributes (`service.name` is `vela` unless given here).
    pub resource: BTreeMap<String, String>,
    /// Series kept per metric (one per label set); past it, new label sets are folded into one
    /// series labelled `otel_metric_overflow="true"`.
    pub cardinality_limit: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp: OtlpConfig::default(),
            resource: BTreeMap::new(),
            cardinality_limit: DEFAULT_CARDINALITY_LIMIT,
        }
    }
}

impl TelemetryConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.cardinality_limit == 0 {
            return Err("telemetry.cardinality_limit must be at least 1".to_owned());
        }
        self.otlp.validate()
    }
}

/// The manual reader, shared between the provider (which registers its pipeline) and the hub
/// (which collects through it).
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

/// A process's metrics: hand [`MetricsHub::meter`] to the roles, serve
/// [`MetricsHub::collector`] at `/metrics`, and give the hub to the OTLP exporter.
#[derive(Debug, Clone)]
pub struct MetricsHub {
    provider: SdkMeterProvider,
    reader: Arc<ManualReader>,
}

impl MetricsHub {
    pub fn new(config: &TelemetryConfig) -> Self {
        let reader = Arc::new(
            ManualReader::builder()
                .with_temporality(Temporality::Cumulative)
                .build(),
        );
        let mut resource = Resource::builder().with_service_name("vela");
        for (key, value) in &config.resource {
            resource = resource.with_attribute(KeyValue::new(key.clone(), value.clone()));
        }
        let limit = config.cardinality_limit.max(1);
        let provider = SdkMeterProvider::builder()
            .with_resource(resource.build())
            .with_reader(SharedReader(reader.clone()))
            .with_view(move |_: &opentelemetry_sdk::metrics::Instrument| {
                Stream::builder().with_cardinality_limit(limit).build().ok()
            })
            .build();
        Self { provider, reader }
    }

    /// A hub with the default settings (tests, embedding).
    pub fn standalone() -> Self {
        Self::new(&TelemetryConfig::default())
    }

    /// The meter a role records on; `scope` names the role (`vela-proxy`…).
    pub fn meter(&self, scope: &'static str) -> Meter {
        self.provider.meter(scope)
    }

    /// Everything recorded so far, cumulative since the process started; observable
    /// instruments' callbacks run now.
    pub fn collect(&self) -> Result<ResourceMetrics, String> {
        let mut rm = ResourceMetrics::default();
        self.reader.collect(&mut rm).map_err(|e| e.to_string())?;
        Ok(rm)
    }

    /// The Prometheus text exposition of everything recorded (what `/metrics` serves).
    pub fn prometheus_text(&self) -> Result<String, String> {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self.collector()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .map_err(|e| format!("encoding metrics: {e}"))?;
        Ok(text)
    }

    /// A `prometheus-client` collector that reads this hub on every scrape.
    pub fn collector(&self) -> crate::prometheus::HubCollector {
        crate::prometheus::HubCollector::new(self.clone())
    }
}

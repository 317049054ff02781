//! Vela's metrics. The roles record on OpenTelemetry instruments (`opentelemetry`'s API, from a
//! [`Meter`] the process hands them); one [`MetricsHub`] per process aggregates them once and
//! serves the same numbers two ways: as Prometheus text at `/metrics` ([`MetricsHub::collector`])
//! and pushed over OTLP, gRPC or HTTP ([`otlp::spawn_exporter`]). ADR 0022 says why.
//!
//! Names follow RocketMQ 5 where it has one (`rocketmq_messages_in_total`…; `docs/metrics.md`
//! lists them all) and carry `vela_` otherwise. Instruments are named so that a collector's
//! OTLP→Prometheus translation gives the names `/metrics` shows: counters end in `_total`, and
//! units are in the name (or in the description) rather than in the OTLP unit, which the
//! translation would append as a suffix ([`prometheus::translated_name`] is that rule).

pub mod catalog;
mod hub;
mod labels;
pub mod otlp;
pub mod prometheus;
pub mod traces;

pub use hub::{MetricsHub, TelemetryConfig};
pub use labels::{NodeLabels, NodeType, is_system, shared};
pub use opentelemetry::KeyValue;
pub use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableGauge};

/// Label value caps: a series per label set is kept up to this many per instrument; past it,
/// new label sets are folded into one series labelled `otel_metric_overflow="true"`.
pub const DEFAULT_CARDINALITY_LIMIT: usize = 2000;

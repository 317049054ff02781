//! `/metrics`: the hub's data in the Prometheus text format, encoded by `prometheus-client`.
//!
//! Mapping: a monotonic sum is a counter (its `_total` suffix is the encoder's), any other sum
//! and a gauge are gauges, an explicit-bucket histogram is a histogram. Attribute keys become
//! label names with every character outside `[a-zA-Z0-9_]` replaced by `_`. Instruments of
//! one name recorded by several roles in one process (standalone) share one family; their
//! `node_type` label tells them apart.

use std::collections::BTreeMap;
use std::fmt;

use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::MetricsHub;

/// Reads the hub on every scrape.
#[derive(Debug)]
pub struct HubCollector {
    hub: MetricsHub,
}

impl HubCollector {
    pub(crate) fn new(hub: MetricsHub) -> Self {
        Self { hub }
    }
}

/// The name a collector's OTLP→Prometheus translation (the OpenTelemetry Collector's
/// `prometheus` exporter and Prometheus' own OTLP receiver, both with suffixes on) gives an
/// instrument: characters outside `[a-zA-Z0-9_:]` become `_`; a unit that is not an annotation
/// (`{…}`) is spelled out and appended unless the name already holds it; a monotonic sum gets
/// `_total` (once). Every Vela metric must come out of this unchanged apart from `_total`
/// on counters, which is what the tests check.
pub fn translated_name(name: &str, unit: &str, monotonic_sum: bool) -> String {
    let mut tokens: Vec<String> = name
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let main_unit = unit.split('/').next().unwrap_or("").trim();
    if !main_unit.is_empty() && !main_unit.contains(['{', '}']) {
        let word = match main_unit {
            "s" => "seconds",
            "ms" => "milliseconds",
            "us" => "microseconds",
            "ns" => "nanoseconds",
            "By" => "bytes",
            "KiBy" => "kibibytes",
            "MiBy" => "mebibytes",
            "1" => "",
            other => other,
        };
        if !word.is_empty() && !tokens.iter().any(|t| t == word) {
            tokens.push(word.to_owned());
        }
    }
    if monotonic_sum {
        tokens.retain(|t| t != "total");
        tokens.push("total".to_owned());
    }
    tokens.join("_")
}

/// The Prometheus text format (0.0.4) of an OpenMetrics exposition from this module: what a
/// scraper that does not ask for OpenMetrics gets (`curl`, `promtool check metrics`). The two
/// differ, for what Vela emits, only in a counter family's name (`x_total` in 0.0.4, `x` in
/// OpenMetrics) and the closing `# EOF`.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match descriptor {
            Some(renamed) => out.push_str(renamed.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A label name Prometheus accepts.
fn label_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A data point's labels, sorted by name so every series of a family reads alike.
fn labels<'a>(attributes: impl Iterator<Item = &'a KeyValue>) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = attributes
        .map(|kv| (label_name(kv.key.as_str()), kv.value.as_str().into_owned()))
        .collect();
    labels.sort();
    labels
}

/// How one family is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Counter,
    Gauge,
    Histogram,
}

fn family_of(metric: &Metric) -> Option<Family> {
    fn of<T>(data: &MetricData<T>) -> Option<Family> {
        match data {
            MetricData::Sum(sum) if sum.is_monotonic() => Some(Family::Counter),
            MetricData::Sum(_) | MetricData::Gauge(_) => Some(Family::Gauge),
            MetricData::Histogram(_) => Some(Family::Histogram),
            MetricData::ExponentialHistogram(_) => None,
        }
    }
    match metric.data() {
        AggregatedMetrics::F64(d) => of(d),
        AggregatedMetrics::U64(d) => of(d),
        AggregatedMetrics::I64(d) => of(d),
    }
}

/// The three number types the SDK aggregates, as the text format writes them.
trait Number: Copy {
    fn f64(self) -> f64;
    fn gauge(self, encoder: &mut prometheus_client::encoding::MetricEncoder<'_>) -> fmt::Result;
    fn counter(self, encoder: &mut prometheus_client::encoding::MetricEncoder<'_>) -> fmt::Result;
}
impl Number for f64 {
    fn f64(self) -> f64 {
        self
    }
    fn gauge(self, encoder: &mut prometheus_client::encoding::MetricEncoder<'_>) -> fmt::Result {
        encoder.encode_gauge(&self)
    }
    fn counter(self, encoder: &mut prometheus_client::encoding::MetricEncoder<'_>) -> fmt::Result {
        encoder.encode_counter::<NoLabelSet, f64, f64>(&self, None)
    }
}
impl Number for u64 {
    fn f64(self) -> f64 {
        self as f64
    }
    fn gauge(self, encoder: &mut prometheus_client::encoding::MetricEncoder<'_>) -> fmt::Result {
        encoder.encode_gauge(&self)
    }
    fn counter(self, encoder: &mut prometheus_client::encoding::MetricEncoder<'_>) -> fmt::Result {
        encoder.encode_counter::<NoLabelSet, u64, f64>(&self, None)
    }
}
impl Number for i64 {
    fn f64(self) -> f64 {
        self as f64
    }
    fn gauge(self, encoder: &mut prometheus_client::encoding::MetricEncoder<'_>) -> fmt::Result {
        encoder.encode_gauge(&self)
    }
    fn counter(self, encoder: &mut prometheus_client::encoding::MetricEncoder<'_>) -> fmt::Result {
        // A monotonic sum never goes below zero.
        encoder.encode_counter::<NoLabelSet, u64, f64>(&u64::try_from(self).unwrap_or(0), None)
    }
}

fn encode_points<T: Number>(
    data: &MetricData<T>,
    encoder: &mut prometheus_client::encoding::MetricEncoder<'_>,
) -> fmt::Result {
    match data {
        MetricData::Sum(sum) if sum.is_monotonic() => {
            for point in sum.data_points() {
                let labels = labels(point.attributes());
                match labels.is_empty() {
                    true => point.value().counter(encoder)?,
                    false => point
                        .value()
                        .counter(&mut encoder.encode_family(&labels)?)?,
                }
            }
        }
        MetricData::Sum(sum) => {
            for point in sum.data_points() {
                let labels = labels(point.attributes());
                match labels.is_empty() {
                    true => point.value().gauge(encoder)?,
                    false => point.value().gauge(&mut encoder.encode_family(&labels)?)?,
                }
            }
        }
        MetricData::Gauge(gauge) => {
            for point in gauge.data_points() {
                let labels = labels(point.attributes());
                match labels.is_empty() {
                    true => point.value().gauge(encoder)?,
                    false => point.value().gauge(&mut encoder.encode_family(&labels)?)?,
                }
            }
        }
        MetricData::Histogram(histogram) => {
            for point in histogram.data_points() {
                let labels = labels(point.attributes());
                let bounds = point.bounds().chain(std::iter::once(f64::INFINITY));
                let buckets: Vec<(f64, u64)> = bounds.zip(point.bucket_counts()).collect();
                encoder
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(
                        point.sum().f64(),
                        point.count(),
                        &buckets,
                        None,
                    )?;
            }
        }
        MetricData::ExponentialHistogram(_) => {}
    }
    Ok(())
}

fn encode_metric(
    metric: &Metric,
    encoder: &mut prometheus_client::encoding::MetricEncoder<'_>,
) -> fmt::Result {
    match metric.data() {
        AggregatedMetrics::F64(d) => encode_points(d, encoder),
        AggregatedMetrics::U64(d) => encode_points(d, encoder),
        AggregatedMetrics::I64(d) => encode_points(d, encoder),
    }
}

impl Collector for HubCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let rm = match self.hub.collect() {
            Ok(rm) => rm,
            Err(error) => {
                tracing::warn!(%error, "collecting metrics for /metrics failed");
                return Err(fmt::Error);
            }
        };
        // One family per name, whichever roles recorded it.
        let mut families: BTreeMap<&str, (Family, &str, Vec<&Metric>)> = BTreeMap::new();
        for scope in rm.scope_metrics() {
            for metric in scope.metrics() {
                let Some(family) = family_of(metric) else {
                    continue;
                };
                let entry = families.entry(metric.name()).or_insert((
                    family,
                    metric.description(),
                    Vec::new(),
                ));
                if entry.0 == family {
                    entry.2.push(metric);
                } else {
                    tracing::warn!(
                        name = metric.name(),
                        "a metric name is used by instruments of two kinds; the second is not served"
                    );
                }
            }
        }
        for (name, (family, help, metrics)) in families {
            let (name, metric_type) = match family {
                Family::Counter => (
                    name.strip_suffix("_total").unwrap_or(name),
                    MetricType::Counter,
                ),
                Family::Gauge => (name, MetricType::Gauge),
                Family::Histogram => (name, MetricType::Histogram),
            };
            let mut metric_encoder = encoder.encode_descriptor(name, help, None, metric_type)?;
            for metric in metrics {
                encode_metric(metric, &mut metric_encoder)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

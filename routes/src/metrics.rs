//! Route metrics (`docs/metrics.md`), observed from the statuses the workers keep, labelled
//! with the route's name: what `vela admin route describe` shows, for Grafana.

use std::collections::BTreeMap;
use std::sync::Arc;

use opentelemetry::metrics::{ObservableCounter, ObservableGauge};
use vela_proto::RouteName;
use vela_proto::route::RouteStatus;
use vela_telemetry::{KeyValue, Meter, NodeLabels};

/// What the instruments observe: the statuses of the routes this process runs now.
pub type StatusSource = Arc<dyn Fn() -> BTreeMap<RouteName, RouteStatus> + Send + Sync>;

/// The route instruments; drop them to stop reporting.
pub struct RouteMetrics {
    _counters: Vec<ObservableCounter<u64>>,
    _gauges: Vec<ObservableGauge<f64>>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteMetrics")
    }
}

fn each(
    source: &StatusSource,
    labels: &NodeLabels,
    mut observe: impl FnMut(&RouteStatus, &[KeyValue]),
) {
    for (name, status) in source() {
        let attrs = labels.with([KeyValue::new("route", name.to_string())]);
        observe(&status, &attrs);
    }
}

impl RouteMetrics {
    /// Makes the route instruments on `meter`, observing `source`.
    pub fn register(meter: &Meter, labels: &NodeLabels, source: StatusSource) -> RouteMetrics {
        let counter = |name: &'static str, help: &'static str, value: fn(&RouteStatus) -> u64| {
            let manager = source.clone();
            let labels = labels.clone();
            meter
                .u64_observable_counter(name)
                .with_description(help)
                .with_callback(move |o| {
                    each(&manager, &labels, |s, attrs| o.observe(value(s), attrs));
                })
                .build()
        };
        let gauge =
            |name: &'static str, help: &'static str, value: fn(&RouteStatus) -> Option<f64>| {
                let manager = source.clone();
                let labels = labels.clone();
                meter
                    .f64_observable_gauge(name)
                    .with_description(help)
                    .with_callback(move |o| {
                        each(&manager, &labels, |s, attrs| {
                            if let Some(v) = value(s) {
                                o.observe(v, attrs);
                            }
                        });
                    })
                    .build()
            };
        RouteMetrics {
            _counters: vec![
                counter(
                    "vela_route_copied_messages_total",
                    "Messages a route sent to its target and acknowledged on its source",
                    |s| s.copied,
                ),
                counter(
                    "vela_route_skipped_messages_total",
                    "Messages a route did not copy because a route wrote them (no loops)",
                    |s| s.skipped_routed,
                ),
                counter(
                    "vela_route_duplicates_total",
                    "Copies of messages the source delivered to the route more than once",
                    |s| s.duplicates,
                ),
                counter(
                    "vela_route_errors_total",
                    "Failed attempts of a route (connecting, receiving, sending, acknowledging)",
                    |s| s.errors,
                ),
            ],
            _gauges: vec![
                gauge(
                    "vela_route_lag_messages",
                    "Messages on a route's source its group has not acknowledged",
                    |s| s.lag_messages.map(|v| v as f64),
                ),
                gauge(
                    "vela_route_lag_seconds",
                    "How long before its copy the last message a route received was stored",
                    |s| s.lag_ms.map(|v| v as f64 / 1000.0),
                ),
                gauge(
                    "vela_route_running",
                    "1 while a route copies or waits for messages, 0 while it is paused, starting or retrying",
                    |s| {
                        Some(f64::from(u8::from(
                            s.state == vela_proto::route::RouteState::Running,
                        )))
                    },
                ),
            ],
        }
    }
}

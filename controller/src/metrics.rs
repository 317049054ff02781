//! The controller's metrics (`docs/metrics.md`): the sizes of the cluster's metadata, as
//! RocketMQ names them, reported by the node that leads the controller group (every node
//! holds the same metadata; one reports it, so sums across nodes stay right).

use std::sync::Arc;

use vela_telemetry::{Meter, NodeLabels, ObservableGauge};

use crate::Controller;

/// The controller's instruments; drop them to stop reporting.
#[derive(Debug)]
pub struct ControllerMetrics {
    _gauges: Vec<ObservableGauge<i64>>,
}

impl Controller {
    /// Makes the controller's metric instruments on `meter`.
    pub fn register_metrics(
        self: &Arc<Self>,
        meter: &Meter,
        labels: &NodeLabels,
    ) -> ControllerMetrics {
        let gauge = |name: &'static str,
                     help: &'static str,
                     count: fn(&crate::metadata::Metadata) -> usize| {
            let this = Arc::downgrade(self);
            let attrs = labels.with([]);
            meter
                .i64_observable_gauge(name)
                .with_description(help)
                .with_callback(move |o| {
                    let Some(this) = this.upgrade() else { return };
                    if this.group_leads() {
                        let n = count(&this.metadata.read());
                        o.observe(i64::try_from(n).unwrap_or(i64::MAX), &attrs);
                    }
                })
                .build()
        };
        ControllerMetrics {
            _gauges: vec![
                gauge(
                    "rocketmq_topic_number",
                    "Topics in the cluster's metadata",
                    |m| m.topics().count(),
                ),
                gauge(
                    "rocketmq_consumer_group_number",
                    "Consumer groups in the cluster's metadata",
                    |m| m.groups().count(),
                ),
            ],
        }
    }
}

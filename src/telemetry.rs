//! Process-wide tracing setup. Libraries only emit `tracing` events; the binary decides
//! where they go.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG` overrides `log.level`. Logs go to stderr so
/// stdout stays for command output.
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr.with_max_level(tracing::Level::TRACE));
    // A second init (tests) keeps the first subscriber.
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A process's metrics: the hub `/metrics` serves and, with `[telemetry.otlp]` set, the task
/// that pushes the same numbers to a collector.
pub struct Metrics {
    pub hub: vela_telemetry::MetricsHub,
    exporter: Option<tokio::task::JoinHandle<()>>,
    traces: Option<std::sync::Arc<vela_telemetry::traces::Traces>>,
}

impl Metrics {
    /// Starts metrics for one process; the exporter (if any) flushes once more when
    /// `shutdown` fires. Call on the tokio runtime.
    pub fn start(
        config: &vela_telemetry::TelemetryConfig,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Self> {
        let hub = vela_telemetry::MetricsHub::new(config);
        let exporter =
            vela_telemetry::otlp::spawn_exporter(hub.clone(), &config.otlp, shutdown.clone())
                .map_err(anyhow::Error::msg)?;
        let traces = vela_telemetry::traces::Traces::start(&config.otlp, "vela")
            .map_err(anyhow::Error::msg)?
            .map(std::sync::Arc::new);
        Ok(Self {
            hub,
            exporter,
            traces,
        })
    }

    /// The span maker of `scope` (off unless spans are exported).
    pub fn tracer(&self, scope: &'static str) -> vela_telemetry::traces::MessageTracer {
        self.traces
            .as_ref()
            .map_or_else(vela_telemetry::traces::MessageTracer::off, |t| {
                t.tracer(scope)
            })
    }

    /// The labels of `role` on this process.
    pub fn labels(
        config: &crate::config::VelaConfig,
        role: vela_telemetry::NodeType,
        node_id: &str,
    ) -> vela_telemetry::NodeLabels {
        vela_telemetry::NodeLabels::new(config.cluster.metrics_name(), role, node_id)
    }

    /// Waits for the exporters' last exports (after `shutdown` fired).
    pub async fn stopped(self) {
        if let Some(traces) = self.traces {
            // The provider's shutdown blocks until the batch is exported.
            let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
        }
        if let Some(task) = self.exporter
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "OTLP exporter task failed");
        }
    }
}

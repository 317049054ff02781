//! What the log's writer records about its fsyncs, for the owner's metrics (the store's
//! `vela_raft_fsync_seconds` and `vela_raft_fsync_batch_appends`): how long each group-commit
//! fsync took and how many appends it made durable.

use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;

/// Instruments a log records its fsyncs on, with the labels of its points.
#[derive(Clone)]
pub struct LogMetrics {
    /// Seconds per fsync of the log's dirty segments.
    pub fsync_seconds: Histogram<f64>,
    /// Appends (openraft append calls, each one or more entries) one fsync made durable.
    pub batch_appends: Histogram<u64>,
    pub attributes: Arc<[KeyValue]>,
}

impl std::fmt::Debug for LogMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMetrics").finish_non_exhaustive()
    }
}

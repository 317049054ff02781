//! The background scrub: every `scrub_interval`, each shard re-reads its sealed log segments and
//! verifies every record (checksum, index, decode) and the footer, at most `scrub_rate` bytes a
//! second so it does not crowd out consumers' reads. Opening trusts sealed segments' footers and
//! reads verify only what they read; this finds damage in data nobody has read yet (bit rot),
//! while a replica or the tier may still hold a good copy. It reports, in the log and in
//! `vela_store_scrubs_total` / `vela_store_damaged_segments`; it never changes a file, and reads
//! keep refusing a damaged record whatever the scrub found.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use vela_raft::ScrubReport;

use super::Shard;
use crate::metrics::{ScrubResult, StoreMetrics};

/// How often and how fast shards scrub (from `StoreConfig`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScrubPolicy {
    /// `None`: no scheduled scrub.
    pub interval: Option<Duration>,
    /// Bytes a second, at most (0: unpaced).
    pub rate: u64,
    /// The first scrub after a start waits at most this long.
    pub first_after: Duration,
}

/// The first scrub after a start waits at most this long, so a node restarted more often than
/// `scrub_interval` is still scrubbed.
pub(crate) const FIRST_SCRUB_AFTER: Duration = Duration::from_secs(3600);
/// The same for a replica of a placed shard, which is replaced from its peers when damaged.
pub(crate) const FIRST_REPLICA_SCRUB_AFTER: Duration = Duration::from_secs(60);
/// Longest single pause of a paced scrub, so shutdown never waits long for it.
const PAUSE_SLICE: Duration = Duration::from_millis(100);

/// Scrubs the shard every `policy.interval` (the first one at most an hour after start) until
/// cancelled.
pub(crate) async fn scrub_loop(
    shard: Arc<Shard>,
    policy: ScrubPolicy,
    metrics: Arc<StoreMetrics>,
    damaged: Option<super::DamageReports>,
    cancel: CancellationToken,
) {
    let Some(interval) = policy.interval else {
        return;
    };
    let mut wait = interval.min(policy.first_after);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = interval;
        match scrub_now(&shard, policy.rate, &metrics, &cancel).await {
            ScrubOutcome::Stopped => return,
            ScrubOutcome::Done(report) if !report.damaged.is_empty() => {
                if let Some(damaged) = &damaged {
                    // Set aside by the store, which stops this task first.
                    let _ = damaged.send((Arc::downgrade(&shard), super::DamageFound::Scrub));
                    return;
                }
            }
            _ => {}
        }
    }
}

/// How one scrub ended.
#[derive(Debug)]
pub(crate) enum ScrubOutcome {
    /// It ran to the end: what it found.
    Done(ScrubReport),
    /// It could not run to the end (an I/O error, say): why.
    Failed(String),
    /// Shutdown stopped it.
    Stopped,
}

/// One scrub of the shard's sealed segments, paced to `rate` bytes a second; records the result
/// in `metrics` and the log.
pub(crate) async fn scrub_now(
    shard: &Shard,
    rate: u64,
    metrics: &StoreMetrics,
    cancel: &CancellationToken,
) -> ScrubOutcome {
    let reader = shard.reader.clone();
    let stop = cancel.clone();
    let started = Instant::now();
    let run = tokio::task::spawn_blocking(move || {
        let mut read = 0u64;
        reader.scrub_paced(|bytes| {
            read += bytes;
            // Pause until the average rate since the start is back under `rate`, in short
            // slices so a shutdown is noticed at once.
            let due = if rate > 0 {
                Duration::from_secs_f64(read as f64 / rate as f64)
            } else {
                Duration::ZERO
            };
            loop {
                if stop.is_cancelled() {
                    return ControlFlow::Break(());
                }
                match due.checked_sub(started.elapsed()) {
                    Some(ahead) if !ahead.is_zero() => std::thread::sleep(ahead.min(PAUSE_SLICE)),
                    _ => return ControlFlow::Continue(()),
                }
            }
        })
    })
    .await;
    let id = shard.id;
    match run {
        Ok(Ok(report)) if report.stopped => {
            info!(shard = id, "scrub stopped by shutdown");
            ScrubOutcome::Stopped
        }
        Ok(Ok(report)) => {
            let result = if report.damaged.is_empty() {
                info!(
                    shard = id,
                    segments = report.segments,
                    records = report.records,
                    took_ms = started.elapsed().as_millis() as u64,
                    "scrub found every sealed segment intact"
                );
                ScrubResult::Clean
            } else {
                for (path, problem) in &report.damaged {
                    error!(shard = id, segment = %path.display(), problem = problem.as_str(), "scrub: damaged sealed segment");
                }
                error!(
                    shard = id,
                    damaged = report.damaged.len(),
                    segments = report.segments,
                    "scrub found damaged sealed segments; reads refuse their damaged records"
                );
                ScrubResult::Damaged
            };
            metrics.scrubbed(id, result, Some(report.damaged.len()));
            ScrubOutcome::Done(report)
        }
        Ok(Err(err)) => {
            warn!(shard = id, error = %err, "scrub could not finish");
            metrics.scrubbed(id, ScrubResult::Failed, None);
            ScrubOutcome::Failed(err.to_string())
        }
        Err(err) => {
            warn!(shard = id, error = %err, "scrub task failed");
            metrics.scrubbed(id, ScrubResult::Failed, None);
            ScrubOutcome::Failed(err.to_string())
        }
    }
}

//! Whether the node is saturated, told by how late its async runtime runs a timer: with a core
//! to spare a timer fires within about a millisecond of its deadline (the timer wheel's
//! resolution: an idle runtime measures 1.1–1.4 ms); when every worker has a queue of tasks to
//! poll first, it fires later. The
//! fairness cap (`fairness`) applies only while the node is saturated: that is when producers
//! crowd consumers out of the run queue, and only then is there anything to share. A node with
//! room serves both sides at once and caps nobody.
//!
//! The lateness is smoothed (an eighth of each 5 ms sample, so about 40 ms of memory), and the
//! node counts as saturated from [`SATURATED_ABOVE`] until it falls below [`RELIEVED_BELOW`],
//! so the cap does not flicker with each sample.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the timer is set.
const TICK: Duration = Duration::from_millis(5);
/// Smoothed lateness above which the node counts as saturated.
pub(crate) const SATURATED_ABOVE: Duration = Duration::from_millis(3);
/// Smoothed lateness below which a saturated node no longer is.
pub(crate) const RELIEVED_BELOW: Duration = Duration::from_millis(2);

/// The runtime's smoothed timer lateness, and whether it says the node is saturated.
#[derive(Debug, Default)]
pub(crate) struct Saturation {
    lag_us: AtomicU64,
    saturated: AtomicBool,
}

impl Saturation {
    /// Measures until `cancel`.
    pub(crate) async fn measure(self: std::sync::Arc<Self>, cancel: CancellationToken) {
        loop {
            let due = Instant::now() + TICK;
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep_until(due) => {}
            }
            self.record(Instant::now().saturating_duration_since(due));
        }
    }

    /// Folds one timer's lateness into the smoothed lag and re-judges saturation.
    fn record(&self, late: Duration) {
        let sample = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        let old = self.lag_us.load(Ordering::Relaxed);
        let new = old - old / 8 + sample / 8;
        self.lag_us.store(new, Ordering::Relaxed);
        let lag = Duration::from_micros(new);
        if lag > SATURATED_ABOVE {
            self.saturated.store(true, Ordering::Relaxed);
        } else if lag < RELIEVED_BELOW {
            self.saturated.store(false, Ordering::Relaxed);
        }
    }

    /// Whether the node is saturated now.
    pub(crate) fn saturated(&self) -> bool {
        self.saturated.load(Ordering::Relaxed)
    }

    /// The smoothed lateness of the runtime's timers.
    pub(crate) fn lag(&self) -> Duration {
        Duration::from_micros(self.lag_us.load(Ordering::Relaxed))
    }

    /// A signal fixed at `saturated` (tests).
    #[cfg(test)]
    pub(crate) fn fixed(saturated: bool) -> Self {
        Self {
            lag_us: AtomicU64::new(0),
            saturated: AtomicBool::new(saturated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_timers_saturate_the_node_until_they_are_on_time_again() {
        let s = Saturation::default();
        assert!(!s.saturated());
        s.record(Duration::from_millis(24));
        assert_eq!(
            s.lag(),
            Duration::from_millis(3),
            "one sample moves it an eighth"
        );
        assert!(!s.saturated(), "3 ms is not above the threshold");
        s.record(Duration::from_millis(24));
        assert!(s.saturated(), "{:?}", s.lag());
        // On time again: the lag decays through the band between the thresholds first.
        let mut samples = 0;
        while s.saturated() {
            s.record(Duration::ZERO);
            samples += 1;
            assert!(samples < 100, "never relieved: {:?}", s.lag());
            if s.lag() >= RELIEVED_BELOW {
                assert!(s.saturated(), "still saturated between the thresholds");
            }
        }
        assert!(s.lag() < RELIEVED_BELOW);
        assert!(samples >= 8, "not one on-time timer: {samples}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_runtime_is_not_saturated() {
        let s = std::sync::Arc::new(Saturation::default());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(s.clone().measure(cancel.clone()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!s.saturated(), "{:?}", s.lag());
        cancel.cancel();
        task.await.expect("the measuring task stops");
    }
}

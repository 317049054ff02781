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
//!
//! A runtime whose every task is short keeps its timers on time however busy it is: one core
//! running standalone flat out (37 k sends and a consumer per second, 2026-12-07) measured
//! 1.0–1.6 ms, never saturated, and its consumer got a fifth of the messages. So the node also
//! counts as saturated while the process uses [`BUSY_ABOVE`] of the CPUs it may run on
//! (`available_parallelism`: its affinity and cgroup quota), over each [`CPU_WINDOW`], until
//! that falls below [`IDLE_BELOW`].

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

/// Share of the CPUs the process may use above which the node counts as saturated.
pub(crate) const BUSY_ABOVE: f64 = 0.9;
/// Share below which a node saturated by CPU no longer is.
pub(crate) const IDLE_BELOW: f64 = 0.75;
/// Over how long the CPU share is measured.
const CPU_WINDOW: Duration = Duration::from_millis(100);

/// The runtime's smoothed timer lateness and the process's CPU share, and whether they say the
/// node is saturated.
#[derive(Debug, Default)]
pub(crate) struct Saturation {
    lag_us: AtomicU64,
    /// Saturated by timer lateness.
    saturated: AtomicBool,
    /// Saturated by CPU use.
    busy: AtomicBool,
    /// The last window's CPU share, in thousandths of the CPUs the process may use.
    cpu_share_milli: AtomicU64,
}

impl Saturation {
    /// Measures until `cancel`.
    pub(crate) async fn measure(self: std::sync::Arc<Self>, cancel: CancellationToken) {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut window = (Instant::now(), process_cpu());
        loop {
            let due = Instant::now() + TICK;
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep_until(due) => {}
            }
            let now = Instant::now();
            self.record(now.saturating_duration_since(due));
            let wall = now.saturating_duration_since(window.0);
            if wall >= CPU_WINDOW {
                let cpu = process_cpu();
                let used = cpu.saturating_sub(window.1);
                self.record_cpu(used.as_secs_f64() / (wall.as_secs_f64() * cpus as f64));
                window = (now, cpu);
            }
        }
    }

    /// Re-judges saturation by one window's share of the CPUs the process may use.
    fn record_cpu(&self, share: f64) {
        let milli = (share * 1000.0).clamp(0.0, u64::MAX as f64) as u64;
        self.cpu_share_milli.store(milli, Ordering::Relaxed);
        if share > BUSY_ABOVE {
            self.busy.store(true, Ordering::Relaxed);
        } else if share < IDLE_BELOW {
            self.busy.store(false, Ordering::Relaxed);
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
        self.saturated.load(Ordering::Relaxed) || self.busy.load(Ordering::Relaxed)
    }

    /// The smoothed lateness of the runtime's timers.
    pub(crate) fn lag(&self) -> Duration {
        Duration::from_micros(self.lag_us.load(Ordering::Relaxed))
    }

    /// A signal fixed at `saturated` (tests).
    #[cfg(test)]
    pub(crate) fn fixed(saturated: bool) -> Self {
        Self {
            saturated: AtomicBool::new(saturated),
            ..Self::default()
        }
    }
}

/// The CPU time every thread of the process used so far.
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
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

    #[test]
    fn a_process_using_its_cpus_saturates_the_node_until_it_uses_less() {
        let s = Saturation::default();
        s.record_cpu(0.5);
        assert!(!s.saturated());
        s.record_cpu(0.95);
        assert!(s.saturated(), "95 % of its CPUs");
        s.record_cpu(0.8);
        assert!(s.saturated(), "still, between the thresholds");
        s.record_cpu(0.7);
        assert!(!s.saturated(), "relieved below {IDLE_BELOW}");
        // Either signal saturates.
        s.record_cpu(0.95);
        s.record(Duration::ZERO);
        assert!(s.saturated(), "timers on time, CPUs full");
    }

    #[test]
    fn the_process_cpu_clock_counts_work_done() {
        let before = process_cpu();
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(process_cpu() - before >= Duration::from_millis(20), "{x}");
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

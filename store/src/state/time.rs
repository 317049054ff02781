//! The shard state's time rules: the time a command applies at (never before the highest time
//! applied, from apply version 2), and the deduplication window's own clock (apply version 6),
//! which a clock jump moves by at most `dedup::MAX_STEP_MS` per command (ADR 0012).

use super::{ShardState, dedup};

impl ShardState {
    /// The time a command stamped `clock_ms` (a leader's clock now) would apply at: never before
    /// the highest time applied (from apply version 2). A leader plans with it, so a clock that
    /// went back does not hold back what the state already counts as due.
    pub fn time_at(&self, clock_ms: i64) -> i64 {
        if self.apply_version >= 2 {
            clock_ms.max(self.max_now_ms)
        } else {
            clock_ms
        }
    }

    /// The time a command stamped `now_ms` applies at.
    pub(super) fn observe_time(&mut self, now_ms: i64) -> i64 {
        let effective = if self.apply_version >= 2 {
            now_ms.max(self.max_now_ms)
        } else {
            now_ms
        };
        if self.apply_version >= 6 {
            let step = now_ms
                .saturating_sub(self.max_now_ms)
                .clamp(0, dedup::MAX_STEP_MS);
            self.dedup_clock_ms = self.dedup_clock_ms.saturating_add(step);
        }
        self.max_now_ms = self.max_now_ms.max(now_ms);
        effective
    }

    /// The deduplication window's clock (apply version 6; before, the window ran on the
    /// commands' times).
    pub fn dedup_clock_ms(&self) -> i64 {
        self.dedup_clock_ms
    }

    /// Restores the window's clock a snapshot saved (format 5).
    pub fn set_dedup_clock_ms(&mut self, clock_ms: i64) {
        self.dedup_clock_ms = clock_ms;
    }

    /// The time the deduplication window reads for a command applying at `now`.
    pub(super) fn dedup_now(&self, now: i64) -> i64 {
        if self.apply_version >= 6 {
            self.dedup_clock_ms
        } else {
            now
        }
    }
}

pub(super) fn deadline(now_ms: i64, invisible_ms: u64) -> i64 {
    now_ms.saturating_add(i64::try_from(invisible_ms).unwrap_or(i64::MAX))
}

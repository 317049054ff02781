//! Refusing sends before the data disk fills (ADR 0023). Tiering and retention free space in
//! the background; when they fall behind (the object store is down, retention is long) the
//! store stops taking sends once the file system holding its data is `store.disk_full_ratio`
//! full, answering `Unavailable` (clients retry) instead of failing an fsync on a full disk.
//! Receives, acks and everything else go on: they are what frees space.

use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vela_proto::store_api::StoreError;

use super::Store;

/// How often the disk is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The last look at the disk.
#[derive(Debug, Default)]
pub(crate) struct DiskGuard {
    full: AtomicBool,
    /// Used share of the file system in millionths (`u64::MAX`: unknown).
    used_ppm: AtomicU64,
}

impl Store {
    /// The share of the data disk in use at the last look (`None`: unknown), and whether sends
    /// are refused for it.
    pub(crate) fn disk_state(&self) -> (Option<f64>, bool) {
        (self.disk.used_ratio(), self.disk.is_full())
    }

    /// How late the runtime fires timers (smoothed), and whether that makes the node saturated.
    pub(crate) fn saturation_state(&self) -> (std::time::Duration, bool) {
        (self.saturation.lag(), self.saturation.saturated())
    }
}

impl DiskGuard {
    pub(crate) fn used_ratio(&self) -> Option<f64> {
        let ppm = self.used_ppm.load(Ordering::Relaxed);
        (ppm != u64::MAX).then(|| ppm as f64 / 1e6)
    }

    pub(crate) fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }
}

/// Share of the file system at `path` in use, as `df` shows it (used over used plus what an
/// unprivileged writer may still use; blocks reserved for root count for neither), or `None`
/// when it cannot be read (a simulated disk).
fn used_ratio(path: &std::path::Path) -> Option<f64> {
    let st = rustix::fs::statvfs(path).ok()?;
    let used = st.f_blocks.saturating_sub(st.f_bfree);
    let usable = used + st.f_bavail;
    (usable > 0).then(|| used as f64 / usable as f64)
}

impl Store {
    /// Looks at the disk once and updates the guard, logging when it fills or frees.
    pub(crate) fn check_disk_now(&self) {
        let ratio = used_ratio(&self.config.data_dir);
        let guard = &self.disk;
        guard.used_ppm.store(
            ratio.map_or(u64::MAX, |r| (r * 1e6) as u64),
            Ordering::Relaxed,
        );
        let limit = self.config.disk_full_ratio;
        let full = ratio.is_some_and(|r| r >= limit);
        let was = guard.full.swap(full, Ordering::Relaxed);
        if full && !was {
            warn!(
                data_dir = %self.config.data_dir.display(),
                used = ratio.unwrap_or(0.0),
                disk_full_ratio = limit,
                "the data disk is full: sends are refused until tiering or retention frees space"
            );
        } else if was && !full {
            info!(
                used = ratio.unwrap_or(0.0),
                "the data disk has room again: sends are taken"
            );
        }
    }

    /// `Unavailable` while the disk is full.
    pub(crate) fn check_disk(&self) -> Result<(), StoreError> {
        if !self.disk.is_full() {
            return Ok(());
        }
        Err(StoreError::Unavailable(format!(
            "store node {} refuses sends: its data disk is {:.0}% full (store.disk_full_ratio {:.0}%); \
             retry later",
            self.config.node_id,
            self.disk.used_ratio().unwrap_or(1.0) * 100.0,
            self.config.disk_full_ratio * 100.0
        )))
    }
}

/// Looks at the disk every second until `cancel`.
pub(crate) async fn watch_disk(store: Weak<Store>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let Some(store) = store.upgrade() else { return };
        // One statvfs: microseconds.
        store.check_disk_now();
    }
}

//! A shard's background work: the leader releases delay messages when they fall due and decides
//! retention cuts; every replica snapshots its state and removes the log below the truncation it
//! applied (snapshot first, then vela-raft deletes whole segments).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use vela_proto::clock::SharedClock;
use vela_proto::store_api::StoreError;
use vela_raft::SegmentInfo;

use super::Shard;
use crate::command::StoreCommand;
use crate::state::TOPIC_RETENTION_APPLY_VERSION;

/// Most delay messages one `Release` entry carries.
const RELEASE_BATCH: usize = 4096;
/// Pause after a failed proposal before the task tries again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How often the snapshot task looks at the bytes applied since the last snapshot.
const SNAPSHOT_CHECK: Duration = Duration::from_secs(1);
/// How often a follower checks whether it became leader of the shard.
const FOLLOWER_RECHECK: Duration = Duration::from_secs(1);
/// How long retention waits for the snapshot that must cover a truncation, and for the purge.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60);

/// Proposes `Release` for delay messages as they fall due. Sleeps exactly until the next due
/// time, or until the timer set changes.
pub(crate) async fn release_due_messages(
    shard: Arc<Shard>,
    clock: SharedClock,
    cancel: CancellationToken,
) {
    loop {
        let now_ms = clock.now_ms();
        let (next_due, due, state_ms) = {
            let applied = shard.shared.applied.read();
            // The time the state is at: this node's clock may be behind earlier leaders'.
            let state_ms = applied.state.time_at(now_ms);
            (
                applied.state.next_due_ms(),
                applied.state.due_timers(state_ms, RELEASE_BATCH),
                state_ms,
            )
        };
        let pause = if !shard.raft.is_leader() {
            // Only the leader proposes; a follower re-checks now and then in case it is elected.
            Some(FOLLOWER_RECHECK)
        } else if due.is_empty() {
            next_due.map(|due_ms| {
                Duration::from_millis(u64::try_from(due_ms - state_ms).unwrap_or(0).max(1))
            })
        } else {
            match shard.write(StoreCommand::Release { due, now_ms }).await {
                Ok(_) => continue,
                Err(err) => {
                    warn!(shard = shard.id, error = %err, "releasing due delay messages failed");
                    Some(RETRY_PAUSE)
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = shard.shared.timers_changed.notified() => {}
            _ = sleep_or_forever(pause) => {}
        }
    }
}

async fn sleep_or_forever(pause: Option<Duration>) {
    match pause {
        Some(pause) => tokio::time::sleep(pause).await,
        None => std::future::pending().await,
    }
}

/// Triggers a snapshot whenever `every_bytes` of message bodies were applied since the last one,
/// so a restart replays a bounded amount of log however many messages an entry carries (every
/// replica snapshots its own state, leader or not).
pub(crate) async fn snapshot_by_bytes(
    shard: Arc<Shard>,
    every_bytes: u64,
    cancel: CancellationToken,
) {
    use std::sync::atomic::Ordering;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(SNAPSHOT_CHECK) => {}
        }
        let applied = shard.shared.applied_bytes.load(Ordering::Relaxed);
        let at_snapshot = shard.shared.snapshot_bytes.load(Ordering::Relaxed);
        if applied.saturating_sub(at_snapshot) < every_bytes.max(1) {
            continue;
        }
        debug!(
            shard = shard.id,
            bytes = applied - at_snapshot,
            "snapshot by bytes applied"
        );
        if let Err(err) = shard.raft.trigger().snapshot().await {
            warn!(shard = shard.id, error = %err, "triggering a snapshot failed");
        }
    }
}

/// How long and how much the log keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetentionPolicy {
    pub time: Duration,
    pub size: Option<u64>,
}

/// The log index below which whole sealed segments may go: the oldest segments that are older
/// than the retention time or beyond the size budget, but never past `cap` (what the state still
/// needs). `segments` is oldest first.
pub(crate) fn retention_cut(
    segments: &[SegmentInfo],
    now: SystemTime,
    policy: RetentionPolicy,
    cap: u64,
) -> Option<u64> {
    let mut remaining: u64 = segments.iter().map(|s| s.bytes).sum();
    let mut cut = None;
    for segment in segments {
        let Some(last_index) = segment.last_index.filter(|_| segment.sealed) else {
            break;
        };
        let expired = now
            .duration_since(segment.modified)
            .is_ok_and(|age| age >= policy.time);
        let oversize = policy.size.is_some_and(|limit| remaining > limit);
        let below = last_index.saturating_add(1);
        if !(expired || oversize) || below > cap {
            break;
        }
        cut = Some(below);
        remaining -= segment.bytes;
    }
    cut
}

/// Runs one retention pass. The leader decides the cut (from its segments and the policy) and
/// writes it to the log as a `Truncate`; every replica, leader or not, then removes the log below
/// the truncation it has applied. Returns the log index everything below which is now gone, if
/// anything went in this pass.
pub(crate) async fn enforce_retention(
    shard: &Shard,
    policy: RetentionPolicy,
    now: SystemTime,
) -> Result<Option<u64>, StoreError> {
    let before = shard.shared.applied.read().state.truncated_below();
    if shard.raft.is_leader() {
        propose_truncation(shard, policy, now).await?;
    }
    let below = shard.shared.applied.read().state.truncated_below();
    // Only whole sealed segments go: nothing to do locally until one lies entirely below the
    // cut (with a tier, the cut may have passed only tiered segments, which the leader's
    // tiering pass deletes).
    let removable = shard
        .log
        .segments()
        .iter()
        .any(|segment| segment.sealed && segment.last_index.is_some_and(|last| last < below));
    if removable {
        remove_below(shard, below).await?;
        return Ok(Some(below));
    }
    Ok((below > before).then_some(below))
}

/// The leader's part of retention: writes an `Expire` per topic kept shorter than the shard's
/// log whose oldest messages passed its retention, then a `Truncate` when the policy cuts
/// further than the shard is truncated. The log is kept as long as the longest-kept topic with
/// queues here needs (`policy.time` is the store's default). The cut never passes what the
/// state still needs. It follows the policy, not the slowest replica: a replica that needs log
/// retention removed catches up through a snapshot and copies the retained log and index from a
/// member (ADR 0014).
async fn propose_truncation(
    shard: &Shard,
    policy: RetentionPolicy,
    now: SystemTime,
) -> Result<(), StoreError> {
    let default_ms = u64::try_from(policy.time.as_millis()).unwrap_or(u64::MAX);
    let now_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let (cap, truncated_below, log_ms, candidates) = {
        let applied = shard.shared.applied.read();
        let state = &applied.state;
        let applied_next = applied
            .last_applied
            .map_or(0, |l| l.index.saturating_add(1));
        let parked = state.lowest_parked_log_index().unwrap_or(u64::MAX);
        let candidates = if state.apply_version() >= TOPIC_RETENTION_APPLY_VERSION {
            state.expiry_candidates(default_ms, now_ms)
        } else {
            Vec::new()
        };
        (
            applied_next.min(parked),
            state.truncated_below(),
            state.log_retention_ms(default_ms),
            candidates,
        )
    };
    // Each queue's floor under the lock on its own (it may read the index file), so apply is
    // never held up by a whole pass; a floor planned on a state that moved on meanwhile is
    // still right (floors only rise, and name their queue's key).
    let floors = candidates.iter().filter_map(|c| {
        let floor = shard.shared.applied.read().state.expiry_floor(c)?;
        Some((c.topic.clone(), floor))
    });
    for (topic, floors) in crate::state::group_by_topic(floors) {
        debug!(shard = shard.id, %topic, queues = floors.len(), "expiring by topic retention");
        shard.write(StoreCommand::Expire { topic, floors }).await?;
    }
    let policy = RetentionPolicy {
        time: Duration::from_millis(log_ms),
        ..policy
    };
    let Some(cut) = retention_cut(&super::tiering::retained_segments(shard), now, policy, cap)
    else {
        return Ok(());
    };
    if cut > truncated_below {
        shard
            .write(StoreCommand::Truncate {
                below_log_index: cut,
            })
            .await?;
    }
    Ok(())
}

/// Removes this replica's log below `cut` (which its state has truncated): a snapshot that holds
/// the truncated state first, then openraft's logical purge, then whole segments.
pub(crate) async fn remove_below(shard: &Shard, cut: u64) -> Result<Vec<SegmentInfo>, StoreError> {
    // The snapshot must hold the truncated state before the log under it goes, or a restart
    // would replay entries that no longer exist.
    let unavailable = |what: &str, err: &dyn std::fmt::Display| {
        StoreError::Unavailable(format!("retention on shard {}: {what}: {err}", shard.id))
    };
    shard.snapshot_now().await?;
    shard
        .raft
        .trigger()
        .purge_log(cut - 1)
        .await
        .map_err(|e| unavailable("purge", &e))?;
    shard
        .raft
        .wait(Some(SNAPSHOT_WAIT))
        .metrics(
            |m| m.purged.as_ref().is_some_and(|p| p.index + 1 >= cut),
            "log purged below the cut",
        )
        .await
        .map_err(|e| unavailable("waiting for the purge", &e))?;
    // Purge is logical; whole segments below the cut go now, as far as the kept snapshot
    // generations allow (the older one may still need to replay part of them: ADR 0006).
    let removed = shard
        .log
        .compact_below(cut)
        .await
        .map_err(|e| unavailable("deleting segments", &e))?;
    info!(
        shard = shard.id,
        below_log_index = cut,
        segments = removed.len(),
        bytes = removed.iter().map(|s| s.bytes).sum::<u64>(),
        "removed old log segments"
    );
    Ok(removed)
}

/// Runs retention every `interval` (the leader decides, every replica removes).
pub(crate) async fn retention_loop(
    shard: Arc<Shard>,
    policy: RetentionPolicy,
    interval: Duration,
    clock: SharedClock,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now = SystemTime::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(clock.now_ms()).unwrap_or(0));
        match enforce_retention(&shard, policy, now).await {
            Ok(cut) => debug!(shard = shard.id, ?cut, "retention pass done"),
            Err(err) => warn!(shard = shard.id, error = %err, "retention pass failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn segment(
        first: u64,
        last: u64,
        bytes: u64,
        age_s: u64,
        sealed: bool,
        now: SystemTime,
    ) -> SegmentInfo {
        SegmentInfo {
            first_index: first,
            last_index: Some(last),
            bytes,
            sealed,
            modified: now - Duration::from_secs(age_s),
            created: now - Duration::from_secs(age_s),
            path: PathBuf::from(format!("{first}.seg")),
        }
    }

    #[test]
    fn old_sealed_segments_go_oldest_first() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let policy = RetentionPolicy {
            time: Duration::from_secs(3600),
            size: None,
        };
        let segments = vec![
            segment(1, 100, 10, 7200, true, now),
            segment(101, 200, 10, 5000, true, now),
            segment(201, 300, 10, 100, true, now),
            segment(301, 350, 10, 7200, false, now),
        ];
        assert_eq!(retention_cut(&segments, now, policy, u64::MAX), Some(201));
        assert_eq!(
            retention_cut(&segments, now, policy, 150),
            Some(101),
            "capped at a segment boundary"
        );
        assert_eq!(retention_cut(&segments, now, policy, 50), None);
        let young = RetentionPolicy {
            time: Duration::from_secs(10_000),
            ..policy
        };
        assert_eq!(retention_cut(&segments, now, young, u64::MAX), None);
    }

    #[test]
    fn size_budget_drops_oldest_until_it_fits() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let policy = RetentionPolicy {
            time: Duration::from_secs(1_000_000),
            size: Some(25),
        };
        let segments = vec![
            segment(1, 100, 10, 1, true, now),
            segment(101, 200, 10, 1, true, now),
            segment(201, 300, 10, 1, true, now),
            segment(301, 350, 5, 1, false, now),
        ];
        // 35 bytes: dropping the first leaves 25, which fits.
        assert_eq!(retention_cut(&segments, now, policy, u64::MAX), Some(101));
        let unlimited = RetentionPolicy {
            size: None,
            ..policy
        };
        assert_eq!(retention_cut(&segments, now, unlimited, u64::MAX), None);
    }
}

//! A shard's tiering (ADR 0023). The leader uploads sealed, committed segments the manifest does
//! not cover yet, each under a key carrying its term, and records each through the log
//! (`Tiered`); only a committed entry makes an upload the visible copy. Every replica then
//! evicts its local copies of tiered segments once they are older (or beyond the size) its
//! local retention allows; reads below the local log go to the tier. The leader also deletes
//! objects the manifest no longer names: below the retention floor at once, others (uploads
//! whose entry never committed) after a grace period.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use openraft::async_runtime::WatchReceiver;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use vela_proto::clock::SharedClock;
use vela_proto::store_api::StoreError;
use vela_raft::SegmentInfo;
use vela_tier::{Pace, Tier};

use super::Shard;
use super::tasks::{RetentionPolicy, remove_below, retention_cut};
use crate::command::{CommandResponse, StoreCommand};
use crate::state::{TierRefusal, TieredSegment};

/// How a shard tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TierPolicy {
    /// Time between passes.
    pub interval: Duration,
    /// How long and how much of the tiered log stays on local disk.
    pub local: RetentionPolicy,
    /// Unreferenced objects younger than this are left alone.
    pub orphan_grace: Duration,
}

/// Where a shard's tiering stands on this node (for `tier status` and metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierProgress {
    /// The last failure, until a pass succeeds.
    pub last_error: Option<String>,
    /// When this node last recorded an upload (Unix ms).
    pub last_upload_ms: Option<i64>,
    /// Segments this node uploaded and recorded, and their bytes, since it started.
    pub uploaded: u64,
    pub uploaded_bytes: u64,
    /// Local bytes evicted (their tiered copy serves reads), since it started.
    pub evicted_bytes: u64,
}

/// Passes between two orphan collections.
const GC_EVERY_PASSES: u32 = 30;

/// The slowest a pass uploads (bytes per second), however little it has: a pass spreads what it
/// has over the interval, but no single segment needs to take longer than this allows.
const MIN_UPLOAD_PACE: u64 = 8 << 20;

/// The shard's tiering loop (every replica; uploads and collection on the leader).
pub(crate) async fn tier_loop(
    shard: Arc<Shard>,
    tier: Arc<Tier>,
    policy: TierPolicy,
    clock: SharedClock,
    cancel: CancellationToken,
) {
    let mut failures = backoff();
    let mut pause = policy.interval;
    let mut passes = 0u32;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let started = tokio::time::Instant::now();
        let now = SystemTime::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(clock.now_ms()).unwrap_or(0));
        let mut result = Ok(());
        if shard.raft.is_leader() {
            result = upload_pending(&shard, &tier, clock.now_ms(), policy.interval).await;
            passes += 1;
            if result.is_ok() && passes >= GC_EVERY_PASSES {
                passes = 0;
                result = collect_orphans(&shard, &tier, now, policy.orphan_grace).await;
            }
        }
        // Recorded segments may go even while uploads fail: their copies are verified.
        let evicted = evict_local(&shard, policy.local, now).await.map(|_| ());
        result = result.and(evicted);
        match result {
            Ok(()) => {
                shard.tier_progress.lock().last_error = None;
                failures = backoff();
                // Uploads are paced over an interval: the next pass starts an interval after
                // this one started, so a steady ingest is uploaded about as evenly as it came.
                pause = policy.interval.saturating_sub(started.elapsed());
            }
            Err(err) => {
                warn!(shard = shard.id, error = %err, "tiering pass failed; local data is kept");
                shard.tier_progress.lock().last_error = Some(err.to_string());
                pause = failures
                    .next()
                    .unwrap_or(policy.interval)
                    .max(policy.interval);
            }
        }
    }
}

/// Delays after consecutive failed passes.
fn backoff() -> impl Iterator<Item = Duration> {
    vela_tier::failure_backoff()
}

fn unavailable(shard: &Shard, what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("tiering shard {}: {what}: {err}", shard.id))
}

/// Uploads and records, oldest first, every sealed committed segment past the manifest, paced so
/// that together they take about `spread` (never slower than [`MIN_UPLOAD_PACE`]): a 64 MiB
/// segment copied in one burst took the core and the disk from the traffic for tens of ms
/// (docs/benchmarks.md, "Tier uploads in bursts"), while a backlog still goes as fast as the
/// tier takes it.
pub(crate) async fn upload_pending(
    shard: &Shard,
    tier: &Tier,
    now_ms: i64,
    spread: Duration,
) -> Result<(), StoreError> {
    let term = shard.raft.metrics().borrow_watched().current_term;
    let (applied, floor, mut through, version) = {
        let applied = shard.shared.applied.read();
        (
            applied.last_applied.map_or(0, |l| l.index),
            applied.state.truncated_below(),
            applied.state.tier().through(),
            applied.state.apply_version(),
        )
    };
    if version < 9 {
        return Ok(());
    }
    let segments = shard.log.segments();
    let pending: Vec<&SegmentInfo> = segments
        .iter()
        .filter(|s| s.sealed)
        .filter(|s| {
            s.last_index.is_some_and(|last| {
                last <= applied && last >= floor && through.is_none_or(|t| last > t)
            })
        })
        .collect();
    let Some(first) = pending.first() else {
        return Ok(());
    };
    // The files stay until the copy is done (retention may be deleting old segments).
    let _pin = shard.log.pin_from(first.first_index);
    let pace = Pace::spreading(
        pending.iter().map(|s| s.bytes).sum(),
        spread,
        MIN_UPLOAD_PACE,
    );
    for segment in pending {
        let Some(last) = segment.last_index else {
            continue;
        };
        if through.is_some_and(|t| segment.first_index > t + 1) {
            warn!(
                shard = shard.id,
                tiered_through = through,
                segment_first = segment.first_index,
                "this replica's log starts past the tier's end; another replica must lead to fill the gap"
            );
            return Ok(());
        }
        let key = Tier::segment_key(shard.id, segment.first_index, last, term);
        let Some((file, len)) = shard.log.sealed_file(segment.first_index) else {
            // Removed meanwhile (retention): nothing to upload.
            continue;
        };
        let uploaded = tier
            .upload_segment_paced(&key, &file, len, pace)
            .await
            .map_err(|e| unavailable(shard, "upload", e))?;
        let millis = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        };
        let record = TieredSegment {
            key: key.clone(),
            first_index: segment.first_index,
            last_index: last,
            bytes: uploaded.bytes,
            crc32c: uploaded.crc32c,
            first_append_ms: millis(segment.created),
            last_append_ms: millis(segment.modified),
        };
        match shard
            .write(StoreCommand::Tiered { segment: record })
            .await?
        {
            CommandResponse::Tiered(Ok(())) => {
                through = Some(last);
                let mut progress = shard.tier_progress.lock();
                progress.uploaded += 1;
                progress.uploaded_bytes += uploaded.bytes;
                progress.last_upload_ms = Some(now_ms);
                info!(
                    shard = shard.id,
                    key,
                    bytes = uploaded.bytes,
                    "segment tiered"
                );
            }
            CommandResponse::Tiered(Err(refusal)) => {
                // Applied and refused: the object will never be named; it goes now.
                debug!(
                    shard = shard.id,
                    key,
                    ?refusal,
                    "tiered segment not recorded"
                );
                tier.delete(&key)
                    .await
                    .map_err(|e| unavailable(shard, "deleting an unrecorded upload", e))?;
                if refusal == TierRefusal::NotYet {
                    return Ok(());
                }
                through = shard.shared.applied.read().state.tier().through();
            }
            other => return Err(super::unexpected("tiered", &other)),
        }
    }
    Ok(())
}

/// Deletes objects of the shard the manifest does not name: below the retention floor (their
/// entries were trimmed) at once, others once older than `grace`.
pub(crate) async fn collect_orphans(
    shard: &Shard,
    tier: &Tier,
    now: SystemTime,
    grace: Duration,
) -> Result<(), StoreError> {
    let listed = tier
        .list_segments(shard.id)
        .await
        .map_err(|e| unavailable(shard, "listing", e))?;
    let doomed: Vec<String> = {
        let applied = shard.shared.applied.read();
        let floor = applied.state.truncated_below();
        let manifest = applied.state.tier();
        listed
            .into_iter()
            .filter(|o| !manifest.contains_key(&o.key))
            .filter(|o| {
                o.last_index < floor || now.duration_since(o.modified).is_ok_and(|age| age >= grace)
            })
            .map(|o| o.key)
            .collect()
    };
    for key in &doomed {
        tier.delete(key)
            .await
            .map_err(|e| unavailable(shard, "deleting", e))?;
    }
    if !doomed.is_empty() {
        info!(
            shard = shard.id,
            objects = doomed.len(),
            "deleted tier objects the manifest no longer names"
        );
    }
    Ok(())
}

/// Removes local segments the tier holds once local retention lets them go. Returns the log
/// index everything below which is now only in the tier, if anything went.
pub(crate) async fn evict_local(
    shard: &Shard,
    policy: RetentionPolicy,
    now: SystemTime,
) -> Result<Option<u64>, StoreError> {
    let segments = shard.log.segments();
    // Only a prefix of segments the tier wholly covers may go.
    let cap = {
        let applied = shard.shared.applied.read();
        let floor = applied.state.truncated_below();
        let manifest = applied.state.tier();
        let mut cap = None;
        for segment in segments.iter().filter(|s| s.sealed) {
            let Some(last) = segment.last_index else {
                break;
            };
            if !manifest.covers(segment.first_index.max(floor).min(last), last) {
                break;
            }
            cap = Some(last + 1);
        }
        cap
    };
    let Some(cap) = cap else {
        return Ok(None);
    };
    // Removal stops at the replay floor of the snapshot generations kept after the snapshot
    // `remove_below` takes (ADR 0006): cutting past it would only take a snapshot and remove
    // nothing, every pass. While the shard is idle that leaves at most the log between two
    // generations on local disk.
    let cap = cap.min(replay_floor_after_snapshot(shard)?);
    let Some(cut) = retention_cut(&segments, now, policy, cap) else {
        return Ok(None);
    };
    let removed = remove_below(shard, cut).await?;
    shard.tier_progress.lock().evicted_bytes += removed.iter().map(|s| s.bytes).sum::<u64>();
    Ok((!removed.is_empty()).then_some(cut))
}

/// The replay floor the shard's kept snapshot generations will have once a snapshot of
/// everything applied now exists.
fn replay_floor_after_snapshot(shard: &Shard) -> Result<u64, StoreError> {
    let applied = shard
        .shared
        .applied
        .read()
        .last_applied
        .map_or(0, |l| l.index);
    let kept = shard
        .keeper
        .generations()
        .indexes()
        .map_err(|e| unavailable(shard, "listing snapshot generations", e))?;
    Ok(match kept.as_slice() {
        [] => applied + 1,
        [newest, ..] if applied > *newest => newest + 1,
        [only] => only + 1,
        [_, older, ..] => older + 1,
    })
}

/// The retained log as retention sees it: tiered segments the local log no longer holds, then
/// the local segments (oldest first).
pub(crate) fn retained_segments(shard: &Shard) -> Vec<SegmentInfo> {
    let local = shard.log.segments();
    let local_first = local.first().map_or(u64::MAX, |s| s.first_index);
    let applied = shard.shared.applied.read();
    let time =
        |ms: i64| SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let mut out: Vec<SegmentInfo> = applied
        .state
        .tier()
        .segments()
        .filter(|s| s.last_index < local_first)
        .map(|s| SegmentInfo {
            first_index: s.first_index,
            last_index: Some(s.last_index),
            bytes: s.bytes,
            sealed: true,
            modified: time(s.last_append_ms),
            created: time(s.first_append_ms),
            path: s.key.clone().into(),
        })
        .collect();
    out.extend(local);
    out
}

//! Attaching object storage to a running store (ADR 0023): every shard, held now or opened
//! later, tiers its sealed segments there and reads evicted ones back from it.

use std::sync::Arc;
use std::time::Duration;

use vela_proto::cluster_status::ShardTier;
use vela_tier::Tier;

use super::Store;
use crate::shard::tasks::RetentionPolicy;
use crate::shard::tiering::{TierPolicy, tier_loop};

/// How this node's shards use the tier (from `[tier]` and `store.local_retention_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierSettings {
    pub interval: Duration,
    pub orphan_grace: Duration,
}

impl Store {
    /// Tiers every shard to `tier` from now on (once; a second call is refused).
    pub async fn attach_tier(&self, tier: Arc<Tier>, settings: TierSettings) -> Result<(), String> {
        let policy = TierPolicy {
            interval: settings.interval,
            local: RetentionPolicy {
                time: self.config.local_retention_time,
                size: self.config.local_retention_size.map(|s| s.as_u64()),
            },
            orphan_grace: settings.orphan_grace,
        };
        // No shard opens meanwhile, so each gets its loop exactly once (here or in `adopt`).
        let _opening = self.opening.lock().await;
        self.tier
            .set((tier.clone(), policy))
            .map_err(|_| "a tier is already attached".to_owned())?;
        let shards = self.shards.read().clone();
        let mut tasks = self.tasks.lock();
        for local in shards.values() {
            let _ = local.shard.tier.set(tier.clone());
            tasks.spawn(local.tasks.track_future(tier_loop(
                local.shard.clone(),
                tier.clone(),
                policy,
                self.clock.clone(),
                local.cancel.clone(),
            )));
        }
        Ok(())
    }

    /// The attached tier, if any.
    pub fn tier(&self) -> Option<&Arc<Tier>> {
        self.tier.get().map(|(tier, _)| tier)
    }

    /// Each shard's tiering on this node.
    pub fn tier_status(&self) -> Vec<ShardTier> {
        let tiering = self.tier.get().is_some();
        self.shards()
            .values()
            .map(|local| {
                let shard = &local.shard;
                let segments = shard.log.segments();
                let applied = shard.shared.applied.read();
                let manifest = applied.state.tier();
                let through = manifest.through();
                let pending: Vec<_> = segments
                    .iter()
                    .filter(|s| {
                        s.sealed && s.last_index.is_some_and(|l| through.is_none_or(|t| l > t))
                    })
                    .collect();
                let progress = shard.tier_progress.lock().clone();
                ShardTier {
                    shard: shard.id,
                    leader: shard.raft.is_leader(),
                    tiering,
                    tiered_segments: manifest.len() as u64,
                    tiered_first: manifest.start(),
                    tiered_last: through,
                    tiered_bytes: manifest.bytes(),
                    local_first: segments.first().map(|s| s.first_index),
                    local_last: shard.reader.last_index(),
                    local_bytes: segments.iter().map(|s| s.bytes).sum(),
                    pending_segments: pending.len() as u64,
                    pending_bytes: pending.iter().map(|s| s.bytes).sum(),
                    retained_from: applied.state.truncated_below(),
                    uploaded_segments: progress.uploaded,
                    uploaded_bytes: progress.uploaded_bytes,
                    evicted_bytes: progress.evicted_bytes,
                    last_upload_ms: progress.last_upload_ms,
                    last_error: progress.last_error,
                }
            })
            .collect()
    }
}

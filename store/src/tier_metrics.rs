//! The tier's instruments (ADR 0023, `docs/metrics.md`): what went up and came down, the read
//! cache, and per shard the bytes tiered and the upload lag. Read from the tier's counters and
//! the shards' state when collected; nothing is recorded on the data path.

use std::any::Any;
use std::sync::Weak;

use vela_proto::cluster_status::ShardTier;
use vela_telemetry::{KeyValue, Meter, NodeLabels};
use vela_tier::{TierStats, TierStats as S};

use crate::Store;

type Counter = fn(&TierStats) -> u64;

/// The instruments; they report while the returned handles are kept.
pub(crate) fn instruments(
    store: &Weak<Store>,
    meter: &Meter,
    labels: &NodeLabels,
) -> Vec<Box<dyn Any + Send + Sync>> {
    let mut kept: Vec<Box<dyn Any + Send + Sync>> = Vec::new();
    let counters: [(&'static str, &'static str, Counter); 8] = [
        (
            "vela_tier_uploads_total",
            "Sealed segments uploaded to the tier and verified",
            |s| S::get(&s.uploads),
        ),
        (
            "vela_tier_upload_failures_total",
            "Segment uploads that failed (retried; the local copy is kept)",
            |s| S::get(&s.upload_failures),
        ),
        (
            "vela_tier_upload_bytes_total",
            "Bytes of segments uploaded to the tier",
            |s| S::get(&s.upload_bytes),
        ),
        (
            "vela_tier_deletes_total",
            "Objects deleted from the tier (retention, unrecorded uploads)",
            |s| S::get(&s.deletes),
        ),
        (
            "vela_tier_get_requests_total",
            "Range reads sent to the tier (cold reads and read-ahead)",
            |s| S::get(&s.get_requests),
        ),
        (
            "vela_tier_get_bytes_total",
            "Bytes read from the tier",
            |s| S::get(&s.get_bytes),
        ),
        (
            "rocketmq_tiered_store_read_ahead_cache_access_total",
            "Reads of tiered blocks through the local read cache",
            |s| S::get(&s.cache_hits) + S::get(&s.cache_misses),
        ),
        (
            "rocketmq_tiered_store_read_ahead_cache_hit_total",
            "Reads of tiered blocks the local read cache served",
            |s| S::get(&s.cache_hits),
        ),
    ];
    for (name, help, read) in counters {
        let (store, labels) = (store.clone(), labels.clone());
        kept.push(Box::new(
            meter
                .u64_observable_counter(name)
                .with_description(help)
                .with_callback(move |o| {
                    let Some(tier) = store.upgrade().and_then(|s| s.tier().cloned()) else {
                        return;
                    };
                    o.observe(read(tier.stats()), &labels.with([]));
                })
                .build(),
        ));
    }
    // Per shard, on the node that leads it (every replica holds the same manifest).
    type Gauge = fn(&ShardTier, i64) -> Option<i64>;
    let gauges: [(&'static str, &'static str, Gauge); 3] = [
        (
            "vela_tier_upload_lag_bytes",
            "Bytes of sealed segments not yet in the tier, on the shard's leader",
            |t, _| Some(clamp(t.pending_bytes)),
        ),
        (
            "vela_tier_segments",
            "Segments in the shard's tier manifest",
            |t, _| Some(clamp(t.tiered_segments)),
        ),
        (
            "vela_tier_last_upload_age_seconds",
            "Seconds since the shard's leader last recorded an upload (absent before the first)",
            |t, now| t.last_upload_ms.map(|at| (now - at).max(0) / 1000),
        ),
    ];
    for (name, help, read) in gauges {
        let (store, labels) = (store.clone(), labels.clone());
        kept.push(Box::new(
            meter
                .i64_observable_gauge(name)
                .with_description(help)
                .with_callback(move |o| {
                    let Some(store) = store.upgrade().filter(|s| s.tier().is_some()) else {
                        return;
                    };
                    let now = store.now_ms();
                    for t in store.tier_status().iter().filter(|t| t.leader) {
                        if let Some(value) = read(t, now) {
                            o.observe(
                                value,
                                &labels.with([KeyValue::new("shard", i64::from(t.shard))]),
                            );
                        }
                    }
                })
                .build(),
        ));
    }
    kept
}

/// Bytes in object storage of the shards `store` leads (`rocketmq_storage_size` with
/// `storage_type="tiered"`), if it tiers.
pub(crate) fn tiered_bytes(store: &Store) -> Option<u64> {
    store.tier()?;
    Some(
        store
            .tier_status()
            .iter()
            .filter(|t| t.leader)
            .map(|t| t.tiered_bytes)
            .sum(),
    )
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

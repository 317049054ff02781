//! The store's own metrics (Prometheus, through the registry `/metrics` serves). Where RocketMQ
//! has a name (`rocketmq_half_messages`) it is used; the rest carry Vela's prefix.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use vela_proto::domain::ShardId;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScrubLabels {
    shard: ShardId,
    /// `clean`, `damaged` or `failed` (the scrub could not run to the end).
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabel {
    shard: ShardId,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicShardLabels {
    topic: String,
    shard: ShardId,
}

/// How a scrub ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScrubResult {
    Clean,
    Damaged,
    Failed,
}

/// Metrics of a store node; the handles are shared, so registering them later is fine.
#[derive(Debug, Default)]
pub(crate) struct StoreMetrics {
    scrubs: Family<ScrubLabels, Counter>,
    damaged_segments: Family<ShardLabel, Gauge>,
    half_messages: Family<TopicShardLabels, Gauge>,
    orphans_rolled_back: Family<ShardLabel, Counter>,
}

impl StoreMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "vela_store_scrubs",
            "Background scrubs of a shard's sealed log segments, by result",
            self.scrubs.clone(),
        );
        registry.register(
            "vela_store_damaged_segments",
            "Sealed log segments of a shard that its last completed scrub found damaged",
            self.damaged_segments.clone(),
        );
        registry.register(
            "rocketmq_half_messages",
            "Transaction half messages waiting for a commit or rollback, on the shards this node leads",
            self.half_messages.clone(),
        );
        registry.register(
            "vela_store_orphans_rolled_back",
            "Transaction half messages the shard leader rolled back after their check-backs went unanswered",
            self.orphans_rolled_back.clone(),
        );
    }

    /// The half messages per topic of a shard this node leads (an empty map when it stopped
    /// leading); topics that had some and now have none disappear.
    pub fn half_messages(
        &self,
        shard: ShardId,
        counts: &std::collections::BTreeMap<String, i64>,
        reported: &mut std::collections::BTreeSet<String>,
    ) {
        for topic in reported.iter().filter(|t| !counts.contains_key(*t)) {
            self.half_messages.remove(&TopicShardLabels {
                topic: topic.clone(),
                shard,
            });
        }
        for (topic, count) in counts {
            self.half_messages
                .get_or_create(&TopicShardLabels {
                    topic: topic.clone(),
                    shard,
                })
                .set(*count);
        }
        *reported = counts.keys().cloned().collect();
    }

    pub fn orphan_rolled_back(&self, shard: ShardId) {
        self.orphans_rolled_back
            .get_or_create(&ShardLabel { shard })
            .inc();
    }

    /// Records a scrub's end; `damaged` is set for a scrub that ran to the end.
    pub fn scrubbed(&self, shard: ShardId, result: ScrubResult, damaged: Option<usize>) {
        let result_label = match result {
            ScrubResult::Clean => "clean",
            ScrubResult::Damaged => "damaged",
            ScrubResult::Failed => "failed",
        };
        self.scrubs
            .get_or_create(&ScrubLabels {
                shard,
                result: result_label,
            })
            .inc();
        if let Some(damaged) = damaged {
            self.damaged_segments
                .get_or_create(&ShardLabel { shard })
                .set(i64::try_from(damaged).unwrap_or(i64::MAX));
        }
    }
}

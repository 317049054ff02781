//! Brings each shard's copy of its topics' retentions to the controller's (ADR 0008's "two
//! copies"). A topic's retention lives in the metadata (what `topic describe` shows) and in the
//! log of every shard holding its queues (what the stores act on, so that a store keeps data
//! without asking the controller). An update writes the metadata first, then the shards; when
//! the second part fails (a shard without a leader, a store down), the reconciler finishes it:
//! every round it compares what each shard's leader reports (`ShardMember::retention`) with the
//! metadata and sends the difference to that shard.
//!
//! The stores' reports are taken before the metadata is read (through a read barrier), so a
//! value a shard reports from an update in flight is never overwritten with the metadata from
//! before that update: an update writes the metadata before the shards. What is sent is always
//! the metadata's value, read after the report, with its revision
//! (`TopicConfig::retention_revision`): a shard that applied a newer revision of the topic (an
//! update since, or its deletion) ignores it, so a fix delivered late (from a deposed leader
//! across a partition, or held up in the network) never brings an older value back. A topic the
//! metadata does not have (deleted: its shards drop it with its retention) or has no queues on
//! the shard is left alone.

use std::collections::BTreeMap;

use tracing::{info, warn};
use vela_proto::cluster_status::{MemberRole, StoreNodeReport};
use vela_proto::domain::{every_queue_shard, shards_of_topic_among};
use vela_proto::{ShardId, StoreApi, TopicConfig, TopicName};

/// One shard whose retention of one topic differs from the metadata, and the value to set there
/// (`None`: back to the store's retention time) at the metadata's revision of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionFix {
    pub shard: ShardId,
    pub topic: TopicName,
    pub retention_ms: Option<u64>,
    pub revision: u64,
}

/// What `reports` (store nodes' reports) and `topics` (the metadata) disagree on, per shard
/// whose leader reports its retentions (the highest term's, when two report leading). In shard
/// then topic order.
pub fn plan(reports: &[StoreNodeReport], topics: &[TopicConfig]) -> Vec<RetentionFix> {
    let mut reported: BTreeMap<ShardId, (u64, &BTreeMap<TopicName, u64>)> = BTreeMap::new();
    for member in reports
        .iter()
        .filter_map(|r| r.report.as_ref().ok())
        .flatten()
    {
        let Some(retention) = member.retention.as_ref() else {
            continue;
        };
        if member.status.role != MemberRole::Leader {
            continue;
        }
        let entry = reported
            .entry(member.shard)
            .or_insert((member.status.term, retention));
        if member.status.term > entry.0 {
            *entry = (member.status.term, retention);
        }
    }
    if reported.is_empty() {
        return Vec::new();
    }
    let every_shard = every_queue_shard(topics);
    let shards_of = |t: &TopicConfig| shards_of_topic_among(t, &every_shard);
    let mut fixes = Vec::new();
    // Topics with a retention of their own: every shard holding them has it.
    for topic in topics {
        let Some(ms) = topic.retention_ms else {
            continue;
        };
        for shard in shards_of(topic) {
            if let Some((_, have)) = reported.get(&shard)
                && have.get(&topic.name) != Some(&ms)
            {
                fixes.push(RetentionFix {
                    shard,
                    topic: topic.name.clone(),
                    retention_ms: Some(ms),
                    revision: topic.retention_revision,
                });
            }
        }
    }
    // Topics back on the store's time: no shard holding them keeps one of their own.
    let by_name: BTreeMap<&TopicName, &TopicConfig> = topics.iter().map(|t| (&t.name, t)).collect();
    for (&shard, (_, have)) in &reported {
        for topic in have.keys() {
            let Some(config) = by_name.get(topic) else {
                continue;
            };
            if config.retention_ms.is_none() && shards_of(config).contains(&shard) {
                fixes.push(RetentionFix {
                    shard,
                    topic: topic.clone(),
                    retention_ms: None,
                    revision: config.retention_revision,
                });
            }
        }
    }
    fixes.sort_by(|a, b| (a.shard, &a.topic).cmp(&(b.shard, &b.topic)));
    fixes
}

/// Sends every fix of [`plan`] to its shard; returns each with its outcome (a failure waits for
/// the next round).
pub async fn sync_retention(
    store: &dyn StoreApi,
    reports: &[StoreNodeReport],
    topics: &[TopicConfig],
) -> Vec<(RetentionFix, Result<(), String>)> {
    let mut done = Vec::new();
    for fix in plan(reports, topics) {
        let outcome = store
            .set_topic_retention(&fix.topic, fix.retention_ms, fix.revision, &[fix.shard])
            .await
            .map_err(|e| e.to_string());
        match &outcome {
            Ok(()) => info!(
                shard = fix.shard,
                topic = %fix.topic,
                retention_ms = ?fix.retention_ms,
                "set a topic's retention on a shard that did not have the metadata's"
            ),
            Err(err) => warn!(
                shard = fix.shard,
                topic = %fix.topic,
                retention_ms = ?fix.retention_ms,
                error = %err,
                "setting a topic's retention on a shard that does not have the metadata's"
            ),
        }
        done.push((fix, outcome));
    }
    done
}

#[cfg(test)]
#[path = "retention_sync/tests.rs"]
mod tests;

//! Whether the replicas of a shard agree: once every member has applied the same log, their
//! states must be equal (apply is deterministic, so a difference means a replica skipped,
//! repeated or reordered something, or the logs diverged). On a difference it names the first
//! log entry where the replicas differ. The test sends to queue `shard` of `shard`.

use super::*;

/// Node `id`'s applied index of `shard` and its queues' offsets and group positions.
fn applied(cluster: &Cluster, shard: ShardId, id: NodeId) -> Option<(u64, Vec<QueueStats>)> {
    let shards = cluster.node(id).shards();
    let applied = shards.get(&shard)?.shard.shared.applied.read();
    Some((
        applied.last_applied.as_ref().map_or(0, |l| l.index),
        applied.state.queue_stats(&topic(), Some(&group())),
    ))
}

/// Once every member has applied the same log, they must agree on the state: apply is
/// deterministic, so a difference means a replica skipped, repeated or reordered something.
pub(super) async fn replicas_agree(
    cluster: &Cluster,
    shard: ShardId,
    members: &[NodeId],
) -> Result<(), String> {
    let mut seen = Vec::new();
    for _ in 0..400 {
        seen = members
            .iter()
            .map(|&id| (id, applied(cluster, shard, id)))
            .collect();
        let indexes: BTreeSet<Option<u64>> =
            seen.iter().map(|(_, a)| a.as_ref().map(|a| a.0)).collect();
        if indexes.len() == 1 && !indexes.contains(&None) {
            let states: Vec<&Vec<QueueStats>> = seen
                .iter()
                .filter_map(|(_, a)| a.as_ref().map(|a| &a.1))
                .collect();
            return if states.windows(2).all(|w| w[0] == w[1]) {
                Ok(())
            } else {
                Err(format!(
                    "the replicas' states differ at one applied index: {seen:?}\n{}",
                    diagnose(cluster, shard, members)
                ))
            };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(format!("the replicas never applied the same log: {seen:?}"))
}

/// What the replicas' consumer states are and where their logs first differ (for a failure).
fn diagnose(cluster: &Cluster, shard: ShardId, members: &[NodeId]) -> String {
    let mut out = String::new();
    let mut logs = Vec::new();
    for &id in members {
        let shards = cluster.node(id).shards();
        let Some(local) = shards.get(&shard) else {
            continue;
        };
        let applied = local.shard.shared.applied.read();
        let through = applied.last_applied.as_ref().map_or(0, |l| l.index);
        out += &format!(
            "node {id}: consumer {:?}\n",
            applied.state.consumer(&group(), &topic(), shard)
        );
        let first = local.shard.log.reader().first_index().unwrap_or(1);
        let entries: Vec<String> = local
            .shard
            .log
            .reader()
            .entries(first..=through)
            .map(|es| es.iter().map(|e| format!("{e:?}")).collect())
            .unwrap_or_default();
        logs.push((id, first, entries));
    }
    if let Some((_, first0, base)) = logs.first() {
        for (id, first, entries) in &logs[1..] {
            let offset = first.saturating_sub(*first0) as usize;
            let differs = entries
                .iter()
                .zip(base.iter().skip(offset))
                .position(|(a, b)| a != b);
            out += &format!(
                "node {id}: log from {first}, {} entries; first difference from the first node: \
                 {:?}\n",
                entries.len(),
                differs.map(|i| (&base[i + offset], &entries[i]))
            );
        }
    }
    out
}

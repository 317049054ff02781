//! The leader balancer: while this controller node leads the controller group, it looks at the
//! store nodes every `leader_balance_interval` and hands shard leaderships from nodes that lead
//! more than their share to caught-up followers on nodes that lead less ([`leader_moves`]).
//! Before that, it moves placed replicas onto store nodes that hold fewer (a node that joined,
//! [`rebalance_replicas_once`]), one at a time. It acts on observed state only (the stores' own reports), so a balancer that dies or loses
//! the controller leadership leaves nothing half done: the next round looks again. Data traffic
//! never waits for it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use vela_proto::cluster_status::shard_views;
use vela_proto::{ShardId, StoreApi};

use crate::Controller;
use crate::balance::{LeaderMove, leader_moves};
use crate::placement::{ReplicaMove, replica_move};

/// A follower at most this many entries behind its leader may be given leadership (it catches
/// up the rest before it can win the election the transfer starts).
pub const BALANCE_MAX_LAG: u64 = 64;

/// One balancing round: asks every store node for its replicas' status, computes the moves
/// (leaderships leave the `draining` nodes) and carries them out one at a time. Returns each
/// move with its outcome.
pub async fn balance_once(
    store: &dyn StoreApi,
    draining: &BTreeSet<u64>,
) -> Vec<(LeaderMove, Result<(), String>)> {
    let reports = store.node_status().await;
    let views = shard_views(&store.shard_replicas(), &reports);
    let up: BTreeSet<u64> = reports
        .iter()
        .filter(|r| r.report.is_ok())
        .map(|r| r.node)
        .collect();
    let moves = leader_moves(&views, &up, BALANCE_MAX_LAG, draining);
    let mut done = Vec::with_capacity(moves.len());
    for m in moves {
        let outcome = store
            .transfer_leader(m.shard, m.to)
            .await
            .map_err(|e| e.to_string());
        match &outcome {
            Ok(()) => info!(
                shard = m.shard,
                from = m.from,
                to = m.to,
                "moved shard leadership to even out leaders"
            ),
            Err(err) => warn!(
                shard = m.shard,
                from = m.from,
                to = m.to,
                error = %err,
                "moving shard leadership failed; the next round looks again"
            ),
        }
        done.push((m, outcome));
    }
    done
}

/// One replica-balancing round (issue 11): when every placed shard has a leader whose voters
/// are exactly its placed replicas, all caught up (no move or drain under way), moves the one
/// replica [`replica_move`] names from the node holding the most placed replicas to a store
/// node that is up, not draining and holds the fewest (a node that just joined). Returns the
/// move made, if any; the reconciler carries it out and the next round waits for it.
pub async fn rebalance_replicas_once(
    controller: &Controller,
    store: &dyn StoreApi,
) -> Result<Option<ReplicaMove>, String> {
    let placed = controller.placed_shards();
    if placed.is_empty() {
        return Ok(None);
    }
    let expected: BTreeMap<ShardId, Vec<u64>> = placed
        .iter()
        .map(|(&shard, p)| (shard, p.replicas.clone()))
        .collect();
    let reports = store.node_status().await;
    for view in shard_views(&expected, &reports) {
        // The views also cover the configured shards the nodes report.
        let Some(wanted) = expected.get(&view.shard) else {
            continue;
        };
        let wanted: BTreeSet<u64> = wanted.iter().copied().collect();
        let voters: BTreeSet<u64> = view.replicas.iter().map(|r| r.node).collect();
        let followers = view.caught_up_followers(BALANCE_MAX_LAG).count();
        if view.leader.is_none() || voters != wanted || followers + 1 != wanted.len() {
            debug!(
                shard = view.shard,
                "replica balancing waits for the shard to settle"
            );
            return Ok(None);
        }
    }
    let draining = controller.draining();
    let up: BTreeSet<u64> = reports
        .iter()
        .filter(|r| r.report.is_ok())
        .map(|r| r.node)
        .collect();
    let candidates: Vec<u64> = controller
        .stores()
        .into_keys()
        .filter(|s| up.contains(s) && !draining.contains(s))
        .collect();
    let Some(m) = replica_move(&expected, &candidates) else {
        return Ok(None);
    };
    controller
        .move_replica(m)
        .await
        .map_err(|e| e.to_string())?;
    info!(
        shard = m.shard,
        from = m.from,
        to = m.to,
        "moving a placed replica to even out the store nodes"
    );
    Ok(Some(m))
}

/// Runs [`balance_once`] every `interval` while `controller` leads its group, until the
/// controller is dropped or stopped (the task holds only a weak reference).
pub fn spawn_leader_balancer(
    controller: &Arc<Controller>,
    store: Arc<dyn StoreApi>,
    interval: Duration,
) -> JoinHandle<()> {
    let controller = Arc::downgrade(controller);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick fires at once; give the cluster one interval to elect leaders first.
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(c) = controller.upgrade() else {
                return;
            };
            if c.is_stopped().await {
                return;
            }
            if !c.group_leads() {
                continue;
            }
            if let Err(err) = rebalance_replicas_once(&c, store.as_ref()).await {
                warn!(error = %err, "replica balancing failed; the next round looks again");
            }
            let draining = c.draining();
            drop(c);
            let moves = balance_once(store.as_ref(), &draining).await;
            debug!(moves = moves.len(), "leader balancing round");
        }
    })
}

//! The leader balancer: while this controller node leads the controller group, it looks at the
//! store nodes every `leader_balance_interval` and hands shard leaderships from nodes that lead
//! more than their share to caught-up followers on nodes that lead less ([`leader_moves`]).
//! It acts on observed state only (the stores' own reports), so a balancer that dies or loses
//! the controller leadership leaves nothing half done: the next round looks again. Data traffic
//! never waits for it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use vela_proto::StoreApi;
use vela_proto::cluster_status::shard_views;

use crate::Controller;
use crate::balance::{LeaderMove, leader_moves};

/// A follower at most this many entries behind its leader may be given leadership (it catches
/// up the rest before it can win the election the transfer starts).
pub const BALANCE_MAX_LAG: u64 = 64;

/// One balancing round: asks every store node for its replicas' status, computes the moves and
/// carries them out one at a time. Returns each move with its outcome.
pub async fn balance_once(store: &dyn StoreApi) -> Vec<(LeaderMove, Result<(), String>)> {
    let reports = store.node_status().await;
    let views = shard_views(&store.shard_replicas(), &reports);
    let up: BTreeSet<u64> = reports
        .iter()
        .filter(|r| r.report.is_ok())
        .map(|r| r.node)
        .collect();
    let moves = leader_moves(&views, &up, BALANCE_MAX_LAG);
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
            let leads = c.group_leads();
            drop(c);
            if !leads {
                continue;
            }
            let moves = balance_once(store.as_ref()).await;
            debug!(moves = moves.len(), "leader balancing round");
        }
    })
}

//! Store nodes a plain `kubectl scale` took away (issue 11). A StatefulSet has no hook before
//! it removes a pod, so the controller leader's store scaler reads the StatefulSet's replicas
//! every round: a registered store node whose pod ordinal is at or beyond them (node id >
//! replicas; pod ordinal i is node i + 1) is reported and, once it no longer answers (its pod
//! is gone: a node that still serves, say one run outside the StatefulSet, is left alone),
//! drained (its placed replicas are re-created on the other store nodes, the reconciler
//! carrying the moves out as for any drain) and, once no placed shard has a replica there and
//! every placed shard is settled, removed. Replicas of the configured shards (`cluster.shards`)
//! are placed replicas too once adopted (ADR 0032) and are re-created the same way. A
//! configured node can only be beyond the replicas when the StatefulSet is below the configured
//! store nodes, and then nothing is repaired (a cluster being stopped, not shrunk): it is
//! reported until the StatefulSet is back.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{error, info, warn};
use vela_proto::{ControllerApi, ControllerError, ShardId};

use crate::Controller;
use crate::kubernetes::StoreStatefulSet;
use crate::scaling::{Reports, unsettled};

/// What one look did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repair {
    /// The StatefulSet's replicas, when there is one to read.
    pub replicas: Option<u32>,
    /// Store nodes beyond them (registered or configured).
    pub away: BTreeSet<u64>,
    /// Nodes drained this round, with the shards whose replicas move.
    pub drained: Vec<(u64, Vec<ShardId>)>,
    /// Nodes whose drain was refused, and why (too few store nodes left, say).
    pub refused: Vec<(u64, String)>,
    /// Nodes removed this round, their replicas re-created elsewhere.
    pub removed: Vec<u64>,
}

/// One look, see the module comment, given the StatefulSet and its `replicas` as this round of
/// the store scaler read them; `reports` asks the store nodes at most once per round.
pub async fn repair_scaled_away_once(
    controller: &Controller,
    statefulset: &StoreStatefulSet,
    replicas: u32,
    reports: &Reports<'_>,
) -> Result<Repair, String> {
    let mut repair = Repair {
        replicas: Some(replicas),
        ..Repair::default()
    };
    let configured = controller.configured_stores.len();
    let registered: Vec<u64> = controller
        .metadata
        .read()
        .registered_stores()
        .keys()
        .copied()
        .collect();
    repair.away = controller
        .configured_stores
        .keys()
        .chain(&registered)
        .copied()
        .filter(|&id| id > u64::from(replicas))
        .collect();
    let before = std::mem::replace(&mut *controller.scaled_away.lock(), repair.away.clone());
    for &id in repair.away.difference(&before) {
        let what = if controller.configured_stores.contains_key(&id) {
            "a configured store node ([[cluster.stores]]): nothing is moved while the \
             StatefulSet is below the configured store nodes; scale it back"
        } else {
            "once it stops answering, its replicas are re-created on the other store nodes \
             and it is removed"
        };
        error!(
            store = id,
            replicas,
            statefulset = %statefulset.describe(),
            "store node {id} is beyond the store StatefulSet's {replicas} replicas (scaled down \
             outside `vela admin store scale`): {what}"
        );
    }
    if (replicas as usize) < configured {
        if !repair.away.is_empty() && before.is_empty() {
            warn!(
                replicas,
                configured,
                "the store StatefulSet is below the configured store nodes: nothing is moved \
                 until it is back"
            );
        }
        return Ok(repair);
    }
    let draining = controller.draining();
    let undrained: Vec<u64> = repair
        .away
        .iter()
        .copied()
        .filter(|id| !draining.contains(id))
        .collect();
    if repair.away.is_empty() {
        return Ok(repair);
    }
    let reports = reports.get().await;
    let answering: BTreeSet<u64> = reports
        .iter()
        .filter(|r| r.report.is_ok())
        .map(|r| r.node)
        .collect();
    for id in undrained {
        if answering.contains(&id) {
            continue; // its pod still runs (terminating, or not one of the StatefulSet's)
        }
        match controller.drain_store(id).await {
            Ok(drain) => {
                info!(store = id, moving = ?drain.moving, "draining a store node that was scaled away");
                repair.drained.push((id, drain.moving));
            }
            Err(ControllerError::Invalid(why)) => repair.refused.push((id, why)),
            Err(err) => return Err(err.to_string()),
        }
    }
    let removable: BTreeSet<u64> = repair
        .away
        .iter()
        .copied()
        .filter(|id| {
            draining.contains(id)
                && !answering.contains(id)
                && !controller.configured_stores.contains_key(id)
        })
        .collect();
    if removable.is_empty() {
        return Ok(repair);
    }
    let expected: BTreeMap<ShardId, Vec<u64>> = controller
        .placed_shards()
        .into_iter()
        .map(|(shard, p)| (shard, p.replicas))
        .collect();
    let still: BTreeSet<u64> = expected.values().flatten().copied().collect();
    if removable.iter().all(|id| still.contains(id)) {
        return Ok(repair);
    }
    if unsettled(&expected, reports).is_some() {
        return Ok(repair);
    }
    for id in removable.into_iter().filter(|id| !still.contains(id)) {
        match controller.remove_store(id).await {
            Ok(()) => {
                info!(
                    store = id,
                    "removed a scaled-away store node: its replicas live on the other nodes"
                );
                repair.removed.push(id);
            }
            Err(ControllerError::NotFound(_)) => {}
            Err(err) => return Err(err.to_string()),
        }
    }
    controller
        .scaled_away
        .lock()
        .retain(|id| !repair.removed.contains(id));
    Ok(repair)
}

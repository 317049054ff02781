//! `vela admin store scale N` (issue 11): the controller drives the store StatefulSet. Up is
//! one patch of its replicas (the new pods register as they start, ADR 0031). Down drains the
//! store nodes above N first; the controller leader's store scaler then waits until no placed
//! shard has a replica on them and every placed shard is settled, lowers the StatefulSet and
//! removes the nodes. The target is in the replicated metadata (`SetStoreScaleIn`), so a new
//! leader finishes a scale-in its predecessor started; asking again is harmless.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};
use vela_proto::cluster_status::{StoreNodeReport, shard_views};
use vela_proto::controller_api::StoreScale;
use vela_proto::{ControllerApi, ControllerError, ShardId, StoreApi};

use crate::Controller;
use crate::command::{Applied, ControllerCommand};
use crate::controller::unexpected;
use crate::kubernetes::StoreStatefulSet;
use crate::scaled_away::repair_scaled_away_once;

/// How often the store scaler looks at a scale-in in progress.
const SCALER_EVERY: Duration = Duration::from_secs(2);

impl Controller {
    /// Gives the controller the store StatefulSet it scales (or why it has none).
    pub fn attach_statefulset(&self, statefulset: Result<Arc<StoreStatefulSet>, String>) {
        *self.statefulset.write() = Some(statefulset);
    }

    pub(crate) fn statefulset(&self) -> Result<Arc<StoreStatefulSet>, ControllerError> {
        match &*self.statefulset.read() {
            Some(Ok(s)) => Ok(s.clone()),
            Some(Err(why)) => Err(ControllerError::Unavailable(why.clone())),
            None => Err(ControllerError::Invalid(
                "this controller drives no store StatefulSet: set controller.store_statefulset \
                 (the Helm chart does) and run it on Kubernetes"
                    .into(),
            )),
        }
    }

    /// Records (or clears) the target of a scale-in in the metadata, so a new leader's store
    /// scaler finishes it; a no-op when it already is.
    async fn set_scale_in(&self, replicas: Option<u32>) -> Result<(), ControllerError> {
        if self.metadata.read().store_scale_in() == replicas {
            return Ok(());
        }
        match self
            .group
            .propose(ControllerCommand::SetStoreScaleIn { replicas })
            .await?
        {
            Ok(Applied::StoreScaleInSet) => Ok(()),
            other => Err(unexpected("set-store-scale-in", &other)),
        }
    }

    pub(crate) async fn scale_stores_now(
        &self,
        replicas: u32,
    ) -> Result<StoreScale, ControllerError> {
        let statefulset = self.statefulset()?;
        let configured = u32::try_from(self.configured_stores.len()).unwrap_or(u32::MAX);
        if replicas < configured {
            return Err(ControllerError::Invalid(format!(
                "the first {configured} store nodes hold the configured shards (cluster.shards): \
                 scale to {configured} or more"
            )));
        }
        let current = statefulset.replicas().await?;
        let mut scale = StoreScale {
            from: current,
            to: replicas,
            draining: Vec::new(),
            moving: Vec::new(),
            done: false,
        };
        if replicas >= current {
            if replicas > current {
                statefulset.set_replicas(replicas).await?;
                info!(from = current, to = replicas, statefulset = %statefulset.describe(), "scaled the store nodes out");
            }
            self.set_scale_in(None).await?;
            scale.done = true;
            return Ok(scale);
        }
        // Pod ordinal i is store node i + 1: the nodes above `replicas` leave.
        let known = self.stores();
        for id in (u64::from(replicas) + 1)..=u64::from(current) {
            if !known.contains_key(&id) {
                continue; // never started, or already removed
            }
            let drain = self.drain_store(id).await?;
            scale.draining.push(id);
            scale.moving.extend(drain.moving);
        }
        self.set_scale_in(Some(replicas)).await?;
        self.scale_wake.notify_one();
        info!(from = current, to = replicas, draining = ?scale.draining, "scaling the store nodes in: draining first");
        Ok(scale)
    }
}

/// The store nodes' reports, asked for at most once per round of the store scaler (which both
/// the scale-in and the scaled-away repair may need).
pub struct Reports<'a> {
    store: &'a dyn StoreApi,
    asked: tokio::sync::OnceCell<Vec<StoreNodeReport>>,
}

impl<'a> Reports<'a> {
    pub fn new(store: &'a dyn StoreApi) -> Self {
        Reports {
            store,
            asked: tokio::sync::OnceCell::new(),
        }
    }

    /// Every store node's report, asked the first time.
    pub async fn get(&self) -> &[StoreNodeReport] {
        self.asked
            .get_or_init(|| async { self.store.node_status().await })
            .await
    }
}

/// One look at a scale-in in progress, given the StatefulSet and its `current` replicas as this
/// round read them: once no placed shard has a replica on the leaving nodes and every placed
/// shard is settled, lowers the StatefulSet and removes them. Returns the replicas it scaled
/// to, if it did.
pub async fn finish_scale_in_once(
    controller: &Controller,
    statefulset: &StoreStatefulSet,
    current: u32,
    reports: &Reports<'_>,
) -> Result<Option<u32>, String> {
    let Some(target) = controller.metadata.read().store_scale_in() else {
        return Ok(None);
    };
    if current <= target {
        controller
            .set_scale_in(None)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(None);
    }
    let leaving: BTreeSet<u64> = ((u64::from(target) + 1)..=u64::from(current)).collect();
    let expected: BTreeMap<ShardId, Vec<u64>> = controller
        .placed_shards()
        .into_iter()
        .map(|(shard, p)| (shard, p.replicas))
        .collect();
    if let Some((shard, _)) = expected
        .iter()
        .find(|(_, members)| members.iter().any(|m| leaving.contains(m)))
    {
        // A node above the target registered after the drain: ask again to drain it.
        debug!(
            shard,
            "a placed shard is still placed on a leaving store node"
        );
        return Ok(None);
    }
    if let Some(shard) = unsettled(&expected, reports.get().await) {
        debug!(shard, "scale-in waits for the shard's replicas to move");
        return Ok(None);
    }
    statefulset
        .set_replicas(target)
        .await
        .map_err(|e| e.to_string())?;
    info!(from = current, to = target, statefulset = %statefulset.describe(), "scaled the store nodes in");
    for id in leaving {
        match controller.remove_store(id).await {
            Ok(()) | Err(ControllerError::NotFound(_)) => {}
            Err(err) => warn!(store = id, error = %err, "removing a store node after scaling in"),
        }
    }
    controller
        .set_scale_in(None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(target))
}

/// One round of the store scaler: reads the StatefulSet's replicas once, then finishes a
/// scale-in under way and repairs after a plain `kubectl scale` down; `refused` holds the
/// repair refusals already logged.
async fn scaler_round(c: &Controller, store: &dyn StoreApi, refused: &mut Vec<(u64, String)>) {
    let statefulset = match c.statefulset() {
        Ok(statefulset) => statefulset,
        Err(err) => {
            c.scaled_away.lock().clear();
            if c.metadata.read().store_scale_in().is_some() {
                warn!(error = %err, "a store scale-in is under way but this controller cannot scale");
            }
            return;
        }
    };
    let current = match statefulset.replicas().await {
        Ok(current) => current,
        Err(err) => {
            warn!(error = %err, statefulset = %statefulset.describe(), "reading the store StatefulSet; trying again");
            return;
        }
    };
    let reports = Reports::new(store);
    if let Err(err) = finish_scale_in_once(c, &statefulset, current, &reports).await {
        warn!(error = %err, "scaling the store nodes in; trying again");
    }
    match repair_scaled_away_once(c, &statefulset, current, &reports).await {
        Ok(repair) => {
            if repair.refused != *refused {
                for (id, why) in &repair.refused {
                    error!(store = id, reason = %why, "cannot re-create the replicas of a scaled-away store node; trying again");
                }
                *refused = repair.refused;
            }
        }
        Err(err) => warn!(error = %err, "looking for scaled-away store nodes; trying again"),
    }
}

/// The first placed shard (of `expected`, shard → placed replicas) without a leader whose
/// voters are exactly its placed replicas: a move still under way.
pub(crate) fn unsettled(
    expected: &BTreeMap<ShardId, Vec<u64>>,
    reports: &[StoreNodeReport],
) -> Option<ShardId> {
    shard_views(expected, reports).into_iter().find_map(|view| {
        let wanted: BTreeSet<u64> = expected.get(&view.shard)?.iter().copied().collect();
        let voters: BTreeSet<u64> = view.replicas.iter().map(|r| r.node).collect();
        (view.leader.is_none() || voters != wanted).then_some(view.shard)
    })
}

/// Runs [`finish_scale_in_once`] and [`repair_scaled_away_once`] every 2 s (and when a
/// scale-in starts) while `controller` leads, until it is dropped or stopped.
pub fn spawn_store_scaler(
    controller: &Arc<Controller>,
    store: Arc<dyn StoreApi>,
) -> JoinHandle<()> {
    let controller = Arc::downgrade(controller);
    tokio::spawn(async move {
        // Refusals already reported, so a refused repair is logged once, not every round.
        let mut refused = Vec::new();
        loop {
            let Some(c) = controller.upgrade() else {
                return;
            };
            if c.is_stopped().await {
                return;
            }
            if c.group_leads() {
                scaler_round(&c, store.as_ref(), &mut refused).await;
            } else {
                c.scaled_away.lock().clear();
            }
            // Holds the controller for at most one interval.
            let _ = tokio::time::timeout(SCALER_EVERY, c.scale_wake.notified()).await;
        }
    })
}

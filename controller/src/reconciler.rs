//! The shard reconciler (ADR 0013, 0014): while this controller node leads the controller group,
//! it moves the store nodes toward the placement in the metadata. Every round it asks each store
//! which shards it holds (`NodeStatus`), and for each placed shard:
//! - a member that is up and does not hold it gets `OpenShard`: `Create` only while no member
//!   holds the shard (once one does, the controller records it as created and no member is ever
//!   told to create it empty), `Resume` for a member of the shard's group, `Join` for a node the
//!   placement added (it waits, empty, for the leader to add it as a learner);
//! - a member whose data is gone (it answers `ReplicaLost`: a lost disk, or down when the shard
//!   was created) is removed from the group first and then joins again as an empty learner, so
//!   an empty replica never votes;
//! - when the group's members (as its leader reports them) differ from the placement and every
//!   new member has opened the shard, the leader is asked to change the members (learners catch
//!   up, then one joint-consensus change);
//! - a node that still holds the shard but is neither placed there nor a member deletes it,
//!   once the leader's membership is settled (committed, not joint);
//! - a joint configuration a leader left unfinished is finished by the next change.
//!
//! Members and leaders are taken only from a leader that a majority of its voters confirm (a
//! stale leader cut off from a newer one reports an old membership); otherwise the round only
//! reopens replicas.
//!
//! Works from observed state only, like the balancer: a reconciler that dies leaves nothing half
//! done, and the next round (on this or a new leader) continues.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use vela_proto::cluster_status::{MemberRole, MemberStatus, StoreNodeReport};
use vela_proto::{ControllerApi, ControllerError, OpenMode, ShardId, StoreApi, StoreError};

use crate::Controller;
use crate::metadata::PlacedShard;

/// How often the reconciler looks when nothing wakes it.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// What one round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// `(shard, node)` told to open (and how), with the outcome.
    pub opened: Vec<(ShardId, u64, OpenMode, Result<(), String>)>,
    /// Shards recorded as created.
    pub created: Vec<ShardId>,
    /// Shards whose leader was asked to change the members to these, with the outcome.
    pub changed: Vec<(ShardId, Vec<u64>, Result<(), String>)>,
    /// `(shard, node)` told to delete its replica, with the outcome.
    pub removed: Vec<(ShardId, u64, Result<(), String>)>,
}

impl Round {
    /// Whether something moved, so the next round should come soon.
    pub fn progressed(&self) -> bool {
        self.opened.iter().any(|o| o.3.is_ok())
            || self.changed.iter().any(|c| c.2.is_ok())
            || self.removed.iter().any(|r| r.2.is_ok())
    }
}

/// What the stores report about one shard.
#[derive(Debug, Default)]
struct Observed {
    /// Nodes that report a replica of it, initialized or not.
    present: BTreeSet<u64>,
    /// Nodes whose replica knows the group (has voters).
    holders: BTreeSet<u64>,
    /// Nodes that report a replica whose Raft stopped on an error (in neither set above: it is
    /// told to open again, or deleted when it is no longer placed there nor a member).
    stopped: BTreeSet<u64>,
    /// The group's voters and learners as its leader (the highest term) reports them.
    leader: Option<Led>,
}

#[derive(Debug)]
struct Led {
    voters: BTreeSet<u64>,
    learners: BTreeSet<u64>,
    /// The leader's membership is one configuration and committed.
    settled: bool,
    /// A majority of the voters report this leader in its term: it is not a stale leader cut
    /// off from a newer one the controller cannot see.
    confirmed: bool,
}

impl Led {
    fn members(&self) -> BTreeSet<u64> {
        self.voters.union(&self.learners).copied().collect()
    }
}

fn observe(reports: &[StoreNodeReport]) -> (BTreeSet<u64>, BTreeMap<ShardId, Observed>) {
    let mut up = BTreeSet::new();
    let mut statuses: BTreeMap<ShardId, Vec<(u64, &MemberStatus)>> = BTreeMap::new();
    for r in reports {
        let Ok(members) = &r.report else { continue };
        up.insert(r.node);
        for m in members {
            statuses
                .entry(m.shard)
                .or_default()
                .push((r.node, &m.status));
        }
    }
    let shards = statuses
        .into_iter()
        .map(|(shard, members)| {
            let mut seen = Observed::default();
            for (node, status) in &members {
                if status.role == MemberRole::Stopped {
                    // Its Raft stopped on an error: told to open again (the store reopens it
                    // from its files, or reports it lost), as if it were not there.
                    seen.stopped.insert(*node);
                    continue;
                }
                seen.present.insert(*node);
                // A member with no voters is uninitialized: it has no group to join yet.
                if !status.voters.is_empty() {
                    seen.holders.insert(*node);
                }
            }
            let leader = members
                .iter()
                .filter(|(_, s)| s.role == MemberRole::Leader)
                .max_by_key(|(_, s)| s.term);
            seen.leader = leader.map(|(node, status)| {
                let voters: BTreeSet<u64> = status.voters.iter().copied().collect();
                let confirming = members
                    .iter()
                    .filter(|(n, s)| {
                        voters.contains(n) && s.term == status.term && s.leader == Some(*node)
                    })
                    .count();
                Led {
                    confirmed: confirming * 2 > voters.len(),
                    voters,
                    learners: status.learners.iter().copied().collect(),
                    settled: status.membership_settled,
                }
            });
            (shard, seen)
        })
        .collect();
    (up, shards)
}

/// One round over `placed` (the controller's placed shards), see the module comment. Lists the
/// shards not yet recorded as created that a member already holds (the caller records them).
pub async fn reconcile_once(
    store: &dyn StoreApi,
    stores: &BTreeMap<u64, String>,
    placed: &BTreeMap<ShardId, PlacedShard>,
) -> Round {
    if placed.is_empty() {
        return Round::default();
    }
    let reports = store.node_status().await;
    reconcile(store, &reports, stores, placed).await
}

/// [`reconcile_once`] on `reports`, the store nodes' reports just taken.
pub async fn reconcile(
    store: &dyn StoreApi,
    reports: &[StoreNodeReport],
    stores: &BTreeMap<u64, String>,
    placed: &BTreeMap<ShardId, PlacedShard>,
) -> Round {
    let mut round = Round::default();
    if placed.is_empty() {
        return round;
    }
    // Every node the store client knows is in the reports, answering or not; a store node
    // that registered a moment ago may not be known to it yet (issue 11).
    let known: BTreeSet<u64> = reports.iter().map(|r| r.node).collect();
    let (up, observed) = observe(reports);
    let nothing = Observed::default();
    for (&shard, p) in placed {
        let seen = observed.get(&shard).unwrap_or(&nothing);
        let addresses = |ids: &mut dyn Iterator<Item = u64>| -> Option<BTreeMap<u64, String>> {
            ids.map(|id| stores.get(&id).map(|addr| (id, addr.clone())))
                .collect()
        };
        let Some(replicas) = addresses(&mut p.replicas.iter().copied()) else {
            warn!(
                shard,
                members = ?p.replicas,
                "a member of a placed shard has no address in cluster.stores; not opening it"
            );
            continue;
        };
        if !p.created {
            if let Some(node) = p.replicas.iter().find(|n| !known.contains(n)) {
                // Created without it, it could only join later by replacement: wait for it.
                debug!(
                    shard,
                    node, "a member of a new placed shard is not known yet"
                );
                continue;
            }
            create(store, shard, p, seen, &up, &replicas, &mut round).await;
            continue;
        }
        let Some(led) = seen.leader.as_ref().filter(|l| l.confirmed) else {
            // No leader (or none a majority confirms) to say who the members are: bring back
            // the replicas that exist, change nothing.
            for &node in &p.replicas {
                if up.contains(&node) && !seen.holders.contains(&node) {
                    // The outcome is in the round; the next round tries again.
                    let _ = open(store, shard, node, &replicas, OpenMode::Resume, &mut round).await;
                }
            }
            continue;
        };
        let members = led.members();
        let mut lost = Vec::new();
        for &node in &p.replicas {
            if !up.contains(&node) || seen.holders.contains(&node) {
                continue;
            }
            let mode = if members.contains(&node) {
                OpenMode::Resume
            } else {
                OpenMode::Join
            };
            if mode == OpenMode::Join && seen.present.contains(&node) {
                continue; // Opened, waiting for the leader to add it.
            }
            let outcome = open(store, shard, node, &replicas, mode, &mut round).await;
            // A voter or a learner: either way out of the group first.
            if matches!(outcome, Err(StoreError::ReplicaLost(_))) {
                lost.push(node);
            }
        }
        let placed_set: BTreeSet<u64> = p.replicas.iter().copied().collect();
        let target: Option<BTreeSet<u64>> = if !lost.is_empty() {
            // Out first, back as an empty learner in a later round.
            let rest: BTreeSet<u64> = led
                .voters
                .iter()
                .copied()
                .filter(|v| !lost.contains(v))
                .collect();
            (!rest.is_empty()).then_some(rest)
        } else if (led.voters != placed_set || members != placed_set || !led.settled)
            && placed_set
                .iter()
                .all(|n| members.contains(n) || seen.present.contains(n))
        {
            Some(placed_set.clone())
        } else {
            None
        };
        if let Some(target) = target
            && let Some(addrs) = addresses(&mut target.iter().copied())
        {
            let outcome = store
                .change_members(shard, &addrs)
                .await
                .map_err(|e| e.to_string());
            match &outcome {
                Ok(()) => info!(shard, members = ?target, "changed a placed shard's members"),
                Err(err) => {
                    info!(shard, members = ?target, error = %err, "changing a placed shard's members")
                }
            }
            round
                .changed
                .push((shard, target.into_iter().collect(), outcome));
        }
        // Replicas that are neither placed nor members (a finished move, an aborted join),
        // once no change of members is in flight (a change that does not commit would leave
        // the removed node a member).
        if !led.settled {
            continue;
        }
        for &node in seen.present.union(&seen.stopped) {
            if placed_set.contains(&node) || members.contains(&node) || !up.contains(&node) {
                continue;
            }
            let outcome = store
                .remove_shard(node, shard)
                .await
                .map_err(|e| e.to_string());
            match &outcome {
                Ok(()) => info!(shard, node, "removed a replica that is no longer a member"),
                Err(err) => warn!(shard, node, error = %err, "removing a replica"),
            }
            round.removed.push((shard, node, outcome));
        }
    }
    round
}

/// A shard not yet recorded as created: created on every member that is up while none holds
/// it; once one does, recorded (the others open it in a later round, never creating it).
async fn create(
    store: &dyn StoreApi,
    shard: ShardId,
    p: &PlacedShard,
    seen: &Observed,
    up: &BTreeSet<u64>,
    replicas: &BTreeMap<u64, String>,
    round: &mut Round,
) {
    if !seen.holders.is_empty() {
        round.created.push(shard);
        return;
    }
    for &node in &p.replicas {
        if up.contains(&node) {
            let _ = open(store, shard, node, replicas, OpenMode::Create, round).await;
        }
    }
}

async fn open(
    store: &dyn StoreApi,
    shard: ShardId,
    node: u64,
    replicas: &BTreeMap<u64, String>,
    mode: OpenMode,
    round: &mut Round,
) -> Result<(), StoreError> {
    let outcome = store.open_shard(node, shard, replicas, mode).await;
    match &outcome {
        Ok(()) => info!(shard, node, ?mode, "opened a placed shard on its member"),
        Err(err) => warn!(shard, node, ?mode, error = %err, "opening a placed shard"),
    }
    round.opened.push((
        shard,
        node,
        mode,
        outcome.clone().map_err(|e| e.to_string()),
    ));
    outcome
}

/// Finishes deletions whose drop did not reach every shard (a shard without a leader, a store
/// node down when the topic was deleted): drops each such topic from its shards again, fenced
/// by its drop id (a shard applies each drop at most once, so repeating one is harmless, and a
/// copy delivered late cannot drop the topic created again), then records the drop finished,
/// after which the name may be created again. A drop waits while one of its shards has no
/// leader in `reports` (asking it would hold the round up for the store client's retries);
/// failures wait for the next round.
pub async fn finish_topic_drops(c: &Controller, store: &dyn StoreApi, reports: &[StoreNodeReport]) {
    let pending = c.pending_drops();
    for (name, drop) in ready_drops("topic", pending, |d| &d.shards, reports) {
        // Empty: none of its shards exists any more.
        if !drop.shards.is_empty()
            && let Err(err) = store.drop_topic(&name, drop.id, &drop.shards).await
        {
            debug!(%name, drop = drop.id, error = %err, "dropping a deleted topic's queues");
            continue;
        }
        let outcome = c.finish_topic_drop(&name, drop.id).await;
        log_finished("topic", &name, drop.id, outcome);
    }
}

/// As [`finish_topic_drops`], for deleted consumer groups: a group's state is dropped from the
/// shards where it could hold some when it was deleted, so its drop waits until each has a
/// leader.
pub async fn finish_group_drops(c: &Controller, store: &dyn StoreApi, reports: &[StoreNodeReport]) {
    let pending = c.pending_group_drops();
    for (name, drop) in ready_drops("consumer group", pending, |d| &d.shards, reports) {
        let id = drop.drop.id;
        if !drop.shards.is_empty()
            && let Err(err) = store.drop_group(&name, drop.drop, &drop.shards).await
        {
            debug!(%name, drop = id, error = %err, "dropping a deleted consumer group's state");
            continue;
        }
        let outcome = c.finish_group_drop(&name, id).await;
        log_finished("consumer group", &name, id, outcome);
    }
}

/// Those of `pending` (deleted topics' or groups' drops) each of whose shards (`shards_of`) has
/// a leader in `reports`; the others wait for a later round.
fn ready_drops<N: std::fmt::Display, D>(
    what: &str,
    pending: Vec<(N, D)>,
    shards_of: impl Fn(&D) -> &[ShardId],
    reports: &[StoreNodeReport],
) -> Vec<(N, D)> {
    let led = vela_proto::cluster_status::led_shards(reports);
    pending
        .into_iter()
        .filter(|(name, drop)| match shards_of(drop).iter().find(|s| !led.contains(s)) {
            Some(shard) => {
                debug!(%name, shard, "a deleted {what}'s drop waits for the shard to have a leader");
                false
            }
            None => true,
        })
        .collect()
}

fn log_finished(
    what: &str,
    name: &dyn std::fmt::Display,
    id: u64,
    outcome: Result<(), ControllerError>,
) {
    match outcome {
        Ok(()) => info!(%name, drop = id, "a deleted {what} is dropped from every shard"),
        Err(err) => debug!(%name, error = %err, "recording a {what}'s drop as finished"),
    }
}

/// Runs [`reconcile_once`] every [`RECONCILE_EVERY`] (and at once when a topic placed new
/// shards) while `controller` leads; records shards as created. Each round then brings the
/// shards' copies of topic retentions to the metadata's ([`crate::retention_sync`]) and
/// finishes deleted topics' and groups' drops ([`finish_topic_drops`],
/// [`finish_group_drops`]).
pub fn spawn_reconciler(controller: &Arc<Controller>, store: Arc<dyn StoreApi>) -> JoinHandle<()> {
    let controller = Arc::downgrade(controller);
    tokio::spawn(async move {
        while let Some(c) = running(&controller).await {
            // A new leader first applies everything committed (a shard recorded as created
            // must never be created again).
            if c.group_leads() && c.read_barrier().await.is_ok() {
                let placed = c.placed_shards();
                let reports = store.node_status().await;
                let round = reconcile(store.as_ref(), &reports, &c.stores(), &placed).await;
                for shard in &round.created {
                    if let Err(err) = c.mark_shard_created(*shard).await {
                        debug!(shard, error = %err, "recording a placed shard as created");
                    }
                }
                // The metadata is read after the reports (see the module).
                match c.list_topics().await {
                    Ok(topics) => {
                        crate::retention_sync::sync_retention(store.as_ref(), &reports, &topics)
                            .await;
                    }
                    Err(err) => debug!(error = %err, "listing topics to compare retentions"),
                }
                finish_topic_drops(&c, store.as_ref(), &reports).await;
                finish_group_drops(&c, store.as_ref(), &reports).await;
                // Something moved: look again soon (to record a shard as created, to continue a
                // move). Failures wait for the next round.
                if round.progressed() {
                    drop(c);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            c.placed_changed(RECONCILE_EVERY).await;
        }
    })
}

/// The controller a background loop works for, while it exists and is not stopped.
async fn running(controller: &std::sync::Weak<Controller>) -> Option<Arc<Controller>> {
    let c = controller.upgrade()?;
    (!c.is_stopped().await).then_some(c)
}

/// Where no reconciler runs (standalone, whose in-process store holds every shard): finishes
/// deleted topics' and groups' drops left pending (a delete whose caller went away between its
/// halves, a shard write that failed) every [`RECONCILE_EVERY`], as the reconciler does.
pub fn spawn_drop_finisher(
    controller: &Arc<Controller>,
    store: Arc<dyn StoreApi>,
) -> JoinHandle<()> {
    let controller = Arc::downgrade(controller);
    tokio::spawn(async move {
        while let Some(c) = running(&controller).await {
            let pending = !c.pending_drops().is_empty() || !c.pending_group_drops().is_empty();
            if pending && c.group_leads() && c.read_barrier().await.is_ok() {
                let reports = store.node_status().await;
                finish_topic_drops(&c, store.as_ref(), &reports).await;
                finish_group_drops(&c, store.as_ref(), &reports).await;
            }
            drop(c);
            tokio::time::sleep(RECONCILE_EVERY).await;
        }
    })
}

#[cfg(test)]
mod tests;

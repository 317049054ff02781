//! Changing a shard's members while it serves (ADR 0014): the leader adds new members as
//! learners, promotes them once they have caught up, and removes the members that go, in one
//! joint-consensus change; a node that is no longer a member deletes its replica when told.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use tracing::{info, warn};
use vela_proto::domain::ShardId;
use vela_proto::store_api::StoreError;

use tokio::sync::mpsc;

use super::Store;
use super::scoped::move_leadership;
use crate::shard::{Shard, ShardTypes};
use crate::{CopyRequest, ReplicaChunk};

/// How long one call waits for new members to catch up before it answers `Unavailable` (the
/// caller calls again; nothing is lost by waiting across calls).
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);
/// A learner this many entries behind the leader's log counts as caught up: promoting it costs
/// no availability, because the old members still form a majority of the joint configuration.
const CATCH_UP_SLACK: u64 = 256;
/// How long a leader that leaves the shard waits for a remaining member to take over.
const HANDOVER_WAIT: Duration = Duration::from_secs(5);

/// How long detaching a replica waits for its index file to close.
const INDEX_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Store {
    /// Makes `shard`'s members exactly `replicas` (node id → Raft address). Only the shard's
    /// leader does it (others answer `NotLeader`). New members must have opened the shard with
    /// `OpenMode::Join`; they are added as learners, and while one is still catching up the call
    /// answers `Unavailable` (call again). Then one joint-consensus change makes `replicas` the
    /// voters and removes every other member. A leader that is not in `replicas` stays a voter,
    /// hands leadership to the most caught-up new voter and answers `NotLeader` naming it: the
    /// new leader removes it when called again. Idempotent.
    pub async fn change_members(
        &self,
        shard: ShardId,
        replicas: &BTreeMap<u64, String>,
    ) -> Result<(), StoreError> {
        if !self.replicated {
            return Err(StoreError::Invalid(
                "a standalone store's shards have one member".into(),
            ));
        }
        if replicas.is_empty() {
            return Err(StoreError::Invalid(format!(
                "shard {shard} cannot have no members"
            )));
        }
        let led = self.led(shard)?;
        let me = self.config.node_id;
        let membership = led
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .clone();
        let known: BTreeSet<u64> = membership.membership().nodes().map(|(id, _)| *id).collect();
        let voters: BTreeSet<u64> = membership.membership().voter_ids().collect();
        // A joint configuration a former leader left unfinished: the change below finishes it.
        let joint = membership.membership().get_joint_config().len() > 1;
        for (&id, addr) in replicas {
            if !known.contains(&id) {
                led.raft
                    .add_learner(id, BasicNode::new(addr.clone()), false)
                    .await
                    .map_err(|e| change_error(&led, "adding a learner", e))?;
                info!(shard, node = id, "added a learner to the shard");
            }
        }
        let joining: Vec<u64> = replicas
            .keys()
            .copied()
            .filter(|id| !voters.contains(id))
            .collect();
        wait_caught_up(&led, &joining).await?;

        let target: BTreeSet<u64> = replicas.keys().copied().collect();
        let stays = target.contains(&me);
        let mut voters_after = target.clone();
        voters_after.insert(me);
        // Learners that are not to be members (an abandoned join); voters that go leave with
        // the voter change itself.
        let leaving: BTreeSet<u64> = led
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .learner_ids()
            .filter(|id| !voters_after.contains(id))
            .collect();
        if voters_after != voters || !leaving.is_empty() || joint {
            let mut changes = vec![ChangeMembers::ReplaceAllVoters(voters_after.clone())];
            if !leaving.is_empty() {
                changes.push(ChangeMembers::RemoveNodes(leaving.clone()));
            }
            led.raft
                .change_membership(ChangeMembers::Batch(changes), false)
                .await
                .map_err(|e| change_error(&led, "changing members", e))?;
            info!(shard, voters = ?voters_after, learners_removed = ?leaving, "changed the shard's members");
        }
        if stays {
            return Ok(());
        }
        // This leader goes too: the new members take over, and the new leader removes it.
        let metrics = led.raft.metrics().borrow_watched().clone();
        let successor = metrics
            .replication
            .unwrap_or_default()
            .into_iter()
            .filter(|(node, _)| target.contains(node))
            .max_by_key(|(_, matched)| matched.as_ref().map(|m| m.index))
            .map(|(node, _)| node)
            .ok_or_else(|| {
                StoreError::Unavailable(format!(
                    "shard {shard}: no new member to hand leadership to"
                ))
            })?;
        move_leadership(&led, successor, HANDOVER_WAIT).await?;
        info!(
            shard,
            to = successor,
            "a leaving leader handed the shard over"
        );
        Err(StoreError::NotLeader {
            shard,
            leader: Some(successor),
        })
    }

    /// What a replica of `request.shard` installing snapshot `request.snapshot_index` needs
    /// from this node's replica (ADR 0014), as a stream of batches; `Unavailable` when this
    /// replica no longer keeps that generation or that log. Any member may answer, leader or
    /// not.
    pub fn copy_shard(
        &self,
        request: CopyRequest,
    ) -> Result<mpsc::Receiver<Result<ReplicaChunk, StoreError>>, StoreError> {
        let local = self.shard(request.shard)?;
        crate::shard::catch_up::export(&local.shard, request)
    }

    /// Deletes this node's replica of `shard`, which is no longer one of the shard's members:
    /// stops it, forgets it (`placed::FILE`; a configured shard is recorded released,
    /// `placed::RELEASED_FILE`, so it does not come back at the next start), deletes its
    /// directory. Idempotent. Refused for a shard this node leads (it is a member). The caller (the controller) removes only nodes
    /// that the shard's leader no longer lists as members.
    pub async fn remove_shard(&self, shard: ShardId) -> Result<(), StoreError> {
        self.removable(shard)?;
        let _one_at_a_time = self.opening.lock().await;
        if self.cancel.is_cancelled() {
            return Err(StoreError::Unavailable("store is shutting down".into()));
        }
        // Checked again: leadership may have come meanwhile.
        self.removable(shard)?;
        self.detach(shard).await;
        self.delete_replica_files(shard).await
    }

    /// Stops serving `shard` here: out of the map, its background work ended, its replica
    /// closed (the files stay). Callers hold `opening`.
    pub(super) async fn detach(&self, shard: ShardId) {
        let Some(local) = self.shards().get(&shard).cloned() else {
            return;
        };
        {
            let mut shards = self.shards.write();
            let mut map = BTreeMap::clone(&shards);
            map.remove(&shard);
            *shards = std::sync::Arc::new(map);
        }
        local.appends.close();
        local.cancel.cancel();
        // Every background task of the shard has ended before its files are touched.
        local.tasks.close();
        local.tasks.wait().await;
        if let Err(err) = local.shard.close().await {
            warn!(shard, error = %err, "closing a detached shard");
        }
        // The index file closes with its last holder; one still open (a copy streaming to
        // another member) keeps the replica from opening again, so two handles never share it.
        let index = std::sync::Arc::downgrade(&local.shard.shared.index);
        drop(local);
        let closed = tokio::time::timeout(INDEX_CLOSE_WAIT, async {
            while index.strong_count() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .is_ok();
        if !closed {
            warn!(
                shard,
                "the detached replica's index is still in use; it opens again once closed"
            );
            self.closing.lock().insert(shard, index);
        }
    }

    /// Refuses to open `shard` while the index file of its detached replica is still open.
    pub(super) fn index_closed(&self, shard: ShardId) -> Result<(), StoreError> {
        let mut closing = self.closing.lock();
        if closing.get(&shard).is_some_and(|i| i.strong_count() > 0) {
            return Err(StoreError::Unavailable(format!(
                "shard {shard}: the index of its previous replica on node {} is still in use",
                self.config.node_id
            )));
        }
        closing.remove(&shard);
        Ok(())
    }

    /// Whether this node may delete its replica of `shard` (see [`Store::remove_shard`]).
    pub fn removable(&self, shard: ShardId) -> Result<(), StoreError> {
        if !self.replicated {
            return Err(StoreError::Invalid(
                "a standalone store holds its configured shards only".into(),
            ));
        }
        if let Some(local) = self.shards().get(&shard)
            && local.shard.raft.is_leader()
        {
            return Err(StoreError::Invalid(format!(
                "node {} leads shard {shard}: a member is not removed",
                self.config.node_id
            )));
        }
        Ok(())
    }

    /// Forgets `shard` (`placed::FILE`, and records a configured one released) and deletes its
    /// directory.
    async fn delete_replica_files(&self, shard: ShardId) -> Result<(), StoreError> {
        let (vfs, dir) = (self.vfs.clone(), self.config.data_dir.clone());
        let configured = self.config.shards.contains(&shard);
        let removed = tokio::task::spawn_blocking(move || {
            // Forgotten first: a crash before the files go leaves only garbage, never a shard
            // that reopens.
            if configured {
                crate::placed::release(vfs.as_ref(), &dir, shard)?;
            }
            let mut held = crate::placed::read(vfs.as_ref(), &dir).map_err(|e| e.to_string())?;
            if held.contains(&shard) {
                held.retain(|s| *s != shard);
                crate::placed::write(vfs.as_ref(), &dir, &held).map_err(|e| e.to_string())?;
            }
            let shard_dir = dir.join("shards").join(shard.to_string());
            if vfs.is_dir(&shard_dir) {
                vela_raft::vfs::remove_dir_all(vfs.as_ref(), &shard_dir)
                    .map_err(|e| format!("deleting {}: {e}", shard_dir.display()))?;
                return Ok(true);
            }
            Ok::<_, String>(false)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
        .map_err(|e| StoreError::Internal(format!("removing shard {shard}: {e}")))?;
        if removed {
            info!(shard, "removed this node's replica of the shard");
        }
        Ok(())
    }
}

/// Waits (up to [`CATCH_UP_WAIT`]) until every node of `joining` is within
/// [`CATCH_UP_SLACK`] entries of the leader's log.
async fn wait_caught_up(led: &Shard, joining: &[u64]) -> Result<(), StoreError> {
    if joining.is_empty() {
        return Ok(());
    }
    let caught_up = |m: &openraft::RaftMetrics<ShardTypes>| {
        let last = m.last_log_index.unwrap_or(0);
        let replication = m.replication.as_ref();
        joining.iter().all(|node| {
            replication
                .and_then(|r| r.get(node))
                .and_then(|matched| matched.as_ref())
                .is_some_and(|matched| matched.index + CATCH_UP_SLACK >= last)
        })
    };
    if led
        .raft
        .wait(Some(CATCH_UP_WAIT))
        .metrics(caught_up, "new members caught up")
        .await
        .is_ok()
    {
        return Ok(());
    }
    let metrics = led.raft.metrics().borrow_watched().clone();
    let progress: Vec<String> = joining
        .iter()
        .map(|node| {
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(node).cloned())
                .flatten()
                .map_or("nothing".to_owned(), |m| m.index.to_string());
            format!("node {node} has {matched}")
        })
        .collect();
    Err(StoreError::Unavailable(format!(
        "shard {}: new members are catching up ({}; the leader's log ends at {})",
        led.id,
        progress.join(", "),
        metrics.last_log_index.unwrap_or(0)
    )))
}

fn change_error(
    shard: &Shard,
    what: &str,
    err: RaftError<ShardTypes, ClientWriteError<ShardTypes>>,
) -> StoreError {
    match err {
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            StoreError::Unavailable(format!("shard {}: {what}: {e} (call again)", shard.id))
        }
        other => shard.map_write_error(what, other),
    }
}

//! Operations on one shard, for callers that address shards themselves: the store's gRPC service,
//! through which a proxy's `RemoteStore` covers every shard of a cluster exactly once (a receive
//! goes to each shard's leader in turn, a drop to every shard's leader). Each refuses with
//! `NotLeader` (and the leader this node knows) unless this node leads the shard.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::Instant as _;
use openraft::async_runtime::WatchReceiver;
use tracing::warn;
use vela_proto::cluster_status::{MemberRole, ShardMember};
use vela_proto::domain::{GroupName, GroupStart, QueueStats, ShardId, TopicName};
use vela_proto::store_api::{Delivery, PopRequest, StoreError, TransactionCheck};

use super::{Received, Store};
use crate::command::{CommandResponse, StoreCommand};
use crate::shard::{Shard, unexpected};
use crate::state::{
    DROP_FENCE_APPLY_VERSION, GROUP_DROP_FENCE_APPLY_VERSION, RETENTION_FENCE_APPLY_VERSION,
    TOPIC_RETENTION_APPLY_VERSION,
};
use vela_raft::status::member_status;

/// The first offset of a queue stored at or after `at_ms`, on one shard.
pub(super) fn offset_on(
    shard: &Shard,
    topic: &TopicName,
    queue_id: u32,
    at_ms: i64,
) -> Result<u64, StoreError> {
    shard
        .shared
        .applied
        .read()
        .state
        .offset_at(topic, queue_id, at_ms)
        .ok_or_else(|| StoreError::QueueNotFound {
            topic: topic.clone(),
            queue_id,
        })
}

/// How long a stopping node waits for each shard it leads to have a new leader.
const HANDOVER_WAIT: Duration = Duration::from_secs(2);
/// How long [`Store::transfer_leader`] waits for the target to take over.
const TRANSFER_WAIT: Duration = Duration::from_secs(3);
/// A follower that acknowledged a heartbeat this recently counts as up.
const RECENT_ACK: Duration = Duration::from_millis(500);
/// How long [`Store::read_barrier`] waits for a quorum to confirm this node still leads.
const READ_BARRIER_WAIT: Duration = Duration::from_secs(2);

impl Store {
    /// The shard, if this node holds and leads it.
    pub(super) fn led(&self, id: ShardId) -> Result<Arc<Shard>, StoreError> {
        let shard = self.shard(id)?.shard.clone();
        if shard.raft.is_leader() {
            Ok(shard)
        } else {
            Err(StoreError::NotLeader {
                shard: id,
                leader: shard.raft.metrics().borrow_watched().current_leader,
            })
        }
    }

    /// Makes a read of `shard`'s applied state linearizable (Raft read-index): confirms with a
    /// quorum that this node still leads and waits until it applied everything committed
    /// before the call. A replica cut off from its majority answers `NotLeader` or
    /// `Unavailable` instead of what its stale state says. Nothing to do on a single voter.
    pub(crate) async fn read_barrier(&self, shard: &Shard) -> Result<(), StoreError> {
        if !self.replicated {
            return Ok(());
        }
        let confirmed = tokio::time::timeout(
            READ_BARRIER_WAIT,
            shard
                .raft
                .ensure_linearizable(openraft::ReadPolicy::ReadIndex),
        )
        .await;
        match confirmed {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(openraft::error::RaftError::APIError(
                openraft::error::LinearizableReadError::ForwardToLeader(f),
            ))) => Err(StoreError::NotLeader {
                shard: shard.id,
                leader: f.leader_id,
            }),
            Ok(Err(err)) => Err(StoreError::Unavailable(format!(
                "shard {}: confirming leadership: {err}",
                shard.id
            ))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "shard {}: no quorum confirmed this node leads within {READ_BARRIER_WAIT:?}",
                shard.id
            ))),
        }
    }

    /// `NotLeader` (with the leader this node knows) if this node holds shard `id` and does
    /// not lead it; anything else is left to the request (a batched call answers it whole).
    pub fn refuse_unless_leading(&self, id: ShardId) -> Result<(), StoreError> {
        match self.shard(id) {
            Ok(local) => self.check_leader(&local.shard),
            Err(_) => Ok(()),
        }
    }

    /// `NotLeader` (with the leader this node knows) unless this node leads `shard` (always
    /// `Ok` in a store of single voters).
    pub(crate) fn check_leader(&self, shard: &Shard) -> Result<(), StoreError> {
        if !self.replicated || shard.raft.is_leader() {
            return Ok(());
        }
        Err(StoreError::NotLeader {
            shard: shard.id,
            leader: shard.raft.metrics().borrow_watched().current_leader,
        })
    }

    /// Hands every shard this node leads to its most caught-up follower and waits (up to
    /// [`HANDOVER_WAIT`]) until this node sees the new leader, so a graceful stop costs the
    /// shards no election timeout. Returns the shards handed over and to whom.
    pub async fn hand_over_leadership(&self) -> BTreeMap<ShardId, u64> {
        let me = self.config.node_id;
        let held = self.shards();
        let handovers: Vec<(ShardId, &Arc<Shard>, u64)> = held
            .iter()
            .filter_map(|(&id, local)| {
                let metrics = local.shard.raft.metrics().borrow_watched().clone();
                // Only followers that answered recently: a caught-up follower that is down
                // would leave the shard without a leader until an election.
                let heartbeats = metrics.heartbeat.unwrap_or_default();
                let alive = |node: &u64| {
                    heartbeats
                        .get(node)
                        .and_then(|at| at.as_ref())
                        .is_some_and(|at| at.elapsed() < RECENT_ACK)
                };
                let target = metrics
                    .replication?
                    .into_iter()
                    .filter(|(node, _)| *node != me && alive(node))
                    .max_by_key(|(_, matched)| matched.as_ref().map(|m| m.index))
                    .map(|(node, _)| node)?;
                Some((id, &local.shard, target))
            })
            .collect();
        let done = futures::future::join_all(handovers.into_iter().map(
            |(id, shard, target)| async move {
                match move_leadership(shard, target, HANDOVER_WAIT).await {
                    Ok(()) => Some((id, target)),
                    Err(err) => {
                        warn!(shard = id, error = %err, "handing leadership over");
                        None
                    }
                }
            },
        ))
        .await;
        done.into_iter().flatten().collect()
    }

    /// Hands leadership of `shard`, which this node must lead, to its voter `to` and waits (up
    /// to [`TRANSFER_WAIT`]) until this node sees `to` lead. The controller's leader balancing
    /// calls it.
    pub async fn transfer_leader(&self, shard: ShardId, to: u64) -> Result<(), StoreError> {
        let local = &self.shard(shard)?.shard;
        let metrics = local.raft.metrics().borrow_watched().clone();
        if metrics.current_leader == Some(to) {
            return Ok(());
        }
        let led = self.led(shard)?;
        if !metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == to)
        {
            return Err(StoreError::Invalid(format!(
                "store node {to} is not a voter of shard {shard}"
            )));
        }
        move_leadership(&led, to, TRANSFER_WAIT).await
    }

    /// What this node's replica of every shard it holds reports about itself.
    pub fn member_statuses(&self) -> Vec<ShardMember> {
        self.shards()
            .iter()
            .map(|(&shard, local)| {
                let status = member_status(&local.shard.raft.metrics().borrow_watched());
                let shared = &local.shard.shared;
                let retention = (status.role == MemberRole::Leader
                    && shared.current_apply_version() >= TOPIC_RETENTION_APPLY_VERSION)
                    .then(|| shared.applied.read().state.topic_retention().clone());
                ShardMember {
                    shard,
                    status,
                    retention,
                }
            })
            .collect()
    }

    /// A receive from shard `shard` only.
    pub async fn pop_shard(
        &self,
        shard: ShardId,
        req: PopRequest,
    ) -> Result<Vec<Delivery>, StoreError> {
        let shard = self.led(shard)?;
        self.pop_from(&[shard], req).await
    }

    /// Waits up to `req.wait` until a receive like `req` would find something on shard `shard`;
    /// receives nothing. A caller waiting on many shards at once receives only from one that
    /// answered `true`, so no message is taken for a receive that no longer wants it.
    pub async fn await_deliverable(
        &self,
        shard: ShardId,
        req: &PopRequest,
    ) -> Result<bool, StoreError> {
        let shard = self.led(shard)?;
        match self.receive_loop(&[shard], req, true).await? {
            Received::Deliverable => Ok(true),
            Received::Nothing => Ok(false),
            Received::Delivered(_) => Err(StoreError::Internal(
                "a probing receive delivered messages".into(),
            )),
        }
    }

    /// [`StoreApi::offset_at`] on shard `shard`, after a read barrier.
    pub async fn offset_at_shard(
        &self,
        shard: ShardId,
        topic: &TopicName,
        queue_id: u32,
        at_ms: i64,
    ) -> Result<u64, StoreError> {
        let shard = self.led(shard)?;
        self.read_barrier(&shard).await?;
        offset_on(&shard, topic, queue_id, at_ms)
    }

    /// Transaction check-backs due on shard `shard` for half messages of `topics`, after a read
    /// barrier (a deposed leader hands out nothing).
    pub async fn transaction_checks_shard(
        &self,
        shard: ShardId,
        topics: &[TopicName],
        max: usize,
    ) -> Result<Vec<TransactionCheck>, StoreError> {
        let shard = self.led(shard)?;
        self.read_barrier(&shard).await?;
        self.checks_on(&shard, topics, max).await
    }

    pub(super) async fn checks_on(
        &self,
        shard: &Shard,
        topics: &[TopicName],
        max: usize,
    ) -> Result<Vec<TransactionCheck>, StoreError> {
        let now_ms = shard
            .shared
            .applied
            .read()
            .state
            .time_at(self.clock.now_ms());
        shard
            .transaction_checks(topics, max, now_ms, self.check_policy)
            .await
    }

    /// Offsets and backlog of `topic`'s queues on shard `shard`, read after a read barrier (a
    /// deposed leader does not answer from its stale state).
    /// With `pending` (the group's start rule and creation time), a queue the group has not
    /// read yet reports where it would start (see [`StoreApi::group_queue_stats`]).
    pub async fn queue_stats_shard(
        &self,
        shard: ShardId,
        topic: &TopicName,
        group: Option<&GroupName>,
        pending: Option<(GroupStart, i64)>,
    ) -> Result<Vec<QueueStats>, StoreError> {
        let shard = self.led(shard)?;
        self.read_barrier(&shard).await?;
        let mut stats = {
            let applied = shard.shared.applied.read();
            let rule = pending
                .map(|(start, created_ms)| self.start_rule(&applied.state, start, created_ms));
            applied.state.queue_stats_with(topic, group, rule)
        };
        stats.sort_by_key(|s| s.queue_id);
        Ok(stats)
    }

    /// Drops `topic` from shard `shard`: deletion `drop_id` of it (0: a caller that has no
    /// id, whose drop is not fenced).
    pub async fn drop_topic_shard(
        &self,
        shard: ShardId,
        topic: &TopicName,
        drop_id: u64,
    ) -> Result<(), StoreError> {
        let led = self.led(shard)?;
        drop_on(&led, drop_command(&led, topic, drop_id)).await
    }

    /// Sets how long `topic`'s messages are kept on shard `shard` (`None`: the store's
    /// retention time), at the controller's `revision` of the topic (0: none, not fenced). A
    /// value the shard had passed (it applied a newer revision of the topic) is answered `Ok`
    /// and changes nothing.
    pub async fn set_topic_retention_shard(
        &self,
        shard: ShardId,
        topic: &TopicName,
        retention_ms: Option<u64>,
        revision: u64,
    ) -> Result<(), StoreError> {
        let led = self.led(shard)?;
        // Written only once every member applies it: a build before it could not even decode
        // the entry.
        let version = led.shared.current_apply_version();
        if version < crate::state::TOPIC_RETENTION_APPLY_VERSION {
            return Err(StoreError::Unavailable(format!(
                "shard {shard} does not apply topic retention yet (apply version {version} of \
                 {}): a store node runs an older build; upgrade it and retry",
                crate::state::TOPIC_RETENTION_APPLY_VERSION
            )));
        }
        let command = if revision > 0 && version >= RETENTION_FENCE_APPLY_VERSION {
            StoreCommand::TopicRetentionAt {
                topic: topic.clone(),
                retention_ms,
                revision,
            }
        } else {
            StoreCommand::TopicRetention {
                topic: topic.clone(),
                retention_ms,
            }
        };
        match led.write(command.clone()).await? {
            CommandResponse::RetentionSet(true) | CommandResponse::Superseded => Ok(()),
            other => Err(unexpected(command.kind(), &other)),
        }
    }

    /// Drops `group`'s state from shard `shard` (deletion `drop_id`, 0: unfenced; every group
    /// drop up to `floor` is finished).
    pub async fn drop_group_shard(
        &self,
        shard: ShardId,
        group: &GroupName,
        drop_id: u64,
        floor: u64,
    ) -> Result<(), StoreError> {
        let led = self.led(shard)?;
        drop_on(&led, group_drop_command(&led, group, drop_id, floor)).await
    }
}

/// Writes a drop (of a topic or a group) to `shard`, which this node leads.
async fn drop_on(shard: &Shard, command: StoreCommand) -> Result<(), StoreError> {
    match shard.write(command.clone()).await? {
        CommandResponse::Dropped => Ok(()),
        other => Err(unexpected(command.kind(), &other)),
    }
}

/// The entry that drops `topic` from `shard` for deletion `drop_id`: fenced by the id once every
/// member applies fenced drops (a build before them could not decode the entry), else as
/// before them (an id of 0 is never fenced).
pub(super) fn drop_command(shard: &Shard, topic: &TopicName, drop_id: u64) -> StoreCommand {
    if drop_id > 0 && shard.shared.current_apply_version() >= DROP_FENCE_APPLY_VERSION {
        StoreCommand::DropTopicOnce {
            topic: topic.clone(),
            drop_id,
        }
    } else {
        StoreCommand::DropTopic {
            topic: topic.clone(),
        }
    }
}

/// The entry that drops `group` from `shard` for deletion `drop_id`, as [`drop_command`] does
/// for a topic (from apply version 18); `floor` as `StoreCommand::DropGroupOnce` says.
pub(super) fn group_drop_command(
    shard: &Shard,
    group: &GroupName,
    drop_id: u64,
    floor: u64,
) -> StoreCommand {
    if drop_id > 0 && shard.shared.current_apply_version() >= GROUP_DROP_FENCE_APPLY_VERSION {
        StoreCommand::DropGroupOnce {
            group: group.clone(),
            drop_id,
            floor,
        }
    } else {
        StoreCommand::DropGroup {
            group: group.clone(),
        }
    }
}

/// Asks `shard`'s Raft (this node leads it) to hand leadership to `target`, then waits up to
/// `wait` until this node sees `target` lead.
pub(super) async fn move_leadership(
    shard: &Shard,
    target: u64,
    wait: Duration,
) -> Result<(), StoreError> {
    shard
        .raft
        .trigger()
        .transfer_leader(target)
        .await
        .map_err(|e| StoreError::Unavailable(format!("shard {} raft: {e}", shard.id)))?;
    shard
        .raft
        .wait(Some(wait))
        .metrics(
            |m| m.current_leader == Some(target),
            "leadership handed over",
        )
        .await
        .map(|_| ())
        .map_err(|_| {
            StoreError::Unavailable(format!(
                "store node {target} did not take over shard {} within {wait:?}",
                shard.id
            ))
        })
}

//! The configured shard set (`cluster.shards`) and the placed shards: a controller member
//! records the configured set once it leads and adopts those shards as placed ones (ADR 0032);
//! topics wait for that record; the reconciler is woken when the placement changes.

use std::collections::BTreeMap;

use vela_proto::{ControllerError, ShardId};

use crate::Controller;
use crate::command::{Applied, ControllerCommand};
use crate::controller::unexpected;

impl Controller {
    /// Records `shards` as the configured shard set if it changed, then adopts the configured
    /// shards as placed ones (ADR 0032).
    pub(crate) async fn ensure_shards(&self, shards: Vec<ShardId>) -> Result<(), ControllerError> {
        self.record_shard_set(shards).await?;
        self.adopt_configured_shards().await
    }

    /// In a cluster, makes the configured shards placed shards of the configured store nodes
    /// (once: a no-op when they are), so they move like any placed shard (ADR 0032).
    pub(crate) async fn adopt_configured_shards(&self) -> Result<(), ControllerError> {
        if self.configured_stores.is_empty() || self.metadata.read().configured_adopted() {
            return Ok(());
        }
        let stores: Vec<u64> = self.configured_stores.keys().copied().collect();
        match self
            .group
            .propose(ControllerCommand::AdoptConfiguredShards { stores })
            .await?
        {
            Ok(Applied::ShardsAdopted(adopted)) => {
                if !adopted.is_empty() {
                    tracing::info!(shards = ?adopted, "configured shards adopted as placed shards");
                    self.placed_changed.notify_one();
                }
                Ok(())
            }
            other => Err(unexpected("adopt-configured-shards", &other)),
        }
    }

    pub(crate) async fn record_shard_set(
        &self,
        shards: Vec<ShardId>,
    ) -> Result<(), ControllerError> {
        let orphaned: Vec<String> = {
            let md = self.metadata.read();
            if md.shards() == shards.as_slice() {
                return Ok(());
            }
            md.topics()
                .filter(|t| t.queue_shards.iter().any(|s| !shards.contains(s)))
                .map(|t| t.name.to_string())
                .collect()
        };
        if !orphaned.is_empty() {
            tracing::warn!(
                ?shards,
                topics = ?orphaned,
                "new shard set leaves queues of these topics on shards outside it; they stay there"
            );
        }
        match self
            .group
            .propose(ControllerCommand::SetShards { shards })
            .await?
        {
            Ok(Applied::Shards(applied)) => {
                tracing::info!(shards = ?applied, "controller shard set recorded");
                Ok(())
            }
            other => Err(unexpected("set-shards", &other)),
        }
    }

    /// Waits (up to [`SHARD_SET_WAIT`]) until the group has recorded the configured shard
    /// set: a member records it once it leads (`record_shards_when_leading`), and a topic
    /// created before would get its queues from an empty set, or placed shards whose ids the
    /// configured shards then reuse (the shard set is then refused for good, and a drain takes
    /// the configured shards for placed ones).
    pub(crate) async fn shard_set_recorded(&self) -> Result<(), ControllerError> {
        let deadline = tokio::time::Instant::now() + SHARD_SET_WAIT;
        while self.metadata.read().shards().is_empty() {
            if tokio::time::Instant::now() >= deadline {
                return Err(ControllerError::Unavailable(
                    "the controller has not recorded its shard set yet; try again".into(),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Moves one placed replica (the replica balancer, issue 11); the reconciler carries the
    /// move out as it does a drain's.
    pub async fn move_replica(
        &self,
        m: crate::placement::ReplicaMove,
    ) -> Result<(), ControllerError> {
        let command = ControllerCommand::MoveReplica {
            shard: m.shard,
            from: m.from,
            to: m.to,
        };
        match self.group.propose(command).await? {
            Ok(Applied::ReplicaMoved) => {
                self.placed_changed.notify_one();
                Ok(())
            }
            other => Err(unexpected("move-replica", &other)),
        }
    }

    /// The shards placed on chosen store nodes, as applied here.
    pub fn placed_shards(&self) -> BTreeMap<ShardId, crate::metadata::PlacedShard> {
        self.metadata.read().placed().clone()
    }

    /// Deleted topics whose queues are still to be dropped (`Metadata::pending_drops`), as
    /// this member applied them.
    pub fn pending_drops(&self) -> Vec<(vela_proto::TopicName, vela_proto::TopicDrop)> {
        self.metadata.read().pending_drops()
    }

    /// Deleted groups whose state is still to be dropped (`Metadata::pending_group_drops`), as
    /// this member applied them.
    pub fn pending_group_drops(&self) -> Vec<(vela_proto::GroupName, vela_proto::GroupDrop)> {
        self.metadata.read().pending_group_drops()
    }

    /// Records that a member of placed `shard` holds it (the reconciler calls this).
    pub async fn mark_shard_created(&self, shard: ShardId) -> Result<(), ControllerError> {
        match self
            .group
            .propose(ControllerCommand::MarkShardCreated { shard })
            .await?
        {
            Ok(Applied::ShardCreated) => Ok(()),
            other => Err(unexpected("mark-shard-created", &other)),
        }
    }

    /// Waits until a topic placed new shards (or `timeout` passes).
    pub async fn placed_changed(&self, timeout: std::time::Duration) {
        tokio::time::timeout(timeout, self.placed_changed.notified())
            .await
            .ok();
    }
}

/// How long a topic creation waits for the group to record the configured shard set.
const SHARD_SET_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Records the shard set once this member leads the group (retrying while leadership moves);
/// ends when the controller is dropped or stopped.
pub(crate) async fn record_shards_when_leading(
    controller: std::sync::Weak<Controller>,
    shards: Vec<ShardId>,
) {
    const WAIT: std::time::Duration = std::time::Duration::from_secs(1);
    loop {
        let Some(c) = controller.upgrade() else {
            return;
        };
        if *c.stopped.lock().await {
            return;
        }
        if c.group.wait_leading(WAIT).await {
            match c.ensure_shards(shards.clone()).await {
                Ok(()) => return,
                Err(err) => tracing::debug!(error = %err, "recording the shard set; retrying"),
            }
        }
        drop(c);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

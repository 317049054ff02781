//! Setting where a consumer group stands on a queue (apply version 8): a new group's start,
//! which the leader decides before the group's first receive there and logs, and resets
//! (UpdateOffset, `vela admin group reset`).

use std::sync::Arc;

use vela_proto::domain::{GroupName, OffsetTarget, ShardId, TopicName};
use vela_proto::store_api::{PopRequest, StoreError};

use super::{Store, duration_ms};
use crate::command::{CommandResponse, QueueChoice, QueueOffset, StoreCommand};
use crate::shard::{Shard, unexpected};
use crate::state::{BROADCAST_APPLY_VERSION, StartRule};

/// The apply version from which a group's position can be set (`SetOffsets`).
const OFFSETS_APPLY_VERSION: u32 = 8;

impl Store {
    /// Before a receive of `req` on `shard`: the queues where the group has no position yet
    /// get their start (see [`StartRule`]), in one entry. Nothing is written when every queue
    /// has one, when the request does not say when the group was created, or while a replica
    /// runs a build that does not know `SetOffsets` (the group then starts at the queue's
    /// first message, as before).
    pub(super) async fn start_group(
        &self,
        shard: &Shard,
        req: &PopRequest,
        queues: QueueChoice,
    ) -> Result<(), StoreError> {
        if req.group.is_broadcast_instance() {
            let version = shard.shared.current_apply_version();
            if version < BROADCAST_APPLY_VERSION {
                return Err(StoreError::Unavailable(format!(
                    "broadcast groups need every replica of shard {} on a build with apply \
                     version {BROADCAST_APPLY_VERSION} (it runs {version})",
                    shard.id
                )));
            }
            crate::shard::broadcast::note_receive(shard, &req.group, self.clock.now_ms());
        }
        let Some(group_created_ms) = req.group_created_ms else {
            return Ok(());
        };
        let starts = {
            let applied = shard.shared.applied.read();
            if applied.state.apply_version() < OFFSETS_APPLY_VERSION {
                return Ok(());
            }
            let rule = self.start_rule(&applied.state, req.group_start, group_created_ms);
            applied
                .state
                .missing_starts(&req.group, &req.topic, queues, rule)
        };
        if starts.is_empty() {
            return Ok(());
        }
        let command = StoreCommand::SetOffsets {
            group: req.group.clone(),
            topic: req.topic.clone(),
            offsets: starts,
            replace: false,
        };
        match shard.write(command).await? {
            CommandResponse::OffsetsSet(_) => Ok(()),
            other => Err(unexpected("set_offsets", &other)),
        }
    }

    /// How a group that has no position on a queue of `state` starts there.
    pub(super) fn start_rule(
        &self,
        state: &crate::state::ShardState,
        start: vela_proto::domain::GroupStart,
        group_created_ms: i64,
    ) -> StartRule {
        StartRule {
            start,
            group_created_ms,
            young_ms: i64::try_from(duration_ms(self.config.new_group_start_window))
                .unwrap_or(i64::MAX),
            now_ms: state.time_at(self.clock.now_ms()),
        }
    }

    /// Resets `group` on one queue of `shard` (this node must lead it).
    pub(super) async fn reset_on(
        &self,
        shard: &Arc<Shard>,
        group: &GroupName,
        topic: &TopicName,
        queue_id: u32,
        to: OffsetTarget,
    ) -> Result<u64, StoreError> {
        let not_found = || StoreError::QueueNotFound {
            topic: topic.clone(),
            queue_id,
        };
        let offset = {
            let applied = shard.shared.applied.read();
            if applied.state.apply_version() < OFFSETS_APPLY_VERSION {
                return Err(StoreError::Unavailable(format!(
                    "resetting a group needs every replica of shard {} on a build with apply \
                     version {OFFSETS_APPLY_VERSION} (it runs {})",
                    shard.id,
                    applied.state.apply_version()
                )));
            }
            applied
                .state
                .resolve_offset(topic, queue_id, to)
                .ok_or_else(not_found)?
        };
        let command = StoreCommand::SetOffsets {
            group: group.clone(),
            topic: topic.clone(),
            offsets: vec![QueueOffset { queue_id, offset }],
            replace: true,
        };
        match shard.write(command).await? {
            CommandResponse::OffsetsSet(set) => {
                set.first().copied().flatten().ok_or_else(not_found)
            }
            other => Err(unexpected("set_offsets", &other)),
        }
    }

    /// [`StoreApi::reset_offset`] on a shard this node leads (the store RPC).
    pub async fn reset_offset_shard(
        &self,
        shard: ShardId,
        group: &GroupName,
        topic: &TopicName,
        queue_id: u32,
        to: OffsetTarget,
    ) -> Result<u64, StoreError> {
        let shard = self.led(shard)?;
        self.reset_on(&shard, group, topic, queue_id, to).await
    }
}

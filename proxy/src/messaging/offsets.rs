//! GetOffset and QueryOffset: where a group stands on a queue and where a queue begins, ends or
//! reaches a time. With them a lag-based autoscaler reads a group's backlog per queue (end
//! minus the group's offset). Apache's proxy answers these UNIMPLEMENTED.
//!
//! A group's offset is its POP position: every message below it is acknowledged (or filtered
//! out); messages in flight are above it. UpdateOffset moves it: the group goes on from the
//! offset given (within the queue's retained range), forgetting what it had in flight there.
//! PullMessage (`pull`) reads a queue from an offset a client keeps.

use vela_proto::pb::rocketmq::{self as pb, Code, QueryOffsetPolicy};
use vela_proto::{OffsetTarget, QueueStats, ShardId, StoreError, TopicName};

use crate::Shared;
use crate::auth::Creator;
use crate::convert;
use crate::headers::RequestMeta;
use crate::status::{RpcError, ok_status};

/// The topic and queue a request names, and the shard holding that queue.
pub(super) async fn queue_of(
    shared: &Shared,
    meta: &RequestMeta,
    queue: Option<&pb::MessageQueue>,
) -> Result<(TopicName, u32, ShardId), RpcError> {
    let queue = queue.ok_or_else(|| RpcError::bad_request("message queue is required"))?;
    let topic = convert::topic_name(queue.topic.as_ref(), &meta.namespace)?;
    let config = shared.metadata.topic(&topic).await?;
    let queue_id = u32::try_from(queue.id)
        .ok()
        .filter(|&q| q < config.queue_count)
        .ok_or_else(|| {
            RpcError::bad_request(format!(
                "queue {} does not exist: topic {topic} has queues 0..{}",
                queue.id, config.queue_count
            ))
        })?;
    let shard = config.shard_of(queue_id).ok_or_else(|| {
        RpcError::new(
            Code::InternalServerError,
            format!("topic {topic} has no shard for queue {queue_id}"),
        )
    })?;
    Ok((topic, queue_id, shard))
}

fn to_wire(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

/// The queue's statistics, if the store has ever held a message of it.
async fn stats_of(
    shared: &Shared,
    topic: &TopicName,
    queue_id: u32,
    shard: ShardId,
    group: Option<&vela_proto::GroupName>,
) -> Result<Option<QueueStats>, RpcError> {
    let stats = shared.ctx.store.queue_stats(topic, group, &[shard]).await?;
    Ok(stats.into_iter().find(|s| s.queue_id == queue_id))
}

pub(super) async fn get_offset(
    shared: &Shared,
    meta: &RequestMeta,
    req: &pb::GetOffsetRequest,
) -> Result<pb::GetOffsetResponse, RpcError> {
    // Looked up as named, never created: a poller with a wrong name must not add groups.
    let mut group = convert::group_name(req.group.as_ref(), &meta.namespace)?;
    let (topic, queue_id, shard) = queue_of(shared, meta, req.message_queue.as_ref()).await?;
    // A broadcast group stands where the caller's own instance stands.
    if let (Some(config), Some(client)) = (
        shared.metadata.existing_group(&group).await,
        meta.client_id.as_deref(),
    ) {
        group = convert::positions_of(&config, client)?;
    }
    let position = stats_of(shared, &topic, queue_id, shard, Some(&group))
        .await?
        .and_then(|q| q.groups.into_iter().find(|g| g.group == group));
    match position {
        Some(g) => Ok(pb::GetOffsetResponse {
            status: Some(ok_status()),
            offset: to_wire(g.consumer_offset),
        }),
        None => Err(RpcError::new(
            Code::OffsetNotFound,
            format!("group {group} has not consumed queue {queue_id} of {topic}"),
        )),
    }
}

pub(super) async fn query_offset(
    shared: &Shared,
    meta: &RequestMeta,
    req: &pb::QueryOffsetRequest,
) -> Result<pb::QueryOffsetResponse, RpcError> {
    let (topic, queue_id, shard) = queue_of(shared, meta, req.message_queue.as_ref()).await?;
    let offset = match QueryOffsetPolicy::try_from(req.query_offset_policy) {
        Ok(QueryOffsetPolicy::Beginning) => stats_of(shared, &topic, queue_id, shard, None)
            .await?
            .map_or(0, |q| q.min_offset),
        Ok(QueryOffsetPolicy::End) => stats_of(shared, &topic, queue_id, shard, None)
            .await?
            .map_or(0, |q| q.max_offset),
        Ok(QueryOffsetPolicy::Timestamp) => {
            let at = req.timestamp.as_ref().ok_or_else(|| {
                RpcError::bad_request("query offset by timestamp needs a timestamp")
            })?;
            let at_ms = convert::timestamp_to_ms(at);
            match shared
                .ctx
                .store
                .offset_at(&topic, queue_id, shard, at_ms)
                .await
            {
                Ok(offset) => offset,
                // Never held a message: it begins (and ends) at 0.
                Err(StoreError::QueueNotFound { .. }) => 0,
                Err(e) => return Err(e.into()),
            }
        }
        Err(_) => {
            return Err(RpcError::bad_request(format!(
                "unknown query offset policy {}",
                req.query_offset_policy
            )));
        }
    };
    Ok(pb::QueryOffsetResponse {
        status: Some(ok_status()),
        offset: to_wire(offset),
    })
}

pub(super) async fn update_offset(
    shared: &Shared,
    meta: &RequestMeta,
    req: &pb::UpdateOffsetRequest,
) -> Result<pb::UpdateOffsetResponse, RpcError> {
    let group = convert::group_name(req.group.as_ref(), &meta.namespace)?;
    let (topic, queue_id, shard) = queue_of(shared, meta, req.message_queue.as_ref()).await?;
    let offset = u64::try_from(req.offset)
        .map_err(|_| RpcError::bad_request(format!("offset {} is negative", req.offset)))?;
    // The group as a receive would find it (created on first use where that is allowed); a
    // broadcast group's offset is the caller's instance's.
    let config = shared
        .metadata
        .group(&group, Creator::new(&shared.guard, meta))
        .await?;
    let group = if config.broadcast {
        convert::positions_of(&config, meta.require_client_id()?)?
    } else {
        group
    };
    match shared
        .ctx
        .store
        .reset_offset(
            &group,
            &topic,
            queue_id,
            shard,
            OffsetTarget::Offset(offset),
        )
        .await
    {
        Ok(_) => Ok(pb::UpdateOffsetResponse {
            status: Some(ok_status()),
        }),
        Err(StoreError::QueueNotFound { .. }) => Err(RpcError::new(
            Code::OffsetNotFound,
            format!("queue {queue_id} of {topic} has never held a message"),
        )),
        Err(e) => Err(e.into()),
    }
}

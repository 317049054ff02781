//! The admin RPCs for consumer groups: create, update, delete, list, describe (with a
//! broadcast group's instances, ADR 0029) and reset.

use super::*;

pub(super) async fn create(
    server: &AdminServer,
    request: Request<api::CreateGroupRequest>,
) -> Result<Response<api::CreateGroupResponse>, Status> {
    server.allow(&request).await?;
    let req = request.into_inner();
    let name = group_name(&req.name)?;
    let spec = GroupSpec {
        name: name.clone(),
        fifo: req.fifo,
        max_attempts: if req.max_attempts == 0 {
            DEFAULT_MAX_ATTEMPTS
        } else {
            req.max_attempts
        },
        auto_created: false,
        start: group_start_from_wire(req.start, req.start_at_ms)
            .map_err(|e| Status::invalid_argument(e.to_string()))?,
        retry: vela_proto::retry::from_wire(req.retry_backoff.as_ref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?,
        broadcast: req.broadcast,
    };
    let group = server
        .shared
        .ctx
        .controller
        .create_group(spec)
        .await
        .map_err(controller_to_grpc)?;
    server.shared.metadata.forget_group(&name);
    tracing::info!(group = %name, fifo = group.fifo, broadcast = group.broadcast, max_attempts = group.max_attempts, "consumer group created");
    Ok(Response::new(api::CreateGroupResponse {
        group: Some(group_to_api(group)),
    }))
}

pub(super) async fn update(
    server: &AdminServer,
    request: Request<api::UpdateGroupRequest>,
) -> Result<Response<api::UpdateGroupResponse>, Status> {
    server.allow(&request).await?;
    let req = request.into_inner();
    let (name, update) = vela_proto::controller_wire::group_update_from_parts(
        &req.name,
        req.max_attempts,
        req.retry_backoff.as_ref(),
        req.retry_standard,
    )
    .map_err(|e| Status::invalid_argument(e.0))?;
    let group = server
        .shared
        .ctx
        .controller
        .update_group(&name, update)
        .await
        .map_err(controller_to_grpc)?;
    // Consumers connecting from now on get the new policy in their Settings.
    server.shared.metadata.forget_group(&name);
    Ok(Response::new(api::UpdateGroupResponse {
        group: Some(group_to_api(group)),
    }))
}

pub(super) async fn delete(
    server: &AdminServer,
    request: Request<api::DeleteGroupRequest>,
) -> Result<Response<api::DeleteGroupResponse>, Status> {
    server.allow(&request).await?;
    let name = group_name(&request.into_inner().name)?;
    let controller = &server.shared.ctx.controller;
    let drop = controller
        .delete_group(&name)
        .await
        .map_err(controller_to_grpc)?;
    server.shared.metadata.forget_group(&name);
    if drop.finished {
        // A retried call found it deleted and dropped meanwhile.
        tracing::info!(group = %name, "consumer group deleted");
        return Ok(Response::new(api::DeleteGroupResponse {}));
    }
    let what = format!("consumer group {name}");
    let fenced = drop.drop.id != 0;
    let shards: Vec<ShardId> = if fenced {
        drop.shards
    } else {
        // A controller without drop records (a build before them): every shard a topic has
        // queues on, as the group may hold state on any.
        controller
            .list_topics()
            .await
            .map_err(controller_to_grpc)?
            .into_iter()
            .flat_map(|t| t.queue_shards)
            .collect()
    };
    // A recorded drop without shards: none of them exists any more.
    if !(fenced && shards.is_empty()) {
        server
            .shared
            .ctx
            .store
            .drop_group(&name, drop.drop, &shards)
            .await
            .map_err(|e| half_deleted(&what, "its state was", fenced, e))?;
    }
    if fenced && let Err(err) = controller.finish_group_drop(&name, drop.drop.id).await {
        return Err(half_deleted_controller(&what, "its state", err));
    }
    // A consumer's creation refused while the drop was pending is not remembered past it.
    server.shared.metadata.forget_group(&name);
    tracing::info!(group = %name, drop = drop.drop.id, "consumer group deleted");
    Ok(Response::new(api::DeleteGroupResponse {}))
}

pub(super) async fn list(
    server: &AdminServer,
    request: Request<api::ListGroupsRequest>,
) -> Result<Response<api::ListGroupsResponse>, Status> {
    server.allow(&request).await?;
    let mut groups = server
        .shared
        .ctx
        .controller
        .list_groups()
        .await
        .map_err(controller_to_grpc)?;
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Response::new(api::ListGroupsResponse {
        groups: groups.into_iter().map(group_to_api).collect(),
    }))
}

/// The group and its position on every queue of every topic it has consumed from.
pub(super) async fn describe(
    server: &AdminServer,
    request: Request<api::DescribeGroupRequest>,
) -> Result<Response<api::DescribeGroupResponse>, Status> {
    server.allow(&request).await?;
    let name = group_name(&request.into_inner().name)?;
    let group = server.existing_group(&name).await?;
    let topics = server
        .shared
        .ctx
        .controller
        .list_topics()
        .await
        .map_err(controller_to_grpc)?;
    // A broadcast group's positions are its instances' (ADR 0029), each row naming one.
    let asked = (!group.broadcast).then_some(&name);
    let mut positions = Vec::new();
    for topic in topics {
        let stats = server
            .shared
            .ctx
            .store
            .queue_stats(&topic.name, asked, &server.shared.shards_of(&topic).await)
            .await
            .map_err(store_to_grpc)?;
        positions.extend(
            stats
                .into_iter()
                .flat_map(|q| q.groups)
                .filter(|g| name.owns(&g.group)),
        );
    }
    // A broadcast group's rows instance by instance.
    positions
        .sort_by(|a, b| (&a.group, &a.topic, a.queue_id).cmp(&(&b.group, &b.topic, b.queue_id)));
    Ok(Response::new(api::DescribeGroupResponse {
        group: Some(group_to_api(group)),
        queues: positions.into_iter().map(group_stats_to_api).collect(),
    }))
}

pub(super) async fn reset(
    server: &AdminServer,
    request: Request<api::ResetGroupRequest>,
) -> Result<Response<api::ResetGroupResponse>, Status> {
    server.allow(&request).await?;
    use api::reset_group_request::To;
    let req = request.into_inner();
    let group = group_name(&req.group)?;
    let topic = topic_name(&req.topic)?;
    let to = match req.to {
        Some(To::Earliest(true)) => OffsetTarget::Earliest,
        Some(To::Latest(true)) => OffsetTarget::Latest,
        Some(To::AtMs(at_ms)) => OffsetTarget::AtTime(at_ms),
        Some(To::Offset(offset)) => OffsetTarget::Offset(offset),
        _ => {
            return Err(Status::invalid_argument(
                "say where to: earliest, latest, a time or an offset",
            ));
        }
    };
    let group_config = server.existing_group(&group).await?;
    let config = server.existing_topic(&topic).await?;
    // A broadcast group is reset by resetting each of its instances (ADR 0029).
    let holders = if group_config.broadcast {
        let stats = server
            .shared
            .ctx
            .store
            .queue_stats(&topic, None, &server.shared.shards_of(&config).await)
            .await
            .map_err(store_to_grpc)?;
        let mut instances: Vec<GroupName> = stats
            .into_iter()
            .flat_map(|q| q.groups)
            .map(|g| g.group)
            .filter(|g| g != &group && group.owns(g))
            .collect();
        instances.sort();
        instances.dedup();
        if instances.is_empty() {
            return Err(Status::failed_precondition(format!(
                "broadcast group {group} has no instance reading topic {topic} yet"
            )));
        }
        instances
    } else {
        vec![group.clone()]
    };
    let queue_ids: Vec<u32> = match req.queue_id {
        Some(q) if q < config.queue_count => vec![q],
        Some(q) => {
            return Err(Status::invalid_argument(format!(
                "queue {q} does not exist: topic {topic} has queues 0..{}",
                config.queue_count
            )));
        }
        None => (0..config.queue_count).collect(),
    };
    let mut queues = Vec::with_capacity(queue_ids.len());
    for queue_id in queue_ids {
        let shard = config.shard_of(queue_id).ok_or_else(|| {
            Status::internal(format!("topic {topic} has no shard for queue {queue_id}"))
        })?;
        let mut offset = None;
        for holder in &holders {
            offset = match server
                .shared
                .ctx
                .store
                .reset_offset(holder, &topic, queue_id, shard, to)
                .await
            {
                Ok(offset) => Some(offset),
                Err(StoreError::QueueNotFound { .. }) => None,
                Err(e) => return Err(store_to_grpc(e)),
            };
        }
        queues.push(api::QueueOffset { queue_id, offset });
    }
    tracing::info!(%group, %topic, ?to, "group reset");
    Ok(Response::new(api::ResetGroupResponse { queues }))
}

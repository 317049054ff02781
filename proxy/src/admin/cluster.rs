//! The admin RPCs about the cluster's nodes: `cluster status`, `cluster info`, `tier status`
//! and the store nodes (drain, undrain, list, scale, remove; ADR 0014, 0031, 0032).

use super::*;

/// Asks every controller and store node now (each within a bounded time), so the answer
/// shows nodes that are down rather than failing.
pub(super) async fn cluster_status(
    server: &AdminServer,
    request: Request<api::ClusterStatusRequest>,
) -> Result<Response<api::ClusterStatusResponse>, Status> {
    server.allow(&request).await?;
    let ctx = &server.shared.ctx;
    let (controllers, stores, proxies, placement, deletions) = tokio::join!(
        ctx.controller.node_status(),
        ctx.store.node_status(),
        ctx.controller.proxies(),
        ctx.controller.store_nodes(),
        ctx.controller.pending_deletions()
    );
    let mut status = cluster_status_to_api(
        &ctx.config.cluster_mode,
        controllers,
        stores,
        &ctx.store.shard_replicas(),
    );
    // A standalone node, or a controller that cannot answer: no placement state.
    if let Ok(nodes) = placement {
        for node in &mut status.stores {
            if let Some(n) = nodes.iter().find(|n| n.id == node.id) {
                node.placement = match (n.scaled_away, n.draining) {
                    (true, _) => "scaled-away",
                    (false, true) => "draining",
                    (false, false) => "serving",
                }
                .to_owned();
                node.staying = n.staying.clone();
            }
        }
    }
    match deletions {
        Ok(deletions) => {
            let led: std::collections::BTreeSet<u32> = status
                .shards
                .iter()
                .filter(|s| s.leader.is_some())
                .map(|s| s.shard)
                .collect();
            status.deletions = deletions
                .into_iter()
                .map(|d| api::PendingDeletion {
                    kind: d.kind.as_str().to_owned(),
                    waiting_for: d
                        .shards
                        .iter()
                        .copied()
                        .filter(|s| !led.contains(s))
                        .collect(),
                    name: d.name,
                    drop_id: d.id,
                    shards: d.shards,
                })
                .collect();
        }
        Err(err) => status.deletions_error = err.to_string(),
    }
    match proxies {
        Ok(proxies) => {
            status.proxies = proxies
                .into_iter()
                .map(|p| api::ProxyStatus {
                    addr: p.addr,
                    version: p.version,
                    last_seen_ms: p.last_seen_ms,
                    admin_addr: p.admin_addr.unwrap_or_default(),
                })
                .collect();
        }
        Err(err) => status.proxies_error = err.to_string(),
    }
    Ok(Response::new(status))
}

pub(super) async fn drain_store(
    server: &AdminServer,
    request: Request<api::DrainStoreRequest>,
) -> Result<Response<api::DrainStoreResponse>, Status> {
    server.allow(&request).await?;
    let drain = server
        .shared
        .ctx
        .controller
        .drain_store(request.into_inner().store)
        .await
        .map_err(controller_to_grpc)?;
    Ok(Response::new(api::DrainStoreResponse {
        store: drain.store,
        moving: drain.moving,
        configured: drain.configured,
    }))
}

pub(super) async fn list_stores(
    server: &AdminServer,
    request: Request<api::ListStoresRequest>,
) -> Result<Response<api::ListStoresResponse>, Status> {
    server.allow(&request).await?;
    let stores = server
        .shared
        .ctx
        .controller
        .store_nodes()
        .await
        .map_err(controller_to_grpc)?;
    Ok(Response::new(api::ListStoresResponse {
        stores: stores
            .into_iter()
            .map(|s| api::StoreNode {
                id: s.id,
                addr: s.addr,
                configured: s.configured,
                registered_ms: s.registered_ms,
                draining: s.draining,
                scaled_away: s.scaled_away,
                staying: s.staying,
            })
            .collect(),
    }))
}

pub(super) async fn scale_stores(
    server: &AdminServer,
    request: Request<api::ScaleStoresRequest>,
) -> Result<Response<api::ScaleStoresResponse>, Status> {
    server.allow(&request).await?;
    let scale = server
        .shared
        .ctx
        .controller
        .scale_stores(request.into_inner().replicas)
        .await
        .map_err(controller_to_grpc)?;
    Ok(Response::new(api::ScaleStoresResponse {
        from: scale.from,
        to: scale.to,
        draining: scale.draining,
        moving: scale.moving,
        done: scale.done,
    }))
}

pub(super) async fn remove_store(
    server: &AdminServer,
    request: Request<api::RemoveStoreRequest>,
) -> Result<Response<api::RemoveStoreResponse>, Status> {
    server.allow(&request).await?;
    server
        .shared
        .ctx
        .controller
        .remove_store(request.into_inner().store)
        .await
        .map_err(controller_to_grpc)?;
    Ok(Response::new(api::RemoveStoreResponse {}))
}

pub(super) async fn undrain_store(
    server: &AdminServer,
    request: Request<api::UndrainStoreRequest>,
) -> Result<Response<api::UndrainStoreResponse>, Status> {
    server.allow(&request).await?;
    server
        .shared
        .ctx
        .controller
        .undrain_store(request.into_inner().store)
        .await
        .map_err(controller_to_grpc)?;
    Ok(Response::new(api::UndrainStoreResponse {}))
}

pub(super) async fn tier_status(
    server: &AdminServer,
    request: Request<api::TierStatusRequest>,
) -> Result<Response<api::TierStatusResponse>, Status> {
    server.allow(&request).await?;
    let topic = request.into_inner().topic;
    let ctx = &server.shared.ctx;
    let only: Option<BTreeSet<ShardId>> = if topic.trim().is_empty() {
        None
    } else {
        let name = topic_name(&topic)?;
        let config = ctx
            .controller
            .get_topic(&name)
            .await
            .map_err(controller_to_grpc)?
            .ok_or_else(|| Status::not_found(format!("topic {name} does not exist")))?;
        Some(config.queue_shards.into_iter().collect())
    };
    let mut response = api::TierStatusResponse::default();
    for report in ctx.store.tier_status().await {
        match report.report {
            Ok(shards) => response.shards.extend(
                shards
                    .into_iter()
                    .filter(|t| only.as_ref().is_none_or(|o| o.contains(&t.shard)))
                    .map(|t| tier_to_api(report.node, t)),
            ),
            Err(error) => response.unreachable.push(api::UnreachableStore {
                node: report.node,
                addr: report.addr,
                error,
            }),
        }
    }
    response.shards.sort_by_key(|s| (s.shard, s.node));
    Ok(Response::new(response))
}

/// Shards are counted from the placement of existing topics.
pub(super) async fn cluster_info(
    server: &AdminServer,
    request: Request<api::ClusterInfoRequest>,
) -> Result<Response<api::ClusterInfoResponse>, Status> {
    server.allow(&request).await?;
    let topics = server
        .shared
        .ctx
        .controller
        .list_topics()
        .await
        .map_err(controller_to_grpc)?;
    let shards: BTreeSet<u32> = topics
        .iter()
        .flat_map(|t| t.queue_shards.iter().copied())
        .collect();
    let config = &server.shared.ctx.config;
    Ok(Response::new(api::ClusterInfoResponse {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        mode: config.cluster_mode.clone(),
        shard_count: u32::try_from(shards.len()).unwrap_or(u32::MAX),
        auto_create_topics: config.auto_create_topics,
        auto_create_groups: config.auto_create_groups,
    }))
}

fn tier_to_api(node: u64, t: vela_proto::cluster_status::ShardTier) -> api::ShardTierStatus {
    api::ShardTierStatus {
        shard: t.shard,
        node,
        leader: t.leader,
        tiering: t.tiering,
        tiered_segments: t.tiered_segments,
        tiered_first: t.tiered_first,
        tiered_last: t.tiered_last,
        tiered_bytes: t.tiered_bytes,
        local_first: t.local_first,
        local_last: t.local_last,
        local_bytes: t.local_bytes,
        pending_segments: t.pending_segments,
        pending_bytes: t.pending_bytes,
        retained_from: t.retained_from,
        uploaded_segments: t.uploaded_segments,
        uploaded_bytes: t.uploaded_bytes,
        evicted_bytes: t.evicted_bytes,
        last_upload_ms: t.last_upload_ms,
        last_error: t.last_error.unwrap_or_default(),
    }
}

/// The cluster status response from the nodes' reports.
fn cluster_status_to_api(
    mode: &str,
    controllers: Vec<ControllerNodeReport>,
    stores: Vec<StoreNodeReport>,
    expected: &std::collections::BTreeMap<u32, Vec<u64>>,
) -> api::ClusterStatusResponse {
    let views = shard_views(expected, &stores);
    let leads = leader_counts(&stores, &views);
    let unreachable = |node: u64, addr: String, error: String| api::NodeStatus {
        id: node,
        addr,
        reachable: false,
        error,
        ..Default::default()
    };
    api::ClusterStatusResponse {
        mode: mode.to_owned(),
        proxies: Vec::new(),
        proxies_error: String::new(),
        deletions: Vec::new(),
        deletions_error: String::new(),
        controllers: controllers
            .into_iter()
            .map(|r| match r.report {
                Ok(status) => api::NodeStatus {
                    id: r.node,
                    addr: r.addr,
                    reachable: true,
                    role: status.role.as_str().to_owned(),
                    term: status.term,
                    ..Default::default()
                },
                Err(error) => unreachable(r.node, r.addr, error),
            })
            .collect(),
        stores: stores
            .into_iter()
            .map(|r| match r.report {
                Ok(_) => api::NodeStatus {
                    id: r.node,
                    addr: r.addr,
                    reachable: true,
                    leads: leads.get(&r.node).copied().unwrap_or(0),
                    ..Default::default()
                },
                Err(error) => unreachable(r.node, r.addr, error),
            })
            .collect(),
        shards: views
            .into_iter()
            .map(|v| api::ShardStatus {
                shard: v.shard,
                leader: v.leader,
                term: v.term,
                health: v.health.as_str().to_owned(),
                last_log_index: v.last_log_index,
                replicas: v
                    .replicas
                    .into_iter()
                    .map(|r| api::ReplicaStatus {
                        node: r.node,
                        role: r
                            .role
                            .map_or("unreachable", |role| role.as_str())
                            .to_owned(),
                        lag: r.lag,
                    })
                    .collect(),
            })
            .collect(),
    }
}

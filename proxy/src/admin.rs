//! `vela.admin.v1.AdminService`: topics, groups, queue statistics and cluster facts for
//! `vela admin`. Our own API, so failures are gRPC statuses with one readable message.

use std::collections::BTreeSet;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use vela_proto::pb::admin::{self as api, admin_service_server::AdminService};
use vela_proto::store_wire::{group_start_from_wire, group_start_to_wire};
use vela_proto::tier_credentials::{ManagedTierCredentials, TierCredentials};
use vela_proto::{
    DEFAULT_MAX_ATTEMPTS, GroupConfig, GroupName, GroupQueueStats, GroupSpec, OffsetTarget,
    QueueStats, ShardId, StoreError, TopicConfig, TopicName, TopicSpec, TopicType,
};

use vela_proto::cluster_status::{
    ControllerNodeReport, StoreNodeReport, leader_counts, led_shards, shard_views,
};

use crate::Shared;

mod clients;
mod cluster;
mod groups;
mod lookup;
mod routes;
mod users;
use crate::auth::needs::AdminNeeds;
use crate::headers::RequestMeta;

/// How long creating a topic on new shards waits for them to elect leaders.
const SHARD_START_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
use crate::status::{controller_to_grpc, name_to_grpc, store_to_grpc};

pub(crate) struct AdminServer {
    shared: Arc<Shared>,
}

impl AdminServer {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Records `topic`'s retention in the metadata, then on the shards holding its queues (the
    /// stores keep the shards' logs as long as their longest-kept topic needs and expire a
    /// shorter-kept one's old messages). A failure after the metadata changed says so: the
    /// same update again finishes it, and in a cluster the controller's reconciler does too.
    async fn set_retention(
        &self,
        topic: TopicConfig,
        retention_ms: Option<u64>,
    ) -> Result<TopicConfig, Status> {
        let name = topic.name.clone();
        let updated = self
            .shared
            .ctx
            .controller
            .set_topic_retention(&name, retention_ms)
            .await
            .map_err(controller_to_grpc)?;
        let shards = self.shared.shards_of(&updated).await;
        self.shared
            .ctx
            .store
            .set_topic_retention(&name, retention_ms, updated.retention_revision, &shards)
            .await
            .map_err(|err| {
                let status = store_to_grpc(err);
                Status::new(
                    status.code(),
                    format!(
                        "the retention of topic {name} is recorded, but not yet on every shard \
                         holding it (run the same update again; in a cluster the controller \
                         also finishes it by itself): {}",
                        status.message()
                    ),
                )
            })?;
        Ok(updated)
    }

    /// Waits (up to `within`) until a store node reports leading each of `shards`; logs the
    /// ones still without a leader.
    async fn await_leaders(&self, shards: &[ShardId], within: std::time::Duration) {
        let wanted: BTreeSet<ShardId> = shards.iter().copied().collect();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let reports = self.shared.ctx.store.node_status().await;
            let led = led_shards(&reports);
            let missing: Vec<ShardId> = wanted.difference(&led).copied().collect();
            if missing.is_empty() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(shards = ?missing, "shards of a new topic have no leader yet");
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Authenticates and authorizes an admin request (ADR 0019) and audit-logs the changes
    /// it asks for: who, from where, what (the log line's time is when).
    async fn allow<T: AdminNeeds>(&self, request: &Request<T>) -> Result<(), Status> {
        let meta = RequestMeta::from_request(request);
        let req = request.get_ref();
        let guard = &self.shared.guard;
        let checked = if req.super_only() {
            guard.check_super(&meta).await
        } else {
            guard.check(&meta, &req.needs()).await
        };
        let user = checked.inspect_err(|denied| {
            if let Some(change) = req.changes() {
                tracing::warn!(target: "vela::audit", peer = ?meta.peer, change, refused = ?denied, "admin change refused");
            }
        })?;
        if let Some(change) = req.changes() {
            let user = user.as_ref().map_or("-", |u| u.as_str());
            tracing::info!(target: "vela::audit", user, peer = ?meta.peer, change, "admin change");
        }
        Ok(())
    }

    async fn existing_topic(&self, name: &TopicName) -> Result<TopicConfig, Status> {
        // `%DLQ%<group>` exists once its group does, as for clients.
        if let Some(found) =
            crate::metadata::dead_letter_topic(self.shared.ctx.controller.as_ref(), name).await
        {
            return match found {
                Ok(Some(config)) => Ok(config),
                Ok(None) => Err(Status::not_found(format!(
                    "topic {name} not found (no consumer group of that name)"
                ))),
                Err(e) => Err(controller_to_grpc(e)),
            };
        }
        self.shared
            .ctx
            .controller
            .get_topic(name)
            .await
            .map_err(controller_to_grpc)?
            .ok_or_else(|| Status::not_found(format!("topic {name} not found")))
    }

    async fn existing_group(&self, name: &GroupName) -> Result<GroupConfig, Status> {
        self.shared
            .ctx
            .controller
            .get_group(name)
            .await
            .map_err(controller_to_grpc)?
            .ok_or_else(|| Status::not_found(format!("consumer group {name} not found")))
    }
}

fn topic_name(name: &str) -> Result<TopicName, Status> {
    TopicName::new(name.trim()).map_err(name_to_grpc)
}

fn group_name(name: &str) -> Result<GroupName, Status> {
    GroupName::new(name.trim()).map_err(name_to_grpc)
}

/// Unspecified means `normal`, RocketMQ's default.
fn topic_type_from_api(raw: i32) -> Result<TopicType, Status> {
    match api::TopicType::try_from(raw) {
        Ok(api::TopicType::Unspecified | api::TopicType::Normal) => Ok(TopicType::Normal),
        Ok(api::TopicType::Fifo) => Ok(TopicType::Fifo),
        Ok(api::TopicType::Delay) => Ok(TopicType::Delay),
        Ok(api::TopicType::Transaction) => Ok(TopicType::Transaction),
        Ok(api::TopicType::Mixed) => Ok(TopicType::Mixed),
        Ok(api::TopicType::Priority) => Ok(TopicType::Priority),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown topic type {raw}"
        ))),
    }
}

fn topic_type_to_api(t: TopicType) -> api::TopicType {
    match t {
        TopicType::Normal => api::TopicType::Normal,
        TopicType::Fifo => api::TopicType::Fifo,
        TopicType::Delay => api::TopicType::Delay,
        TopicType::Transaction => api::TopicType::Transaction,
        TopicType::Mixed => api::TopicType::Mixed,
        TopicType::Priority => api::TopicType::Priority,
    }
}

fn topic_to_api(t: TopicConfig) -> api::Topic {
    api::Topic {
        name: t.name.to_string(),
        topic_type: topic_type_to_api(t.topic_type) as i32,
        queue_count: t.queue_count,
        created_at_ms: t.created_at_ms,
        queue_shards: t.queue_shards,
        auto_created: t.auto_created,
        retention_ms: t.retention_ms,
    }
}

fn group_to_api(g: GroupConfig) -> api::ConsumerGroup {
    let (start, start_at_ms) = group_start_to_wire(g.start);
    api::ConsumerGroup {
        name: g.name.to_string(),
        fifo: g.fifo,
        max_attempts: g.max_attempts,
        created_at_ms: g.created_at_ms,
        auto_created: g.auto_created,
        start,
        start_at_ms,
        retry_backoff: vela_proto::retry::to_wire(&g.retry),
        broadcast: g.broadcast,
    }
}

fn group_stats_to_api(g: GroupQueueStats) -> api::GroupQueueStats {
    api::GroupQueueStats {
        group: g.group.to_string(),
        topic: g.topic.to_string(),
        queue_id: g.queue_id,
        consumer_offset: g.consumer_offset,
        inflight: g.inflight,
        backlog: g.backlog,
    }
}

fn queue_stats_to_api(q: QueueStats) -> api::QueueStats {
    api::QueueStats {
        topic: q.topic.to_string(),
        queue_id: q.queue_id,
        min_offset: q.min_offset,
        max_offset: q.max_offset,
        groups: q.groups.into_iter().map(group_stats_to_api).collect(),
    }
}

#[tonic::async_trait]
impl AdminService for AdminServer {
    async fn create_user(
        &self,
        request: Request<vela_proto::pb::auth::User>,
    ) -> Result<Response<vela_proto::pb::auth::User>, Status> {
        self.allow(&request).await?;
        let done = users::create_user(&self.shared, request.into_inner()).await;
        self.shared.guard.invalidate();
        done.map(Response::new)
    }

    async fn update_user(
        &self,
        request: Request<vela_proto::pb::auth::UserUpdate>,
    ) -> Result<Response<vela_proto::pb::auth::User>, Status> {
        self.allow(&request).await?;
        let done = users::update_user(&self.shared, request.into_inner()).await;
        self.shared.guard.invalidate();
        done.map(Response::new)
    }

    async fn delete_user(
        &self,
        request: Request<api::DeleteUserRequest>,
    ) -> Result<Response<api::DeleteUserResponse>, Status> {
        self.allow(&request).await?;
        let done = users::delete_user(&self.shared, &request.into_inner().name).await;
        self.shared.guard.invalidate();
        done?;
        Ok(Response::new(api::DeleteUserResponse {}))
    }

    async fn list_users(
        &self,
        request: Request<api::ListUsersRequest>,
    ) -> Result<Response<vela_proto::pb::auth::Users>, Status> {
        self.allow(&request).await?;
        users::list_users(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn put_acl(
        &self,
        request: Request<vela_proto::pb::auth::PutAcl>,
    ) -> Result<Response<vela_proto::pb::auth::Acl>, Status> {
        self.allow(&request).await?;
        let done = users::put_acl(&self.shared, request.into_inner()).await;
        self.shared.guard.invalidate();
        done.map(Response::new)
    }

    async fn delete_acl(
        &self,
        request: Request<vela_proto::pb::auth::DeleteAcl>,
    ) -> Result<Response<api::DeleteAclResponse>, Status> {
        self.allow(&request).await?;
        let done = users::delete_acl(&self.shared, request.into_inner()).await;
        self.shared.guard.invalidate();
        done?;
        Ok(Response::new(api::DeleteAclResponse {}))
    }

    async fn list_acls(
        &self,
        request: Request<api::ListAclsRequest>,
    ) -> Result<Response<vela_proto::pb::auth::Acls>, Status> {
        self.allow(&request).await?;
        users::list_acls(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_topic(
        &self,
        request: Request<api::CreateTopicRequest>,
    ) -> Result<Response<api::CreateTopicResponse>, Status> {
        self.allow(&request).await?;
        let req = request.into_inner();
        let name = topic_name(&req.name)?;
        let retention_ms = req
            .retention_ms
            .map(vela_proto::domain::check_topic_retention)
            .transpose()
            .map_err(Status::invalid_argument)?;
        let queue_count = if req.queue_count == 0 {
            self.shared.ctx.config.default_queue_count
        } else {
            req.queue_count
        };
        let spec = TopicSpec {
            name: name.clone(),
            topic_type: topic_type_from_api(req.topic_type)?,
            queue_count,
            auto_created: false,
        };
        let controller = &self.shared.ctx.controller;
        let topic = match req.replicas {
            Some(replicas) => controller.create_topic_replicated(spec, replicas).await,
            None => controller.create_topic(spec).await,
        }
        .map_err(controller_to_grpc)?;
        if req.replicas.is_some() {
            // Shards placed for the topic open on their store nodes within a reconcile round;
            // answer once each has a leader, so the first sends find it.
            self.await_leaders(&topic.queue_shards, SHARD_START_WAIT)
                .await;
        }
        let topic = match retention_ms {
            Some(ms) => self.set_retention(topic, Some(ms)).await.map_err(|e| {
                Status::new(
                    e.code(),
                    format!("topic {name} created, but {}", e.message()),
                )
            })?,
            None => topic,
        };
        self.shared.metadata.forget_topic(&name);
        tracing::info!(topic = %name, queues = topic.queue_count, topic_type = %topic.topic_type, retention_ms = ?topic.retention_ms, "topic created");
        Ok(Response::new(api::CreateTopicResponse {
            topic: Some(topic_to_api(topic)),
        }))
    }

    async fn update_topic(
        &self,
        request: Request<api::UpdateTopicRequest>,
    ) -> Result<Response<api::UpdateTopicResponse>, Status> {
        use api::update_topic_request::Retention;
        self.allow(&request).await?;
        let req = request.into_inner();
        let name = topic_name(&req.name)?;
        let retention_ms = match req.retention {
            Some(Retention::RetentionMs(ms)) => Some(
                vela_proto::domain::check_topic_retention(ms).map_err(Status::invalid_argument)?,
            ),
            Some(Retention::StoreDefaultRetention(true)) => None,
            Some(Retention::StoreDefaultRetention(false)) | None => {
                return Err(Status::invalid_argument(
                    "nothing to update: give a retention, or the store default",
                ));
            }
        };
        let topic = self.existing_topic(&name).await?;
        let topic = self.set_retention(topic, retention_ms).await?;
        self.shared.metadata.forget_topic(&name);
        tracing::info!(topic = %name, retention_ms = ?topic.retention_ms, "topic updated");
        Ok(Response::new(api::UpdateTopicResponse {
            topic: Some(topic_to_api(topic)),
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<api::DeleteTopicRequest>,
    ) -> Result<Response<api::DeleteTopicResponse>, Status> {
        self.allow(&request).await?;
        let name = topic_name(&request.into_inner().name)?;
        // Where its queues are, before the metadata forgets, for a controller without drop
        // records (a build before them); a topic deleted before whose drop is not finished has
        // none: the controller's record says where they are.
        let shards = match self.shared.ctx.controller.get_topic(&name).await {
            Ok(Some(topic)) => Some(self.shared.shards_of(&topic).await),
            Ok(None) => None,
            Err(err) => return Err(controller_to_grpc(err)),
        };
        let drop = self
            .shared
            .ctx
            .controller
            .delete_topic(&name)
            .await
            .map_err(controller_to_grpc)?;
        self.shared.metadata.forget_topic(&name);
        if drop.finished {
            // A retried call found it deleted and dropped meanwhile.
            tracing::info!(topic = %name, "topic deleted");
            return Ok(Response::new(api::DeleteTopicResponse {}));
        }
        let fenced = drop.id != 0;
        let shards = if fenced {
            drop.shards
        } else {
            let mut shards = shards.unwrap_or_default();
            shards.sort_unstable();
            shards.dedup();
            shards
        };
        // A recorded drop without shards: none of them exists any more.
        if !(fenced && shards.is_empty()) {
            self.shared
                .ctx
                .store
                .drop_topic(&name, drop.id, &shards)
                .await
                .map_err(|e| {
                    half_deleted(&format!("topic {name}"), "its queues were", fenced, e)
                })?;
        }
        if fenced
            && let Err(err) = self
                .shared
                .ctx
                .controller
                .finish_topic_drop(&name, drop.id)
                .await
        {
            return Err(half_deleted_controller(
                &format!("topic {name}"),
                "its queues",
                err,
            ));
        }
        // A declaration refused while the drop was pending is not remembered past it.
        self.shared.metadata.forget_topic(&name);
        tracing::info!(topic = %name, drop = drop.id, "topic deleted");
        Ok(Response::new(api::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        request: Request<api::ListTopicsRequest>,
    ) -> Result<Response<api::ListTopicsResponse>, Status> {
        self.allow(&request).await?;
        let mut topics = self
            .shared
            .ctx
            .controller
            .list_topics()
            .await
            .map_err(controller_to_grpc)?;
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(api::ListTopicsResponse {
            topics: topics.into_iter().map(topic_to_api).collect(),
        }))
    }

    async fn describe_topic(
        &self,
        request: Request<api::DescribeTopicRequest>,
    ) -> Result<Response<api::DescribeTopicResponse>, Status> {
        self.allow(&request).await?;
        let name = topic_name(&request.into_inner().name)?;
        let topic = self.existing_topic(&name).await?;
        let mut queues = self
            .shared
            .ctx
            .store
            .queue_stats(&name, None, &self.shared.shards_of(&topic).await)
            .await
            .map_err(store_to_grpc)?;
        queues.sort_by_key(|q| q.queue_id);
        Ok(Response::new(api::DescribeTopicResponse {
            topic: Some(topic_to_api(topic)),
            queues: queues.into_iter().map(queue_stats_to_api).collect(),
        }))
    }

    async fn create_group(
        &self,
        request: Request<api::CreateGroupRequest>,
    ) -> Result<Response<api::CreateGroupResponse>, Status> {
        groups::create(self, request).await
    }

    async fn update_group(
        &self,
        request: Request<api::UpdateGroupRequest>,
    ) -> Result<Response<api::UpdateGroupResponse>, Status> {
        groups::update(self, request).await
    }

    async fn delete_group(
        &self,
        request: Request<api::DeleteGroupRequest>,
    ) -> Result<Response<api::DeleteGroupResponse>, Status> {
        groups::delete(self, request).await
    }

    async fn list_groups(
        &self,
        request: Request<api::ListGroupsRequest>,
    ) -> Result<Response<api::ListGroupsResponse>, Status> {
        groups::list(self, request).await
    }

    /// The group and its position on every queue of every topic it has consumed from.
    async fn describe_group(
        &self,
        request: Request<api::DescribeGroupRequest>,
    ) -> Result<Response<api::DescribeGroupResponse>, Status> {
        groups::describe(self, request).await
    }

    async fn queue_stats(
        &self,
        request: Request<api::QueueStatsRequest>,
    ) -> Result<Response<api::QueueStatsResponse>, Status> {
        self.allow(&request).await?;
        let req = request.into_inner();
        let topic = topic_name(&req.topic)?;
        let group = match req.group.trim() {
            "" => None,
            name => Some(group_name(name)?),
        };
        let shards = self
            .shared
            .shards_of(&self.existing_topic(&topic).await?)
            .await;
        // A named group is reported on every queue, where it would start on those it has
        // not read yet: the backlog KEDA's scaler reports too.
        let store = &self.shared.ctx.store;
        let mut queues = match &group {
            Some(name) => {
                let group = self.existing_group(name).await?;
                store.group_queue_stats(&topic, &group, &shards).await
            }
            None => store.queue_stats(&topic, None, &shards).await,
        }
        .map_err(store_to_grpc)?;
        queues.sort_by_key(|q| q.queue_id);
        Ok(Response::new(api::QueueStatsResponse {
            queues: queues.into_iter().map(queue_stats_to_api).collect(),
        }))
    }

    async fn reset_group(
        &self,
        request: Request<api::ResetGroupRequest>,
    ) -> Result<Response<api::ResetGroupResponse>, Status> {
        groups::reset(self, request).await
    }

    async fn cluster_status(
        &self,
        request: Request<api::ClusterStatusRequest>,
    ) -> Result<Response<api::ClusterStatusResponse>, Status> {
        cluster::cluster_status(self, request).await
    }

    async fn drain_store(
        &self,
        request: Request<api::DrainStoreRequest>,
    ) -> Result<Response<api::DrainStoreResponse>, Status> {
        cluster::drain_store(self, request).await
    }

    async fn list_stores(
        &self,
        request: Request<api::ListStoresRequest>,
    ) -> Result<Response<api::ListStoresResponse>, Status> {
        cluster::list_stores(self, request).await
    }

    async fn scale_stores(
        &self,
        request: Request<api::ScaleStoresRequest>,
    ) -> Result<Response<api::ScaleStoresResponse>, Status> {
        cluster::scale_stores(self, request).await
    }

    async fn remove_store(
        &self,
        request: Request<api::RemoveStoreRequest>,
    ) -> Result<Response<api::RemoveStoreResponse>, Status> {
        cluster::remove_store(self, request).await
    }

    async fn undrain_store(
        &self,
        request: Request<api::UndrainStoreRequest>,
    ) -> Result<Response<api::UndrainStoreResponse>, Status> {
        cluster::undrain_store(self, request).await
    }

    async fn lookup_messages(
        &self,
        request: Request<api::LookupMessagesRequest>,
    ) -> Result<Response<api::LookupMessagesResponse>, Status> {
        self.allow(&request).await?;
        self.lookup(request.into_inner()).await.map(Response::new)
    }

    async fn list_clients(
        &self,
        request: Request<api::ListClientsRequest>,
    ) -> Result<Response<api::ListClientsResponse>, Status> {
        self.allow(&request).await?;
        Ok(Response::new(self.list_clients(request.get_ref()).await))
    }

    async fn verify_message(
        &self,
        request: Request<api::VerifyMessageRequest>,
    ) -> Result<Response<api::VerifyMessageResponse>, Status> {
        self.allow(&request).await?;
        self.verify_message(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn client_stack(
        &self,
        request: Request<api::ClientStackRequest>,
    ) -> Result<Response<api::ClientStackResponse>, Status> {
        self.allow(&request).await?;
        self.client_stack(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_route(
        &self,
        request: Request<vela_proto::pb::route::RouteSpec>,
    ) -> Result<Response<api::RouteInfo>, Status> {
        self.allow(&request).await?;
        routes::create_route(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete_route(
        &self,
        request: Request<api::DeleteRouteRequest>,
    ) -> Result<Response<api::DeleteRouteResponse>, Status> {
        self.allow(&request).await?;
        routes::delete_route(&self.shared, &request.into_inner().name).await?;
        Ok(Response::new(api::DeleteRouteResponse {}))
    }

    async fn set_route_paused(
        &self,
        request: Request<vela_proto::pb::route::SetRoutePaused>,
    ) -> Result<Response<api::RouteInfo>, Status> {
        self.allow(&request).await?;
        routes::set_paused(&self.shared, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_receipt_keys(
        &self,
        request: Request<api::ListReceiptKeysRequest>,
    ) -> Result<Response<api::ReceiptKeysResponse>, Status> {
        self.allow(&request).await?;
        let keys = self.shared.ctx.controller.receipt_keys().await;
        Ok(Response::new(receipt_keys_info(keys)?))
    }

    async fn rotate_receipt_key(
        &self,
        request: Request<api::RotateReceiptKeyRequest>,
    ) -> Result<Response<api::ReceiptKeysResponse>, Status> {
        self.allow(&request).await?;
        let keys = self.shared.ctx.controller.rotate_receipt_key().await;
        // This proxy signs with the new key at once; the others learn of it when they meet
        // a handle it signed, or within a minute.
        if let Err(err) = self
            .shared
            .receipts
            .fetch(self.shared.ctx.controller.as_ref(), false)
            .await
        {
            tracing::warn!(error = %err, "cannot load the rotated receipt keys");
        }
        Ok(Response::new(receipt_keys_info(keys)?))
    }

    async fn retire_receipt_key(
        &self,
        request: Request<api::RetireReceiptKeyRequest>,
    ) -> Result<Response<api::ReceiptKeysResponse>, Status> {
        self.allow(&request).await?;
        let req = request.into_inner();
        let controller = &self.shared.ctx.controller;
        controller
            .retire_receipt_key(req.id, req.force)
            .await
            .map_err(controller_to_grpc)?;
        Ok(Response::new(receipt_keys_info(
            controller.receipt_keys().await,
        )?))
    }

    async fn set_tier_credentials(
        &self,
        request: Request<api::SetTierCredentialsRequest>,
    ) -> Result<Response<api::TierCredentialsInfo>, Status> {
        self.allow(&request).await?;
        let req = request.into_inner();
        let credentials = TierCredentials::new(req.access_key_id, req.secret_access_key)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let now = self
            .shared
            .ctx
            .controller
            .set_tier_credentials(Some(credentials))
            .await;
        Ok(Response::new(tier_credentials_info(now)?))
    }

    async fn clear_tier_credentials(
        &self,
        request: Request<api::ClearTierCredentialsRequest>,
    ) -> Result<Response<api::TierCredentialsInfo>, Status> {
        self.allow(&request).await?;
        let now = self.shared.ctx.controller.set_tier_credentials(None).await;
        Ok(Response::new(tier_credentials_info(now)?))
    }

    async fn describe_tier_credentials(
        &self,
        request: Request<api::DescribeTierCredentialsRequest>,
    ) -> Result<Response<api::TierCredentialsInfo>, Status> {
        self.allow(&request).await?;
        let now = self.shared.ctx.controller.tier_credentials().await;
        Ok(Response::new(tier_credentials_info(now)?))
    }

    async fn list_routes(
        &self,
        request: Request<api::ListRoutesRequest>,
    ) -> Result<Response<api::ListRoutesResponse>, Status> {
        self.allow(&request).await?;
        let routes = routes::list(&self.shared).await?;
        Ok(Response::new(api::ListRoutesResponse { routes }))
    }

    async fn describe_route(
        &self,
        request: Request<api::DescribeRouteRequest>,
    ) -> Result<Response<api::RouteInfo>, Status> {
        self.allow(&request).await?;
        routes::describe(&self.shared, &request.into_inner().name)
            .await
            .map(Response::new)
    }

    async fn tier_status(
        &self,
        request: Request<api::TierStatusRequest>,
    ) -> Result<Response<api::TierStatusResponse>, Status> {
        cluster::tier_status(self, request).await
    }

    async fn cluster_info(
        &self,
        request: Request<api::ClusterInfoRequest>,
    ) -> Result<Response<api::ClusterInfoResponse>, Status> {
        cluster::cluster_info(self, request).await
    }
}

/// `what` (a topic or a consumer group) dropped from every shard whose drop the controller
/// did not record as finished: the name stays reserved until it does.
fn half_deleted_controller(what: &str, data: &str, err: vela_proto::ControllerError) -> Status {
    let status = controller_to_grpc(err);
    Status::new(
        status.code(),
        format!(
            "{what} deleted and {data} dropped, but the controller did not record it ({}): run \
             the delete again before creating the name again",
            status.message()
        ),
    )
}

/// `what` (a topic or a consumer group) deleted from the metadata whose data a shard did not
/// drop: with a controller that records drops (`fenced`), the name stays reserved until it is.
/// Keeps the store's code.
fn half_deleted(what: &str, data_were: &str, fenced: bool, err: vela_proto::StoreError) -> Status {
    let status = store_to_grpc(err);
    let then = if fenced {
        "run the delete again to finish it (the controller also retries on its own); \
         the name cannot be created again until then"
    } else {
        "the controller's build records no drops, so nothing retries this one"
    };
    Status::new(
        status.code(),
        format!(
            "{what} deleted, but {data_were} not dropped from every shard ({}): {then}",
            status.message()
        ),
    )
}

/// The tier credentials as admin tools see them: the key id, never the secret.
fn tier_credentials_info(
    now: Result<Option<ManagedTierCredentials>, vela_proto::ControllerError>,
) -> Result<api::TierCredentialsInfo, Status> {
    Ok(match now.map_err(controller_to_grpc)? {
        Some(c) => api::TierCredentialsInfo {
            access_key_id: Some(c.credentials.access_key_id().to_owned()),
            updated_ms: c.updated_ms,
        },
        None => api::TierCredentialsInfo::default(),
    })
}

/// The managed receipt keys as admin tools see them: never a secret.
fn receipt_keys_info(
    keys: Result<vela_proto::receipt_keys::ManagedKeys, vela_proto::ControllerError>,
) -> Result<api::ReceiptKeysResponse, Status> {
    let keys = keys.map_err(controller_to_grpc)?;
    Ok(api::ReceiptKeysResponse {
        keys: keys
            .keys
            .iter()
            .map(|(id, key)| api::ReceiptKeyInfo {
                id: *id,
                created_ms: key.created_ms,
                signing: *id == keys.signing,
            })
            .collect(),
    })
}

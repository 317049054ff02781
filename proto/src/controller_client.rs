//! [`RemoteController`]: `ControllerApi` over gRPC for a cluster's proxies. Every call goes to
//! the controller group's leader: the one that last answered, else the one a `NotLeader` reply
//! named, else the controller nodes in turn; elections and unreachable nodes are retried within
//! a bounded time.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::auth::{
    Acl, AuthData, PolicyEntry, ResourcePattern, Subject, User, UserInfo, UserName, UserUpdate,
};
use crate::auth_wire::*;
use crate::cluster_status::{ControllerNodeReport, ask_each, member_from_wire};
use crate::controller_api::{
    ControllerApi, ControllerError, DeletionKind, GroupDrop, PendingDeletion, ProxyBeat, ProxySeen,
    StoreDrain, StoreNodeEntry, StoreScale, TopicDrop,
};
use crate::controller_wire::*;
use crate::domain::{
    GroupConfig, GroupName, GroupSpec, RouteName, TopicConfig, TopicName, TopicSpec,
};
use crate::pb::controller as pb;
use crate::pb::controller::controller_client::ControllerClient;
use crate::receipt_keys::{ManagedKeys, keys_from_wire};
use crate::route::{RouteConfig, RouteSpec, RouteStatus};
use crate::route_wire::{Secrets, route_from_wire, spec_to_wire, statuses_from_wire};
use crate::store_api::GroupDropId;
use crate::store_client::lazy_channel;
use crate::tier_credentials::{self, ManagedTierCredentials, TierCredentials};

/// How long a call keeps retrying through elections and unreachable nodes.
const RETRY_FOR: Duration = Duration::from_secs(10);
/// How long one attempt may take before the next controller node is tried.
const ATTEMPT: Duration = Duration::from_secs(3);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// `ControllerApi` over gRPC, routed to the controller group's leader.
pub struct RemoteController {
    nodes: Vec<u64>,
    addrs: BTreeMap<u64, String>,
    clients: BTreeMap<u64, ControllerClient<Channel>>,
    leader: Mutex<Option<u64>>,
}

impl std::fmt::Debug for RemoteController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteController")
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

impl RemoteController {
    /// A client of the controller nodes `controllers` (id → `host:port`); connections are made
    /// on first use.
    pub fn new(controllers: &BTreeMap<u64, String>) -> Result<Self, String> {
        if controllers.is_empty() {
            return Err("no controller nodes to reach".into());
        }
        let mut clients = BTreeMap::new();
        for (&node, addr) in controllers {
            let channel = lazy_channel(addr)
                .map_err(|e| format!("controller node {node} address {addr:?}: {e}"))?;
            clients.insert(node, ControllerClient::new(channel));
        }
        Ok(RemoteController {
            nodes: controllers.keys().copied().collect(),
            addrs: controllers.clone(),
            clients,
            leader: Mutex::new(None),
        })
    }

    /// Runs `call` on the leader. `ambiguous` is set when an attempt failed in a way that may
    /// still have applied it (no answer in time, the leader lost while proposing), so a retry's
    /// "already exists" or "not found" may be this call's own earlier success.
    async fn on_leader<T, F, Fut>(
        &self,
        ambiguous: &mut bool,
        call: F,
    ) -> Result<T, ControllerError>
    where
        F: Fn(ControllerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + RETRY_FOR;
        let mut backoff = FIRST_BACKOFF;
        let mut next = 0usize;
        let mut hops = 0usize;
        loop {
            let node = (*self.leader.lock()).unwrap_or(self.nodes[next % self.nodes.len()]);
            let client = self.clients[&node].clone();
            let err = match tokio::time::timeout(ATTEMPT, call(client)).await {
                Ok(Ok(reply)) => {
                    *self.leader.lock() = Some(node);
                    return Ok(reply.into_inner());
                }
                Ok(Err(status)) => status_to_error(&status),
                Err(_) => ControllerError::Unavailable(format!(
                    "controller node {node} did not answer within {ATTEMPT:?}"
                )),
            };
            if matches!(err, ControllerError::Unavailable(_)) {
                *ambiguous = true;
            }
            match &err {
                ControllerError::NotLeader {
                    leader: Some(leader),
                } if *leader != node
                    && self.clients.contains_key(leader)
                    && hops < 2 * self.nodes.len()
                    && Instant::now() < deadline =>
                {
                    hops += 1;
                    *self.leader.lock() = Some(*leader);
                    continue;
                }
                ControllerError::NotLeader { .. } | ControllerError::Unavailable(_) => {
                    *self.leader.lock() = None;
                    next += 1;
                    hops = 0;
                }
                _ => return Err(err),
            }
            if Instant::now() + backoff > deadline {
                return Err(err);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

fn name(n: &str) -> pb::Name {
    pb::Name { name: n.to_owned() }
}

impl RemoteController {
    /// Whether the controller records topic drops (`FinishTopicDrop` is known: a build before
    /// it answers UNIMPLEMENTED). Asked with id 0, which no drop has, so it changes nothing.
    async fn records_drops(&self, topic: &TopicName) -> Result<bool, ControllerError> {
        let wire = pb::TopicDropDone {
            name: topic.as_str().to_owned(),
            drop_id: 0,
        };
        self.on_leader(&mut false, |mut c| {
            let wire = wire.clone();
            async move {
                match c.finish_topic_drop(wire).await {
                    Ok(_) => Ok(tonic::Response::new(true)),
                    Err(s) if s.code() == tonic::Code::Unimplemented => {
                        Ok(tonic::Response::new(false))
                    }
                    Err(s) => Err(s),
                }
            }
        })
        .await
    }

    /// Deleted topics and groups whose drop is not finished, as the leader knows them.
    async fn pending(&self) -> Result<Vec<PendingDeletion>, ControllerError> {
        let reply = self
            .on_leader(&mut false, |mut c| async move {
                match c.pending_deletions(pb::Empty {}).await {
                    Ok(r) => Ok(tonic::Response::new(Some(r.into_inner()))),
                    // An older build: not worth retrying.
                    Err(s) if s.code() == tonic::Code::Unimplemented => {
                        Ok(tonic::Response::new(None))
                    }
                    Err(s) => Err(s),
                }
            })
            .await?
            .ok_or_else(|| {
                ControllerError::Unavailable(
                    "the controller's build does not report deletions in progress".into(),
                )
            })?;
        reply
            .deletions
            .into_iter()
            .map(|d| {
                let kind = match d.kind.as_str() {
                    "topic" => DeletionKind::Topic,
                    "group" => DeletionKind::Group,
                    other => {
                        return Err(ControllerError::Unavailable(format!(
                            "the controller reported a deletion of a {other:?}"
                        )));
                    }
                };
                Ok(PendingDeletion {
                    kind,
                    name: d.name,
                    id: d.drop_id,
                    shards: d.shards,
                })
            })
            .collect()
    }

    /// Whether the controller leader records groups' drops (`FinishGroupDrop` of id 0, which
    /// finishes nothing; one of an older build answers UNIMPLEMENTED), as `records_drops`.
    async fn records_group_drops(&self, group: &GroupName) -> Result<bool, ControllerError> {
        let wire = pb::GroupDropDone {
            name: group.as_str().to_owned(),
            drop_id: 0,
        };
        self.on_leader(&mut false, |mut c| {
            let wire = wire.clone();
            async move {
                match c.finish_group_drop(wire).await {
                    Ok(_) => Ok(tonic::Response::new(true)),
                    Err(s) if s.code() == tonic::Code::Unimplemented => {
                        Ok(tonic::Response::new(false))
                    }
                    Err(s) => Err(s),
                }
            }
        })
        .await
    }

    /// Creates a topic (on the configured shards, or on shards of `replicas` members), taking an
    /// earlier attempt's topic when a retry finds it created.
    async fn create(
        &self,
        spec: TopicSpec,
        replicas: Option<u32>,
    ) -> Result<TopicConfig, ControllerError> {
        let mut wire = topic_spec_to_wire(&spec);
        wire.replicas = replicas;
        let mut ambiguous = false;
        let created = self
            .on_leader(&mut ambiguous, |mut c| {
                let wire = wire.clone();
                async move { c.create_topic(wire).await }
            })
            .await;
        match created {
            Ok(topic) => Ok(topic_from_wire(topic)?),
            // An earlier attempt may have created it: that topic, if it is the one asked for.
            Err(ControllerError::AlreadyExists(what)) if ambiguous => {
                match self.get_topic(&spec.name).await? {
                    Some(t)
                        if t.topic_type == spec.topic_type && t.queue_count == spec.queue_count =>
                    {
                        Ok(t)
                    }
                    _ => Err(ControllerError::AlreadyExists(what)),
                }
            }
            Err(err) => Err(err),
        }
    }
}

#[async_trait]
impl ControllerApi for RemoteController {
    async fn create_topic(&self, spec: TopicSpec) -> Result<TopicConfig, ControllerError> {
        self.create(spec, None).await
    }

    async fn create_topic_replicated(
        &self,
        spec: TopicSpec,
        replicas: u32,
    ) -> Result<TopicConfig, ControllerError> {
        self.create(spec, Some(replicas)).await
    }

    async fn delete_topic(&self, topic: &TopicName) -> Result<TopicDrop, ControllerError> {
        let wire = name(topic.as_str());
        let mut ambiguous = false;
        let deleted = self
            .on_leader(&mut ambiguous, |mut c| {
                let wire = wire.clone();
                async move { c.delete_topic(wire).await }
            })
            .await;
        match deleted {
            Ok(drop) => Ok(TopicDrop {
                id: drop.drop_id,
                shards: drop.shards,
                finished: false,
            }),
            // An earlier attempt deleted it. A controller that records drops answers a retry
            // with the drop while it is pending, so its drop finished since: nothing is left to
            // drop. One of an older build keeps no record: the caller drops, unfenced, as before.
            Err(ControllerError::NotFound(_)) if ambiguous => Ok(TopicDrop {
                id: 0,
                shards: Vec::new(),
                finished: self.records_drops(topic).await?,
            }),
            Err(err) => Err(err),
        }
    }

    async fn finish_topic_drop(&self, topic: &TopicName, id: u64) -> Result<(), ControllerError> {
        let wire = pb::TopicDropDone {
            name: topic.as_str().to_owned(),
            drop_id: id,
        };
        self.on_leader(&mut false, |mut c| {
            let wire = wire.clone();
            async move { c.finish_topic_drop(wire).await }
        })
        .await?;
        Ok(())
    }

    async fn set_topic_retention(
        &self,
        topic: &TopicName,
        retention_ms: Option<u64>,
    ) -> Result<TopicConfig, ControllerError> {
        let wire = pb::TopicRetention {
            name: topic.as_str().to_owned(),
            retention_ms,
        };
        let reply = self
            .on_leader(&mut false, |mut c| {
                let wire = wire.clone();
                async move { c.set_topic_retention(wire).await }
            })
            .await?;
        Ok(topic_from_wire(reply)?)
    }

    async fn get_topic(&self, topic: &TopicName) -> Result<Option<TopicConfig>, ControllerError> {
        let wire = name(topic.as_str());
        let reply = self
            .on_leader(&mut false, |mut c| {
                let wire = wire.clone();
                async move { c.get_topic(wire).await }
            })
            .await?;
        Ok(reply.topic.map(topic_from_wire).transpose()?)
    }

    async fn list_topics(&self) -> Result<Vec<TopicConfig>, ControllerError> {
        let reply = self
            .on_leader(&mut false, |mut c| async move {
                c.list_topics(pb::Empty {}).await
            })
            .await?;
        Ok(reply
            .topics
            .into_iter()
            .map(topic_from_wire)
            .collect::<Result<_, _>>()?)
    }

    async fn create_group(&self, spec: GroupSpec) -> Result<GroupConfig, ControllerError> {
        let wire = group_spec_to_wire(&spec);
        let mut ambiguous = false;
        let created = self
            .on_leader(&mut ambiguous, |mut c| {
                let wire = wire.clone();
                async move { c.create_group(wire).await }
            })
            .await;
        match created {
            Ok(group) => Ok(group_from_wire(group)?),
            Err(ControllerError::AlreadyExists(what)) if ambiguous => {
                match self.get_group(&spec.name).await? {
                    Some(g) if g.fifo == spec.fifo => Ok(g),
                    _ => Err(ControllerError::AlreadyExists(what)),
                }
            }
            Err(err) => Err(err),
        }
    }

    async fn update_group(
        &self,
        group: &GroupName,
        update: crate::GroupUpdate,
    ) -> Result<GroupConfig, ControllerError> {
        // Setting values is idempotent: a retry after an ambiguous failure is safe.
        let wire = crate::controller_wire::group_update_to_wire(group, &update);
        let mut ambiguous = false;
        let updated = self
            .on_leader(&mut ambiguous, |mut c| {
                let wire = wire.clone();
                async move { c.update_group(wire).await }
            })
            .await?;
        Ok(group_from_wire(updated)?)
    }

    async fn delete_group(&self, group: &GroupName) -> Result<GroupDrop, ControllerError> {
        let wire = name(group.as_str());
        let mut ambiguous = false;
        let deleted = self
            .on_leader(&mut ambiguous, |mut c| {
                let wire = wire.clone();
                async move { c.delete_group(wire).await }
            })
            .await;
        match deleted {
            Ok(drop) => Ok(GroupDrop {
                drop: GroupDropId {
                    id: drop.drop_id,
                    floor: drop.drop_floor,
                },
                shards: drop.shards,
                finished: false,
            }),
            // An earlier attempt deleted it: as for a topic (see `delete_topic`).
            Err(ControllerError::NotFound(_)) if ambiguous => Ok(GroupDrop {
                drop: GroupDropId::default(),
                shards: Vec::new(),
                finished: self.records_group_drops(group).await?,
            }),
            Err(err) => Err(err),
        }
    }

    async fn pending_deletions(&self) -> Result<Vec<PendingDeletion>, ControllerError> {
        self.pending().await
    }

    async fn finish_group_drop(&self, group: &GroupName, id: u64) -> Result<(), ControllerError> {
        let wire = pb::GroupDropDone {
            name: group.as_str().to_owned(),
            drop_id: id,
        };
        self.on_leader(&mut false, |mut c| {
            let wire = wire.clone();
            async move { c.finish_group_drop(wire).await }
        })
        .await?;
        Ok(())
    }

    async fn get_group(&self, group: &GroupName) -> Result<Option<GroupConfig>, ControllerError> {
        let wire = name(group.as_str());
        let reply = self
            .on_leader(&mut false, |mut c| {
                let wire = wire.clone();
                async move { c.get_group(wire).await }
            })
            .await?;
        Ok(reply.group.map(group_from_wire).transpose()?)
    }

    async fn list_groups(&self) -> Result<Vec<GroupConfig>, ControllerError> {
        let reply = self
            .on_leader(&mut false, |mut c| async move {
                c.list_groups(pb::Empty {}).await
            })
            .await?;
        Ok(reply
            .groups
            .into_iter()
            .map(group_from_wire)
            .collect::<Result<_, _>>()?)
    }

    async fn ensure_dead_letter_topic(
        &self,
        group: &GroupName,
    ) -> Result<TopicConfig, ControllerError> {
        let wire = name(group.as_str());
        let topic = self
            .on_leader(&mut false, |mut c| {
                let wire = wire.clone();
                async move { c.ensure_dead_letter_topic(wire).await }
            })
            .await?;
        Ok(topic_from_wire(topic)?)
    }

    async fn proxy_heartbeat(&self, beat: &ProxyBeat) -> Result<(), ControllerError> {
        let wire = pb::ProxyHeartbeatRequest {
            addr: beat.addr.clone(),
            version: beat.version.clone(),
            admin_addr: beat.admin_addr.clone().unwrap_or_default(),
        };
        self.on_leader(&mut false, |mut c| {
            let wire = wire.clone();
            async move { c.proxy_heartbeat(wire).await }
        })
        .await
        .map(|_| ())
    }

    async fn proxies(&self) -> Result<Vec<ProxySeen>, ControllerError> {
        let reply = self
            .on_leader(&mut false, |mut c| async move {
                c.list_proxies(pb::Empty {}).await
            })
            .await?;
        Ok(reply
            .proxies
            .into_iter()
            .map(|p| ProxySeen {
                addr: p.addr,
                version: p.version,
                last_seen_ms: p.last_seen_ms,
                admin_addr: Some(p.admin_addr).filter(|a| !a.is_empty()),
            })
            .collect())
    }

    async fn drain_store(&self, store: u64) -> Result<StoreDrain, ControllerError> {
        let reply = self
            .on_leader(&mut false, |mut c| async move {
                c.drain_store(pb::DrainStoreRequest { store }).await
            })
            .await?;
        Ok(StoreDrain {
            store: reply.store,
            moving: reply.moving,
            configured: reply.configured,
        })
    }

    async fn register_store(&self, id: u64, addr: &str) -> Result<(), ControllerError> {
        let wire = pb::StoreNodeInfo {
            id,
            addr: addr.to_owned(),
            configured: false,
            registered_ms: 0,
            draining: false,
            scaled_away: false,
            staying: Vec::new(),
        };
        // Idempotent, so a retry after an ambiguous failure is harmless.
        self.on_leader(&mut false, |mut c| {
            let wire = wire.clone();
            async move { c.register_store(wire).await }
        })
        .await?;
        Ok(())
    }

    async fn store_nodes(&self) -> Result<Vec<StoreNodeEntry>, ControllerError> {
        let reply = self
            .on_leader(&mut false, |mut c| async move {
                c.list_stores(pb::Empty {}).await
            })
            .await?;
        Ok(reply.stores.into_iter().map(store_node_from_wire).collect())
    }

    async fn scale_stores(&self, replicas: u32) -> Result<StoreScale, ControllerError> {
        // Idempotent: asking again continues a scale-in.
        let reply = self
            .on_leader(&mut false, |mut c| async move {
                c.scale_stores(pb::ScaleStoresRequest { replicas }).await
            })
            .await?;
        Ok(StoreScale {
            from: reply.from,
            to: reply.to,
            draining: reply.draining,
            moving: reply.moving,
            done: reply.done,
        })
    }

    async fn remove_store(&self, id: u64) -> Result<(), ControllerError> {
        self.on_leader(&mut false, |mut c| async move {
            c.remove_store(pb::DrainStoreRequest { store: id }).await
        })
        .await?;
        Ok(())
    }

    async fn undrain_store(&self, id: u64) -> Result<(), ControllerError> {
        // Idempotent in effect: a retry after it applied is refused as "not draining".
        self.on_leader(&mut false, |mut c| async move {
            c.undrain_store(pb::DrainStoreRequest { store: id }).await
        })
        .await?;
        Ok(())
    }

    async fn create_user(&self, user: User) -> Result<UserInfo, ControllerError> {
        let wire = user_to_wire(&user);
        let mut ambiguous = false;
        let created = self
            .on_leader(&mut ambiguous, |mut c| {
                let wire = wire.clone();
                async move { c.create_user(wire).await }
            })
            .await;
        match created {
            Ok(info) => Ok(user_info_from_wire(info)?),
            // An earlier attempt may have created it: the same user is a success.
            Err(ControllerError::AlreadyExists(what)) if ambiguous => {
                let data = self.auth_data().await?;
                match data.users.into_iter().find(|u| u.name == user.name) {
                    Some(found) if found == user => Ok(found.info()),
                    _ => Err(ControllerError::AlreadyExists(what)),
                }
            }
            Err(err) => Err(err),
        }
    }

    async fn update_user(
        &self,
        name: &UserName,
        update: UserUpdate,
    ) -> Result<UserInfo, ControllerError> {
        let wire = user_update_to_wire(name, &update);
        let reply = self
            .on_leader(&mut false, |mut c| {
                let wire = wire.clone();
                async move { c.update_user(wire).await }
            })
            .await?;
        Ok(user_info_from_wire(reply)?)
    }

    async fn delete_user(&self, user: &UserName) -> Result<(), ControllerError> {
        let wire = name(user.as_str());
        let mut ambiguous = false;
        let deleted = self
            .on_leader(&mut ambiguous, |mut c| {
                let wire = wire.clone();
                async move { c.delete_user(wire).await }
            })
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(ControllerError::NotFound(_)) if ambiguous => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn put_acl(
        &self,
        subject: &Subject,
        entries: Vec<PolicyEntry>,
        create: bool,
    ) -> Result<Acl, ControllerError> {
        let wire = crate::pb::auth::PutAcl {
            acl: Some(acl_to_wire(&Acl {
                subject: subject.clone(),
                entries,
            })),
            create,
        };
        let reply = self
            .on_leader(&mut false, |mut c| {
                let wire = wire.clone();
                async move { c.put_acl(wire).await }
            })
            .await?;
        Ok(acl_from_wire(reply)?)
    }

    async fn delete_acl(
        &self,
        subject: &Subject,
        resources: &[ResourcePattern],
    ) -> Result<(), ControllerError> {
        let wire = crate::pb::auth::DeleteAcl {
            subject: subject.to_string(),
            resources: resources.iter().map(ToString::to_string).collect(),
        };
        let mut ambiguous = false;
        let deleted = self
            .on_leader(&mut ambiguous, |mut c| {
                let wire = wire.clone();
                async move { c.delete_acl(wire).await }
            })
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(ControllerError::NotFound(_)) if ambiguous => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn auth_data(&self) -> Result<AuthData, ControllerError> {
        let reply = self
            .on_leader(&mut false, |mut c| async move {
                c.auth_data(pb::Empty {}).await
            })
            .await?;
        Ok(auth_data_from_wire(reply)?)
    }

    async fn create_route(&self, spec: RouteSpec) -> Result<RouteConfig, ControllerError> {
        let wire = spec_to_wire(&spec, Secrets::Include);
        let mut ambiguous = false;
        let created = self
            .on_leader(&mut ambiguous, |mut c| {
                let wire = wire.clone();
                async move { c.create_route(wire).await }
            })
            .await;
        match created {
            Ok(route) => Ok(route_from_wire(route)?),
            // An earlier attempt may have created it: the same route is a success.
            Err(ControllerError::AlreadyExists(what)) if ambiguous => {
                match self
                    .routes()
                    .await?
                    .into_iter()
                    .find(|r| r.spec.name == spec.name)
                {
                    Some(found) if found.spec == spec => Ok(found),
                    _ => Err(ControllerError::AlreadyExists(what)),
                }
            }
            Err(err) => Err(err),
        }
    }

    async fn delete_route(&self, route: &RouteName) -> Result<(), ControllerError> {
        let wire = name(route.as_str());
        let mut ambiguous = false;
        let deleted = self
            .on_leader(&mut ambiguous, |mut c| {
                let wire = wire.clone();
                async move { c.delete_route(wire).await }
            })
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(ControllerError::NotFound(_)) if ambiguous => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn set_route_paused(
        &self,
        route: &RouteName,
        paused: bool,
    ) -> Result<RouteConfig, ControllerError> {
        let wire = crate::pb::route::SetRoutePaused {
            name: route.to_string(),
            paused,
        };
        let reply = self
            .on_leader(&mut false, |mut c| {
                let wire = wire.clone();
                async move { c.set_route_paused(wire).await }
            })
            .await?;
        Ok(route_from_wire(reply)?)
    }

    async fn routes(&self) -> Result<Vec<RouteConfig>, ControllerError> {
        let reply = self
            .on_leader(&mut false, |mut c| async move {
                c.list_routes(pb::Empty {}).await
            })
            .await?;
        Ok(reply
            .routes
            .into_iter()
            .map(route_from_wire)
            .collect::<Result<_, _>>()?)
    }

    async fn route_statuses(&self) -> Result<BTreeMap<RouteName, RouteStatus>, ControllerError> {
        let reply = self
            .on_leader(&mut false, |mut c| async move {
                c.route_statuses(pb::Empty {}).await
            })
            .await?;
        Ok(statuses_from_wire(reply)?)
    }

    async fn receipt_keys(&self) -> Result<ManagedKeys, ControllerError> {
        let reply = self
            .on_leader(&mut false, |mut c| async move {
                c.receipt_keys(pb::Empty {}).await
            })
            .await?;
        Ok(keys_from_wire(reply)?)
    }

    async fn rotate_receipt_key(&self) -> Result<ManagedKeys, ControllerError> {
        let reply = self
            .on_leader(&mut false, |mut c| async move {
                c.rotate_receipt_key(pb::Empty {}).await
            })
            .await?;
        Ok(keys_from_wire(reply)?)
    }

    async fn retire_receipt_key(&self, id: u32, force: bool) -> Result<(), ControllerError> {
        self.on_leader(&mut false, |mut c| async move {
            c.retire_receipt_key(pb::RetireReceiptKeyRequest { id, force })
                .await
        })
        .await?;
        Ok(())
    }

    async fn tier_credentials(&self) -> Result<Option<ManagedTierCredentials>, ControllerError> {
        let reply = self
            .on_leader(&mut false, |mut c| async move {
                c.tier_credentials(pb::Empty {}).await
            })
            .await?;
        Ok(tier_credentials::from_wire(reply)?)
    }

    async fn set_tier_credentials(
        &self,
        credentials: Option<TierCredentials>,
    ) -> Result<Option<ManagedTierCredentials>, ControllerError> {
        let request = pb::SetTierCredentialsRequest {
            credentials: credentials.map(|c| pb::TierCredentials {
                access_key_id: c.access_key_id().to_owned(),
                secret_access_key: c.expose_secret().to_owned(),
                updated_ms: 0,
            }),
        };
        let reply = self
            .on_leader(&mut false, |mut c| {
                let request = request.clone();
                async move { c.set_tier_credentials(request).await }
            })
            .await?;
        Ok(tier_credentials::from_wire(reply)?)
    }

    async fn node_status(&self) -> Vec<ControllerNodeReport> {
        ask_each(
            &self.clients,
            &self.addrs,
            |mut c| async move { c.node_status(pb::Empty {}).await },
            member_from_wire,
        )
        .await
    }
}

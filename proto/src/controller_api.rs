//! The controller's contract: metadata (topics, groups, queue placement).

use async_trait::async_trait;

use crate::auth::{
    Acl, AuthData, PolicyEntry, ResourcePattern, Subject, User, UserInfo, UserName, UserUpdate,
};
use crate::cluster_status::ControllerNodeReport;
use crate::domain::{
    GroupConfig, GroupName, GroupSpec, RouteName, TopicConfig, TopicName, TopicSpec,
};
use crate::receipt_keys::ManagedKeys;
use crate::route::{RouteConfig, RouteSpec, RouteStatus};
use crate::tier_credentials::{ManagedTierCredentials, TierCredentials};
use std::collections::BTreeMap;

/// A proxy as the controller leader last heard from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySeen {
    /// The address clients reach it at.
    pub addr: String,
    pub version: String,
    /// How long ago it was last heard from.
    pub last_seen_ms: u64,
    /// Where its admin service is when not on `addr`.
    pub admin_addr: Option<String>,
}

/// What a proxy says about itself every [`PROXY_HEARTBEAT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyBeat {
    /// The address clients reach it at.
    pub addr: String,
    /// Where its admin service is when not on `addr` (`proxy.admin_listen`).
    pub admin_addr: Option<String>,
    pub version: String,
}

/// A deleted topic whose queues are being dropped from the shards that held them. The
/// controller records it when it deletes the topic's metadata and forgets it once every shard
/// dropped them ([`ControllerApi::finish_topic_drop`]); until then the name cannot be created
/// again (its old messages would be served as the new topic's).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicDrop {
    /// This deletion's id: the controller's revision of the topic (ascending across all topics)
    /// the deletion took. A shard applies a topic's drop only above the newest revision of it
    /// it applied. 0: a controller without revisions (not fenced).
    pub id: u64,
    /// The shards to drop the topic from (empty with an id of 0: the ones the topic had).
    pub shards: Vec<crate::ShardId>,
    /// Nothing is left to drop: a retried call found the deletion done and its drop finished.
    pub finished: bool,
}

/// A deleted consumer group whose state is being dropped from the shards, as [`TopicDrop`] is
/// for a topic; the name cannot be created again until [`ControllerApi::finish_group_drop`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupDrop {
    /// This deletion's id and the floor below which every group drop is finished (a shard
    /// fences groups' drops by both, see `StoreApi::drop_group`). The id comes from the
    /// counter topics' revisions come from; 0: a controller without it (not fenced).
    pub drop: crate::store_api::GroupDropId,
    /// The shards where the group may hold state when it was deleted: every shard a topic has
    /// queues on, or a deleted topic whose drop is pending had, and every shard while a
    /// dead-letter topic exists (dead letters sit on any shard); those that still exist (empty
    /// with an id of 0: those the caller finds).
    pub shards: Vec<crate::ShardId>,
    /// Nothing is left to drop: a retried call found the deletion done and its drop finished.
    pub finished: bool,
}

/// A deleted topic or consumer group whose drop from the shards is not finished: its name is
/// reserved until it is ([`ControllerApi::pending_deletions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDeletion {
    pub kind: DeletionKind,
    pub name: String,
    /// The deletion's id (its revision).
    pub id: u64,
    /// The shards it is dropped from (those that still exist).
    pub shards: Vec<crate::ShardId>,
}

/// What a [`PendingDeletion`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionKind {
    Topic,
    Group,
}

impl DeletionKind {
    /// `topic` or `group`, as the wire and `cluster status` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeletionKind::Topic => "topic",
            DeletionKind::Group => "group",
        }
    }
}

/// What draining a store node moves (ADR 0014).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreDrain {
    pub store: u64,
    /// Placed shards whose replica on the node moves to another node.
    pub moving: Vec<crate::ShardId>,
    /// Configured shards (`cluster.shards`) whose replica stays on the node: no other store
    /// node is free to take it (ADR 0032).
    pub configured: Vec<crate::ShardId>,
}

/// A store node of the cluster, as the controller knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreNodeEntry {
    pub id: u64,
    /// `host:port` of its gRPC port.
    pub addr: String,
    /// Listed in `[[cluster.stores]]`; otherwise registered at runtime, at `registered_ms`.
    pub configured: bool,
    pub registered_ms: i64,
    /// Being drained: no placed replica stays or goes there.
    pub draining: bool,
    /// Its pod ordinal is at or above the store StatefulSet's replicas: scaled down outside
    /// `vela admin store scale`, its replicas are being re-created on the other nodes.
    pub scaled_away: bool,
    /// Draining, it keeps its replica of these configured shards: every other store node
    /// already holds one (ADR 0032). Not counted as replicas left to move.
    pub staying: Vec<crate::ShardId>,
}

/// What scaling the store StatefulSet does (issue 11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreScale {
    /// The StatefulSet's replicas when asked.
    pub from: u32,
    pub to: u32,
    /// Store nodes being drained before the StatefulSet is lowered.
    pub draining: Vec<u64>,
    /// Placed shards whose replicas move off them (by this call).
    pub moving: Vec<crate::ShardId>,
    /// The StatefulSet has `to` replicas.
    pub done: bool,
}

/// Failures callers branch on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("controller unavailable: {0}")]
    Unavailable(String),
    /// This controller node does not lead the metadata group (`leader`: the one it knows).
    #[error("this controller node is not the leader (leader hint: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("controller internal error: {0}")]
    Internal(String),
    /// The name's deletion is not finished (its data is still being dropped from the shards):
    /// it cannot be created again yet.
    #[error("{0}")]
    BeingDeleted(String),
}

/// The metadata plane.
#[async_trait]
pub trait ControllerApi: Send + Sync + 'static {
    /// Creates a topic and places its queues on shards. `AlreadyExists` if it exists.
    async fn create_topic(&self, spec: TopicSpec) -> Result<TopicConfig, ControllerError>;
    /// Creates a topic whose queues live on shards of `replicas` members on distinct store
    /// nodes (ADR 0013). `Invalid` when the cluster cannot hold that many.
    async fn create_topic_replicated(
        &self,
        spec: TopicSpec,
        replicas: u32,
    ) -> Result<TopicConfig, ControllerError>;
    /// Deletes a topic's metadata and answers where its queues are to be dropped (recorded
    /// until [`ControllerApi::finish_topic_drop`]). A topic deleted before whose drop is not
    /// finished answers that drop again, so deleting again finishes it. `NotFound` if neither.
    async fn delete_topic(&self, name: &TopicName) -> Result<TopicDrop, ControllerError>;
    /// Records that drop `id` of topic `name` is done on every shard it names: the name may
    /// be created again. A drop not recorded (finished before, or another id) is left alone.
    async fn finish_topic_drop(&self, name: &TopicName, id: u64) -> Result<(), ControllerError>;
    /// Sets how long a topic's messages are kept, in ms (`None`: the store's retention time);
    /// answers the topic as it is now. `NotFound` if absent, `Invalid` outside
    /// [`crate::domain::check_topic_retention`]'s bounds.
    async fn set_topic_retention(
        &self,
        name: &TopicName,
        retention_ms: Option<u64>,
    ) -> Result<TopicConfig, ControllerError>;
    async fn get_topic(&self, name: &TopicName) -> Result<Option<TopicConfig>, ControllerError>;
    async fn list_topics(&self) -> Result<Vec<TopicConfig>, ControllerError>;

    /// Creates a consumer group. `AlreadyExists` if it exists.
    async fn create_group(&self, spec: GroupSpec) -> Result<GroupConfig, ControllerError>;
    /// Deletes a group's metadata and answers where its state is to be dropped (recorded until
    /// [`ControllerApi::finish_group_drop`]). A group deleted before whose drop is not
    /// finished answers that drop again, so deleting again finishes it. `NotFound` if neither.
    async fn delete_group(&self, name: &GroupName) -> Result<GroupDrop, ControllerError>;
    /// Records that drop `id` of group `name` is done on every shard it names: the name may be
    /// created again. A drop not recorded (finished before, or another id) is left alone.
    async fn finish_group_drop(&self, name: &GroupName, id: u64) -> Result<(), ControllerError>;
    /// Deleted topics and groups whose drop is not finished, by kind, then name. `Unavailable`
    /// from a controller of a build before it.
    async fn pending_deletions(&self) -> Result<Vec<PendingDeletion>, ControllerError>;
    /// Changes what `update` sets of an existing group (NotFound otherwise).
    async fn update_group(
        &self,
        name: &GroupName,
        update: crate::domain::GroupUpdate,
    ) -> Result<GroupConfig, ControllerError>;
    async fn get_group(&self, name: &GroupName) -> Result<Option<GroupConfig>, ControllerError>;
    async fn list_groups(&self) -> Result<Vec<GroupConfig>, ControllerError>;

    /// The dead-letter topic of `group` (`%DLQ%<group>`: one queue, `normal`), created if it
    /// does not exist yet. The store writes dead letters to it; this makes it routable and
    /// consumable. `NotFound` if the group does not exist.
    async fn ensure_dead_letter_topic(
        &self,
        group: &GroupName,
    ) -> Result<TopicConfig, ControllerError>;

    /// What every controller node reports about its member of the controller group now
    /// (answered by each node, leader or not; one that cannot be reached is listed with the
    /// reason).
    async fn node_status(&self) -> Vec<ControllerNodeReport>;

    /// A proxy at `addr` says it is alive (every few seconds). Observed state: the controller
    /// leader keeps it in memory, so a new leader knows every live proxy within one heartbeat.
    async fn proxy_heartbeat(&self, beat: &ProxyBeat) -> Result<(), ControllerError>;

    /// The proxies heard from recently (within [`PROXY_EXPIRY`]).
    async fn proxies(&self) -> Result<Vec<ProxySeen>, ControllerError>;

    /// Drains store node `store`: every placed shard's replica on it moves to another store
    /// node, and no new shard is placed there (idempotent). Answers at once with what moves;
    /// the controller's reconciler moves it. `NotFound` for a node that is not a store node of
    /// the cluster, `Invalid` when a shard has nowhere to go.
    async fn drain_store(&self, store: u64) -> Result<StoreDrain, ControllerError>;

    /// Records store node `id` at `addr` (`host:port`), one that is not in the cluster's
    /// `[[cluster.stores]]`, so shards can be placed on it and every role can reach it.
    /// Idempotent; a later call with another address moves it there. `Invalid` for id 0 or
    /// an id configured at another address.
    async fn register_store(&self, id: u64, addr: &str) -> Result<(), ControllerError>;

    /// Every store node of the cluster, configured and registered, by id.
    async fn store_nodes(&self) -> Result<Vec<StoreNodeEntry>, ControllerError>;

    /// Forgets registered store node `id` once it is drained (its pod removed), so it is no
    /// longer listed or asked; it may register again as a new node. `NotFound` for a node
    /// that is not registered, `Invalid` for a configured node or one not drained.
    async fn remove_store(&self, id: u64) -> Result<(), ControllerError>;

    /// Ends the drain of store node `id`: placed replicas may go there again (the replica
    /// balancer moves some back). `NotFound` for an unknown node, `Invalid` for one that is not
    /// draining or that is beyond the store StatefulSet's replicas.
    async fn undrain_store(&self, id: u64) -> Result<(), ControllerError>;

    /// Scales the store StatefulSet to `replicas` through Kubernetes: up at once (the new pods
    /// register as they start); down by draining the store nodes above `replicas`, after which
    /// the controller leader lowers the StatefulSet and removes them (`done` once it has).
    /// `Invalid` when the controller does not drive a StatefulSet or `replicas` is below the
    /// configured store nodes.
    async fn scale_stores(&self, replicas: u32) -> Result<StoreScale, ControllerError>;

    /// Creates a user (ADR 0019). `AlreadyExists` if it exists.
    async fn create_user(&self, user: User) -> Result<UserInfo, ControllerError>;
    /// Changes what `update` gives of an existing user. `NotFound` if absent.
    async fn update_user(
        &self,
        name: &UserName,
        update: UserUpdate,
    ) -> Result<UserInfo, ControllerError>;
    /// Deletes a user and its ACL. `NotFound` if absent.
    async fn delete_user(&self, name: &UserName) -> Result<(), ControllerError>;
    /// Merges `entries` into `subject`'s ACL, creating it when `create` (else `NotFound` when
    /// it has none). `NotFound` when the subject's user does not exist.
    async fn put_acl(
        &self,
        subject: &Subject,
        entries: Vec<PolicyEntry>,
        create: bool,
    ) -> Result<Acl, ControllerError>;
    /// Removes `subject`'s entries for `resources` (its whole ACL when empty).
    async fn delete_acl(
        &self,
        subject: &Subject,
        resources: &[ResourcePattern],
    ) -> Result<(), ControllerError>;
    /// Every user, passwords in clear, and every ACL: what proxies authenticate and authorize
    /// with. Never shown to admin tools as is.
    async fn auth_data(&self) -> Result<AuthData, ControllerError>;

    /// Creates a route (issue 12), running unless paused. `AlreadyExists` if one of that name
    /// exists. A route whose source is this Vela needs its source topic, and gets its group
    /// (created from the spec's start point when absent; `Invalid` with a start point when the
    /// group exists, whose position is then the route's).
    async fn create_route(&self, spec: RouteSpec) -> Result<RouteConfig, ControllerError>;
    /// Deletes a route (its group stays, with its position). `NotFound` if absent.
    async fn delete_route(&self, name: &RouteName) -> Result<(), ControllerError>;
    /// Pauses or resumes a route. `NotFound` if absent.
    async fn set_route_paused(
        &self,
        name: &RouteName,
        paused: bool,
    ) -> Result<RouteConfig, ControllerError>;
    /// Every route, secret keys in clear: what the node running routes needs. Never shown to
    /// admin tools as is.
    async fn routes(&self) -> Result<Vec<RouteConfig>, ControllerError>;
    /// How the routes are doing, as the process running them reports (the controller leader
    /// of a cluster; the standalone process). A route not listed is not running yet.
    async fn route_statuses(&self) -> Result<BTreeMap<RouteName, RouteStatus>, ControllerError>;

    /// The managed receipt keys in clear (ADR 0030): what proxies sign and verify receipt
    /// handles with. The first call makes the first key. Never shown to admin tools as is.
    async fn receipt_keys(&self) -> Result<ManagedKeys, ControllerError>;
    /// Adds a new receipt key and makes it the one new handles are signed with; the others
    /// still verify the handles they signed.
    async fn rotate_receipt_key(&self) -> Result<ManagedKeys, ControllerError>;
    /// Removes a key that no longer signs. `Invalid` for the signing key, and (unless `force`)
    /// within 12 h of the rotation that replaced it, while handles it signed may be in flight;
    /// `NotFound` for an unknown id.
    async fn retire_receipt_key(&self, id: u32, force: bool) -> Result<(), ControllerError>;

    /// The object-storage credentials the controller keeps, in clear: what store nodes sign
    /// tier requests with while they are set (`None`: they use their own `[tier]` settings).
    async fn tier_credentials(&self) -> Result<Option<ManagedTierCredentials>, ControllerError>;
    /// Sets, replaces or (with `None`) clears them; answers what is now set.
    async fn set_tier_credentials(
        &self,
        credentials: Option<TierCredentials>,
    ) -> Result<Option<ManagedTierCredentials>, ControllerError>;
}

/// A proxy not heard from for this long is no longer listed.
pub const PROXY_EXPIRY: std::time::Duration = std::time::Duration::from_secs(30);
/// How often a proxy says it is alive.
pub const PROXY_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

//! The `Controller`: opens the metadata Raft group, turns `ControllerApi` calls into validated
//! commands and serves reads from the applied metadata. The store nodes are in `stores.rs`, the
//! configured shard set and the placed shards in `shard_set.rs`, scaling in `scaling.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;
use tokio::sync::Mutex;
use vela_proto::auth::{
    Acl, AuthData, PolicyEntry, ResourcePattern, Subject, User, UserInfo, UserName, UserUpdate,
};
use vela_proto::clock::SharedClock;
use vela_proto::cluster_status::{ControllerNodeReport, NodeReport};
use vela_proto::controller_api::{PROXY_EXPIRY, ProxyBeat, ProxySeen, StoreDrain, StoreNodeEntry};
use vela_proto::route::{RouteConfig, RouteSpec};
use vela_proto::{
    ControllerApi, ControllerError, DeletionKind, GroupConfig, GroupDrop, GroupName, GroupSpec,
    PendingDeletion, RouteName, ShardId, TopicConfig, TopicDrop, TopicName, TopicSpec, TopicType,
};

use crate::command::{Applied, ControllerCommand};
use crate::config::ControllerConfig;
use crate::metadata::Metadata;
use crate::raft::{ControllerGroup, RaftStartError, RaftStopError};
use crate::validation::{resolve_group_spec, validate_topic_spec};

/// Why [`Controller::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerOpenError {
    #[error("invalid controller config: {0}")]
    Config(String),
    #[error("creating controller directory {path} failed: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata key file {path}: {source}")]
    MetadataKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Raft(#[from] RaftStartError),
    #[error("recording the controller shard set {shards:?} failed: {source}")]
    SetShards {
        shards: Vec<ShardId>,
        #[source]
        source: ControllerError,
    },
}

/// Why [`Controller::shutdown`] did not complete cleanly.
#[derive(Debug, thiserror::Error)]
#[error("controller shutdown failed: {0}")]
pub struct ControllerShutdownError(#[from] RaftStopError);

/// The metadata plane of one node.
/// A proxy as its last heartbeat described it (observed state, memory only).
struct HeardProxy {
    version: String,
    admin_addr: Option<String>,
    seen: std::time::Instant,
}

pub struct Controller {
    /// The applied metadata, written only by the state machine.
    pub(crate) metadata: Arc<RwLock<Metadata>>,
    pub(crate) group: ControllerGroup,
    pub(crate) clock: SharedClock,
    /// This node's id in a replicated controller group (`None`: the single voter of standalone).
    member: Option<u64>,
    /// The cluster's configured store nodes (id → address), `[[cluster.stores]]` (ADR 0013);
    /// those that registered at runtime are in the metadata.
    pub(crate) configured_stores: BTreeMap<u64, String>,
    /// The store StatefulSet `store scale` drives (`controller.store_statefulset`), or why
    /// there is none; `None` when not configured.
    pub(crate) statefulset:
        parking_lot::RwLock<Option<Result<Arc<crate::kubernetes::StoreStatefulSet>, String>>>,
    /// Wakes the store scaler when a scale-in starts.
    pub(crate) scale_wake: tokio::sync::Notify,
    /// Registered store nodes the leader's store scaler last saw at or beyond the StatefulSet's
    /// replicas (scaled down outside `store scale`): being repaired.
    pub(crate) scaled_away: parking_lot::Mutex<std::collections::BTreeSet<u64>>,
    /// Woken when a topic placed new shards or a drain moved replicas, so the reconciler acts
    /// at once.
    pub(crate) placed_changed: tokio::sync::Notify,
    /// Proxies heard from (address → version, when), while this node leads; observed state,
    /// never replicated.
    proxies: parking_lot::Mutex<BTreeMap<String, HeardProxy>>,
    /// Set once shut down, so a second call is a no-op; a tokio mutex because the shutdown itself
    /// awaits while holding it.
    pub(crate) stopped: Mutex<bool>,
    /// Seals user passwords before they are proposed; opens them for proxies (ADR 0019).
    pub(crate) sealer: crate::secrets::Sealer,
    /// Where this process runs routes, while it does (ADR 0025): told when routes change,
    /// asked how they are doing.
    pub(crate) route_runtime: parking_lot::RwLock<Option<Arc<dyn vela_proto::route::RouteRuntime>>>,
}

impl Controller {
    /// Opens (or creates) the controller in `cfg.data_dir`, starts its Raft group as the single
    /// voter, and records `cfg.shards` as the shard set if it changed.
    pub async fn open(
        cfg: ControllerConfig,
        clock: SharedClock,
    ) -> Result<Arc<Controller>, ControllerOpenError> {
        let shards = cfg.normalized_shards().ok_or_else(|| {
            ControllerOpenError::Config("shards must name at least one shard".to_owned())
        })?;
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| {
            ControllerOpenError::CreateDir {
                path: cfg.data_dir.clone(),
                source,
            }
        })?;
        let sealer = open_sealer(&cfg)?;

        let metadata = Arc::new(RwLock::new(Metadata::default()));
        let group = ControllerGroup::start(cfg.node_id, &cfg.data_dir, metadata.clone()).await?;
        let controller = Arc::new(Controller {
            metadata,
            group,
            clock,
            member: None,
            configured_stores: cfg.stores.clone(),
            statefulset: Default::default(),
            scale_wake: tokio::sync::Notify::new(),
            scaled_away: Default::default(),
            placed_changed: tokio::sync::Notify::new(),
            proxies: Default::default(),
            stopped: Mutex::new(false),
            sealer,
            route_runtime: Default::default(),
        });

        if let Err(err) = controller.ensure_shards(shards.clone()).await {
            if let Err(stop) = controller.shutdown().await {
                tracing::warn!(error = %stop, "controller shutdown after a failed open");
            }
            return Err(ControllerOpenError::SetShards {
                shards,
                source: err,
            });
        }
        let (topics, groups) = {
            let md = controller.metadata.read();
            (md.topics().count(), md.groups().count())
        };
        tracing::info!(
            node_id = cfg.node_id,
            ?shards,
            topics,
            groups,
            "controller open"
        );
        Ok(controller)
    }

    /// Opens the controller in `cfg.data_dir` as one member of a replicated controller group
    /// over `voters` (node id → address of its gRPC port, which serves [`raft_service`] and the
    /// controller service); an empty log creates the group only when `initialize` (the
    /// cluster's first start). Returns at once, leader or not; whichever member leads records
    /// `cfg.shards` as the shard set if it changed. Only the leader answers calls, reads
    /// included (after confirming its leadership), so a deposed leader never serves stale
    /// metadata.
    ///
    /// [`raft_service`]: Self::raft_service
    pub async fn open_replicated(
        cfg: ControllerConfig,
        clock: SharedClock,
        voters: &BTreeMap<u64, String>,
        initialize: bool,
    ) -> Result<Arc<Controller>, ControllerOpenError> {
        let shards = cfg.normalized_shards().ok_or_else(|| {
            ControllerOpenError::Config("shards must name at least one shard".to_owned())
        })?;
        if !voters.contains_key(&cfg.node_id) {
            return Err(ControllerOpenError::Config(format!(
                "node_id {} is not one of the controller nodes {:?}",
                cfg.node_id,
                voters.keys().collect::<Vec<_>>()
            )));
        }
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| {
            ControllerOpenError::CreateDir {
                path: cfg.data_dir.clone(),
                source,
            }
        })?;
        let sealer = open_sealer(&cfg)?;
        let metadata = Arc::new(RwLock::new(Metadata::default()));
        let group = ControllerGroup::start_member(
            cfg.node_id,
            &cfg.data_dir,
            metadata.clone(),
            voters,
            initialize,
        )
        .await?;
        let controller = Arc::new(Controller {
            metadata,
            group,
            clock,
            member: Some(cfg.node_id),
            configured_stores: cfg.stores.clone(),
            statefulset: Default::default(),
            scale_wake: tokio::sync::Notify::new(),
            scaled_away: Default::default(),
            placed_changed: tokio::sync::Notify::new(),
            proxies: Default::default(),
            stopped: Mutex::new(false),
            sealer,
            route_runtime: Default::default(),
        });
        tokio::spawn(crate::shard_set::record_shards_when_leading(
            Arc::downgrade(&controller),
            shards,
        ));
        tracing::info!(
            node_id = cfg.node_id,
            voters = voters.len(),
            "controller member open"
        );
        Ok(controller)
    }

    /// The gRPC service through which the other controller nodes reach this one's Raft (a
    /// replicated controller only).
    pub fn raft_service(
        &self,
    ) -> Option<
        vela_raft::grpc::pb::raft_transport_server::RaftTransportServer<
            vela_raft::grpc::RaftService<
                crate::raft::ControllerTypeConfig,
                crate::raft::MetadataStateMachine,
            >,
        >,
    > {
        self.member.map(|id| self.group.raft_service(id))
    }

    /// What this node's member of the controller group reports about itself.
    pub fn member_status(&self) -> vela_proto::cluster_status::MemberStatus {
        self.group.member_status().1
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub async fn is_stopped(&self) -> bool {
        *self.stopped.lock().await
    }

    /// Whether this node leads the controller group now (its own view).
    pub fn group_leads(&self) -> bool {
        self.group.is_leader()
    }

    /// In a replicated group: `NotLeader` (with the leader this node knows) unless it leads.
    fn require_leading(&self) -> Result<(), ControllerError> {
        if self.member.is_some() && !self.group.is_leader() {
            return Err(ControllerError::NotLeader {
                leader: self.group.member_status().1.leader,
            });
        }
        Ok(())
    }

    /// In a replicated group: confirms this node leads before a read of local metadata.
    pub(crate) async fn read_barrier(&self) -> Result<(), ControllerError> {
        if self.member.is_some() {
            self.group.read_barrier().await?;
        }
        Ok(())
    }

    /// Creates a system topic (`%DLQ%…` or `%RETRY%…`), which the public API refuses.
    pub async fn create_system_topic(
        &self,
        spec: TopicSpec,
    ) -> Result<TopicConfig, ControllerError> {
        validate_topic_spec(&spec, true)?;
        self.propose_topic(spec).await
    }

    /// Snapshots the metadata and purges the Raft log up to it. Returns the log index the
    /// snapshot covers, `None` when nothing was applied yet. Snapshots also happen on their own
    /// every 1000 entries; this is for operators and tests.
    pub async fn compact_log(&self) -> Result<Option<u64>, ControllerError> {
        self.group.compact().await
    }

    /// Stops the Raft group and closes the log. Later calls return `Unavailable`. Idempotent.
    pub async fn shutdown(&self) -> Result<(), ControllerShutdownError> {
        let mut stopped = self.stopped.lock().await;
        if *stopped {
            return Ok(());
        }
        *stopped = true;
        self.group.shutdown().await?;
        tracing::info!("controller stopped");
        Ok(())
    }

    async fn propose_topic(&self, spec: TopicSpec) -> Result<TopicConfig, ControllerError> {
        self.refuse_topic_being_deleted(&spec.name)?;
        self.shard_set_recorded().await?;
        let command = ControllerCommand::CreateTopic {
            spec,
            now_ms: self.clock.now_ms(),
        };
        match self.group.propose(command).await? {
            Ok(Applied::Topic(config)) => Ok(config),
            other => Err(unexpected("create-topic", &other)),
        }
    }
}

impl Controller {
    /// Refused at apply too; answered here first so producers to a topic whose deletion is
    /// not finished (auto-creating it at each send) write nothing to the log.
    /// A member that does not lead answers `NotLeader` instead (its state may be behind).
    fn refuse_topic_being_deleted(&self, name: &TopicName) -> Result<(), ControllerError> {
        self.require_leading()?;
        if self.metadata.read().topic_being_deleted(name) {
            return Err(crate::command::Rejected::TopicDropping(name.clone()).into());
        }
        Ok(())
    }
}

/// The sealer of the configured metadata key file, created when there is none.
fn open_sealer(cfg: &ControllerConfig) -> Result<crate::secrets::Sealer, ControllerOpenError> {
    let path = cfg.metadata_key_path();
    crate::secrets::Sealer::load_or_create(&path)
        .map_err(|source| ControllerOpenError::MetadataKey { path, source })
}

/// Turns an apply outcome that is not the expected success into the caller's error.
pub(crate) fn unexpected(
    command: &str,
    outcome: &crate::command::ControllerResponse,
) -> ControllerError {
    match outcome {
        Err(rejected) => rejected.clone().into(),
        Ok(applied) => ControllerError::Internal(format!("{command} was applied as {applied:?}")),
    }
}

// Reads are served from the local applied state. With a single voter that is linearizable enough:
// every acknowledged write is applied here before `client_write` returns. A replicated member first
// confirms its leadership and waits for the read index (`read_barrier`), so a deposed leader
// cannot serve stale metadata; a follower answers `NotLeader`.
#[async_trait]
impl ControllerApi for Controller {
    async fn create_topic(&self, spec: TopicSpec) -> Result<TopicConfig, ControllerError> {
        validate_topic_spec(&spec, false)?;
        self.propose_topic(spec).await
    }

    async fn create_topic_replicated(
        &self,
        spec: TopicSpec,
        replicas: u32,
    ) -> Result<TopicConfig, ControllerError> {
        validate_topic_spec(&spec, false)?;
        self.refuse_topic_being_deleted(&spec.name)?;
        self.shard_set_recorded().await?;
        let placed_before = self.metadata.read().placed().len();
        let command = ControllerCommand::CreateTopicReplicated {
            spec,
            replicas,
            stores: self.stores().into_keys().collect(),
            now_ms: self.clock.now_ms(),
        };
        let config = match self.group.propose(command).await? {
            Ok(Applied::Topic(config)) => config,
            other => return Err(unexpected("create-topic", &other)),
        };
        if self.metadata.read().placed().len() != placed_before {
            // A permit is kept if the reconciler is busy: it looks again at once.
            self.placed_changed.notify_one();
        }
        Ok(config)
    }

    async fn drain_store(&self, store: u64) -> Result<StoreDrain, ControllerError> {
        self.drain_store_now(store).await
    }

    async fn delete_topic(&self, name: &TopicName) -> Result<TopicDrop, ControllerError> {
        match self
            .group
            .propose(ControllerCommand::DeleteTopicDropping {
                name: name.clone(),
                now_ms: self.clock.now_ms(),
            })
            .await?
        {
            Ok(Applied::TopicDropping(drop)) => Ok(drop),
            other => Err(unexpected("delete-topic", &other)),
        }
    }

    async fn finish_topic_drop(&self, name: &TopicName, id: u64) -> Result<(), ControllerError> {
        if id == 0 {
            // No drop has it (a proxy asking whether the leader records drops): nothing to
            // write, but answered by the leader only.
            return self.read_barrier().await;
        }
        match self
            .group
            .propose(ControllerCommand::FinishTopicDrop {
                name: name.clone(),
                id,
            })
            .await?
        {
            Ok(Applied::TopicDropFinished(_)) => Ok(()),
            other => Err(unexpected("finish-topic-drop", &other)),
        }
    }

    async fn set_topic_retention(
        &self,
        name: &TopicName,
        retention_ms: Option<u64>,
    ) -> Result<TopicConfig, ControllerError> {
        if let Some(ms) = retention_ms {
            vela_proto::domain::check_topic_retention(ms).map_err(ControllerError::Invalid)?;
        }
        match self
            .group
            .propose(ControllerCommand::SetTopicRetentionRevised {
                name: name.clone(),
                retention_ms,
                now_ms: self.clock.now_ms(),
            })
            .await?
        {
            Ok(Applied::Topic(topic)) => Ok(topic),
            other => Err(unexpected("set-topic-retention", &other)),
        }
    }

    async fn get_topic(&self, name: &TopicName) -> Result<Option<TopicConfig>, ControllerError> {
        self.read_barrier().await?;
        Ok(self.metadata.read().topic(name).cloned())
    }

    async fn list_topics(&self) -> Result<Vec<TopicConfig>, ControllerError> {
        self.read_barrier().await?;
        Ok(self.metadata.read().topics().cloned().collect())
    }

    async fn create_group(&self, spec: GroupSpec) -> Result<GroupConfig, ControllerError> {
        let spec = resolve_group_spec(spec)?;
        // Refused at apply too; answered here first so consumers of a group whose deletion is
        // not finished (auto-creating it at each call) write nothing to the log. A member that
        // does not lead answers `NotLeader` instead (its state may be behind).
        self.require_leading()?;
        if self.metadata.read().group_being_deleted(&spec.name) {
            return Err(crate::command::Rejected::GroupDropping(spec.name).into());
        }
        let command = ControllerCommand::create_group(spec, self.clock.now_ms());
        match self.group.propose(command).await? {
            Ok(Applied::Group(config)) => Ok(config),
            other => Err(unexpected("create-group", &other)),
        }
    }

    async fn update_group(
        &self,
        name: &GroupName,
        update: vela_proto::GroupUpdate,
    ) -> Result<GroupConfig, ControllerError> {
        crate::validation::validate_group_update(name, &update)?;
        let command = ControllerCommand::UpdateGroup {
            name: name.clone(),
            max_attempts: update.max_attempts,
            retry: update.retry,
        };
        match self.group.propose(command).await? {
            Ok(Applied::Group(config)) => Ok(config),
            other => Err(unexpected("update-group", &other)),
        }
    }

    async fn delete_group(&self, name: &GroupName) -> Result<GroupDrop, ControllerError> {
        match self
            .group
            .propose(ControllerCommand::DeleteGroupDropping {
                name: name.clone(),
                now_ms: self.clock.now_ms(),
            })
            .await?
        {
            Ok(Applied::GroupDropping(drop)) => Ok(drop),
            other => Err(unexpected("delete-group", &other)),
        }
    }

    async fn pending_deletions(&self) -> Result<Vec<PendingDeletion>, ControllerError> {
        self.read_barrier().await?;
        let metadata = self.metadata.read();
        let topics = metadata
            .pending_drops()
            .into_iter()
            .map(|(name, drop)| PendingDeletion {
                kind: DeletionKind::Topic,
                name: name.to_string(),
                id: drop.id,
                shards: drop.shards,
            });
        let groups = metadata
            .pending_group_drops()
            .into_iter()
            .map(|(name, drop)| PendingDeletion {
                kind: DeletionKind::Group,
                name: name.to_string(),
                id: drop.drop.id,
                shards: drop.shards,
            });
        Ok(topics.chain(groups).collect())
    }

    async fn finish_group_drop(&self, name: &GroupName, id: u64) -> Result<(), ControllerError> {
        if id == 0 {
            // No drop has it (a proxy asking whether the leader records drops): nothing to
            // write, but answered by the leader only.
            return self.read_barrier().await;
        }
        match self
            .group
            .propose(ControllerCommand::FinishGroupDrop {
                name: name.clone(),
                id,
            })
            .await?
        {
            Ok(Applied::GroupDropFinished(_)) => Ok(()),
            other => Err(unexpected("finish-group-drop", &other)),
        }
    }

    async fn get_group(&self, name: &GroupName) -> Result<Option<GroupConfig>, ControllerError> {
        self.read_barrier().await?;
        Ok(self.metadata.read().group(name).cloned())
    }

    async fn list_groups(&self) -> Result<Vec<GroupConfig>, ControllerError> {
        self.read_barrier().await?;
        Ok(self.metadata.read().groups().cloned().collect())
    }

    async fn ensure_dead_letter_topic(
        &self,
        group: &GroupName,
    ) -> Result<TopicConfig, ControllerError> {
        let name = group.dead_letter_topic();
        if let Some(topic) = self.get_topic(&name).await? {
            return Ok(topic);
        }
        if self.get_group(group).await?.is_none() {
            return Err(ControllerError::NotFound(format!("consumer group {group}")));
        }
        let spec = TopicSpec {
            name: name.clone(),
            topic_type: TopicType::Normal,
            queue_count: 1,
            auto_created: true,
        };
        match self.create_system_topic(spec).await {
            Ok(topic) => Ok(topic),
            Err(ControllerError::AlreadyExists(_)) => self
                .get_topic(&name)
                .await?
                .ok_or_else(|| ControllerError::NotFound(format!("topic {name}"))),
            Err(e) => Err(e),
        }
    }

    async fn proxy_heartbeat(&self, beat: &ProxyBeat) -> Result<(), ControllerError> {
        self.require_leading()?;
        let too_long = |a: &str| a.len() > 256;
        if beat.addr.is_empty()
            || too_long(&beat.addr)
            || beat.admin_addr.as_deref().is_some_and(too_long)
        {
            return Err(ControllerError::Invalid(
                "a proxy heartbeat needs the proxy's address (at most 256 bytes)".into(),
            ));
        }
        let now = std::time::Instant::now();
        let mut proxies = self.proxies.lock();
        proxies.retain(|_, heard| now.duration_since(heard.seen) < PROXY_EXPIRY);
        proxies.insert(
            beat.addr.clone(),
            HeardProxy {
                version: beat.version.chars().take(64).collect(),
                admin_addr: beat.admin_addr.clone().filter(|a| !a.is_empty()),
                seen: now,
            },
        );
        Ok(())
    }

    async fn proxies(&self) -> Result<Vec<ProxySeen>, ControllerError> {
        self.require_leading()?;
        let now = std::time::Instant::now();
        let mut proxies = self.proxies.lock();
        proxies.retain(|_, heard| now.duration_since(heard.seen) < PROXY_EXPIRY);
        Ok(proxies
            .iter()
            .map(|(addr, heard)| ProxySeen {
                addr: addr.clone(),
                version: heard.version.clone(),
                last_seen_ms: u64::try_from(now.duration_since(heard.seen).as_millis())
                    .unwrap_or(u64::MAX),
                admin_addr: heard.admin_addr.clone(),
            })
            .collect())
    }

    async fn register_store(&self, id: u64, addr: &str) -> Result<(), ControllerError> {
        self.register_store_now(id, addr).await
    }

    async fn scale_stores(
        &self,
        replicas: u32,
    ) -> Result<vela_proto::controller_api::StoreScale, ControllerError> {
        self.scale_stores_now(replicas).await
    }

    async fn remove_store(&self, id: u64) -> Result<(), ControllerError> {
        self.remove_store_now(id).await
    }

    async fn undrain_store(&self, id: u64) -> Result<(), ControllerError> {
        self.undrain_store_now(id).await
    }

    async fn store_nodes(&self) -> Result<Vec<StoreNodeEntry>, ControllerError> {
        self.store_nodes_now().await
    }

    async fn create_user(&self, user: User) -> Result<UserInfo, ControllerError> {
        self.propose_create_user(user).await
    }

    async fn update_user(
        &self,
        name: &UserName,
        update: UserUpdate,
    ) -> Result<UserInfo, ControllerError> {
        self.propose_update_user(name, update).await
    }

    async fn delete_user(&self, name: &UserName) -> Result<(), ControllerError> {
        self.propose_delete_user(name).await
    }

    async fn put_acl(
        &self,
        subject: &Subject,
        entries: Vec<PolicyEntry>,
        create: bool,
    ) -> Result<Acl, ControllerError> {
        self.propose_put_acl(subject, entries, create).await
    }

    async fn delete_acl(
        &self,
        subject: &Subject,
        resources: &[ResourcePattern],
    ) -> Result<(), ControllerError> {
        self.propose_delete_acl(subject, resources).await
    }

    async fn create_route(&self, spec: RouteSpec) -> Result<RouteConfig, ControllerError> {
        self.propose_create_route(spec).await
    }

    async fn delete_route(&self, name: &RouteName) -> Result<(), ControllerError> {
        self.propose_delete_route(name).await
    }

    async fn set_route_paused(
        &self,
        name: &RouteName,
        paused: bool,
    ) -> Result<RouteConfig, ControllerError> {
        self.propose_route_paused(name, paused).await
    }

    async fn routes(&self) -> Result<Vec<RouteConfig>, ControllerError> {
        self.read_routes().await
    }

    async fn route_statuses(
        &self,
    ) -> Result<BTreeMap<RouteName, vela_proto::route::RouteStatus>, ControllerError> {
        self.require_leading()?;
        Ok(self.local_route_statuses())
    }

    async fn receipt_keys(&self) -> Result<vela_proto::receipt_keys::ManagedKeys, ControllerError> {
        self.read_receipt_keys().await
    }

    async fn rotate_receipt_key(
        &self,
    ) -> Result<vela_proto::receipt_keys::ManagedKeys, ControllerError> {
        self.rotate_receipt_keys().await
    }

    async fn retire_receipt_key(&self, id: u32, force: bool) -> Result<(), ControllerError> {
        self.retire_receipt_keys(id, force).await
    }

    async fn tier_credentials(
        &self,
    ) -> Result<Option<vela_proto::tier_credentials::ManagedTierCredentials>, ControllerError> {
        self.read_tier_credentials().await
    }

    async fn set_tier_credentials(
        &self,
        credentials: Option<vela_proto::tier_credentials::TierCredentials>,
    ) -> Result<Option<vela_proto::tier_credentials::ManagedTierCredentials>, ControllerError> {
        self.write_tier_credentials(credentials).await
    }

    async fn auth_data(&self) -> Result<AuthData, ControllerError> {
        self.read_auth_data().await
    }

    async fn node_status(&self) -> Vec<ControllerNodeReport> {
        let (node, status) = self.group.member_status();
        vec![NodeReport {
            node,
            addr: "in-process".to_owned(),
            report: Ok(status),
        }]
    }
}

//! The store node: [`Store`], this node's shards behind [`StoreApi`]. It opens the shards and
//! runs their background tasks; requests become Raft commands stamped with the leader's clock;
//! receives long-poll on applied state without writing to the log until something is
//! deliverable.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use openraft::async_runtime::WatchReceiver;
use openraft::network::{NetSnapshot, RaftNetworkFactory};
use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use vela_proto::clock::SharedClock;
use vela_proto::cluster_status::{NodeReport, StoreNodeReport};
use vela_proto::domain::{GroupName, OffsetTarget, QueueStats, ShardId, TopicName};
use vela_proto::receipt::ReceiptTicket;
use vela_proto::store_api::{
    AppendOutcome, AppendRequest, Delivery, PopRequest, PullRequest, Pulled, StoreApi, StoreError,
    TransactionCheck, TransactionCheckRequest, TransactionResolution,
};
use vela_raft::LogWriter;
use vela_raft::vfs::{StdVfs, Vfs};

use crate::command::{ApplyError, CommandResponse, DeliveryRef, StoreCommand, TransactionEnd};
use crate::config::StoreConfig;
use crate::error::{StoreOpenError, StoreShutdownError};
use crate::metrics::StoreMetrics;
use crate::shard::coalesce::AppendCoalescer;
use crate::shard::scrub::{self, ScrubOutcome, ScrubPolicy};
use crate::shard::tasks::{self, RetentionPolicy};
use crate::shard::transactions::CheckPolicy;
use crate::shard::{DamageFound, Shard, ShardRaft, ShardTypes, unexpected};
use upgrade::PeerBuilds;

/// Acknowledgements a shard holds waiting for an `Ack` entry; more wait for room
/// (backpressure) instead of growing the queue.
const MAX_QUEUED_ACKS: usize = 65_536;
/// Most acknowledgements one `Ack` entry carries.
const MAX_ACK_BATCH: usize = 1024;
/// `Ack` entries proposed concurrently per shard; while all are in flight, new acks queue up and
/// go out together in the next one.
const ACK_BATCHES_IN_FLIGHT: usize = 4;
/// How long shutdown waits for background tasks before it stops Raft under them.
const TASK_GRACE: Duration = Duration::from_secs(2);

struct PendingAck {
    delivery: DeliveryRef,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

struct LocalShard {
    shard: Arc<Shard>,
    acks: mpsc::Sender<PendingAck>,
    appends: Arc<AppendCoalescer>,
    /// Stops the shard's background tasks (a child of the store's).
    cancel: CancellationToken,
    /// The shard's background tasks (also in the store's set).
    tasks: tokio_util::task::TaskTracker,
}

/// The data plane of one node.
pub struct Store {
    config: StoreConfig,
    clock: SharedClock,
    /// The shards this node holds: replaced whole when one is added (readers take a copy of
    /// the map, never a lock across an await).
    shards: parking_lot::RwLock<Arc<BTreeMap<ShardId, Arc<LocalShard>>>>,
    cancel: CancellationToken,
    tasks: Mutex<JoinSet<()>>,
    /// Which shard an all-shard receive asks first, so shards are served in turn.
    pop_turn: AtomicUsize,
    /// Shards are replicated groups: this node serves what it leads.
    replicated: bool,
    /// How replicated shards open (`None` for single voters).
    replication: Option<Replication>,
    /// Serializes runtime opens of shards.
    opening: tokio::sync::Mutex<()>,
    /// The index files of detached replicas that something still holds (a copy streaming to
    /// another member): the replica is not opened again until they are closed.
    closing: Mutex<BTreeMap<ShardId, std::sync::Weak<crate::index_db::IndexDb>>>,
    /// Where a shard's scheduled scrub reports damage (see `Store::set_aside_running`).
    damaged: crate::shard::DamageReports,
    vfs: Arc<dyn Vfs>,
    retention: RetentionPolicy,
    scrub_policy: ScrubPolicy,
    check_policy: CheckPolicy,
    metrics: Arc<StoreMetrics>,
    /// Whether the data disk is too full to take sends (`disk`).
    disk: disk::DiskGuard,
    /// Whether the node is saturated: the shards' fairness caps apply only then.
    saturation: Arc<crate::shard::saturation::Saturation>,
    /// Object storage sealed segments go to, once attached (`Store::attach_tier`).
    tier: std::sync::OnceLock<(Arc<vela_tier::Tier>, crate::shard::tiering::TierPolicy)>,
    /// Makes the store's spans of traced messages, once set (`Store::set_tracer`).
    tracer: std::sync::OnceLock<vela_telemetry::traces::MessageTracer>,
}

/// Opens a replica of a shard: its id, its members (node id → Raft address), whether to
/// create the group on an empty log.
type OpenMember = Arc<
    dyn Fn(
            ShardId,
            BTreeMap<u64, String>,
            bool,
        ) -> futures::future::BoxFuture<'static, Result<Arc<Shard>, StoreOpenError>>
        + Send
        + Sync,
>;

/// What a store of replicated shards needs to open and upgrade them.
struct Replication {
    open: OpenMember,
    builds: Arc<dyn PeerBuilds>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.config.data_dir)
            .field("shards", &self.shards().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The one thread every shard log of this node writes through (ADR 0009).
fn node_log_writer() -> Result<LogWriter<ShardTypes>, StoreOpenError> {
    LogWriter::spawn("vela-log-writer")
        .map_err(|e| StoreOpenError::Config(format!("log writer thread: {e}")))
}

impl Store {
    /// Opens (or creates) every shard of `cfg.shards` under `cfg.data_dir` and starts their
    /// background tasks. Returns once every shard is ready to serve.
    pub async fn open(cfg: StoreConfig, clock: SharedClock) -> Result<Arc<Store>, StoreOpenError> {
        Self::open_on(cfg, clock, StdVfs::shared()).await
    }

    /// [`open`](Self::open) with every file going through `vfs` (the power-loss tests run the
    /// store on a simulated disk).
    pub async fn open_on(
        cfg: StoreConfig,
        clock: SharedClock,
        vfs: Arc<dyn Vfs>,
    ) -> Result<Arc<Store>, StoreOpenError> {
        let shard_cfg = cfg.clone();
        let shard_vfs = vfs.clone();
        let writer = node_log_writer()?;
        Self::open_with(cfg, clock, vfs, None, move |id| {
            let (cfg, vfs, writer) = (shard_cfg.clone(), shard_vfs.clone(), writer.clone());
            async move { Shard::open(&cfg, id, vfs, &writer).await }
        })
        .await
    }

    /// Opens the store as one replica of every shard, each an openraft group over `voters`
    /// (node id → Raft address; it names `cfg.node_id`); `network(shard)` is how this node reaches
    /// the shard's other replicas. Returns once the shards are open, before any leader is elected; the leader of a
    /// shard serves its writes, the others answer them with [`StoreError::NotLeader`]. Shards
    /// with an empty log create their group only when `initialize` (the cluster's first start).
    /// A shard's leader raises its apply semantics only as far as every member's build goes,
    /// which it learns from `builds` (see [`upgrade`]). A replica sent a snapshot from another
    /// member copies the retained log and index the snapshot needs through `source` (ADR 0014).
    #[allow(clippy::too_many_arguments)]
    pub async fn open_replicated<N, F>(
        cfg: StoreConfig,
        clock: SharedClock,
        vfs: Arc<dyn Vfs>,
        voters: BTreeMap<u64, String>,
        network: F,
        initialize: bool,
        builds: Arc<dyn PeerBuilds>,
        source: Arc<dyn crate::ReplicaSource>,
    ) -> Result<Arc<Store>, StoreOpenError>
    where
        F: Fn(ShardId) -> N + Send + Sync + 'static,
        N: RaftNetworkFactory<ShardTypes> + Send + 'static,
        N::Network: NetSnapshot<ShardTypes, SnapshotData = Vec<u8>>,
    {
        let configured: std::collections::BTreeSet<ShardId> = cfg.shards.iter().copied().collect();
        // A node that joined at runtime holds no configured shard (only placed ones).
        if !cfg.shards.is_empty() && !voters.contains_key(&cfg.node_id) {
            return Err(StoreOpenError::Config(format!(
                "node_id {} is not one of the shard replicas {:?}",
                cfg.node_id,
                voters.keys().collect::<Vec<_>>()
            )));
        }
        let (shard_cfg, shard_vfs) = (cfg.clone(), vfs.clone());
        let writer = node_log_writer()?;
        let open: OpenMember = Arc::new(move |id, voters, initialize| {
            let (cfg, vfs, network) = (shard_cfg.clone(), shard_vfs.clone(), network(id));
            let (source, writer) = (source.clone(), writer.clone());
            Box::pin(async move {
                Shard::open_member(&cfg, id, vfs, &writer, &voters, network, source, initialize)
                    .await
            })
        });
        let replication = Replication {
            open: open.clone(),
            builds,
        };
        // The configured shards are replicated over every store of the cluster; shards placed
        // at runtime reopen from their logs (the members are in the log).
        Self::open_with(cfg, clock, vfs, Some(replication), move |id| {
            open(id, voters.clone(), initialize && configured.contains(&id))
        })
        .await
    }

    async fn open_with<F, Fut>(
        cfg: StoreConfig,
        clock: SharedClock,
        vfs: Arc<dyn Vfs>,
        replication: Option<Replication>,
        open_shard: F,
    ) -> Result<Arc<Store>, StoreOpenError>
    where
        F: Fn(ShardId) -> Fut,
        Fut: std::future::Future<Output = Result<Arc<Shard>, StoreOpenError>>,
    {
        let replicated = replication.is_some();
        if !(cfg.disk_full_ratio > 0.0 && cfg.disk_full_ratio <= 1.0) {
            return Err(StoreOpenError::Config(format!(
                "disk_full_ratio {} is outside (0, 1]",
                cfg.disk_full_ratio
            )));
        }
        if cfg.shards.is_empty() && !replicated {
            return Err(StoreOpenError::Config(
                "shards is empty: a store holds at least one shard".into(),
            ));
        }
        let ids = {
            let (vfs, dir, shards) = (vfs.clone(), cfg.data_dir.clone(), cfg.shards.clone());
            tokio::task::spawn_blocking(move || {
                crate::format::check_or_init(vfs.as_ref(), &dir, &shards)?;
                reopen::shards_to_open(vfs.as_ref(), &dir, &shards)
            })
            .await
            .map_err(|e| StoreOpenError::Config(format!("format check: {e}")))??
        };
        let (damaged, mut damage_reports) = mpsc::unbounded_channel();
        let store = Arc::new(Store {
            damaged,
            scrub_policy: ScrubPolicy {
                interval: (!cfg.scrub_interval.is_zero()).then_some(cfg.scrub_interval),
                rate: cfg.scrub_rate.as_u64(),
                first_after: scrub::FIRST_SCRUB_AFTER,
            },
            retention: RetentionPolicy {
                time: cfg.retention_time,
                size: cfg.retention_size.map(|s| s.as_u64()),
            },
            check_policy: CheckPolicy {
                first: cfg.transaction_check_after,
                interval: cfg.transaction_check_interval,
                max_checks: cfg.transaction_check_max,
            },
            config: cfg,
            clock,
            vfs,
            shards: parking_lot::RwLock::default(),
            cancel: CancellationToken::new(),
            tasks: Mutex::new(JoinSet::new()),
            pop_turn: AtomicUsize::new(0),
            replicated,
            replication,
            opening: tokio::sync::Mutex::new(()),
            closing: Mutex::default(),
            metrics: Arc::new(StoreMetrics::default()),
            tier: std::sync::OnceLock::new(),
            disk: disk::DiskGuard::default(),
            saturation: Arc::default(),
            tracer: std::sync::OnceLock::new(),
        });
        store.check_disk_now();
        store
            .tasks
            .lock()
            .spawn(store.saturation.clone().measure(store.cancel.clone()));
        store.tasks.lock().spawn(disk::watch_disk(
            Arc::downgrade(&store),
            store.cancel.clone(),
        ));
        {
            let (weak, cancel) = (Arc::downgrade(&store), store.cancel.clone());
            store.tasks.lock().spawn(async move {
                loop {
                    let report = tokio::select! {
                        _ = cancel.cancelled() => return,
                        report = damage_reports.recv() => report,
                    };
                    let (Some((shard, found)), Some(store)) = (report, weak.upgrade()) else {
                        return;
                    };
                    if let Some(shard) = shard.upgrade() {
                        store.set_aside_running(&shard, found).await;
                    }
                }
            });
        }
        for id in ids {
            if store.shards().contains_key(&id) {
                continue;
            }
            let opened = match open_shard(id).await {
                // A replica raises the apply version when it leads (see `adopt`).
                Ok(shard) if replicated => Ok(shard),
                Ok(shard) => match upgrade::raise_to(&shard, crate::state::APPLY_VERSION).await {
                    Ok(()) => Ok(shard),
                    Err(err) => {
                        shard.close().await.ok();
                        Err(err)
                    }
                },
                Err(err) => Err(err),
            };
            match opened {
                Ok(shard) => store.adopt(shard),
                // A damaged replica (of a placed or, adopted, a configured shard, ADR 0032) is
                // left closed, and the node's other shards still open. The controller's next
                // open of it decides (it names the shard's members): set aside and replaced
                // when others can replace it.
                Err(err) if replicated && err.is_damage() => {
                    error!(shard = id, error = %err, "damaged replica not opened; the controller's next open replaces it from the other members");
                }
                Err(err) => {
                    store.cancel.cancel();
                    for local in store.shards().values() {
                        local.shard.close().await.ok();
                    }
                    return Err(err);
                }
            }
        }
        Ok(store)
    }

    /// Stops background tasks, Raft and the logs (flushing them). Idempotent.
    pub async fn shutdown(&self) -> Result<(), StoreShutdownError> {
        if self.replicated && !self.cancel.is_cancelled() {
            let handed = self.hand_over_leadership().await;
            if !handed.is_empty() {
                info!(?handed, "handed shard leadership over before stopping");
            }
        }
        self.halt().await
    }

    /// Stops like [`shutdown`](Self::shutdown) without handing leadership over first (what a
    /// crash leaves behind; tests that cut the power use it).
    pub async fn halt(&self) -> Result<(), StoreShutdownError> {
        self.cancel.cancel();
        // A shard being opened at runtime is served or closed before the shards are stopped.
        let _no_opens = self.opening.lock().await;
        for local in self.shards().values() {
            local.appends.close();
        }
        let mut tasks = std::mem::take(&mut *self.tasks.lock());
        // Tasks stop at their next wait. One may be inside a write that cannot commit (a replica
        // cut off from its majority): stopping Raft fails that write and frees the task.
        let drained = tokio::time::timeout(TASK_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !drained {
            info!("store tasks still writing at shutdown; stopping raft first");
            for local in self.shards().values() {
                if let Err(err) = local.shard.raft.shutdown().await {
                    warn!(shard = local.shard.id, error = %err, "stopping raft");
                }
            }
            while tasks.join_next().await.is_some() {}
        }
        let mut first_error = None;
        for local in self.shards().values() {
            if let Err(err) = local.shard.close().await {
                warn!(shard = local.shard.id, error = %err, "shard did not shut down cleanly");
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Scrubs every shard's sealed log segments now, unpaced (normally every
    /// `scrub_interval`), and returns, per shard, the damaged segments and what is wrong with
    /// each. The result is logged and counted as a scheduled scrub's is, and a damaged replica
    /// of a placed shard is set aside to be copied again from its peers, as after a scheduled
    /// scrub.
    pub async fn scrub(&self) -> Result<BTreeMap<ShardId, Vec<(PathBuf, String)>>, StoreError> {
        let mut found = BTreeMap::new();
        let mut damaged = Vec::new();
        for (id, local) in self.shards().iter() {
            match scrub::scrub_now(&local.shard, 0, &self.metrics, &self.cancel).await {
                ScrubOutcome::Done(report) => {
                    if !report.damaged.is_empty() {
                        damaged.push(local.shard.clone());
                    }
                    found.insert(*id, report.damaged);
                }
                ScrubOutcome::Failed(why) => {
                    return Err(StoreError::Internal(format!("scrub of shard {id}: {why}")));
                }
                ScrubOutcome::Stopped => {
                    return Err(StoreError::Unavailable("store is shutting down".into()));
                }
            }
        }
        for shard in &damaged {
            self.set_aside_running(shard, DamageFound::Scrub).await;
        }
        Ok(found)
    }

    /// The node this node believes leads `shard`, if it knows one.
    pub fn shard_leader(&self, shard: ShardId) -> Option<u64> {
        let local = self.shards().get(&shard)?.clone();
        local.shard.raft.metrics().borrow_watched().current_leader
    }

    /// The apply semantics `shard` runs on this node (`state::APPLY_VERSION` once raised).
    pub fn apply_version(&self, shard: ShardId) -> Option<u32> {
        let local = self.shards().get(&shard)?.clone();
        Some(local.shard.shared.applied.read().state.apply_version())
    }

    /// This node's Raft handle of every shard it holds (an in-process cluster registers them
    /// with its network).
    pub fn shard_rafts(&self) -> Vec<(ShardId, ShardRaft)> {
        self.shards()
            .iter()
            .map(|(id, local)| (*id, local.shard.raft.clone()))
            .collect()
    }

    /// The shards this node holds.
    pub fn shard_ids(&self) -> Vec<ShardId> {
        self.shards().keys().copied().collect()
    }

    /// Runs one retention pass on every shard now (normally every minute). Returns, per shard,
    /// the log index below which everything was removed, if anything was.
    pub async fn enforce_retention(&self) -> Result<BTreeMap<ShardId, Option<u64>>, StoreError> {
        let now = SystemTime::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(self.clock.now_ms()).unwrap_or(0));
        let policy = RetentionPolicy {
            time: self.config.retention_time,
            size: self.config.retention_size.map(|s| s.as_u64()),
        };
        let mut cuts = BTreeMap::new();
        for (id, local) in self.shards().iter() {
            cuts.insert(
                *id,
                tasks::enforce_retention(&local.shard, policy, now).await?,
            );
        }
        Ok(cuts)
    }

    /// Drops `group` (deletion `drop_id`, every group drop up to `floor` finished) from every
    /// shard.
    async fn drop_group_everywhere(
        &self,
        group: &GroupName,
        drop_id: u64,
        floor: u64,
    ) -> Result<(), StoreError> {
        for local in self.shards().values() {
            let command = scoped::group_drop_command(&local.shard, group, drop_id, floor);
            match local.shard.write(command.clone()).await? {
                CommandResponse::Dropped => {}
                other => return Err(unexpected(command.kind(), &other)),
            }
        }
        Ok(())
    }

    /// Takes a snapshot of every shard now (normally driven by `snapshot_every_entries`).
    pub async fn snapshot(&self) -> Result<(), StoreError> {
        for local in self.shards().values() {
            local.shard.snapshot_now().await?;
        }
        Ok(())
    }

    fn shards(&self) -> Arc<BTreeMap<ShardId, Arc<LocalShard>>> {
        self.shards.read().clone()
    }

    /// `Ok` when `node` names this node (a call meant for another node is refused).
    pub(crate) fn this_node(&self, node: u64) -> Result<(), StoreError> {
        if node == self.config.node_id {
            Ok(())
        } else {
            Err(StoreError::Invalid(format!(
                "store node {node} is not this node ({})",
                self.config.node_id
            )))
        }
    }

    /// The shard, if this node holds it. A replicated node that does not answers `NotLeader`
    /// without a hint, so a client looking for a placed shard tries the next node (ADR 0013).
    fn shard(&self, id: ShardId) -> Result<Arc<LocalShard>, StoreError> {
        self.shards().get(&id).cloned().ok_or_else(|| {
            if self.replicated {
                StoreError::NotLeader {
                    shard: id,
                    leader: None,
                }
            } else {
                StoreError::Invalid(format!("shard {id} is not held by this store node"))
            }
        })
    }

    /// Shards in the order this receive should ask them: all of them, or in a replicated store
    /// those this node leads (a follower's writes fail; `NotLeader` when it leads none).
    fn shards_in_turn(&self) -> Result<Vec<Arc<Shard>>, StoreError> {
        let held = self.shards();
        let mut shards: Vec<Arc<Shard>> = held
            .values()
            .map(|l| l.shard.clone())
            .filter(|s| !self.replicated || s.raft.is_leader())
            .collect();
        if shards.is_empty()
            && let Some((&shard, local)) = held.iter().next()
        {
            return Err(StoreError::NotLeader {
                shard,
                leader: local.shard.raft.metrics().borrow_watched().current_leader,
            });
        }
        let turn = self.pop_turn.fetch_add(1, Ordering::Relaxed) % shards.len().max(1);
        shards.rotate_left(turn);
        Ok(shards)
    }
}

pub(crate) use receive::Received;

/// Coalesces acknowledgements from concurrent callers into `Ack` entries.
async fn batch_acks(
    shard: Arc<Shard>,
    mut queue: mpsc::Receiver<PendingAck>,
    cancel: CancellationToken,
) {
    let in_flight = Arc::new(Semaphore::new(ACK_BATCHES_IN_FLIGHT));
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            next = queue.recv() => match next {
                Some(ack) => ack,
                None => return,
            },
        };
        // Wait for a slot before draining, so acks arriving meanwhile join this batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_ACK_BATCH {
            match queue.try_recv() {
                Ok(ack) => batch.push(ack),
                Err(_) => break,
            }
        }
        let shard = shard.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (deliveries, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|a| (a.delivery, a.reply)).unzip();
            match shard.write(StoreCommand::Ack { deliveries }).await {
                Ok(CommandResponse::Acked(results)) if results.len() == replies.len() => {
                    for (reply, result) in replies.into_iter().zip(results) {
                        reply.send(result.map_err(to_store_error)).ok();
                    }
                }
                Ok(other) => {
                    let err = unexpected("ack", &other);
                    for reply in replies {
                        reply.send(Err(err.clone())).ok();
                    }
                }
                Err(err) => {
                    for reply in replies {
                        reply.send(Err(err.clone())).ok();
                    }
                }
            }
        });
    }
}

fn to_store_error(err: ApplyError) -> StoreError {
    match err {
        ApplyError::StaleReceipt(what) => StoreError::StaleReceipt(what),
        ApplyError::TransactionNotFound(id) => StoreError::TransactionNotFound(id),
        ApplyError::MessageNotFound(handle) => StoreError::MessageNotFound(handle),
    }
}

fn delivery_ref(ticket: &ReceiptTicket) -> DeliveryRef {
    DeliveryRef {
        group: ticket.group.clone(),
        topic: ticket.topic.clone(),
        queue_id: ticket.queue_id,
        offset: ticket.offset,
        delivery_id: ticket.delivery_id,
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Store {
    /// What an append must satisfy before it queues: messages, and no delivery time beyond the
    /// maximum delay.
    fn check_append(&self, req: &AppendRequest) -> Result<(), StoreError> {
        if req.messages.is_empty() {
            return Err(StoreError::Invalid(format!(
                "append to {}/{} carries no messages",
                req.topic, req.queue_id
            )));
        }
        self.check_disk()?;
        let now_ms = self.clock.now_ms();
        let latest = now_ms
            .saturating_add(i64::try_from(self.config.max_delay.as_millis()).unwrap_or(i64::MAX));
        if let Some(m) = req
            .messages
            .iter()
            .find(|m| m.delivery_timestamp_ms.is_some_and(|t| t > latest))
        {
            return Err(StoreError::Invalid(format!(
                "message {} asks for delivery at {:?} ms, beyond the maximum delay of {:?}",
                m.message_id, m.delivery_timestamp_ms, self.config.max_delay
            )));
        }
        // A build before apply version 12 cannot decode a priority record: none is logged
        // until every replica runs one that can.
        if req
            .messages
            .iter()
            .any(|m| m.kind == vela_proto::MessageKind::Priority)
            && let Ok(local) = self.shard(req.shard)
        {
            let version = local.shard.shared.applied.read().state.apply_version();
            if version < PRIORITY_APPLY_VERSION {
                return Err(StoreError::Unavailable(format!(
                    "priority messages need apply version {PRIORITY_APPLY_VERSION}; shard {} \
                     runs {version} until every replica runs a build that knows it",
                    req.shard
                )));
            }
        }
        Ok(())
    }
}

/// The apply version from which the log may hold priority messages.
const PRIORITY_APPLY_VERSION: u32 = 12;

mod api;
mod damaged;
mod disk;
mod lookup;
mod members;
mod observe;
mod offsets;
mod pull;
mod receive;
mod reopen;
mod scoped;
mod shards;
mod spans;
pub(crate) mod tier;
pub mod upgrade;

#[cfg(test)]
mod power_loss;
#[cfg(test)]
mod tests;

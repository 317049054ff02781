//! One shard: an openraft group over a vela-raft segment log, its applied state, and the
//! signals that connect applies to waiting receivers and to the leader's background tasks.

pub(crate) mod broadcast;
pub(crate) mod catch_up;
pub(crate) mod coalesce;
pub(crate) mod fairness;
pub(crate) mod restoring;
pub(crate) mod saturation;
pub(crate) mod scrub;
mod snapshot_format;
mod state_machine;
pub(crate) mod tasks;
pub(crate) mod tiered;
pub mod tiering;
pub(crate) mod transactions;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::alias::EntryOf;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::network::{NetSnapshot, RaftNetworkFactory};
use openraft::{BasicNode, EntryPayload, SnapshotPolicy};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tracing::warn;
use vela_proto::domain::{GroupName, MessageRecord, ShardId, TopicName};
use vela_proto::store_api::StoreError;
use vela_raft::generations::{self, Generations, SnapshotKeeper};
use vela_raft::group::start_member;
use vela_raft::single_node::{StartError, default_config, start_single_voter};
use vela_raft::vfs::Vfs;
use vela_raft::{FlushMode, LogError, LogHandle, LogStoreConfig, LogWriter, SegmentLogStore};

use crate::command::{CommandResponse, RecordRef, StoreCommand};
use crate::config::{FlushSetting, StoreConfig};
use crate::error::{StoreOpenError, StoreShutdownError};
use crate::index_db::{IndexDb, IndexError};
use crate::state::{ApplyEffects, ScanMemo, ShardState};
use catch_up::ReplicaSource;
use snapshot_format::decode_snapshot;
pub(crate) use state_machine::Applied;
pub use state_machine::ShardStateMachine;

openraft::declare_raft_types!(
    /// openraft types of a store shard: the log carries [`StoreCommand`]s.
    pub ShardTypes:
        D = StoreCommand,
        R = CommandResponse,
);

/// A shard's Raft handle.
pub type ShardRaft = openraft::Raft<ShardTypes, ShardStateMachine>;

/// Long-poll wakeups per topic and consumer group. A waiter registers (`Notified::enable`)
/// before it checks the state, so a wake between check and wait is not lost. A wake releases
/// ONE waiting receiver of each group (`notify_one`); a receiver that then delivers something
/// passes the wake on to the next one of its group. So an append makes one receiver per group
/// propose a Pop, not every poller on the topic (which wrote a burst of empty Pops).
#[derive(Debug, Default)]
pub(crate) struct TopicWakeups {
    topics: Mutex<HashMap<TopicName, HashMap<GroupName, Arc<Notify>>>>,
}

/// Whether anyone besides the registry holds this wakeup (a receiver waiting or about to).
fn in_use(notify: &Arc<Notify>) -> bool {
    Arc::strong_count(notify) > 1
}

impl TopicWakeups {
    pub fn subscribe(&self, topic: &TopicName, group: &GroupName) -> Arc<Notify> {
        let mut topics = self.topics.lock();
        let groups = topics.entry(topic.clone()).or_default();
        groups
            .entry(group.clone())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Drops `key`'s entry on `topic` when nobody holds it any more: for keys that are not
    /// a group's (a pull's own), which would otherwise stay until the topic's next wake.
    pub fn forget(&self, topic: &TopicName, key: &GroupName) {
        let mut topics = self.topics.lock();
        if let Some(groups) = topics.get_mut(topic) {
            if groups.get(key).is_some_and(|notify| !in_use(notify)) {
                groups.remove(key);
            }
            if groups.is_empty() {
                topics.remove(topic);
            }
        }
    }

    fn wake(&self, topic: &TopicName) {
        let mut topics = self.topics.lock();
        if let Some(groups) = topics.get_mut(topic) {
            // Entries nobody holds have no waiter to wake; dropping them keeps the registry
            // bounded by the receivers actually waiting.
            groups.retain(|_, notify| in_use(notify));
            for notify in groups.values() {
                notify.notify_one();
            }
            if groups.is_empty() {
                topics.remove(topic);
            }
        }
    }

    fn wake_all(&self) {
        let mut topics = self.topics.lock();
        for groups in topics.values_mut() {
            groups.retain(|_, notify| in_use(notify));
            for notify in groups.values() {
                notify.notify_waiters();
            }
        }
        topics.retain(|_, groups| !groups.is_empty());
    }
}

#[cfg(test)]
mod wakeup_tests {
    use super::*;

    #[test]
    fn a_forgotten_key_goes_once_nobody_holds_it() {
        let wakeups = TopicWakeups::default();
        let topic = TopicName::new("t").expect("valid");
        let key = GroupName::new("vela-pull-1").expect("valid");
        let held = wakeups.subscribe(&topic, &key);
        wakeups.forget(&topic, &key);
        assert_eq!(wakeups.topics.lock().len(), 1, "still held: kept");
        drop(held);
        wakeups.forget(&topic, &key);
        assert!(wakeups.topics.lock().is_empty(), "nobody holds it: gone");
    }

    #[tokio::test]
    async fn a_wake_releases_one_waiter_per_group_and_unused_entries_go() {
        let wakeups = TopicWakeups::default();
        let topic = TopicName::new("t").expect("valid");
        let (g1, g2) = (
            GroupName::new("g1").expect("valid"),
            GroupName::new("g2").expect("valid"),
        );
        let a = wakeups.subscribe(&topic, &g1);
        let b = wakeups.subscribe(&topic, &g1);
        let c = wakeups.subscribe(&topic, &g2);
        let mut wa = Box::pin(a.notified());
        let mut wb = Box::pin(b.notified());
        let mut wc = Box::pin(c.notified());
        wa.as_mut().enable();
        wb.as_mut().enable();
        wc.as_mut().enable();
        wakeups.wake(&topic);
        let ready = |w: &mut std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>>| {
            futures::FutureExt::now_or_never(w.as_mut()).is_some()
        };
        assert!(ready(&mut wa), "first waiter of g1 is released");
        assert!(!ready(&mut wb), "second waiter of g1 keeps waiting");
        assert!(ready(&mut wc), "g2 has its own wake");
        drop((wa, wb, wc));
        drop((a, b, c));
        wakeups.wake(&topic);
        assert!(
            wakeups.topics.lock().is_empty(),
            "entries nobody holds are dropped"
        );
    }
}

/// What the state machine and the store share.
#[derive(Debug)]
pub(crate) struct ShardShared {
    pub shard: ShardId,
    pub applied: RwLock<Applied>,
    pub wakeups: TopicWakeups,
    /// The delay-timer set changed (a permit is kept, so the release task never misses one).
    pub timers_changed: Notify,
    /// Where the leader's receive planning got to per group, queue and filter (a hint).
    pub scan_memo: Mutex<ScanMemo>,
    /// The shard's queue index file (ADR 0008).
    pub index: Arc<IndexDb>,
    /// Message body bytes applied since the shard opened, and that count when the newest
    /// snapshot was copied (the snapshot task compares them).
    pub applied_bytes: std::sync::atomic::AtomicU64,
    pub snapshot_bytes: std::sync::atomic::AtomicU64,
    /// The applied state's apply version, readable without the lock (the append path asks it
    /// for every proposal). Set wherever the state changes.
    pub apply_version: std::sync::atomic::AtomicU32,
    /// When this node last served a receive of each broadcast instance (ms; leader-local, see
    /// `broadcast::forget_idle_instances`).
    pub broadcast_seen: Mutex<HashMap<GroupName, i64>>,
    /// Where the shard records how long its writes and snapshots take, once metrics are
    /// registered (`StoreMetrics::attach_shard`).
    pub timings: RwLock<Option<ShardTimings>>,
}

/// The histograms a shard records into, with its labels.
#[derive(Debug)]
pub(crate) struct ShardTimings {
    /// From proposing a command until it is committed and applied (on the leader).
    pub write_seconds: vela_telemetry::Histogram<f64>,
    /// Building a snapshot: the state copied, the index file made durable, the file written.
    pub snapshot_seconds: vela_telemetry::Histogram<f64>,
    pub attributes: Vec<vela_telemetry::KeyValue>,
}

impl ShardShared {
    /// Records one duration with `pick` of the shard's histograms, if metrics are registered.
    pub fn record_timing(
        &self,
        pick: fn(&ShardTimings) -> &vela_telemetry::Histogram<f64>,
        took: Duration,
    ) {
        if let Some(t) = self.timings.read().as_ref() {
            pick(t).record(took.as_secs_f64(), &t.attributes);
        }
    }
}

impl ShardShared {
    /// `history`: record message lookups and tracks ([`StoreConfig::message_index`]).
    pub fn new(
        shard: ShardId,
        index: Arc<IndexDb>,
        history: bool,
    ) -> Result<Arc<Self>, IndexError> {
        let mut state = ShardState::new(shard);
        state.entries_mut().attach(index.view()?);
        state.entries_mut().set_history(history);
        Ok(Arc::new(Self {
            shard,
            index,
            applied_bytes: Default::default(),
            snapshot_bytes: Default::default(),
            apply_version: std::sync::atomic::AtomicU32::new(state.apply_version()),
            applied: RwLock::new(Applied::new(state)),
            wakeups: TopicWakeups::default(),
            timers_changed: Notify::new(),
            scan_memo: Mutex::new(ScanMemo::default()),
            broadcast_seen: Mutex::new(HashMap::new()),
            timings: RwLock::new(None),
        }))
    }

    fn after_apply(&self, fx: ApplyEffects) {
        for topic in &fx.woken_topics {
            self.wakeups.wake(topic);
        }
        if fx.timers_changed {
            self.timers_changed.notify_one();
        }
    }

    fn state_replaced(&self) {
        // A new state may make anything deliverable or due.
        self.wakeups.wake_all();
        self.timers_changed.notify_one();
    }

    /// The apply version of the applied state (see [`ShardShared::apply_version`]).
    pub fn current_apply_version(&self) -> u32 {
        self.apply_version
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Index of the last applied entry (0 = none).
    pub fn last_applied_index(&self) -> u64 {
        self.applied.read().last_applied.map_or(0, |l| l.index)
    }
}

/// A shard as the store uses it.
pub(crate) struct Shard {
    pub id: ShardId,
    pub raft: ShardRaft,
    pub shared: Arc<ShardShared>,
    pub log: SegmentLogStore<ShardTypes>,
    pub reader: LogHandle<ShardTypes>,
    /// The snapshot generations (a copy to another replica checks what is kept).
    pub keeper: SnapshotKeeper<ShardTypes>,
    /// Appends to the shard yield to its consumer work (see `fairness`).
    pub fairness: Arc<fairness::Fairness>,
    /// The leader's transaction check-back schedules.
    pub checks: Mutex<transactions::CheckBook>,
    /// Object storage this node tiers sealed segments to and reads them back from (set when
    /// the store adopts the shard).
    pub tier: std::sync::OnceLock<Arc<vela_tier::Tier>>,
    /// Where tiering stands on this node.
    pub tier_progress: Mutex<tiering::TierProgress>,
}

fn log_config(cfg: &StoreConfig, dir: PathBuf, vfs: Arc<dyn Vfs>) -> LogStoreConfig {
    LogStoreConfig {
        dir,
        segment_bytes: cfg.segment_size.as_u64(),
        flush: match cfg.flush {
            FlushSetting::Sync => FlushMode::Sync,
            FlushSetting::Async { interval } => FlushMode::Async { interval },
        },
        cache_bytes: usize::try_from(cfg.log_cache.as_u64()).unwrap_or(usize::MAX),
        // The log holds the messages: only retention deletes segments (`compact_below`).
        compact_on_purge: false,
        preallocate_bytes: cfg.segment_preallocate.as_u64(),
        vfs,
    }
}

/// A read of delivered records that failed.
#[derive(Debug, thiserror::Error)]
#[error("reading log index {log_index} of shard {shard}: {source}")]
pub struct RecordReadError {
    pub shard: ShardId,
    pub log_index: u64,
    #[source]
    pub source: ReadSource,
}

/// Where a failed read went.
#[derive(Debug, thiserror::Error)]
pub enum ReadSource {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("from the tier: {0}")]
    Tier(Box<vela_tier::TierError>),
    #[error("the tier holds it, but this node has no tier configured")]
    NoTier,
}

impl RecordReadError {
    /// The record's bytes failed their checks (this replica's copy is damaged), rather than an
    /// I/O call failing. A damaged tiered object is not this replica's damage.
    pub fn is_damage(&self) -> bool {
        matches!(&self.source, ReadSource::Log(e) if e.is_damage())
    }
}

impl From<RecordReadError> for StoreError {
    fn from(err: RecordReadError) -> Self {
        match &err.source {
            // Object storage unreachable or slow: the client retries.
            ReadSource::Tier(tier)
                if matches!(
                    **tier,
                    vela_tier::TierError::Store { .. } | vela_tier::TierError::Shared(_)
                ) =>
            {
                StoreError::Unavailable(err.to_string())
            }
            _ => StoreError::Internal(err.to_string()),
        }
    }
}

/// How a running replica's damage was found; the store confirms it the same way before it
/// sets the replica aside (`Store::set_aside_running`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageFound {
    /// Its scrub found damaged sealed segments.
    Scrub,
    /// A read of this log index found the record's bytes damaged.
    Read { log_index: u64 },
}

/// Where a running replica's damage is reported.
pub(crate) type DamageReports =
    tokio::sync::mpsc::UnboundedSender<(std::sync::Weak<Shard>, DamageFound)>;

/// Opens what openraft stores a shard in, under `<data_dir>/shards/<id>/`: the newest readable
/// snapshot generation in `snapshots/` first, then the log in `log/`, checked against it (ADR
/// 0006), and a state machine, still empty, that continues from them.
async fn open_storage(
    cfg: &StoreConfig,
    id: ShardId,
    vfs: Arc<dyn Vfs>,
    writer: &LogWriter<ShardTypes>,
    source: Option<Arc<dyn ReplicaSource>>,
) -> Result<Storage, StoreOpenError> {
    let dir = cfg.data_dir.join("shards").join(id.to_string());
    let log_error = |source: LogError| StoreOpenError::Log { shard: id, source };
    let marked = {
        let (vfs, dir) = (vfs.clone(), dir.clone());
        tokio::task::spawn_blocking(move || restoring::is_marked(vfs.as_ref(), &dir))
            .await
            .map_err(|e| StoreOpenError::Config(format!("shard {id} directory: {e}")))?
            .map_err(|e| StoreOpenError::Config(format!("shard {id} directory: {e}")))?
    };
    if marked {
        return Err(StoreOpenError::Restoring {
            shard: id,
            dir: dir.display().to_string(),
        });
    }
    let (catch_up_vfs, catch_up_dir) = (vfs.clone(), dir.clone());
    let snapshots = {
        let (vfs, dir) = (vfs.clone(), dir.clone());
        tokio::task::spawn_blocking(move || read_snapshots(vfs, &dir))
            .await
            .map_err(|e| StoreOpenError::Config(format!("snapshot reader of shard {id}: {e}")))?
            .map_err(log_error)?
    };
    let (generations, newest) = snapshots;
    let snapshot_log_id = newest.as_ref().and_then(|g| g.value.0.last_log_id);
    let log = SegmentLogStore::<ShardTypes>::open_on(
        log_config(cfg, dir.join("log"), vfs.clone()),
        snapshot_log_id,
        writer,
    )
    .await
    .map_err(log_error)?;
    let keeper = SnapshotKeeper::new(generations, Some(log.clone())).map_err(log_error)?;
    let index = {
        let cache = usize::try_from(cfg.index_cache.as_u64()).unwrap_or(usize::MAX);
        let history = cfg.message_index;
        tokio::task::spawn_blocking(move || {
            vela_raft::vfs::create_dir_all(&*vfs, &dir)
                .map_err(|e| StoreOpenError::Config(format!("shard {id} directory: {e}")))?;
            let index = IndexDb::open(&vfs, &dir, cache)
                .map_err(|source| StoreOpenError::Index { shard: id, source })?;
            ShardShared::new(id, index, history)
                .map_err(|source| StoreOpenError::Index { shard: id, source })
        })
        .await
        .map_err(|e| StoreOpenError::Config(format!("index of shard {id}: {e}")))??
    };
    let shared = index;
    let catch_up = source.map(|source| CatchUp {
        node_id: cfg.node_id,
        source,
        log: log.clone(),
        vfs: catch_up_vfs,
        dir: catch_up_dir,
    });
    let sm = ShardStateMachine::new(shared.clone(), keeper.clone(), newest, catch_up);
    Ok(Storage {
        log,
        shared,
        keeper,
        sm,
    })
}

/// What [`open_storage`] opened.
struct Storage {
    log: SegmentLogStore<ShardTypes>,
    shared: Arc<ShardShared>,
    keeper: SnapshotKeeper<ShardTypes>,
    sm: ShardStateMachine,
}

/// How a replica of a replicated shard copies what a snapshot from another member needs
/// (`catch_up`).
pub(crate) struct CatchUp {
    pub node_id: u64,
    pub source: Arc<dyn ReplicaSource>,
    pub log: SegmentLogStore<ShardTypes>,
    /// The shard's directory (for the `restoring` mark).
    pub vfs: Arc<dyn Vfs>,
    pub dir: std::path::PathBuf,
}

type SnapshotRead = (
    Generations,
    Option<generations::Generation<(openraft::alias::SnapshotMetaOf<ShardTypes>, Vec<u8>)>>,
);

/// The shard's snapshot generations and the newest readable one.
fn read_snapshots(vfs: Arc<dyn Vfs>, dir: &std::path::Path) -> Result<SnapshotRead, LogError> {
    let generations = Generations::open(vfs, dir.join("snapshots"))?;
    let newest = generations.read_newest(|index, bytes| {
        decode_snapshot(index, bytes).map(|f| (f.meta, bytes.to_vec()))
    })?;
    Ok((generations, newest))
}

/// openraft's configuration of a shard's group.
fn raft_config(cfg: &StoreConfig, id: ShardId) -> openraft::Config {
    let mut raft_config = default_config(format!("vela-store-shard-{id}"));
    raft_config.snapshot_policy = SnapshotPolicy::LogsSinceLast(cfg.snapshot_every_entries.max(1));
    raft_config
}

/// openraft's configuration of a replicated shard: [`raft_config`] with elections fast enough
/// that traffic resumes within about two seconds of losing a leader (a follower waits 0.5–1 s
/// without heartbeats before it stands; heartbeats go every 100 ms), and Pre-Vote, so a replica
/// that was cut off does not depose a working leader when it returns. The leader accepts seeing
/// a follower's log go back and sends it the entries again: with `flush = async` a replica may
/// lose entries it acknowledged in a power cut (the risk of that mode: see the README), and
/// with `flush = sync` a follower whose last segment was cut short while it was down by as
/// little as the entries it had not yet learned were committed looks the same as one whose
/// last write tore (ADR 0014; anything more is found at open and the replica is set aside and
/// replaced, `node::damaged`). openraft's default panics the leader instead, which stops the
/// shard's writes on a healthy node because of another's disk. A leader that restarts never
/// resumes its term: it stands for election like any member (ADR 0010). openraft's default
/// lets it lead again at once in the same term; its log may then have lost entries its
/// followers hold durably (entries commit on the followers' fsyncs before the leader's own), and
/// it would write different entries under the same log ids, which Raft takes as identical.
fn member_config(cfg: &StoreConfig, id: ShardId) -> openraft::Config {
    openraft::Config {
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        enable_pre_vote: Some(true),
        enable_leader_restore: Some(false),
        allow_log_reversion: Some(true),
        ..raft_config(cfg, id)
    }
}

/// How long a forced snapshot may take before the caller gives up waiting.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60);

impl Shard {
    /// Opens the shard's log under `<data_dir>/shards/<id>/`, restores its state (snapshot, then
    /// the log after it) and returns once this node leads it.
    pub async fn open(
        cfg: &StoreConfig,
        id: ShardId,
        vfs: Arc<dyn Vfs>,
        writer: &LogWriter<ShardTypes>,
    ) -> Result<Arc<Shard>, StoreOpenError> {
        let Storage {
            log,
            shared,
            keeper,
            sm,
        } = open_storage(cfg, id, vfs, writer, None).await?;
        let started = start_single_voter(cfg.node_id, raft_config(cfg, id), log.clone(), sm).await;
        Self::started(id, started, log, shared, keeper).await
    }

    /// Opens the shard like [`open`](Self::open) as one member of a group replicated over
    /// `voters` (node id → Raft address; it names this node), reaching the others through `network`. Returns at
    /// once, leader or not: a follower's writes fail with [`StoreError::NotLeader`].
    #[allow(clippy::too_many_arguments)]
    pub async fn open_member<N>(
        cfg: &StoreConfig,
        id: ShardId,
        vfs: Arc<dyn Vfs>,
        writer: &LogWriter<ShardTypes>,
        voters: &BTreeMap<u64, String>,
        network: N,
        source: Arc<dyn ReplicaSource>,
        initialize: bool,
    ) -> Result<Arc<Shard>, StoreOpenError>
    where
        N: RaftNetworkFactory<ShardTypes>,
        N::Network: NetSnapshot<ShardTypes, SnapshotData = Vec<u8>>,
    {
        let Storage {
            log,
            shared,
            keeper,
            sm,
        } = open_storage(cfg, id, vfs, writer, Some(source)).await?;
        let voters = voters
            .iter()
            .map(|(&id, addr)| (id, BasicNode::new(addr.clone())))
            .collect();
        let started = start_member(
            cfg.node_id,
            voters,
            member_config(cfg, id),
            network,
            log.clone(),
            sm,
            initialize,
        )
        .await;
        Self::started(id, started, log, shared, keeper).await
    }

    async fn started(
        id: ShardId,
        started: Result<ShardRaft, StartError>,
        log: SegmentLogStore<ShardTypes>,
        shared: Arc<ShardShared>,
        keeper: SnapshotKeeper<ShardTypes>,
    ) -> Result<Arc<Shard>, StoreOpenError> {
        let raft = match started {
            Ok(raft) => raft,
            Err(source) => {
                // Raft stopped on a damaged record it read: the replica is damaged, whatever
                // openraft made of the error.
                let damage = log.damage_seen();
                if let Err(err) = log.shutdown().await {
                    warn!(shard = id, error = %err, "closing the log after a failed start");
                }
                if let Some(damage) = damage {
                    warn!(shard = id, error = %source, "raft stopped on a damaged log record");
                    return Err(StoreOpenError::Log {
                        shard: id,
                        source: damage,
                    });
                }
                return Err(StoreOpenError::Raft { shard: id, source });
            }
        };
        let reader = log.reader();
        Ok(Arc::new(Shard {
            id,
            raft,
            shared,
            log,
            reader,
            keeper,
            fairness: Arc::default(),
            checks: Mutex::default(),
            tier: std::sync::OnceLock::new(),
            tier_progress: Mutex::default(),
        }))
    }

    /// The messages `records` point at, in order; `None` where retention removed one. Each log
    /// entry is read once however many of the records it holds: an entry read from the files
    /// is decoded whole, and one `AppendBatch` holds many callers' messages. Entries the local
    /// log no longer holds are read from the tier.
    pub async fn read_records(
        &self,
        records: &[RecordRef],
    ) -> Result<Vec<Option<MessageRecord>>, RecordReadError> {
        let entries = self.entries_for(records).await?;
        Ok(pick(records, &entries, |command, slot| {
            command.record(slot).cloned()
        }))
    }

    /// [`read_records`](Self::read_records) from a blocking thread (`spawn_blocking`).
    pub fn read_records_blocking(
        &self,
        records: &[RecordRef],
    ) -> Result<Vec<Option<MessageRecord>>, RecordReadError> {
        let entries = self.entries_blocking(records)?;
        Ok(pick(records, &entries, |command, slot| {
            command.record(slot).cloned()
        }))
    }

    /// [`read_records`](Self::read_records) with the time the leader stamped on the entry
    /// that appended each (when it was stored, Unix ms).
    pub async fn read_stored(
        &self,
        records: &[RecordRef],
    ) -> Result<Vec<Option<(MessageRecord, i64)>>, RecordReadError> {
        let entries = self.entries_for(records).await?;
        Ok(pick(records, &entries, |command, slot| {
            Some((command.record(slot)?.clone(), command.now_ms()?))
        }))
    }

    /// Takes a snapshot now and waits until it covers everything applied so far (nothing to do
    /// before anything is applied).
    pub async fn snapshot_now(&self) -> Result<(), StoreError> {
        let Some(target) = self.shared.applied.read().last_applied.map(|l| l.index) else {
            return Ok(());
        };
        vela_raft::single_node::snapshot_covering(&self.raft, target, SNAPSHOT_WAIT)
            .await
            .map_err(|e| StoreError::Unavailable(format!("snapshot of shard {}: {e}", self.id)))
    }

    /// Writes what apply indexed since the last write to the index file, once Raft has
    /// stopped: replay would index the entries again, but not the leader's notes of which
    /// client a delivery went to (ADR 0028). A file ahead of the snapshot is harmless (ADR
    /// 0008); a failure only loses those notes.
    async fn flush_index_tail(&self) {
        let (parts, through) = {
            let applied = self.shared.applied.read();
            (
                applied.state.entries().unflushed(),
                applied.last_applied.map_or(0, |l| l.index),
            )
        };
        if parts.is_empty() {
            return;
        }
        let index = self.shared.index.clone();
        let written = tokio::task::spawn_blocking(move || {
            for part in &parts {
                index.write(&part.entries, &part.history, through)?;
            }
            index.make_durable()
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(shard = self.id, error = %err, "writing the index tail at close"),
            Err(err) => warn!(shard = self.id, error = %err, "writing the index tail at close"),
        }
    }

    /// Stops Raft, writes the index tail and closes the log (flushing it).
    pub async fn close(&self) -> Result<(), StoreShutdownError> {
        let raft = self
            .raft
            .shutdown()
            .await
            .map_err(|e| StoreShutdownError::Raft {
                shard: self.id,
                reason: e.to_string(),
            });
        self.flush_index_tail().await;
        // The log is closed (and its directory unlocked) whatever the Raft said.
        let log = self
            .log
            .shutdown()
            .await
            .map_err(|source| StoreShutdownError::Log {
                shard: self.id,
                source,
            });
        raft.and(log)
    }

    /// Proposes `command` and returns what applying it answered, once committed and applied.
    pub async fn write(&self, command: StoreCommand) -> Result<CommandResponse, StoreError> {
        let kind = command.kind();
        let started = std::time::Instant::now();
        let written = self.raft.client_write(command).await;
        self.shared
            .record_timing(|t| &t.write_seconds, started.elapsed());
        match written {
            Ok(response) => Ok(response.data),
            Err(err) => Err(self.map_write_error(kind, err)),
        }
    }

    pub(crate) fn map_write_error(
        &self,
        kind: &str,
        err: RaftError<ShardTypes, ClientWriteError<ShardTypes>>,
    ) -> StoreError {
        match err {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => StoreError::NotLeader {
                shard: self.id,
                leader: f.leader_id,
            },
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => {
                StoreError::Unavailable(format!(
                    "{kind} on shard {} lost its leader before commit (leader now {:?}); it may or may not apply",
                    self.id, f.leader_id
                ))
            }
            RaftError::APIError(other) => {
                StoreError::Internal(format!("{kind} on shard {} failed: {other}", self.id))
            }
            RaftError::Fatal(fatal) => StoreError::Unavailable(format!(
                "{kind} on shard {} failed: raft stopped: {fatal}",
                self.id
            )),
        }
    }
}

/// What `pick` takes from the entry each record points at.
fn pick<T>(
    records: &[RecordRef],
    entries: &HashMap<u64, Arc<EntryOf<ShardTypes>>>,
    pick: impl Fn(&StoreCommand, u32) -> Option<T>,
) -> Vec<Option<T>> {
    records
        .iter()
        .map(|record| {
            entries
                .get(&record.log_index)
                .and_then(|entry| match &entry.payload {
                    EntryPayload::Normal(command) => pick(command, record.slot),
                    _ => None,
                })
        })
        .collect()
}

/// A response of the wrong kind means the log and the code disagree: a bug, not bad input.
pub(crate) fn unexpected(kind: &str, response: &CommandResponse) -> StoreError {
    StoreError::Internal(format!("{kind} was answered with {response:?}"))
}

#[cfg(test)]
mod tests;

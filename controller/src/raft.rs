//! All of the controller's openraft code: the type configuration, the state machine and running
//! the group on vela-raft's log store. The rest of the crate never names an openraft type.

mod state_machine;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use openraft::errors::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::type_config::async_runtime::watch::WatchReceiver;
use openraft::{BasicNode, Raft, ReadPolicy, SnapshotPolicy};
use parking_lot::RwLock;
use vela_proto::ControllerError;
use vela_raft::generations::SnapshotKeeper;
use vela_raft::group;
use vela_raft::grpc::pb::raft_transport_server::RaftTransportServer;
use vela_raft::grpc::{ChannelPool, GrpcNetwork, RaftServer, RaftService};
use vela_raft::single_node::{self, StartError};
use vela_raft::vfs::{StdVfs, Vfs};
use vela_raft::{FlushMode, LogError, LogStoreConfig, SegmentLogStore};

use crate::command::{ControllerCommand, ControllerResponse};
use crate::metadata::Metadata;
pub use state_machine::MetadataStateMachine;
use state_machine::SnapshotData;

openraft::declare_raft_types!(
    /// The controller group's openraft types.
    pub ControllerTypeConfig:
        D = ControllerCommand,
        R = ControllerResponse,
);

type ControllerRaft = Raft<ControllerTypeConfig, MetadataStateMachine>;

/// The controller's Raft group id on the transport (a controller node holds one group). Not a
/// store shard's id, so a misaddressed request can never reach a shard's group.
const GROUP: u64 = u64::MAX;

/// Metadata changes are rare and small: small segments, every append fsynced.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
const CACHE_BYTES: usize = 4 * 1024 * 1024;
/// Snapshot after this many entries; the log is then purged up to the snapshot but this many
/// entries are kept, so a lagging follower can catch up from the log rather than a snapshot.
const SNAPSHOT_EVERY: u64 = 1000;
const KEEP_AFTER_SNAPSHOT: u64 = 100;
/// How long [`ControllerGroup::compact`] waits for the snapshot and the purge.
const COMPACT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the controller's Raft group could not start.
#[derive(Debug, thiserror::Error)]
pub enum RaftStartError {
    #[error("controller raft log at {dir} failed to open: {source}")]
    Log {
        dir: PathBuf,
        #[source]
        source: LogError,
    },
    #[error("controller raft group failed to start: {0}")]
    Start(#[from] StartError),
}

/// Why the controller's Raft group did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RaftStopError {
    #[error("controller raft core did not stop cleanly: {0}")]
    Raft(String),
    #[error("controller raft log did not close cleanly: {0}")]
    Log(#[from] LogError),
}

/// Opens what openraft stores the group in: the newest readable snapshot generation in
/// `snapshot_dir` (a legacy single snapshot file at `legacy_snapshot` becomes the first one),
/// the log in `log_dir` checked against it (ADR 0006), and a state machine, still empty, that
/// applies into `metadata`.
async fn open_storage(
    log_dir: PathBuf,
    snapshot_dir: PathBuf,
    legacy_snapshot: PathBuf,
    metadata: Arc<RwLock<Metadata>>,
) -> Result<(SegmentLogStore<ControllerTypeConfig>, MetadataStateMachine), RaftStartError> {
    let vfs: Arc<dyn Vfs> = StdVfs::shared();
    let log_error = |dir: &PathBuf| {
        let dir = dir.clone();
        move |source| RaftStartError::Log { dir, source }
    };
    let (generations, newest) = {
        let (vfs, dir, legacy) = (vfs.clone(), snapshot_dir.clone(), legacy_snapshot);
        tokio::task::spawn_blocking(move || state_machine::read_snapshots(vfs, dir, &legacy))
            .await
            .map_err(|e| RaftStartError::Log {
                dir: snapshot_dir.clone(),
                source: LogError::io(
                    "joining the snapshot reader of",
                    &snapshot_dir,
                    std::io::Error::other(e),
                ),
            })?
            .map_err(log_error(&snapshot_dir))?
    };
    let log = SegmentLogStore::open_for_snapshot(
        LogStoreConfig {
            dir: log_dir.clone(),
            segment_bytes: SEGMENT_BYTES,
            flush: FlushMode::Sync,
            cache_bytes: CACHE_BYTES,
            // The snapshot holds the whole metadata: purged entries can go.
            compact_on_purge: true,
            preallocate_bytes: vela_raft::DEFAULT_PREALLOCATE_BYTES,
            vfs,
        },
        newest.as_ref().and_then(|g| g.value.meta.last_log_id),
    )
    .await
    .map_err(log_error(&log_dir))?;
    let keeper =
        SnapshotKeeper::new(generations, Some(log.clone())).map_err(log_error(&log_dir))?;
    Ok((log, MetadataStateMachine::new(metadata, keeper, newest)))
}

/// The controller's openraft group: a single voter for now (the cluster adds voters and a network).
pub(crate) struct ControllerGroup {
    raft: ControllerRaft,
    log: SegmentLogStore<ControllerTypeConfig>,
}

impl ControllerGroup {
    /// Opens the log in `<data_dir>/log`, keeps snapshots in `<data_dir>/snapshots` and starts
    /// the group as its only voter. Applied state lands in `metadata`. Returns once this node
    /// leads.
    pub(crate) async fn start(
        node_id: u64,
        data_dir: &std::path::Path,
        metadata: Arc<RwLock<Metadata>>,
    ) -> Result<Self, RaftStartError> {
        let (log, state_machine) = open_storage(
            data_dir.join("log"),
            data_dir.join("snapshots"),
            data_dir.join("metadata.snapshot"),
            metadata,
        )
        .await?;

        let mut config = single_node::default_config("vela-controller");
        config.snapshot_policy = SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY);
        config.max_in_snapshot_log_to_keep = KEEP_AFTER_SNAPSHOT;

        let started =
            single_node::start_single_voter(node_id, config, log.clone(), state_machine).await;
        match started {
            Ok(raft) => Ok(Self { raft, log }),
            Err(err) => {
                // The raft core is already stopped; release the log directory lock as well.
                if let Err(close) = log.shutdown().await {
                    tracing::warn!(error = %close, "closing the controller log after a failed start");
                }
                Err(err.into())
            }
        }
    }

    /// Opens the group's storage like [`start`](Self::start) and runs this node as one member
    /// of a group over `voters` (node id → Raft address), reaching the others over gRPC. A
    /// fresh log initializes the membership. Returns at once, leader or not.
    pub(crate) async fn start_member(
        node_id: u64,
        data_dir: &std::path::Path,
        metadata: Arc<RwLock<Metadata>>,
        voters: &BTreeMap<u64, String>,
        initialize: bool,
    ) -> Result<Self, RaftStartError> {
        let (log, state_machine) = open_storage(
            data_dir.join("log"),
            data_dir.join("snapshots"),
            data_dir.join("metadata.snapshot"),
            metadata,
        )
        .await?;
        let mut config = single_node::default_config("vela-controller");
        config.snapshot_policy = SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY);
        config.max_in_snapshot_log_to_keep = KEEP_AFTER_SNAPSHOT;
        config.heartbeat_interval = 100;
        config.election_timeout_min = 500;
        config.election_timeout_max = 1000;
        config.enable_pre_vote = Some(true);
        // A restarted leader stands for election: resuming its term could reuse log ids of
        // entries it lost and its followers hold (ADR 0010).
        config.enable_leader_restore = Some(false);
        let network = GrpcNetwork::<SnapshotData>::new(GROUP, node_id, ChannelPool::new());
        let members = voters
            .iter()
            .map(|(&id, addr)| (id, BasicNode::new(addr.clone())))
            .collect();
        let started = group::start_member(
            node_id,
            members,
            config,
            network,
            log.clone(),
            state_machine,
            initialize,
        )
        .await;
        match started {
            Ok(raft) => Ok(Self { raft, log }),
            Err(err) => {
                if let Err(close) = log.shutdown().await {
                    tracing::warn!(error = %close, "closing the controller log after a failed start");
                }
                Err(err.into())
            }
        }
    }

    /// The gRPC service through which the other members reach this one's Raft.
    pub(crate) fn raft_service(
        &self,
        node_id: u64,
    ) -> RaftTransportServer<RaftService<ControllerTypeConfig, MetadataStateMachine>> {
        let server = RaftServer::new(node_id);
        server.register(GROUP, self.raft.clone());
        server.service()
    }

    /// Whether this node leads the group now (its own view).
    pub(crate) fn is_leader(&self) -> bool {
        self.raft.is_leader()
    }

    /// This node's id in the group and what its member reports about itself.
    pub(crate) fn member_status(&self) -> (u64, vela_proto::cluster_status::MemberStatus) {
        let metrics = self.raft.metrics().borrow_watched().clone();
        (metrics.id, vela_raft::status::member_status(&metrics))
    }

    /// Waits until this node leads the group, or `timeout` passes.
    pub(crate) async fn wait_leading(&self, timeout: Duration) -> bool {
        self.raft
            .wait(Some(timeout))
            .metrics(
                |m| m.state == openraft::ServerState::Leader,
                "the controller node leads",
            )
            .await
            .is_ok()
    }

    /// Confirms this node still leads (a quorum answers) and has applied everything committed
    /// before the call, so a read of the local metadata is linearizable.
    pub(crate) async fn read_barrier(&self) -> Result<(), ControllerError> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(ControllerError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(err) => Err(ControllerError::Unavailable(format!(
                "confirming controller leadership: {err}"
            ))),
        }
    }

    /// Proposes `command` and waits until it is applied; the outcome is what apply decided.
    pub(crate) async fn propose(
        &self,
        command: ControllerCommand,
    ) -> Result<ControllerResponse, ControllerError> {
        let what = command.to_string();
        match self.raft.client_write(command).await {
            Ok(written) => Ok(written.response().clone()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ControllerError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(err) => {
                tracing::warn!(command = %what, error = %err, "controller write failed");
                Err(ControllerError::Unavailable(format!(
                    "controller write {what} failed: {err}"
                )))
            }
        }
    }

    /// Snapshots everything applied so far and purges the log up to the snapshot. Returns the
    /// index the snapshot covers (`None` for a log with nothing applied yet).
    pub(crate) async fn compact(&self) -> Result<Option<u64>, ControllerError> {
        let unavailable = |what: &str, err: &dyn std::fmt::Display| {
            ControllerError::Unavailable(format!(
                "controller log compaction failed to {what}: {err}"
            ))
        };
        // Asked of the state machine itself: the metrics may not show yet what a write that just
        // returned applied, and a snapshot "covering" that older index exists already.
        let applied = self
            .raft
            .with_state_machine(|sm: &mut MetadataStateMachine| {
                let applied = sm.last_applied();
                Box::pin(async move { applied })
            })
            .await
            .map_err(|e| unavailable("read the applied index", &e))?;
        let Some(applied) = applied else {
            return Ok(None);
        };
        single_node::snapshot_covering(&self.raft, applied.index, COMPACT_TIMEOUT)
            .await
            .map_err(|e| unavailable("build a snapshot", &e))?;
        self.raft
            .trigger()
            .purge_log(applied.index)
            .await
            .map_err(|e| unavailable("trigger a purge", &e))?;
        self.raft
            .wait(Some(COMPACT_TIMEOUT))
            .metrics(
                |m| m.purged.is_some_and(|p| p.index >= applied.index),
                "controller log purged up to the snapshot",
            )
            .await
            .map_err(|e| unavailable("purge the log", &e))?;
        Ok(Some(applied.index))
    }

    /// Stops the raft core, then closes the log. Safe to call more than once.
    pub(crate) async fn shutdown(&self) -> Result<(), RaftStopError> {
        let stopped = self
            .raft
            .shutdown()
            .await
            .map_err(|e| RaftStopError::Raft(e.to_string()));
        let closed = self.log.shutdown().await;
        stopped?;
        Ok(closed?)
    }
}

#[cfg(test)]
mod tests;

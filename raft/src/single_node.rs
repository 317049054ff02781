//! Running openraft with a single voter and no peers: the network that has nobody to talk to, the
//! recommended single-node `Config`, and the start routine that initializes membership only on a
//! fresh log and waits for leadership.

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::RaftStateMachine;
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{Config, OptionalSend, Raft, RaftTypeConfig, ServerState, SnapshotPolicy};

use crate::SegmentLogStore;
use crate::entry::LogTypes;

/// A network factory for a cluster of one: every RPC to another node fails as unreachable. A single
/// voter never sends one; the type exists because openraft requires a network.
///
/// `SD` is the state machine's snapshot data type, which openraft requires the network to match.
pub struct NoPeers<SD = ()> {
    _snapshot: PhantomData<fn() -> SD>,
}

impl<SD> NoPeers<SD> {
    pub fn new() -> Self {
        NoPeers {
            _snapshot: PhantomData,
        }
    }
}

impl<SD> Default for NoPeers<SD> {
    fn default() -> Self {
        Self::new()
    }
}

impl<SD> Clone for NoPeers<SD> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

/// The "connection" [`NoPeers`] hands out: it refuses every RPC.
pub struct NoPeerConnection<SD> {
    target: String,
    _snapshot: PhantomData<fn() -> SD>,
}

impl<SD> NoPeerConnection<SD> {
    fn unreachable<C: RaftTypeConfig>(&self) -> Unreachable<C> {
        Unreachable::from_string(format!(
            "node {} is not reachable: this raft group runs a single voter without peers",
            self.target
        ))
    }
}

impl<C, SD> RaftNetworkFactory<C> for NoPeers<SD>
where
    C: RaftTypeConfig,
    SD: OptionalSend + 'static,
{
    type Network = NoPeerConnection<SD>;

    async fn new_client(&mut self, target: C::NodeId, _node: &C::Node) -> Self::Network {
        NoPeerConnection {
            target: target.to_string(),
            _snapshot: PhantomData,
        }
    }
}

impl<C, SD> RaftNetworkV2<C> for NoPeerConnection<SD>
where
    C: RaftTypeConfig,
    SD: OptionalSend + 'static,
{
    type SnapshotData = SD;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<C>,
        _option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: VoteOf<C>,
        _snapshot: SnapshotOf<C, Self::SnapshotData>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        Err(StreamingError::Unreachable(self.unreachable()))
    }
}

/// Why [`start_single_voter`] failed.
#[derive(thiserror::Error, Debug)]
pub enum StartError {
    #[error("invalid raft config: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("raft node {node} failed to start: {reason}")]
    Fatal { node: String, reason: String },
    #[error("initializing single-voter membership of node {node} failed: {reason}")]
    Initialize { node: String, reason: String },
    #[error("raft node {node} did not become leader within {waited:?}: {reason}")]
    NotLeader {
        node: String,
        waited: Duration,
        reason: String,
    },
}

/// Recommended openraft config for a single node. Timeouts are generous because a shared, busy
/// machine must not make a lone leader lose its lease. `max_in_snapshot_log_to_keep` is `u64::MAX`
/// so openraft never purges by itself: the owner of the log decides retention and purges with
/// `raft.trigger().purge_log(index)`. Set `snapshot_policy` as the state machine needs (default
/// here: every 5000 entries).
pub fn default_config(cluster_name: impl Into<String>) -> Config {
    Config {
        cluster_name: cluster_name.into(),
        heartbeat_interval: 200,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(5000),
        max_in_snapshot_log_to_keep: u64::MAX,
        ..Config::default()
    }
}

/// Starts openraft with node `node_id` as the only voter (`C::Node::default()` as its node
/// data). See [`start_single_voter_with_node`].
pub async fn start_single_voter<C, SM>(
    node_id: C::NodeId,
    config: Config,
    log: SegmentLogStore<C>,
    sm: SM,
) -> Result<Raft<C, SM>, StartError>
where
    C: LogTypes,
    SM: RaftStateMachine<C>,
{
    start_single_voter_with_node(node_id, C::Node::default(), config, log, sm).await
}

/// Starts openraft with one voter. Membership is initialized only when the log and vote are fresh,
/// so restarting on the same data resumes the existing group. Returns once this node is leader;
/// on timeout the node is shut down and [`StartError::NotLeader`] returned.
pub async fn start_single_voter_with_node<C, SM>(
    node_id: C::NodeId,
    node: C::Node,
    config: Config,
    log: SegmentLogStore<C>,
    sm: SM,
) -> Result<Raft<C, SM>, StartError>
where
    C: LogTypes,
    SM: RaftStateMachine<C>,
{
    let config = Arc::new(config.validate()?);
    let waited = Duration::from_millis(config.election_timeout_max.saturating_mul(10))
        .max(Duration::from_secs(10));
    let fatal = |e: &dyn std::fmt::Display| StartError::Fatal {
        node: node_id.to_string(),
        reason: e.to_string(),
    };
    let raft = Raft::new(node_id, config, NoPeers::<SM::SnapshotData>::new(), log, sm)
        .await
        .map_err(|e| fatal(&e))?;

    let initialized = raft.is_initialized().await.map_err(|e| fatal(&e))?;
    if !initialized {
        let members = BTreeMap::from([(node_id, node)]);
        if let Err(e) = raft.initialize(members).await {
            shutdown_quietly(&raft).await;
            return Err(StartError::Initialize {
                node: node_id.to_string(),
                reason: e.to_string(),
            });
        }
        tracing::info!(node = %node_id, "initialized single-voter raft group");
    }

    let became_leader = raft
        .wait(Some(waited))
        .metrics(
            |m| m.state == ServerState::Leader && m.current_leader.as_ref() == Some(&node_id),
            "single voter becomes leader",
        )
        .await;
    if let Err(e) = became_leader {
        shutdown_quietly(&raft).await;
        return Err(StartError::NotLeader {
            node: node_id.to_string(),
            waited,
            reason: e.to_string(),
        });
    }
    Ok(raft)
}

/// Why [`snapshot_covering`] gave up.
#[derive(thiserror::Error, Debug)]
pub enum SnapshotWaitError {
    #[error("raft stopped: {0}")]
    Stopped(String),
    #[error("no snapshot covering index {index} within {waited:?}")]
    Timeout { index: u64, waited: Duration },
}

/// Makes openraft build a snapshot covering at least `index` and waits for it. openraft drops a
/// trigger while a build is running, and that build may cover less, so the trigger is repeated
/// until a snapshot covers `index` or `timeout` passes.
pub async fn snapshot_covering<C, SM>(
    raft: &Raft<C, SM>,
    index: u64,
    timeout: Duration,
) -> Result<(), SnapshotWaitError>
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C>,
{
    const RETRIGGER: Duration = Duration::from_millis(500);
    let started = std::time::Instant::now();
    loop {
        raft.trigger()
            .snapshot()
            .await
            .map_err(|e| SnapshotWaitError::Stopped(e.to_string()))?;
        let covered = raft
            .wait(Some(RETRIGGER))
            .metrics(
                |m| m.snapshot.as_ref().is_some_and(|s| s.index() >= index),
                "snapshot covering the index",
            )
            .await;
        match covered {
            Ok(_) => return Ok(()),
            Err(openraft::metrics::WaitError::Timeout(..)) if started.elapsed() < timeout => {}
            Err(openraft::metrics::WaitError::Timeout(..)) => {
                return Err(SnapshotWaitError::Timeout {
                    index,
                    waited: timeout,
                });
            }
            Err(e) => return Err(SnapshotWaitError::Stopped(e.to_string())),
        }
    }
}

async fn shutdown_quietly<C, SM>(raft: &Raft<C, SM>)
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C>,
{
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "shutting down raft after a failed start");
    }
}

#[cfg(test)]
mod tests;

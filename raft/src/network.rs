//! In-process Raft networking for clusters that run in one process (the cluster test harness),
//! through a fault seam: every RPC between two nodes asks [`NetFaults`] for its fate first, so a
//! test can cut links (partitions), isolate nodes, delay messages and lose requests or replies,
//! all from a seed that a failing test prints and a rerun replays.
//!
//! A [`LocalHub`] holds the running Raft handles of every (group, node); a node's
//! [`LocalNetwork`] for one group reaches the other members of that group through it. A node
//! that is not registered (killed, not yet started) is unreachable, like a refused connection.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::storage::RaftStateMachine;
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{Raft, RaftTypeConfig};
use parking_lot::{Mutex, RwLock};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

/// Node ids of in-process clusters.
pub type NodeId = u64;

/// What happens to one RPC from one node to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Delivered after `delay`; with `lose_reply` the target handles it but the reply is lost.
    Deliver { delay: Duration, lose_reply: bool },
    /// The link is cut: the sender sees the target as unreachable at once.
    Unreachable,
    /// The request is lost on the way: the sender waits out its timeout.
    Lost,
}

#[derive(Debug)]
struct FaultState {
    /// Directed links that carry nothing.
    cut: HashSet<(NodeId, NodeId)>,
    /// Delay of every delivered message: uniform in `[min, max]`.
    delay: (Duration, Duration),
    /// Probability that a request is lost, and (independently) that a reply is.
    loss: f64,
    rng: Xoshiro256PlusPlus,
}

/// The network seam of an in-process cluster: which links are cut, how long messages take and how
/// many get lost. Randomness comes from one seeded generator, so a schedule with the same seed and
/// the same sequence of RPCs decides the same fates.
#[derive(Debug)]
pub struct NetFaults {
    seed: u64,
    state: Mutex<FaultState>,
}

impl NetFaults {
    /// A network without faults whose random choices (once delay or loss is set) come from
    /// `seed`.
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(NetFaults {
            seed,
            state: Mutex::new(FaultState {
                cut: HashSet::new(),
                delay: (Duration::ZERO, Duration::ZERO),
                loss: 0.0,
                rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            }),
        })
    }

    /// The seed the random choices come from (print it when a test fails).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Cuts every link between a node of `a` and a node of `b`, both ways.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId]) {
        let mut state = self.state.lock();
        for &x in a {
            for &y in b {
                state.cut.insert((x, y));
                state.cut.insert((y, x));
            }
        }
    }

    /// Cuts one direction only: `from` can no longer reach `to`, replies included.
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.state.lock().cut.insert((from, to));
    }

    /// Restores every cut link (delay and loss stay as set).
    pub fn heal(&self) {
        self.state.lock().cut.clear();
    }

    /// Every delivered message takes between `min` and `max`.
    pub fn set_delay(&self, min: Duration, max: Duration) {
        self.state.lock().delay = (min, max.max(min));
    }

    /// Each request, and each reply, is lost with probability `rate` (0 to 1).
    pub fn set_loss(&self, rate: f64) {
        self.state.lock().loss = rate.clamp(0.0, 1.0);
    }

    /// Decides the fate of one RPC from `from` to `to`.
    pub fn fate(&self, from: NodeId, to: NodeId) -> Fate {
        let mut state = self.state.lock();
        // A cut in either direction breaks a request/reply exchange.
        if state.cut.contains(&(from, to)) || state.cut.contains(&(to, from)) {
            return Fate::Unreachable;
        }
        let loss = state.loss;
        if loss > 0.0 && state.rng.random_bool(loss) {
            return Fate::Lost;
        }
        let lose_reply = loss > 0.0 && state.rng.random_bool(loss);
        let (min, max) = state.delay;
        let delay = if max > min {
            let span = u64::try_from((max - min).as_micros()).unwrap_or(u64::MAX);
            min + Duration::from_micros(state.rng.random_range(0..=span))
        } else {
            min
        };
        Fate::Deliver { delay, lose_reply }
    }
}

/// The running Raft handles of an in-process cluster, by (group, node), and the faults between
/// nodes. Groups are independent Raft groups (a store's shards) that share the nodes' links.
pub struct LocalHub<C, SM>
where
    C: RaftTypeConfig<NodeId = NodeId>,
    SM: RaftStateMachine<C>,
{
    members: RwLock<HashMap<(u64, NodeId), Raft<C, SM>>>,
    faults: Arc<NetFaults>,
    installs: crate::install_gate::InstallGates,
}

impl<C, SM> LocalHub<C, SM>
where
    C: RaftTypeConfig<NodeId = NodeId>,
    SM: RaftStateMachine<C>,
{
    pub fn new(faults: Arc<NetFaults>) -> Arc<Self> {
        Arc::new(LocalHub {
            members: RwLock::new(HashMap::new()),
            faults,
            installs: Default::default(),
        })
    }

    pub fn faults(&self) -> &Arc<NetFaults> {
        &self.faults
    }

    /// Makes `node`'s Raft of `group` reachable (replacing an earlier registration).
    pub fn register(&self, group: u64, node: NodeId, raft: Raft<C, SM>) {
        self.members.write().insert((group, node), raft);
    }

    /// Makes `node`'s Raft of `group` unreachable (its replica was removed).
    pub fn unregister(&self, group: u64, node: NodeId) {
        self.members.write().remove(&(group, node));
    }

    /// Makes `node` unreachable in every group (it was killed or shut down).
    pub fn unregister_node(&self, node: NodeId) {
        self.members.write().retain(|(_, n), _| *n != node);
    }

    /// The network `node` uses to reach the other members of `group`.
    pub fn network(self: &Arc<Self>, group: u64, node: NodeId) -> LocalNetwork<C, SM> {
        LocalNetwork {
            hub: self.clone(),
            group,
            from: node,
        }
    }

    fn member(&self, group: u64, node: NodeId) -> Option<Raft<C, SM>> {
        self.members.read().get(&(group, node)).cloned()
    }
}

/// One node's network in one group of a [`LocalHub`].
pub struct LocalNetwork<C, SM>
where
    C: RaftTypeConfig<NodeId = NodeId>,
    SM: RaftStateMachine<C>,
{
    hub: Arc<LocalHub<C, SM>>,
    group: u64,
    from: NodeId,
}

impl<C, SM> RaftNetworkFactory<C> for LocalNetwork<C, SM>
where
    C: RaftTypeConfig<NodeId = NodeId>,
    SM: RaftStateMachine<C>,
{
    type Network = LocalConnection<C, SM>;

    async fn new_client(&mut self, target: NodeId, _node: &C::Node) -> Self::Network {
        LocalConnection {
            hub: self.hub.clone(),
            group: self.group,
            from: self.from,
            to: target,
        }
    }
}

/// A "connection" from one node to another in one group.
pub struct LocalConnection<C, SM>
where
    C: RaftTypeConfig<NodeId = NodeId>,
    SM: RaftStateMachine<C>,
{
    hub: Arc<LocalHub<C, SM>>,
    group: u64,
    from: NodeId,
    to: NodeId,
}

/// Why an RPC of a [`LocalConnection`] did not get a reply.
enum Failed {
    Unreachable(String),
    Network(String),
}

impl<C: RaftTypeConfig> From<Failed> for RPCError<C> {
    fn from(f: Failed) -> Self {
        match f {
            Failed::Unreachable(m) => RPCError::Unreachable(Unreachable::from_string(m)),
            Failed::Network(m) => RPCError::Network(NetworkError::from_string(m)),
        }
    }
}

impl<C: RaftTypeConfig> From<Failed> for StreamingError<C> {
    fn from(f: Failed) -> Self {
        match f {
            Failed::Unreachable(m) => StreamingError::Unreachable(Unreachable::from_string(m)),
            Failed::Network(m) => StreamingError::Network(NetworkError::from_string(m)),
        }
    }
}

impl<C, SM> LocalConnection<C, SM>
where
    C: RaftTypeConfig<NodeId = NodeId>,
    SM: RaftStateMachine<C>,
{
    /// Runs `call` on the target's Raft as the fault seam decides: refused, lost (after the
    /// RPC's timeout), or delivered after a delay, with or without its reply.
    async fn deliver<T, E, F, Fut>(&self, timeout: Duration, call: F) -> Result<T, Failed>
    where
        E: std::fmt::Display,
        F: FnOnce(Raft<C, SM>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let (from, to, group) = (self.from, self.to, self.group);
        let (delay, lose_reply) = match self.hub.faults.fate(from, to) {
            Fate::Unreachable => {
                return Err(Failed::Unreachable(format!(
                    "link {from} -> {to} is cut (group {group})"
                )));
            }
            Fate::Lost => {
                tokio::time::sleep(timeout).await;
                return Err(Failed::Network(format!(
                    "request {from} -> {to} lost (group {group}); no reply within {timeout:?}"
                )));
            }
            Fate::Deliver { delay, lose_reply } => (delay, lose_reply),
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let Some(raft) = self.hub.member(group, to) else {
            return Err(Failed::Unreachable(format!(
                "node {to} is not running (group {group})"
            )));
        };
        let reply = call(raft)
            .await
            .map_err(|e| Failed::Unreachable(format!("node {to} (group {group}): {e}")))?;
        if lose_reply {
            return Err(Failed::Network(format!(
                "reply {to} -> {from} lost (group {group})"
            )));
        }
        Ok(reply)
    }
}

impl<C, SM> RaftNetworkV2<C> for LocalConnection<C, SM>
where
    C: RaftTypeConfig<NodeId = NodeId>,
    SM: RaftStateMachine<C>,
{
    type SnapshotData = SM::SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        let timeout = option.hard_ttl();
        let (hub, key) = (self.hub.clone(), (self.group, self.to));
        Ok(self
            .deliver(timeout, |raft| async move {
                let _passage = hub.installs.pass(key).await;
                raft.append_entries(rpc).await
            })
            .await?)
    }

    /// Pipelined, as over gRPC (`pipelined`).
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult<C>, RPCError<C>>>, RPCError<C>>>
    where
        S: futures::Stream<Item = AppendEntriesRequest<C>>
            + openraft::OptionalSend
            + Unpin
            + 'static,
    {
        let opened = self.open_stream(input, option.hard_ttl());
        Box::pin(async move { Ok(opened?) })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        let timeout = option.hard_ttl();
        Ok(self
            .deliver(timeout, |raft| async move { raft.vote(rpc).await })
            .await?)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        let timeout = option.hard_ttl();
        Ok(self
            .deliver(timeout, |raft| async move { raft.pre_vote(rpc).await })
            .await?)
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        let timeout = option.hard_ttl();
        let (hub, key) = (self.hub.clone(), (self.group, self.to));
        Ok(self
            .deliver(timeout, |raft| async move {
                // A member installing a snapshot must not be told to run for election.
                let _passage = hub.installs.pass(key).await;
                raft.handle_transfer_leader(req).await
            })
            .await?)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, Self::SnapshotData>,
        _cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let timeout = option.hard_ttl();
        let (hub, key) = (self.hub.clone(), (self.group, self.to));
        Ok(self
            .deliver(timeout, |raft| async move {
                hub.installs.install(key, raft, vote, snapshot).await
            })
            .await?)
    }
}

mod pipelined;
#[cfg(test)]
mod tests;

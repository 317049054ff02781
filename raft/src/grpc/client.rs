//! The sending side: a node's openraft network for one group over gRPC.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{
    RPCOption, RPCTypes, RaftNetworkFactory, RaftNetworkV2, stream_append_sequential,
};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderError, TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{BasicNode, OptionalSend};
use parking_lot::Mutex;
use tonic::transport::Channel;

use super::pb::raft_transport_client::RaftTransportClient;
use super::pipelined::Opened;
use super::{SnapshotBytes, log_id_from_wire, log_id_to_wire, opt_log_id_to_wire, pb};
use super::{vote_from_wire, vote_to_wire};
use crate::entry::{LogTypes, encode_entry, encode_membership};
use crate::network::{Fate, NetFaults, NodeId};

/// Most bytes of entries one AppendEntries request carries (at least one entry is always sent).
pub const APPEND_BYTES: usize = 4 * 1024 * 1024;
/// Bytes of snapshot data per chunk.
const SNAPSHOT_CHUNK: usize = 1024 * 1024;
/// How long a peer that does not know `AppendStream` is sent single requests before it is
/// asked again (it may have been upgraded meanwhile).
const ASK_FOR_STREAMS_AGAIN: Duration = Duration::from_secs(30);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One HTTP/2 connection per peer address, shared by every group of a node.
#[derive(Default)]
pub struct ChannelPool {
    channels: Mutex<HashMap<String, Channel>>,
}

impl ChannelPool {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock();
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let endpoint = vela_proto::cluster_tls::endpoint(addr)
            .map_err(|e| format!("raft address: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// A node's openraft network for one group: peers are reached at the address their membership
/// entry names (`BasicNode::addr`).
///
/// `SD` is the state machine's snapshot data type, which openraft requires the network to match.
pub struct GrpcNetwork<SD> {
    group: u64,
    from: NodeId,
    pool: Arc<ChannelPool>,
    faults: Option<Arc<NetFaults>>,
    _snapshot: PhantomData<fn() -> SD>,
}

impl<SD> Clone for GrpcNetwork<SD> {
    fn clone(&self) -> Self {
        GrpcNetwork {
            group: self.group,
            from: self.from,
            pool: self.pool.clone(),
            faults: self.faults.clone(),
            _snapshot: PhantomData,
        }
    }
}

impl<SD> GrpcNetwork<SD> {
    pub fn new(group: u64, from: NodeId, pool: Arc<ChannelPool>) -> Self {
        GrpcNetwork {
            group,
            from,
            pool,
            faults: None,
            _snapshot: PhantomData,
        }
    }

    /// Routes every RPC through `faults` first (tests).
    pub fn with_faults(mut self, faults: Arc<NetFaults>) -> Self {
        self.faults = Some(faults);
        self
    }
}

impl<C: LogTypes, SD: SnapshotBytes> RaftNetworkFactory<C> for GrpcNetwork<SD> {
    type Network = GrpcConnection<SD>;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        GrpcConnection {
            group: self.group,
            from: self.from,
            target,
            addr: node.addr.clone(),
            client: self.pool.channel(&node.addr).map(RaftTransportClient::new),
            faults: self.faults.clone(),
            streams_unsupported: None,
            _snapshot: PhantomData,
        }
    }
}

/// The connection from one node to one peer in one group.
pub struct GrpcConnection<SD> {
    group: u64,
    pub(super) from: NodeId,
    pub(super) target: NodeId,
    pub(super) addr: String,
    pub(super) client: Result<RaftTransportClient<Channel>, String>,
    pub(super) faults: Option<Arc<NetFaults>>,
    /// When the peer last answered that it does not know `AppendStream` (an older version).
    streams_unsupported: Option<std::time::Instant>,
    _snapshot: PhantomData<fn() -> SD>,
}

/// What the fault seam lets through of one request from `from` to `target`.
pub(super) enum Passage {
    /// The link is cut: the sender sees the target as unreachable at once.
    Cut(Failure),
    /// The request is lost on the way: the sender waits out its timeout.
    Lost,
    /// Delivered (its delay already waited out); with `lose_reply` the reply is lost.
    Through { lose_reply: bool },
}

/// Decides, by `faults` (none: everything goes through), the passage of one request.
pub(super) async fn passage(faults: Option<&NetFaults>, from: NodeId, target: NodeId) -> Passage {
    let Some(faults) = faults else {
        return Passage::Through { lose_reply: false };
    };
    match faults.fate(from, target) {
        Fate::Unreachable => Passage::Cut(Failure::Unreachable(format!(
            "link {from} -> {target} is cut"
        ))),
        Fate::Lost => Passage::Lost,
        Fate::Deliver { delay, lose_reply } => {
            tokio::time::sleep(delay).await;
            Passage::Through { lose_reply }
        }
    }
}

/// Why an RPC got no answer, before it is shaped into openraft's error of the call.
pub(super) enum Failure {
    Unreachable(String),
    Timeout(Duration),
    Network(String),
}

impl Failure {
    pub(super) fn rpc<C: LogTypes>(
        self,
        action: RPCTypes,
        from: NodeId,
        target: NodeId,
    ) -> RPCError<C> {
        match self {
            Failure::Unreachable(m) => RPCError::Unreachable(Unreachable::from_string(m)),
            Failure::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id: from,
                target,
                timeout,
            }),
            Failure::Network(m) => RPCError::Network(NetworkError::from_string(m)),
        }
    }

    fn streaming<C: LogTypes>(self, from: NodeId, target: NodeId) -> StreamingError<C> {
        match self {
            Failure::Unreachable(m) => StreamingError::Unreachable(Unreachable::from_string(m)),
            Failure::Timeout(timeout) => StreamingError::Timeout(Timeout {
                action: RPCTypes::InstallSnapshot,
                id: from,
                target,
                timeout,
            }),
            Failure::Network(m) => StreamingError::Network(NetworkError::from_string(m)),
        }
    }
}

pub(super) fn classify(addr: &str, status: &tonic::Status) -> Failure {
    use tonic::Code;
    let what = format!("{addr}: {}: {}", status.code(), status.message());
    match status.code() {
        // Refused or dropped connections, and a peer that does not hold the group (yet).
        Code::Unavailable | Code::NotFound => Failure::Unreachable(what),
        Code::DeadlineExceeded => Failure::Timeout(Duration::ZERO),
        _ => Failure::Network(what),
    }
}

impl<SD> GrpcConnection<SD> {
    pub(super) fn route(&self) -> pb::Route {
        pb::Route {
            group: self.group,
            target: self.target,
        }
    }

    /// Runs `call` through the fault seam (if any) within `timeout`.
    async fn call<T, F, Fut>(&self, timeout: Duration, call: F) -> Result<T, Failure>
    where
        F: FnOnce(RaftTransportClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.client.clone().map_err(Failure::Unreachable)?;
        let lose_reply = match passage(self.faults.as_deref(), self.from, self.target).await {
            Passage::Cut(failure) => return Err(failure),
            Passage::Lost => {
                tokio::time::sleep(timeout).await;
                return Err(Failure::Timeout(timeout));
            }
            Passage::Through { lose_reply } => lose_reply,
        };
        let reply = match tokio::time::timeout(timeout, call(client)).await {
            Err(_) => return Err(Failure::Timeout(timeout)),
            Ok(Err(status)) => {
                return Err(match classify(&self.addr, &status) {
                    Failure::Timeout(_) => Failure::Timeout(timeout),
                    other => other,
                });
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        if lose_reply {
            return Err(Failure::Network(format!(
                "reply {} -> {} lost",
                self.target, self.from
            )));
        }
        Ok(reply)
    }

    async fn append_once<C: LogTypes>(
        &self,
        request: pb::AppendEntriesRequest,
        timeout: Duration,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        let (from, target) = (self.from, self.target);
        let reply = self
            .call(
                timeout,
                |mut c| async move { c.append_entries(request).await },
            )
            .await
            .map_err(|f| f.rpc::<C>(RPCTypes::AppendEntries, from, target))?;
        use pb::append_entries_reply::Result as R;
        match reply.result {
            Some(R::Success(_)) => Ok(AppendEntriesResponse::Success),
            Some(R::PartialSuccess(p)) => Ok(AppendEntriesResponse::PartialSuccess(
                p.matching.as_ref().map(log_id_from_wire),
            )),
            Some(R::Conflict(_)) => Ok(AppendEntriesResponse::Conflict),
            Some(R::HigherVote(v)) => {
                Ok(AppendEntriesResponse::HigherVote(vote_from_wire::<C>(&v)))
            }
            None => Err(
                Failure::Network(format!("{}: empty AppendEntries reply", self.addr)).rpc(
                    RPCTypes::AppendEntries,
                    from,
                    target,
                ),
            ),
        }
    }
}

/// How long a request carrying `bytes` of payload may take: openraft's deadline (the heartbeat
/// interval, meant for empty requests) is too short to upload megabytes and fsync them, so a
/// request with a payload gets at least [`PAYLOAD_DEADLINE`] plus time at [`MIN_RATE`].
pub(super) fn transfer_deadline(ttl: Duration, bytes: usize) -> Duration {
    if bytes == 0 {
        return ttl;
    }
    ttl.max(PAYLOAD_DEADLINE) + Duration::from_micros((bytes / MIN_RATE_BYTES_PER_MICRO) as u64)
}

/// Least time a request with a payload is given.
pub(super) const PAYLOAD_DEADLINE: Duration = Duration::from_secs(2);
/// Slowest transfer rate a payload's deadline allows for (16 MB/s).
const MIN_RATE_BYTES_PER_MICRO: usize = 16;

/// Consecutive entries encoded for one request, and the log id of the last of them.
type Run = (
    Vec<u8>,
    openraft::LogId<openraft::impls::leader_id_adv::LeaderId<u64, u64>>,
);

/// Encodes `entries` into runs whose encoded size stays within `budget` (a run holds at least
/// one entry).
pub(super) fn encode_runs<C: LogTypes>(
    entries: &[C::Entry],
    budget: usize,
) -> Result<Vec<Run>, String> {
    use openraft::entry::RaftEntry;
    let mut runs = Vec::new();
    let mut current = Vec::new();
    let mut last = None;
    for entry in entries {
        let mut one = Vec::new();
        encode_entry::<C>(entry, &mut one).map_err(|e| e.to_string())?;
        if !current.is_empty() && current.len() + one.len() > budget {
            runs.push((
                std::mem::take(&mut current),
                last.take().ok_or("run without entry")?,
            ));
        }
        current.extend_from_slice(&one);
        last = Some(entry.log_id());
    }
    if let Some(last) = last {
        runs.push((current, last));
    }
    Ok(runs)
}

impl<C: LogTypes, SD: SnapshotBytes> RaftNetworkV2<C> for GrpcConnection<SD> {
    type SnapshotData = SD;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        let (from, target) = (self.from, self.target);
        let timeout = option.hard_ttl();
        let runs = encode_runs::<C>(&rpc.entries, APPEND_BYTES).map_err(|e| {
            Failure::Network(format!("encoding entries: {e}")).rpc::<C>(
                RPCTypes::AppendEntries,
                from,
                target,
            )
        })?;
        let vote = vote_to_wire::<C>(&rpc.vote);
        let leader_commit = opt_log_id_to_wire(&rpc.leader_commit);
        if runs.is_empty() {
            let request = pb::AppendEntriesRequest {
                route: Some(self.route()),
                vote: Some(vote),
                prev_log_id: opt_log_id_to_wire(&rpc.prev_log_id),
                leader_commit,
                entries: Default::default(),
            };
            return self.append_once::<C>(request, timeout).await;
        }
        // Runs go one after the other, each continuing where the previous one ended: a
        // follower applies a prefix like any AppendEntries. A run that is not accepted whole
        // answers for the request, with what came before it counted as matched.
        let mut prev = rpc.prev_log_id;
        let count = runs.len();
        for (i, (bytes, last)) in runs.into_iter().enumerate() {
            let request = pb::AppendEntriesRequest {
                route: Some(self.route()),
                vote: Some(vote),
                prev_log_id: opt_log_id_to_wire(&prev),
                leader_commit,
                entries: bytes.into(),
            };
            let deadline = transfer_deadline(timeout, request.entries.len());
            let reply = self.append_once::<C>(request, deadline).await;
            match reply {
                Ok(AppendEntriesResponse::Success) if i + 1 < count => prev = Some(last),
                // The earlier runs are stored (the follower answers after its flush).
                Err(_) if i > 0 => return Ok(AppendEntriesResponse::PartialSuccess(prev)),
                // The follower just accepted the run ending at `prev`; a conflict right after
                // means its log went back in between (a lost unsynced tail): not a match.
                Ok(AppendEntriesResponse::Conflict) if i > 0 => {
                    return Err(Failure::Network(format!(
                        "{}: log of node {target} went back during a split AppendEntries",
                        self.addr
                    ))
                    .rpc(RPCTypes::AppendEntries, from, target));
                }
                other => return other,
            }
        }
        Ok(AppendEntriesResponse::Success)
    }

    /// Pipelined: every request goes out on one `AppendStream` without waiting for the answers
    /// before it (`super::pipelined`); to a peer that does not know it, one request at a time.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult<C>, RPCError<C>>>, RPCError<C>>>
    where
        S: Stream<Item = AppendEntriesRequest<C>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let mut input = input;
            let ask = self
                .streams_unsupported
                .is_none_or(|at| at.elapsed() >= ASK_FOR_STREAMS_AGAIN);
            if ask {
                match self.open_stream::<C, S>(input, option.hard_ttl()).await? {
                    Opened::Stream(answers) => {
                        self.streams_unsupported = None;
                        return Ok(answers);
                    }
                    Opened::Unsupported(untouched) => {
                        tracing::info!(
                            peer = %self.addr,
                            "the peer does not know AppendStream (an older version): \
                             replicating to it one request at a time"
                        );
                        self.streams_unsupported = Some(std::time::Instant::now());
                        input = untouched;
                    }
                }
            }
            stream_append_sequential(self, input, option).await
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.vote_rpc(rpc, option, false).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.vote_rpc(rpc, option, true).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        self.transfer_rpc(req, option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, Self::SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let (from, target) = (self.from, self.target);
        let meta = snapshot.meta;
        let data = snapshot.snapshot.into_bytes();
        let mut membership = Vec::new();
        encode_membership(meta.last_membership.membership(), &mut membership).map_err(|e| {
            Failure::Network(format!("encoding the snapshot's membership: {e}"))
                .streaming::<C>(from, target)
        })?;
        let header = pb::SnapshotHeader {
            route: Some(self.route()),
            vote: Some(vote_to_wire::<C>(&vote)),
            last_log_id: opt_log_id_to_wire(&meta.last_log_id),
            membership_log_id: opt_log_id_to_wire(meta.last_membership.log_id()),
            membership: membership.into(),
            data_len: data.len() as u64,
        };
        let mut chunks = vec![pb::SnapshotChunk {
            header: Some(header),
            data: Default::default(),
        }];
        chunks.extend(data.chunks(SNAPSHOT_CHUNK).map(|piece| pb::SnapshotChunk {
            header: None,
            data: bytes::Bytes::copy_from_slice(piece),
        }));
        let timeout = transfer_deadline(option.hard_ttl(), data.len()).max(PAYLOAD_DEADLINE);
        let send = self.call(timeout, |mut c| async move {
            c.install_snapshot(tokio_stream::iter(chunks)).await
        });
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            reply = send => reply.map_err(|f| f.streaming::<C>(from, target))?,
        };
        let vote = reply.vote.ok_or_else(|| {
            Failure::Network(format!("{}: snapshot reply without a vote", self.addr))
                .streaming::<C>(from, target)
        })?;
        Ok(SnapshotResponse::new(vote_from_wire::<C>(&vote)))
    }
}

impl<SD> GrpcConnection<SD> {
    async fn transfer_rpc<C: LogTypes>(
        &self,
        req: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        let (from, target) = (self.from, self.target);
        let request = pb::TransferLeaderRequest {
            route: Some(self.route()),
            from_leader: Some(vote_to_wire::<C>(req.from_leader())),
            to_node: *req.to_node_id(),
            last_log_id: req.last_log_id().map(log_id_to_wire),
        };
        let reply = self
            .call(option.hard_ttl(), |mut c| async move {
                c.transfer_leader(request).await
            })
            .await
            .map_err(|f| f.rpc::<C>(RPCTypes::TransferLeader, from, target))?;
        use pb::transfer_leader_reply::Result as R;
        let missing =
            || {
                Failure::Network(format!("{}: incomplete TransferLeader reply", self.addr))
                    .rpc::<C>(RPCTypes::TransferLeader, from, target)
            };
        match reply.result {
            Some(R::Accepted(_)) => Ok(Ok(())),
            Some(R::VoteChanged(m)) => {
                let (Some(expected), Some(actual)) = (m.expected, m.actual) else {
                    return Err(missing());
                };
                Ok(Err(TransferLeaderError::VoteChanged {
                    expected: vote_from_wire::<C>(&expected),
                    actual: vote_from_wire::<C>(&actual),
                }))
            }
            Some(R::LogNotFlushed(m)) => Ok(Err(TransferLeaderError::LogNotFlushed {
                expected: m.expected.as_ref().map(log_id_from_wire),
                actual: m.actual.as_ref().map(log_id_from_wire),
            })),
            None => Err(missing()),
        }
    }

    async fn vote_rpc<C: LogTypes>(
        &self,
        rpc: VoteRequest<C>,
        option: RPCOption,
        pre: bool,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        let (from, target) = (self.from, self.target);
        let request = pb::VoteRequest {
            route: Some(self.route()),
            vote: Some(vote_to_wire::<C>(&rpc.vote)),
            last_log_id: opt_log_id_to_wire(&rpc.last_log_id),
            leadership_transfer: rpc.leadership_transfer,
        };
        let reply = self
            .call(option.hard_ttl(), |mut c| async move {
                if pre {
                    c.pre_vote(request).await
                } else {
                    c.vote(request).await
                }
            })
            .await
            .map_err(|f| f.rpc::<C>(RPCTypes::Vote, from, target))?;
        let vote = reply.vote.ok_or_else(|| {
            Failure::Network(format!("{}: vote reply without a vote", self.addr)).rpc::<C>(
                RPCTypes::Vote,
                from,
                target,
            )
        })?;
        Ok(VoteResponse {
            vote: vote_from_wire::<C>(&vote),
            vote_granted: reply.granted,
            last_log_id: reply.last_log_id.as_ref().map(log_id_from_wire),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    #[test]
    fn runs_stay_within_the_budget_and_keep_every_entry_in_order() {
        let batch = entries(1, 1..8, 100);
        let one = {
            let mut b = Vec::new();
            encode_entry::<TestConfig>(&batch[0], &mut b).unwrap();
            b.len()
        };
        // Two entries fit a run; the last run holds the odd one out.
        let runs = encode_runs::<TestConfig>(&batch, 2 * one + 1).unwrap();
        let lasts: Vec<u64> = runs.iter().map(|(_, last)| last.index).collect();
        assert_eq!(lasts, [2, 4, 6, 7]);
        assert!(runs.iter().all(|(bytes, _)| bytes.len() <= 2 * one + 1));
        // An entry larger than the budget still goes, alone.
        let runs = encode_runs::<TestConfig>(&batch, 1).unwrap();
        assert_eq!(runs.len(), 7);
        // Everything in one run when it fits; nothing for no entries.
        assert_eq!(
            encode_runs::<TestConfig>(&batch, usize::MAX).unwrap().len(),
            1
        );
        assert!(encode_runs::<TestConfig>(&[], 10).unwrap().is_empty());
        let joined: Vec<u8> = encode_runs::<TestConfig>(&batch, 2 * one + 1)
            .unwrap()
            .into_iter()
            .flat_map(|(b, _)| b)
            .collect();
        let mut all = Vec::new();
        for e in &batch {
            encode_entry::<TestConfig>(e, &mut all).unwrap();
        }
        assert_eq!(joined, all);
    }
}

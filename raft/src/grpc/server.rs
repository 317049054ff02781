//! The receiving side: the `RaftTransport` service of one node, handing each RPC to the group it
//! names. Wire input is checked here, once: the route, every entry's checksum, the snapshot's
//! length; what fails is refused with a status, never half-applied.

use std::collections::HashMap;
use std::future::{Future, ready};
use std::sync::Arc;

use futures::StreamExt;
use openraft::base::BoxStream;
use openraft::error::Fatal;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, StreamAppendResult,
    TransferLeaderError, TransferLeaderRequest, VoteRequest,
};
use openraft::storage::RaftStateMachine;
use openraft::type_config::alias::SnapshotOf;
use openraft::{Raft, SnapshotMeta, StoredMembership};
use parking_lot::{Mutex, RwLock};
use tonic::{Request, Response, Status, Streaming};

use super::pb::raft_transport_server::{RaftTransport, RaftTransportServer};
use super::{
    MAX_MESSAGE_BYTES, SnapshotBytes, log_id_from_wire, log_id_to_wire, opt_log_id_to_wire, pb,
    vote_from_wire, vote_to_wire,
};
use crate::entry::{LogTypes, decode_membership};
use crate::network::NodeId;
use crate::pipeline::append_pipelined;

/// Largest snapshot a node accepts.
const MAX_SNAPSHOT_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// The groups one node serves Raft RPCs for.
pub struct RaftServer<C, SM>
where
    C: LogTypes,
    SM: RaftStateMachine<C>,
{
    node: NodeId,
    /// Each group's Raft and the serial of its registration.
    groups: RwLock<HashMap<u64, Registered<C, SM>>>,
    /// Counts registrations: a stream ends once its group's changes.
    registrations: tokio::sync::watch::Sender<u64>,
    installs: crate::install_gate::InstallGates,
    /// `AppendStream`s opened so far.
    streams: std::sync::atomic::AtomicU64,
    /// Answers `AppendStream` UNIMPLEMENTED, as a node of a version before it does (tests).
    #[cfg(test)]
    pub(super) without_streams: std::sync::atomic::AtomicBool,
}

impl<C, SM> RaftServer<C, SM>
where
    C: LogTypes,
    SM: RaftStateMachine<C>,
    SM::SnapshotData: SnapshotBytes,
{
    pub fn new(node: NodeId) -> Arc<Self> {
        Arc::new(RaftServer {
            node,
            groups: RwLock::new(HashMap::new()),
            registrations: tokio::sync::watch::Sender::new(0),
            installs: Default::default(),
            streams: Default::default(),
            #[cfg(test)]
            without_streams: Default::default(),
        })
    }

    /// How many `AppendStream`s (pipelined replication from a leader) this node has served.
    pub fn streams_served(&self) -> u64 {
        self.streams.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Serves `group` with `raft` (replacing an earlier one).
    pub fn register(&self, group: u64, raft: Raft<C, SM>) {
        let mut groups = self.groups.write();
        let mut serial = 0;
        self.registrations.send_modify(|n| {
            *n += 1;
            serial = *n;
        });
        groups.insert(group, (serial, raft));
    }

    /// Stops serving `group`: peers see it as unreachable.
    pub fn unregister(&self, group: u64) {
        let mut groups = self.groups.write();
        if groups.remove(&group).is_some() {
            self.registrations.send_modify(|n| *n += 1);
        }
    }

    /// The tonic service to add to the node's server.
    pub fn service(self: &Arc<Self>) -> RaftTransportServer<RaftService<C, SM>> {
        RaftTransportServer::new(RaftService {
            server: self.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// One `AppendStream`: its requests handed to the group `route` names, pipelined
    /// (`crate::pipeline`). A request that cannot be taken (another route, a damaged entry, a
    /// broken stream) ends the input; its error follows the answers to the requests before it.
    fn serve_stream(
        self: Arc<Self>,
        route: pb::Route,
        inbound: Streaming<pb::AppendEntriesRequest>,
    ) -> Result<BoxStream<'static, Result<pb::AppendStreamReply, Status>>, Status> {
        let (serial, raft) = self.registered(Some(&route))?;
        let group = route.group;
        let route = Some(route);
        let key = (group, self.node);
        let refused: Arc<Mutex<Option<Status>>> = Arc::default();
        let noted = refused.clone();
        let input = inbound
            .map(move |wire| {
                let request = wire.and_then(|req| {
                    if req.route != route {
                        return Err(Status::invalid_argument(
                            "every request of an AppendStream names the same route",
                        ));
                    }
                    request_from_wire::<C>(req)
                });
                request.map_err(|status| {
                    noted.lock().get_or_insert(status);
                })
            })
            .take_while(|request| ready(request.is_ok()))
            .filter_map(|request| ready(request.ok()))
            // No request reaches a Raft after it stopped being served (unregistered, replaced):
            // peers see the group unreachable, and a server shutting down is not held open.
            .take_until(self.replaced(group, serial));
        let passes = self.clone();
        let pass = move || {
            let server = passes.clone();
            async move { server.installs.pass(key).await }
        };
        let server = self.clone();
        let answers = append_pipelined(&raft, input, pass).map(answer_to_wire::<C>);
        let node = self.node;
        let refusal = futures::stream::once(async move {
            let refusal = refused.lock().take();
            refusal.or_else(|| {
                let current = server.groups.read().get(&group).map(|(s, _)| *s);
                (current != Some(serial)).then(|| {
                    Status::not_found(format!("node {node} no longer serves group {group}"))
                })
            })
        })
        .filter_map(|status| ready(status.map(Err)));
        Ok(answers.chain(refusal).boxed())
    }

    fn group(&self, route: Option<&pb::Route>) -> Result<Raft<C, SM>, Status> {
        self.registered(route).map(|(_, raft)| raft)
    }

    /// Resolves once `group` is no longer served by its registration `serial` (unregistered,
    /// or another Raft registered in its place).
    fn replaced(
        self: &Arc<Self>,
        group: u64,
        serial: u64,
    ) -> impl Future<Output = ()> + use<C, SM> {
        let mut changes = self.registrations.subscribe();
        let server = self.clone();
        async move {
            loop {
                let current = server.groups.read().get(&group).map(|(s, _)| *s);
                if current != Some(serial) || changes.changed().await.is_err() {
                    return;
                }
            }
        }
    }

    /// The Raft serving the group `route` names, and the serial of its registration.
    fn registered(&self, route: Option<&pb::Route>) -> Result<Registered<C, SM>, Status> {
        let route = route.ok_or_else(|| Status::invalid_argument("request without a route"))?;
        if route.target != self.node {
            return Err(Status::failed_precondition(format!(
                "request for node {} reached node {}",
                route.target, self.node
            )));
        }
        self.groups
            .read()
            .get(&route.group)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!(
                    "node {} does not hold group {}",
                    self.node, route.group
                ))
            })
    }
}

/// The serial of a group's registration, and its Raft.
type Registered<C, SM> = (u64, Raft<C, SM>);

/// [`RaftServer`] as a tonic service.
pub struct RaftService<C, SM>
where
    C: LogTypes,
    SM: RaftStateMachine<C>,
{
    server: Arc<RaftServer<C, SM>>,
}

fn raft_stopped(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft stopped: {e}"))
}

fn decode_entries<C: LogTypes>(bytes: &[u8]) -> Result<Vec<C::Entry>, Status> {
    crate::entry::decode_entries::<C>(bytes).map_err(Status::invalid_argument)
}

/// An `AppendEntries` off the wire, every entry's checksum checked.
fn request_from_wire<C: LogTypes>(
    req: pb::AppendEntriesRequest,
) -> Result<AppendEntriesRequest<C>, Status> {
    let vote = req
        .vote
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("AppendEntries without a vote"))?;
    Ok(AppendEntriesRequest::<C> {
        vote: vote_from_wire::<C>(vote),
        prev_log_id: req.prev_log_id.as_ref().map(log_id_from_wire),
        leader_commit: req.leader_commit.as_ref().map(log_id_from_wire),
        entries: decode_entries::<C>(&req.entries)?,
    })
}

/// The route an `AppendStream` names in its metadata ([`super::STREAM_GROUP`],
/// [`super::STREAM_TARGET`]).
fn stream_route(metadata: &tonic::metadata::MetadataMap) -> Result<pb::Route, Status> {
    let number = |key: &str| {
        metadata
            .get(key)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| Status::invalid_argument(format!("AppendStream without {key}")))
    };
    Ok(pb::Route {
        group: number(super::STREAM_GROUP)?,
        target: number(super::STREAM_TARGET)?,
    })
}

/// One answer of a pipelined stream onto the wire.
fn answer_to_wire<C: LogTypes>(
    answer: Result<StreamAppendResult<C>, Fatal<C>>,
) -> Result<pb::AppendStreamReply, Status> {
    use pb::append_stream_reply::Result as R;
    let result = match answer.map_err(raft_stopped)? {
        Ok(matching) => R::Accepted(pb::Matching {
            matching: opt_log_id_to_wire(&matching),
        }),
        Err(StreamAppendError::Conflict(at)) => R::Conflict(log_id_to_wire(&at)),
        Err(StreamAppendError::HigherVote(v)) => R::HigherVote(vote_to_wire::<C>(&v)),
    };
    Ok(pb::AppendStreamReply {
        result: Some(result),
    })
}

#[tonic::async_trait]
impl<C, SM> RaftTransport for RaftService<C, SM>
where
    C: LogTypes,
    SM: RaftStateMachine<C>,
    SM::SnapshotData: SnapshotBytes,
{
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesReply>, Status> {
        let req = request.into_inner();
        let raft = self.server.group(req.route.as_ref())?;
        let group = req.route.as_ref().map_or(0, |r| r.group);
        let rpc = request_from_wire::<C>(req)?;
        // Held until the member has taken the entries in: no install starts under them.
        let _passage = self.server.installs.pass((group, self.server.node)).await;
        use pb::append_entries_reply::Result as R;
        let result = match raft.append_entries(rpc).await.map_err(raft_stopped)? {
            AppendEntriesResponse::Success => R::Success(pb::Empty {}),
            AppendEntriesResponse::PartialSuccess(matching) => {
                R::PartialSuccess(pb::PartialSuccess {
                    matching: matching.as_ref().map(log_id_to_wire),
                })
            }
            AppendEntriesResponse::Conflict => R::Conflict(pb::Empty {}),
            AppendEntriesResponse::HigherVote(v) => R::HigherVote(vote_to_wire::<C>(&v)),
        };
        Ok(Response::new(pb::AppendEntriesReply {
            result: Some(result),
        }))
    }

    type AppendStreamStream = BoxStream<'static, Result<pb::AppendStreamReply, Status>>;

    async fn append_stream(
        &self,
        request: Request<Streaming<pb::AppendEntriesRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        #[cfg(test)]
        if self
            .server
            .without_streams
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(Status::unimplemented("AppendStream (an older version)"));
        }
        self.server
            .streams
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The route comes with the stream, before any request: a leader may open a stream
        // well before it has entries to send, and the stream must end when its group does.
        let route = stream_route(request.metadata())?;
        let answers = self
            .server
            .clone()
            .serve_stream(route, request.into_inner())?;
        Ok(Response::new(answers))
    }

    async fn vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteReply>, Status> {
        self.vote_rpc(request.into_inner(), false).await
    }

    async fn pre_vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteReply>, Status> {
        self.vote_rpc(request.into_inner(), true).await
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderReply>, Status> {
        self.transfer_rpc(request.into_inner()).await
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotReply>, Status> {
        let mut chunks = request.into_inner();
        let first = chunks
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let header = first
            .header
            .ok_or_else(|| Status::invalid_argument("the first snapshot chunk has no header"))?;
        let raft = self.server.group(header.route.as_ref())?;
        let group = header.route.as_ref().map_or(0, |r| r.group);
        let vote = header
            .vote
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("snapshot without a vote"))?;
        if header.data_len > MAX_SNAPSHOT_BYTES {
            return Err(Status::invalid_argument(format!(
                "snapshot of {} bytes exceeds {MAX_SNAPSHOT_BYTES}",
                header.data_len
            )));
        }
        let membership = decode_membership(&header.membership)
            .map_err(|e| Status::invalid_argument(format!("snapshot membership: {e}")))?;
        let expected = usize::try_from(header.data_len)
            .map_err(|_| Status::invalid_argument("snapshot length does not fit in memory"))?;
        let mut data = Vec::with_capacity(expected.min(64 * 1024 * 1024));
        data.extend_from_slice(&first.data);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            if chunk.header.is_some() {
                return Err(Status::invalid_argument(
                    "a later snapshot chunk has a header",
                ));
            }
            if data.len() + chunk.data.len() > expected {
                return Err(Status::invalid_argument(format!(
                    "snapshot data exceeds the {expected} bytes its header announced"
                )));
            }
            data.extend_from_slice(&chunk.data);
        }
        if data.len() != expected {
            return Err(Status::invalid_argument(format!(
                "snapshot stream ended after {} of {expected} bytes",
                data.len()
            )));
        }
        let meta = SnapshotMeta {
            last_log_id: header.last_log_id.as_ref().map(log_id_from_wire),
            last_membership: StoredMembership::new(
                header.membership_log_id.as_ref().map(log_id_from_wire),
                membership,
            ),
        };
        let snapshot = SnapshotOf::<C, SM::SnapshotData> {
            meta,
            snapshot: SM::SnapshotData::from_bytes(data),
        };
        let reply = self
            .server
            .installs
            .install(
                (group, self.server.node),
                raft,
                vote_from_wire::<C>(vote),
                snapshot,
            )
            .await
            .map_err(raft_stopped)?;
        Ok(Response::new(pb::SnapshotReply {
            vote: Some(vote_to_wire::<C>(&reply.vote)),
        }))
    }
}

impl<C, SM> RaftService<C, SM>
where
    C: LogTypes,
    SM: RaftStateMachine<C>,
    SM::SnapshotData: SnapshotBytes,
{
    async fn transfer_rpc(
        &self,
        req: pb::TransferLeaderRequest,
    ) -> Result<Response<pb::TransferLeaderReply>, Status> {
        let raft = self.server.group(req.route.as_ref())?;
        let from = req
            .from_leader
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("TransferLeader without the leader's vote"))?;
        let request = TransferLeaderRequest::<C>::new(
            vote_from_wire::<C>(from),
            req.to_node,
            req.last_log_id.as_ref().map(log_id_from_wire),
        );
        // A member installing a snapshot must not be told to run for election.
        let group = req.route.as_ref().map_or(0, |r| r.group);
        let _passage = self.server.installs.pass((group, self.server.node)).await;
        use pb::transfer_leader_reply::Result as R;
        let result = match raft
            .handle_transfer_leader(request)
            .await
            .map_err(raft_stopped)?
        {
            Ok(()) => R::Accepted(pb::Empty {}),
            Err(TransferLeaderError::VoteChanged { expected, actual }) => {
                R::VoteChanged(pb::VoteMismatch {
                    expected: Some(vote_to_wire::<C>(&expected)),
                    actual: Some(vote_to_wire::<C>(&actual)),
                })
            }
            Err(TransferLeaderError::LogNotFlushed { expected, actual }) => {
                R::LogNotFlushed(pb::LogMismatch {
                    expected: opt_log_id_to_wire(&expected),
                    actual: opt_log_id_to_wire(&actual),
                })
            }
        };
        Ok(Response::new(pb::TransferLeaderReply {
            result: Some(result),
        }))
    }
}

impl<C, SM> RaftService<C, SM>
where
    C: LogTypes,
    SM: RaftStateMachine<C>,
    SM::SnapshotData: SnapshotBytes,
{
    async fn vote_rpc(
        &self,
        req: pb::VoteRequest,
        pre: bool,
    ) -> Result<Response<pb::VoteReply>, Status> {
        let raft = self.server.group(req.route.as_ref())?;
        let vote = req
            .vote
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("vote request without a vote"))?;
        let rpc = VoteRequest::<C> {
            vote: vote_from_wire::<C>(vote),
            last_log_id: req.last_log_id.as_ref().map(log_id_from_wire),
            leadership_transfer: req.leadership_transfer,
        };
        let reply = if pre {
            raft.pre_vote(rpc).await
        } else {
            raft.vote(rpc).await
        }
        .map_err(raft_stopped)?;
        Ok(Response::new(pb::VoteReply {
            vote: Some(vote_to_wire::<C>(&reply.vote)),
            granted: reply.vote_granted,
            last_log_id: opt_log_id_to_wire(&reply.last_log_id),
        }))
    }
}

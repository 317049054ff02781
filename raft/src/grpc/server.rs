//! The receiving side: the `RaftTransport` service of one node, handing each RPC to the group it
//! names. Wire input is checked here, once: the route, every entry's checksum, the snapshot's
//! length; what fails is refused with a status, never half-applied.

use std::collections::HashMap;
use std::sync::Arc;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, TransferLeaderError, TransferLeaderRequest,
    VoteRequest,
};
use openraft::storage::RaftStateMachine;
use openraft::type_config::alias::SnapshotOf;
use openraft::{Raft, SnapshotMeta, StoredMembership};
use parking_lot::RwLock;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::pb::raft_transport_server::{RaftTransport, RaftTransportServer};
use super::{
    MAX_MESSAGE_BYTES, SnapshotBytes, log_id_from_wire, log_id_to_wire, opt_log_id_to_wire, pb,
    vote_from_wire, vote_to_wire,
};
use crate::entry::{LogTypes, decode_membership};
use crate::network::NodeId;

/// Largest snapshot a node accepts.
const MAX_SNAPSHOT_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// The groups one node serves Raft RPCs for.
pub struct RaftServer<C, SM>
where
    C: LogTypes,
    SM: RaftStateMachine<C>,
{
    node: NodeId,
    groups: RwLock<HashMap<u64, Raft<C, SM>>>,
    installs: crate::install_gate::InstallGates,
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
            installs: Default::default(),
        })
    }

    /// Serves `group` with `raft` (replacing an earlier one).
    pub fn register(&self, group: u64, raft: Raft<C, SM>) {
        self.groups.write().insert(group, raft);
    }

    /// Stops serving `group`: peers see it as unreachable.
    pub fn unregister(&self, group: u64) {
        self.groups.write().remove(&group);
    }

    /// The tonic service to add to the node's server.
    pub fn service(self: &Arc<Self>) -> RaftTransportServer<RaftService<C, SM>> {
        RaftTransportServer::new(RaftService {
            server: self.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn group(&self, route: Option<&pb::Route>) -> Result<Raft<C, SM>, Status> {
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
        let vote = req
            .vote
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("AppendEntries without a vote"))?;
        let group = req.route.as_ref().map_or(0, |r| r.group);
        // Held until the member has taken the entries in: no install starts under them.
        let _passage = self.server.installs.pass((group, self.server.node)).await;
        let rpc = AppendEntriesRequest::<C> {
            vote: vote_from_wire::<C>(vote),
            prev_log_id: req.prev_log_id.as_ref().map(log_id_from_wire),
            leader_commit: req.leader_commit.as_ref().map(log_id_from_wire),
            entries: decode_entries::<C>(&req.entries)?,
        };
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

//! Raft over gRPC between nodes (`vela.raft.v1.RaftTransport`, `protos/vela/raft/v1/raft.proto`):
//! [`GrpcNetwork`] is a node's openraft network for one group, [`RaftServer`] the service that
//! hands incoming RPCs to the node's groups. One HTTP/2 connection per peer address carries every
//! group (a [`ChannelPool`] per node). Entries travel in the segment record envelope, checksummed;
//! an AppendEntries is split so no request carries more than a byte budget of entries.
//! Replication is pipelined (`AppendStream`, `pipelined` and `crate::pipeline`): a leader sends a
//! follower its next entries without waiting for the answers to the previous ones, and falls
//! back to one `AppendEntries` at a time for a peer of an older version.
//!
//! Failures are classified for openraft: a refused connection or a group the target does not
//! (yet) hold is *unreachable* (openraft backs off), an RPC that outlives its deadline is a
//! *timeout*, anything else a network error. An optional [`NetFaults`] seam in front of every RPC
//! lets tests cut, delay and lose messages on real connections.

mod client;
mod pipelined;
mod server;
#[cfg(test)]
mod tests;

use openraft::LogId;
use openraft::alias::VoteOf;
use openraft::impls::leader_id_adv::LeaderId;

pub use client::{ChannelPool, GrpcNetwork};
pub use server::{RaftServer, RaftService};

use crate::entry::{LogTypes, StoredLogId, StoredVote};

/// The generated messages and service of `vela.raft.v1`.
#[allow(clippy::all, clippy::pedantic, clippy::nursery, missing_docs)]
pub mod pb {
    tonic::include_proto!("vela.raft.v1");
}

/// Metadata keys of an `AppendStream`: the group and the target node id its requests are for
/// (each request names them too), known to the receiver before the first request arrives.
const STREAM_GROUP: &str = "vela-raft-group";
const STREAM_TARGET: &str = "vela-raft-target";

/// Largest message a node accepts: one entry may be as large as a segment record.
pub const MAX_MESSAGE_BYTES: usize = crate::codec::MAX_RECORD_BODY + 1024 * 1024;

/// Snapshot data that travels as bytes (what the store's and the controller's state machines
/// use).
pub trait SnapshotBytes: Send + Sync + 'static {
    fn into_bytes(self) -> Vec<u8>;
    fn from_bytes(bytes: Vec<u8>) -> Self;
}

impl SnapshotBytes for Vec<u8> {
    fn into_bytes(self) -> Vec<u8> {
        self
    }
    fn from_bytes(bytes: Vec<u8>) -> Self {
        bytes
    }
}

impl SnapshotBytes for std::io::Cursor<Vec<u8>> {
    fn into_bytes(self) -> Vec<u8> {
        self.into_inner()
    }
    fn from_bytes(bytes: Vec<u8>) -> Self {
        std::io::Cursor::new(bytes)
    }
}

fn log_id_to_wire(id: &LogId<LeaderId<u64, u64>>) -> pb::LogId {
    let s = StoredLogId::of(id);
    pb::LogId {
        term: s.term,
        node: s.node,
        index: s.index,
    }
}

fn log_id_from_wire(id: &pb::LogId) -> LogId<LeaderId<u64, u64>> {
    StoredLogId {
        term: id.term,
        node: id.node,
        index: id.index,
    }
    .to_log_id()
}

fn opt_log_id_to_wire(id: &Option<LogId<LeaderId<u64, u64>>>) -> Option<pb::LogId> {
    id.as_ref().map(log_id_to_wire)
}

fn vote_to_wire<C: LogTypes>(vote: &VoteOf<C>) -> pb::Vote {
    let s = StoredVote::of::<C>(vote);
    pb::Vote {
        term: s.term,
        node: s.node,
        committed: s.committed,
    }
}

fn vote_from_wire<C: LogTypes>(vote: &pb::Vote) -> VoteOf<C> {
    StoredVote {
        term: vote.term,
        node: vote.node,
        committed: vote.committed,
    }
    .to_vote::<C>()
}

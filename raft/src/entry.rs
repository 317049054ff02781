//! How openraft's entries, log ids and votes are written down: in layouts vela-raft owns
//! (ADR 0007), never as an openraft type's serde form, so an openraft upgrade cannot change
//! what is on disk. The application's data inside a normal entry is encoded by the application
//! ([`RecordData`]).
//!
//! vela-raft stores the Raft type configurations Vela uses: `u64` node ids and terms,
//! openraft's `BasicNode`, the "advanced" leader id (term and node) and openraft's `Entry`.
//! [`LogTypes`] names that set.

use std::collections::{BTreeMap, BTreeSet};

use openraft::entry::RaftEntry;
use openraft::impls::BasicNode;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::vote::{RaftLeaderId, RaftVote};
use openraft::{EntryPayload, LogId, Membership, RaftTypeConfig};
use serde::{Deserialize, Serialize};

use crate::codec::{EncodeError, RecordHead, RecordKind};

/// Application data carried by normal entries, encoded in a layout the application owns (and
/// versions: it is persisted in every segment).
pub trait RecordData: Sized {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String>;
    fn decode(bytes: &[u8]) -> Result<Self, String>;
    /// Bytes this value holds in memory, decoded (inline and allocated), for the caches'
    /// memory budgets; 0 when unknown, and the encoded length is used. Decoded data can take
    /// far more than its encoding (every string is an allocation).
    fn memory_size(&self) -> usize {
        0
    }
}

/// The Raft type configurations vela-raft can store: `u64` node ids and terms, openraft's
/// `BasicNode`, the "advanced" leader id and openraft's `Entry`, whose data is [`RecordData`].
/// Implemented for every such configuration.
pub trait LogTypes:
    RaftTypeConfig<
        NodeId = u64,
        Node = BasicNode,
        Term = u64,
        LeaderId = LeaderId<u64, u64>,
        Entry: Clone,
    >
{
    fn payload(entry: &Self::Entry) -> &EntryPayload<Self::D, u64, BasicNode>;
    fn make_entry(
        log_id: LogId<LeaderId<u64, u64>>,
        payload: EntryPayload<Self::D, u64, BasicNode>,
    ) -> Self::Entry;
    fn encode_data(data: &Self::D, out: &mut Vec<u8>) -> Result<(), String>;
    fn decode_data(bytes: &[u8]) -> Result<Self::D, String>;
    /// What an entry costs a cache: its decoded size where the data knows it, at least its
    /// encoded length `encoded`.
    fn cached_size(entry: &Self::Entry, encoded: usize) -> usize;
}

impl<C> LogTypes for C
where
    C: RaftTypeConfig<
            NodeId = u64,
            Node = BasicNode,
            Term = u64,
            LeaderId = LeaderId<u64, u64>,
            Entry = openraft::Entry<
                LeaderId<u64, u64>,
                EntryPayload<<C as RaftTypeConfig>::D, u64, BasicNode>,
            >,
        >,
    <C as RaftTypeConfig>::D: RecordData + Clone,
{
    fn payload(entry: &Self::Entry) -> &EntryPayload<Self::D, u64, BasicNode> {
        &entry.payload
    }

    fn make_entry(
        log_id: LogId<LeaderId<u64, u64>>,
        payload: EntryPayload<Self::D, u64, BasicNode>,
    ) -> Self::Entry {
        openraft::Entry { log_id, payload }
    }

    fn encode_data(data: &Self::D, out: &mut Vec<u8>) -> Result<(), String> {
        data.encode(out)
    }

    fn decode_data(bytes: &[u8]) -> Result<Self::D, String> {
        <Self::D as RecordData>::decode(bytes)
    }

    fn cached_size(entry: &Self::Entry, encoded: usize) -> usize {
        let decoded = match &entry.payload {
            EntryPayload::Normal(data) => data.memory_size(),
            _ => 0,
        };
        encoded.max(std::mem::size_of::<Self::Entry>() + decoded)
    }
}

/// A log id as vela-raft writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredLogId {
    pub term: u64,
    pub node: u64,
    pub index: u64,
}

impl StoredLogId {
    pub fn of(id: &LogId<LeaderId<u64, u64>>) -> Self {
        StoredLogId {
            term: id.leader_id.term(),
            node: *id.leader_id.node_id(),
            index: id.index,
        }
    }

    pub fn to_log_id(self) -> LogId<LeaderId<u64, u64>> {
        LogId::new(LeaderId::new(self.term, self.node), self.index)
    }
}

/// A vote as vela-raft writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredVote {
    pub term: u64,
    pub node: u64,
    pub committed: bool,
}

impl StoredVote {
    pub fn of<C: LogTypes>(vote: &C::Vote) -> Self {
        let leader = vote.leader_id();
        StoredVote {
            term: leader.term(),
            node: *leader.node_id(),
            committed: vote.is_committed(),
        }
    }

    pub fn to_vote<C: LogTypes>(self) -> C::Vote {
        let leader = LeaderId::new(self.term, self.node);
        if self.committed {
            C::Vote::from_leader_id(leader, true)
        } else {
            C::Vote::from_leader_id(leader, false)
        }
    }
}

/// A membership as vela-raft writes it: the joint configuration (one voter set, or two during a
/// change) and every node's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MembershipRecord {
    configs: Vec<Vec<u64>>,
    nodes: Vec<(u64, String)>,
}

/// Appends the record of `entry` to `out` and returns its length.
/// `entries` one after another in the segment record envelope (as AppendEntries and a replica
/// copy carry them).
pub fn encode_entries<C: LogTypes>(entries: &[C::Entry]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for entry in entries {
        encode_entry::<C>(entry, &mut out).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// The entries [`encode_entries`] wrote; an error names the first bad one.
pub fn decode_entries<C: LogTypes>(mut bytes: &[u8]) -> Result<Vec<C::Entry>, String> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let (head, payload, used) = crate::codec::decode_record(bytes)
            .map_err(|e| format!("entry {}: {e}", entries.len()))?;
        let entry = decode_entry::<C>(head, payload)
            .map_err(|e| format!("entry {}: {e}", entries.len()))?;
        entries.push(entry);
        bytes = &bytes[used..];
    }
    Ok(entries)
}

pub(crate) fn encode_entry<C: LogTypes>(
    entry: &C::Entry,
    out: &mut Vec<u8>,
) -> Result<usize, EncodeError<String>> {
    let (leader, index) = entry.log_id_parts();
    let id = StoredLogId {
        term: leader.term(),
        node: *leader.node_id(),
        index,
    };
    let head = |kind| RecordHead {
        kind,
        term: id.term,
        node: id.node,
        index: id.index,
    };
    match C::payload(entry) {
        EntryPayload::Blank => {
            crate::codec::encode_record(head(RecordKind::Blank), out, |_| Ok::<(), String>(()))
        }
        EntryPayload::Normal(data) => {
            crate::codec::encode_record(head(RecordKind::Normal), out, |o| C::encode_data(data, o))
        }
        EntryPayload::Membership(m) => {
            crate::codec::encode_record(head(RecordKind::Membership), out, |o| {
                encode_membership(m, o)
            })
        }
    }
}

/// Rebuilds the entry a record holds.
pub(crate) fn decode_entry<C: LogTypes>(
    head: RecordHead,
    payload: &[u8],
) -> Result<C::Entry, String> {
    let log_id = StoredLogId {
        term: head.term,
        node: head.node,
        index: head.index,
    }
    .to_log_id();
    let payload = match head.kind {
        RecordKind::Blank if payload.is_empty() => EntryPayload::Blank,
        RecordKind::Blank => return Err(format!("blank record carries {} bytes", payload.len())),
        RecordKind::Normal => EntryPayload::Normal(C::decode_data(payload)?),
        RecordKind::Membership => EntryPayload::Membership(decode_membership(payload)?),
    };
    Ok(C::make_entry(log_id, payload))
}

/// Appends `m` in vela-raft's membership record layout (segments and the Raft transport).
pub(crate) fn encode_membership(
    m: &Membership<u64, BasicNode>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let record = MembershipRecord {
        configs: m
            .get_joint_config()
            .iter()
            .map(|set| set.iter().copied().collect())
            .collect(),
        nodes: m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
    };
    postcard::to_io(&record, out)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Reads what [`encode_membership`] wrote; trailing bytes are an error.
pub(crate) fn decode_membership(bytes: &[u8]) -> Result<Membership<u64, BasicNode>, String> {
    let (record, rest) = postcard::take_from_bytes::<MembershipRecord>(bytes)
        .map_err(|e| format!("membership does not decode: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("membership has {} trailing bytes", rest.len()));
    }
    let configs: Vec<BTreeSet<u64>> = record
        .configs
        .into_iter()
        .map(|c| c.into_iter().collect())
        .collect();
    let nodes: BTreeMap<u64, BasicNode> = record
        .nodes
        .into_iter()
        .map(|(id, addr)| (id, BasicNode { addr }))
        .collect();
    Membership::new(configs, nodes).map_err(|e| format!("membership is invalid: {e}"))
}

/// Encodes `value` as application record data in the layout the store and the controller use:
/// an encoding byte, then postcard (for command enums whose variants are only ever appended).
pub fn encode_postcard<T: Serialize>(
    encoding: u8,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    out.push(encoding);
    postcard::to_io(value, out)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Decodes what [`encode_postcard`] wrote with `encoding`; any other encoding byte, a short
/// record or trailing bytes are errors.
pub fn decode_postcard<T: serde::de::DeserializeOwned>(
    encoding: u8,
    bytes: &[u8],
) -> Result<T, String> {
    match bytes.split_first() {
        Some((&found, rest)) if found == encoding => {
            let (value, left) = postcard::take_from_bytes::<T>(rest).map_err(|e| e.to_string())?;
            if !left.is_empty() {
                return Err(format!("record has {} trailing bytes", left.len()));
            }
            Ok(value)
        }
        Some((other, _)) => Err(format!("record encoding {other} is unknown")),
        None => Err("empty record".to_string()),
    }
}

/// `String` data, for tests and simple logs: UTF-8 bytes.
impl RecordData for String {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
        out.extend_from_slice(self.as_bytes());
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postcard_records_carry_their_encoding_and_nothing_else() {
        let mut out = Vec::new();
        encode_postcard(1, &(7u32, "x".to_string()), &mut out).unwrap();
        assert_eq!(out, vec![1, 7, 1, b'x']);
        assert_eq!(
            decode_postcard::<(u32, String)>(1, &out).unwrap(),
            (7, "x".to_string())
        );
        assert!(
            decode_postcard::<(u32, String)>(2, &out).is_err(),
            "unknown encoding"
        );
        out.push(0);
        assert!(
            decode_postcard::<(u32, String)>(1, &out).is_err(),
            "trailing bytes"
        );
        assert!(decode_postcard::<(u32, String)>(1, &[]).is_err(), "empty");
    }
}

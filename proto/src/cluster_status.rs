//! What the members of the cluster's Raft groups report about themselves, and the view of the
//! cluster built from those reports: which node leads each shard, how far each replica lags,
//! whether a shard is healthy. `vela admin cluster status` shows the view; the controller's
//! leader balancing acts on it. Building the view is a pure function of the reports, so it is
//! tested without a cluster.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::{ShardId, TopicName};
use crate::pb::status as pb;

/// A member's role in its Raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MemberRole {
    Leader,
    Follower,
    Candidate,
    Learner,
    /// Its Raft has stopped (shutting down, or a fatal storage error).
    Stopped,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Leader => "leader",
            MemberRole::Follower => "follower",
            MemberRole::Candidate => "candidate",
            MemberRole::Learner => "learner",
            MemberRole::Stopped => "stopped",
        }
    }
}

/// What one member of a Raft group reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub role: MemberRole,
    pub term: u64,
    /// The leader this member knows, if any.
    pub leader: Option<u64>,
    /// The group's voters as this member knows them.
    pub voters: Vec<u64>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Leader only: per member (itself included), the highest log index known replicated to it
    /// (`None`: nothing known yet). Empty on other members.
    pub matched: BTreeMap<u64, Option<u64>>,
    /// The group's learners as this member knows them (members still catching up).
    pub learners: Vec<u64>,
    /// The membership is one configuration (not joint) and applied on this member, so
    /// committed: no change of members is in flight.
    pub membership_settled: bool,
}

/// One store node's replica of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMember {
    pub shard: ShardId,
    pub status: MemberStatus,
    /// The shard's topics with a retention of their own (ms), as this replica applied them:
    /// reported by a leader whose shard applies version 15 or later, `None` otherwise (and by
    /// older builds). The controller's reconciler brings it to what the metadata says.
    pub retention: Option<BTreeMap<TopicName, u64>>,
}

/// A node's report, or why it could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport<T> {
    pub node: u64,
    pub addr: String,
    pub report: Result<T, String>,
}

/// A store node's report: its replica of every shard it holds.
pub type StoreNodeReport = NodeReport<Vec<ShardMember>>;

/// One store node's tiering of one shard (`vela admin tier status`, ADR 0023).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardTier {
    pub shard: ShardId,
    /// This node leads the shard (the leader uploads; every replica evicts).
    pub leader: bool,
    /// The node has a tier configured.
    pub tiering: bool,
    /// Segments in the shard's tier manifest, the log range they hold and their bytes.
    pub tiered_segments: u64,
    pub tiered_first: Option<u64>,
    pub tiered_last: Option<u64>,
    pub tiered_bytes: u64,
    /// This node's local log: range and bytes.
    pub local_first: Option<u64>,
    pub local_last: Option<u64>,
    pub local_bytes: u64,
    /// Sealed local segments not in the tier yet (the upload lag), and their bytes.
    pub pending_segments: u64,
    pub pending_bytes: u64,
    /// The retention floor: the oldest log index still readable.
    pub retained_from: u64,
    /// What this node did since it started: segments uploaded and recorded, their bytes, local
    /// bytes evicted, and when it last uploaded (Unix ms).
    pub uploaded_segments: u64,
    pub uploaded_bytes: u64,
    pub evicted_bytes: u64,
    pub last_upload_ms: Option<i64>,
    /// The last tiering failure, until a pass succeeds.
    pub last_error: Option<String>,
}

/// A store node's tiering report: every shard it holds.
pub type StoreTierReport = NodeReport<Vec<ShardTier>>;

impl ShardTier {
    pub fn to_wire(&self) -> crate::pb::store::ShardTier {
        crate::pb::store::ShardTier {
            shard: self.shard,
            leader: self.leader,
            tiering: self.tiering,
            tiered_segments: self.tiered_segments,
            tiered_first: self.tiered_first,
            tiered_last: self.tiered_last,
            tiered_bytes: self.tiered_bytes,
            local_first: self.local_first,
            local_last: self.local_last,
            local_bytes: self.local_bytes,
            pending_segments: self.pending_segments,
            pending_bytes: self.pending_bytes,
            retained_from: self.retained_from,
            uploaded_segments: self.uploaded_segments,
            uploaded_bytes: self.uploaded_bytes,
            evicted_bytes: self.evicted_bytes,
            last_upload_ms: self.last_upload_ms,
            last_error: self.last_error.clone().unwrap_or_default(),
        }
    }

    pub fn from_wire(w: crate::pb::store::ShardTier) -> Self {
        ShardTier {
            shard: w.shard,
            leader: w.leader,
            tiering: w.tiering,
            tiered_segments: w.tiered_segments,
            tiered_first: w.tiered_first,
            tiered_last: w.tiered_last,
            tiered_bytes: w.tiered_bytes,
            local_first: w.local_first,
            local_last: w.local_last,
            local_bytes: w.local_bytes,
            pending_segments: w.pending_segments,
            pending_bytes: w.pending_bytes,
            retained_from: w.retained_from,
            uploaded_segments: w.uploaded_segments,
            uploaded_bytes: w.uploaded_bytes,
            evicted_bytes: w.evicted_bytes,
            last_upload_ms: w.last_upload_ms,
            last_error: (!w.last_error.is_empty()).then_some(w.last_error),
        }
    }
}
/// A controller node's report: its member of the controller group.
pub type ControllerNodeReport = NodeReport<MemberStatus>;

/// A replica behind the leader by more than this many log entries counts as lagging: the shard
/// is reported degraded and the replica is not given leadership by the balancer.
pub const LAGGING_ENTRIES: u64 = 1000;

/// A shard's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardHealth {
    /// A leader, and every voter reachable and caught up.
    Ok,
    /// A leader, but a voter is unreachable or lags.
    Degraded,
    /// No reachable member leads the shard.
    Unavailable,
}

impl ShardHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            ShardHealth::Ok => "ok",
            ShardHealth::Degraded => "degraded",
            ShardHealth::Unavailable => "unavailable",
        }
    }
}

/// One replica of a shard in the cluster view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    pub node: u64,
    /// `None`: its node did not answer, or answered without this shard.
    pub role: Option<MemberRole>,
    /// Entries behind the leader's last log index; `None` when not known.
    pub lag: Option<u64>,
}

/// One shard in the cluster view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    pub shard: ShardId,
    pub leader: Option<u64>,
    /// The leader's term (without a leader: the highest term any replica reported).
    pub term: u64,
    pub health: ShardHealth,
    /// The leader's last log index.
    pub last_log_index: Option<u64>,
    /// The leader's voters (without a leader: the expected replicas), in node order.
    pub replicas: Vec<ReplicaView>,
}

impl ShardView {
    /// Replicas that answered as followers and are at most `max_lag` entries behind.
    pub fn caught_up_followers(&self, max_lag: u64) -> impl Iterator<Item = u64> + '_ {
        self.replicas
            .iter()
            .filter(move |r| {
                r.role == Some(MemberRole::Follower) && r.lag.is_some_and(|lag| lag <= max_lag)
            })
            .map(|r| r.node)
    }
}

/// Builds the view of every shard in `expected` (shard → the store nodes expected to hold it)
/// from the store nodes' reports. A shard's leader is the answering member that reports leading
/// it with the highest term (a deposed leader cut off from its peers may still think it leads,
/// in an older term). Lag comes from the leader's replication progress.
pub fn shard_views(
    expected: &BTreeMap<ShardId, Vec<u64>>,
    reports: &[StoreNodeReport],
) -> Vec<ShardView> {
    // shard → node → what that node's replica reports
    let mut members: BTreeMap<ShardId, BTreeMap<u64, &MemberStatus>> = BTreeMap::new();
    for report in reports {
        if let Ok(shards) = &report.report {
            for m in shards {
                members
                    .entry(m.shard)
                    .or_default()
                    .insert(report.node, &m.status);
            }
        }
    }
    let shard_ids: BTreeSet<ShardId> = expected.keys().chain(members.keys()).copied().collect();
    let empty = BTreeMap::new();
    shard_ids
        .into_iter()
        .map(|shard| {
            let reported = members.get(&shard).unwrap_or(&empty);
            let leader = reported
                .iter()
                .filter(|(_, s)| s.role == MemberRole::Leader)
                .max_by_key(|(node, s)| (s.term, std::cmp::Reverse(**node)))
                .map(|(node, s)| (*node, *s));
            let mut nodes: BTreeSet<u64> = match leader {
                Some((_, s)) => s.voters.iter().copied().collect(),
                None => expected
                    .get(&shard)
                    .into_iter()
                    .flatten()
                    .copied()
                    .collect(),
            };
            nodes.extend(reported.keys().copied());
            let replicas: Vec<ReplicaView> = nodes
                .into_iter()
                .map(|node| {
                    let role = reported.get(&node).map(|s| s.role);
                    let lag = leader.and_then(|(_, l)| {
                        let last = l.last_log_index.unwrap_or(0);
                        match l.matched.get(&node) {
                            Some(Some(index)) => Some(last.saturating_sub(*index)),
                            Some(None) => Some(last),
                            None => None,
                        }
                    });
                    ReplicaView { node, role, lag }
                })
                .collect();
            let health = match leader {
                None => ShardHealth::Unavailable,
                Some((_, l)) => {
                    let voters: BTreeSet<u64> = l.voters.iter().copied().collect();
                    let all_fine = replicas
                        .iter()
                        .filter(|r| voters.contains(&r.node))
                        .all(|r| {
                            r.role.is_some_and(|role| role != MemberRole::Stopped)
                                && r.lag.is_some_and(|lag| lag <= LAGGING_ENTRIES)
                        });
                    if all_fine {
                        ShardHealth::Ok
                    } else {
                        ShardHealth::Degraded
                    }
                }
            };
            ShardView {
                shard,
                leader: leader.map(|(node, _)| node),
                term: leader.map_or_else(
                    || reported.values().map(|s| s.term).max().unwrap_or(0),
                    |(_, s)| s.term,
                ),
                health,
                last_log_index: leader.and_then(|(_, s)| s.last_log_index),
                replicas,
            }
        })
        .collect()
}

/// The shards some node that answered reports leading.
pub fn led_shards(reports: &[StoreNodeReport]) -> BTreeSet<ShardId> {
    reports
        .iter()
        .filter_map(|r| r.report.as_ref().ok())
        .flatten()
        .filter(|m| m.status.role == MemberRole::Leader)
        .map(|m| m.shard)
        .collect()
}

/// How many shards each node leads, for every node that answered (nodes leading nothing
/// included).
pub fn leader_counts(reports: &[StoreNodeReport], views: &[ShardView]) -> BTreeMap<u64, u32> {
    let mut counts: BTreeMap<u64, u32> = reports
        .iter()
        .filter(|r| r.report.is_ok())
        .map(|r| (r.node, 0))
        .collect();
    for view in views {
        if let Some(leader) = view.leader {
            *counts.entry(leader).or_default() += 1;
        }
    }
    counts
}

/// How long a node may take to report its status before it is listed as unreachable.
pub const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Asks every node of `clients` at once with `ask` (each within [`STATUS_TIMEOUT`]) and
/// turns each answer with `decode`; a node that fails or does not answer in time is listed
/// with the reason. `addrs` names each node's address.
pub(crate) async fn ask_each<C, R, T, Ask, Fut, Decode>(
    clients: &BTreeMap<u64, C>,
    addrs: &BTreeMap<u64, String>,
    ask: Ask,
    decode: Decode,
) -> Vec<NodeReport<T>>
where
    C: Clone,
    Ask: Fn(C) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    Decode: Fn(R) -> Result<T, String>,
{
    let asks = clients.iter().map(|(&node, client)| {
        let call = ask(client.clone());
        let decode = &decode;
        async move {
            let report = match tokio::time::timeout(STATUS_TIMEOUT, call).await {
                Ok(Ok(reply)) => decode(reply.into_inner()),
                Ok(Err(status)) => Err(status.message().to_owned()),
                Err(_) => Err(format!("no answer within {STATUS_TIMEOUT:?}")),
            };
            NodeReport {
                node,
                addr: addrs.get(&node).cloned().unwrap_or_default(),
                report,
            }
        }
    });
    futures::future::join_all(asks).await
}

/// Wire conversions of [`MemberStatus`] (`vela.status.v1`).
pub fn member_to_wire(s: &MemberStatus) -> pb::MemberStatus {
    pb::MemberStatus {
        role: role_to_wire(s.role) as i32,
        term: s.term,
        leader: s.leader,
        voters: s.voters.clone(),
        last_log_index: s.last_log_index,
        applied_index: s.applied_index,
        matched: s
            .matched
            .iter()
            .map(|(&node, &index)| pb::Matched { node, index })
            .collect(),
        learners: s.learners.clone(),
        membership_settled: s.membership_settled,
    }
}

/// Reads a member status off the wire; an unknown role (a newer peer's) is an error.
pub fn member_from_wire(s: pb::MemberStatus) -> Result<MemberStatus, String> {
    let role = match pb::MemberRole::try_from(s.role) {
        Ok(pb::MemberRole::Leader) => MemberRole::Leader,
        Ok(pb::MemberRole::Follower) => MemberRole::Follower,
        Ok(pb::MemberRole::Candidate) => MemberRole::Candidate,
        Ok(pb::MemberRole::Learner) => MemberRole::Learner,
        Ok(pb::MemberRole::Stopped) => MemberRole::Stopped,
        Ok(pb::MemberRole::Unspecified) | Err(_) => {
            return Err(format!("unknown member role {}", s.role));
        }
    };
    Ok(MemberStatus {
        role,
        term: s.term,
        leader: s.leader,
        voters: s.voters,
        last_log_index: s.last_log_index,
        applied_index: s.applied_index,
        matched: s.matched.into_iter().map(|m| (m.node, m.index)).collect(),
        learners: s.learners,
        membership_settled: s.membership_settled,
    })
}

fn role_to_wire(role: MemberRole) -> pb::MemberRole {
    match role {
        MemberRole::Leader => pb::MemberRole::Leader,
        MemberRole::Follower => pb::MemberRole::Follower,
        MemberRole::Candidate => pb::MemberRole::Candidate,
        MemberRole::Learner => pb::MemberRole::Learner,
        MemberRole::Stopped => pb::MemberRole::Stopped,
    }
}

#[cfg(test)]
#[path = "cluster_status/tests.rs"]
mod tests;

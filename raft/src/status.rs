//! A member's report about itself ([`MemberStatus`]) from openraft's metrics, for the store's
//! shards and the controller group alike.

use std::collections::BTreeMap;

use openraft::{RaftMetrics, ServerState};
use vela_proto::cluster_status::{MemberRole, MemberStatus};

use crate::entry::LogTypes;

/// What `metrics` (a member's current metrics) says about that member. On a leader, `matched`
/// lists every member it replicates to, itself included (at its own last log index).
pub fn member_status<C: LogTypes>(metrics: &RaftMetrics<C>) -> MemberStatus {
    let role = match metrics.state {
        ServerState::Leader => MemberRole::Leader,
        ServerState::Follower => MemberRole::Follower,
        ServerState::Candidate => MemberRole::Candidate,
        ServerState::Learner => MemberRole::Learner,
        ServerState::Shutdown => MemberRole::Stopped,
    };
    let role = if metrics.running_state.is_err() {
        MemberRole::Stopped
    } else {
        role
    };
    let mut matched: BTreeMap<u64, Option<u64>> = BTreeMap::new();
    if role == MemberRole::Leader {
        if let Some(replication) = &metrics.replication {
            for (node, log_id) in replication {
                matched.insert(*node, log_id.as_ref().map(|l| l.index));
            }
        }
        matched.insert(metrics.id, metrics.last_log_index);
    }
    MemberStatus {
        role,
        term: metrics.current_term,
        leader: metrics.current_leader,
        voters: metrics.membership_config.membership().voter_ids().collect(),
        last_log_index: metrics.last_log_index,
        applied_index: metrics.last_applied.as_ref().map(|l| l.index),
        matched,
        learners: metrics
            .membership_config
            .membership()
            .learner_ids()
            .collect(),
        membership_settled: membership_settled(metrics),
    }
}

/// Whether `metrics`' membership is a single configuration and applied (hence committed).
fn membership_settled<C: LogTypes>(metrics: &RaftMetrics<C>) -> bool {
    let stored = &metrics.membership_config;
    let uniform = stored.membership().get_joint_config().len() <= 1;
    let at = stored.log_id().as_ref().map(|l| l.index);
    let applied = metrics.last_applied.as_ref().map(|l| l.index);
    uniform && at <= applied
}

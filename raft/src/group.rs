//! Starting one member of a Raft group with peers: the replicated counterpart of
//! [`single_node`](crate::single_node). Membership is initialized only on a fresh log and only
//! with the voters every member is started with, so every member may run the same start routine
//! (openraft accepts the same initial membership on each of them) and a restart resumes the group.

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::network::{NetSnapshot, RaftNetworkFactory};
use openraft::storage::RaftStateMachine;
use openraft::{Config, Raft};

use crate::SegmentLogStore;
use crate::entry::LogTypes;
use crate::single_node::StartError;

/// Starts `node_id` as a member of the group whose initial voters are `voters` (which must name
/// `node_id`). An existing member resumes from its log. A fresh one initializes the membership
/// only when `initialize` is set (the group is being created); otherwise it waits, empty, for
/// the group to reach it. Returns at once: the caller waits for a leader if it needs one.
pub async fn start_member<C, SM, N>(
    node_id: C::NodeId,
    voters: BTreeMap<C::NodeId, C::Node>,
    config: Config,
    network: N,
    log: SegmentLogStore<C>,
    sm: SM,
    initialize: bool,
) -> Result<Raft<C, SM>, StartError>
where
    C: LogTypes,
    SM: RaftStateMachine<C>,
    N: RaftNetworkFactory<C>,
    N::Network: NetSnapshot<C, SnapshotData = SM::SnapshotData>,
{
    let fatal = |e: &dyn std::fmt::Display| StartError::Fatal {
        node: node_id.to_string(),
        reason: e.to_string(),
    };
    if !voters.contains_key(&node_id) {
        return Err(StartError::Initialize {
            node: node_id.to_string(),
            reason: "the node is not one of the group's initial voters".into(),
        });
    }
    let config = Arc::new(config.validate()?);
    let raft = Raft::new(node_id, config, network, log, sm)
        .await
        .map_err(|e| fatal(&e))?;
    let initialized = raft.is_initialized().await.map_err(|e| fatal(&e))?;
    if !initialized && !initialize {
        tracing::warn!(
            node = %node_id,
            "raft group member has an empty log and was not asked to create the group; waiting \
             for the group to reach it"
        );
    } else if !initialized {
        let count = voters.len();
        if let Err(e) = raft.initialize(voters).await {
            // Another member's initialization may have reached this one first: that is the
            // same membership, and this member is initialized now.
            let now = raft.is_initialized().await.map_err(|e| fatal(&e))?;
            if !now {
                if let Err(err) = raft.shutdown().await {
                    tracing::warn!(error = %err, "shutting down raft after a failed start");
                }
                return Err(StartError::Initialize {
                    node: node_id.to_string(),
                    reason: e.to_string(),
                });
            }
        } else {
            tracing::info!(node = %node_id, voters = count, "initialized raft group membership");
        }
    }
    Ok(raft)
}

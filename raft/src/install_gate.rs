//! One snapshot install at a time per group member, each run to its end, with nothing appended
//! to the member's log meanwhile.
//!
//! A state machine may take long to install a snapshot (a store replica first copies the log
//! and index the snapshot needs from another member, and rewrites its log with them). Two
//! things must not happen meanwhile. The leader's request times out and it sends the snapshot
//! again; openraft answers a repeated install of the snapshot in progress at once, and the
//! leader would then send the entries after it while the first install is still rewriting the
//! log under them. And openraft, having accepted the snapshot, accepts `AppendEntries` after
//! it (from this leader or a new one) and appends them to the log being rewritten. So the
//! transports hold a repeated install until the one in progress has finished, hold every
//! `AppendEntries` to the member while an install is in progress (the leader sees a slow
//! follower and retries), keep the member from running for election meanwhile (its heartbeats
//! are held too), and run each install in a task of its own, so a request that goes away (a
//! deadline, a dropped connection) cannot end the wait early.

use std::collections::HashMap;
use std::sync::Arc;

use openraft::error::Fatal;
use openraft::raft::SnapshotResponse;
use openraft::storage::RaftStateMachine;
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{Raft, RaftTypeConfig};
use parking_lot::Mutex;

/// One member's gate: held exclusively by the install in progress, passed shared by appends.
type Gate = Arc<tokio::sync::RwLock<()>>;

/// The install gates of one node (or of an in-process hub), by (group, member).
#[derive(Default)]
pub(crate) struct InstallGates {
    gates: Mutex<HashMap<(u64, u64), Gate>>,
}

impl InstallGates {
    /// Installs `snapshot` on `raft` (member `key.1` of group `key.0`) once no other install of
    /// that member is in progress.
    pub(crate) async fn install<C, SM>(
        &self,
        key: (u64, u64),
        raft: Raft<C, SM>,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, SM::SnapshotData>,
    ) -> Result<SnapshotResponse<C>, String>
    where
        C: RaftTypeConfig,
        SM: RaftStateMachine<C>,
    {
        let gate = self.gates.lock().entry(key).or_default().clone();
        tokio::spawn(async move {
            let _one_at_a_time = gate.write().await;
            // With appends held, heartbeats are too: the member must not take them missing for
            // a dead leader and run for election with a log it is still rewriting.
            raft.runtime_config().elect(false);
            let installed = raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(|e: Fatal<C>| e.to_string());
            raft.runtime_config().elect(true);
            installed
        })
        .await
        .map_err(|e| format!("snapshot install task: {e}"))?
    }

    /// Waits until no install of member `key.1` of group `key.0` is in progress (at once when
    /// none is): an `AppendEntries` passes here before it reaches the member.
    pub(crate) async fn pass(&self, key: (u64, u64)) {
        let gate = self.gates.lock().get(&key).cloned();
        if let Some(gate) = gate {
            drop(gate.read().await);
        }
    }
}

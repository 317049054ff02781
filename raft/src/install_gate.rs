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
//! are held too, and so are leadership transfers to it), and run each install in a task of its own, so a request that goes away (a
//! deadline, a dropped connection) cannot end the wait early.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use openraft::error::Fatal;
use openraft::raft::SnapshotResponse;
use openraft::storage::RaftStateMachine;
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{Raft, RaftTypeConfig};
use parking_lot::Mutex;

/// One member's gate: held exclusively by the install in progress, shared by appends and
/// leadership transfers while they run; `installs` counts the installs holding or awaiting it.
#[derive(Default)]
struct Gate {
    lock: Arc<tokio::sync::RwLock<()>>,
    installs: AtomicUsize,
}

/// What an `AppendEntries` or a leadership transfer holds while it reaches the member: no
/// install of the member starts before it is dropped.
pub(crate) type Passage = Option<tokio::sync::OwnedRwLockReadGuard<()>>;

/// The install gates of one node (or of an in-process hub), by (group, member).
#[derive(Default)]
pub(crate) struct InstallGates {
    gates: Mutex<HashMap<(u64, u64), Arc<Gate>>>,
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
            gate.installs.fetch_add(1, Ordering::AcqRel);
            let one_at_a_time = gate.lock.clone().write_owned().await;
            // With appends held, heartbeats are too: the member must not take them missing for
            // a dead leader and run for election with a log it is still rewriting.
            raft.runtime_config().elect(false);
            let installed = raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(|e: Fatal<C>| e.to_string());
            // The held appends go first; elections resume once no install holds or awaits the
            // gate (a later one turns them off again when it takes the gate).
            drop(one_at_a_time);
            if gate.installs.fetch_sub(1, Ordering::AcqRel) == 1 {
                raft.runtime_config().elect(true);
            }
            installed
        })
        .await
        .map_err(|e| format!("snapshot install task: {e}"))?
    }

    /// Waits until no install of member `key.1` of group `key.0` is in progress (at once when
    /// none is) and keeps any from starting until the returned passage is dropped: an
    /// `AppendEntries` or a leadership transfer holds it while it reaches the member.
    pub(crate) async fn pass(&self, key: (u64, u64)) -> Passage {
        let gate = self.gates.lock().get(&key).cloned();
        match gate {
            Some(gate) => Some(gate.lock.clone().read_owned().await),
            None => None,
        }
    }
}

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

use openraft::error::Fatal;
use openraft::raft::SnapshotResponse;
use openraft::storage::RaftStateMachine;
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{Raft, RaftTypeConfig};
use parking_lot::Mutex;

/// One member's gate: held exclusively by the install in progress, shared by appends and
/// leadership transfers while they run.
#[derive(Default)]
struct Gate {
    lock: Arc<tokio::sync::RwLock<()>>,
    elections: Mutex<Elections>,
}

/// The installs holding or awaiting a member's gate, and how to turn elections back on for
/// every Raft of the member that an install turned them off for (a replica reopened meanwhile
/// is a new Raft: elections come back on for it too, not only for the stopped one). Counted and
/// switched under one lock, so an install that finishes cannot turn elections on while a
/// later one is installing.
#[derive(Default)]
struct Elections {
    installs: usize,
    resume: Vec<Box<dyn FnOnce() + Send>>,
}

impl Gate {
    /// An install holds or awaits the gate.
    fn awaiting(&self) {
        self.elections.lock().installs += 1;
    }

    /// The install holding the gate turns elections off (`off`) and leaves how to turn them
    /// back on (`on`) for when no install holds or awaits the gate.
    fn hold_elections(&self, off: impl FnOnce(), on: Box<dyn FnOnce() + Send>) {
        let mut elections = self.elections.lock();
        off();
        elections.resume.push(on);
    }

    /// An install ended: the last one turns elections back on for every Raft turned off.
    fn finished(&self) {
        let mut elections = self.elections.lock();
        elections.installs = elections.installs.saturating_sub(1);
        if elections.installs == 0 {
            for resume in std::mem::take(&mut elections.resume) {
                resume();
            }
        }
    }
}

/// What an `AppendEntries` or a leadership transfer holds while it reaches the member: no
/// install of the member starts before it is dropped.
pub(crate) type Passage = tokio::sync::OwnedRwLockReadGuard<()>;

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
            gate.awaiting();
            let one_at_a_time = gate.lock.clone().write_owned().await;
            // With appends held, heartbeats are too: the member must not take them missing for
            // a dead leader and run for election with a log it is still rewriting.
            let (off, on) = (raft.clone(), raft.clone());
            gate.hold_elections(
                move || off.runtime_config().elect(false),
                Box::new(move || on.runtime_config().elect(true)),
            );
            let installed = raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(|e: Fatal<C>| e.to_string());
            // The held appends go first; elections resume once no install holds or awaits the
            // gate (a later one turns them off again when it takes the gate).
            drop(one_at_a_time);
            gate.finished();
            installed
        })
        .await
        .map_err(|e| format!("snapshot install task: {e}"))?
    }

    /// Waits until no install of member `key.1` of group `key.0` is in progress (at once when
    /// none is) and keeps any from starting until the returned passage is dropped: an
    /// `AppendEntries` or a leadership transfer holds it while it reaches the member.
    pub(crate) async fn pass(&self, key: (u64, u64)) -> Passage {
        // Made if missing: an install that starts while this passage is held must wait for it.
        let gate = self.gates.lock().entry(key).or_default().clone();
        gate.lock.clone().read_owned().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn switch() -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(true))
    }

    fn hold(gate: &Gate, elect: &Arc<AtomicBool>) {
        let (off, on) = (elect.clone(), elect.clone());
        gate.hold_elections(
            move || off.store(false, Ordering::SeqCst),
            Box::new(move || on.store(true, Ordering::SeqCst)),
        );
    }

    /// An install that ends while another awaits the gate leaves elections off; the last one
    /// turns them back on, for the Raft the first install turned off (since reopened) as well
    /// as for the new one.
    #[test]
    fn elections_come_back_only_when_the_last_install_ends_and_for_every_raft() {
        let gate = Gate::default();
        let (old, new) = (switch(), switch());
        gate.awaiting();
        hold(&gate, &old);
        gate.awaiting();
        gate.finished();
        assert!(
            !old.load(Ordering::SeqCst),
            "another install awaits the gate"
        );
        hold(&gate, &new);
        assert!(!new.load(Ordering::SeqCst));
        gate.finished();
        assert!(old.load(Ordering::SeqCst) && new.load(Ordering::SeqCst));
    }

    /// A passage is a gate of its own even when no install ever ran: an install that starts
    /// while it is held waits.
    #[tokio::test]
    async fn a_passage_keeps_an_install_out_even_before_any_install_ran() {
        let gates = InstallGates::default();
        let passage = gates.pass((7, 1)).await;
        let gate = gates
            .gates
            .lock()
            .get(&(7, 1))
            .cloned()
            .expect("made by pass");
        assert!(gate.lock.clone().try_write_owned().is_err());
        drop(passage);
        assert!(gate.lock.clone().try_write_owned().is_ok());
    }
}

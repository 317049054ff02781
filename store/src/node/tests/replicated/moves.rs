//! Replica moves under faults (ADR 0014): a placed shard's replicas move around four nodes,
//! {1,2,3} → {2,3,4} → {1,3,4} → {1,2,4} → {1,2,3}, while a producer sends to whichever node
//! leads it and a consumer receives and acks there. The test drives each move the way the
//! controller's reconciler does, one observed step at a time (open the replica on a new member,
//! change the members on the leader, remove a replica that is no longer a member; a member
//! whose replica is lost leaves first and joins again empty), and at a step the seed picks it
//! cuts the power of a node the seed picks (the joining one, the leaving one, the leader or a
//! bystander; its disk drops every unsynced write, and one time in three its replica's directory
//! is gone too, a lost replica) and restarts it a few steps later. The
//! oracle of `faults` checks that every acknowledged send is delivered, that nothing is
//! delivered after its ack was acknowledged and that nothing is stored twice; and once the
//! load stops, the final members, having applied the same log, must hold the same state.
//!
//! Seeds as in `faults`: `VELA_SIM_SEED=<n>` reruns one, `VELA_SIM_SEEDS`/`VELA_SIM_SEED_BASE`
//! sweep more.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::faults::{Clients, Load, sweep_seeds};
use super::*;

const PLACED: ShardId = 7;

/// The moves, in order (each from the one before; the shard starts on the first).
const MOVES: [[NodeId; 3]; 5] = [[1, 2, 3], [2, 3, 4], [1, 3, 4], [1, 2, 4], [1, 2, 3]];
/// Observed steps a move may take before the test gives up on it.
const MAX_STEPS: usize = 300;

/// What the placed shard's leader reports (the running node that leads it in the highest term).
struct Group {
    leader: NodeId,
    voters: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    /// One configuration, applied.
    settled: bool,
}

fn led_group(cluster: &Cluster) -> Option<Group> {
    let nodes = cluster.nodes.lock();
    nodes
        .iter()
        .filter_map(|(&id, store)| {
            let raft = store
                .shard_rafts()
                .into_iter()
                .find(|(s, _)| *s == PLACED)?
                .1;
            let m = raft.metrics().borrow_watched().clone();
            (m.running_state.is_ok() && m.current_leader == Some(id) && raft.is_leader())
                .then_some((id, m))
        })
        .max_by_key(|(_, m)| m.current_term)
        .map(|(leader, m)| {
            let membership = m.membership_config.membership();
            let at = m.membership_config.log_id().as_ref().map(|l| l.index);
            Group {
                leader,
                voters: membership.voter_ids().collect(),
                learners: membership.learner_ids().collect(),
                settled: membership.get_joint_config().len() <= 1
                    && at <= m.last_applied.as_ref().map(|l| l.index),
            }
        })
}

/// Whether running node `id` serves a replica of the placed shard (one whose Raft did not stop).
pub(super) fn holds(cluster: &Cluster, id: NodeId) -> bool {
    cluster
        .node(id)
        .shard_rafts()
        .iter()
        .any(|(s, raft)| *s == PLACED && raft.metrics().borrow_watched().running_state.is_ok())
}

/// One observed step toward `target` (what a reconciler round does); `true` once the shard's
/// voters are `target`, every running member serves it and no other running node holds it.
pub(super) async fn step(cluster: &Cluster, target: &BTreeSet<NodeId>) -> bool {
    let Some(g) = led_group(cluster) else {
        return false;
    };
    let running: BTreeSet<NodeId> = cluster.running().into_iter().collect();
    let replicas = members_of(cluster, &target.iter().copied().collect::<Vec<_>>());
    let members: BTreeSet<NodeId> = g.voters.union(&g.learners).copied().collect();
    let mut lost = BTreeSet::new();
    for &id in target.intersection(&running) {
        if holds(cluster, id) {
            continue;
        }
        let mode = if members.contains(&id) {
            OpenMode::Resume
        } else {
            OpenMode::Join
        };
        match cluster
            .node(id)
            .open_shard(PLACED, replicas.clone(), mode)
            .await
        {
            Ok(raft) => cluster.register(PLACED, id, raft),
            Err(StoreError::ReplicaLost(_)) => {
                lost.insert(id);
            }
            Err(_) => {}
        }
    }
    let goal: BTreeSet<NodeId> = if lost.is_empty() {
        target.clone()
    } else {
        g.voters.difference(&lost).copied().collect()
    };
    if g.voters != goal || members != goal || !g.settled {
        let addrs = members_of(cluster, &goal.iter().copied().collect::<Vec<_>>());
        let leader = cluster.node(g.leader);
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            leader.change_members(PLACED, &addrs),
        )
        .await;
        return false;
    }
    let mut done = true;
    for &id in &running {
        if target.contains(&id) {
            done &= holds(cluster, id);
            continue;
        }
        if cluster.node(id).shard_ids().contains(&PLACED) {
            done = false;
            if cluster.node(id).remove_shard(PLACED).await.is_ok() {
                cluster.hub.unregister(u64::from(PLACED), id);
            }
        }
    }
    done
}

async fn schedule(seed: u64) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let (clock, shared) = manual_clock();
    let mut cluster = Cluster::start_on(Transport::InProcess, &[1, 2, 3, 4], seed, shared).await;
    cluster.leader().await;
    let first = members_of(&cluster, &MOVES[0]);
    for id in MOVES[0] {
        let raft = cluster
            .node(id)
            .open_shard(PLACED, first.clone(), OpenMode::Create)
            .await
            .expect("opens");
        cluster.register(PLACED, id, raft);
    }
    cluster.current_apply_version().await;
    let load = Load::start(
        Clients::Placed(cluster.nodes.clone(), PLACED),
        format!("m{seed}"),
    );
    let mut log = Vec::new();
    for target in &MOVES[1..] {
        let target: BTreeSet<NodeId> = target.iter().copied().collect();
        let cut_at = rng.random_range(0..6);
        let back_after = rng.random_range(1..6);
        let victim: NodeId = rng.random_range(1..=4);
        let wipe = rng.random_range(0..3) == 0;
        log.push(format!("move to {target:?}"));
        let mut down_since = None;
        for n in 0.. {
            if n == cut_at && cluster.running().contains(&victim) {
                cluster.power_cut(victim).await;
                log.push(format!("power cut {victim} at step {n}"));
                let dir = std::path::PathBuf::from(format!("/data/store-{victim}/shards/{PLACED}"));
                if wipe && cluster.disks[&victim].is_dir(&dir) {
                    vela_raft::vfs::remove_dir_all(&cluster.disks[&victim], &dir)
                        .expect("wipes the replica");
                    log.push(format!("wiped {victim}'s replica"));
                }
                down_since = Some(n);
            }
            if down_since.is_some_and(|since| n >= since + back_after) {
                cluster.open(victim).await;
                log.push(format!("restart {victim} at step {n}"));
                down_since = None;
            }
            if down_since.is_none() && step(&cluster, &target).await {
                log.push(format!("moved in {n} steps"));
                break;
            }
            assert!(
                n < MAX_STEPS,
                "seed {seed}: the move to {target:?} never finished; schedule {log:?}"
            );
            tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
        }
    }
    load.finish(
        cluster,
        &clock,
        PLACED,
        &MOVES[MOVES.len() - 1],
        &format!("seed {seed}; schedule {log:?}"),
    )
    .await;
}

#[test]
fn acknowledged_sends_and_acks_survive_replica_moves_with_a_node_killed_midway() {
    sweep_seeds("replica moves with a power cut", 2, schedule);
}

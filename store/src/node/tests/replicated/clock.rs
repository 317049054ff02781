//! Clock jumps: one node's wall clock steps forward or back (NTP stepping a drifted clock, a VM
//! resumed after a pause) by up to an hour, while it leads or follows, under the load and the
//! oracle of the fault schedules (see `faults`). Leadership is moved meanwhile (the leader is
//! partitioned away or loses power), so a jumped leader hands over to a correct one and back,
//! and sends are left ambiguous across a jump: a send whose first attempt was stored before a
//! jump and retried after it must still be stored once. Afterwards every clock is set right,
//! time passes beyond the furthest jump (so deadlines a forward-jumped leader set are due), and
//! the rest is drained.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::faults::{loaded_cluster, sweep_seeds};
use super::*;

/// Steps of a schedule (each a fault or a pause, then 0.2–0.8 s of load).
const STEPS: usize = 10;
/// The largest jump, either way.
const MAX_JUMP_MS: i64 = 3_600_000;

async fn schedule(seed: u64, transport: Transport) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let (clock, mut cluster, mut load) = loaded_cluster(transport, seed, "c").await;
    let faults = cluster.faults.clone();
    let mut log = Vec::new();
    let mut partitioned = false;
    // The furthest any clock was ahead of the cluster's.
    let mut furthest_ahead = 0i64;
    for step in 0..STEPS {
        if partitioned {
            faults.heal();
            partitioned = false;
            log.push("heal".to_string());
        }
        let voters: Vec<NodeId> = cluster.voters.iter().copied().collect();
        for id in voters {
            if !cluster.running().contains(&id) {
                cluster.open(id).await;
                log.push(format!("restart {id}"));
            }
        }
        // Every other step jumps a clock; the rest move leadership or let time pass.
        let choice = if step % 2 == 0 {
            0
        } else {
            rng.random_range(1..5)
        };
        match choice {
            0 => {
                let running = cluster.running();
                let leader = agreed_leader(&cluster.nodes);
                let id = match leader {
                    Some(l) if rng.random_bool(0.6) => l,
                    _ => running[rng.random_range(0..running.len())],
                };
                let by = rng.random_range(1_000..=MAX_JUMP_MS);
                let by = if rng.random_bool(0.6) { by } else { -by };
                cluster.jump_clock(id, by);
                let skew = cluster.skews[&id].load(Ordering::SeqCst);
                furthest_ahead = furthest_ahead.max(skew);
                let role = if leader == Some(id) { "leader" } else { "node" };
                log.push(format!("{role} {id} clock {by:+} ms (now {skew:+})"));
            }
            1 => {
                if let Some(leader) = agreed_leader(&cluster.nodes) {
                    let rest: Vec<NodeId> = cluster
                        .voters
                        .iter()
                        .copied()
                        .filter(|&n| n != leader)
                        .collect();
                    faults.partition(&[leader], &rest);
                    partitioned = true;
                    log.push(format!("partition {leader} from {rest:?}"));
                }
            }
            2 => {
                if let Some(leader) = agreed_leader(&cluster.nodes) {
                    cluster.power_cut(leader).await;
                    log.push(format!("power cut {leader}"));
                }
            }
            _ => {
                let by = rng.random_range(100..5_000);
                clock.advance(Duration::from_millis(by));
                log.push(format!("{by} ms pass"));
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..800))).await;
    }

    load.stop_producing().await;

    // Calm: heal, every node back, every clock right again, and time past the furthest jump.
    faults.heal();
    for id in cluster.voters.clone() {
        if !cluster.running().contains(&id) {
            cluster.open(id).await;
        }
    }
    cluster.correct_clocks();
    clock.advance(Duration::from_millis(
        u64::try_from(furthest_ahead).unwrap_or(0),
    ));
    let mut agreed = Vec::new();
    for shard in SHARDS {
        let voters: Vec<NodeId> = cluster.voters.iter().copied().collect();
        if let Err(why) = super::agree::replicas_agree(&cluster, shard, &voters).await {
            agreed.push(why);
        }
    }
    let o = load.drain(&clock).await;
    let context = format!("seed {seed} ({transport:?}); schedule {log:?}");
    eprintln!(
        "{context}: {} of {} sends acknowledged, {} acks, {} bodies delivered",
        o.sent.len(),
        o.attempted.len(),
        o.acked.len(),
        o.delivered.len()
    );
    o.check(&context);
    assert!(agreed.is_empty(), "{context}: {agreed:?}");
    cluster.shutdown().await;
}

#[test]
fn acknowledged_sends_and_acks_survive_clock_jumps() {
    sweep_seeds("clock jump schedule", 3, |seed| {
        schedule(seed, Transport::InProcess)
    });
}

#[test]
fn acknowledged_sends_and_acks_survive_clock_jumps_over_grpc_through_remote_store() {
    sweep_seeds(
        "clock jump schedule over gRPC, clients through RemoteStore",
        2,
        |seed| schedule(seed, Transport::Grpc),
    );
}

//! A rolling upgrade under load: every node starts on a build that knows only the previous
//! apply version, then one at a time (in an order drawn from the seed) takes a snapshot, stops
//! cleanly (handing its leadership over), and comes back on this build, while a producer and a
//! consumer run through whichever node leads, checked by the oracle of the fault schedules. The
//! shards must keep the old semantics (and the snapshot format an old build reads) while any
//! node runs the old build, and move up by themselves once the last one is upgraded.
//!
//! In process the builds differ in what they report (`Builds`), not in their code: this checks
//! the upgrade protocol and the data under it, not the wire between two real binaries.

use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use super::faults::{Clients, Load, sweep_seeds};
use super::*;

async fn schedule(seed: u64) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let old = crate::state::APPLY_VERSION - 1;
    let (clock, shared) = manual_clock();
    let ids = [1, 2, 3];
    let mut cluster = Cluster::start_with_builds(
        Transport::InProcess,
        &ids,
        seed,
        shared,
        ids.iter().map(|&id| (id, old)).collect(),
    )
    .await;
    cluster.leader().await;
    until_versions(&cluster, old, Duration::from_secs(10)).await;
    let load = Load::start(Clients::Leader(cluster.nodes.clone()), format!("r{seed}"));
    let mut order = ids.to_vec();
    order.shuffle(&mut rng);
    let mut log = Vec::new();
    for (step, &id) in order.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..800))).await;
        // Restarted from a snapshot of the format the old build writes.
        cluster
            .node(id)
            .snapshot()
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: node {id} snapshots: {e}"));
        cluster.stop(id).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
        cluster.builds.planted.lock().remove(&id);
        cluster.open(id).await;
        log.push(format!("node {id} upgraded"));
        if step + 1 < order.len() {
            let versions = apply_versions(&cluster);
            assert!(
                versions.iter().all(|v| v.is_some_and(|v| v <= old)),
                "seed {seed}; {log:?}: a shard passed version {old} while a node runs the old \
                 build: {versions:?}"
            );
        }
    }
    until_versions(
        &cluster,
        crate::state::APPLY_VERSION,
        Duration::from_secs(15),
    )
    .await;
    // Sends go on under the new semantics, then everything is drained.
    tokio::time::sleep(Duration::from_millis(rng.random_range(300..800))).await;
    let context = format!("seed {seed}; rolling upgrade {log:?}");
    load.finish(cluster, &clock, 0, &ids, &context).await;
}

#[test]
fn acknowledged_sends_and_acks_survive_a_rolling_upgrade() {
    sweep_seeds("rolling upgrade", 2, schedule);
}

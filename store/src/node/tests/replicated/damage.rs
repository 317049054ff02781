//! A replica damaged while its node was down (ADR 0014, `node::damaged`): a segment file of the
//! placed shard is truncated, or has a bit flipped, on one member while it is down; the member
//! restarts. The damage is found (at open, or by the scrub that follows a start), the replica
//! is set aside and not served (so it neither votes nor counts toward a quorum), and it is
//! copied again from the other members, driven the way the controller's reconciler does. The
//! node's other shards keep serving meanwhile. The seeded schedule does it under load and
//! checks the `faults` oracle and that the members end up holding the same state.
//!
//! Seeds as in `faults`: `VELA_SIM_SEED=<n>` reruns one, `VELA_SIM_SEEDS`/`VELA_SIM_SEED_BASE`
//! sweep more.

use std::path::{Path, PathBuf};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::faults::{Clients, Load, sweep_seeds};
use super::members::{drain_from, fill, lead_on, place};
use super::moves::{holds, step};
use super::*;

const PLACED: ShardId = 7;
/// Observed steps the repair may take before the test gives up on it.
const MAX_STEPS: usize = 300;

/// Segments of 8 KiB, so a little traffic seals several; no retention.
fn small_segments(id: NodeId) -> StoreConfig {
    StoreConfig {
        segment_size: bytesize::ByteSize::kib(8),
        ..node_config(id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// A sealed segment loses its end (records and footer).
    TruncateSealed,
    /// One bit of a sealed segment flips (header, a record or the footer).
    FlipSealed,
    /// The active segment loses its end: indistinguishable from a torn write when it cuts no
    /// more than the entries the replica had not yet learned were committed (see ADR 0014),
    /// so only the oracle judges it.
    TruncateActive,
}

/// The placed shard's segment files on node `id`, oldest first.
fn segments(disk: &SimVfs, id: NodeId) -> Vec<PathBuf> {
    let dir = PathBuf::from(format!("/data/store-{id}/shards/{PLACED}/log"));
    let mut files: Vec<PathBuf> = disk
        .list_files(&dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .map(|n| dir.join(n))
        .collect();
    files.sort();
    files
}

/// The replicas of the placed shard set aside on node `id`.
fn set_aside(disk: &SimVfs, id: NodeId) -> Vec<String> {
    disk.list_dirs(Path::new(&format!("/data/store-{id}/shards")))
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.starts_with(&format!("{PLACED}.damaged-")))
        .collect()
}

/// Damages node `id`'s replica as `kind` says (where, drawn from `rng`); what it did, or
/// `None` when there is no segment of that kind to damage.
fn damage(disk: &SimVfs, id: NodeId, kind: Damage, rng: &mut Xoshiro256PlusPlus) -> Option<String> {
    let files = segments(disk, id);
    let (active, sealed) = files.split_last()?;
    let file = match kind {
        Damage::TruncateActive => active.clone(),
        _ if sealed.is_empty() => return None,
        _ => sealed[rng.random_range(0..sealed.len())].clone(),
    };
    let len = disk.file_len(&file).expect("segment length");
    let header = vela_raft::codec::SEGMENT_HEADER_LEN as u64;
    match kind {
        Damage::FlipSealed => {
            let bit = rng.random_range(0..len * 8);
            disk.flip_bit(&file, bit).expect("flips");
            Some(format!("flipped bit {bit} of {}", file.display()))
        }
        _ => {
            if len <= header + 1 {
                return None;
            }
            // Into the records, well before a sealed segment's footer.
            let to = rng.random_range(header + 1..=(header + 1).max(len * 3 / 4));
            disk.truncate(&file, to).expect("truncates");
            Some(format!("cut {} from {len} to {to} bytes", file.display()))
        }
    }
}

/// Node `id` finds the damage: when it starts (the replica is left closed, and set aside when
/// the controller's next open names the shard's members) or by its first scrub.
async fn found(cluster: &Cluster, id: NodeId, what: &str) {
    if holds(cluster, id) {
        let report = cluster.node(id).scrub().await.expect("scrubs");
        assert!(
            report.get(&PLACED).is_some_and(|d| !d.is_empty()),
            "{what}: neither the open nor the scrub found it: {report:?}"
        );
    } else if set_aside(&cluster.disks[&id], id).is_empty() {
        // Found at start: set aside by the controller's open (a scheduled scrub does it
        // itself).
        let members = members_of(cluster, &[1, 2, 3]);
        match cluster
            .node(id)
            .open_shard(PLACED, members, OpenMode::Resume)
            .await
        {
            Err(StoreError::ReplicaLost(why)) => assert!(why.contains("damaged"), "{what}: {why}"),
            other => panic!("{what}: a damaged replica opened: {other:?}"),
        }
    }
    assert!(
        !cluster.node(id).shard_ids().contains(&PLACED),
        "{what}: the damaged replica is still served"
    );
    assert_eq!(set_aside(&cluster.disks[&id], id).len(), 1, "{what}");
    assert!(
        !cluster.node(id).shard_ids().is_empty(),
        "{what}: the node's other shards are served"
    );
}

/// Drives the shard back to members {1,2,3}, as the reconciler would.
async fn repair(cluster: &Cluster, context: &str) {
    let target = BTreeSet::from([1, 2, 3]);
    for n in 0.. {
        if step(cluster, &target).await {
            return;
        }
        assert!(n < MAX_STEPS, "{context}: the replica was never replaced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A cluster of nodes 1–3 configured by `config`, the placed shard on all three and led by
/// node 1 or 2 (node 3 is the one damaged), filled with 100 messages tagged `tag` (returned).
async fn filled(seed: u64, config: fn(NodeId) -> StoreConfig, tag: &str) -> (Cluster, Vec<String>) {
    let (_clock, shared) = manual_clock();
    let cluster = Cluster::start_configured(&[1, 2, 3], seed, shared, config).await;
    cluster.leader().await;
    if place(&cluster, &[1, 2, 3]).await == 3 {
        cluster
            .node(3)
            .transfer_leader(PLACED, 1)
            .await
            .expect("node 1 leads");
    }
    let leader = placed_leader(&cluster, PLACED).await;
    let sent = fill(&cluster, leader, tag).await;
    (cluster, sent)
}

async fn damaged_while_down(kind: Damage, seed: u64) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let (mut cluster, sent) = filled(seed, small_segments, "d").await;
    cluster.power_cut(3).await;
    let what = damage(&cluster.disks[&3], 3, kind, &mut rng).expect("a segment to damage");
    cluster.open(3).await;
    found(&cluster, 3, &what).await;
    repair(&cluster, &what).await;
    assert!(set_aside(&cluster.disks[&3], 3).len() == 1, "{what}");
    assert_eq!(drain_from(&cluster, 3).await, sent, "{what}");
    cluster.shutdown().await;
}

/// A sealed segment cut short while node 3 was down: its replica refuses to open, is set
/// aside, and comes back as a copy that leads with every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_sealed_segment_was_cut_is_set_aside_and_copied_again() {
    damaged_while_down(Damage::TruncateSealed, 61).await;
}

/// A bit flipped in a sealed segment while node 3 was down: found at open or by the scrub,
/// set aside, copied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_flipped_bit_is_set_aside_and_copied_again() {
    damaged_while_down(Damage::FlipSealed, 62).await;
}

/// The only replica of a shard is the only copy: damaged, it is not opened and not renamed,
/// and the open says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_replica_of_a_shard_is_never_set_aside() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(64);
    let (_clock, shared) = manual_clock();
    let mut cluster = Cluster::start_configured(&[1, 2, 3], 64, shared, small_segments).await;
    cluster.leader().await;
    place(&cluster, &[1]).await;
    fill(&cluster, 1, "o").await;
    cluster.power_cut(1).await;
    let what = damage(&cluster.disks[&1], 1, Damage::TruncateSealed, &mut rng).expect("damages");
    cluster.open(1).await;
    assert!(!cluster.node(1).shard_ids().contains(&PLACED), "{what}");
    let only = members_of(&cluster, &[1]);
    match cluster
        .node(1)
        .open_shard(PLACED, only, OpenMode::Resume)
        .await
    {
        Err(StoreError::Internal(why)) => assert!(why.contains("shard 7"), "{what}: {why}"),
        other => panic!("{what}: {other:?}"),
    }
    assert!(set_aside(&cluster.disks[&1], 1).is_empty(), "{what}");
    assert!(
        !segments(&cluster.disks[&1], 1).is_empty(),
        "{what}: the files stay"
    );
    cluster.shutdown().await;
}

/// Small segments, a snapshot every 20 entries (so a restart reads no old entry) and a scrub
/// every second.
fn scrubbed_often(id: NodeId) -> StoreConfig {
    StoreConfig {
        snapshot_every_entries: 20,
        scrub_interval: Duration::from_secs(1),
        ..small_segments(id)
    }
}

/// Node 3 stops cleanly (after a power cut the index may be behind, and opening reads the log
/// entries it re-indexes), a bit of an old record flips while it is down, and it starts
/// again serving its replica. Not the first segment (it holds the group's membership entry,
/// which openraft reads at start), and not a segment's first record (opening reads it): near
/// the end of the second segment's last record, before the footer.
async fn flip_an_old_record_while_down(cluster: &mut Cluster) {
    cluster.node(3).shutdown().await.expect("stops");
    cluster.power_cut(3).await;
    let files = segments(&cluster.disks[&3], 3);
    assert!(files.len() >= 3, "{files:?}");
    let len = cluster.disks[&3].file_len(&files[1]).expect("length");
    cluster.disks[&3]
        .flip_bit(&files[1], (len - 200) * 8)
        .expect("flips");
    cluster.open(3).await;
    assert!(
        holds(cluster, 3),
        "opening does not read that old a record: holds {:?}, set aside {:?}",
        cluster.node(3).shard_ids(),
        set_aside(&cluster.disks[&3], 3)
    );
}

/// Waits (up to 10 s) until node 3 has set its replica aside: stopped first, then renamed.
async fn until_set_aside(cluster: &Cluster) {
    for _ in 0..400 {
        if !set_aside(&cluster.disks[&3], 3).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A bit flipped in an old record, below the snapshot, while node 3 was down after a clean
/// stop: the replica opens and serves (opening trusts sealed footers and reads nothing that
/// old), and its
/// scheduled scrub finds the damage, stops it and sets it aside; it is then replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_that_opening_misses_is_found_by_the_scheduled_scrub() {
    let (mut cluster, sent) = filled(63, scrubbed_often, "s").await;
    flip_an_old_record_while_down(&mut cluster).await;
    until_set_aside(&cluster).await;
    // Its power cut right after: the rename was durable, so the damaged replica (which opening
    // would not find damaged) does not come back under its name to be served and vote.
    cluster.power_cut(3).await;
    cluster.open(3).await;
    assert!(
        !holds(&cluster, 3),
        "the replica set aside came back after a power cut"
    );
    found(&cluster, 3, "the scheduled scrub").await;
    repair(&cluster, "after the scheduled scrub").await;
    assert_eq!(drain_from(&cluster, 3).await, sent);
    cluster.shutdown().await;
}

/// Small segments, a snapshot every 20 entries and no scheduled scrub: only reads find damage.
fn never_scrubbed(id: NodeId) -> StoreConfig {
    StoreConfig {
        scrub_interval: Duration::ZERO,
        ..scrubbed_often(id)
    }
}

/// A bit flipped in an old record while node 3 was down, which neither the open nor a scrub
/// finds: when node 3 leads, the first receive that reads the record fails, and node 3
/// confirms the damage, stops serving the replica and sets it aside; it is replaced from its
/// peers and then serves every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_a_read_finds_sets_the_replica_aside() {
    let (mut cluster, sent) = filled(64, never_scrubbed, "r").await;
    flip_an_old_record_while_down(&mut cluster).await;
    lead_on(&cluster, PLACED, 3).await;
    // Another group than `drain_from`'s reads from the first message on node 3.
    let reads = PopRequest {
        group: GroupName::new("readers").expect("a valid group"),
        ..pop(32, Duration::ZERO)
    };
    let store = cluster.node(3);
    let mut failed = None;
    for _ in 0..200 {
        match store.pop(reads.clone()).await {
            Ok(batch) if batch.is_empty() => break,
            Ok(_) => {}
            Err(StoreError::NotLeader { .. }) => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(err) => {
                failed = Some(err);
                break;
            }
        }
    }
    assert!(
        matches!(&failed, Some(StoreError::Internal(m)) if m.contains("corrupt")),
        "the damaged record was read without an error: {failed:?}"
    );
    until_set_aside(&cluster).await;
    found(&cluster, 3, "a read").await;
    repair(&cluster, "after a read found the damage").await;
    assert_eq!(drain_from(&cluster, 3).await, sent);
    cluster.shutdown().await;
}

async fn schedule(seed: u64) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let (clock, shared) = manual_clock();
    let mut cluster = Cluster::start_configured(&[1, 2, 3], seed, shared, small_segments).await;
    cluster.leader().await;
    place(&cluster, &[1, 2, 3]).await;
    cluster.current_apply_version().await;
    let load = Load::start(
        Clients::Placed(cluster.nodes.clone(), PLACED),
        format!("d{seed}"),
    );
    let kind = [
        Damage::TruncateSealed,
        Damage::FlipSealed,
        Damage::TruncateActive,
    ][rng.random_range(0..3)];
    let victim: NodeId = rng.random_range(1..=3);
    let mut log = vec![format!("{kind:?} on node {victim}")];
    tokio::time::sleep(Duration::from_millis(rng.random_range(1500..3000))).await;
    cluster.power_cut(victim).await;
    let what = damage(&cluster.disks[&victim], victim, kind, &mut rng);
    log.push(what.clone().unwrap_or_else(|| "nothing to damage".into()));
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..1000))).await;
    cluster.open(victim).await;
    let context = format!("seed {seed}; {log:?}");
    if holds(&cluster, victim) {
        // Its first scrub after the start.
        let report = cluster.node(victim).scrub().await.expect("scrubs");
        log.push(format!("scrub found {:?}", report.get(&PLACED)));
    }
    if kind != Damage::TruncateActive && what.is_some() {
        found(&cluster, victim, &context).await;
    }
    repair(&cluster, &context).await;
    tokio::time::sleep(Duration::from_millis(rng.random_range(200..1000))).await;
    load.finish(
        cluster,
        &clock,
        PLACED,
        &[1, 2, 3],
        &format!("seed {seed}; {log:?}"),
    )
    .await;
}

#[test]
fn acknowledged_sends_and_acks_survive_a_replica_damaged_while_down() {
    sweep_seeds("a replica damaged while down", 3, schedule);
}

//! A configured shard (`cluster.shards`) moves like a placed one once the controller has
//! adopted it (ADR 0032): a node removes its replica and records it released, so a restart
//! does not bring it back as the configured shard it otherwise holds; placed there again, it
//! is held and reopens with the rest.

use super::members::{change_members, lead_on, until_voters};
use super::*;

const SHARD: ShardId = 1;

/// Makes `node` lead `SHARD` and receives there until `count` messages came (or 20 receives
/// of up to half a second each went by); returns their bodies.
async fn receive_led(cluster: &Cluster, node: NodeId, count: usize) -> Vec<String> {
    lead_on(cluster, SHARD, node).await;
    let mut got = Vec::new();
    for _ in 0..20 {
        let req = PopRequest {
            shards: vec![SHARD],
            ..pop(32, Duration::from_millis(500))
        };
        got.extend(bodies(&pop_serving(&cluster.node(node), req).await));
        if got.len() >= count {
            break;
        }
    }
    got
}

fn on_shard(bodies: &[String]) -> AppendRequest {
    AppendRequest {
        shard: SHARD,
        ..append(bodies.iter().map(|b| message(b)).collect())
    }
}

/// Shard 1 (configured on nodes 1, 2, 3) leaves node 1 and comes back: released, node 1 does
/// not reopen it after a power cut; placed again, it catches up, reopens after the next power
/// cut and, leading, delivers every message sent before, during and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_shard_moves_off_a_node_and_back() {
    let (_clock, shared) = manual_clock();
    let mut cluster = Cluster::start_on(Transport::InProcess, &[1, 2, 3], 47, shared).await;
    cluster.leader().await;
    let sent: Vec<String> = (0..9).map(|i| format!("c{i}")).collect();
    lead_on(&cluster, SHARD, 2).await;
    append_serving(&cluster.node(2), on_shard(&sent[..3])).await;

    change_members(&cluster, SHARD, &members_of(&cluster, &[2, 3])).await;
    until_voters(&cluster.node(3), SHARD, &[2, 3]).await;
    cluster.hub.unregister(u64::from(SHARD), 1);
    cluster
        .node(1)
        .remove_shard(SHARD)
        .await
        .expect("node 1 deletes its replica of a configured shard");
    let shard_dir = std::path::Path::new("/data/store-1/shards/1");
    assert!(!cluster.node(1).shard_ids().contains(&SHARD));
    assert!(!cluster.disks[&1].is_dir(shard_dir));
    append_serving(&cluster.node(2), on_shard(&sent[3..6])).await;

    cluster.power_cut(1).await;
    cluster.open(1).await;
    assert!(
        !cluster.node(1).shard_ids().contains(&SHARD),
        "a released configured shard is not reopened"
    );
    assert!(cluster.node(1).shard_ids().contains(&0), "the others are");
    assert!(!cluster.disks[&1].is_dir(shard_dir));

    let all = members_of(&cluster, &[1, 2, 3]);
    let raft = cluster
        .node(1)
        .open_shard(SHARD, all.clone(), OpenMode::Join)
        .await
        .expect("joins again");
    cluster.register(SHARD, 1, raft);
    change_members(&cluster, SHARD, &all).await;
    until_voters(&cluster.node(1), SHARD, &[1, 2, 3]).await;
    append_serving(
        &cluster.node(placed_leader(&cluster, SHARD).await),
        on_shard(&sent[6..]),
    )
    .await;

    cluster.power_cut(1).await;
    cluster.open(1).await;
    assert!(
        cluster.node(1).shard_ids().contains(&SHARD),
        "placed again, it is held"
    );
    assert_eq!(receive_led(&cluster, 1, sent.len()).await, sent);
    cluster.shutdown().await;
}

/// Segments of 8 KiB, so a little traffic seals several.
fn small_segments(id: NodeId) -> StoreConfig {
    StoreConfig {
        segment_size: bytesize::ByteSize::kib(8),
        ..node_config(id)
    }
}

/// Node 3's replica of configured shard 1 has a sealed segment cut short while the node was
/// down. The node still starts (its other shards serve), does not serve the damaged replica,
/// and the controller's open sets it aside and records it released, so another power cut does
/// not bring it back empty; replaced from the other members (out of the group, back as an
/// empty learner, a voter again), it leads with every message (ADR 0032, ADR 0014).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_configured_replica_is_set_aside_and_copied_again() {
    let (_clock, shared) = manual_clock();
    let mut cluster = Cluster::start_configured(&[1, 2, 3], 53, shared, small_segments).await;
    cluster.leader().await;
    lead_on(&cluster, SHARD, 1).await;
    let body = "x".repeat(400);
    let sent: Vec<String> = (0..60).map(|i| format!("d{i:02}-{body}")).collect();
    for chunk in sent.chunks(10) {
        append_serving(&cluster.node(1), on_shard(chunk)).await;
    }
    // Node 3 has every entry before it goes down.
    until_voters(&cluster.node(3), SHARD, &[1, 2, 3]).await;
    let metrics = |id: NodeId| {
        let raft = cluster
            .node(id)
            .shard_rafts()
            .into_iter()
            .find(|(s, _)| *s == SHARD)
            .map(|(_, raft)| raft)
            .expect("holds the shard");
        raft.metrics().borrow_watched().clone()
    };
    let committed = metrics(1).last_log_index;
    for _ in 0..400 {
        if metrics(3).last_applied.map(|l| l.index) >= committed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    cluster.power_cut(3).await;
    let log = std::path::PathBuf::from("/data/store-3/shards/1/log");
    let disk = cluster.disks[&3].clone();
    let mut sealed: Vec<String> = disk
        .list_files(&log)
        .expect("the replica's log")
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect();
    sealed.sort();
    sealed.pop(); // the active one
    let first = log.join(sealed.first().expect("a sealed segment"));
    let len = disk.file_len(&first).expect("length");
    disk.truncate(&first, len / 2).expect("cuts");

    cluster.open(3).await;
    assert!(!cluster.node(3).shard_ids().contains(&SHARD), "not served");
    assert!(cluster.node(3).shard_ids().contains(&0), "the others are");
    let all = members_of(&cluster, &[1, 2, 3]);
    match cluster
        .node(3)
        .open_shard(SHARD, all.clone(), OpenMode::Resume)
        .await
    {
        Err(StoreError::ReplicaLost(why)) => assert!(why.contains("damaged"), "{why}"),
        other => panic!("a damaged replica opened: {other:?}"),
    }
    let data = std::path::Path::new("/data/store-3");
    assert_eq!(
        crate::placed::read_released(&cluster.disks[&3], data).expect("reads"),
        vec![SHARD]
    );
    cluster.power_cut(3).await;
    cluster.open(3).await;
    assert!(
        !cluster.node(3).shard_ids().contains(&SHARD),
        "a set-aside configured replica is not reopened empty"
    );

    change_members(&cluster, SHARD, &members_of(&cluster, &[1, 2])).await;
    let raft = cluster
        .node(3)
        .open_shard(SHARD, all.clone(), OpenMode::Join)
        .await
        .expect("joins again");
    cluster.register(SHARD, 3, raft);
    change_members(&cluster, SHARD, &all).await;
    until_voters(&cluster.node(3), SHARD, &[1, 2, 3]).await;
    assert!(
        crate::placed::read_released(&cluster.disks[&3], data)
            .expect("reads")
            .is_empty()
    );
    assert_eq!(receive_led(&cluster, 3, sent.len()).await, sent);
    cluster.shutdown().await;
}

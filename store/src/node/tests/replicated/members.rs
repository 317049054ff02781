//! Changing a placed shard's members while it serves (ADR 0014): a replica moves to a node that
//! did not hold the shard, and a member that lost its disk is replaced by an empty learner;
//! nothing acknowledged is lost, and a node that is no longer a member deletes its replica.

use super::*;

pub(super) const PLACED: ShardId = 7;

/// Opens `PLACED` on `ids` as a new shard and waits for its leader.
pub(super) async fn place(cluster: &Cluster, ids: &[NodeId]) -> NodeId {
    let members = members_of(cluster, ids);
    for &id in ids {
        let raft = cluster
            .node(id)
            .open_shard(PLACED, members.clone(), OpenMode::Create)
            .await
            .expect("opens the placed shard");
        cluster.register(PLACED, id, raft);
    }
    placed_leader(cluster, PLACED).await
}

/// Joins `node` to `PLACED` (an empty replica the leader will add).
pub(super) async fn join(cluster: &Cluster, node: NodeId, members: &BTreeMap<u64, String>) {
    let raft = cluster
        .node(node)
        .open_shard(PLACED, members.clone(), OpenMode::Join)
        .await
        .expect("joins");
    cluster.register(PLACED, node, raft);
}

/// The node that leads `shard` (members that left or have not joined yet may not know it).
pub(super) async fn leading(cluster: &Cluster, shard: ShardId) -> NodeId {
    for _ in 0..400 {
        let leaders: Vec<NodeId> = cluster
            .running()
            .into_iter()
            .filter(|&id| {
                cluster.node(id).shard_rafts().iter().any(|(s, raft)| {
                    *s == shard && raft.metrics().borrow_watched().current_leader == Some(id)
                })
            })
            .collect();
        if let [leader] = leaders[..] {
            return leader;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no single node leads shard {shard}");
}

/// Asks `shard`'s leader to change the members as the controller does: following a leader
/// that hands over, calling again while new members catch up.
pub(super) async fn change_members(
    cluster: &Cluster,
    shard: ShardId,
    members: &BTreeMap<u64, String>,
) {
    let mut at = leading(cluster, shard).await;
    let mut last = None;
    for _ in 0..100 {
        match cluster.node(at).change_members(shard, members).await {
            Ok(()) => return,
            Err(StoreError::NotLeader {
                leader: Some(next), ..
            }) => at = next,
            Err(
                err @ (StoreError::NotLeader { leader: None, .. } | StoreError::Unavailable(_)),
            ) => {
                last = Some(err);
                tokio::time::sleep(Duration::from_millis(100)).await;
                at = leading(cluster, shard).await;
            }
            Err(err) => panic!("changing members to {:?}: {err}", members.keys()),
        }
    }
    panic!("the members never became {:?}: {last:?}", members.keys());
}

pub(super) fn on_placed(bodies: &[String]) -> AppendRequest {
    AppendRequest {
        shard: PLACED,
        queue_id: 9,
        ..append(bodies.iter().map(|b| message(b)).collect())
    }
}

/// Waits until `store`'s replica of `shard` has applied a membership of `want`: the
/// leader's `change_members` returns once the change is committed, which a member may apply a
/// little later.
pub(super) async fn until_voters(store: &Store, shard: ShardId, want: &[u64]) {
    let want: BTreeSet<u64> = want.iter().copied().collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = voters(store, shard);
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "voters {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn voters(store: &Store, shard: ShardId) -> BTreeSet<u64> {
    store
        .shard_rafts()
        .into_iter()
        .find(|(s, _)| *s == shard)
        .map(|(_, raft)| {
            raft.metrics()
                .borrow_watched()
                .membership_config
                .membership()
                .voter_ids()
                .collect()
        })
        .unwrap_or_default()
}

/// Hands `shard`'s leadership to `node` and waits until it leads (a receive there covers only
/// the shards it leads); it may still be catching up, so the handover is retried.
pub(super) async fn lead_on(cluster: &Cluster, shard: ShardId, node: NodeId) {
    for attempt in 0..200 {
        let leader = leading(cluster, shard).await;
        if leader == node {
            return;
        }
        match cluster.node(leader).transfer_leader(shard, node).await {
            // Handed over: `node` leads once it has won the election.
            Ok(()) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(err) if attempt < 60 => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => panic!("node {node} never took shard {shard} over: {err}"),
        }
    }
    panic!("node {node} never took shard {shard} over");
}

/// Makes `node` lead `PLACED` and returns everything it delivers.
pub(super) async fn drain_from(cluster: &Cluster, node: NodeId) -> Vec<String> {
    lead_on(cluster, PLACED, node).await;
    let store = cluster.node(node);
    let mut got = Vec::new();
    loop {
        let batch = pop_serving(&store, pop(32, Duration::ZERO)).await;
        if batch.is_empty() {
            return got;
        }
        got.extend(bodies(&batch));
    }
}

/// The shard moves from {1,2,3} to {2,3,4} while it holds acked and unacked messages; the
/// leader (node 1 leads first) leaves last. Node 4 then leads with every unacked message and
/// none of the acked ones; node 1 deleted its replica and does not reopen it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_shard_moves_to_a_new_node_without_losing_anything() {
    let (_clock, shared) = manual_clock();
    let mut cluster = Cluster::start_on(Transport::InProcess, &[1, 2, 3, 4], 41, shared).await;
    cluster.leader().await;
    let leader = place(&cluster, &[1, 2, 3]).await;
    if leader != 1 {
        cluster
            .node(leader)
            .transfer_leader(PLACED, 1)
            .await
            .expect("node 1 leads");
    }
    let sent: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
    let store = cluster.node(1);
    append_serving(&store, on_placed(&sent)).await;
    let first = pop_serving(&store, pop(5, Duration::ZERO)).await;
    for d in &first {
        store.ack(&d.ticket).await.expect("acks");
    }
    let acked: BTreeSet<String> = bodies(&first).into_iter().collect();
    // Delivered again after the move: their invisibility lasts 30 s of the test's clock, which
    // stands still, so the others are the ones to expect.
    let expected: Vec<String> = sent
        .iter()
        .filter(|b| !acked.contains(*b))
        .cloned()
        .collect();

    let target = members_of(&cluster, &[2, 3, 4]);
    join(&cluster, 4, &target).await;
    change_members(&cluster, PLACED, &target).await;
    for id in [2, 3, 4] {
        let store = cluster.node(id);
        for _ in 0..200 {
            if voters(&store, PLACED) == BTreeSet::from([2, 3, 4]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(
            voters(&store, PLACED),
            BTreeSet::from([2, 3, 4]),
            "node {id}"
        );
    }

    // Refused: a replica that is still a member and leads.
    let now_leads = leading(&cluster, PLACED).await;
    assert!(matches!(
        cluster.node(now_leads).remove_shard(PLACED).await,
        Err(StoreError::Invalid(_))
    ));
    cluster.hub.unregister(u64::from(PLACED), 1);
    cluster
        .node(1)
        .remove_shard(PLACED)
        .await
        .expect("node 1 deletes its replica");
    cluster
        .node(1)
        .remove_shard(PLACED)
        .await
        .expect("removing again is a no-op");
    assert!(!cluster.node(1).shard_ids().contains(&PLACED));
    assert!(!cluster.disks[&1].is_dir(std::path::Path::new("/data/store-1/shards/7")));

    let got = drain_from(&cluster, 4).await;
    assert_eq!(
        got, expected,
        "node 4 delivers every unacked message, in order"
    );

    // Node 1 restarts after a power cut and does not bring the shard back: not even its
    // files, whose deletion was durable (a stale copy of a member's log and vote must not be
    // there for a later placement to find).
    cluster.power_cut(1).await;
    cluster.open(1).await;
    assert!(!cluster.node(1).shard_ids().contains(&PLACED));
    assert!(!cluster.disks[&1].is_dir(std::path::Path::new("/data/store-1/shards/7")));
    cluster.shutdown().await;
}

/// Node 3 loses the shard's data. Resuming its replica is refused (`ReplicaLost`); it leaves the group,
/// joins again as an empty learner, catches up from the leader's log and becomes a voter that
/// leads with every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_disk_is_replaced_by_an_empty_learner() {
    let (_clock, shared) = manual_clock();
    let mut cluster = Cluster::start_on(Transport::InProcess, &[1, 2, 3], 43, shared).await;
    cluster.leader().await;
    let all = members_of(&cluster, &[1, 2, 3]);
    let leader = place(&cluster, &[1, 2, 3]).await;
    if leader == 3 {
        cluster
            .node(3)
            .transfer_leader(PLACED, 1)
            .await
            .expect("node 1 leads");
    }
    let sent: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    let leader = placed_leader(&cluster, PLACED).await;
    append_serving(&cluster.node(leader), on_placed(&sent)).await;

    // The shard's directory is gone (the configured shards' survive: an empty voter of those
    // is another matter, ADR 0010).
    cluster.power_cut(3).await;
    vela_raft::vfs::remove_dir_all(
        &cluster.disks[&3],
        std::path::Path::new("/data/store-3/shards/7"),
    )
    .expect("wipes the shard");
    cluster.open(3).await;
    assert!(
        !cluster.node(3).shard_ids().contains(&PLACED),
        "not reopened empty"
    );
    match cluster
        .node(3)
        .open_shard(PLACED, all.clone(), OpenMode::Resume)
        .await
    {
        Err(StoreError::ReplicaLost(why)) => assert!(why.contains("has no log"), "{why}"),
        other => panic!("an empty replica resumed: {other:?}"),
    }
    change_members(&cluster, PLACED, &members_of(&cluster, &[1, 2])).await;
    join(&cluster, 3, &all).await;
    change_members(&cluster, PLACED, &all).await;
    assert_eq!(drain_from(&cluster, 3).await, sent);
    cluster.shutdown().await;
}

fn small_segments(id: NodeId) -> StoreConfig {
    StoreConfig {
        segment_size: bytesize::ByteSize::kib(8),
        retention_size: Some(bytesize::ByteSize::kib(16)),
        ..node_config(id)
    }
}

/// Sends 100 messages of ~400 bytes to `PLACED` through `leader` (with 8 KiB segments and a
/// 16 KiB retention, retention then removes most of them).
pub(super) async fn fill(cluster: &Cluster, leader: NodeId, tag: &str) -> Vec<String> {
    let body = "x".repeat(400);
    let mut sent = Vec::new();
    for i in 0..20 {
        let batch: Vec<String> = (0..5).map(|j| format!("{tag}{i:02}-{j}-{body}")).collect();
        append_serving(&cluster.node(leader), on_placed(&batch)).await;
        sent.extend(batch);
    }
    sent
}

/// `got` is what is left of `sent` after retention removed its start: a non-empty, proper
/// suffix, in order.
fn assert_retained_suffix(got: &[String], sent: &[String]) {
    assert!(
        !got.is_empty() && got.len() < sent.len(),
        "{} of {}",
        got.len(),
        sent.len()
    );
    assert_eq!(got, &sent[sent.len() - got.len()..], "a suffix, in order");
}

/// Retention removed the start of the shard's log on every member, so a node that joins is
/// sent a snapshot: it copies the retained log and the index from a member (ADR 0014), becomes
/// a voter, and then leads with every retained message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_behind_the_retention_floor_copies_what_is_retained() {
    let (_clock, shared) = manual_clock();
    let cluster = Cluster::start_configured(&[1, 2, 3, 4], 47, shared, small_segments).await;
    cluster.leader().await;
    let leader = place(&cluster, &[1, 2, 3]).await;
    let sent = fill(&cluster, leader, "a").await;
    for id in [1, 2, 3] {
        let cuts = cluster
            .node(id)
            .enforce_retention()
            .await
            .expect("retention");
        if id == leader {
            assert!(cuts[&PLACED].is_some(), "retention removed log: {cuts:?}");
        }
    }

    let target = members_of(&cluster, &[1, 2, 3, 4]);
    join(&cluster, 4, &target).await;
    change_members(&cluster, PLACED, &target).await;
    until_voters(&cluster.node(4), PLACED, &[1, 2, 3, 4]).await;
    let got = drain_from(&cluster, 4).await;
    assert_retained_suffix(&got, &sent);
    // The copy carried the message lookups (ADR 0028): the new leader finds the oldest
    // retained message, whose append it never applied, with where it was stored.
    let oldest = vela_proto::lookup::LookupRequest {
        by: vela_proto::lookup::LookupBy::MessageId(format!("id-{}", got[0])),
        topic: None,
        shards: Vec::new(),
        limit: 1,
    };
    let found = cluster.node(4).lookup(&oldest).await.expect("looks up");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].positions.len(), 1, "{found:?}");
    let kinds: Vec<&str> = found[0].track.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["stored", "delivered"], "{found:?}");
    cluster.shutdown().await;
}

/// A voter is down through two retention passes (retention follows the policy, not the
/// slowest voter). Back, it is sent a snapshot, copies what is retained, and then leads with
/// every retained message, including those sent while it was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_down_through_two_retention_passes_catches_up_and_serves_everything_retained() {
    voter_down_through_retention(Transport::InProcess).await;
}

/// The same with Raft and the copy over gRPC on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_down_through_retention_catches_up_over_grpc() {
    voter_down_through_retention(Transport::Grpc).await;
}

async fn voter_down_through_retention(transport: Transport) {
    let (_clock, shared) = manual_clock();
    let mut cluster = Cluster::start_full(
        transport,
        &[1, 2, 3],
        53,
        shared,
        BTreeMap::new(),
        small_segments,
    )
    .await;
    cluster.leader().await;
    let leader = place(&cluster, &[1, 2, 3]).await;
    let down = [1, 2, 3].into_iter().find(|&n| n != leader).unwrap_or(3);
    let mut sent = fill(&cluster, leader, "before").await;
    cluster.power_cut(down).await;
    let mut cuts = Vec::new();
    for pass in ["one", "two"] {
        let leader = leading(&cluster, PLACED).await;
        sent.extend(fill(&cluster, leader, pass).await);
        let cut = cluster
            .node(leader)
            .enforce_retention()
            .await
            .expect("retention")[&PLACED];
        assert!(cut.is_some(), "pass {pass} removed log");
        cuts.push(cut);
    }
    assert!(cuts[1] > cuts[0], "the second pass cut further: {cuts:?}");
    cluster.open(down).await;
    let got = drain_from(&cluster, down).await;
    assert_retained_suffix(&got, &sent);
    cluster.shutdown().await;
}

/// A joining node stops (its power is cut) while it copies what the snapshot needs, its log
/// half replaced. Back, the incomplete replica is deleted, not opened: it is a lost replica
/// (`Resume` is refused), which leaves the group and joins again, then catches up and serves
/// everything retained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_in_the_middle_of_a_copy_drops_the_incomplete_replica_and_joins_again() {
    let (_clock, shared) = manual_clock();
    let mut cluster = Cluster::start_configured(&[1, 2, 3, 4], 59, shared, small_segments).await;
    cluster.leader().await;
    let leader = place(&cluster, &[1, 2, 3]).await;
    let sent = fill(&cluster, leader, "a").await;
    for id in [1, 2, 3] {
        cluster
            .node(id)
            .enforce_retention()
            .await
            .expect("retention");
    }
    cluster
        .stall_copies
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let target = members_of(&cluster, &[1, 2, 3, 4]);
    join(&cluster, 4, &target).await;
    // Added as a learner (the call answers "catching up"); it is sent a snapshot and copies.
    let at = leading(&cluster, PLACED).await;
    let _ = cluster.node(at).change_members(PLACED, &target).await;
    let mark = std::path::PathBuf::from(format!(
        "/data/store-4/shards/{PLACED}/{}",
        crate::shard::restoring::FILE
    ));
    for attempt in 0.. {
        if cluster.disks[&4].file_paths().contains(&mark) {
            break;
        }
        assert!(attempt < 200, "node 4 never started copying");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.power_cut(4).await;
    cluster
        .stall_copies
        .store(false, std::sync::atomic::Ordering::SeqCst);
    cluster.open(4).await;
    assert!(!cluster.node(4).shard_ids().contains(&PLACED));
    assert!(
        !cluster.disks[&4]
            .file_paths()
            .iter()
            .any(|p| p.starts_with(format!("/data/store-4/shards/{PLACED}"))),
        "the incomplete replica is deleted"
    );
    let resumed = cluster
        .node(4)
        .open_shard(PLACED, target.clone(), OpenMode::Resume)
        .await;
    assert!(
        matches!(resumed, Err(StoreError::ReplicaLost(_))),
        "{resumed:?}"
    );
    // Out of the group, then in again as an empty learner that catches up.
    change_members(&cluster, PLACED, &members_of(&cluster, &[1, 2, 3])).await;
    join(&cluster, 4, &target).await;
    change_members(&cluster, PLACED, &target).await;
    until_voters(&cluster.node(4), PLACED, &[1, 2, 3, 4]).await;
    let got = drain_from(&cluster, 4).await;
    assert_retained_suffix(&got, &sent);
    // Its power cut once the copy is done: the mark's removal was durable, so the complete
    // replica opens again as a voter instead of being deleted as an incomplete one.
    cluster.power_cut(4).await;
    cluster.open(4).await;
    assert!(
        cluster.node(4).shard_ids().contains(&PLACED),
        "the complete replica reopens"
    );
    until_voters(&cluster.node(4), PLACED, &[1, 2, 3, 4]).await;
    cluster.shutdown().await;
}

/// A copy that fails for good while the node runs (every member stalls until the source's
/// patience runs out): the install fails, the replica's Raft stops and reports so. Told to open
/// it again (as the controller does for a stopped replica), the node deletes the marked replica
/// and answers that it is lost; it leaves, joins again and serves everything retained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_fails_for_good_stops_the_replica_until_it_is_opened_again() {
    let (_clock, shared) = manual_clock();
    let cluster = Cluster::start_configured(&[1, 2, 3, 4], 61, shared, small_segments).await;
    cluster.leader().await;
    let leader = place(&cluster, &[1, 2, 3]).await;
    let sent = fill(&cluster, leader, "f").await;
    for id in [1, 2, 3] {
        cluster
            .node(id)
            .enforce_retention()
            .await
            .expect("retention");
    }
    cluster
        .stall_copies
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let target = members_of(&cluster, &[1, 2, 3, 4]);
    join(&cluster, 4, &target).await;
    let at = leading(&cluster, PLACED).await;
    let _ = cluster.node(at).change_members(PLACED, &target).await;
    for attempt in 0.. {
        let stopped = cluster.node(4).member_statuses().iter().any(|m| {
            m.shard == PLACED && m.status.role == vela_proto::cluster_status::MemberRole::Stopped
        });
        if stopped {
            break;
        }
        assert!(attempt < 600, "node 4's install never failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mark = std::path::PathBuf::from(format!(
        "/data/store-4/shards/{PLACED}/{}",
        crate::shard::restoring::FILE
    ));
    assert!(cluster.disks[&4].file_paths().contains(&mark));
    cluster
        .stall_copies
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let resumed = cluster
        .node(4)
        .open_shard(PLACED, target.clone(), OpenMode::Resume)
        .await;
    assert!(
        matches!(resumed, Err(StoreError::ReplicaLost(_))),
        "{resumed:?}"
    );
    assert!(!cluster.node(4).shard_ids().contains(&PLACED));
    assert!(
        !cluster.disks[&4]
            .file_paths()
            .iter()
            .any(|p| p.starts_with(format!("/data/store-4/shards/{PLACED}"))),
        "the incomplete replica is deleted"
    );
    change_members(&cluster, PLACED, &members_of(&cluster, &[1, 2, 3])).await;
    join(&cluster, 4, &target).await;
    change_members(&cluster, PLACED, &target).await;
    until_voters(&cluster.node(4), PLACED, &[1, 2, 3, 4]).await;
    let got = drain_from(&cluster, 4).await;
    assert_retained_suffix(&got, &sent);
    cluster.shutdown().await;
}

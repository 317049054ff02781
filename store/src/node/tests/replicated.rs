//! Shards replicated over three store nodes in one process, each on its own simulated disk,
//! talking Raft either through the in-process hub (`vela_raft::network`) or over real gRPC
//! connections on loopback (`vela_raft::grpc`), both through the same fault seam: a follower
//! refuses writes and names the leader; when the leader loses power, another takes over with
//! every acknowledged send and ack; the lost node comes back on what its disk kept and catches
//! up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use openraft::async_runtime::WatchReceiver;
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use vela_raft::grpc::{ChannelPool, GrpcNetwork, RaftServer};
use vela_raft::network::{LocalHub, NetFaults, NodeId};
use vela_raft::vfs::sim::{CrashMode, SimVfs};

use super::*;
use crate::PeerBuilds;
use crate::shard::{ShardStateMachine, ShardTypes};
use vela_proto::OpenMode;

type Hub = LocalHub<ShardTypes, ShardStateMachine>;

mod acks;
mod agree;
mod clock;
mod configured;
mod damage;
mod faults;
mod members;
mod moves;
mod offsets;
mod recall;
mod renew;
mod retention;
mod rolling;
mod sends;
mod sql;
mod tiering;
mod transactions;

mod harness;

use harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_keeps_every_acknowledged_send_and_ack() {
    failover(Transport::InProcess).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_keeps_every_acknowledged_send_and_ack_over_grpc() {
    failover(Transport::Grpc).await;
}

async fn failover(transport: Transport) {
    let (clock, shared) = manual_clock();
    let mut cluster = Cluster::start_on(transport, &[1, 2, 3], 11, shared).await;
    let first = cluster.leader().await;
    let follower = *cluster
        .running()
        .iter()
        .find(|&&n| n != first)
        .expect("three nodes");

    // A follower refuses writes and names the leader.
    match cluster
        .node(follower)
        .append(append(vec![message("x")]))
        .await
    {
        Err(StoreError::NotLeader { shard: 0, leader }) => assert_eq!(leader, Some(first)),
        other => panic!("a follower took a write: {other:?}"),
    }

    let leader = cluster.node(first);
    let sent: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
    for body in &sent {
        leader
            .append(append(vec![message(body)]))
            .await
            .expect("the leader appends");
    }
    let got = leader.pop(pop(5, Duration::ZERO)).await.expect("pops");
    assert_eq!(got.len(), 5);
    let acked: BTreeSet<String> = bodies(&got[..3]).into_iter().collect();
    for d in &got[..3] {
        leader.ack(&d.ticket).await.expect("acks");
    }
    drop(leader);

    // The leader loses power; the other two elect one of themselves and take writes.
    cluster.power_cut(first).await;
    let cut_at = std::time::Instant::now();
    // As a client does: to the leader the nodes agree on, again if it lost the shard meanwhile
    // (on a loaded machine a second election may follow the first).
    let mut second = cluster.leader().await;
    for attempt in 0.. {
        match cluster
            .node(second)
            .append(append(vec![message("n00")]))
            .await
        {
            Ok(_) => break,
            Err(StoreError::NotLeader { .. }) if attempt < 20 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                second = cluster.leader().await;
            }
            Err(err) => panic!("the new leader appends: {err:?}"),
        }
    }
    assert_ne!(second, first);
    let leader = cluster.node(second);
    eprintln!(
        "failover ({transport:?}): first acknowledged send {:?} after the power cut",
        cut_at.elapsed()
    );
    for i in 1..10 {
        leader
            .append(append(vec![message(&format!("n{i:02}"))]))
            .await
            .expect("the new leader appends");
    }

    // What was in flight at the cut becomes visible again; every acknowledged send is there
    // exactly once, and no acknowledged ack is undone.
    clock.advance(Duration::from_secs(31));
    let expected: BTreeSet<String> = sent
        .iter()
        .cloned()
        .chain((0..10).map(|i| format!("n{i:02}")))
        .filter(|b| !acked.contains(b))
        .collect();
    let drained = drain(&leader, expected.len()).await;
    let unique: BTreeSet<String> = drained.iter().cloned().collect();
    assert_eq!(drained.len(), unique.len(), "redelivered: {drained:?}");
    assert_eq!(unique, expected);

    // The node that lost power returns on what its disk kept and catches up as a follower.
    cluster.open(first).await;
    let target = cluster.last_applied(second);
    for _ in 0..400 {
        if cluster.last_applied(first) >= target {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        cluster.last_applied(first) >= target,
        "the returned node did not catch up"
    );
    assert_eq!(cluster.leader().await, second);

    // With the second leader gone too, the returned node and the third hold everything: every
    // message is acked, and new sends go on.
    drop(leader);
    cluster.power_cut(second).await;
    let third = cluster.leader().await;
    let leader = cluster.node(third);
    assert!(
        drain(&leader, 1).await.is_empty(),
        "an acked message came back"
    );
    leader
        .append(append(vec![message("after")]))
        .await
        .expect("appends after the second failover");
    assert_eq!(drain(&leader, 1).await, vec!["after".to_string()]);
    drop(leader);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_hands_its_shards_over() {
    let (_clock, shared) = manual_clock();
    let mut cluster = Cluster::start_on(Transport::Grpc, &[1, 2, 3], 5, shared).await;
    let first = cluster.append_via_leader(append(vec![message("a")])).await;
    let leader = cluster.node(first);
    let started = std::time::Instant::now();
    let handed = leader.hand_over_leadership().await;
    let to = *handed
        .get(&0)
        .unwrap_or_else(|| panic!("shard 0 was not handed over: {handed:?}"));
    assert_ne!(to, first);
    eprintln!(
        "handover of shard 0 from {first} to {to} took {:?}",
        started.elapsed()
    );
    drop(leader);
    cluster.power_cut(first).await;
    assert_eq!(cluster.leader().await, to);
    let leader = cluster.node(to);
    leader
        .append(append(vec![message("b")]))
        .await
        .expect("the new leader appends");
    assert_eq!(
        drain(&leader, 2).await,
        vec!["a".to_string(), "b".to_string()]
    );
    drop(leader);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_report_leaders_and_lag_and_hand_leadership_over_on_request() {
    use vela_proto::cluster_status::{ShardHealth, shard_views};
    let (_clock, shared) = manual_clock();
    let cluster = Cluster::start_on(Transport::Grpc, &[1, 2, 3], 9, shared).await;
    let first = cluster.append_via_leader(append(vec![message("a")])).await;
    let remote = cluster.remote_store();
    // Every node answers; once the followers have the entry, every shard is healthy with every
    // replica at lag 0, and shard 0 is led by `first`.
    let mut view = None;
    for _ in 0..200 {
        let reports = remote.node_status().await;
        assert_eq!(reports.len(), 3);
        assert!(reports.iter().all(|r| r.report.is_ok()), "{reports:?}");
        let views = shard_views(&remote.shard_replicas(), &reports);
        assert_eq!(views.len(), SHARDS.len());
        let settled = views
            .iter()
            .all(|v| v.health == ShardHealth::Ok && v.replicas.iter().all(|r| r.lag == Some(0)));
        if settled {
            view = Some((views[0].clone(), views[1].leader));
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (view, shard_1_leader) = view.expect("every shard becomes healthy");
    assert_eq!(view.leader, Some(first));
    assert_eq!(view.replicas.len(), 3);
    assert!(view.replicas.iter().all(|r| r.lag == Some(0)), "{view:?}");

    let target = *cluster
        .running()
        .iter()
        .find(|&&n| n != first)
        .expect("a follower");
    let other = *cluster
        .running()
        .iter()
        .find(|&&n| n != first && n != target)
        .expect("a third node");
    // Only the leader hands over; a node that is no replica is refused.
    let refused = cluster.node(other).transfer_leader(0, target).await;
    assert!(
        matches!(refused, Err(StoreError::NotLeader { leader: Some(l), .. }) if l == first),
        "{refused:?}"
    );
    let refused = remote.transfer_leader(0, 9).await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );

    let changes_before: std::collections::BTreeMap<u64, u64> = cluster
        .running()
        .into_iter()
        .map(|n| (n, leader_changes(&cluster.node(n), 0)))
        .collect();
    remote
        .transfer_leader(0, target)
        .await
        .expect("leadership moves over gRPC");
    assert_eq!(cluster.leader().await, target);
    assert_eq!(
        cluster.node(first).shard_leader(1),
        shard_1_leader,
        "only shard 0 moves"
    );
    // Every node counted the handover (on top of whatever the first election flipped).
    for node in cluster.running() {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = leader_changes(&cluster.node(node), 0);
            if now > changes_before[&node] {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {node}: {now} leader changes of shard 0, {} before the handover",
                changes_before[&node]
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    // Asking for what already holds is a no-op.
    remote.transfer_leader(0, target).await.expect("no-op");
    cluster
        .node(target)
        .append(append(vec![message("b")]))
        .await
        .expect("the new leader appends");
    cluster.shutdown().await;
}

/// `vela_raft_leader_changes_total` of `shard` on `store`, as `/metrics` shows it.
fn leader_changes(store: &Arc<Store>, shard: u32) -> u64 {
    let prefix = format!(r#"vela_raft_leader_changes_total{{shard="{shard}"}} "#);
    metric_lines(store, &["vela_raft_leader_changes_total"])
        .iter()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or(0)
}

/// A leader cut off from its majority still believes it leads until it hears otherwise. It must
/// not answer from its stale state: an ack of a handle the new leader issued is not refused as
/// stale (the client would drop a live ack), and stats are not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_answers_no_stale_reads() {
    let (_clock, shared) = manual_clock();
    let cluster = Cluster::start_on(Transport::InProcess, &[1, 2, 3], 17, shared).await;
    cluster.current_apply_version().await;
    let old = cluster.append_via_leader(append(vec![message("a")])).await;
    let rest: Vec<NodeId> = cluster
        .running()
        .into_iter()
        .filter(|&n| n != old)
        .collect();
    cluster.faults.partition(&[old], &rest);

    // The majority elects a new leader, which delivers the message.
    let mut new = None;
    for _ in 0..400 {
        new = rest
            .iter()
            .copied()
            .find(|&n| cluster.node(n).shard_leader(0) == Some(n));
        if new.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let new = cluster.node(new.expect("the majority elects a leader"));
    // Its metrics name it leader a moment before it serves (it commits its first entry).
    let mut got = Vec::new();
    for _ in 0..200 {
        match new.pop(pop(1, Duration::ZERO)).await {
            Ok(d) if !d.is_empty() => {
                got = d;
                break;
            }
            Ok(_) | Err(StoreError::NotLeader { .. }) => {
                tokio::time::sleep(Duration::from_millis(25)).await
            }
            Err(err) => panic!("receives: {err:?}"),
        }
    }
    assert_eq!(bodies(&got), vec!["a"]);

    let deposed = cluster.node(old);
    assert_eq!(
        deposed.shard_leader(0),
        Some(old),
        "the cut-off leader still believes it leads"
    );
    match deposed.ack(&got[0].ticket).await {
        Err(StoreError::NotLeader { .. } | StoreError::Unavailable(_)) => {}
        other => panic!("a deposed leader answered an ack from its stale state: {other:?}"),
    }
    match deposed.queue_stats_shard(0, &topic(), None, None).await {
        Err(StoreError::NotLeader { .. } | StoreError::Unavailable(_)) => {}
        other => panic!("a deposed leader served stats from its stale state: {other:?}"),
    }
    // The new leader takes the ack; once healed, the old leader follows it.
    new.ack(&got[0].ticket).await.expect("the new leader acks");
    cluster.faults.heal();
    cluster.shutdown().await;
}

/// The apply versions every running node's shards are at.
fn apply_versions(cluster: &Cluster) -> BTreeSet<Option<u32>> {
    cluster
        .running()
        .iter()
        .flat_map(|&id| {
            let store = cluster.node(id);
            SHARDS.map(|s| store.apply_version(s))
        })
        .collect()
}

async fn until_versions(cluster: &Cluster, want: u32, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    while apply_versions(cluster) != BTreeSet::from([Some(want)]) {
        assert!(
            std::time::Instant::now() < deadline,
            "shards at {:?}, not {want}",
            apply_versions(cluster)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A rolling upgrade: while one member's build knows an older apply version, the leaders raise
/// the shards only that far (a replica asked to apply a version it does not know would stop the
/// shard) and sends keep the old semantics; once the last node runs the new build, the shards
/// move up by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_keeps_its_apply_semantics_until_every_member_knows_the_new_ones() {
    // A build from before send deduplication (version 5).
    let old = 4;
    let (_clock, shared) = manual_clock();
    let cluster = Cluster::start_with_builds(
        Transport::InProcess,
        &[1, 2, 3],
        23,
        shared,
        BTreeMap::from([(3, old)]),
    )
    .await;
    let leader = cluster.leader().await;
    until_versions(&cluster, old, Duration::from_secs(10)).await;
    // Well past the moment an ungated leader would have raised it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(apply_versions(&cluster), BTreeSet::from([Some(old)]));
    let resend = || AppendRequest {
        client_id: Some(vela_proto::ClientId::new("c@1").expect("valid client id")),
        ..append(vec![message("same")])
    };
    let store = cluster.node(leader);
    let first = store.append(resend()).await.expect("appends");
    let again = store.append(resend()).await.expect("appends");
    assert_ne!(
        first[0].offset, again[0].offset,
        "version {old} does not deduplicate sends"
    );

    // Node 3 now runs the new build: within a recheck the shards are raised.
    cluster.builds.planted.lock().clear();
    until_versions(
        &cluster,
        crate::state::APPLY_VERSION,
        Duration::from_secs(15),
    )
    .await;
    let leader = cluster.leader().await;
    let store = cluster.node(leader);
    let first = store.append(resend()).await.expect("appends");
    let again = store.append(resend()).await.expect("appends");
    assert_eq!(
        first[0].offset, again[0].offset,
        "now sends are deduplicated"
    );
    cluster.shutdown().await;
}

/// `OpenShard` over gRPC opens a shard on the nodes asked (and only there) and makes it reachable
/// over their Raft transport; bad requests are refused at the boundary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_shard_over_grpc_places_a_shard_on_the_nodes_asked() {
    use vela_proto::pb::store::store_client::StoreClient;
    const PLACED: ShardId = 5;
    let (_clock, shared) = manual_clock();
    let cluster = Cluster::start_on(Transport::Grpc, &[1, 2, 3], 31, shared).await;
    cluster.leader().await;
    let members: BTreeMap<u64, String> = [2, 3]
        .iter()
        .map(|&id| (id, cluster.addrs[&id].to_string()))
        .collect();
    let client = |id: NodeId| {
        let addr = format!("http://{}", cluster.addrs[&id]);
        async move { StoreClient::connect(addr).await.expect("connects") }
    };
    for &id in members.keys() {
        client(id)
            .await
            .open_shard(vela_proto::store_wire::open_shard_to_wire(
                PLACED,
                &members,
                OpenMode::Create,
            ))
            .await
            .expect("opens");
    }
    let leader = placed_leader(&cluster, PLACED).await;
    assert!(members.contains_key(&leader));
    assert!(!cluster.node(1).shard_ids().contains(&PLACED));
    // Just elected, the leader may refuse writes until a quorum answered it (its lease).
    let mut attempts = 0;
    while let Err(err) = cluster
        .node(leader)
        .append(AppendRequest {
            shard: PLACED,
            queue_id: 2,
            ..append(vec![message("over grpc")])
        })
        .await
    {
        attempts += 1;
        assert!(
            matches!(err, StoreError::NotLeader { .. }) && attempts < 200,
            "the placed shard takes writes: {err:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut no_replicas =
        vela_proto::store_wire::open_shard_to_wire(PLACED, &members, OpenMode::Create);
    no_replicas.replicas.clear();
    let refused = client(1)
        .await
        .open_shard(no_replicas)
        .await
        .expect_err("a shard without replicas is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
    cluster.shutdown().await;
}

/// A shard placed on two of the three nodes while they run (as the controller will): it elects
/// a leader among its members, serves, is remembered across a restart, and a node that should
/// hold it but has no log of it refuses to create it empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_placed_at_runtime_elects_serves_and_reopens_after_a_power_cut() {
    const PLACED: ShardId = 7;
    let (_clock, shared) = manual_clock();
    let mut cluster = Cluster::start_on(Transport::InProcess, &[1, 2, 3], 29, shared).await;
    cluster.leader().await;
    let members: BTreeMap<u64, String> = [1, 2]
        .iter()
        .map(|&id| (id, cluster.addrs[&id].to_string()))
        .collect();
    for &id in members.keys() {
        let raft = cluster
            .node(id)
            .open_shard(PLACED, members.clone(), OpenMode::Create)
            .await
            .expect("opens the placed shard");
        cluster.hub.register(u64::from(PLACED), id, raft);
    }
    // Idempotent, and only on its members.
    cluster
        .node(1)
        .open_shard(PLACED, members.clone(), OpenMode::Create)
        .await
        .expect("opening again is a no-op");
    assert!(!cluster.node(3).shard_ids().contains(&PLACED));
    match cluster
        .node(3)
        .open_shard(PLACED, members.clone(), OpenMode::Create)
        .await
    {
        Err(StoreError::Invalid(why)) => assert!(why.contains("not one of its replicas"), "{why}"),
        other => panic!("a non-member opened the shard: {other:?}"),
    }

    let leader = placed_leader(&cluster, PLACED).await;
    let on_placed = |body: &str| AppendRequest {
        shard: PLACED,
        queue_id: 9,
        ..append(vec![message(body)])
    };
    let store = cluster.node(leader);
    // Just elected: it may refuse writes until it has heard from its follower (the lease).
    append_serving(&store, on_placed("p1")).await;
    let got = store.pop(pop(32, Duration::ZERO)).await.expect("receives");
    assert_eq!(bodies(&got), vec!["p1"]);
    store.ack(&got[0].ticket).await.expect("acks");
    store.append(on_placed("p2")).await.expect("appends");

    // The leader loses power; the other member cannot elect alone (two members), so the shard
    // waits for it. Back on its disk, it reopens the placed shard without being told.
    cluster.power_cut(leader).await;
    cluster.open(leader).await;
    assert!(cluster.node(leader).shard_ids().contains(&PLACED));
    let leader = placed_leader(&cluster, PLACED).await;
    let got = pop_serving(&cluster.node(leader), pop(32, Duration::from_secs(2))).await;
    assert_eq!(bodies(&got), vec!["p2"], "p1 stays acked, p2 survived");

    // A member without a log of the shard (a wiped disk) must not create it empty.
    cluster.power_cut(3).await;
    cluster.disks.insert(3, SimVfs::new());
    cluster.open(3).await;
    match cluster
        .node(3)
        .open_shard(0, cluster_voters(&cluster), OpenMode::Resume)
        .await
    {
        Ok(_) => {}
        other => panic!("shard 0 is configured and held: {other:?}"),
    }
    let mut with_three = members.clone();
    with_three.insert(3, cluster.addrs[&3].to_string());
    match cluster
        .node(3)
        .open_shard(PLACED, with_three, OpenMode::Resume)
        .await
    {
        Err(StoreError::ReplicaLost(why)) => assert!(why.contains("has no log"), "{why}"),
        other => panic!("an empty replica was created: {other:?}"),
    }
    cluster.shutdown().await;
}

fn cluster_voters(cluster: &Cluster) -> BTreeMap<u64, String> {
    cluster
        .voters
        .iter()
        .map(|&id| (id, cluster.addrs[&id].to_string()))
        .collect()
}

/// The member every running member of `shard` names its leader.
async fn placed_leader(cluster: &Cluster, shard: ShardId) -> NodeId {
    for _ in 0..400 {
        let views: BTreeSet<Option<u64>> = cluster
            .running()
            .iter()
            .filter(|&&id| cluster.node(id).shard_ids().contains(&shard))
            .map(|&id| cluster.node(id).shard_leader(shard))
            .collect();
        if let [Some(leader)] = views.iter().collect::<Vec<_>>()[..]
            && cluster.running().contains(leader)
        {
            return *leader;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("shard {shard} elects no leader");
}

/// An append on a node that was just handed the shard (it serves once it committed an entry).
async fn append_serving(store: &Store, req: AppendRequest) {
    for _ in 0..200 {
        match store.append(req.clone()).await {
            Ok(_) => return,
            Err(StoreError::NotLeader { .. }) => {
                tokio::time::sleep(Duration::from_millis(25)).await
            }
            Err(err) => panic!("appends: {err:?}"),
        }
    }
    panic!("the node never took the append");
}

/// A receive on a node that was just elected: its metrics name it leader a moment before it
/// serves (it commits its first entry), so `NotLeader` is retried for a while.
async fn pop_serving(store: &Store, req: PopRequest) -> Vec<Delivery> {
    for _ in 0..200 {
        match store.pop(req.clone()).await {
            Ok(d) => return d,
            Err(StoreError::NotLeader { .. }) => {
                tokio::time::sleep(Duration::from_millis(25)).await
            }
            Err(err) => panic!("receives: {err:?}"),
        }
    }
    panic!("the node never served the receive");
}

//! Retention per topic on three replicas: set through the store's gRPC client (as a proxy
//! does) it is in every replica's state, the leader reports it (for the controller's
//! reconciler), and the leader's expiry holds on a new leader after a power cut; while a replica
//! runs a build without it, it is refused and not reported.

use super::*;

/// What each running node's replica of shard 0 reports of its topic retentions.
fn reported(cluster: &Cluster) -> BTreeMap<NodeId, Option<BTreeMap<TopicName, u64>>> {
    cluster
        .running()
        .into_iter()
        .map(|id| {
            let members = cluster.node(id).member_statuses();
            (
                id,
                members
                    .into_iter()
                    .find(|m| m.shard == 0)
                    .and_then(|m| m.retention),
            )
        })
        .collect()
}

/// `(own retentions, queue 0's first offset)` of `topic()` on node `id`'s replica of shard 0.
fn retention_on(cluster: &Cluster, id: NodeId) -> (BTreeMap<TopicName, u64>, Option<u64>) {
    read_state(&cluster.node(id), 0, |s| {
        (
            s.topic_retention().clone(),
            s.queue_index(&topic(), 0).map(|q| q.min_offset()),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_retention_and_its_expiry_hold_on_a_new_leader() {
    let (clock, shared) = manual_clock();
    let mut cluster = Cluster::start_on(Transport::Grpc, &[1, 2, 3], 43, shared).await;
    cluster.current_apply_version().await;
    cluster
        .remote_store()
        .set_topic_retention(&topic(), Some(60_000), 0, &[0])
        .await
        .expect("sets the retention on the shard's leader");
    // The leader reports it, over the store's gRPC as well; followers report nothing.
    let leader = cluster.leader().await;
    let mut want: BTreeMap<_, _> = cluster.running().into_iter().map(|id| (id, None)).collect();
    want.insert(leader, Some([(topic(), 60_000)].into()));
    assert_eq!(reported(&cluster), want);
    let over_grpc: Vec<_> = cluster
        .remote_store()
        .node_status()
        .await
        .into_iter()
        .filter_map(|r| {
            let members = r.report.expect("every node answers");
            let retention = members.into_iter().find(|m| m.shard == 0)?.retention?;
            Some((r.node, retention))
        })
        .collect();
    assert_eq!(over_grpc, [(leader, [(topic(), 60_000)].into())]);
    cluster
        .append_via_leader(append(vec![message("old0"), message("old1")]))
        .await;
    clock.advance(Duration::from_secs(45));
    cluster
        .append_via_leader(append(vec![message("new")]))
        .await;
    clock.advance(Duration::from_secs(30));
    let leader = cluster.leader().await;
    cluster
        .node(leader)
        .enforce_retention()
        .await
        .expect("retention runs");
    assert_eq!(
        retention_on(&cluster, leader),
        ([(topic(), 60_000)].into(), Some(2)),
        "the two stored 75 s ago expired on the leader"
    );
    cluster.power_cut(leader).await;
    let new_leader = cluster.leader().await;
    let want = ([(topic(), 60_000)].into(), Some(2));
    for id in cluster.running() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while retention_on(&cluster, id) != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {id}: {:?}",
                retention_on(&cluster, id)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(drain(&cluster.node(new_leader), 1).await, ["new"]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_replica_runs_an_older_build_topic_retention_is_refused() {
    let old = crate::state::TOPIC_RETENTION_APPLY_VERSION - 1;
    let (_clock, shared) = manual_clock();
    let cluster = Cluster::start_with_builds(
        Transport::InProcess,
        &[1, 2, 3],
        44,
        shared,
        BTreeMap::from([(2, old)]),
    )
    .await;
    until_versions(&cluster, old, Duration::from_secs(10)).await;
    let mut result = Err(StoreError::Unavailable("not tried".into()));
    for _ in 0..50 {
        let leader = cluster.node(cluster.leader().await);
        result = leader
            .set_topic_retention_shard(0, &topic(), Some(60_000), 0)
            .await;
        if !matches!(result, Err(StoreError::NotLeader { .. })) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match result {
        Err(StoreError::Unavailable(reason)) => {
            assert!(reason.contains("apply version"), "{reason}");
        }
        other => panic!("a topic retention on apply version {old}: {other:?}"),
    }
    assert!(
        reported(&cluster).values().all(Option::is_none),
        "below version 15 no replica reports retentions: {:?}",
        reported(&cluster)
    );
    cluster.shutdown().await;
}

//! Group positions on three replicas: a reset is in the log, so after the leader loses power
//! the new leader serves the group from where the reset put it; while a replica runs a build
//! without `SetOffsets`, resets are refused and new groups start as before.

use vela_proto::domain::OffsetTarget;

use super::*;

/// A reset through the current leader, asked again while an election is under way.
async fn reset(cluster: &Cluster, to: OffsetTarget) -> Result<u64, StoreError> {
    let mut result = Err(StoreError::Unavailable("not tried".into()));
    for _ in 0..50 {
        let leader = cluster.node(cluster.leader().await);
        result = leader.reset_offset(&group(), &topic(), 0, 0, to).await;
        match &result {
            Err(StoreError::NotLeader { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => break,
        }
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_holds_on_a_new_leader_after_a_power_cut() {
    let (_clock, shared) = manual_clock();
    let mut cluster = Cluster::start_on(Transport::Grpc, &[1, 2, 3], 41, shared).await;
    cluster.current_apply_version().await;
    let leader = cluster.leader().await;
    let messages = (0..4).map(|i| message(&format!("m{i}"))).collect();
    cluster
        .node(leader)
        .append(append(messages))
        .await
        .expect("the leader appends");
    let first = drain(&cluster.node(leader), 4).await;
    assert_eq!(first.len(), 4);
    assert_eq!(
        reset(&cluster, OffsetTarget::Offset(1))
            .await
            .expect("resets"),
        1
    );
    cluster.power_cut(leader).await;
    let new_leader = cluster.leader().await;
    let again = drain(&cluster.node(new_leader), 3).await;
    assert_eq!(again, vec!["m1", "m2", "m3"]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_replica_runs_an_older_build_resets_are_refused() {
    let old = 7;
    let (_clock, shared) = manual_clock();
    let cluster = Cluster::start_with_builds(
        Transport::InProcess,
        &[1, 2, 3],
        42,
        shared,
        BTreeMap::from([(2, old)]),
    )
    .await;
    let leader = cluster.leader().await;
    until_versions(&cluster, old, Duration::from_secs(10)).await;
    cluster
        .node(leader)
        .append(append(vec![message("m0")]))
        .await
        .expect("appends");
    match reset(&cluster, OffsetTarget::Earliest).await {
        Err(StoreError::Unavailable(reason)) => assert!(reason.contains("apply"), "{reason}"),
        other => panic!("a reset on apply version {old}: {other:?}"),
    }
    // A group that says when it was created still starts, at the first message as before.
    let got = cluster
        .node(cluster.leader().await)
        .pop(PopRequest {
            group_created_ms: Some(i64::MAX),
            group_start: Default::default(),
            ..pop(1, Duration::ZERO)
        })
        .await
        .expect("receives");
    assert_eq!(bodies(&got), vec!["m0".to_owned()]);
    cluster.shutdown().await;
}

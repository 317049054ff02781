//! SQL92 receives on three replicas: the leader evaluates and the log carries its picks, so
//! after the leader loses power the new leader continues where the group's search stood (what
//! was acknowledged does not come back, the rest of the matches come, non-matching messages
//! never). A shard whose replicas do not all know `PopPicked` refuses SQL92 receives instead of
//! writing an entry one of them could not read.

use vela_proto::domain::{MessageFilter, SqlFilter};

use super::*;

const MATCHING: &str = "n >= 0 AND kind = 'keep'";

fn numbered(i: usize) -> MessageRecord {
    let kind = if i.is_multiple_of(3) { "keep" } else { "skip" };
    MessageRecord {
        properties: vec![
            ("n".to_owned(), i.to_string()),
            ("kind".to_owned(), kind.to_owned()),
        ],
        ..message(&format!("m{i:02}"))
    }
}

fn sql_pop(max: u32) -> PopRequest {
    PopRequest {
        filter: MessageFilter::Sql(SqlFilter::parse(MATCHING).expect("valid")),
        ..pop(max, Duration::from_millis(200))
    }
}

/// One SQL92 receive of up to `max` on the current leader, each delivery acked; a failure
/// (an election under way) counts as nothing received.
async fn receive_and_ack(cluster: &Cluster, max: u32) -> Vec<String> {
    let store = cluster.node(cluster.leader().await);
    match store.pop(sql_pop(max)).await {
        Ok(deliveries) => {
            let mut acked = Vec::new();
            for d in &deliveries {
                if store.ack(&d.ticket).await.is_ok() {
                    acked.push(String::from_utf8_lossy(&d.message.body).into_owned());
                }
            }
            acked
        }
        Err(err) => {
            eprintln!("an SQL92 receive failed, again: {err}");
            Vec::new()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sql92_group_continues_on_a_new_leader_after_a_power_cut() {
    let (clock, shared) = manual_clock();
    let mut cluster = Cluster::start_on(Transport::Grpc, &[1, 2, 3], 31, shared).await;
    let leader = cluster.leader().await;
    cluster
        .node(leader)
        .append(append((0..60).map(numbered).collect()))
        .await
        .expect("the leader appends");
    let want: BTreeSet<String> = (0..60)
        .filter(|i| i % 3 == 0)
        .map(|i| format!("m{i:02}"))
        .collect();

    let mut got: Vec<String> = Vec::new();
    while got.is_empty() {
        got.extend(receive_and_ack(&cluster, 5).await);
    }
    cluster.power_cut(leader).await;
    // Past the invisibility: a delivery the cut left unacknowledged comes back once.
    clock.advance(Duration::from_secs(31));
    for _ in 0..100 {
        if got.iter().cloned().collect::<BTreeSet<_>>() == want {
            break;
        }
        let more = receive_and_ack(&cluster, 32).await;
        if more.is_empty() {
            // A delivery whose ack an election failed comes back after its invisibility.
            clock.advance(Duration::from_secs(31));
        }
        got.extend(more);
    }
    let unique: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(unique, want, "every match, and only matches, delivered");
    assert_eq!(
        unique.len(),
        got.len(),
        "an acknowledged match was delivered again: {got:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_with_a_replica_on_an_older_build_refuses_sql92_receives() {
    // The last apply version without `PopPicked`.
    let old = 6;
    let (_clock, shared) = manual_clock();
    let ids = [1, 2, 3];
    let cluster = Cluster::start_with_builds(
        Transport::InProcess,
        &ids,
        32,
        shared,
        BTreeMap::from([(3, old)]),
    )
    .await;
    let leader = cluster.leader().await;
    until_versions(&cluster, old, Duration::from_secs(10)).await;
    cluster
        .node(leader)
        .append(append(vec![numbered(0)]))
        .await
        .expect("appends");
    let mut refused = cluster.node(leader).pop(sql_pop(1)).await;
    for _ in 0..50 {
        if !matches!(refused, Err(StoreError::NotLeader { .. })) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        refused = cluster.node(cluster.leader().await).pop(sql_pop(1)).await;
    }
    match refused {
        Err(StoreError::Unavailable(reason)) => {
            assert!(reason.contains("SQL92"), "{reason}");
        }
        other => panic!("an SQL92 receive on apply version {old}: {other:?}"),
    }
    // Tag receives go on as before.
    let mut tagged = Vec::new();
    for _ in 0..50 {
        match cluster
            .node(cluster.leader().await)
            .pop(pop(1, Duration::ZERO))
            .await
        {
            Ok(got) => {
                tagged = got;
                break;
            }
            Err(err) => {
                eprintln!("a tag receive failed, again: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(bodies(&tagged), vec!["m00".to_owned()]);
    cluster.shutdown().await;
}

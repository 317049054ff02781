//! Transaction check-back on three replicas over gRPC, asked as a proxy asks (`RemoteStore`):
//! after the leader loses power the new leader hands out the due check again with its number
//! (the count follows from the stored time, not from the old leader's memory), a commit still
//! lands, and the orphan is rolled back by the new leader once its checks are used up.

use vela_proto::store_api::TransactionCheckRequest;

use super::*;

fn checked_config(id: NodeId) -> StoreConfig {
    StoreConfig {
        transaction_check_after: Duration::from_secs(6),
        transaction_check_interval: Duration::from_secs(30),
        transaction_check_max: 2,
        ..node_config(id)
    }
}

/// The due checks as a proxy gets them: (body, check number), sorted. A failed ask (a leader
/// not yet confirmed, an election) is asked again, as the proxy's next poll would: nothing is
/// handed out by a call that fails.
async fn due(remote: &dyn StoreApi) -> Vec<(String, u32)> {
    let request = TransactionCheckRequest {
        topics: vec![topic()],
        shards: vec![0],
        max: 16,
    };
    let mut attempts = 0;
    let checks = loop {
        match remote.transaction_checks(&request).await {
            Ok(checks) => break checks,
            Err(err) if attempts < 50 => {
                eprintln!("asking for checks failed, again: {err}");
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("asking for checks keeps failing: {err}"),
        }
    };
    let mut got: Vec<(String, u32)> = checks
        .into_iter()
        .map(|c| {
            (
                String::from_utf8_lossy(&c.message.body).into_owned(),
                c.check,
            )
        })
        .collect();
    got.sort();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_backs_and_orphan_rollback_survive_the_loss_of_the_leader() {
    let (clock, shared) = manual_clock();
    let mut cluster = Cluster::start_full(
        Transport::Grpc,
        &[1, 2, 3],
        23,
        shared,
        BTreeMap::new(),
        checked_config,
    )
    .await;
    let remote = cluster.remote_store();
    let halves = |body: &str| MessageRecord {
        kind: MessageKind::Transaction,
        ..message(body)
    };
    let outcomes = remote
        .append(append(vec![halves("keep"), halves("orphan")]))
        .await
        .expect("appends");
    let ids: Vec<String> = outcomes
        .iter()
        .map(|o| o.transaction_id.clone().expect("half messages"))
        .collect();

    clock.advance(Duration::from_secs(6));
    let first_checks = vec![("keep".to_owned(), 1), ("orphan".to_owned(), 1)];
    assert_eq!(due(remote.as_ref()).await, first_checks);
    assert!(due(remote.as_ref()).await.is_empty(), "handed out once");

    let first = cluster.leader().await;
    cluster.power_cut(first).await;
    // The new leader does not know what the old one handed out: the current check once more,
    // numbered as before.
    let mut again = Vec::new();
    for _ in 0..100 {
        again = due(remote.as_ref()).await;
        if !again.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(again, first_checks);
    let second = cluster.leader().await;
    assert_ne!(second, first);

    // A checker answers one.
    remote
        .end_transaction(&topic(), &ids[0], TransactionResolution::Commit)
        .await
        .expect("commits on the new leader");
    clock.advance(Duration::from_secs(30));
    assert_eq!(due(remote.as_ref()).await, vec![("orphan".to_owned(), 2)]);

    // The other one's checks are used up: the new leader rolls it back by itself.
    clock.advance(Duration::from_secs(30));
    let parked = |store: &Store| read_state(store, 0, |state| state.half_messages().count());
    let deadline = Instant::now() + Duration::from_secs(20);
    while parked(&cluster.node(second)) > 0 {
        assert!(Instant::now() < deadline, "the orphan was not rolled back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(
        remote
            .end_transaction(&topic(), &ids[1], TransactionResolution::Commit)
            .await,
        Err(StoreError::TransactionNotFound(_))
    ));
    assert_eq!(
        drain(&cluster.node(second), 2).await,
        vec!["keep".to_owned()]
    );
    cluster.shutdown().await;
}

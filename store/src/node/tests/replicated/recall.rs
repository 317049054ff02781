//! RecallMessage on three replicas over gRPC, asked as a proxy asks (`RemoteStore`): a
//! recalled delay message stays withdrawn after the leader loses power (the recall is in the
//! log the new leader replays), the other one is released on time by the new leader, and a
//! recall after its release finds nothing.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recall_survives_the_loss_of_the_leader() {
    let (clock, shared) = manual_clock();
    let mut cluster = Cluster::start_on(Transport::Grpc, &[1, 2, 3], 1, shared).await;
    cluster.current_apply_version().await;
    let remote = cluster.remote_store();
    let due_ms = clock.now_ms() + 10_000;
    let delayed = |body: &str| MessageRecord {
        kind: MessageKind::Delay,
        delivery_timestamp_ms: Some(due_ms),
        ..message(body)
    };
    let outcomes = remote
        .append(append(vec![delayed("keep"), delayed("recalled")]))
        .await
        .expect("appends");
    let handles: Vec<String> = outcomes
        .iter()
        .map(|o| o.recall_handle.clone().expect("parked delay messages"))
        .collect();
    remote
        .recall(&topic(), &handles[1])
        .await
        .expect("recalls on the leader");
    assert!(matches!(
        remote.recall(&topic(), &handles[1]).await,
        Err(StoreError::MessageNotFound(_))
    ));
    let other = TopicName::new("elsewhere").expect("valid");
    assert!(matches!(
        remote.recall(&other, &handles[0]).await,
        Err(StoreError::MessageNotFound(_))
    ));

    let first = cluster.leader().await;
    cluster.power_cut(first).await;
    clock.advance(Duration::from_secs(15));
    let mut bodies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while bodies.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the kept message was not released"
        );
        match remote.pop(pop(32, Duration::from_millis(200))).await {
            Ok(got) => bodies.extend(
                got.iter()
                    .map(|d| String::from_utf8_lossy(&d.message.body).into_owned()),
            ),
            Err(err) => eprintln!("receive failed, again: {err}"),
        }
    }
    // Anything else released would be in the same receive or the next.
    if let Ok(more) = remote.pop(pop(32, Duration::from_millis(500))).await {
        bodies.extend(
            more.iter()
                .map(|d| String::from_utf8_lossy(&d.message.body).into_owned()),
        );
    }
    assert_eq!(bodies, vec!["keep"], "the recalled message never comes");
    assert!(matches!(
        remote.recall(&topic(), &handles[0]).await,
        Err(StoreError::MessageNotFound(_))
    ));
}

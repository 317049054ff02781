//! Transaction check-back on a store with real files: due checks are handed out once each, on
//! the schedule the stored time and the policy set, the count survives a restart, and a half
//! message no check resolved is rolled back by the leader and stops holding retention.

use vela_proto::domain::CHECK_AFTER_PROPERTY;
use vela_proto::store_api::{TransactionCheck, TransactionCheckRequest};

use super::*;

fn checks_config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        transaction_check_after: Duration::from_secs(6),
        transaction_check_interval: Duration::from_secs(30),
        transaction_check_max: 3,
        ..config(dir)
    }
}

fn half(body: &str) -> MessageRecord {
    MessageRecord {
        kind: MessageKind::Transaction,
        ..message(body)
    }
}

async fn due(store: &Store, topic: TopicName) -> Vec<(String, u32)> {
    let checks: Vec<TransactionCheck> = store
        .transaction_checks(&TransactionCheckRequest {
            topics: vec![topic],
            shards: Vec::new(),
            max: 100,
        })
        .await
        .expect("checks");
    let mut seen: Vec<(String, u32)> = checks
        .into_iter()
        .map(|c| {
            (
                String::from_utf8_lossy(&c.message.body).into_owned(),
                c.check,
            )
        })
        .collect();
    seen.sort();
    seen
}

fn pair(body: &str, check: u32) -> (String, u32) {
    (body.to_owned(), check)
}

/// The store's transaction metric lines, as `/metrics` shows them.
fn transaction_metrics(store: &Arc<Store>) -> Vec<String> {
    metric_lines(store, &["rocketmq_half_messages{", "vela_store_orphans"])
}

/// Waits until the store's transaction metrics are `want` (the leader reports each second).
async fn until_metrics(store: &Arc<Store>, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = transaction_metrics(store);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "metrics {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn half_messages_are_checked_on_schedule_and_orphans_rolled_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clock, shared) = manual_clock();
    let cfg = checks_config(dir.path());
    let store = Store::open(cfg.clone(), shared.clone())
        .await
        .expect("opens");
    let mut quick = half("quick");
    quick
        .properties
        .push((CHECK_AFTER_PROPERTY.to_owned(), "2".to_owned()));
    let outcomes = store
        .append(append(vec![half("slow"), quick, half("answered")]))
        .await
        .expect("appends");
    let ids: Vec<String> = outcomes
        .iter()
        .map(|o| o.transaction_id.clone().expect("a half message"))
        .collect();
    assert!(due(&store, topic()).await.is_empty(), "nothing due at once");
    until_metrics(
        &store,
        &[r#"rocketmq_half_messages{shard="0",topic="orders"} 3"#],
    )
    .await;

    clock.advance(Duration::from_secs(2));
    assert_eq!(due(&store, topic()).await, vec![pair("quick", 1)]);
    assert!(due(&store, topic()).await.is_empty(), "handed out once");
    clock.advance(Duration::from_secs(4));
    assert!(
        due(&store, TopicName::new("other").expect("valid"))
            .await
            .is_empty(),
        "only the topics asked for"
    );
    assert_eq!(
        due(&store, topic()).await,
        vec![pair("answered", 1), pair("slow", 1)]
    );
    // A producer's checker answers one of them: it is delivered and never checked again.
    store
        .end_transaction(&topic(), &ids[2], TransactionResolution::Commit)
        .await
        .expect("commits");
    let answered = store.pop(pop(32, Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&answered), vec!["answered"]);
    assert_eq!(
        answered[0].transaction_id.as_deref(),
        Some(ids[2].as_str()),
        "a committed transaction is delivered with its id"
    );
    store.ack(&answered[0].ticket).await.expect("acks");

    clock.advance(Duration::from_secs(30));
    assert_eq!(
        due(&store, topic()).await,
        vec![pair("quick", 2), pair("slow", 2)]
    );
    // A restart forgets what was handed out, not how many checks have passed.
    store.shutdown().await.expect("shuts down");
    let store = Store::open(cfg, shared).await.expect("reopens");
    assert_eq!(
        due(&store, topic()).await,
        vec![pair("quick", 2), pair("slow", 2)],
        "the current check again, with its number"
    );
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        due(&store, topic()).await,
        vec![pair("quick", 3), pair("slow", 3)]
    );
    let holds_retention =
        |store: &Store| read_state(store, 0, |state| state.lowest_parked_log_index());
    assert!(holds_retention(&store).is_some());

    // Past the last check's interval the leader rolls both back by itself.
    clock.advance(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(20);
    while holds_retention(&store).is_some() {
        assert!(Instant::now() < deadline, "orphans were not rolled back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &ids[..2] {
        assert!(matches!(
            store
                .end_transaction(&topic(), id, TransactionResolution::Commit)
                .await,
            Err(StoreError::TransactionNotFound(_))
        ));
    }
    assert!(due(&store, topic()).await.is_empty());
    until_metrics(
        &store,
        &[r#"vela_store_orphans_rolled_back_total{shard="0"} 2"#],
    )
    .await;
    clock.advance(Duration::from_secs(60));
    assert!(
        store
            .pop(pop(32, Duration::ZERO))
            .await
            .expect("pops")
            .is_empty(),
        "rolled-back messages are never delivered"
    );
    store.shutdown().await.expect("shuts down");
}

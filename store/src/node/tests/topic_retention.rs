//! Retention per topic on real files: a topic kept longer than the store's `retention_time`
//! keeps the shard's log, one kept for the store's time beside it loses its old messages by
//! a floor (in flight ones included), both survive a restart, and clearing the longer
//! retention lets the log go.

use super::*;

async fn min_offset(store: &Store, topic: &TopicName) -> u64 {
    store.queue_stats(topic, None, &[]).await.expect("stats")[0].min_offset
}

#[tokio::test]
async fn a_topic_kept_longer_holds_the_log_and_one_kept_for_the_store_time_expires_beside_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Segment ages are file times, so retention runs on the real clock.
    let shared: SharedClock = Arc::new(SystemClock);
    let cfg = StoreConfig {
        segment_size: bytesize::ByteSize::kib(8),
        retention_time: Duration::ZERO,
        ..config(dir.path())
    };
    let store = Store::open(cfg.clone(), shared.clone())
        .await
        .expect("opens");
    let (long, short) = (
        TopicName::new("audit").expect("valid"),
        TopicName::new("clicks").expect("valid"),
    );
    store
        .set_topic_retention(&long, Some(3_600_000), 0, &[])
        .await
        .expect("sets the retention");
    let body = "x".repeat(1000);
    for _ in 0..20 {
        for t in [&long, &short] {
            store.append(on(t, &body)).await.expect("appends");
        }
    }
    let in_flight = store.pop(pop_from(&short, "g")).await.expect("pops");
    assert_eq!(in_flight.len(), 20);

    // Expiry cuts at "now": let the clock pass the last message's store time.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let first_index = |store: &Store| {
        store.shards()[&0]
            .shard
            .reader
            .first_index()
            .expect("log not empty")
    };
    let before = first_index(&store);

    let cuts = store.enforce_retention().await.expect("retention runs");
    assert_eq!(cuts[&0], None, "the topic kept an hour keeps the log");
    assert_eq!(first_index(&store), before);
    assert_eq!(min_offset(&store, &long).await, 0);
    assert_eq!(
        min_offset(&store, &short).await,
        20,
        "the topic on the store's time lost its messages"
    );
    assert!(
        matches!(
            store.ack(&in_flight[0].ticket).await,
            Err(StoreError::StaleReceipt(_))
        ),
        "an expired message in flight is gone with it"
    );
    assert!(
        store
            .pop(pop_from(&short, "late"))
            .await
            .expect("pops")
            .is_empty()
    );
    // Restored from a snapshot (format 7 holds the retentions), the log after it replayed.
    store.snapshot().await.expect("snapshots");
    store.shutdown().await.expect("shuts down");

    let store = Store::open(cfg.clone(), shared.clone())
        .await
        .expect("reopens");
    assert_eq!(
        read_state(&store, 0, |s| s.topic_retention().clone()),
        [(long.clone(), 3_600_000)].into()
    );
    assert_eq!(min_offset(&store, &short).await, 20);
    let kept = store.pop(pop_from(&long, "reader")).await.expect("pops");
    assert_eq!(
        kept.iter().map(|d| d.offset).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>(),
        "the topic kept an hour is whole"
    );

    // Back to the store's time: the log goes.
    store
        .set_topic_retention(&long, None, 0, &[])
        .await
        .expect("clears the retention");
    let cuts = store.enforce_retention().await.expect("retention runs");
    assert!(cuts[&0].is_some(), "the log is cut: {cuts:?}");
    assert!(first_index(&store) > before);
    assert!(min_offset(&store, &long).await > 0);
    assert!(read_state(&store, 0, |s| s.topic_retention().is_empty()));
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn a_topic_kept_shorter_than_the_store_expires_only_what_passed_its_time() {
    let (_dir, clock, _shared, store) = open_on_manual_clock().await;
    let short = TopicName::new("clicks").expect("valid");
    store
        .set_topic_retention(&short, Some(60_000), 0, &[])
        .await
        .expect("sets the retention");
    for body in ["a", "b"] {
        store.append(on(&short, body)).await.expect("appends");
        store.append(on(&topic(), body)).await.expect("appends");
    }
    clock.advance(Duration::from_secs(45));
    store.append(on(&short, "c")).await.expect("appends");
    clock.advance(Duration::from_secs(30));
    store.enforce_retention().await.expect("retention runs");
    assert_eq!(
        min_offset(&store, &short).await,
        2,
        "the two stored 75 s ago went, the one 30 s ago stays"
    );
    assert_eq!(
        min_offset(&store, &topic()).await,
        0,
        "a topic on the store's time (three days) keeps its own"
    );
    let got = store.pop(pop_from(&short, "g")).await.expect("pops");
    assert_eq!(bodies(&got), ["c"]);
    store.shutdown().await.expect("shuts down");
}

//! Background upkeep of a store on real files: retention deletes old segments and the state
//! follows; the scrub finds damage in sealed segments and reports it.

use super::*;

/// The `vela_store_…` lines of the store's metrics, as `/metrics` shows them.
fn scrub_metrics(store: &Arc<Store>) -> Vec<String> {
    metric_lines(store, &["vela_store_"])
}

#[tokio::test]
async fn the_scrub_finds_a_flipped_bit_in_a_sealed_segment_and_reports_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        segment_size: bytesize::ByteSize::kib(8),
        scrub_interval: Duration::ZERO,
        ..config(dir.path())
    };
    let (_, clock) = manual_clock();
    let store = Store::open(cfg.clone(), clock.clone())
        .await
        .expect("opens");
    let body = "x".repeat(1000);
    for _ in 0..30 {
        store
            .append(append(vec![message(&body)]))
            .await
            .expect("appends");
    }
    // A restart replays nothing before the snapshot, so it can open over the damage below.
    store.snapshot().await.expect("snapshots");
    let clean = store.scrub().await.expect("scrubs");
    assert_eq!(clean[&0], vec![], "nothing damaged yet");
    let mut segments: Vec<std::path::PathBuf> =
        std::fs::read_dir(dir.path().join("shards").join("0").join("log"))
            .expect("log dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
    segments.sort();
    assert!(segments.len() >= 3, "sealed segments: {segments:?}");
    // Flip one bit in a message body of the first (sealed) segment.
    let mut bytes = std::fs::read(&segments[0]).expect("reads");
    bytes[600] ^= 0x10;
    std::fs::write(&segments[0], &bytes).expect("writes");
    let damaged = store.scrub().await.expect("scrubs");
    assert_eq!(damaged[&0].len(), 1, "{damaged:?}");
    assert_eq!(damaged[&0][0].0, segments[0]);
    let lines = scrub_metrics(&store);
    for expected in [
        r#"vela_store_scrubs_total{result="clean",shard="0"} 1"#,
        r#"vela_store_scrubs_total{result="damaged",shard="0"} 1"#,
        r#"vela_store_damaged_segments{shard="0"} 1"#,
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected} in {lines:?}"
        );
    }
    store.shutdown().await.expect("shuts down");

    // Scheduled: a store that scrubs every 20 ms finds it by itself.
    let store = Store::open(
        StoreConfig {
            scrub_interval: Duration::from_millis(20),
            ..cfg
        },
        clock,
    )
    .await
    .expect("reopens");
    let found = async {
        loop {
            if scrub_metrics(&store)
                .iter()
                .any(|l| l == r#"vela_store_damaged_segments{shard="0"} 1"#)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), found)
        .await
        .expect("a scheduled scrub reported the damage");
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn retention_deletes_old_segments_and_the_state_follows() {
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
    let body = "x".repeat(1000);
    for _ in 0..40 {
        store
            .append(append(vec![message(&body)]))
            .await
            .expect("appends");
    }
    let got = store.pop(pop(3, Duration::ZERO)).await.expect("pops");
    let cuts = store.enforce_retention().await.expect("retention runs");
    let cut = cuts[&0].expect("something was removed");
    let stats = store.queue_stats(&topic(), None, &[]).await.expect("stats");
    assert!(stats[0].min_offset > 0, "min offset rose: {stats:?}");
    assert_eq!(stats[0].max_offset, 40);
    assert!(
        matches!(
            store.ack(&got[0].ticket).await,
            Err(StoreError::StaleReceipt(_))
        ),
        "its message is gone"
    );
    let first_index = store.shards()[&0]
        .shard
        .reader
        .first_index()
        .expect("log not empty");
    assert!(
        first_index >= cut,
        "log starts at {first_index}, cut was {cut}"
    );
    store
        .append(append(vec![message("fresh")]))
        .await
        .expect("appends after retention");
    store.shutdown().await.expect("shuts down");

    let store = Store::open(cfg, shared)
        .await
        .expect("reopens after a purge");
    assert_eq!(
        store.queue_stats(&topic(), None, &[]).await.expect("stats")[0].min_offset,
        stats[0].min_offset
    );
    let rest = store
        .pop(PopRequest {
            group: GroupName::new("late").expect("valid"),
            ..pop(32, Duration::ZERO)
        })
        .await;
    let rest = rest.expect("pops");
    assert_eq!(
        rest[0].offset, stats[0].min_offset,
        "a new group starts at the new minimum"
    );
    assert_eq!(rest.last().map(|d| d.offset), Some(40));
    assert_eq!(bodies(&rest).last().map(String::as_str), Some("fresh"));
    assert!(
        rest.iter()
            .all(|d| d.message.body.len() == 1000 || d.offset == 40)
    );
    store.shutdown().await.expect("shuts down");
}

//! Tiered storage end to end (ADR 0023): a standalone node tiers its sealed segments to a real
//! S3-compatible server (moto, started by `scripts/test.sh`, which sets
//! `VELA_TEST_S3_ENDPOINT` and `VELA_TEST_S3_BUCKET`), deletes its local copies, restarts, and
//! a group started at the earliest offset reads everything back from the bucket; a reset to a
//! time a week ago reads from there on. Without S3, the same runs against the default
//! local-directory tier.

use std::time::Duration;

use vela::config::VelaConfig;
use vela_sdk::Message;

use crate::harness::{Node, unique};
use crate::t21_metrics::scrape;

const OLD: usize = 300;
const RECENT: usize = 60;

fn tiering(config: &mut VelaConfig, url: Option<String>) {
    config.store.segment_size = bytesize::ByteSize::kib(64);
    config.store.local_retention_time = Duration::ZERO;
    // Local copies go once a snapshot generation no longer needs them (ADR 0006): snapshot often.
    config.store.snapshot_every_entries = 50;
    // The test moves the clock a week ahead: total retention must cover it.
    config.store.retention_time = Duration::from_secs(30 * 24 * 3600);
    config.tier.interval = Duration::from_millis(200);
    config.tier.read_block = bytesize::ByteSize::kib(64);
    if let Some(url) = url {
        config.tier.url = Some(url);
        config.tier.endpoint = std::env::var("VELA_TEST_S3_ENDPOINT").ok();
        config.tier.allow_http = true;
        config.tier.access_key_id = Some("test".into());
        config.tier.secret_access_key = Some("test".into());
    }
}

/// The first log index of each local segment file of shard 0.
fn local_segments(node: &Node) -> Vec<u64> {
    let mut firsts: Vec<u64> = std::fs::read_dir(node.config.data_dir.join("store/shards/0/log"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    firsts.sort_unstable();
    firsts
}

async fn tier_status(node: &Node, topic: &str) -> serde_json::Value {
    let out = node
        .admin(&["tier", "status", "--topic", topic, "--output", "json"])
        .await
        .unwrap();
    serde_json::from_str(&out).unwrap()
}

async fn send(node: &Node, topic: &str, range: std::ops::Range<usize>) {
    let producer = node.producer(topic).await;
    let pad = "p".repeat(700);
    for i in range {
        producer
            .send(
                Message::builder(topic)
                    .keys(vec![format!("order-{i}")])
                    .body(format!("m{i:04}-{pad}"))
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
    }
    producer.shutdown().await.unwrap();
}

/// Receives and acks until `want` arrived (or the patience runs out); the bodies' numbers in
/// the order received.
async fn read(node: &Node, group: &str, topic: &str, want: usize) -> Vec<usize> {
    let consumer = node.consumer(group, topic, "*").await;
    let mut got = Vec::new();
    let mut empty = 0;
    while got.len() < want && empty < 10 {
        let batch = consumer.receive(32, Duration::from_secs(60)).await.unwrap();
        if batch.is_empty() {
            empty += 1;
        }
        for m in batch {
            let body = String::from_utf8_lossy(&m.body).into_owned();
            assert!(body.ends_with(&"p".repeat(700)), "body intact");
            got.push(body[1..5].parse().unwrap());
            consumer.ack(&m).await.unwrap();
        }
    }
    consumer.shutdown().await.unwrap();
    got
}

async fn history_reads_back_from_the_tier(url: Option<String>) {
    let mut node = Node::start_with(|c| tiering(c, url.clone())).await;
    let topic = unique("history");
    node.admin(&["topic", "create", &topic, "--queues", "1"])
        .await
        .unwrap();
    send(&node, &topic, 0..OLD).await;
    let week_ago = node.clock.as_ref() as &dyn vela_proto::clock::Clock;
    let between = week_ago.now_ms() + 1;
    // A week passes.
    node.clock.advance(Duration::from_secs(7 * 24 * 3600));
    send(&node, &topic, OLD..OLD + RECENT).await;

    // Sealed segments go up and leave local disk.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = tier_status(&node, &topic).await;
        let shard = &status["shards"][0];
        if shard["tiered_segments"].as_u64() >= Some(3)
            && shard["pending_segments"].as_u64() == Some(0)
            && shard["local_first"].as_u64() > Some(0)
        {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not tiered: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let shard = &status["shards"][0];
    assert_eq!(shard["leader"], true);
    assert_eq!(shard["last_error"], serde_json::Value::Null);
    assert!(shard["tiered_bytes"].as_u64() > Some(0));
    let local = local_segments(&node);
    assert!(
        local.first() > Some(&0) && local.first().copied() >= shard["local_first"].as_u64(),
        "the oldest local segments were deleted: {local:?}, {shard}"
    );

    // After a restart (an empty read cache), a group from the earliest offset reads it all, in
    // order, from the bucket.
    node.restart().await;
    let all = unique("all");
    node.admin(&["group", "create", &all, "--from", "earliest"])
        .await
        .unwrap();
    let got = read(&node, &all, &topic, OLD + RECENT).await;
    assert_eq!(got, (0..OLD + RECENT).collect::<Vec<_>>());
    // The oldest message is found by its key, body and track, from the tier (ADR 0028).
    let found = node
        .admin(&[
            "message", "find", "--topic", &topic, "--key", "order-0", "--output", "json",
        ])
        .await
        .unwrap();
    let found: serde_json::Value = serde_json::from_str(&found).unwrap();
    assert!(
        found[0]["body"]
            .as_str()
            .is_some_and(|b| b.starts_with("m0000-")),
        "{found}"
    );
    assert_eq!(
        crate::harness::track_kinds(&found[0]),
        ["stored", "delivered", "acked"],
        "{found}"
    );
    let metrics = scrape(node.http()).await;
    let gets: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("vela_tier_get_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(gets > 0.0, "reads went to the tier: {gets}");

    // A reset to a time a week ago, inside the tiered range: from the first message stored
    // since.
    let reset = unique("reset");
    node.admin(&["group", "create", &reset, "--from", "earliest"])
        .await
        .unwrap();
    let at = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(between).unwrap()),
    )
    .to_string();
    node.admin(&[
        "--yes", "group", "reset", &reset, "--topic", &topic, "--to", &at,
    ])
    .await
    .unwrap();
    let got = read(&node, &reset, &topic, RECENT).await;
    assert_eq!(got, (OLD..OLD + RECENT).collect::<Vec<_>>());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_back_from_an_s3_bucket_after_local_copies_are_gone() {
    let (Ok(_), Ok(bucket)) = (
        std::env::var("VELA_TEST_S3_ENDPOINT"),
        std::env::var("VELA_TEST_S3_BUCKET"),
    ) else {
        assert!(
            std::env::var_os("VELA_TEST_REQUIRE_S3").is_none(),
            "VELA_TEST_REQUIRE_S3 is set but VELA_TEST_S3_ENDPOINT / VELA_TEST_S3_BUCKET are not"
        );
        eprintln!("VELA_TEST_S3_ENDPOINT is not set (scripts/test.sh starts moto): not run");
        return;
    };
    history_reads_back_from_the_tier(Some(format!("s3://{bucket}/{}", unique("t23")))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_tiers_to_its_data_directory_by_default() {
    history_reads_back_from_the_tier(None).await;
}

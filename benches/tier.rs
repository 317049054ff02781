//! Tiered-storage benchmark (ADR 0023): does upload keep up with ingest, how fast does a
//! consumer replay history from the tier compared with the same replay from local disk, and
//! what does a cold replay do to the latency of concurrent sends.
//!
//! Starts the release `vela standalone` (fsync group commit on) in a temp dir with its default
//! local-directory tier (or S3 when `VELA_BENCH_S3_ENDPOINT` and `VELA_BENCH_S3_BUCKET` are
//! set, e.g. moto from `scripts/s3-server.sh`), local retention long enough that nothing is
//! evicted, and:
//! 1. fills one topic with `VELA_BENCH_TIER_MESSAGES` messages of 1 KiB (default 1,000,000),
//!    sampling the upload lag (`vela admin tier status`) every second;
//! 2. replays them all with a group from the earliest offset: the hot baseline, from local disk;
//! 3. restarts with `store.local_retention_time = 0s`, waits until the tiered segments left
//!    local disk, and replays them all again with another group: the cold replay, from the tier
//!    through the read cache;
//! 4. sends at a fixed rate (half the single-message peak) for 15 s alone, for 15 s while one
//!    consumer of another group replays from local disk (before the restart), and for 15 s
//!    while one of a third group replays from the tier, each load in its own `vela bench`
//!    process, and compares the send p99 of the three runs.
//!
//! Broker CPU per message is reported for each replay. Run: `cargo bench --bench tier`.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{cpu_seconds, free_port, start_standalone, stop, ticks_per_second};
use vela::admin::{AdminCommand, OutputFormat, Target, TierCommand};
use vela::bench::{BenchArgs, execute};
use vela_sdk::{ClientConfig, Message, Producer};

const BATCH: u64 = 64;
const PRODUCERS: u64 = 8;
const BODY: usize = 1024;
/// Send rate of the latency comparison (messages a second): about half the single-message
/// peak on the 2-core VM of `docs/benchmarks.md`, as issues 5 and 10 ask.
const PROBE_RATE: u64 = 10_000;

/// Shard 0's tier status: (pending bytes, tiered bytes, local first index, tiered last index).
async fn tier_status(server: &str) -> (u64, u64, u64, u64) {
    let target = Target {
        output: OutputFormat::Json,
        ..Target::plain(server)
    };
    let out = vela::admin::execute(
        &target,
        AdminCommand::Tier(TierCommand::Status { topic: None }),
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &v["shards"][0];
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    (
        n("pending_bytes"),
        n("tiered_bytes"),
        n("local_first"),
        n("tiered_last"),
    )
}

/// Sends `total` messages of 1 KiB in batches of 64 from 8 concurrent senders while sampling
/// the upload lag every second; returns the seconds taken and the largest lag seen (bytes).
async fn fill(server: &str, topic: &str, total: u64) -> (f64, u64) {
    let config = ClientConfig::builder().endpoint(server).build().unwrap();
    let producer = Arc::new(
        Producer::builder(config)
            .topics([topic.to_owned()])
            .build()
            .await
            .unwrap(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..PRODUCERS {
        let (producer, next, topic) = (producer.clone(), next.clone(), topic.to_owned());
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(BATCH, Ordering::Relaxed);
                if first >= total {
                    return;
                }
                let batch: Vec<Message> = (first..(first + BATCH).min(total))
                    .map(|_| {
                        Message::builder(&topic)
                            .body(vec![b'x'; BODY])
                            .build()
                            .unwrap()
                    })
                    .collect();
                producer.send_batch(batch).await.unwrap();
            }
        }));
    }
    let started = Instant::now();
    let mut max_lag = 0;
    while !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (lag, ..) = tier_status(server).await;
        max_lag = max_lag.max(lag);
    }
    for task in tasks {
        task.await.unwrap();
    }
    (started.elapsed().as_secs_f64(), max_lag)
}

fn replay_args(server: &str, topic: &str, group: &str, secs: u64) -> BenchArgs {
    BenchArgs {
        topic: Some(topic.to_owned()),
        group: Some(group.to_owned()),
        producers: 0,
        consumers: 4,
        message_size: BODY,
        duration: Duration::from_secs(secs),
        drain: Duration::ZERO,
        ..support::bench_args(server, secs)
    }
}

/// Replays the topic with `group` until `total` arrived (in 10 s slices); returns messages,
/// seconds and broker CPU seconds.
async fn replay(server: &str, topic: &str, group: &str, total: u64, pid: u32) -> (u64, f64, f64) {
    let ticks = ticks_per_second();
    let cpu = cpu_seconds(pid, ticks);
    let started = Instant::now();
    let mut received = 0;
    while received < total && started.elapsed() < Duration::from_secs(1800) {
        let report = execute(replay_args(server, topic, group, 10))
            .await
            .unwrap();
        if report.received == 0 {
            break;
        }
        received += report.received;
    }
    (
        received,
        started.elapsed().as_secs_f64(),
        cpu_seconds(pid, ticks) - cpu,
    )
}

/// `vela bench ARGS --json` as its own process (so its runtime is not the one replaying).
fn bench_process(server: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_vela"));
    cmd.args(["bench", "--server", server, "--json"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Sends at [`PROBE_RATE`] for 15 s from a separate `vela bench` process (32 producers over 4
/// connections, open loop); the send p99 (ms).
async fn probe(server: &str, topic: &str) -> f64 {
    let rate = PROBE_RATE.to_string();
    let out = bench_process(
        server,
        &[
            "--topic",
            topic,
            "--producers",
            "32",
            "--producer-clients",
            "4",
            "--consumers",
            "0",
            "--rate",
            &rate,
            "--duration",
            "15s",
            "--drain",
            "0s",
        ],
    )
    .output()
    .await
    .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["send_latency"]["p99_ms"].as_f64().unwrap()
}

/// Probes while `group` replays `topic` with one consumer in another `vela bench` process
/// (started 2 s before, killed after).
async fn under_replay(server: &str, topic: &str, probe_topic: &str, group: &str) -> f64 {
    let replaying = bench_process(
        server,
        &[
            "--topic",
            topic,
            "--group",
            group,
            "--producers",
            "0",
            "--consumers",
            "1",
            "--duration",
            "60s",
            "--drain",
            "0s",
        ],
    )
    .spawn()
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p99 = probe(server, probe_topic).await;
    drop(replaying);
    p99
}

#[tokio::main]
async fn main() {
    let total: u64 = std::env::var("VELA_BENCH_TIER_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (grpc, http) = (free_port(), free_port());
    let server = format!("127.0.0.1:{grpc}");
    let s3 = std::env::var("VELA_BENCH_S3_ENDPOINT")
        .ok()
        .zip(std::env::var("VELA_BENCH_S3_BUCKET").ok());
    let mut env: Vec<(String, String)> = vec![
        ("VELA_TIER__INTERVAL".into(), "1s".into()),
        // Replicas keep the log between two snapshot generations (ADR 0006): snapshot often
        // so nearly all of it can leave local disk.
        ("VELA_STORE__SNAPSHOT_EVERY_BYTES".into(), "32MiB".into()),
    ];
    let tier = match &s3 {
        Some((endpoint, bucket)) => {
            env.extend([
                (
                    "VELA_TIER__URL".into(),
                    format!("s3://{bucket}/bench-{}", std::process::id()),
                ),
                ("VELA_TIER__ENDPOINT".into(), endpoint.clone()),
                ("VELA_TIER__ALLOW_HTTP".into(), "true".into()),
                ("VELA_TIER__ACCESS_KEY_ID".into(), "test".into()),
                ("VELA_TIER__SECRET_ACCESS_KEY".into(), "test".into()),
            ]);
            format!("S3 at {endpoint}")
        }
        None => "the local-directory tier".to_owned(),
    };
    fn with<'a>(env: &'a [(String, String)], local: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        e.push(("VELA_STORE__LOCAL_RETENTION_TIME", local));
        e
    }
    println!("tier benchmark: {total} messages of {BODY} B, {tier}");

    let (child, _) = start_standalone(&data, grpc, http, &with(&env, "24h")).await;
    let topic = format!("tier-{}", std::process::id());
    for group in ["hot", "hot-under-load", "cold", "cold-under-load"] {
        support::create_group(&server, group).await;
    }
    let (fill_s, max_lag) = fill(&server, &topic, total).await;
    println!(
        "fill: {total} messages in {fill_s:.1} s ({:.0} msg/s, {:.1} MiB/s); largest upload lag {:.1} MiB",
        total as f64 / fill_s,
        (total as usize * BODY) as f64 / fill_s / 1048576.0,
        max_lag as f64 / 1048576.0
    );
    let caught_up = Instant::now();
    while tier_status(&server).await.0 > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "upload lag back to 0 {:.1} s after the fill ended",
        caught_up.elapsed().as_secs_f64()
    );

    let pid = child.id().unwrap();
    let (hot, hot_s, hot_cpu) = replay(&server, &topic, "hot", total, pid).await;
    println!(
        "hot replay (local disk): {hot} messages in {hot_s:.1} s ({:.0} msg/s), broker CPU {:.1} µs/msg",
        hot as f64 / hot_s,
        hot_cpu * 1e6 / hot as f64
    );
    // Send latency alone, then while another group replays from local disk.
    let probe_topic = format!("{topic}-probe");
    // Once unmeasured: the first sends to a topic (routes, clients connecting) and the work a
    // 1 M-message replay leaves behind are not what a replay does to live sends.
    probe(&server, &probe_topic).await;
    let alone = probe(&server, &probe_topic).await;
    let during_hot = under_replay(&server, &topic, &probe_topic, "hot-under-load").await;
    println!(
        "send p99 at {PROBE_RATE} msg/s: {alone:.2} ms alone, {during_hot:.2} ms during a hot replay"
    );
    stop(child).await;

    // Local retention 0: the tiered segments leave local disk.
    let (child, _) = start_standalone(&data, grpc, http, &with(&env, "0s")).await;
    let pid = child.id().unwrap();
    let waited = Instant::now();
    let (_, tiered, local_first, tiered_last) = loop {
        let status = tier_status(&server).await;
        let (_, _, local_first, tiered_last) = status;
        if local_first > tiered_last / 2 || waited.elapsed() > Duration::from_secs(120) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "evicted: local log starts at index {local_first} of {tiered_last} tiered ({:.0} MiB in the tier)",
        tiered as f64 / 1048576.0
    );
    let metrics_before = support::scrape_counter(http, "vela_tier_get_bytes_total").await;
    let (cold, cold_s, cold_cpu) = replay(&server, &topic, "cold", total, pid).await;
    let got = support::scrape_counter(http, "vela_tier_get_bytes_total").await - metrics_before;
    println!(
        "cold replay (tier): {cold} messages in {cold_s:.1} s ({:.0} msg/s), broker CPU {:.1} µs/msg, {:.0} MiB read from the tier",
        cold as f64 / cold_s,
        cold_cpu * 1e6 / cold as f64,
        got / 1048576.0
    );

    // Send latency while another group replays from the tier.
    let during_cold = under_replay(&server, &topic, &probe_topic, "cold-under-load").await;
    println!(
        "send p99 at {PROBE_RATE} msg/s: {alone:.2} ms alone, {during_hot:.2} ms during a hot \
         replay, {during_cold:.2} ms during a cold replay ({:.2}x the hot one)",
        during_cold / during_hot
    );
    let json = serde_json::json!({
        "messages": total,
        "message_bytes": BODY,
        "tier": tier,
        "fill_seconds": fill_s,
        "max_upload_lag_bytes": max_lag,
        "hot_replay_msgs_per_s": hot as f64 / hot_s,
        "hot_replay_cpu_us_per_msg": hot_cpu * 1e6 / hot as f64,
        "cold_replay_msgs_per_s": cold as f64 / cold_s,
        "cold_replay_cpu_us_per_msg": cold_cpu * 1e6 / cold as f64,
        "cold_replay_tier_bytes": got,
        "send_p99_ms_alone": alone,
        "send_p99_ms_during_hot_replay": during_hot,
        "send_p99_ms_during_cold_replay": during_cold,
    });
    println!("{}", serde_json::to_string_pretty(&json).unwrap());
    stop(child).await;
}

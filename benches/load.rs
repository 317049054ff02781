//! The load benchmark behind docs/benchmarks.md: starts the real `vela standalone` binary
//! (release build, fsync group commit on) in a temp dir, measures its idle RSS, then drives it
//! with `vela bench` scenarios from this process (load generator on the same machine) and
//! prints one line per scenario plus the JSON reports.
//!
//! Run: `cargo bench --bench load` (VELA_BENCH_SECONDS=N per scenario, default 10).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{bench_args, free_port, http_ok, rss_mib};
use tokio::process::Command;
use vela::bench::{BenchArgs, BenchReport, execute};

fn line(name: &str, r: &BenchReport) {
    println!(
        "{name:<34} sent {:>9.0} msg/s  recv {:>9.0} msg/s  send p50 {:>6.2} ms  p99 {:>6.2} ms  e2e p99 {:>7.2} ms  errors {}/{}",
        r.send_rate,
        r.receive_rate,
        r.send_latency.p50_ms,
        r.send_latency.p99_ms,
        r.end_to_end_latency.p99_ms,
        r.send_errors,
        r.receive_errors
    );
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let secs: u64 = std::env::var("VELA_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let (grpc, http) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_vela"))
        .args(["standalone", "--grpc-listen", &format!("127.0.0.1:{grpc}")])
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http_ok(http, "/ready").await {
        assert!(Instant::now() < deadline, "vela did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_mib(&child);
    println!("vela standalone idle RSS: {idle_rss:.1} MiB");
    let server = format!("127.0.0.1:{grpc}");
    let mut reports = Vec::new();

    let batched = execute(BenchArgs {
        producers: 8,
        producer_clients: 4,
        batch_size: 32,
        ..bench_args(&server, secs)
    })
    .await
    .unwrap();
    line("produce, batches of 32", &batched);
    let batched_topic = batched.topic.clone();
    reports.push(("produce_batched", batched));

    let single = execute(BenchArgs {
        producers: 64,
        producer_clients: 8,
        ..bench_args(&server, secs)
    })
    .await
    .unwrap();
    line("produce, 1 message per request", &single);
    let peak_single = single.send_rate;
    reports.push(("produce_single", single));

    let half = (peak_single / 2.0).max(1.0) as u64;
    let fixed = execute(BenchArgs {
        producers: 32,
        producer_clients: 8,
        rate: Some(half),
        ..bench_args(&server, secs)
    })
    .await
    .unwrap();
    line(&format!("produce at half peak ({half} msg/s)"), &fixed);
    reports.push(("produce_half_peak", fixed));

    // Drain the backlog the batched scenario left: receive 32 per call, one ack per message.
    let backlog = execute(BenchArgs {
        topic: Some(batched_topic),
        producers: 0,
        consumers: 8,
        ..bench_args(&server, secs)
    })
    .await
    .unwrap();
    line("receive + ack a backlog (8 consumers)", &backlog);
    reports.push(("consume_backlog", backlog));

    let mixed = execute(BenchArgs {
        producers: 64,
        producer_clients: 8,
        consumers: 8,
        ..bench_args(&server, secs)
    })
    .await
    .unwrap();
    line("produce + receive/ack together", &mixed);
    reports.push(("produce_and_consume", mixed));

    let loaded_rss = rss_mib(&child);
    println!("vela standalone RSS after load: {loaded_rss:.1} MiB");
    let json: serde_json::Value = serde_json::json!({
        "idle_rss_mib": idle_rss,
        "loaded_rss_mib": loaded_rss,
        "seconds_per_scenario": secs,
        "scenarios": reports.iter().map(|(k, r)| (k.to_string(), serde_json::to_value(r).unwrap())).collect::<serde_json::Map<_, _>>(),
    });
    println!("{}", serde_json::to_string_pretty(&json).unwrap());
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

//! The cluster benchmark behind docs/benchmarks.md ("Cluster: throughput and CPU"): the same
//! `vela bench` scenarios against `vela standalone` and against `vela local-cluster` (3
//! controllers, 3 store nodes with every shard replicated on all three, 2 proxies; writes
//! acknowledged once a majority fsynced them), one after the other on this machine, with the
//! load generator in this process. For each scenario it reports throughput, send latency, and
//! the CPU time the broker processes used per message (utime + stime from /proc, summed over
//! the store nodes, the proxies and the controllers separately for the cluster).
//!
//! The cluster's shard leaders are spread (one per store node) before measuring.
//!
//! Run: `cargo bench --bench cluster` (VELA_BENCH_SECONDS=N per scenario, default 10).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{bench_args, cpu_seconds, free_port, stop, ticks_per_second, wait_ready};
use tokio::process::Command;
use vela::bench::{BenchArgs, BenchReport, execute};

/// The broker processes of one system, grouped by role.
struct Processes {
    groups: Vec<(&'static str, Vec<u32>)>,
}

impl Processes {
    fn cpu(&self, ticks: f64) -> Vec<f64> {
        self.groups
            .iter()
            .map(|(_, pids)| pids.iter().map(|&p| cpu_seconds(p, ticks)).sum())
            .collect()
    }
}

/// Runs the scenarios against `server` and prints a line per scenario.
async fn scenarios(system: &str, server: &str, procs: &Processes, secs: u64) -> serde_json::Value {
    let ticks = ticks_per_second();
    let mut out = serde_json::Map::new();
    let mut backlog_topic = None;
    let plan: Vec<(&str, BenchArgs)> = vec![
        (
            "produce, batches of 32",
            BenchArgs {
                producers: 8,
                producer_clients: 4,
                batch_size: 32,
                ..bench_args(server, secs)
            },
        ),
        (
            "produce, 1 message per request",
            BenchArgs {
                producers: 64,
                producer_clients: 8,
                ..bench_args(server, secs)
            },
        ),
        (
            "produce at 5,000 msg/s",
            BenchArgs {
                producers: 32,
                producer_clients: 8,
                rate: Some(5_000),
                ..bench_args(server, secs)
            },
        ),
        (
            "receive + ack the backlog (8 consumers)",
            BenchArgs {
                producers: 0,
                consumers: 8,
                ..bench_args(server, secs)
            },
        ),
    ];
    for (name, mut bench) in plan {
        if bench.producers == 0 {
            bench.topic = backlog_topic.clone();
        }
        let before = procs.cpu(ticks);
        let report: BenchReport = execute(bench).await.unwrap();
        let after = procs.cpu(ticks);
        if backlog_topic.is_none() {
            backlog_topic = Some(report.topic.clone());
        }
        let messages = if report.received > 0 {
            report.received
        } else {
            report.sent
        } as f64;
        let per_message: Vec<String> = procs
            .groups
            .iter()
            .zip(after.iter().zip(&before))
            .map(|((role, _), (a, b))| format!("{role} {:.1} µs", (a - b) / messages * 1e6))
            .collect();
        let total: f64 = after.iter().zip(&before).map(|(a, b)| a - b).sum::<f64>() / messages;
        println!(
            "{system:<10} {name:<40} sent {:>8.0}/s recv {:>8.0}/s  send p50 {:>6.2} ms p99 {:>7.2} ms  CPU/msg {:>6.1} µs ({})  errors {}/{}",
            report.send_rate,
            report.receive_rate,
            report.send_latency.p50_ms,
            report.send_latency.p99_ms,
            total * 1e6,
            per_message.join(", "),
            report.send_errors,
            report.receive_errors
        );
        let mut value = serde_json::to_value(&report).unwrap();
        value["broker_cpu_us_per_message"] = serde_json::json!(total * 1e6);
        out.insert(name.to_string(), value);
    }
    serde_json::Value::Object(out)
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("VELA_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut results = serde_json::Map::new();

    // Standalone.
    let dir = tempfile::tempdir().unwrap();
    let (grpc, http) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_vela"))
        .args(["standalone", "--grpc-listen", &format!("127.0.0.1:{grpc}")])
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_ready(http, Duration::from_secs(90)).await;
    let procs = Processes {
        groups: vec![("broker", vec![child.id().unwrap()])],
    };
    let standalone = scenarios("standalone", &format!("127.0.0.1:{grpc}"), &procs, secs).await;
    results.insert("standalone".into(), standalone);
    stop(child).await;

    // local-cluster: 3 controllers, 3 stores, 2 proxies.
    let dir = tempfile::tempdir().unwrap();
    let base: u16 = 20_000 + (std::process::id() % 60) as u16 * 200;
    let child = Command::new(env!("CARGO_BIN_EXE_vela"))
        .args(["local-cluster", "--base-port", &base.to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        // Leaders are spread within a second or two of the start, before the measurement.
        .env("VELA_CONTROLLER__LEADER_BALANCE_INTERVAL", "1s")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for offset in [121, 122, 111, 112, 113, 101, 102, 103] {
        wait_ready(base + offset, Duration::from_secs(90)).await;
    }
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("cluster.json")).unwrap())
            .unwrap();
    let pids = |role: &str| -> Vec<u32> {
        file[role]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["pid"].as_u64().unwrap() as u32)
            .collect()
    };
    let procs = Processes {
        groups: vec![
            ("stores", pids("stores")),
            ("proxies", pids("proxies")),
            ("controllers", pids("controllers")),
        ],
    };
    let proxy = file["proxies"][0]["addr"].as_str().unwrap().to_owned();
    wait_leaders_spread(&proxy).await;
    let cluster = scenarios("cluster R3", &proxy, &procs, secs).await;
    results.insert("local_cluster_r3".into(), cluster);
    stop(child).await;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Object(results)).unwrap()
    );
}

/// Waits (up to 60 s) until every store node leads a shard, as `vela admin cluster status`
/// reports it, so the measurement never runs with one node leading everything.
async fn wait_leaders_spread(proxy: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_vela"))
            .args([
                "admin", "--server", proxy, "cluster", "status", "--output", "json",
            ])
            .output()
            .await
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let leads: Vec<u64> = status["stores"]
            .as_array()
            .map(|s| s.iter().filter_map(|n| n["leads"].as_u64()).collect())
            .unwrap_or_default();
        if leads.len() == 3 && leads.iter().all(|&l| l == 1) {
            println!("shard leaders spread: one per store node");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "shard leaders not spread within 60 s: {leads:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

//! How fast a route copies (ADR 0025): two release `vela standalone`s, A and B. A gets a backlog
//! of 1 KiB messages (`vela bench`, 16 producers), then a route A → B is created from the
//! earliest message; the bench measures how long the route takes to copy the backlog, and the
//! CPU each broker process used meanwhile (A runs the route: receive, ack; B stores the copies).
//!
//! Run: `cargo bench --bench routes` (VELA_BENCH_SECONDS=N of producing the backlog, default 5;
//! VELA_BENCH_ROUNDS, default 2).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::time::{Duration, Instant};

use support::{bench_args, cpu_seconds, free_port, start_standalone, stop, ticks_per_second};

async fn admin(server: &str, args: &[&str]) -> String {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        admin: vela::admin::AdminArgs,
    }
    let mut argv = vec!["vela-admin", "--server", server];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).unwrap();
    vela::admin::execute(&cli.admin.target(), cli.admin.command)
        .await
        .unwrap()
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("VELA_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rounds: u32 = std::env::var("VELA_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let ticks = ticks_per_second();
    println!(
        "{:>5} {:>9} {:>9} {:>10} {:>16} {:>16}",
        "round", "messages", "copy s", "copied/s", "A CPU µs/msg", "B CPU µs/msg"
    );
    for round in 1..=rounds {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (ga, ha, gb, hb) = (free_port(), free_port(), free_port(), free_port());
        let (a, _) = start_standalone(dir_a.path(), ga, ha, &[]).await;
        let (b, _) = start_standalone(dir_b.path(), gb, hb, &[]).await;
        let (ea, eb) = (format!("127.0.0.1:{ga}"), format!("127.0.0.1:{gb}"));
        admin(&ea, &["topic", "create", "rb"]).await;
        admin(&eb, &["topic", "create", "rb-copy"]).await;
        let mut args = bench_args(&ea, secs);
        args.topic = Some("rb".into());
        args.drain = Duration::ZERO;
        let report = vela::bench::execute(args).await.unwrap();
        let backlog = report.sent;

        let (pa, pb) = (a.id().unwrap(), b.id().unwrap());
        let (cpu_a, cpu_b) = (cpu_seconds(pa, ticks), cpu_seconds(pb, ticks));
        let started = Instant::now();
        admin(
            &ea,
            &[
                "route",
                "create",
                "bench",
                "--source-topic",
                "rb",
                "--group",
                "route-bench",
                "--target-endpoint",
                &eb,
                "--target-topic",
                "rb-copy",
                "--start",
                "earliest",
            ],
        )
        .await;
        let deadline = started + Duration::from_secs(1800);
        loop {
            let out = admin(&ea, &["route", "describe", "bench", "--output", "json"]).await;
            let status: serde_json::Value = serde_json::from_str(&out).unwrap();
            if status["status"]["copied"].as_u64().unwrap_or(0) >= backlog {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the route did not finish: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = started.elapsed().as_secs_f64();
        let used_a = cpu_seconds(pa, ticks) - cpu_a;
        let used_b = cpu_seconds(pb, ticks) - cpu_b;
        println!(
            "{round:>5} {backlog:>9} {took:>9.2} {:>10.0} {:>16.1} {:>16.1}",
            backlog as f64 / took,
            used_a * 1e6 / backlog as f64,
            used_b * 1e6 / backlog as f64,
        );
        stop(a).await;
        stop(b).await;
    }
}

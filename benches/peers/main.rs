//! Vela side by side with RabbitMQ (quorum queue) and NATS JetStream (file stream, fsync before
//! every PubAck), driven with one shape (docs/benchmarks.md, "Vela, RabbitMQ and NATS side by
//! side"). Each broker runs pinned to core 0 with durable settings and its data in a temp dir; this
//! process, the load generator, pins itself to core 1 and runs on one thread.
//!
//! Shape: one producer keeping 256 sends in flight with 1 KiB bodies (Vela: vela-sdk `send`;
//! RabbitMQ: publisher confirms; NATS: JetStream publish awaiting the PubAck), and one consumer
//! acking every message on its own (Vela: SimpleConsumer receive of 32, then the 32 acks
//! concurrently; RabbitMQ: prefetch 256, `basic.ack` per delivery; NATS: pull consumer, batches of
//! up to 256, a double ack (ack awaiting the server's reply) per message, up to 256 at a time).
//! Phases: `produce` (producer alone, builds a backlog), `drain` (consumer alone drains it),
//! `mixed` (both at full speed), `fixed-2000`, `fixed-5000` (producer at a fixed rate, consumer on).
//!
//! Run: `benches/peers.sh [--broker vela|rabbitmq|nats|all] [--nodes 1|3]` (installs the peers,
//! then runs `cargo bench --bench peers -- --broker …`). `--nodes 3` runs each broker as a
//! three-node cluster with three replicas (`clusters.rs`), every node on the broker core. Env: `PEERS_PHASE_SECONDS` (default 20),
//! `PEERS_NATS_SERVER` (default `.tools/peers/nats-server`), `PEERS_RABBITMQ_SERVER` (default
//! `/usr/lib/rabbitmq/bin/rabbitmq-server`), `PEERS_BROKER_CPU` / `PEERS_CLIENT_CPU` (default 0 / 1).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::time::{sleep_until, timeout, timeout_at};

mod brokers;
mod clients;
mod clusters;
mod measure;
mod report;

use brokers::*;
use clients::*;
use clusters::*;
use measure::*;
use report::*;

/// Sends kept in flight by the one producer.
const IN_FLIGHT: usize = 256;
/// Body size; the first 8 bytes carry the send time.
const BODY_SIZE: usize = 1024;
/// Vela: messages per SimpleConsumer receive.
const VELA_RECEIVE_BATCH: u32 = 32;
/// RabbitMQ: consumer prefetch (`basic.qos`).
const RABBIT_PREFETCH: u16 = 256;
/// NATS: messages per pull request, and double acks outstanding at once.
const NATS_PULL_BATCH: usize = 256;
/// How long a phase waits for the sends or acks still in flight when its time is up.
const SETTLE: Duration = Duration::from_secs(30);
/// How long a broker may take to start.
const STARTUP: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Serialize)]
pub(crate) struct PhaseReport {
    pub(crate) broker: String,
    pub(crate) phase: String,
    pub(crate) seconds: f64,
    pub(crate) produced: u64,
    pub(crate) produced_per_s: f64,
    pub(crate) produce_errors: u64,
    pub(crate) consumed: u64,
    pub(crate) consumed_per_s: f64,
    pub(crate) consume_errors: u64,
    pub(crate) confirm_p50_ms: Option<f64>,
    pub(crate) confirm_p99_ms: Option<f64>,
    pub(crate) e2e_p50_ms: Option<f64>,
    pub(crate) e2e_p99_ms: Option<f64>,
    pub(crate) ack_p50_ms: Option<f64>,
    pub(crate) ack_p99_ms: Option<f64>,
    pub(crate) broker_cpu_s: f64,
    pub(crate) broker_cpu_us_per_produced: Option<f64>,
    pub(crate) broker_cpu_us_per_consumed: Option<f64>,
    /// The load generator's CPU over the phase, in percent of its one core.
    pub(crate) client_cpu_pct: f64,
    /// Noise: what else ran on the broker's core and on the load generator's core (other
    /// processes on this shared machine), in percent of that core.
    pub(crate) other_on_broker_core_pct: Option<f64>,
    pub(crate) other_on_client_core_pct: Option<f64>,
    pub(crate) first_error: Option<String>,
}

pub(crate) fn quantile_ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
}

pub(crate) struct Phase<'a> {
    pub(crate) name: String,
    pub(crate) producer: Option<&'a Pub>,
    pub(crate) consumer: Option<&'a mut Sub>,
    pub(crate) rate: Option<u64>,
    /// Stop consuming after this many acks (the drain phase: the backlog).
    pub(crate) target: Option<u64>,
}

/// The CPUs the broker and the load generator run on, when each is a single core.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cores {
    pub(crate) broker: Option<usize>,
    pub(crate) client: Option<usize>,
}

pub(crate) async fn run_phase(
    broker: &Broker,
    phase: Phase<'_>,
    length: Duration,
    ticks: f64,
    cores: Cores,
) -> anyhow::Result<PhaseReport> {
    let self_pid = std::process::id().to_string();
    let (cpu0, me0) = (broker.cpu_seconds(ticks)?, cpu_seconds(&self_pid, ticks)?);
    let (bcore0, ccore0) = (
        core_busy_seconds(cores.broker, ticks),
        core_busy_seconds(cores.client, ticks),
    );
    let start = Instant::now();
    let deadline = start + length;
    let (rate, target) = (phase.rate, phase.target);
    let produced = async {
        match phase.producer {
            Some(p) => produce(p, start, deadline, rate).await,
            None => Side::idle(),
        }
    };
    let consumed = async {
        match phase.consumer {
            Some(c) => c.consume(start, deadline, target).await,
            None => Side::idle(),
        }
    };
    let (produced, consumed) = tokio::join!(produced, consumed);
    let (produced, consumed) = (produced?, consumed?);
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = broker.cpu_seconds(ticks)? - cpu0;
    let me = cpu_seconds(&self_pid, ticks)? - me0;
    let other = |before: Option<f64>, core: Option<usize>, own: f64| {
        let busy = core_busy_seconds(core, ticks)? - before?;
        Some(((busy - own) / elapsed.max(1e-9) * 100.0).max(0.0))
    };
    let rate_of = |s: &Side| s.count as f64 / s.elapsed.as_secs_f64().max(1e-9);
    let per = |n: u64| (n > 0).then(|| cpu * 1e6 / n as f64);
    Ok(PhaseReport {
        broker: broker.label(),
        phase: phase.name,
        seconds: elapsed,
        produced: produced.count,
        produced_per_s: rate_of(&produced),
        produce_errors: produced.errors.count,
        consumed: consumed.count,
        consumed_per_s: rate_of(&consumed),
        consume_errors: consumed.errors.count,
        confirm_p50_ms: quantile_ms(&produced.latency, 0.50),
        confirm_p99_ms: quantile_ms(&produced.latency, 0.99),
        e2e_p50_ms: quantile_ms(&consumed.latency, 0.50),
        e2e_p99_ms: quantile_ms(&consumed.latency, 0.99),
        ack_p50_ms: quantile_ms(&consumed.ack_latency, 0.50),
        ack_p99_ms: quantile_ms(&consumed.ack_latency, 0.99),
        broker_cpu_s: cpu,
        broker_cpu_us_per_produced: per(produced.count),
        broker_cpu_us_per_consumed: per(consumed.count),
        client_cpu_pct: me / elapsed.max(1e-9) * 100.0,
        other_on_broker_core_pct: other(bcore0, cores.broker, cpu),
        other_on_client_core_pct: other(ccore0, cores.client, me),
        first_error: produced.errors.first.or(consumed.errors.first),
    })
}

pub(crate) async fn bench_broker(
    kind: Kind,
    nodes: usize,
    length: Duration,
    ticks: f64,
    broker_cpu: &str,
    cores: Cores,
) -> anyhow::Result<(String, Vec<PhaseReport>)> {
    eprintln!("== {} ×{nodes}: starting on cpu {broker_cpu}", kind.name());
    let broker = Broker::start(kind, broker_cpu, nodes).await?;
    eprintln!(
        "== {}: ready (cpu pid {}, data in {})",
        kind.name(),
        broker.cpu_pids.join(" "),
        broker.dir.path().display()
    );
    let mut reports = Vec::new();
    let mut done = |r: PhaseReport| {
        eprintln!("{}", line(&r));
        reports.push(r);
    };

    // produce builds a backlog on one queue; drain consumes it with a consumer made beforehand.
    let (producer, mut consumer) = broker.open("backlog").await?;
    let produced = run_phase(
        &broker,
        Phase {
            name: "produce".into(),
            producer: Some(&producer),
            consumer: None,
            rate: None,
            target: None,
        },
        length,
        ticks,
        cores,
    )
    .await?;
    producer.close().await;
    let backlog = produced.produced;
    done(produced);
    done(
        run_phase(
            &broker,
            Phase {
                name: "drain".into(),
                producer: None,
                consumer: Some(&mut consumer),
                rate: None,
                target: Some(backlog),
            },
            length,
            ticks,
            cores,
        )
        .await?,
    );
    consumer.close().await;

    // The other phases each start on a fresh, empty queue.
    for (name, rate) in [
        ("mixed", None),
        ("fixed-2000", Some(2000)),
        ("fixed-5000", Some(5000)),
    ] {
        let (producer, mut consumer) = broker.open(name).await?;
        let report = run_phase(
            &broker,
            Phase {
                name: name.into(),
                producer: Some(&producer),
                consumer: Some(&mut consumer),
                rate,
                target: None,
            },
            length,
            ticks,
            cores,
        )
        .await?;
        producer.close().await;
        consumer.close().await;
        done(report);
    }
    let version = broker.version.clone();
    drop(broker);
    Ok((version, reports))
}

/// The brokers (`--broker`) and how many nodes each runs (`--nodes 1|3`).
pub(crate) fn parse_brokers() -> anyhow::Result<(Vec<Kind>, usize)> {
    let mut which = "all".to_owned();
    let mut nodes = "1".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if let Some(v) = arg.strip_prefix("--broker=") {
            which = v.to_owned();
        } else if arg == "--broker" {
            which = args.next().context("--broker needs a value")?;
        } else if let Some(v) = arg.strip_prefix("--nodes=") {
            nodes = v.to_owned();
        } else if arg == "--nodes" {
            nodes = args.next().context("--nodes needs a value")?;
        }
        // Anything else (`--bench` from cargo) is ignored.
    }
    let nodes = match nodes.as_str() {
        "1" => 1,
        "3" => CLUSTER_NODES,
        other => bail!("--nodes {other}: expected 1 or 3"),
    };
    let kinds = match which.as_str() {
        "all" => vec![Kind::Vela, Kind::RabbitMq, Kind::Nats],
        "vela" => vec![Kind::Vela],
        "rabbitmq" => vec![Kind::RabbitMq],
        "nats" => vec![Kind::Nats],
        other => bail!("--broker {other}: expected vela, rabbitmq, nats or all"),
    };
    Ok((kinds, nodes))
}

pub(crate) async fn run(client_cpu: &str) -> anyhow::Result<()> {
    let (brokers, nodes) = parse_brokers()?;
    let secs: f64 = std::env::var("PEERS_PHASE_SECONDS")
        .ok()
        .map(|s| s.parse::<f64>())
        .transpose()
        .context("PEERS_PHASE_SECONDS")?
        .unwrap_or(20.0);
    ensure!(secs > 0.0, "PEERS_PHASE_SECONDS must be positive");
    let broker_cpu = std::env::var("PEERS_BROKER_CPU").unwrap_or_else(|_| "0".into());
    let cores = Cores {
        broker: broker_cpu.parse().ok(),
        client: client_cpu.parse().ok(),
    };
    let ticks = clock_ticks();
    let length = Duration::from_secs_f64(secs);
    let mut reports = Vec::new();
    let mut versions = Vec::new();
    for kind in brokers {
        let (version, r) = bench_broker(kind, nodes, length, ticks, &broker_cpu, cores).await?;
        versions.push(format!("- {}: {version}", kind.name()));
        reports.extend(r);
    }
    println!(
        "\nPhases of {secs} s; brokers on cpu {broker_cpu}, load generator on cpu {client_cpu}.\n"
    );
    println!("{}", versions.join("\n"));
    println!("\n{}", markdown(&reports));
    println!("{}", serde_json::to_string_pretty(&reports)?);
    Ok(())
}

pub(crate) fn main() -> anyhow::Result<()> {
    let _ = now_us();
    // Pin this process (all threads created from now on inherit it) before the runtime starts.
    let client_cpu = std::env::var("PEERS_CLIENT_CPU").unwrap_or_else(|_| "1".into());
    let pinned = std::process::Command::new("taskset")
        .args(["-p", "-c", &client_cpu, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("taskset")?;
    ensure!(pinned.success(), "taskset -p -c {client_cpu} failed");
    // One thread: the load generator has one core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::select! {
            r = run(&client_cpu) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    })
}

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
//! Run: `benches/peers.sh [--broker vela|rabbitmq|nats|all]` (installs the peers, then runs
//! `cargo bench --bench peers -- --broker …`). Env: `PEERS_PHASE_SECONDS` (default 20),
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

// ---------------------------------------------------------------------------------------------
// Time stamps, histograms, CPU accounting

static ANCHOR: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the process-wide anchor: producer and consumer share this process, so a
/// monotonic clock is enough for end-to-end latency.
fn now_us() -> u64 {
    ANCHOR.get_or_init(Instant::now).elapsed().as_micros() as u64
}

fn body_stamped(sent_us: u64) -> Bytes {
    let mut body = vec![b'p'; BODY_SIZE];
    body[..8].copy_from_slice(&sent_us.to_le_bytes());
    Bytes::from(body)
}

fn stamp_of(body: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(body.get(..8)?.try_into().ok()?))
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    // Microseconds, up to ten minutes (drain-phase ages are backlog ages), 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).context("histogram bounds")
}

fn record_e2e(h: &mut Histogram<u64>, body: &[u8], errors: &mut Errors) {
    match stamp_of(body) {
        Some(sent) => h.saturating_record(now_us().saturating_sub(sent).max(1)),
        None => errors.add("body without a send stamp"),
    }
}

/// Clock ticks per second of /proc/PID/stat's utime and stime.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system, all threads) a process has used so far.
fn cpu_seconds(pid: &str, ticks: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name start at field 3 (state); utime is 14, stime 15.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .context("short stat")?
            .parse::<f64>()
            .context("stat field")
    };
    Ok((field(11)? + field(12)?) / ticks)
}

/// Busy seconds (everything but idle and iowait) of one CPU so far, from /proc/stat.
fn core_busy_seconds(cpu: Option<usize>, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let label = format!("cpu{}", cpu?);
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(label.as_str()))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
    Some(busy / ticks)
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The first process named `name` among `root` and its descendants.
fn find_process(root: u32, name: &str) -> Option<u32> {
    if comm(root) == name {
        return Some(root);
    }
    let mut parents = vec![root];
    let mut all: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            all.push((pid, ppid));
        }
    }
    while let Some(parent) = parents.pop() {
        for &(pid, ppid) in &all {
            if ppid == parent {
                if comm(pid) == name {
                    return Some(pid);
                }
                parents.push(pid);
            }
        }
    }
    None
}

/// Counts errors and keeps the first message of each kind for the report.
#[derive(Debug, Default)]
struct Errors {
    count: u64,
    first: Option<String>,
}

impl Errors {
    fn add(&mut self, what: impl std::fmt::Display) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(what.to_string());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Broker processes

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Vela,
    RabbitMq,
    Nats,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Vela => "vela",
            Kind::RabbitMq => "rabbitmq",
            Kind::Nats => "nats",
        }
    }
}

/// A child process in its own process group; dropping it SIGKILLs the whole group (RabbitMQ's
/// VM starts helpers of its own), so nothing outlives the benchmark, error or not.
struct Proc {
    child: Child,
    pgid: u32,
}

impl Proc {
    fn spawn(mut command: Command, log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::File::create(log).context("log file")?;
        let err = out.try_clone().context("log file")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let pgid = child.id().context("child has no pid")?;
        Ok(Self { child, pgid })
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pgid)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.start_kill();
    }
}

/// A running broker. Field order matters: processes die before the data dir is removed.
struct Broker {
    kind: Kind,
    procs: Vec<Proc>,
    /// The process whose CPU is counted (RabbitMQ: beam.smp).
    cpu_pid: String,
    /// Client port (gRPC, AMQP or NATS).
    port: u16,
    /// What the run used, for the report.
    version: String,
    dir: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut resp = String::new();
    timeout(Duration::from_secs(5), s.read_to_string(&mut resp))
        .await
        .ok()?
        .ok()?;
    resp.starts_with("HTTP/1.1 200").then_some(resp)
}

fn pinned(cpu: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("taskset");
    c.arg("-c").arg(cpu).arg(program);
    c
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl Broker {
    async fn start(kind: Kind, cpu: &str) -> anyhow::Result<Self> {
        match kind {
            Kind::Vela => Self::start_vela(cpu).await,
            Kind::RabbitMq => Self::start_rabbitmq(cpu).await,
            Kind::Nats => Self::start_nats(cpu).await,
        }
    }

    async fn wait_ready<F, Fut>(&mut self, log: &Path, mut ready: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + STARTUP;
        loop {
            if ready().await {
                return Ok(());
            }
            if self.procs.iter_mut().any(Proc::exited) || Instant::now() > deadline {
                bail!(
                    "{} did not become ready; last log lines:\n{}",
                    self.kind.name(),
                    log_tail(log)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn start_vela(cpu: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let (port, http) = (free_port()?, free_port()?);
        let log = dir.path().join("vela.log");
        let mut cmd = pinned(cpu, env!("CARGO_BIN_EXE_vela"));
        cmd.args(["standalone", "--grpc-listen", &format!("127.0.0.1:{port}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "warn");
        let proc = Proc::spawn(cmd, &log)?;
        let pid = proc.pgid;
        let mut broker = Self {
            kind: Kind::Vela,
            procs: vec![proc],
            cpu_pid: pid.to_string(),
            port,
            version: "vela (this commit), release build, default config (flush = \"sync\")".into(),
            dir,
        };
        broker
            .wait_ready(
                &log,
                || async move { http_get(http, "/ready").await.is_some() },
            )
            .await?;
        ensure!(comm(pid) == "vela", "taskset did not exec vela");
        Ok(broker)
    }

    async fn start_nats(cpu: &str) -> anyhow::Result<Self> {
        let server = std::env::var_os("PEERS_NATS_SERVER").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/peers/nats-server"),
            PathBuf::from,
        );
        ensure!(
            server.exists(),
            "{} is missing: run benches/peers.sh (or set PEERS_NATS_SERVER)",
            server.display()
        );
        let version = std::process::Command::new(&server)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let dir = tempfile::tempdir()?;
        let (port, http) = (free_port()?, free_port()?);
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{http}\"\n\
                 jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
                dir.path().join("jetstream").display()
            ),
        )?;
        let log = dir.path().join("nats.log");
        let mut cmd = pinned(cpu, &server);
        cmd.arg("-c").arg(&conf).env("GOMAXPROCS", "1");
        let proc = Proc::spawn(cmd, &log)?;
        let pid = proc.pgid;
        let mut broker = Self {
            kind: Kind::Nats,
            procs: vec![proc],
            cpu_pid: pid.to_string(),
            port,
            version: format!("{version}, GOMAXPROCS=1, jetstream sync_interval: always"),
            dir,
        };
        broker
            .wait_ready(&log, || async move {
                http_get(http, "/healthz?js-enabled-only=true")
                    .await
                    .is_some()
            })
            .await?;
        // Durability is the point of the comparison: refuse to run without fsync per PubAck.
        let jsz = http_get(http, "/jsz").await.unwrap_or_default();
        ensure!(
            jsz.contains("\"sync_always\": true") || jsz.contains("\"sync_always\":true"),
            "nats-server does not report sync_always: true in /jsz:\n{jsz}"
        );
        Ok(broker)
    }

    async fn start_rabbitmq(cpu: &str) -> anyhow::Result<Self> {
        let server = std::env::var_os("PEERS_RABBITMQ_SERVER").map_or_else(
            || PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server"),
            PathBuf::from,
        );
        ensure!(
            server.exists(),
            "{} is missing: run benches/peers.sh (apt-get install rabbitmq-server) or set \
             PEERS_RABBITMQ_SERVER",
            server.display()
        );
        let version = std::process::Command::new("dpkg-query")
            .args(["-W", "-f", "${Version}", "rabbitmq-server"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let dir = tempfile::tempdir()?;
        let (port, dist, epmd) = (free_port()?, free_port()?, free_port()?);
        let d = dir.path();
        for sub in ["home", "mnesia", "log"] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        std::fs::write(d.join("enabled_plugins"), "[].\n")?;
        std::fs::write(d.join("rabbitmq-env.conf"), "")?;
        std::fs::write(
            d.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{port}\nlog.console = false\n\
                 log.file.level = warning\n"
            ),
        )?;
        // Our own epmd (the Erlang port mapper), on loopback and a free port, so no daemon
        // outlives the run.
        let mut epmd_cmd = pinned(cpu, "epmd");
        epmd_cmd.args(["-address", "127.0.0.1", "-port", &epmd.to_string()]);
        let epmd_proc = Proc::spawn(epmd_cmd, &d.join("epmd.log"))?;
        let log = d.join("rabbitmq.log");
        let mut cmd = pinned(cpu, &server);
        cmd.env("HOME", d.join("home"))
            .env("RABBITMQ_NODENAME", format!("peers{port}@localhost"))
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("ERL_EPMD_PORT", epmd.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            // Exec the VM directly (no signal-forwarding shell), without an Erlang shell.
            .env("RABBITMQ_ALLOW_INPUT", "true")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none -noinput \
                 -kernel inet_dist_use_interface {127,0,0,1}",
            );
        let proc = Proc::spawn(cmd, &log)?;
        let root = proc.pgid;
        let mut broker = Self {
            kind: Kind::RabbitMq,
            procs: vec![proc, epmd_proc],
            cpu_pid: String::new(),
            port,
            version: format!(
                "RabbitMQ {version}, Erlang +S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none, \
                 quorum queue (1 member)"
            ),
            dir,
        };
        let uri = rabbit_uri(port);
        broker
            .wait_ready(&log, || {
                let uri = uri.clone();
                async move {
                    match lapin::Connection::connect(&uri, lapin::ConnectionProperties::default())
                        .await
                    {
                        Ok(c) => {
                            let _ = c.close(200, "ready".into()).await;
                            true
                        }
                        Err(_) => false,
                    }
                }
            })
            .await?;
        let beam = find_process(root, "beam.smp").context("no beam.smp under rabbitmq-server")?;
        broker.cpu_pid = beam.to_string();
        Ok(broker)
    }

    /// Opens a producer and a consumer on a fresh queue (topic, quorum queue, stream) `name`.
    async fn open(&self, name: &str) -> anyhow::Result<(Pub, Sub)> {
        match self.kind {
            Kind::Vela => {
                let config = vela_sdk::ClientConfig::builder()
                    .endpoint(format!("127.0.0.1:{}", self.port))
                    .build()?;
                let topic = format!("peers-{name}");
                let producer = vela_sdk::Producer::builder(config.clone())
                    .topics([topic.clone()])
                    .build()
                    .await?;
                let consumer = vela_sdk::SimpleConsumer::builder(config, format!("peers-{name}"))
                    .subscribe(&topic, vela_sdk::FilterExpression::tag("*"))
                    // The shortest long poll Vela accepts; a phase end cancels a poll in progress.
                    .await_duration(Duration::from_secs(5))
                    .build()
                    .await?;
                Ok((Pub::Vela { producer, topic }, Sub::Vela(consumer)))
            }
            Kind::RabbitMq => {
                use lapin::options::{BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions};
                use lapin::types::{AMQPValue, FieldTable};
                let uri = rabbit_uri(self.port);
                let props = lapin::ConnectionProperties::default;
                let pconn = lapin::Connection::connect(&uri, props()).await?;
                let pch = pconn.create_channel().await?;
                pch.confirm_select(ConfirmSelectOptions::default()).await?;
                let mut args = FieldTable::default();
                args.insert(
                    "x-queue-type".into(),
                    AMQPValue::LongString("quorum".into()),
                );
                args.insert("x-quorum-initial-group-size".into(), AMQPValue::LongInt(1));
                let queue = format!("peers-{name}");
                pch.queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    args,
                )
                .await?;
                let cconn = lapin::Connection::connect(&uri, props()).await?;
                let cch = cconn.create_channel().await?;
                cch.basic_qos(RABBIT_PREFETCH, BasicQosOptions::default())
                    .await?;
                Ok((
                    Pub::Rabbit(Box::new(Amqp {
                        conn: pconn,
                        channel: pch,
                        queue: queue.clone(),
                    })),
                    Sub::Rabbit(Box::new(Amqp {
                        conn: cconn,
                        channel: cch,
                        queue,
                    })),
                ))
            }
            Kind::Nats => {
                use async_nats::jetstream::{self, consumer, stream};
                let addr = format!("nats://127.0.0.1:{}", self.port);
                let js = jetstream::new(async_nats::connect(&addr).await?);
                let stream_name = format!("PEERS_{}", name.replace('-', "_").to_uppercase());
                let subject = format!("peers.{name}");
                js.create_stream(stream::Config {
                    name: stream_name.clone(),
                    subjects: vec![subject.clone()],
                    storage: stream::StorageType::File,
                    num_replicas: 1,
                    ..Default::default()
                })
                .await?;
                let cjs = jetstream::new(async_nats::connect(&addr).await?);
                let consumer = cjs
                    .get_stream(&stream_name)
                    .await?
                    .create_consumer(consumer::pull::Config {
                        durable_name: Some(stream_name.clone()),
                        ack_policy: consumer::AckPolicy::Explicit,
                        deliver_policy: consumer::DeliverPolicy::All,
                        ..Default::default()
                    })
                    .await?;
                Ok((
                    Pub::Nats {
                        js: Box::new(js),
                        subject,
                    },
                    Sub::Nats(Box::new(consumer)),
                ))
            }
        }
    }
}

fn rabbit_uri(port: u16) -> String {
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

// ---------------------------------------------------------------------------------------------
// The producer and the consumer, per broker

enum Pub {
    Vela {
        producer: vela_sdk::Producer,
        topic: String,
    },
    Rabbit(Box<Amqp>),
    Nats {
        js: Box<async_nats::jetstream::Context>,
        subject: String,
    },
}

enum Sub {
    Vela(vela_sdk::SimpleConsumer),
    Rabbit(Box<Amqp>),
    Nats(Box<async_nats::jetstream::consumer::PullConsumer>),
}

/// One AMQP connection with its one channel, on one queue.
struct Amqp {
    conn: lapin::Connection,
    channel: lapin::Channel,
    queue: String,
}

impl Pub {
    /// Sends one message and waits until the broker has stored it durably.
    async fn publish(&self, body: Bytes) -> anyhow::Result<()> {
        match self {
            Pub::Vela { producer, topic } => {
                let message = vela_sdk::Message::builder(topic.as_str())
                    .body(body)
                    .build()?;
                producer.send(message).await?;
            }
            Pub::Rabbit(amqp) => {
                let confirm = amqp
                    .channel
                    .basic_publish(
                        "".into(),
                        amqp.queue.as_str().into(),
                        lapin::options::BasicPublishOptions::default(),
                        &body,
                        lapin::BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?;
                match confirm.await? {
                    lapin::Confirmation::Ack(_) => {}
                    other => bail!("publish not confirmed: {other:?}"),
                }
            }
            Pub::Nats { js, subject } => {
                js.publish(subject.clone(), body).await?.await?;
            }
        }
        Ok(())
    }

    async fn close(self) {
        match self {
            Pub::Vela { producer, .. } => {
                let _ = producer.shutdown().await;
            }
            Pub::Rabbit(amqp) => {
                let _ = amqp.conn.close(200, "done".into()).await;
            }
            Pub::Nats { js, .. } => {
                let _ = js.client().drain().await;
            }
        }
    }
}

#[derive(Debug)]
struct Side {
    count: u64,
    errors: Errors,
    latency: Histogram<u64>,
    /// From the phase start to the last counted message.
    elapsed: Duration,
}

impl Side {
    fn idle() -> anyhow::Result<Self> {
        Ok(Self {
            count: 0,
            errors: Errors::default(),
            latency: histogram()?,
            elapsed: Duration::ZERO,
        })
    }
}

/// Keeps `IN_FLIGHT` sends going (or sends at `rate` msg/s, at most `IN_FLIGHT` in flight) until
/// `deadline`, then waits for the sends in flight. Latency runs from each send's scheduled time,
/// so under a fixed rate a stall is not hidden.
async fn produce(
    p: &Pub,
    start: Instant,
    deadline: Instant,
    rate: Option<u64>,
) -> anyhow::Result<Side> {
    let mut side = Side::idle()?;
    let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r.max(1) as f64));
    let mut next = start;
    let mut in_flight = FuturesUnordered::new();
    let send = |scheduled: Instant| async move {
        // The body carries the scheduled time too: end-to-end latency includes any wait for a
        // free in-flight slot.
        let sent_us = now_us().saturating_sub(scheduled.elapsed().as_micros() as u64);
        let result = p.publish(body_stamped(sent_us)).await;
        (result, scheduled.elapsed())
    };
    let record = |side: &mut Side, (result, latency): (anyhow::Result<()>, Duration)| match result {
        Ok(()) => {
            side.count += 1;
            side.latency
                .saturating_record((latency.as_micros() as u64).max(1));
            side.elapsed = start.elapsed();
        }
        Err(e) => side.errors.add(format!("{e:#}")),
    };
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if in_flight.len() < IN_FLIGHT {
            match interval {
                None => {
                    in_flight.push(send(now));
                    continue;
                }
                Some(iv) if next <= now => {
                    in_flight.push(send(next));
                    next += iv;
                    continue;
                }
                Some(_) => {}
            }
        }
        let wake = if interval.is_some() && in_flight.len() < IN_FLIGHT {
            next.min(deadline)
        } else {
            deadline
        };
        tokio::select! {
            Some(done) = in_flight.next(), if !in_flight.is_empty() => record(&mut side, done),
            () = sleep_until(wake.into()) => {}
        }
    }
    let settle = Instant::now() + SETTLE;
    while !in_flight.is_empty() {
        match timeout_at(settle.into(), in_flight.next()).await {
            Ok(Some(done)) => record(&mut side, done),
            Ok(None) => break,
            Err(_) => {
                side.errors.add(format!(
                    "{} sends unconfirmed {SETTLE:?} after the phase",
                    in_flight.len()
                ));
                break;
            }
        }
    }
    Ok(side)
}

impl Sub {
    /// Receives and acks, one ack per message, until `deadline` or until `target` messages are
    /// acked. The latency histogram holds end-to-end latency (send to delivery).
    async fn consume(
        &mut self,
        start: Instant,
        deadline: Instant,
        target: Option<u64>,
    ) -> anyhow::Result<Side> {
        let mut side = Side::idle()?;
        let target = target.unwrap_or(u64::MAX);
        match self {
            Sub::Vela(consumer) => {
                while side.count < target && Instant::now() < deadline {
                    let received = timeout_at(
                        deadline.into(),
                        consumer.receive(VELA_RECEIVE_BATCH, Duration::from_secs(30)),
                    )
                    .await;
                    let messages = match received {
                        Err(_) => break,
                        Ok(Ok(messages)) => messages,
                        Ok(Err(e)) => {
                            side.errors.add(format!("receive: {e}"));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    for m in &messages {
                        record_e2e(&mut side.latency, &m.body, &mut side.errors);
                    }
                    let acks = futures::future::join_all(messages.iter().map(|m| consumer.ack(m)));
                    for result in acks.await {
                        match result {
                            Ok(()) => side.count += 1,
                            Err(e) => side.errors.add(format!("ack: {e}")),
                        }
                    }
                    side.elapsed = start.elapsed();
                }
            }
            Sub::Rabbit(amqp) => {
                use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions};
                let mut deliveries = amqp
                    .channel
                    .basic_consume(
                        amqp.queue.as_str().into(),
                        "peers".into(),
                        BasicConsumeOptions::default(),
                        lapin::types::FieldTable::default(),
                    )
                    .await?;
                while side.count < target {
                    let delivery = match timeout_at(deadline.into(), deliveries.next()).await {
                        Err(_) => break,
                        Ok(None) => bail!("rabbitmq consumer stream ended"),
                        Ok(Some(Err(e))) => {
                            side.errors.add(format!("delivery: {e}"));
                            continue;
                        }
                        Ok(Some(Ok(d))) => d,
                    };
                    record_e2e(&mut side.latency, &delivery.data, &mut side.errors);
                    match delivery.ack(BasicAckOptions::default()).await {
                        Ok(_) => side.count += 1,
                        Err(e) => side.errors.add(format!("ack: {e}")),
                    }
                    side.elapsed = start.elapsed();
                }
                // Unacked prefetched deliveries go back to the queue when the channel closes.
                let _ = amqp
                    .channel
                    .basic_cancel("peers".into(), BasicCancelOptions::default())
                    .await;
            }
            Sub::Nats(consumer) => {
                let mut messages = consumer
                    .stream()
                    .max_messages_per_batch(NATS_PULL_BATCH)
                    .messages()
                    .await?;
                let mut acks = FuturesUnordered::new();
                let mut received = 0u64;
                loop {
                    let pull = acks.len() < NATS_PULL_BATCH && received < target;
                    if !pull && acks.is_empty() {
                        break;
                    }
                    tokio::select! {
                        () = sleep_until(deadline.into()) => break,
                        Some(done) = acks.next(), if !acks.is_empty() => {
                            match done {
                                Ok(()) => side.count += 1,
                                Err(e) => side.errors.add(format!("double ack: {e}")),
                            }
                            side.elapsed = start.elapsed();
                        }
                        next = messages.next(), if pull => match next {
                            None => bail!("nats message stream ended"),
                            Some(Err(e)) => side.errors.add(format!("pull: {e}")),
                            Some(Ok(m)) => {
                                received += 1;
                                record_e2e(&mut side.latency, &m.payload, &mut side.errors);
                                acks.push(async move { m.double_ack().await });
                            }
                        },
                    }
                }
                // Acks already sent still count (as with Vela's last batch).
                let settle = Instant::now() + SETTLE;
                while let Ok(Some(done)) = timeout_at(settle.into(), acks.next()).await {
                    match done {
                        Ok(()) => side.count += 1,
                        Err(e) => side.errors.add(format!("double ack: {e}")),
                    }
                    side.elapsed = start.elapsed();
                }
            }
        }
        Ok(side)
    }

    async fn close(self) {
        match self {
            Sub::Vela(consumer) => {
                let _ = consumer.shutdown().await;
            }
            Sub::Rabbit(amqp) => {
                let _ = amqp.conn.close(200, "done".into()).await;
            }
            Sub::Nats(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Phases and the report

#[derive(Debug, Clone, Serialize)]
struct PhaseReport {
    broker: &'static str,
    phase: String,
    seconds: f64,
    produced: u64,
    produced_per_s: f64,
    produce_errors: u64,
    consumed: u64,
    consumed_per_s: f64,
    consume_errors: u64,
    confirm_p50_ms: Option<f64>,
    confirm_p99_ms: Option<f64>,
    e2e_p50_ms: Option<f64>,
    e2e_p99_ms: Option<f64>,
    broker_cpu_s: f64,
    broker_cpu_us_per_produced: Option<f64>,
    broker_cpu_us_per_consumed: Option<f64>,
    /// The load generator's CPU over the phase, in percent of its one core.
    client_cpu_pct: f64,
    /// Noise: what else ran on the broker's core and on the load generator's core (other
    /// processes on this shared machine), in percent of that core.
    other_on_broker_core_pct: Option<f64>,
    other_on_client_core_pct: Option<f64>,
    first_error: Option<String>,
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
}

struct Phase<'a> {
    name: String,
    producer: Option<&'a Pub>,
    consumer: Option<&'a mut Sub>,
    rate: Option<u64>,
    /// Stop consuming after this many acks (the drain phase: the backlog).
    target: Option<u64>,
}

/// The CPUs the broker and the load generator run on, when each is a single core.
#[derive(Debug, Clone, Copy)]
struct Cores {
    broker: Option<usize>,
    client: Option<usize>,
}

async fn run_phase(
    broker: &Broker,
    phase: Phase<'_>,
    length: Duration,
    ticks: f64,
    cores: Cores,
) -> anyhow::Result<PhaseReport> {
    let self_pid = std::process::id().to_string();
    let (cpu0, me0) = (
        cpu_seconds(&broker.cpu_pid, ticks)?,
        cpu_seconds(&self_pid, ticks)?,
    );
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
    let cpu = cpu_seconds(&broker.cpu_pid, ticks)? - cpu0;
    let me = cpu_seconds(&self_pid, ticks)? - me0;
    let other = |before: Option<f64>, core: Option<usize>, own: f64| {
        let busy = core_busy_seconds(core, ticks)? - before?;
        Some(((busy - own) / elapsed.max(1e-9) * 100.0).max(0.0))
    };
    let rate_of = |s: &Side| s.count as f64 / s.elapsed.as_secs_f64().max(1e-9);
    let per = |n: u64| (n > 0).then(|| cpu * 1e6 / n as f64);
    Ok(PhaseReport {
        broker: broker.kind.name(),
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
        broker_cpu_s: cpu,
        broker_cpu_us_per_produced: per(produced.count),
        broker_cpu_us_per_consumed: per(consumed.count),
        client_cpu_pct: me / elapsed.max(1e-9) * 100.0,
        other_on_broker_core_pct: other(bcore0, cores.broker, cpu),
        other_on_client_core_pct: other(ccore0, cores.client, me),
        first_error: produced.errors.first.or(consumed.errors.first),
    })
}

async fn bench_broker(
    kind: Kind,
    length: Duration,
    ticks: f64,
    broker_cpu: &str,
    cores: Cores,
) -> anyhow::Result<(String, Vec<PhaseReport>)> {
    eprintln!("== {}: starting on cpu {broker_cpu}", kind.name());
    let broker = Broker::start(kind, broker_cpu).await?;
    eprintln!(
        "== {}: ready (cpu pid {}, data in {})",
        kind.name(),
        broker.cpu_pid,
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

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

fn line(r: &PhaseReport) -> String {
    format!(
        "{:<9} {:<11} prod {:>7.0}/s  cons {:>7.0}/s  confirm p50 {:>7} p99 {:>7} ms  e2e p50 {:>8} p99 {:>8} ms  cpu/prod {:>6} µs  cpu/cons {:>6} µs  client {:>3.0}%  other on cores {}/{} %  errors {}/{}{}",
        r.broker,
        r.phase,
        r.produced_per_s,
        r.consumed_per_s,
        opt(r.confirm_p50_ms, 2),
        opt(r.confirm_p99_ms, 2),
        opt(r.e2e_p50_ms, 1),
        opt(r.e2e_p99_ms, 1),
        opt(r.broker_cpu_us_per_produced, 1),
        opt(r.broker_cpu_us_per_consumed, 1),
        r.client_cpu_pct,
        opt(r.other_on_broker_core_pct, 0),
        opt(r.other_on_client_core_pct, 0),
        r.produce_errors,
        r.consume_errors,
        r.first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
    )
}

fn markdown(reports: &[PhaseReport]) -> String {
    let mut out = String::from(
        "| phase | broker | produced msg/s | consumed msg/s | confirm p50 / p99 ms | \
         end-to-end p50 / p99 ms | broker CPU µs per produced / consumed msg | load generator CPU | \
         other load on broker / client core |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut phases: Vec<&str> = Vec::new();
    for r in reports {
        if !phases.contains(&r.phase.as_str()) {
            phases.push(&r.phase);
        }
    }
    for phase in phases {
        for r in reports.iter().filter(|r| r.phase == phase) {
            let rate = |v: f64, n: u64| {
                if n == 0 {
                    "–".to_owned()
                } else {
                    format!("{v:.0}")
                }
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} / {} | {} / {} | {} / {} | {:.0}% | {}% / {}% |",
                r.phase,
                r.broker,
                rate(r.produced_per_s, r.produced),
                rate(r.consumed_per_s, r.consumed),
                opt(r.confirm_p50_ms, 2),
                opt(r.confirm_p99_ms, 2),
                opt(r.e2e_p50_ms, 1),
                opt(r.e2e_p99_ms, 1),
                opt(r.broker_cpu_us_per_produced, 1),
                opt(r.broker_cpu_us_per_consumed, 1),
                r.client_cpu_pct,
                opt(r.other_on_broker_core_pct, 0),
                opt(r.other_on_client_core_pct, 0),
            );
        }
    }
    out
}

fn parse_brokers() -> anyhow::Result<Vec<Kind>> {
    let mut which = "all".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if let Some(v) = arg.strip_prefix("--broker=") {
            which = v.to_owned();
        } else if arg == "--broker" {
            which = args.next().context("--broker needs a value")?;
        }
        // Anything else (`--bench` from cargo) is ignored.
    }
    Ok(match which.as_str() {
        "all" => vec![Kind::Vela, Kind::RabbitMq, Kind::Nats],
        "vela" => vec![Kind::Vela],
        "rabbitmq" => vec![Kind::RabbitMq],
        "nats" => vec![Kind::Nats],
        other => bail!("--broker {other}: expected vela, rabbitmq, nats or all"),
    })
}

async fn run(client_cpu: &str) -> anyhow::Result<()> {
    let brokers = parse_brokers()?;
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
        let (version, r) = bench_broker(kind, length, ticks, &broker_cpu, cores).await?;
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

fn main() -> anyhow::Result<()> {
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

//! Broker processes: starting Vela, RabbitMQ and NATS pinned to a core, and stopping them.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Vela,
    RabbitMq,
    Nats,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Vela => "vela",
            Kind::RabbitMq => "rabbitmq",
            Kind::Nats => "nats",
        }
    }
}

/// A child process in its own process group; dropping it SIGKILLs the whole group (RabbitMQ's
/// VM starts helpers of its own), so nothing outlives the benchmark, error or not.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) pgid: u32,
}

impl Proc {
    pub(crate) fn spawn(mut command: Command, log: &Path) -> anyhow::Result<Self> {
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

    pub(crate) fn exited(&mut self) -> bool {
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
pub(crate) struct Broker {
    pub(crate) kind: Kind,
    /// Nodes of the broker (1, or a cluster of `CLUSTER_NODES`).
    pub(crate) nodes: usize,
    pub(crate) procs: Vec<Proc>,
    /// The processes whose CPU is counted (RabbitMQ: beam.smp of each node).
    pub(crate) cpu_pids: Vec<String>,
    /// Client port (gRPC, AMQP or NATS).
    pub(crate) port: u16,
    /// What the run used, for the report.
    pub(crate) version: String,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) async fn http_get(port: u16, path: &str) -> Option<String> {
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

pub(crate) fn pinned(cpu: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("taskset");
    c.arg("-c").arg(cpu).arg(program);
    c
}

pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl Broker {
    pub(crate) async fn start(kind: Kind, cpu: &str, nodes: usize) -> anyhow::Result<Self> {
        match (kind, nodes > 1) {
            (Kind::Vela, false) => Self::start_vela(cpu).await,
            (Kind::RabbitMq, false) => Self::start_rabbitmq(cpu).await,
            (Kind::Nats, false) => Self::start_nats(cpu).await,
            (Kind::Vela, true) => Self::start_vela_cluster(cpu).await,
            (Kind::RabbitMq, true) => Self::start_rabbitmq_cluster(cpu).await,
            (Kind::Nats, true) => Self::start_nats_cluster(cpu).await,
        }
    }

    /// The broker as the report names it: `vela`, or `vela ×3` for a cluster.
    pub(crate) fn label(&self) -> String {
        if self.nodes > 1 {
            format!("{} ×{}", self.kind.name(), self.nodes)
        } else {
            self.kind.name().to_owned()
        }
    }

    /// CPU seconds the broker's processes have used so far.
    pub(crate) fn cpu_seconds(&self, ticks: f64) -> anyhow::Result<f64> {
        self.cpu_pids.iter().map(|p| cpu_seconds(p, ticks)).sum()
    }

    pub(crate) async fn wait_ready<F, Fut>(
        &mut self,
        log: &Path,
        mut ready: F,
    ) -> anyhow::Result<()>
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

    pub(crate) async fn start_vela(cpu: &str) -> anyhow::Result<Self> {
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
            nodes: 1,
            procs: vec![proc],
            cpu_pids: vec![pid.to_string()],
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

    pub(crate) async fn start_nats(cpu: &str) -> anyhow::Result<Self> {
        let server = nats_server()?;
        let version = nats_version(&server);
        let dir = tempfile::tempdir()?;
        let (port, http) = (free_port()?, free_port()?);
        let conf = dir.path().join("nats.conf");
        std::fs::write(&conf, nats_conf(port, http, &dir.path().join("jetstream")))?;
        let log = dir.path().join("nats.log");
        let mut cmd = pinned(cpu, &server);
        cmd.arg("-c").arg(&conf).env("GOMAXPROCS", "1");
        let proc = Proc::spawn(cmd, &log)?;
        let pid = proc.pgid;
        let mut broker = Self {
            kind: Kind::Nats,
            nodes: 1,
            procs: vec![proc],
            cpu_pids: vec![pid.to_string()],
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
        ensure_sync_always(http).await?;
        Ok(broker)
    }

    pub(crate) async fn start_rabbitmq(cpu: &str) -> anyhow::Result<Self> {
        let server = rabbitmq_server()?;
        let dir = tempfile::tempdir()?;
        let (port, dist, epmd) = (free_port()?, free_port()?, free_port()?);
        let d = dir.path();
        // Our own epmd (the Erlang port mapper), on loopback and a free port, so no daemon
        // outlives the run.
        let mut epmd_cmd = pinned(cpu, "epmd");
        epmd_cmd.args(["-address", "127.0.0.1", "-port", &epmd.to_string()]);
        let epmd_proc = Proc::spawn(epmd_cmd, &d.join("epmd.log"))?;
        let log = d.join("rabbitmq.log");
        let conf = format!(
            "listeners.tcp.default = 127.0.0.1:{port}\nlog.console = false\n\
             log.file.level = warning\n"
        );
        let name = format!("peers{port}@localhost");
        let cmd = rabbit_command(cpu, &server, d, &name, port, dist, epmd, &conf)?;
        let proc = Proc::spawn(cmd, &log)?;
        let root = proc.pgid;
        let mut broker = Self {
            kind: Kind::RabbitMq,
            nodes: 1,
            procs: vec![proc, epmd_proc],
            cpu_pids: Vec::new(),
            port,
            version: format!(
                "RabbitMQ {}, Erlang +S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none, \
                 quorum queue (1 member)",
                rabbitmq_version()
            ),
            dir,
        };
        broker.wait_ready(&log, || rabbit_accepts(port)).await?;
        let beam = find_process(root, "beam.smp").context("no beam.smp under rabbitmq-server")?;
        broker.cpu_pids.push(beam.to_string());
        Ok(broker)
    }

    /// Opens a producer and a consumer on a fresh queue (topic, quorum queue, stream) `name`.
    pub(crate) async fn open(&self, name: &str) -> anyhow::Result<(Pub, Sub)> {
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
                let members = i32::try_from(self.nodes).context("nodes")?;
                args.insert(
                    "x-quorum-initial-group-size".into(),
                    AMQPValue::LongInt(members),
                );
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
                let config = stream::Config {
                    name: stream_name.clone(),
                    subjects: vec![subject.clone()],
                    storage: stream::StorageType::File,
                    num_replicas: self.nodes,
                    ..Default::default()
                };
                // A cluster answers only once its JetStream meta leader is elected.
                let deadline = Instant::now() + STARTUP;
                while let Err(err) = js.create_stream(config.clone()).await {
                    ensure!(Instant::now() < deadline, "creating the stream: {err}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
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

pub(crate) fn rabbit_uri(port: u16) -> String {
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

/// The nats-server binary (`PEERS_NATS_SERVER`, or where benches/peers.sh installs it).
/// A JetStream server's configuration: client and monitoring ports on loopback, file storage
/// in `store_dir`, every write fsynced (`sync_interval: always`) as Vela's acks are.
pub(crate) fn nats_conf(port: u16, http: u16, store_dir: &Path) -> String {
    format!(
        "listen: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{http}\"\n\
         jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
        store_dir.display()
    )
}

pub(crate) fn nats_server() -> anyhow::Result<PathBuf> {
    let server = std::env::var_os("PEERS_NATS_SERVER").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/peers/nats-server"),
        PathBuf::from,
    );
    ensure!(
        server.exists(),
        "{} is missing: run benches/peers.sh (or set PEERS_NATS_SERVER)",
        server.display()
    );
    Ok(server)
}

pub(crate) fn nats_version(server: &Path) -> String {
    std::process::Command::new(server)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Durability is the point of the comparison: refuses a server without fsync per PubAck.
pub(crate) async fn ensure_sync_always(http: u16) -> anyhow::Result<()> {
    let jsz = http_get(http, "/jsz").await.unwrap_or_default();
    ensure!(
        jsz.contains("\"sync_always\": true") || jsz.contains("\"sync_always\":true"),
        "nats-server does not report sync_always: true in /jsz:\n{jsz}"
    );
    Ok(())
}

/// The rabbitmq-server script (`PEERS_RABBITMQ_SERVER`, or Debian's).
pub(crate) fn rabbitmq_server() -> anyhow::Result<PathBuf> {
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
    Ok(server)
}

pub(crate) fn rabbitmq_version() -> String {
    std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "rabbitmq-server"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The Erlang cookie the nodes of a benchmark cluster share.
pub(crate) const RABBIT_COOKIE: &str = "vela-peers-benchmark";

/// A private RabbitMQ node in `dir` (its home, mnesia, log and config), named `name`, serving
/// AMQP on `amqp`, Erlang distribution on `dist`, registered with the epmd on `epmd`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rabbit_command(
    cpu: &str,
    server: &Path,
    dir: &Path,
    name: &str,
    amqp: u16,
    dist: u16,
    epmd: u16,
    conf: &str,
) -> anyhow::Result<Command> {
    for sub in ["home", "mnesia", "log"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
    std::fs::write(dir.join("rabbitmq-env.conf"), "")?;
    std::fs::write(dir.join("rabbitmq.conf"), conf)?;
    let mut cmd = pinned(cpu, server);
    cmd.env("HOME", dir.join("home"))
        .env("RABBITMQ_NODENAME", name)
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", amqp.to_string())
        .env("RABBITMQ_DIST_PORT", dist.to_string())
        .env("ERL_EPMD_PORT", epmd.to_string())
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
        .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        // Exec the VM directly (no signal-forwarding shell), without an Erlang shell.
        .env("RABBITMQ_ALLOW_INPUT", "true")
        .env(
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
            format!(
                "+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none -noinput \
                 -kernel inet_dist_use_interface {{127,0,0,1}} -setcookie {RABBIT_COOKIE}"
            ),
        );
    Ok(cmd)
}

/// Whether a RabbitMQ node on `port` accepts an AMQP connection.
pub(crate) async fn rabbit_accepts(port: u16) -> bool {
    match lapin::Connection::connect(&rabbit_uri(port), lapin::ConnectionProperties::default())
        .await
    {
        Ok(c) => {
            let _ = c.close(200, "ready".into()).await;
            true
        }
        Err(_) => false,
    }
}

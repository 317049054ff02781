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
    pub(crate) procs: Vec<Proc>,
    /// The process whose CPU is counted (RabbitMQ: beam.smp).
    pub(crate) cpu_pid: String,
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
    pub(crate) async fn start(kind: Kind, cpu: &str) -> anyhow::Result<Self> {
        match kind {
            Kind::Vela => Self::start_vela(cpu).await,
            Kind::RabbitMq => Self::start_rabbitmq(cpu).await,
            Kind::Nats => Self::start_nats(cpu).await,
        }
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

    pub(crate) async fn start_nats(cpu: &str) -> anyhow::Result<Self> {
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

    pub(crate) async fn start_rabbitmq(cpu: &str) -> anyhow::Result<Self> {
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

pub(crate) fn rabbit_uri(port: u16) -> String {
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

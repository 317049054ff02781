//! Three-node clusters of each broker on loopback, every process on the broker core: Vela's
//! `local-cluster` (one controller, three stores, one proxy; topics replicated 3 ways), NATS with
//! three JetStream servers (R3 file streams, `sync_interval: always`) and RabbitMQ with three
//! nodes (quorum queues of three members). The clients connect to one node of each (Vela: the
//! proxy); CPU is summed over every process of the cluster.

use super::*;

/// Nodes of a cluster.
pub(crate) const CLUSTER_NODES: usize = 3;

/// A base port with `span` free ports above it (checked by binding them all at once).
fn free_range(span: u16) -> anyhow::Result<u16> {
    for _ in 0..50 {
        let base = free_port()?;
        let Some(top) = base.checked_add(span) else {
            continue;
        };
        let held: Result<Vec<TcpListener>, _> = (base..top)
            .map(|p| TcpListener::bind(("127.0.0.1", p)))
            .collect();
        if held.is_ok() {
            return Ok(base);
        }
    }
    bail!("no {span} free ports in a row on loopback")
}

/// Walks a JSON value and counts the objects whose `leads` is 1 (stores leading one shard).
fn stores_leading_one(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Object(m) => {
            usize::from(m.get("leads").and_then(serde_json::Value::as_u64) == Some(1))
                + m.values().map(stores_leading_one).sum::<usize>()
        }
        serde_json::Value::Array(a) => a.iter().map(stores_leading_one).sum(),
        _ => 0,
    }
}

impl Broker {
    pub(crate) async fn start_vela_cluster(cpu: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let base = free_range(130)?;
        let data = dir.path().join("data");
        let log = dir.path().join("local-cluster.log");
        let vela = env!("CARGO_BIN_EXE_vela");
        let mut cmd = pinned(cpu, vela);
        cmd.arg("local-cluster")
            .arg("--data-dir")
            .arg(&data)
            .args(["--controllers", "1", "--stores", "3", "--proxies", "1"])
            .args(["--base-port", &base.to_string()])
            .env("RUST_LOG", "warn");
        let proc = Proc::spawn(cmd, &log)?;
        let proxy = base + 21;
        let mut broker = Self {
            kind: Kind::Vela,
            nodes: CLUSTER_NODES,
            procs: vec![proc],
            cpu_pids: Vec::new(),
            port: proxy,
            version: "vela (this commit), release build, `vela local-cluster --controllers 1 \
                      --stores 3 --proxies 1` (3 shards, replication 3, flush = \"sync\": a send \
                      is confirmed once a majority has it fdatasync'ed)"
                .into(),
            dir,
        };
        // Ready once every store leads one shard (the controller spreads the leaders).
        broker
            .wait_ready(&log, || async move {
                let out = Command::new(vela)
                    .args(["admin", "--server", &format!("127.0.0.1:{proxy}")])
                    .args(["cluster", "status", "--output", "json"])
                    .output()
                    .await;
                out.ok()
                    .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
                    .is_some_and(|v| stores_leading_one(&v) == CLUSTER_NODES)
            })
            .await?;
        let cluster: serde_json::Value =
            serde_json::from_slice(&std::fs::read(data.join("cluster.json"))?)?;
        for role in ["controllers", "stores", "proxies"] {
            for p in cluster[role].as_array().context("cluster.json roles")? {
                let pid = p["pid"].as_u64().context("cluster.json pid")?;
                broker.cpu_pids.push(pid.to_string());
            }
        }
        broker.cpu_pids.push(broker.procs[0].pgid.to_string());
        Ok(broker)
    }

    pub(crate) async fn start_nats_cluster(cpu: &str) -> anyhow::Result<Self> {
        let server = nats_server()?;
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16, u16)> = (0..CLUSTER_NODES)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, _, c)| format!("\"nats://127.0.0.1:{c}\""))
            .collect();
        let mut procs = Vec::new();
        let mut logs = Vec::new();
        for (i, (client, http, route)) in ports.iter().enumerate() {
            let conf = dir.path().join(format!("nats-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: \"n{i}\"\n{}\
                     cluster {{\n  name: \"peers\"\n  listen: \"127.0.0.1:{route}\"\n  \
                     routes: [{}]\n}}\n",
                    nats_conf(*client, *http, &dir.path().join(format!("jetstream-{i}"))),
                    routes.join(", ")
                ),
            )?;
            let log = dir.path().join(format!("nats-{i}.log"));
            let mut cmd = pinned(cpu, &server);
            cmd.arg("-c").arg(&conf).env("GOMAXPROCS", "1");
            procs.push(Proc::spawn(cmd, &log)?);
            logs.push(log);
        }
        let cpu_pids = procs.iter().map(|p| p.pgid.to_string()).collect();
        let mut broker = Self {
            kind: Kind::Nats,
            nodes: CLUSTER_NODES,
            procs,
            cpu_pids,
            port: ports[0].0,
            version: format!(
                "{}, 3 servers, GOMAXPROCS=1 each, jetstream sync_interval: always, R3 streams",
                nats_version(&server)
            ),
            dir,
        };
        for (i, (_, http, _)) in ports.iter().enumerate() {
            let http = *http;
            broker
                .wait_ready(&logs[i], || async move {
                    http_get(http, "/healthz?js-enabled-only=true")
                        .await
                        .is_some()
                })
                .await?;
            ensure_sync_always(http).await?;
        }
        Ok(broker)
    }

    pub(crate) async fn start_rabbitmq_cluster(cpu: &str) -> anyhow::Result<Self> {
        let server = rabbitmq_server()?;
        let dir = tempfile::tempdir()?;
        let d = dir.path().to_path_buf();
        let epmd = free_port()?;
        let mut epmd_cmd = pinned(cpu, "epmd");
        epmd_cmd.args(["-address", "127.0.0.1", "-port", &epmd.to_string()]);
        let mut procs = vec![Proc::spawn(epmd_cmd, &d.join("epmd.log"))?];
        let ports: Vec<(u16, u16)> = (0..CLUSTER_NODES)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let names: Vec<String> = ports
            .iter()
            .map(|(amqp, _)| format!("peers{amqp}@localhost"))
            .collect();
        let discovery: String = names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("cluster_formation.classic_config.nodes.{} = {n}\n", i + 1))
            .collect();
        let mut logs = Vec::new();
        let mut roots = Vec::new();
        for (i, &(amqp, dist)) in ports.iter().enumerate() {
            let nd = d.join(format!("node-{i}"));
            let conf = format!(
                "listeners.tcp.default = 127.0.0.1:{amqp}\nlog.console = false\n\
                 log.file.level = warning\n\
                 cluster_formation.peer_discovery_backend = classic_config\n{discovery}"
            );
            let log = nd.join("rabbitmq.log");
            let cmd = rabbit_command(cpu, &server, &nd, &names[i], amqp, dist, epmd, &conf)?;
            let proc = Proc::spawn(cmd, &log)?;
            roots.push(proc.pgid);
            procs.push(proc);
            logs.push(log);
        }
        let mut broker = Self {
            kind: Kind::RabbitMq,
            nodes: CLUSTER_NODES,
            procs,
            cpu_pids: Vec::new(),
            port: ports[0].0,
            version: format!(
                "RabbitMQ {}, 3 nodes, Erlang +S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none \
                 each, quorum queues of 3 members",
                rabbitmq_version()
            ),
            dir,
        };
        for (i, &(amqp, _)) in ports.iter().enumerate() {
            broker.wait_ready(&logs[i], || rabbit_accepts(amqp)).await?;
        }
        // Every node must be a member of one cluster before the queues are declared.
        let ctl = server.with_file_name("rabbitmqctl");
        let home = d.join("node-0").join("home");
        broker
            .wait_ready(&logs[0], || {
                let (ctl, home, name) = (ctl.clone(), home.clone(), names[0].clone());
                async move {
                    let out = Command::new(&ctl)
                        .args(["-n", &name, "--erlang-cookie", RABBIT_COOKIE])
                        .args(["cluster_status", "--formatter", "json"])
                        .env("HOME", &home)
                        .env("ERL_EPMD_PORT", epmd.to_string())
                        .output()
                        .await;
                    out.ok()
                        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
                        .and_then(|v| v["running_nodes"].as_array().map(Vec::len))
                        == Some(CLUSTER_NODES)
                }
            })
            .await?;
        for root in roots {
            let beam =
                find_process(root, "beam.smp").context("no beam.smp under rabbitmq-server")?;
            broker.cpu_pids.push(beam.to_string());
        }
        Ok(broker)
    }
}

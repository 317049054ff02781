//! `vela local-cluster`: a whole cluster on one machine, each role its own child process of
//! this binary: controllers, store nodes and proxies, each with a config file and a log under
//! `--data-dir`. It writes `<data-dir>/cluster.json` (every process's address, pid and the exact
//! command that restarts it on its data directory), prints the addresses, and runs until Ctrl-C
//! or SIGTERM, then stops every child. Anyone may kill a child and start it again from its
//! `cmd`. A second run on the same directory restarts the same cluster.
//!
//! Ports, from `--base-port P`: controller i gRPC P+i, HTTP P+100+i; store i gRPC P+10+i,
//! HTTP P+110+i; proxy i gRPC P+20+i, HTTP P+120+i.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// `vela local-cluster` flags.
#[derive(clap::Args, Debug)]
pub struct LocalClusterArgs {
    /// Where every process keeps its data, config and log, and where cluster.json goes.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Controller nodes (1 or 3).
    #[arg(long, default_value_t = 3)]
    pub controllers: u16,
    /// Store nodes; every shard has a replica on each (replication factor = this number).
    #[arg(long, default_value_t = 3)]
    pub stores: u16,
    /// Proxies (RocketMQ clients connect to any of them).
    #[arg(long, default_value_t = 2)]
    pub proxies: u16,
    /// Shards (Raft groups) of the cluster.
    #[arg(long, default_value_t = 3)]
    pub shards: u32,
    /// First port of the range the processes listen on (see the module docs).
    #[arg(long, default_value_t = 9000)]
    pub base_port: u16,
    /// Mutual TLS between the processes (ADR 0021): a cluster CA and one certificate per
    /// process are made under DIR/tls (once; kept across restarts).
    #[arg(long)]
    pub cluster_tls: bool,
}

/// One process of the cluster, as `cluster.json` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u16>,
    pub addr: String,
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    pub cmd: Vec<String>,
}

/// The contents of `cluster.json`.
#[derive(Debug, Default, Serialize)]
pub struct ClusterFile {
    pub proxies: Vec<ProcessEntry>,
    pub stores: Vec<ProcessEntry>,
    pub controllers: Vec<ProcessEntry>,
}

struct Role {
    kind: &'static str,
    id: u16,
    grpc: u16,
    http: u16,
}

impl Role {
    fn dir(&self, root: &Path) -> PathBuf {
        root.join(format!("{}-{}", self.kind, self.id))
    }
}

fn port(base: u16, offset: u16) -> anyhow::Result<u16> {
    base.checked_add(offset)
        .with_context(|| format!("--base-port {base} leaves no room for port offset {offset}"))
}

fn nodes(kind: &str, roles: &[Role]) -> String {
    roles
        .iter()
        .filter(|r| r.kind == kind)
        .map(|r| {
            format!(
                "[[cluster.{kind}s]]\nid = {}\naddr = \"127.0.0.1:{}\"\n",
                r.id, r.grpc
            )
        })
        .collect()
}

/// The config file of `role`.
fn config_text(role: &Role, roles: &[Role], args: &LocalClusterArgs) -> String {
    let shards: Vec<String> = (0..args.shards).map(|s| s.to_string()).collect();
    let mut text = format!(
        "# Written by `vela local-cluster`.\ndata_dir = {:?}\ngrpc_listen = \"127.0.0.1:{}\"\nhttp_listen = \"127.0.0.1:{}\"\n",
        role.dir(&args.data_dir).join("data").display().to_string(),
        role.grpc,
        role.http
    );
    match role.kind {
        "store" => text.push_str(&format!("[store]\nnode_id = {}\n", role.id)),
        "controller" => text.push_str(&format!("[controller]\nnode_id = {}\n", role.id)),
        _ => text.push_str(
            "[proxy]\n# A local development cluster creates topics and groups on first use, as\n\
             # standalone does.\nauto_create_topics = true\nauto_create_groups = true\n",
        ),
    }
    text.push_str(&format!(
        // No receipt key file: the proxies sign with the keys the controllers manage (ADR 0030).
        "[cluster]\nshards = [{}]\n",
        shards.join(", "),
    ));
    text.push_str(&nodes("controller", roles));
    text.push_str(&nodes("store", roles));
    if args.cluster_tls {
        let tls = args.data_dir.join("tls");
        let name = format!("{}-{}", role.kind, role.id);
        text.push_str(&format!(
            "[cluster.tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
            tls.join("ca.pem").display().to_string(),
            tls.join(format!("{name}.pem")).display().to_string(),
            tls.join(format!("{name}.key")).display().to_string(),
        ));
    }
    if role.kind == "controller" {
        // Every controller seals and opens user passwords with the same key (ADR 0019).
        let key = args.data_dir.join("metadata.key");
        text.push_str(&format!(
            "[auth]
metadata_key_file = {:?}
",
            key.display().to_string()
        ));
    }
    text
}

fn spawn(argv: &[String], log: &Path) -> anyhow::Result<Child> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone()?;
    Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", argv.join(" ")))
}

/// Polls `GET /ready` on `port` until it answers 200 or `deadline` passes.
async fn ready(port: u16, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let req = "GET /ready HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
            if s.write_all(req.as_bytes()).await.is_ok() {
                let mut resp = String::new();
                let _ = s.read_to_string(&mut resp).await;
                if resp.starts_with("HTTP/1.1 200") {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Runs the cluster until `stop` resolves, then stops every child.
pub async fn run(
    args: LocalClusterArgs,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(args.controllers, 1 | 3 | 5),
        "--controllers must be 1, 3 or 5 (a Raft group of an odd size)"
    );
    anyhow::ensure!(
        (1..=9).contains(&args.stores),
        "--stores must be between 1 and 9"
    );
    anyhow::ensure!(
        (1..=9).contains(&args.proxies),
        "--proxies must be between 1 and 9"
    );
    anyhow::ensure!(
        (1..=64).contains(&args.shards),
        "--shards must be between 1 and 64"
    );
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let root = std::fs::canonicalize(&args.data_dir)?;
    let args = LocalClusterArgs {
        data_dir: root.clone(),
        ..args
    };
    vela_proto::secret_file::load_or_create(&root.join("metadata.key"))?;
    let exe = std::env::current_exe().context("cannot find the vela binary")?;
    let base = args.base_port;
    let mut roles = Vec::new();
    for (kind, count, offset) in [
        ("controller", args.controllers, 0),
        ("store", args.stores, 10),
        ("proxy", args.proxies, 20),
    ] {
        for id in 1..=count {
            roles.push(Role {
                kind,
                id,
                grpc: port(base, offset + id)?,
                http: port(base, 100 + offset + id)?,
            });
        }
    }

    if args.cluster_tls {
        let names: Vec<String> = roles
            .iter()
            .map(|r| format!("{}-{}", r.kind, r.id))
            .collect();
        crate::certs::cluster_certificates(&root.join("tls"), &names, &[])?;
    }
    let mut children: Vec<Running> = Vec::new();
    let mut file = ClusterFile::default();
    for role in &roles {
        let dir = role.dir(&root);
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("vela.toml");
        std::fs::write(&config, config_text(role, &roles, &args))
            .with_context(|| format!("cannot write {}", config.display()))?;
        let cmd = vec![
            exe.display().to_string(),
            role.kind.to_string(),
            "--config".to_string(),
            config.display().to_string(),
        ];
        // local-cluster creates the cluster: its own starts may bootstrap (ignored on a data
        // directory that already holds the role); the recorded command, for restarting one
        // process by hand, never does.
        let data = dir.join("data");
        let mut argv = cmd.clone();
        if role.kind != "proxy" {
            argv.push("--bootstrap".to_string());
        }
        let child = spawn(&argv, &dir.join("vela.log"))?;
        let entry = ProcessEntry {
            id: (role.kind != "proxy").then_some(role.id),
            addr: format!("127.0.0.1:{}", role.grpc),
            pid: child.id().unwrap_or(0),
            data_dir: (role.kind != "proxy").then_some(data),
            cmd,
        };
        match role.kind {
            "controller" => file.controllers.push(entry),
            "store" => file.stores.push(entry),
            _ => file.proxies.push(entry),
        }
        children.push(Running {
            name: format!("{} {}", role.kind, role.id),
            kind: role.kind,
            child,
        });
    }
    let json = root.join("cluster.json");
    std::fs::write(&json, serde_json::to_string_pretty(&file)?)
        .with_context(|| format!("cannot write {}", json.display()))?;

    let mut stop = std::pin::pin!(stop);
    let deadline = Instant::now() + Duration::from_secs(60);
    for role in &roles {
        let up = tokio::select! {
            up = ready(role.http, deadline) => up,
            () = &mut stop => {
                return stop_all(&mut children).await;
            }
        };
        if !up {
            if let Err(err) = stop_all(&mut children).await {
                tracing::warn!(error = %err, "stopping the cluster after a failed start");
            }
            anyhow::bail!(
                "{} {} did not become ready; see {}",
                role.kind,
                role.id,
                role.dir(&root).join("vela.log").display()
            );
        }
    }
    #[allow(clippy::print_stdout)]
    {
        println!("vela local-cluster is running ({})", json.display());
        for (what, list) in [
            ("proxy", &file.proxies),
            ("store", &file.stores),
            ("controller", &file.controllers),
        ] {
            for (i, p) in list.iter().enumerate() {
                println!("  {what} {}: {} (pid {})", i + 1, p.addr, p.pid);
            }
        }
        println!(
            "Point RocketMQ clients at a proxy. Each process logs to <data-dir>/<role>-<n>/vela.log.\nPress Ctrl-C to stop."
        );
    }
    stop.await;
    stop_all(&mut children).await
}

/// A child process of the cluster.
struct Running {
    name: String,
    kind: &'static str,
    child: Child,
}

/// Stops the children tier by tier (proxies, then stores, then controllers): SIGTERM to each
/// that still runs, then waits for the tier (SIGKILL after 30 s). A child that exited before
/// (someone killed it) is not waited for. Fails naming every child that did not stop cleanly.
async fn stop_all(children: &mut [Running]) -> anyhow::Result<()> {
    let mut unclean = Vec::new();
    for tier in ["proxy", "store", "controller"] {
        let mut signalled = Vec::new();
        for (i, running) in children.iter_mut().enumerate() {
            if running.kind != tier || !matches!(running.child.try_wait(), Ok(None)) {
                continue;
            }
            if let Some(pid) = running.child.id() {
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
                signalled.push(i);
            }
        }
        for i in signalled {
            let running = &mut children[i];
            match tokio::time::timeout(Duration::from_secs(30), running.child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => unclean.push(format!("{} ({status})", running.name)),
                Ok(Err(e)) => unclean.push(format!("{} ({e})", running.name)),
                Err(_) => {
                    let _ = running.child.kill().await;
                    unclean.push(format!("{} (killed after 30 s)", running.name));
                }
            }
        }
    }
    anyhow::ensure!(
        unclean.is_empty(),
        "did not stop cleanly: {}",
        unclean.join(", ")
    );
    Ok(())
}

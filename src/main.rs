//! `vela`: one binary for every role. `vela standalone` runs them all in one process;
//! `vela store`, `vela controller` and `vela proxy` run the roles of a cluster; `vela admin` manages a running cluster;
//! `vela bench` generates load.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vela::config::{self, FlagOverrides, Profile};
use vela::controller_node::ControllerNode;
use vela::proxy_node::ProxyNode;
use vela::standalone::Standalone;
use vela::store_node::StoreNode;

// glibc malloc showed up as a fifth of the CPU of a send (fragmentation and consolidation
// under many small, short-lived allocations); mimalloc handles that pattern well.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process (and the children `local-cluster` starts),
/// unless `MIMALLOC_ALLOW_THP` says otherwise. mimalloc asks for huge pages on its arenas
/// (`MADV_HUGEPAGE`) and hands freed memory back to the kernel after a second; every page it
/// then touches again arrives as a fresh 2 MiB page the kernel zeroes first. Profiled under
/// load that zeroing was a quarter of a store node's CPU (`clear_page_erms`), and turning huge
/// pages off cut CPU per message by a fifth to a third, standalone and in a cluster
/// (docs/benchmarks.md, "Transparent huge pages"); databases advise the same (Redis, MongoDB).
/// Setting the flag after mimalloc started still applies to every later page fault: the
/// kernel's per-process flag overrides the arenas' advice.
fn disable_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("warning: cannot turn transparent huge pages off: {e}");
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "vela",
    version,
    about = "Vela: messaging that speaks the RocketMQ 5 gRPC protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every role (controller, store, proxy) in one process.
    Standalone(RoleArgs),
    /// Run a store node of a cluster: replicas of the shards, Raft with the other store nodes.
    Store(RaftNodeArgs),
    /// Run a controller node of a cluster: the metadata, Raft with the other controller nodes.
    Controller(RaftNodeArgs),
    /// Run a proxy of a cluster: the RocketMQ 5 protocol in front of the stores and controllers.
    Proxy(RoleArgs),
    /// Run a whole cluster on this machine, each role its own child process.
    LocalCluster(vela::local_cluster::LocalClusterArgs),
    /// Make a cluster CA and a certificate per process for mutual TLS between roles.
    ClusterCerts(vela::certs::ClusterCertsArgs),
    /// Manage topics and groups, look at queues, send and receive.
    Admin(vela::admin::AdminArgs),
    /// Load generator: producers and consumers through vela-sdk.
    Bench(vela::bench::BenchArgs),
}

#[derive(clap::Args, Debug)]
/// Flags every role process takes (each overrides the config file and `VELA_…`).
struct RoleArgs {
    /// TOML config file (also VELA_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (default ./vela-data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address (default 127.0.0.1:8081).
    #[arg(long, value_name = "ADDR")]
    grpc_listen: Option<SocketAddr>,
    /// HTTP listen address for /health, /ready and /metrics (default 127.0.0.1:8082).
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
}

#[derive(clap::Args, Debug)]
struct RaftNodeArgs {
    #[command(flatten)]
    role: RoleArgs,
    /// Create this node's Raft groups if its data directory is new (the cluster's first start
    /// only; without it a new data directory is refused). Also VELA_BOOTSTRAP=true.
    #[arg(long, env = "VELA_BOOTSTRAP")]
    bootstrap: bool,
    /// Take this node's id from its host name, a StatefulSet pod's `<name>-<ordinal>`: the
    /// ordinal + 1 (pod `vela-store-0` is node 1). Also VELA_NODE_ID_FROM_HOSTNAME=true.
    #[arg(long, env = "VELA_NODE_ID_FROM_HOSTNAME")]
    node_id_from_hostname: bool,
}

impl RaftNodeArgs {
    /// `VELA_<ROLE>__NODE_ID` from the host name, when asked for.
    fn node_id_env(&self, role: &str) -> anyhow::Result<Vec<(String, String)>> {
        if !self.node_id_from_hostname {
            return Ok(Vec::new());
        }
        let host = match std::env::var("HOSTNAME") {
            Ok(h) if !h.is_empty() => h,
            _ => rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
        };
        let id = vela::config::node_id_from_hostname(&host)?;
        Ok(vec![(format!("VELA_{role}__NODE_ID"), id.to_string())])
    }
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Standalone(args) => run_standalone(args).await,
            Command::Store(args) => run_store(args).await,
            Command::Controller(args) => run_controller(args).await,
            Command::Proxy(args) => run_proxy(args).await,
            Command::LocalCluster(args) => {
                vela::telemetry::init(&vela::config::LogConfig::default());
                // Listening before any child starts: a signal during start-up still stops them.
                vela::local_cluster::run(args, signal_listener()).await
            }
            Command::ClusterCerts(args) => vela::certs::run(&args),
            Command::Admin(args) => vela::admin::run(args).await,
            Command::Bench(args) => vela::bench::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration of a role process: defaults of `profile` < file < env < flags.
fn load_role_config(profile: Profile, args: RoleArgs) -> anyhow::Result<config::VelaConfig> {
    load_role_config_with(profile, args, Vec::new())
}

/// As [`load_role_config`], with `extra` variables after the process's own.
fn load_role_config_with(
    profile: Profile,
    args: RoleArgs,
    extra: Vec<(String, String)>,
) -> anyhow::Result<config::VelaConfig> {
    let file = args
        .config
        .or_else(|| std::env::var_os("VELA_CONFIG").map(PathBuf::from));
    let flags = FlagOverrides {
        data_dir: args.data_dir,
        grpc_listen: args.grpc_listen,
        http_listen: args.http_listen,
    };
    let config = config::load(
        profile,
        file.as_deref(),
        std::env::vars().chain(extra),
        &flags,
    )?;
    vela::telemetry::init(&config.log);
    Ok(config)
}

/// What every role process does once started: say where it listens, run until Ctrl-C or
/// SIGTERM, then stop cleanly. `lines` are (what, where) pairs printed under `title`.
async fn serve_until_signal<F>(
    title: String,
    lines: Vec<(&str, String)>,
    stop: F,
) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    tracing::info!("{title} started");
    let width = lines.iter().map(|(what, _)| what.len()).max().unwrap_or(0) + 1;
    let mut text = format!("{title} is running\n");
    for (what, value) in &lines {
        text.push_str(&format!("  {:<width$} {value}\n", format!("{what}:")));
    }
    text.push_str("Press Ctrl-C to stop.");
    #[allow(clippy::print_stdout)]
    {
        println!("{text}");
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    stop.await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The banner lines of a process serving clients: one port, or clients and admin apart.
fn grpc_lines(
    grpc: std::net::SocketAddr,
    admin: Option<std::net::SocketAddr>,
) -> Vec<(&'static str, String)> {
    match admin {
        None => vec![("gRPC (RocketMQ 5 clients, vela admin)", grpc.to_string())],
        Some(admin) => vec![
            ("gRPC (RocketMQ 5 clients)", grpc.to_string()),
            ("gRPC (vela admin)", admin.to_string()),
        ],
    }
}

async fn run_standalone(args: RoleArgs) -> anyhow::Result<()> {
    let config = load_role_config(Profile::Standalone, args)?;
    let data_dir = config.data_dir.display().to_string();
    let node = Standalone::start(config).await?;
    let mut lines = grpc_lines(node.grpc_addr(), node.admin_addr());
    lines.push((
        "HTTP (/health /ready /metrics)",
        format!("http://{}", node.http_addr()),
    ));
    lines.push(("data", data_dir));
    serve_until_signal("vela standalone".into(), lines, node.stop()).await
}

async fn run_controller(args: RaftNodeArgs) -> anyhow::Result<()> {
    let extra = args.node_id_env("CONTROLLER")?;
    let config = load_role_config_with(Profile::Controller, args.role, extra)?;
    let node_id = config.controller.node_id;
    let data_dir = config.data_dir.display().to_string();
    let node = ControllerNode::start(config, args.bootstrap).await?;
    let lines = vec![
        (
            "gRPC (Raft, controller service)",
            node.grpc_addr().to_string(),
        ),
        (
            "HTTP (/health /ready /metrics)",
            format!("http://{}", node.http_addr()),
        ),
        ("data", data_dir),
    ];
    serve_until_signal(format!("vela controller {node_id}"), lines, node.stop()).await
}

async fn run_proxy(args: RoleArgs) -> anyhow::Result<()> {
    let config = load_role_config(Profile::Proxy, args)?;
    let node = ProxyNode::start(config).await?;
    let mut lines = grpc_lines(node.grpc_addr(), node.admin_addr());
    lines.push((
        "HTTP (/health /ready /metrics)",
        format!("http://{}", node.http_addr()),
    ));
    serve_until_signal("vela proxy".into(), lines, node.stop()).await
}

async fn run_store(args: RaftNodeArgs) -> anyhow::Result<()> {
    let extra = args.node_id_env("STORE")?;
    let config = load_role_config_with(Profile::Store, args.role, extra)?;
    let node_id = config.store.node_id;
    let data_dir = config.data_dir.display().to_string();
    let node = StoreNode::start(config, args.bootstrap).await?;
    let lines = vec![
        ("gRPC (Raft, store service)", node.grpc_addr().to_string()),
        (
            "HTTP (/health /ready /metrics)",
            format!("http://{}", node.http_addr()),
        ),
        ("data", data_dir),
    ];
    serve_until_signal(format!("vela store {node_id}"), lines, node.stop()).await
}

/// Like [`wait_for_signal`], with the handlers installed now rather than when the future is
/// first polled, so a signal that arrives before then is not fatal to the process.
#[cfg(unix)]
fn signal_listener() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        match (interrupt, terminate) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            _ => wait_for_signal().await,
        }
    }
}

#[cfg(not(unix))]
fn signal_listener() -> impl std::future::Future<Output = ()> {
    wait_for_signal()
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

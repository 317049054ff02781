//! `vela`: one binary for every role. `vela standalone` runs them all in one process;
//! `vela store` runs a store node of a cluster; `vela admin` manages a running cluster;
//! `vela bench` generates load.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vela::config::{self, FlagOverrides, Profile};
use vela::standalone::Standalone;
use vela::store_node::StoreNode;

// glibc malloc showed up as a fifth of the CPU of a send (fragmentation and consolidation
// under many small, short-lived allocations); mimalloc handles that pattern well.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Store(StoreArgs),
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
struct StoreArgs {
    #[command(flatten)]
    role: RoleArgs,
    /// Create the cluster's shards if this node's data directory is new (the cluster's first
    /// start only; without it a new data directory is refused).
    #[arg(long)]
    bootstrap: bool,
}

fn main() -> ExitCode {
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

async fn run_standalone(args: RoleArgs) -> anyhow::Result<()> {
    let file = args
        .config
        .or_else(|| std::env::var_os("VELA_CONFIG").map(PathBuf::from));
    let flags = FlagOverrides {
        data_dir: args.data_dir,
        grpc_listen: args.grpc_listen,
        http_listen: args.http_listen,
    };
    let config = config::load(
        Profile::Standalone,
        file.as_deref(),
        std::env::vars(),
        &flags,
    )?;
    vela::telemetry::init(&config.log);
    let data_dir = config.data_dir.clone();
    let node = Standalone::start(config).await?;
    tracing::info!(
        grpc = %node.grpc_addr(),
        http = %node.http_addr(),
        data_dir = %data_dir.display(),
        "vela standalone started"
    );
    #[allow(clippy::print_stdout)]
    {
        println!(
            "vela standalone is running\n  gRPC (RocketMQ 5 clients, vela admin): {}\n  HTTP (/health /ready /metrics):        http://{}\n  data:                                  {}\nPress Ctrl-C to stop.",
            node.grpc_addr(),
            node.http_addr(),
            data_dir.display()
        );
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    node.stop().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn run_store(args: StoreArgs) -> anyhow::Result<()> {
    let StoreArgs {
        role: args,
        bootstrap,
    } = args;
    let file = args
        .config
        .or_else(|| std::env::var_os("VELA_CONFIG").map(PathBuf::from));
    let flags = FlagOverrides {
        data_dir: args.data_dir,
        grpc_listen: args.grpc_listen,
        http_listen: args.http_listen,
    };
    let config = config::load(Profile::Store, file.as_deref(), std::env::vars(), &flags)?;
    vela::telemetry::init(&config.log);
    let data_dir = config.data_dir.clone();
    let node_id = config.store.node_id;
    let node = StoreNode::start(config, bootstrap).await?;
    tracing::info!(
        node = node_id,
        grpc = %node.grpc_addr(),
        http = %node.http_addr(),
        data_dir = %data_dir.display(),
        "vela store started"
    );
    #[allow(clippy::print_stdout)]
    {
        println!(
            "vela store {node_id} is running\n  gRPC (Raft, store service): {}\n  HTTP (/health /ready /metrics): http://{}\n  data: {}\nPress Ctrl-C to stop.",
            node.grpc_addr(),
            node.http_addr(),
            data_dir.display()
        );
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    node.stop().await?;
    tracing::info!("stopped cleanly");
    Ok(())
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

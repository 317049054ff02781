//! What every role process of a cluster does the same way: bind its two listeners before
//! opening anything (a port conflict fails fast), refuse a new data directory unless told to
//! bootstrap, serve a gRPC router and the HTTP side door until told to stop.

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::config::VelaConfig;
use crate::http::{self, HttpState};

/// A role process's listeners and data-directory lock, before its role opens.
pub(crate) struct Bound {
    pub grpc: TcpListener,
    pub http: TcpListener,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub lock: File,
}

/// Creates and locks the data directory and binds both listeners.
pub(crate) async fn bind(config: &VelaConfig) -> anyhow::Result<Bound> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let lock = crate::standalone::lock_data_dir(&config.data_dir)?;
    let (grpc, http) = bind_listeners(config).await?;
    Ok(Bound {
        grpc_addr: grpc.local_addr()?,
        http_addr: http.local_addr()?,
        grpc,
        http,
        lock,
    })
}

/// Binds the gRPC and the HTTP listener (a process without a data directory: the proxy).
pub(crate) async fn bind_listeners(
    config: &VelaConfig,
) -> anyhow::Result<(TcpListener, TcpListener)> {
    let grpc = TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", config.grpc_listen))?;
    let http = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http_listen))?;
    Ok((grpc, http))
}

/// Refuses a role's new data directory (no `marker` file in `dir`) unless `bootstrap`: only
/// a cluster's first start creates Raft groups. A node that lost its data must not rejoin as
/// if nothing happened: with an empty log it could vote a replica that misses committed
/// entries into leadership (ADR 0010).
pub(crate) fn check_bootstrap(
    role: &str,
    dir: &Path,
    marker: &Path,
    bootstrap: bool,
) -> anyhow::Result<()> {
    let fresh = !marker.exists();
    anyhow::ensure!(
        !fresh || bootstrap,
        "data directory {} holds no {role}: on the cluster's first start, start every {role} \
         node with --bootstrap; a node that lost its data cannot rejoin with an empty disk \
         (ADR 0010)",
        dir.display()
    );
    if fresh {
        tracing::info!(data_dir = %dir.display(), "bootstrapping a new {role} node");
    } else if bootstrap {
        tracing::info!("--bootstrap ignored: this data directory already holds a {role}");
    }
    Ok(())
}

/// Serves `router` on `listener` until `shutdown` fires. Accepted connections get
/// `TCP_NODELAY`, as tonic gives its own listeners: without it a small reply written after the
/// peer's last segment (a follower's AppendStream answer, a store's answer to a proxy) waits for
/// the peer's delayed ACK, up to 40 ms on Linux.
pub(crate) fn serve_grpc(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> JoinHandle<Result<(), tonic::transport::Error>> {
    tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming(listener), async move {
                shutdown.cancelled().await;
            })
            .await
    })
}

/// The connections `listener` accepts, with `TCP_NODELAY` set.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves `/health`, `/ready` (200 from now on) and `/metrics` from `hub`.
pub(crate) fn serve_http(
    listener: TcpListener,
    hub: vela_telemetry::MetricsHub,
    shutdown: CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    let ready = Arc::new(AtomicBool::new(true));
    let task = tokio::spawn(http::serve(
        listener,
        HttpState {
            hub,
            ready: ready.clone(),
        },
        shutdown,
    ));
    ready.store(true, Ordering::Release);
    task
}

/// Waits for a server task, logging how it ended.
pub(crate) async fn join<E: std::fmt::Display>(what: &str, task: JoinHandle<Result<(), E>>) {
    match task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "{what} stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "{what} task failed"),
    }
}

/// The gRPC server of a store or controller node: mutual TLS with the cluster CA when the
/// cluster has `[cluster.tls]` (ADR 0021), else plaintext.
pub(crate) fn grpc_server(
    tls: Option<&vela_proto::cluster_tls::ClusterTls>,
) -> anyhow::Result<tonic::transport::Server> {
    let server = tonic::transport::Server::builder();
    Ok(match tls {
        Some(tls) => server
            .tls_config(tls.server_config())
            .context("cluster TLS settings rejected")?,
        None => server,
    })
}

/// Reads this node's `[cluster.tls]` and makes every internal channel of the process mutual TLS
/// (before any channel is opened).
pub(crate) fn install_cluster_tls(
    config: &VelaConfig,
) -> anyhow::Result<Option<vela_proto::cluster_tls::ClusterTls>> {
    let tls = config.cluster.load_tls()?;
    if let Some(tls) = &tls {
        tls.install().map_err(anyhow::Error::msg)?;
    }
    Ok(tls)
}

/// A client of the controller group `cluster.controllers` lists (over the cluster's TLS once
/// [`install_cluster_tls`] ran).
pub(crate) fn controller_client(
    config: &VelaConfig,
) -> anyhow::Result<vela_proto::controller_client::RemoteController> {
    let controllers: std::collections::BTreeMap<u64, String> = config
        .cluster
        .controllers
        .iter()
        .map(|n| (n.id, n.addr.clone()))
        .collect();
    vela_proto::controller_client::RemoteController::new(&controllers)
        .map_err(anyhow::Error::msg)
        .context("the controller nodes of the cluster")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;

    #[tokio::test]
    async fn accepted_grpc_connections_send_small_replies_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let server_side = accepted.next().await.unwrap().unwrap();
        assert!(
            server_side.nodelay().unwrap(),
            "accepted connections must not hold small writes back (Nagle)"
        );
    }
}

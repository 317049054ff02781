//! `vela proxy`: a stateless front door of a cluster. It serves the RocketMQ 5 protocol and the
//! admin service on `grpc_listen` exactly as standalone does, with the store and the controller
//! reached over gRPC: `RemoteStore` routes each call to the shard's leader among
//! `cluster.stores`, `RemoteController` to the controller group's leader among
//! `cluster.controllers`. Receipt handles are signed with the secret in `cluster.secret_file`,
//! which every proxy shares, so any proxy acks what another delivered. Nothing a proxy holds
//! is lost when it dies.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vela_proto::clock::system_clock;
use vela_proto::controller_client::RemoteController;
use vela_proto::receipt::ReceiptCodec;
use vela_proto::store_client::{ClusterMap, RemoteStore};
use vela_proto::{ControllerApi, StoreApi};

use crate::config::VelaConfig;
use crate::serving;

/// A running proxy.
pub struct ProxyNode {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    shutdown: CancellationToken,
    proxy_task: JoinHandle<Result<(), vela_proxy::ProxyError>>,
    http_task: JoinHandle<std::io::Result<()>>,
}

/// Reads the shared receipt secret.
fn read_secret(config: &VelaConfig) -> anyhow::Result<Vec<u8>> {
    let path = config.cluster.secret_file.as_ref().context(
        "cluster.secret_file is required on a proxy: every proxy of a cluster signs receipt \
         handles with the same secret (a file of at least 16 random bytes)",
    )?;
    let secret = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(
        secret.len() >= 16,
        "{} holds {} bytes; a receipt secret needs at least 16",
        path.display(),
        secret.len()
    );
    Ok(secret)
}

/// A client of the cluster's store nodes (`cluster.stores`, every shard of `cluster.shards` on
/// each), routing each call to the shard's leader; connections are made on first use.
pub(crate) fn store_client(config: &VelaConfig) -> anyhow::Result<Arc<dyn StoreApi>> {
    let stores: BTreeMap<u64, String> = config
        .cluster
        .stores
        .iter()
        .map(|n| (n.id, n.addr.clone()))
        .collect();
    let replicas: Vec<u64> = stores.keys().copied().collect();
    let store = RemoteStore::new(ClusterMap {
        stores,
        shards: config
            .cluster
            .shards
            .iter()
            .map(|&s| (s, replicas.clone()))
            .collect(),
    })
    .map_err(anyhow::Error::msg)
    .context("the store nodes of the cluster")?;
    Ok(Arc::new(store))
}

impl ProxyNode {
    /// Connects (lazily) to the cluster's stores and controllers and serves clients.
    pub async fn start(config: VelaConfig) -> anyhow::Result<Self> {
        config.cluster.validate_stores()?;
        config.cluster.validate_controllers()?;
        let secret = read_secret(&config)?;
        let (grpc, http) = serving::bind_listeners(&config).await?;
        let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
        let store = store_client(&config)?;
        let controllers: BTreeMap<u64, String> = config
            .cluster
            .controllers
            .iter()
            .map(|n| (n.id, n.addr.clone()))
            .collect();
        let controller = RemoteController::new(&controllers)
            .map_err(anyhow::Error::msg)
            .context("the controller nodes of the cluster")?;

        let mut registry = Registry::with_prefix("");
        let metrics = vela_proxy::ProxyMetrics::register(&mut registry);
        let mut proxy_config = config.proxy.clone();
        proxy_config.cluster_mode = "cluster".to_owned();
        let ctx = vela_proxy::ProxyContext {
            config: proxy_config,
            store,
            controller: Arc::new(controller) as Arc<dyn ControllerApi>,
            receipts: ReceiptCodec::new(&secret),
            clock: system_clock(),
            metrics,
            listen_addr: grpc_addr,
        };
        let shutdown = CancellationToken::new();
        let proxy_task = tokio::spawn(vela_proxy::serve(grpc, ctx, shutdown.clone()));
        let http_task = serving::serve_http(http, registry, shutdown.clone());
        Ok(ProxyNode {
            grpc_addr,
            http_addr,
            shutdown,
            proxy_task,
            http_task,
        })
    }

    /// The bound gRPC address (RocketMQ clients, `vela admin`).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound HTTP address (health, readiness, metrics).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stops serving (in-flight calls finish first).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        serving::join("proxy", self.proxy_task).await;
        serving::join("HTTP server", self.http_task).await;
        Ok(())
    }
}

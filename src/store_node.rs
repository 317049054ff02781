//! `vela store`: one store node of a cluster. It holds a replica of every shard in
//! `cluster.shards`, each an openraft group over the store nodes of `cluster.stores` (ADR 0010),
//! and serves one gRPC port (`grpc_listen`) that carries Raft between the stores
//! (`vela.raft.v1`) and the store service the proxies call (`vela.store.v1`). `/health`,
//! `/ready` and `/metrics` are on `http_listen`.
//!
//! Until the controller places replicas, every store node of `cluster.stores` holds every shard
//! (replication factor = number of store nodes).

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vela_proto::clock::{SharedClock, system_clock};
use vela_raft::grpc::{ChannelPool, GrpcNetwork, RaftServer};
use vela_raft::vfs::StdVfs;
use vela_store::GrpcPeerBuilds;
use vela_store::service::{ShardRegistrar, StoreService};
use vela_store::{ShardStateMachine, ShardTypes, Store};
use vela_telemetry::NodeType;

use crate::config::VelaConfig;
use crate::serving;
use crate::telemetry::Metrics;

/// A running store node.
pub struct StoreNode {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    shutdown: CancellationToken,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
    http_task: JoinHandle<std::io::Result<()>>,
    metrics: Metrics,
    raft: Arc<RaftServer<ShardTypes, ShardStateMachine>>,
    store: Arc<Store>,
    _data_lock: File,
}

impl StoreNode {
    /// Opens this node's shard replicas and serves them. A new data directory is refused unless
    /// `bootstrap` (the cluster's first start; see `serving::check_bootstrap`).
    pub async fn start(config: VelaConfig, bootstrap: bool) -> anyhow::Result<Self> {
        Self::start_with_clock(config, bootstrap, system_clock()).await
    }

    /// As [`StoreNode::start`], with a substitute clock (tests).
    pub async fn start_with_clock(
        config: VelaConfig,
        bootstrap: bool,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        config.cluster.validate_stores()?;
        let cluster_tls = serving::install_cluster_tls(&config)?;
        let node_id = config.store.node_id;
        let voters: BTreeMap<u64, String> = config
            .cluster
            .stores
            .iter()
            .map(|n| (n.id, n.addr.clone()))
            .collect();
        // A node of `cluster.stores` holds every configured shard; any other joins at runtime
        // (issue 11): it registers with the controller and holds only shards placed on it.
        let joining = match (&config.store.advertise_addr, voters.get(&node_id)) {
            (_, Some(_)) => None,
            (Some(addr), None) => {
                anyhow::ensure!(
                    !config.cluster.controllers.is_empty(),
                    "store.node_id {node_id} is not one of cluster.stores and \
                     cluster.controllers is empty: a store node joins through the controller"
                );
                Some(addr.clone())
            }
            (None, None) => anyhow::bail!(
                "store.node_id {node_id} is not one of cluster.stores ({:?}); a store node \
                 that joins at runtime needs store.advertise_addr (the host:port the other \
                 processes reach its gRPC port at)",
                voters.keys().collect::<Vec<_>>()
            ),
        };
        if joining.is_none() {
            serving::check_bootstrap(
                "store",
                &config.store.data_dir,
                &config.store.data_dir.join(vela_store::format::MARKER),
                bootstrap,
            )?;
        }
        let bound = serving::bind(&config).await?;
        let mut store_config = config.store.clone();
        store_config.shards = if joining.is_some() {
            Vec::new()
        } else {
            config.cluster.shards.clone()
        };
        let pool = ChannelPool::new();
        let builds = GrpcPeerBuilds::new();
        let store = Store::open_replicated(
            store_config,
            clock,
            StdVfs::shared(),
            voters,
            move |shard| GrpcNetwork::<Vec<u8>>::new(u64::from(shard), node_id, pool.clone()),
            bootstrap,
            builds,
            Arc::new(vela_store::GrpcReplicaSource::new()),
        )
        .await
        .context("store failed to start")?;
        let tier = match crate::tier::attach(&config, &store, false).await {
            Ok(tier) => tier,
            Err(err) => {
                let _ = store.shutdown().await;
                return Err(err);
            }
        };
        let raft = RaftServer::new(node_id);
        for (shard, handle) in store.shard_rafts() {
            raft.register(u64::from(shard), handle);
        }
        let shutdown = CancellationToken::new();
        // The tier signs with the credentials the controllers keep, while they keep any (ends
        // with `shutdown`).
        if let Some(tier) = tier
            && !config.cluster.controllers.is_empty()
        {
            match serving::controller_client(&config) {
                Ok(controller) => {
                    let _ = crate::tier::follow_credentials(
                        tier,
                        Arc::new(controller),
                        shutdown.clone(),
                    );
                }
                Err(err) => {
                    let _ = store.shutdown().await;
                    return Err(err);
                }
            }
        }
        // Shards the controller places on this node at runtime become reachable over Raft as
        // they open.
        let registrar: ShardRegistrar = {
            let raft = raft.clone();
            Arc::new(move |shard, handle| match handle {
                Some(handle) => raft.register(u64::from(shard), handle),
                None => raft.unregister(u64::from(shard)),
            })
        };
        let router = serving::grpc_server(cluster_tls.as_ref())?
            .add_service(raft.service())
            .add_service(StoreService::server_with(store.clone(), Some(registrar)));
        let grpc_task = serving::serve_grpc(router, bound.grpc, shutdown.clone());
        let metrics = Metrics::start(&config.telemetry, &shutdown)?;
        store.set_tracer(metrics.tracer("vela-store"));
        store.register_metrics(
            &metrics.hub.meter("vela-store"),
            &Metrics::labels(&config, NodeType::Store, &node_id.to_string()),
        );
        let http_task = serving::serve_http(bound.http, metrics.hub.clone(), shutdown.clone());
        if let Some(addr) = joining
            && let Err(err) = register(&config, node_id, &addr).await
        {
            shutdown.cancel();
            let _ = store.shutdown().await;
            return Err(err);
        }
        Ok(StoreNode {
            grpc_addr: bound.grpc_addr,
            http_addr: bound.http_addr,
            shutdown,
            grpc_task,
            http_task,
            metrics,
            raft,
            store,
            _data_lock: bound.lock,
        })
    }

    /// The bound gRPC address (Raft and the store service).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound HTTP address (health, readiness, metrics).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Hands the shards it leads over, stops serving and closes the shards (flushing their
    /// logs).
    pub async fn stop(self) -> anyhow::Result<()> {
        // Closing the store first hands leadership over and ends its long polls, so the gRPC
        // server's graceful stop does not wait them out; peers then see this node as gone.
        let stopped = self.store.shutdown().await.context("store shutdown");
        for shard in self.store.shard_ids() {
            self.raft.unregister(u64::from(shard));
        }
        self.shutdown.cancel();
        serving::join("gRPC server", self.grpc_task).await;
        serving::join("HTTP server", self.http_task).await;
        self.metrics.stopped().await;
        stopped
    }
}

/// Registers this store node, one not in `cluster.stores`, with the controller at `addr`
/// (issue 11). Retries while no controller answers (a cluster still starting); a refusal (an
/// id configured at another address, a bad address) is returned.
async fn register(config: &VelaConfig, node_id: u64, addr: &str) -> anyhow::Result<()> {
    use backon::Retryable;
    use vela_proto::{ControllerApi, ControllerError};
    let controller = serving::controller_client(config)?;
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(200))
        .with_max_delay(std::time::Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    (|| controller.register_store(node_id, addr))
        .retry(backoff)
        .when(|err| !matches!(err, ControllerError::Invalid(_)))
        .notify(|err, after| {
            tracing::warn!(error = %err, ?after, "registering with the controller; retrying")
        })
        .await
        .with_context(|| format!("the controller did not register store node {node_id} at {addr}"))?;
    tracing::info!(
        node_id,
        addr,
        "registered with the controller: shards are placed here from now on"
    );
    Ok(())
}

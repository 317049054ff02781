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
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use vela_proto::clock::{SharedClock, system_clock};
use vela_raft::grpc::{ChannelPool, GrpcNetwork, RaftServer};
use vela_raft::vfs::StdVfs;
use vela_store::service::StoreService;
use vela_store::{ShardStateMachine, ShardTypes, Store};

use crate::config::VelaConfig;
use crate::http::{self, HttpState};

/// A running store node.
pub struct StoreNode {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    shutdown: CancellationToken,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
    http_task: JoinHandle<std::io::Result<()>>,
    raft: Arc<RaftServer<ShardTypes, ShardStateMachine>>,
    store: Arc<Store>,
    _data_lock: File,
}

impl StoreNode {
    /// Opens this node's shard replicas and serves them. Binds both listeners first, so a port
    /// conflict fails before anything is opened.
    ///
    /// A new data directory is refused unless `bootstrap` is set: only the cluster's first start
    /// creates the shards' groups. A node that lost its data must not rejoin as if nothing had
    /// happened: with an empty log it could vote a replica that misses committed entries into
    /// leadership. (Replacing a node that lost its disk needs membership changes, not built
    /// yet: ADR 0010.)
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
        let fresh = !config
            .store
            .data_dir
            .join(vela_store::format::MARKER)
            .exists();
        anyhow::ensure!(
            !fresh || bootstrap,
            "data directory {} holds no store: on the cluster's first start, start every store \
             node with --bootstrap; a node that lost its data cannot rejoin with an empty disk \
             (ADR 0010)",
            config.store.data_dir.display()
        );
        if fresh {
            tracing::info!(
                data_dir = %config.store.data_dir.display(),
                "bootstrapping: creating this node's replicas of the cluster's shards"
            );
        } else if bootstrap {
            tracing::info!("--bootstrap ignored: this data directory already holds a store");
        }
        let node_id = config.store.node_id;
        let mut store_config = config.store.clone();
        store_config.shards = config.cluster.shards.clone();
        let voters: BTreeMap<u64, String> = config
            .cluster
            .stores
            .iter()
            .map(|n| (n.id, n.addr.clone()))
            .collect();
        anyhow::ensure!(
            voters.contains_key(&node_id),
            "store.node_id {node_id} is not one of cluster.stores ({:?})",
            voters.keys().collect::<Vec<_>>()
        );
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        let data_lock = crate::standalone::lock_data_dir(&config.data_dir)?;

        let grpc_listener = TcpListener::bind(config.grpc_listen)
            .await
            .with_context(|| format!("cannot listen for gRPC on {}", config.grpc_listen))?;
        let http_listener = TcpListener::bind(config.http_listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", config.http_listen))?;
        let grpc_addr = grpc_listener.local_addr()?;
        let http_addr = http_listener.local_addr()?;

        let pool = ChannelPool::new();
        let store = Store::open_replicated(
            store_config,
            clock,
            StdVfs::shared(),
            voters,
            move |shard| GrpcNetwork::<Vec<u8>>::new(u64::from(shard), node_id, pool.clone()),
        )
        .await
        .context("store failed to start")?;
        let raft = RaftServer::new(node_id);
        for (shard, handle) in store.shard_rafts() {
            raft.register(u64::from(shard), handle);
        }

        let shutdown = CancellationToken::new();
        let grpc_task = {
            let router = tonic::transport::Server::builder()
                .add_service(raft.service())
                .add_service(StoreService::server(store.clone()));
            let stop = shutdown.clone();
            tokio::spawn(async move {
                router
                    .serve_with_incoming_shutdown(
                        TcpListenerStream::new(grpc_listener),
                        async move {
                            stop.cancelled().await;
                        },
                    )
                    .await
            })
        };
        let mut registry = Registry::with_prefix("");
        store.register_metrics(&mut registry);
        let ready = Arc::new(AtomicBool::new(false));
        let http_task = tokio::spawn(http::serve(
            http_listener,
            HttpState {
                registry: Arc::new(registry),
                ready: ready.clone(),
            },
            shutdown.clone(),
        ));
        ready.store(true, Ordering::Release);
        Ok(StoreNode {
            grpc_addr,
            http_addr,
            shutdown,
            grpc_task,
            http_task,
            raft,
            store,
            _data_lock: data_lock,
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

    /// Stops serving and closes the shards (flushing their logs).
    pub async fn stop(self) -> anyhow::Result<()> {
        // Peers see this node as gone from now on; the leaders it held move elsewhere.
        for shard in self.store.shard_ids() {
            self.raft.unregister(u64::from(shard));
        }
        self.shutdown.cancel();
        // Closing the store ends its long polls, so the gRPC server's graceful stop does not
        // wait them out.
        let stopped = self.store.shutdown().await.context("store shutdown");
        match self.grpc_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "gRPC server task failed"),
        }
        match self.http_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "http server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "http task failed"),
        }
        stopped
    }
}

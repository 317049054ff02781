//! `vela controller`: one controller node of a cluster. The controller nodes of
//! `cluster.controllers` run the metadata (topics, groups, queue placement on `cluster.shards`)
//! as one openraft group; one gRPC port (`grpc_listen`) carries Raft between them and the
//! controller service the proxies call (`vela.controller.v1`). Only the leader answers calls;
//! the proxies find it (`RemoteController`). Data traffic never goes through the controller.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vela_controller::Controller;
use vela_controller::balancer::spawn_leader_balancer;
use vela_controller::reconciler::spawn_reconciler;
use vela_controller::service::ControllerService;
use vela_proto::clock::system_clock;
use vela_telemetry::NodeType;

use crate::config::VelaConfig;
use crate::proxy_node::store_client;
use crate::serving;
use crate::telemetry::Metrics;

/// A running controller node.
pub struct ControllerNode {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    shutdown: CancellationToken,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
    http_task: JoinHandle<std::io::Result<()>>,
    controller: Arc<Controller>,
    balancer: Option<JoinHandle<()>>,
    reconciler: Option<JoinHandle<()>>,
    scaler: Option<JoinHandle<()>>,
    /// Runs the routes while this node leads (ADR 0025); stopped first.
    routes_shutdown: CancellationToken,
    routes_task: JoinHandle<()>,
    _route_metrics: vela_routes::RouteMetrics,
    telemetry: Metrics,
    _controller_metrics: vela_controller::ControllerMetrics,
    _data_lock: File,
}

impl ControllerNode {
    /// Opens this node's member of the controller group and serves it. A new data directory
    /// is refused unless `bootstrap` (the cluster's first start).
    pub async fn start(config: VelaConfig, bootstrap: bool) -> anyhow::Result<Self> {
        config.cluster.validate_controllers()?;
        anyhow::ensure!(
            !config.cluster.shards.is_empty(),
            "cluster.shards is empty: list the cluster's shards, e.g. [0, 1, 2]"
        );
        let cluster_tls = serving::install_cluster_tls(&config)?;
        if cluster_tls.is_none() && (config.auth.enabled || config.auth.init_user.is_some()) {
            tracing::warn!(
                "users are configured but the cluster has no [cluster.tls]: this controller's \
                 port hands users and their passwords to anyone who reaches it (ADR 0021)"
            );
        }
        let node_id = config.controller.node_id;
        let voters: BTreeMap<u64, String> = config
            .cluster
            .controllers
            .iter()
            .map(|n| (n.id, n.addr.clone()))
            .collect();
        anyhow::ensure!(
            voters.contains_key(&node_id),
            "controller.node_id {node_id} is not one of cluster.controllers ({:?})",
            voters.keys().collect::<Vec<_>>()
        );
        serving::check_bootstrap(
            "controller",
            &config.controller.data_dir,
            &config.controller.data_dir.join("log"),
            bootstrap,
        )?;
        let bound = serving::bind(&config).await?;
        let mut controller_config = config.controller.clone();
        controller_config.shards = config.cluster.shards.clone();
        controller_config.stores = config
            .cluster
            .stores
            .iter()
            .map(|n| (n.id, n.addr.clone()))
            .collect();
        let controller_config_balance = controller_config.leader_balance_interval;
        let controller =
            Controller::open_replicated(controller_config, system_clock(), &voters, bootstrap)
                .await
                .context("controller failed to start")?;
        if let Some(user) = config.init_user()? {
            controller.ensure_user_when_leading(user);
        }
        // One client of the store nodes for everything below; it learns the store nodes that
        // register at runtime from the metadata (issue 11).
        let stores = if config.cluster.stores.is_empty() {
            None
        } else {
            Some(store_client(&config)?)
        };
        let balancer = if controller_config_balance.is_zero() {
            None
        } else if let Some(store) = &stores {
            Some(spawn_leader_balancer(
                &controller,
                store.clone(),
                controller_config_balance,
            ))
        } else {
            tracing::warn!("cluster.stores is empty: leader balancing is off");
            None
        };
        // Makes the store nodes hold the shards placed on them (ADR 0013).
        let reconciler = stores
            .as_ref()
            .map(|store| spawn_reconciler(&controller, store.clone()));
        // `vela admin store scale` drives the store StatefulSet through Kubernetes (issue 11).
        let scaler = match (&config.controller.store_statefulset, &stores) {
            (Some(name), Some(store)) => {
                let statefulset = vela_controller::kubernetes::StoreStatefulSet::connect(name)
                    .await
                    .map(Arc::new);
                if let Err(err) = &statefulset {
                    tracing::warn!(error = %err, "store scaling through Kubernetes is unavailable");
                }
                controller.attach_statefulset(statefulset);
                Some(vela_controller::scaling::spawn_store_scaler(
                    &controller,
                    store.clone(),
                ))
            }
            _ => None,
        };
        let raft = controller
            .raft_service()
            .context("a replicated controller has a Raft service")?;
        let shutdown = CancellationToken::new();
        let mut router = serving::grpc_server(cluster_tls.as_ref())?
            .add_service(raft)
            .add_service(ControllerService::server(controller.clone()));
        // KEDA's external scaler (consumer backlog); with cluster TLS KEDA presents a client
        // certificate of the cluster CA.
        if let Some(store) = &stores {
            crate::proxy_node::follow_store_nodes(
                controller.clone() as Arc<dyn vela_proto::ControllerApi>,
                store.clone(),
                shutdown.clone(),
            );
            router = router.add_service(vela_controller::scaler::Scaler::server(
                controller.clone(),
                store.clone(),
                shutdown.clone(),
            ));
        }
        let grpc_task = serving::serve_grpc(router, bound.grpc, shutdown.clone());
        let telemetry = Metrics::start(&config.telemetry, &shutdown)?;
        let controller_metrics = controller.register_metrics(
            &telemetry.hub.meter("vela-controller"),
            &Metrics::labels(&config, NodeType::Controller, &node_id.to_string()),
        );
        let http_task = serving::serve_http(bound.http, telemetry.hub.clone(), shutdown.clone());
        let lag: Option<Arc<dyn vela_routes::LagProbe>> = stores.as_ref().map(|store| {
            Arc::new(crate::routes::StoreLag {
                controller: controller.clone() as Arc<dyn vela_proto::ControllerApi>,
                store: store.clone(),
            }) as Arc<dyn vela_routes::LagProbe>
        });
        let route_metrics = crate::routes::metrics(
            &telemetry.hub.meter("vela-routes"),
            &Metrics::labels(&config, NodeType::Controller, &node_id.to_string()),
            &controller,
        );
        let routes_shutdown = CancellationToken::new();
        let routes_task = crate::routes::run_while_leading(
            controller.clone(),
            crate::routes::local_source(&config, vela_routes::LocalAddress::Proxies)?,
            lag,
            routes_shutdown.clone(),
        );
        Ok(ControllerNode {
            grpc_addr: bound.grpc_addr,
            http_addr: bound.http_addr,
            shutdown,
            grpc_task,
            http_task,
            controller,
            balancer,
            reconciler,
            scaler,
            routes_shutdown,
            routes_task,
            _route_metrics: route_metrics,
            telemetry,
            _controller_metrics: controller_metrics,
            _data_lock: bound.lock,
        })
    }

    /// The bound gRPC address (Raft and the controller service).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound HTTP address (health, readiness, metrics).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stops serving and closes the controller's log.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.routes_shutdown.cancel();
        if let Err(e) = self.routes_task.await {
            tracing::warn!(error = %e, "route manager task failed");
        }
        if let Some(scaler) = &self.scaler {
            scaler.abort();
        }
        if let Some(reconciler) = &self.reconciler {
            reconciler.abort();
        }
        if let Some(balancer) = &self.balancer {
            balancer.abort();
        }
        let stopped = self
            .controller
            .shutdown()
            .await
            .context("controller shutdown");
        self.shutdown.cancel();
        serving::join("gRPC server", self.grpc_task).await;
        serving::join("HTTP server", self.http_task).await;
        self.telemetry.stopped().await;
        stopped
    }
}

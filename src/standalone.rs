//! `vela standalone`: every role in one process on the same code paths a cluster runs. The
//! proxy holds `Arc<dyn StoreApi>` / `Arc<dyn ControllerApi>`; here they are the in-process
//! roles. Start order is controller → store → proxy (+ HTTP); stop is the reverse.

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vela_proto::clock::{SharedClock, system_clock};
use vela_proto::receipt_keys::ConfiguredKeys;
use vela_proto::{ControllerApi, StoreApi};
use vela_telemetry::NodeType;

use crate::config::VelaConfig;
use crate::http::{self, HttpState};
use crate::telemetry::Metrics;

/// A running standalone node.
pub struct Standalone {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    proxy_task: JoinHandle<Result<(), vela_proxy::ProxyError>>,
    http_task: JoinHandle<std::io::Result<()>>,
    store: Arc<vela_store::Store>,
    controller: Arc<vela_controller::Controller>,
    telemetry: Metrics,
    _controller_metrics: vela_controller::ControllerMetrics,
    /// Stops the routes before the proxy they copy through.
    routes_shutdown: CancellationToken,
    routes_task: JoinHandle<()>,
    /// Finishes deletions left half done (no reconciler runs here).
    drop_finisher: JoinHandle<()>,
    _route_metrics: vela_routes::RouteMetrics,
    _data_lock: File,
}

impl Standalone {
    /// Starts every role. Binds both listeners first so a port conflict fails fast.
    pub async fn start(config: VelaConfig) -> anyhow::Result<Self> {
        Self::start_with_clock(config, system_clock()).await
    }

    /// As [`Standalone::start`], with a substitute clock (tests).
    pub async fn start_with_clock(config: VelaConfig, clock: SharedClock) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        let data_lock = lock_data_dir(&config.data_dir)?;
        // Read before anything starts, so a bad certificate stops nothing half-started.
        let tls = config.tls.server_config()?;
        // The secret that signs receipt handles; every proxy of a cluster shares it.
        let secret =
            vela_proto::secret_file::load_or_create(&config.data_dir.join("cluster.secret"))?;

        let grpc_listener = TcpListener::bind(config.grpc_listen)
            .await
            .with_context(|| format!("cannot listen for gRPC on {}", config.grpc_listen))?;
        let http_listener = TcpListener::bind(config.http_listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", config.http_listen))?;
        let admin_listener = match config.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen for admin calls on {addr}"))?,
            ),
            None => None,
        };
        let grpc_addr = grpc_listener.local_addr()?;
        let http_addr = http_listener.local_addr()?;
        let admin_addr = admin_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;

        let controller =
            vela_controller::Controller::open(config.controller.clone(), clock.clone())
                .await
                .context("controller failed to start")?;
        if let Some(user) = config.init_user()? {
            controller
                .ensure_user(user)
                .await
                .context("creating auth.init_user failed")?;
        }
        let store = match vela_store::Store::open(config.store.clone(), clock.clone()).await {
            Ok(store) => store,
            Err(e) => {
                if let Err(stop) = controller.shutdown().await {
                    tracing::warn!(error = %stop, "controller shutdown after a failed start");
                }
                return Err(anyhow::Error::new(e).context("store failed to start"));
            }
        };

        let tier = match crate::tier::attach(&config, &store, true).await {
            Ok(tier) => tier,
            Err(err) => {
                let _ = store.shutdown().await;
                let _ = controller.shutdown().await;
                return Err(err);
            }
        };
        let shutdown = CancellationToken::new();
        // Ends with `shutdown`.
        let _ = tier.and_then(|tier| {
            crate::tier::follow_credentials(
                tier,
                controller.clone() as Arc<dyn ControllerApi>,
                shutdown.clone(),
            )
        });
        let telemetry = Metrics::start(&config.telemetry, &shutdown)?;
        let metrics = vela_proxy::ProxyMetrics::new(
            &telemetry.hub.meter("vela-proxy"),
            Metrics::labels(&config, NodeType::Proxy, &grpc_addr.to_string()),
            "local",
        );
        store.set_tracer(telemetry.tracer("vela-store"));
        store.register_metrics(
            &telemetry.hub.meter("vela-store"),
            &Metrics::labels(&config, NodeType::Store, &config.store.node_id.to_string()),
        );
        let controller_metrics = controller.register_metrics(
            &telemetry.hub.meter("vela-controller"),
            &Metrics::labels(
                &config,
                NodeType::Controller,
                &config.controller.node_id.to_string(),
            ),
        );
        let routes = vela_routes::RouteManager::new(
            controller.clone() as Arc<dyn ControllerApi>,
            crate::routes::local_source(&config, crate::routes::own_address(grpc_addr))?,
            Some(Arc::new(crate::routes::StoreLag {
                controller: controller.clone() as Arc<dyn ControllerApi>,
                store: store.clone() as Arc<dyn StoreApi>,
            })),
        );
        controller.set_route_runtime(Some(routes.clone()));
        let route_metrics = crate::routes::metrics(
            &telemetry.hub.meter("vela-routes"),
            &Metrics::labels(&config, NodeType::Proxy, &grpc_addr.to_string()),
            &controller,
        );
        let ctx = vela_proxy::ProxyContext {
            config: config.proxy.clone(),
            store: store.clone() as Arc<dyn StoreApi>,
            controller: controller.clone() as Arc<dyn ControllerApi>,
            // Its own key file signs; the controller's managed keys also verify (ADR 0030).
            receipts: ConfiguredKeys {
                keys: std::collections::BTreeMap::from([(0, secret)]),
                signing: None,
                verify_only: false,
            },
            clock,
            metrics,
            tracer: telemetry.tracer("vela-proxy"),
            listen_addr: grpc_addr,
            tls,
        };
        let scaler = scaler_services(
            &config,
            admin_listener.is_some(),
            &controller,
            &store,
            &shutdown,
        );
        let proxy_task = tokio::spawn(vela_proxy::serve_with(
            grpc_listener,
            admin_listener,
            scaler,
            ctx,
            shutdown.clone(),
        ));
        let ready = Arc::new(AtomicBool::new(false));
        let http_state = HttpState {
            hub: telemetry.hub.clone(),
            ready: ready.clone(),
        };
        let http_task = tokio::spawn(http::serve(http_listener, http_state, shutdown.clone()));
        let routes_shutdown = CancellationToken::new();
        let routes_task = routes.spawn(routes_shutdown.clone());
        let drop_finisher = vela_controller::reconciler::spawn_drop_finisher(
            &controller,
            store.clone() as Arc<dyn StoreApi>,
        );
        ready.store(true, Ordering::Release);

        Ok(Self {
            grpc_addr,
            http_addr,
            admin_addr,
            shutdown,
            proxy_task,
            http_task,
            store,
            controller,
            telemetry,
            _controller_metrics: controller_metrics,
            routes_shutdown,
            routes_task,
            drop_finisher,
            _route_metrics: route_metrics,
            _data_lock: data_lock,
        })
    }

    /// The bound gRPC address (MessagingService + admin).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound HTTP address (health, readiness, metrics).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The admin service's own address, when `admin_listen` gave it one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Stops the routes, the proxy and HTTP listeners, then the store, then the controller.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.routes_shutdown.cancel();
        if let Err(e) = self.routes_task.await {
            tracing::warn!(error = %e, "route manager task failed");
        }
        self.controller.set_route_runtime(None);
        self.shutdown.cancel();
        match self.proxy_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "proxy stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "proxy task failed"),
        }
        match self.http_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "http server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "http task failed"),
        }
        self.telemetry.stopped().await;
        self.drop_finisher.abort();
        // Stop the controller even when the store fails to stop cleanly.
        let store = self.store.shutdown().await.context("store shutdown");
        let controller = self
            .controller
            .shutdown()
            .await
            .context("controller shutdown");
        store.and(controller)
    }
}

/// Holds an exclusive lock on `<data_dir>/LOCK` for the life of the process, so two nodes
/// never share a data directory.
pub(crate) fn lock_data_dir(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "data dir {} is in use by another vela process",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(anyhow::Error::new(e).context(format!("cannot lock {}", path.display())))
        }
    }
}

/// KEDA's external scaler, beside the admin service. KEDA cannot sign requests, so with auth
/// on it is served only where the admin service has a listener of its own (`admin_listen`, a
/// port only operators and KEDA reach).
fn scaler_services(
    config: &VelaConfig,
    admin_apart: bool,
    controller: &Arc<vela_controller::Controller>,
    store: &Arc<vela_store::Store>,
    shutdown: &CancellationToken,
) -> Option<vela_proxy::OperatorServices> {
    if config.auth.enabled && !admin_apart {
        tracing::info!(
            "KEDA external scaler off: auth is on and the admin service shares the client port \
             (set admin_listen to serve it there)"
        );
        return None;
    }
    let scaler = vela_controller::scaler::Scaler::server(
        controller.clone(),
        store.clone() as Arc<dyn StoreApi>,
        shutdown.clone(),
    );
    Some(Box::new(move |routes: tonic::service::Routes| {
        routes.add_service(scaler)
    }))
}

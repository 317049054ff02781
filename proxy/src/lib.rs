//! vela-proxy: Vela's stateless gRPC front door. Serves `apache.rocketmq.v2.MessagingService`
//! (so the official RocketMQ 5 clients work unchanged) and `vela.admin.v1.AdminService` over
//! an `Arc<dyn StoreApi>` and an `Arc<dyn ControllerApi>`; holds no client state of its own
//! (receipt handles are signed and self-describing, so any proxy can serve any call).
//!
//! - `convert`: wire requests become domain values once, at the edge.
//! - `status`: every error becomes a protocol code in one place.
//! - `messaging`: the RocketMQ RPCs (`produce`, `consume`, `telemetry`); `admin`: the admin
//!   RPCs; `metadata`: topic/group lookups with auto-creation and a short cache.
//! - `clients`: the clients with a Telemetry stream here, and the server's commands to them
//!   (`producers`: transaction check-backs); `held`: the deliveries handed out here, released
//!   when their client leaves.

mod admin;
mod auth;
mod clients;
mod config;
mod convert;
mod headers;
mod held;
mod messaging;
mod metadata;
mod metrics;
mod producers;
mod receipts;
mod route;
mod settings;
mod status;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vela_proto::clock::SharedClock;
use vela_proto::controller_api::PROXY_HEARTBEAT;
use vela_proto::pb::admin::admin_service_server::AdminServiceServer;
use vela_proto::pb::rocketmq::{self as pb, messaging_service_server::MessagingServiceServer};
use vela_proto::receipt_keys::ConfiguredKeys;
use vela_proto::{ControllerApi, StoreApi};

pub use auth::AuthConfig;
pub use config::ProxyConfig;
pub use metrics::ProxyMetrics;

/// Room for a batch of messages and for answering `MESSAGE_BODY_TOO_LARGE` (instead of a
/// transport error) to bodies somewhat over the limit: the decode limit is this many bodies.
const DECODE_LIMIT_BODIES: usize = 8;
/// Decode limit floor (tonic's default is 4 MiB).
const MIN_DECODE_LIMIT: usize = 16 * 1024 * 1024;

const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Everything the proxy needs to serve.
pub struct ProxyContext {
    pub config: ProxyConfig,
    pub store: Arc<dyn StoreApi>,
    pub controller: Arc<dyn ControllerApi>,
    /// Receipt keys from the config (key files), if any; the controller's managed keys are
    /// added to them (ADR 0030). Every proxy of a cluster verifies with the same keys.
    pub receipts: ConfiguredKeys,
    pub clock: SharedClock,
    pub metrics: Arc<ProxyMetrics>,
    /// Continues producers' traces while messages are stored (off unless traces are exported).
    pub tracer: vela_telemetry::traces::MessageTracer,
    /// The address the server listens on; advertised when nothing better is known.
    pub listen_addr: SocketAddr,
    /// Serve TLS (and, with a client CA, require client certificates) instead of plaintext;
    /// the files are read again when they change.
    pub tls: Option<Arc<tls::ServerTls>>,
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("grpc server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// State shared by both services and every call.
pub(crate) struct Shared {
    pub ctx: ProxyContext,
    pub metadata: metadata::Metadata,
    /// Routes use these when no endpoint is configured and the client named none.
    pub listen_endpoints: pb::Endpoints,
    /// `advertised_endpoint`, parsed (a bad value is logged and ignored).
    pub advertised: Option<pb::Endpoints>,
    /// `store_host` of delivered messages.
    pub store_host: String,
    /// Round-robin position for messages that did not pick a queue.
    pub next_queue: AtomicU64,
    /// Ends the long-lived Telemetry streams so a graceful shutdown can drain connections.
    pub shutdown: CancellationToken,
    /// Producers connected here, for transaction check-backs.
    pub clients: clients::Clients,
    /// Deliveries handed out here, given back when their client leaves.
    pub held: held::Held,
    /// Authenticates and authorizes requests (when `auth.enabled`).
    pub guard: auth::Guard,
    /// Signs and verifies receipt handles.
    pub receipts: Arc<receipts::Receipts>,
}

impl Shared {
    /// The shards a receive or a statistic of `topic` covers: the shards of its queues; for a
    /// dead-letter topic every shard any topic has queues on, because a message is dead-lettered
    /// on the shard that held it. When the controller cannot list topics, the store's own
    /// shards (an empty list): the configured ones.
    pub(crate) async fn shards_of(
        &self,
        topic: &vela_proto::TopicConfig,
    ) -> Vec<vela_proto::ShardId> {
        if !topic.name.is_dead_letter() {
            return topic.queue_shards.clone();
        }
        match self.ctx.controller.list_topics().await {
            Ok(topics) => vela_proto::shards_of_topic(topic, &topics),
            Err(err) => {
                tracing::warn!(topic = %topic.name, error = %err, "listing topics for a dead-letter receive; covering the configured shards");
                Vec::new()
            }
        }
    }

    fn new(ctx: ProxyContext, shutdown: CancellationToken) -> Self {
        let advertised = ctx.config.advertised_endpoint.as_deref().and_then(|text| {
            route::parse_endpoint(text)
                .inspect_err(|e| tracing::warn!(error = %e, "ignoring advertised_endpoint"))
                .ok()
        });
        let listen_endpoints = route::listen_endpoints(ctx.listen_addr);
        let store_host = match (&ctx.config.advertised_endpoint, &advertised) {
            (Some(text), Some(_)) => text.trim().to_owned(),
            _ => listen_endpoints.addresses.first().map_or_else(
                || ctx.listen_addr.to_string(),
                |a| format!("{}:{}", a.host, a.port),
            ),
        };
        let metadata = metadata::Metadata::new(
            ctx.controller.clone(),
            ctx.config.auto_create_topics,
            ctx.config.auto_create_groups,
            ctx.config.default_queue_count,
        );
        let guard = auth::Guard::new(
            &ctx.config.auth,
            ctx.controller.clone(),
            ctx.clock.clone(),
            ctx.metrics.auth_decisions(),
        );
        let receipts = Arc::new(receipts::Receipts::new(ctx.receipts.clone()));
        Self {
            guard,
            receipts,
            ctx,
            metadata,
            listen_endpoints,
            advertised,
            store_host,
            next_queue: AtomicU64::new(0),
            shutdown,
            clients: clients::Clients::default(),
            held: held::Held::default(),
        }
    }
}

/// Both services as tonic routes (for embedding in another server). Telemetry streams stay
/// open until clients close them, and no transaction check-backs are sent; use [`serve`] for
/// a server that checks back and shuts down gracefully.
pub fn router(ctx: ProxyContext) -> tonic::service::Routes {
    routes(Arc::new(Shared::new(ctx, CancellationToken::new())))
}

fn routes(shared: Arc<Shared>) -> tonic::service::Routes {
    messaging_routes(shared.clone())
        .add_service(AdminServiceServer::new(admin::AdminServer::new(shared)))
}

fn messaging_routes(shared: Arc<Shared>) -> tonic::service::Routes {
    let decode_limit = shared
        .ctx
        .config
        .max_body_bytes()
        .saturating_mul(DECODE_LIMIT_BODIES)
        .max(MIN_DECODE_LIMIT);
    let messaging = MessagingServiceServer::new(messaging::MessagingServer::new(shared))
        .max_decoding_message_size(decode_limit);
    tonic::service::Routes::new(messaging)
}

fn admin_routes(shared: Arc<Shared>) -> tonic::service::Routes {
    tonic::service::Routes::new(AdminServiceServer::new(admin::AdminServer::new(shared)))
}

/// Serves `routes` on `listener` with the proxy's transport settings (keepalive pings; TLS
/// when `tls`) until `shutdown`, then drains.
async fn serve_routes(
    routes: tonic::service::Routes,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<tls::ServerTls>>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let router = tonic::transport::Server::builder()
        // Pings find clients that vanished without closing their connection, which would
        // otherwise keep their Telemetry streams (and tasks) forever.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_routes(routes);
    match tls {
        None => {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
        }
        Some(tls) => {
            let incoming = tls.incoming(listener, shutdown.clone());
            router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
        }
    }
}

/// Serves both services on `listener` until `shutdown` is cancelled, then drains: Telemetry
/// streams are ended, in-flight calls (long polls included) finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: ProxyContext,
    shutdown: CancellationToken,
) -> Result<(), ProxyError> {
    serve_split(listener, None, ctx, shutdown).await
}

/// As [`serve`], with the admin service on `admin` (its own listener, for example one only
/// operators can reach) instead of on the client port when given.
pub async fn serve_split(
    listener: tokio::net::TcpListener,
    admin: Option<tokio::net::TcpListener>,
    ctx: ProxyContext,
    shutdown: CancellationToken,
) -> Result<(), ProxyError> {
    serve_with(listener, admin, None, ctx, shutdown).await
}

/// Adds services of other roles to the routes that carry the admin service (standalone
/// serves KEDA's external scaler there).
pub type OperatorServices =
    Box<dyn FnOnce(tonic::service::Routes) -> tonic::service::Routes + Send>;

/// As [`serve_split`], with `operator` adding services beside the admin service.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    admin: Option<tokio::net::TcpListener>,
    operator: Option<OperatorServices>,
    ctx: ProxyContext,
    shutdown: CancellationToken,
) -> Result<(), ProxyError> {
    let operator = operator.unwrap_or_else(|| Box::new(|routes| routes));
    let tls = ctx.tls.clone();
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().watch(shutdown.clone()));
    }
    let shared = Arc::new(Shared::new(ctx, shutdown.clone()));
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    tracing::info!(listen = %shared.ctx.listen_addr, admin = ?admin_addr, tls = tls.is_some(), "proxy serving");
    let admin_advertised = admin_addr.map(|a| advertised_admin(&shared.store_host, a));
    tokio::spawn(heartbeat(
        shared.clone(),
        admin_advertised,
        shutdown.clone(),
    ));
    tokio::spawn(receipts::keep_fresh(
        shared.receipts.clone(),
        shared.ctx.controller.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(producers::check_back(shared.clone()));
    tokio::spawn(messaging::auto_renew(shared.clone(), shutdown.clone()));
    let (client_routes, operator) = match admin {
        Some(_) => (messaging_routes(shared.clone()), Some(operator)),
        None => (operator(routes(shared.clone())), None),
    };
    let clients = serve_routes(client_routes, listener, tls.clone(), shutdown.clone());
    match (admin, operator) {
        (Some(admin), Some(operator)) => {
            let operators = serve_routes(operator(admin_routes(shared)), admin, tls, shutdown);
            tokio::try_join!(clients, operators)?;
        }
        _ => clients.await?,
    }
    tracing::info!("proxy stopped");
    Ok(())
}

/// Tells the controller this proxy is alive every [`PROXY_HEARTBEAT`] until `shutdown`, so
/// `vela admin cluster status` lists it. A failed heartbeat is logged at debug level: the
/// controller being away never affects client traffic.
async fn heartbeat(shared: Arc<Shared>, admin: Option<String>, shutdown: CancellationToken) {
    let beat = vela_proto::controller_api::ProxyBeat {
        addr: shared.store_host.clone(),
        admin_addr: admin,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let mut tick = tokio::time::interval(PROXY_HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let sent = tokio::select! {
            _ = shutdown.cancelled() => return,
            sent = shared.ctx.controller.proxy_heartbeat(&beat) => sent,
        };
        if let Err(err) = sent {
            tracing::debug!(error = %err, "proxy heartbeat to the controller failed");
        }
    }
}

/// Where operators reach the admin service bound to `admin`: that address, or, bound to every
/// interface, the host clients reach the proxy at (`advertised`, `host:port`) with its port.
fn advertised_admin(advertised: &str, admin: SocketAddr) -> String {
    if !admin.ip().is_unspecified() {
        return admin.to_string();
    }
    match advertised.rsplit_once(':') {
        Some((host, _)) if !host.is_empty() => format!("{host}:{}", admin.port()),
        _ => admin.to_string(),
    }
}

#[cfg(test)]
mod tests;

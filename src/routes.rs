//! Running routes in this process (issue 12, ADR 0025): `vela standalone` runs them for as long
//! as it runs, copying through its own gRPC port; a cluster's controller node runs them while
//! it leads the controller group, reading through the cluster's proxies. The lag of a route
//! whose source is this Vela comes from the store, as `vela admin queues --group` computes it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vela_controller::Controller;
use vela_proto::{ControllerApi, GroupName, StoreApi, TopicName};
use vela_routes::{LagProbe, LocalAddress, LocalSource, RouteManager, RouteMetrics};

use crate::config::VelaConfig;

/// A group's backlog on a topic of this node: the messages it has not acknowledged, counted
/// from where it would start on queues it has not read yet.
pub struct StoreLag {
    pub controller: Arc<dyn ControllerApi>,
    pub store: Arc<dyn StoreApi>,
}

#[async_trait]
impl LagProbe for StoreLag {
    async fn backlog(&self, topic: &TopicName, group: &GroupName) -> Option<u64> {
        let config = self.controller.get_topic(topic).await.ok()??;
        let group = self.controller.get_group(group).await.ok()??;
        let shards = if topic.is_dead_letter() {
            let all = self.controller.list_topics().await.ok()?;
            vela_proto::shards_of_topic(&config, &all)
        } else {
            config.queue_shards.clone()
        };
        vela_proto::store_api::group_backlog(self.store.as_ref(), topic, &group, &shards)
            .await
            .ok()
    }
}

/// This node's gRPC port as its routes reach it: over loopback when it listens on every
/// address.
pub fn own_address(grpc_addr: SocketAddr) -> LocalAddress {
    let ip = match grpc_addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    LocalAddress::Fixed(SocketAddr::new(ip, grpc_addr.port()).to_string())
}

/// How routes reach this Vela at `address`, trusting `tls.cert_file` when `[tls]` is on (the
/// client port's certificate, or its CA).
pub fn local_source(config: &VelaConfig, address: LocalAddress) -> anyhow::Result<LocalSource> {
    let ca_pem = match (&config.tls.enabled, &config.tls.cert_file) {
        (true, Some(cert)) => Some(
            std::fs::read(cert)
                .with_context(|| format!("cannot read tls.cert_file {}", cert.display()))?,
        ),
        _ => None,
    };
    Ok(LocalSource {
        address,
        ca_pem,
        cluster: config.cluster.metrics_name().to_owned(),
    })
}

/// The route metrics of this process: whatever routes its controller runs here now.
pub fn metrics(
    meter: &vela_telemetry::Meter,
    labels: &vela_telemetry::NodeLabels,
    controller: &Arc<Controller>,
) -> RouteMetrics {
    let controller = Arc::downgrade(controller);
    RouteMetrics::register(
        meter,
        labels,
        Arc::new(move || {
            controller
                .upgrade()
                .map(|c| c.local_route_statuses())
                .unwrap_or_default()
        }),
    )
}

/// How often a controller node checks whether it leads (and so runs the routes).
const LEADERSHIP_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the routes on this controller node while it leads the controller group (ADR 0025):
/// a new leader starts them within a second of its election, a deposed one stops them. The
/// routes' groups on the source hold their positions, so the new leader continues where the
/// old one stood.
pub fn run_while_leading(
    controller: Arc<Controller>,
    local: LocalSource,
    lag: Option<Arc<dyn LagProbe>>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut running: Option<(CancellationToken, JoinHandle<()>)> = None;
        let mut tick = tokio::time::interval(LEADERSHIP_CHECK);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            match (controller.group_leads(), running.is_some()) {
                (true, false) => {
                    let manager = RouteManager::new(
                        controller.clone() as Arc<dyn ControllerApi>,
                        local.clone(),
                        lag.clone(),
                    );
                    controller.set_route_runtime(Some(manager.clone()));
                    let stop = CancellationToken::new();
                    running = Some((stop.clone(), manager.spawn(stop)));
                    tracing::info!("this controller node leads: it runs the routes");
                }
                (false, true) => {
                    stop_routes(&controller, running.take()).await;
                    tracing::info!("this controller node no longer leads: its routes stopped");
                }
                _ => {}
            }
        }
        stop_routes(&controller, running.take()).await;
    })
}

async fn stop_routes(
    controller: &Controller,
    running: Option<(CancellationToken, JoinHandle<()>)>,
) {
    controller.set_route_runtime(None);
    if let Some((stop, task)) = running {
        stop.cancel();
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "route manager task failed");
        }
    }
}

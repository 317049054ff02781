//! Running routes in this process (issue 12, ADR 0025): the route manager reads routes from the
//! controller and copies through this node's own gRPC port; the lag of a route whose source is
//! this node comes from the store, as `vela admin queues --group` computes it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use vela_proto::{ControllerApi, GroupName, StoreApi, TopicName};
use vela_routes::{LagProbe, LocalSource};

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
        let queues = self
            .store
            .group_queue_stats(topic, &group, &shards)
            .await
            .ok()?;
        Some(
            queues
                .iter()
                .flat_map(|q| q.groups.iter())
                .filter(|g| g.group == group.name)
                .map(|g| g.backlog)
                .sum(),
        )
    }
}

/// How routes reach this node's gRPC port (`grpc_addr`): over loopback when it listens on every
/// address, trusting its own certificate when it speaks TLS.
pub fn local_source(config: &VelaConfig, grpc_addr: SocketAddr) -> anyhow::Result<LocalSource> {
    let ip = match grpc_addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let ca_pem = match (&config.tls.enabled, &config.tls.cert_file) {
        (true, Some(cert)) => Some(
            std::fs::read(cert)
                .with_context(|| format!("cannot read tls.cert_file {}", cert.display()))?,
        ),
        _ => None,
    };
    Ok(LocalSource {
        address: SocketAddr::new(ip, grpc_addr.port()).to_string(),
        ca_pem,
        cluster: config.cluster.metrics_name().to_owned(),
    })
}

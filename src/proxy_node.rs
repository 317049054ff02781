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
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vela_proto::ControllerApi;
use vela_proto::clock::system_clock;
use vela_proto::receipt_keys::{ConfiguredKeys, MANAGED_KEY_BASE};
use vela_proto::store_client::{ClusterMap, RemoteStore};
use vela_telemetry::NodeType;

use crate::config::VelaConfig;
use crate::serving;
use crate::telemetry::Metrics;

/// A running proxy.
pub struct ProxyNode {
    grpc_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    http_addr: SocketAddr,
    shutdown: CancellationToken,
    proxy_task: JoinHandle<Result<(), vela_proxy::ProxyError>>,
    http_task: JoinHandle<std::io::Result<()>>,
    telemetry: Metrics,
}

/// Reads one receipt key: at least 16 bytes.
fn read_key(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let secret = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(
        secret.len() >= 16,
        "{} holds {} bytes; a receipt key needs at least 16",
        path.display(),
        secret.len()
    );
    Ok(secret)
}

/// The receipt keys a proxy's config names: `cluster.secret_file` as key 0 and the files of
/// `cluster.receipt_keys_dir` by id, signing with `cluster.receipt_signing_key` (default: the
/// highest id). None at all is fine: the proxy then signs with the keys the controller
/// manages (ADR 0030), which it verifies with in any case.
pub(crate) fn read_keyring(config: &VelaConfig) -> anyhow::Result<ConfiguredKeys> {
    let cluster = &config.cluster;
    let mut keys = BTreeMap::new();
    if let Some(path) = &cluster.secret_file {
        keys.insert(0, read_key(path)?);
    }
    if let Some(dir) = &cluster.receipt_keys_dir {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let id: u32 = name
                .parse()
                .ok()
                .filter(|&id| id > 0 && id < MANAGED_KEY_BASE)
                .with_context(|| {
                    format!(
                        "{}: a receipt key file is named by its key id (1 to {}), not {name:?}",
                        dir.display(),
                        MANAGED_KEY_BASE - 1
                    )
                })?;
            keys.insert(id, read_key(&entry.path())?);
        }
    }
    if let Some(signing) = cluster.receipt_signing_key
        && signing < MANAGED_KEY_BASE
        && !keys.contains_key(&signing)
    {
        anyhow::bail!(
            "cluster.receipt_signing_key: the signing key {signing} is not in the keyring (key \
             ids: {:?}; managed keys have ids from {MANAGED_KEY_BASE})",
            keys.keys().collect::<Vec<_>>()
        );
    }
    Ok(ConfiguredKeys {
        keys,
        signing: cluster.receipt_signing_key,
        verify_only: cluster.receipt_keys_verify_only,
    })
}

/// A client of the cluster's store nodes (`cluster.stores`, every shard of `cluster.shards` on
/// each), routing each call to the shard's leader; connections are made on first use.
pub(crate) fn store_client(config: &VelaConfig) -> anyhow::Result<Arc<RemoteStore>> {
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
    store.set_send_linger(config.proxy.send_linger);
    store.set_ack_linger(config.proxy.ack_linger);
    Ok(Arc::new(store))
}

/// How often a store client asks the controller which store nodes there are.
const FOLLOW_STORES_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Keeps `store` knowing every store node `controller` lists, those that joined at runtime
/// included (issue 11), until `shutdown`.
pub(crate) fn follow_store_nodes(
    controller: Arc<dyn ControllerApi>,
    store: Arc<RemoteStore>,
    shutdown: CancellationToken,
) {
    // Detached: it ends with `shutdown`.
    drop(tokio::spawn(async move {
        let mut tick = tokio::time::interval(FOLLOW_STORES_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match controller.store_nodes().await {
                Ok(nodes) => {
                    let addrs = nodes.into_iter().map(|n| (n.id, n.addr)).collect();
                    let changes = store.learn_stores(&addrs);
                    if changes > 0 {
                        tracing::info!(
                            changes,
                            "store nodes changed, as the controller lists them"
                        );
                    }
                }
                Err(err) => tracing::debug!(error = %err, "listing the cluster's store nodes"),
            }
        }
    }));
}

impl ProxyNode {
    /// Connects (lazily) to the cluster's stores and controllers and serves clients.
    pub async fn start(config: VelaConfig) -> anyhow::Result<Self> {
        config.cluster.validate_stores()?;
        config.cluster.validate_controllers()?;
        let receipts = read_keyring(&config)?;
        // The proxy dials stores and controllers: with [cluster.tls], as a client of the
        // cluster's mutual TLS.
        if serving::install_cluster_tls(&config)?.is_none() && config.auth.enabled {
            tracing::warn!(
                "auth is on but the cluster has no [cluster.tls]: store and controller ports \
                 accept anyone who reaches them (ADR 0021); keep them on a private network"
            );
        }
        let tls = config.tls.server_config()?;
        let (grpc, http) = serving::bind_listeners(&config).await?;
        let admin = match config.admin_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen for admin calls on {addr}"))?,
            ),
            None => None,
        };
        let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
        let admin_addr = admin
            .as_ref()
            .map(tokio::net::TcpListener::local_addr)
            .transpose()?;
        let store = store_client(&config)?;
        let controller = serving::controller_client(&config)?;

        let shutdown = CancellationToken::new();
        let telemetry = Metrics::start(&config.telemetry, &shutdown)?;
        let metrics = vela_proxy::ProxyMetrics::new(
            &telemetry.hub.meter("vela-proxy"),
            Metrics::labels(&config, NodeType::Proxy, &grpc_addr.to_string()),
            "cluster",
        );
        let mut proxy_config = config.proxy.clone();
        proxy_config.cluster_mode = "cluster".to_owned();
        let controller = Arc::new(controller) as Arc<dyn ControllerApi>;
        follow_store_nodes(controller.clone(), store.clone(), shutdown.clone());
        let ctx = vela_proxy::ProxyContext {
            config: proxy_config,
            store,
            controller,
            receipts,
            clock: system_clock(),
            metrics,
            tracer: telemetry.tracer("vela-proxy"),
            listen_addr: grpc_addr,
            tls,
        };
        let proxy_task = tokio::spawn(vela_proxy::serve_split(grpc, admin, ctx, shutdown.clone()));
        let http_task = serving::serve_http(http, telemetry.hub.clone(), shutdown.clone());
        Ok(ProxyNode {
            grpc_addr,
            admin_addr,
            http_addr,
            shutdown,
            proxy_task,
            http_task,
            telemetry,
        })
    }

    /// The bound gRPC address (RocketMQ clients, `vela admin`).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The admin service's own address, when `admin_listen` gave it one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
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
        self.telemetry.stopped().await;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vela_proto::receipt::{ReceiptError, ReceiptTicket};

    fn ticket() -> ReceiptTicket {
        ReceiptTicket {
            shard: 0,
            group: vela_proto::GroupName::new("g").unwrap(),
            topic: vela_proto::TopicName::new("t").unwrap(),
            queue_id: 0,
            offset: 1,
            delivery_id: 2,
            visible_at_ms: 3,
        }
    }

    #[test]
    fn keyring_from_the_secret_file_and_a_mounted_key_directory() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("cluster.secret");
        std::fs::write(&secret, b"original-secret-0").unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        std::fs::write(keys.join("1"), b"rotated-secret-01").unwrap();
        std::fs::write(keys.join("..data"), b"kubernetes bookkeeping").unwrap();

        let mut config = VelaConfig::default();
        config.cluster.secret_file = Some(secret.clone());
        let codec = |config: &VelaConfig| {
            read_keyring(config)
                .expect("keys")
                .codec(None)
                .expect("codec")
                .expect("keys given")
        };
        let old = codec(&config);
        config.cluster.receipt_keys_dir = Some(keys.clone());
        config.cluster.receipt_signing_key = Some(0);
        let staged = codec(&config);
        config.cluster.receipt_signing_key = None;
        let rotated = codec(&config);

        assert_eq!(old.decode(&staged.encode(&ticket())), Ok(ticket()));
        assert_eq!(rotated.decode(&old.encode(&ticket())), Ok(ticket()));
        assert_eq!(
            old.decode(&rotated.encode(&ticket())),
            Err(ReceiptError::UnknownKey(1))
        );

        // Mistakes are one readable line.
        config.cluster.receipt_signing_key = Some(5);
        let err = format!("{:#}", read_keyring(&config).unwrap_err());
        assert!(err.contains("signing key 5"), "{err}");
        config.cluster.receipt_signing_key = None;
        std::fs::write(keys.join("two"), b"0123456789abcdefgh").unwrap();
        let err = format!("{:#}", read_keyring(&config).unwrap_err());
        assert!(err.contains("named by its key id"), "{err}");
        std::fs::remove_file(keys.join("two")).unwrap();
        std::fs::write(keys.join("2"), b"short").unwrap();
        let err = format!("{:#}", read_keyring(&config).unwrap_err());
        assert!(err.contains("at least 16"), "{err}");
        std::fs::remove_file(keys.join("2")).unwrap();
        std::fs::write(keys.join("1048576"), b"0123456789abcdefgh").unwrap();
        let err = format!("{:#}", read_keyring(&config).unwrap_err());
        assert!(err.contains("named by its key id"), "{err}");
        // No key files: the managed keys sign (a pinned managed id is accepted).
        let none = read_keyring(&VelaConfig::default()).expect("no keys is fine");
        assert!(none.keys.is_empty() && none.codec(None).expect("ok").is_none());
        let mut pinned = VelaConfig::default();
        pinned.cluster.receipt_signing_key = Some(MANAGED_KEY_BASE + 1);
        assert!(read_keyring(&pinned).is_ok());
    }
}

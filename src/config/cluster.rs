//! `[cluster]`: the nodes of a cluster as every process of it sees them (stores, controllers,
//! shards), the receipt key files of its proxies and the mutual TLS between its processes, with
//! the checks a role runs on them at start.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// The nodes of a cluster, as every process of it sees them.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's name, the `cluster` label of every metric (default `vela`).
    pub name: Option<String>,
    /// The store nodes: each one's id (`store.node_id` on that node) and the address the other
    /// nodes and the proxies reach its gRPC port at (Raft between stores, the store service).
    pub stores: Vec<ClusterNode>,
    /// The cluster's shards. Every process of the cluster lists the same ones; until the
    /// controller places replicas, every store node holds a replica of each.
    pub shards: Vec<u32>,
    /// The controller nodes: each one's id (`controller.node_id` on that node) and the address
    /// of its gRPC port (Raft between controllers, the controller service).
    pub controllers: Vec<ClusterNode>,
    /// A file holding a secret (at least 16 bytes) that signs receipt handles; every proxy of
    /// the cluster reads the same one, so any proxy acks what another delivered. It is key 0 of
    /// the receipt keyring. Without key files (the default), proxies sign with the keys the
    /// controllers manage (ADR 0030), which they verify with in any case.
    pub secret_file: Option<PathBuf>,
    /// A directory of further receipt keys, one file per key named by its id (1, 2, …; at least
    /// 16 bytes each): what a Kubernetes Secret mounted as a volume looks like. Names starting
    /// with `.` are skipped (Kubernetes' own entries).
    pub receipt_keys_dir: Option<PathBuf>,
    /// The key id new receipt handles are signed with (default: the highest id in the keyring).
    /// Proxies verify with every key they have, so a key is rotated in without a failed ack:
    /// add it to every proxy, then make it the signing key, then remove the old one after the
    /// longest invisibility (12 h).
    pub receipt_signing_key: Option<u32>,
    /// The key files only verify (handles signed before a move to managed keys); new handles
    /// are signed with the controllers' managed keys.
    pub receipt_keys_verify_only: bool,
    /// Mutual TLS between the cluster's processes (ADR 0021): Raft, store and controller RPCs.
    pub tls: Option<ClusterTlsConfig>,
}

/// `[cluster.tls]`: this node's certificate and key (PEM; both its server and its client
/// identity) and the cluster CA every node's certificate is signed by. Node certificates carry
/// the DNS name `server_name` (default `vela-cluster`) in their subject alternative names.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterTlsConfig {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub server_name: Option<String>,
}

impl ClusterConfig {
    /// The `cluster` label of this process's metrics.
    pub fn metrics_name(&self) -> &str {
        self.name.as_deref().unwrap_or("vela")
    }

    /// The node's cluster TLS material, files read now (`None`: no `[cluster.tls]`).
    pub fn load_tls(&self) -> anyhow::Result<Option<vela_proto::cluster_tls::ClusterTls>> {
        use anyhow::Context;
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let read = |key: &str, path: &PathBuf| {
            anyhow::ensure!(!path.as_os_str().is_empty(), "[cluster.tls] needs {key}");
            std::fs::read(path)
                .with_context(|| format!("cannot read cluster.tls.{key} {}", path.display()))
        };
        Ok(Some(vela_proto::cluster_tls::ClusterTls {
            ca: read("ca_file", &tls.ca_file)?,
            cert: read("cert_file", &tls.cert_file)?,
            key: read("key_file", &tls.key_file)?,
            server_name: tls
                .server_name
                .clone()
                .unwrap_or_else(|| vela_proto::cluster_tls::DEFAULT_SERVER_NAME.to_owned()),
        }))
    }
}

/// At least one node, ids unique and non-zero, addresses `host:port`.
fn validate_nodes(key: &str, nodes: &[ClusterNode]) -> Result<(), ConfigError> {
    if nodes.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "{key} is empty: list every node ([[{key}]] id, addr)"
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for node in nodes {
        if node.id == 0 {
            return Err(ConfigError::Invalid(format!(
                "{key}: node id 0 is reserved; number nodes from 1"
            )));
        }
        if !seen.insert(node.id) {
            return Err(ConfigError::Invalid(format!(
                "{key} lists node {} twice",
                node.id
            )));
        }
        let port = node.addr.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
        if !matches!(port, Some(Ok(p)) if p > 0) {
            return Err(ConfigError::Invalid(format!(
                "{key}: node {} has address {:?}, not host:port",
                node.id, node.addr
            )));
        }
    }
    Ok(())
}

/// One node of a cluster.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterNode {
    pub id: u64,
    /// `host:port` as the other processes reach it.
    pub addr: String,
}

impl ClusterConfig {
    /// Checks the controller list like the store list.
    pub fn validate_controllers(&self) -> Result<(), ConfigError> {
        validate_nodes("cluster.controllers", &self.controllers)?;
        self.validate_disjoint()
    }

    /// A controller and a store never share an address: a request meant for one role must not
    /// reach the other's Raft groups.
    fn validate_disjoint(&self) -> Result<(), ConfigError> {
        if let Some(shared) = self
            .controllers
            .iter()
            .find(|c| self.stores.iter().any(|s| s.addr == c.addr))
        {
            return Err(ConfigError::Invalid(format!(
                "{} is both a controller's and a store's address: each process has its own port",
                shared.addr
            )));
        }
        Ok(())
    }

    /// Checks the store list (at least one, ids unique and non-zero, addresses `host:port`)
    /// and the shard list (at least one, no repeats).
    pub fn validate_stores(&self) -> Result<(), ConfigError> {
        if self.shards.is_empty() {
            return Err(ConfigError::Invalid(
                "cluster.shards is empty: list the cluster's shards, e.g. [0, 1, 2]".into(),
            ));
        }
        let distinct: std::collections::BTreeSet<_> = self.shards.iter().collect();
        if distinct.len() != self.shards.len() {
            return Err(ConfigError::Invalid(format!(
                "cluster.shards lists a shard twice: {:?}",
                self.shards
            )));
        }
        validate_nodes("cluster.stores", &self.stores)?;
        self.validate_disjoint()
    }
}

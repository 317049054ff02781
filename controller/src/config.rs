//! The controller's configuration, a section of the `vela` binary's config file.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use vela_proto::ShardId;

/// How one controller node runs.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerConfig {
    /// The controller's own directory: the Raft log goes in `<data_dir>/log`, the metadata
    /// snapshot in `<data_dir>/metadata.snapshot`. The binary derives it as
    /// `<top-level data_dir>/controller`.
    pub data_dir: PathBuf,
    /// This node's id in the controller's Raft group.
    pub node_id: u64,
    /// The store shards new queues are placed on. Changing it affects topics created afterwards
    /// only; queues already placed stay where they are.
    pub shards: Vec<ShardId>,
    /// Cluster only: the store nodes (id → address of their gRPC port), from the cluster's
    /// `[[cluster.stores]]` (not a key of this section). Shards placed for a replication factor
    /// go on these (ADR 0013); empty in standalone.
    #[serde(skip)]
    pub stores: std::collections::BTreeMap<u64, String>,
    /// Cluster only: how often the controller leader looks at the store nodes and moves shard
    /// leaderships so every node leads about as many shards as the others. `0s` turns
    /// balancing off.
    #[serde(with = "humantime_serde")]
    pub leader_balance_interval: Duration,
    /// The key file that seals user passwords in the metadata (ADR 0019), from the binary's
    /// `auth.metadata_key_file` (not a key of this section). `None`: `<data_dir>/metadata.key`,
    /// created on first open. Every controller of a cluster needs the same key.
    #[serde(skip)]
    pub metadata_key_file: Option<PathBuf>,
    /// Cluster on Kubernetes: the store StatefulSet `vela admin store scale` drives (in the
    /// controller's own namespace). The Helm chart sets it; unset, stores are scaled by hand.
    pub store_statefulset: Option<String>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./vela-data/controller"),
            node_id: 1,
            shards: vec![0],
            stores: std::collections::BTreeMap::new(),
            leader_balance_interval: Duration::from_secs(10),
            metadata_key_file: None,
            store_statefulset: None,
        }
    }
}

impl ControllerConfig {
    /// The key file that seals secrets in the metadata.
    pub(crate) fn metadata_key_path(&self) -> PathBuf {
        self.metadata_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("metadata.key"))
    }

    /// The shard set sorted and deduplicated, or `None` when it is empty.
    pub(crate) fn normalized_shards(&self) -> Option<Vec<ShardId>> {
        let mut shards = self.shards.clone();
        shards.sort_unstable();
        shards.dedup();
        (!shards.is_empty()).then_some(shards)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let parsed: ControllerConfig = serde_json::from_str("{}").expect("empty config");
        assert_eq!(parsed, ControllerConfig::default());
        assert_eq!(parsed.shards, vec![0]);
        let parsed: ControllerConfig =
            serde_json::from_str(r#"{"node_id": 3, "shards": [2, 0, 2]}"#).expect("valid config");
        assert_eq!(parsed.normalized_shards(), Some(vec![0, 2]));
        assert!(serde_json::from_str::<ControllerConfig>(r#"{"shard": [1]}"#).is_err());
        let empty = ControllerConfig {
            shards: vec![],
            ..ControllerConfig::default()
        };
        assert_eq!(empty.normalized_shards(), None);
    }
}

//! What the store's metrics read of the node on a collection: consumer progress and Raft
//! state of its shards, and its disk usage (`crate::metrics`).

use std::path::Path;

use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;

use vela_telemetry::{Meter, NodeLabels};

use super::Store;
use crate::metrics::RaftReport;
use crate::state::ConsumerProgress;

impl Store {
    /// Makes the store's metric instruments on `meter` (once; `docs/metrics.md` lists them).
    pub fn register_metrics(self: &Arc<Self>, meter: &Meter, labels: &NodeLabels) {
        self.metrics.register(self, meter, labels);
    }

    /// Every shard on this node.
    pub(crate) fn shard_handles(&self) -> Vec<Arc<crate::shard::Shard>> {
        self.shards().values().map(|l| l.shard.clone()).collect()
    }

    /// The time the store stamps commands with.
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Every group's progress on the queues of the shards this node leads (a follower's copy
    /// of the same state would count it twice). The positions are read under the state lock in
    /// one go; the store times, which need index lookups, in chunks, so a node with many
    /// groups never holds apply back for long.
    pub(crate) fn consumer_progress(&self) -> Vec<ConsumerProgress> {
        const LOOKUPS_PER_LOCK: usize = 256;
        let node = self.config.node_id;
        let mut all = Vec::new();
        for local in self.shards().values() {
            if local.shard.raft.metrics().borrow_watched().current_leader != Some(node) {
                continue;
            }
            let applied = &local.shard.shared.applied;
            let mut progress = applied.read().state.consumer_progress();
            for chunk in progress.chunks_mut(LOOKUPS_PER_LOCK) {
                let state = applied.read();
                for p in chunk.iter_mut().filter(|p| p.lag > 0) {
                    state.state.fill_store_times(p);
                }
            }
            all.extend(progress);
        }
        all
    }

    /// The Raft state of each shard on this node.
    pub(crate) fn raft_reports(&self) -> Vec<RaftReport> {
        let node = self.config.node_id;
        self.shards()
            .values()
            .map(|l| {
                let m = l.shard.raft.metrics().borrow_watched().clone();
                RaftReport {
                    shard: l.shard.id,
                    term: m.current_term,
                    leading: m.current_leader == Some(node),
                    committed: m.local_committed.map_or(0, |c| c.index),
                    applied: m.last_applied.map_or(0, |a| a.index),
                }
            })
            .collect()
    }

    /// Bytes under the store's data directory, or `None` when it cannot be read (a store on
    /// a simulated file system has none on disk).
    pub(crate) fn disk_usage(&self) -> Option<u64> {
        fn walk(dir: &Path, depth: usize) -> std::io::Result<u64> {
            let mut total = 0;
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                if meta.is_dir() && depth < 8 {
                    total += walk(&entry.path(), depth + 1).unwrap_or(0);
                } else if meta.is_file() {
                    total += meta.len();
                }
            }
            Ok(total)
        }
        walk(&self.config.data_dir, 0).ok()
    }
}

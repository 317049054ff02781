//! Why a store could not open or shut down cleanly: what [`Store::open`] and
//! [`Store::shutdown`] return, raised where each shard opens and closes.
//!
//! [`Store::open`]: crate::Store::open
//! [`Store::shutdown`]: crate::Store::shutdown

use vela_proto::domain::ShardId;
use vela_raft::LogError;
use vela_raft::single_node::StartError;

/// Why a store could not open.
#[derive(Debug, thiserror::Error)]
pub enum StoreOpenError {
    #[error("invalid store config: {0}")]
    Config(String),
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    #[error("raising the apply version of shard {shard} failed: {reason}")]
    ApplyVersion { shard: ShardId, reason: String },
    #[error("opening the log of shard {shard} failed: {source}")]
    Log {
        shard: ShardId,
        #[source]
        source: LogError,
    },
    #[error("opening the queue index of shard {shard} failed: {source}")]
    Index {
        shard: ShardId,
        #[source]
        source: crate::index_db::IndexError,
    },
    #[error(
        "shard {shard}'s log was being replaced by a copy from another member when this node \
         stopped ({dir}/RESTORING): the replica is incomplete and is not opened; a configured \
         shard cannot be replaced by the controller, so restore this node's copy from a backup \
         or rebuild the shard's replicas"
    )]
    Restoring { shard: ShardId, dir: String },
    #[error("starting raft for shard {shard} failed: {source}")]
    Raft {
        shard: ShardId,
        #[source]
        source: StartError,
    },
}

impl StoreOpenError {
    /// The replica's files fail their checks (a damaged or truncated segment, a log that ends
    /// below what was committed or below its snapshot): what a replica with peers is repaired
    /// from (see `Store::open_shard`), not what a restart fixes.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            StoreOpenError::Log {
                source: LogError::Corrupt { .. }
                    | LogError::Gap { .. }
                    | LogError::CommittedLost { .. }
                    | LogError::BehindSnapshot { .. }
                    | LogError::SnapshotGap { .. },
                ..
            }
        )
    }
}

/// Why a store did not shut down cleanly.
#[derive(Debug, thiserror::Error)]
pub enum StoreShutdownError {
    #[error("stopping raft of shard {shard} failed: {reason}")]
    Raft { shard: ShardId, reason: String },
    #[error("closing the log of shard {shard} failed: {source}")]
    Log {
        shard: ShardId,
        #[source]
        source: LogError,
    },
}

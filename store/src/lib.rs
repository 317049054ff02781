//! Vela's data plane. A shard is an openraft group whose log is the commit log: a send is one
//! Raft entry carrying the messages; queue indexes, consumer state, delay timers and
//! transaction half messages are state applied from that log (ADR 0005).
//!
//! - [`Store`]: a node's shards behind [`vela_proto::StoreApi`]; [`StoreConfig`] configures it.
//! - [`service`]: the store node's gRPC service (`vela.store.v1`), for a cluster's proxies.
//! - [`command`]: the log's command format (append-only variants).
//! - [`state`]: the pure, deterministic shard state machine.

pub mod command;
pub mod config;
mod copy_wire;
mod error;
pub mod format;
pub mod index_db;
mod metrics;
mod node;
pub mod placed;
pub mod service;
mod shard;
pub mod state;
mod tier_metrics;

pub use config::{FlushSetting, StoreConfig};
pub use copy_wire::GrpcReplicaSource;
pub use error::{StoreOpenError, StoreShutdownError};
pub use node::Store;
pub use node::tier::TierSettings;
pub use node::upgrade::{GrpcPeerBuilds, PeerBuilds};
pub use shard::catch_up::{CopyRequest, ReplicaChunk, ReplicaSource};
pub use shard::tiering::TierProgress;
pub use shard::{ShardRaft, ShardStateMachine, ShardTypes};

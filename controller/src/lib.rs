//! Vela's metadata plane: topics, consumer groups and the placement of queues onto store shards,
//! kept as an openraft state machine (a single voter in standalone; the cluster adds voters).
//!
//! - [`Controller`]: the entry point; implements [`vela_proto::ControllerApi`].
//! - [`metadata`]: the pure state and its deterministic `apply`.
//! - [`balance`] / [`balancer`]: which shard leaderships to move so leaders are spread, and
//!   the task that moves them while this node leads the controller group.
//! - [`placement`]: which shard each new queue goes to.
//! - [`service`]: the controller node's gRPC service (`vela.controller.v1`), for a cluster.
//! - [`scaler`]: KEDA's external-scaler service (consumer backlog for autoscaling).
//! - [`scaling`] / [`kubernetes`]: `store scale N`, the store StatefulSet driven through the
//!   Kubernetes API; [`scaled_away`]: store nodes a plain `kubectl scale` removed, reported and
//!   their replicas re-created elsewhere.
//! - [`validation`]: checks and defaults applied before a command is proposed.
//! - [`command`]: the Raft log's commands and their outcomes.
//! - `raft` (private): everything that names an openraft type.

mod auth;
pub mod balance;
pub mod balancer;
pub mod command;
mod config;
mod controller;
pub mod kubernetes;
pub mod metadata;
mod metrics;
pub mod placement;
mod raft;
mod receipt_keys;
pub mod reconciler;
pub mod retention_sync;
mod routes;
pub mod scaled_away;
pub mod scaler;
pub mod scaling;
pub mod secrets;
pub mod service;
mod shard_set;
mod stores;
mod tier_credentials;
pub mod validation;

pub use command::{Applied, ControllerCommand, ControllerResponse, Rejected};
pub use config::ControllerConfig;
pub use controller::{Controller, ControllerOpenError, ControllerShutdownError};
pub use metadata::Metadata;
pub use metrics::ControllerMetrics;
pub use raft::{RaftStartError, RaftStopError};

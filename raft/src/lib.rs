//! vela-raft: the segmented, checksummed Raft log storage that the store (where the Raft log is the
//! commit log) and the controller (metadata) run openraft on, plus the single-node plumbing they
//! share. The on-disk format is specified in `docs/adr/0001-segment-format.md`.
//!
//! - [`SegmentLogStore`]: openraft's `RaftLogStorage`, with group commit and recovery at open.
//! - [`LogHandle`]: cheap random reads of the log by index, for readers outside openraft.
//! - [`single_node`]: start openraft with one voter and no peers.
//! - [`group`]: start one member of a group with peers.
//! - [`grpc`]: Raft between nodes over gRPC (`vela.raft.v1`).
//! - [`network`]: in-process Raft networking through a fault seam (partitions, delay, loss).
//! - [`status`]: a member's report about itself (role, term, leader, replication progress).
//! - [`sealed`]: reading a sealed segment held elsewhere (object storage) by byte ranges.
//! - [`snapshot_file`]: atomically replaced, checksummed small files.
//! - [`generations`]: state machine snapshots kept as generations with fallback.
//! - [`vfs`]: the storage seam every file goes through, and its simulated power-loss disk.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod codec;
pub mod entry;
mod error;
pub mod generations;
pub mod group;
pub mod grpc;
mod install_gate;
pub mod log_metrics;
pub mod network;
mod pipeline;
pub mod sealed;
mod segment;
pub mod single_node;
pub mod snapshot_file;
pub mod status;
mod store;
pub mod vfs;
mod writer;

mod cache;
#[cfg(test)]
mod test_support;

pub use error::LogError;
pub use store::{
    DEFAULT_PREALLOCATE_BYTES, FlushMode, LogHandle, LogStoreConfig, MAX_SEGMENT_SIZE, ReadPin,
    ScrubReport, SegmentInfo, SegmentLogStore,
};
pub use writer::LogWriter;

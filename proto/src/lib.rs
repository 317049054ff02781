//! Vela's wire contract and the seams its roles meet at.
//!
//! - [`pb`]: generated `apache.rocketmq.v2` (wire-identical with the official clients) and
//!   `vela.admin.v1`.
//! - [`domain`]: validated domain types; protobuf structs are converted into these once, at the
//!   edge, so nothing inside the system re-validates wire input.
//! - [`store_api`] / [`controller_api`]: the traits the proxy holds (`Arc<dyn StoreApi>`,
//!   `Arc<dyn ControllerApi>`); standalone hands it the in-process roles, a cluster the gRPC
//!   clients.
//! - [`store_wire`] / [`store_client`]: `StoreApi` over gRPC (`vela.store.v1`): conversions and
//!   the cluster client that routes each call to the shard's leader.
//! - [`controller_wire`] / [`controller_client`]: `ControllerApi` over gRPC
//!   (`vela.controller.v1`) and the client that finds the controller group's leader.
//! - [`cluster_status`]: what Raft members report and the cluster view built from it.
//! - [`receipt`]: self-describing, tamper-evident receipt handles, so any proxy can ack.

pub mod auth;
pub mod auth_wire;
pub mod client_id;
pub mod clock;
pub mod cluster_status;
pub mod cluster_tls;
pub mod controller_api;
pub mod controller_client;
pub mod controller_wire;
pub mod domain;
pub mod lookup;
pub mod receipt;
pub mod receipt_keys;
pub mod retry;
pub mod route;
pub mod route_wire;
pub mod secret_file;
pub mod sql;
pub mod store_api;
pub mod store_client;
pub mod store_wire;
pub mod tier_credentials;

/// Generated protobuf code.
pub mod pb {
    /// `apache.rocketmq.v2`: the RocketMQ 5 gRPC protocol.
    #[allow(clippy::all, missing_docs)]
    pub mod rocketmq {
        tonic::include_proto!("apache.rocketmq.v2");
    }
    /// `vela.admin.v1`: Vela's admin service.
    #[allow(clippy::all, missing_docs)]
    pub mod admin {
        tonic::include_proto!("vela.admin.v1");
    }
    /// `vela.status.v1`: what a Raft member reports about itself (store and controller).
    #[allow(clippy::all, missing_docs)]
    pub mod status {
        tonic::include_proto!("vela.status.v1");
    }
    /// `vela.auth.v1`: users and ACLs, shared by the admin and controller services.
    #[allow(clippy::all, missing_docs)]
    pub mod auth {
        tonic::include_proto!("vela.auth.v1");
    }
    /// `vela.route.v1`: routes (issue 12), shared by the admin and controller services.
    #[allow(clippy::all, missing_docs)]
    pub mod route {
        tonic::include_proto!("vela.route.v1");
    }
    /// `vela.group.v1`: a consumer group's retry back-off, shared by the admin and controller
    /// services.
    #[allow(clippy::all, missing_docs)]
    pub mod group {
        tonic::include_proto!("vela.group.v1");
    }
    /// `vela.store.v1`: the store's contract between cluster nodes.
    #[allow(clippy::all, missing_docs)]
    pub mod store {
        tonic::include_proto!("vela.store.v1");
    }
    /// `vela.controller.v1`: the controller's contract between cluster nodes.
    #[allow(clippy::all, missing_docs)]
    pub mod controller {
        tonic::include_proto!("vela.controller.v1");
    }
    /// `externalscaler`: KEDA's external-scaler interface, which the controller serves so KEDA
    /// scales consumers on a group's backlog.
    #[allow(clippy::all, missing_docs)]
    pub mod externalscaler {
        tonic::include_proto!("externalscaler");
    }
}

pub use client_id::ClientId;
pub use clock::{Clock, SystemClock};
pub use controller_api::{
    ControllerApi, ControllerError, DeletionKind, GroupDrop, PendingDeletion, TopicDrop,
};
pub use domain::*;
pub use store_api::{GroupDropId, OpenMode, StoreApi, StoreError};

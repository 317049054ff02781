//! TEST-ONLY in-memory stand-ins for the store and the controller, just faithful enough for
//! the proxy's service tests: an append-only log per queue, POP with per-delivery ids
//! (a newer delivery or a changed invisibility kills older handles), long polling on a
//! notification, and metadata in maps. The real store and controller are tested in their
//! own crates and end to end by the root package.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;
use vela_proto::auth::{
    Acl, AuthData, PolicyEntry, ResourcePattern, Subject, User, UserInfo, UserName, UserUpdate,
};
use vela_proto::cluster_status::{
    ControllerNodeReport, MemberRole, MemberStatus, NodeReport, ShardMember, StoreNodeReport,
};
use vela_proto::controller_api::ProxySeen;
use vela_proto::receipt::ReceiptTicket;
use vela_proto::store_api::{
    AppendOutcome, AppendRequest, Delivery, PopRequest, QueueSelector, TransactionCheck,
    TransactionCheckRequest, TransactionResolution,
};
use vela_proto::{
    Clock, ControllerApi, ControllerError, GroupConfig, GroupName, GroupSpec, MessageKind,
    MessageRecord, QueueStats, ShardId, StoreApi, StoreError, TopicConfig, TopicName, TopicSpec,
};

mod controller;
mod store;

pub use controller::FakeController;
pub use store::FakeStore;

/// A single voter's report: node 1 leads in term 1.
fn single_leader() -> MemberStatus {
    MemberStatus {
        role: MemberRole::Leader,
        term: 1,
        leader: Some(1),
        voters: vec![1],
        last_log_index: Some(3),
        applied_index: Some(3),
        matched: BTreeMap::from([(1, Some(3))]),
        learners: Vec::new(),
        membership_settled: true,
    }
}

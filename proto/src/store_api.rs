//! The store's contract: what the proxy asks of the data plane. Standalone hands the proxy the
//! in-process store; a cluster hands it a gRPC client implementing the same trait.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::client_id::ClientId;
use crate::cluster_status::StoreNodeReport;
use crate::domain::{
    GroupConfig, GroupName, GroupStart, MessageFilter, MessageRecord, OffsetTarget, QueueStats,
    ShardId, TopicName,
};
use crate::lookup::{FoundMessage, LookupRequest};
use crate::receipt::ReceiptTicket;

/// Which deletion of a consumer group a drop is (`ControllerApi::delete_group`): its id (0: an
/// older controller's, not fenced) and the floor at or below which every group drop was
/// finished when the controller answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDropId {
    pub id: u64,
    pub floor: u64,
}

/// Appends messages to one queue.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub topic: TopicName,
    pub queue_id: u32,
    pub shard: ShardId,
    pub messages: Vec<MessageRecord>,
    /// The sending client. With it the store answers a message it already appended from this
    /// client (same message id, within its deduplication window) with the first outcome
    /// instead of appending it again, so a retry after an ambiguous failure is safe.
    pub client_id: Option<ClientId>,
}

/// Where one appended message landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    /// Queue offset, once the message is in its queue. `None` for a delay message that is not
    /// due yet and for a transaction half message (they get an offset when released).
    pub offset: Option<u64>,
    /// For transaction half messages: the id to pass to [`StoreApi::end_transaction`].
    pub transaction_id: Option<String>,
    /// For a delay message parked until its delivery time: the handle to pass to
    /// [`StoreApi::recall`] (it names the shard first).
    pub recall_handle: Option<String>,
}

/// Which queues a receive may take messages from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueSelector {
    /// Every queue of the topic held by this store (RocketMQ's queue id -1), starting where
    /// the group's last such receive left off, so queues are served fairly.
    All,
    /// Every queue, the highest queue id first: a priority topic, whose queue ids are its
    /// priorities (a message's priority names its queue).
    HighestFirst,
    /// Exactly one queue.
    One(u32),
}

/// A POP-style receive: take up to `max_messages` visible messages and make them invisible
/// for `invisible`.
#[derive(Debug, Clone)]
pub struct PopRequest {
    pub group: GroupName,
    pub topic: TopicName,
    pub queues: QueueSelector,
    /// 1..=32.
    pub max_messages: u32,
    /// 10 s..=12 h (validated by the caller).
    pub invisible: Duration,
    pub filter: MessageFilter,
    /// FIFO group: at most one in-flight message per message group, delivered in order.
    pub fifo: bool,
    /// Deliveries after which an expired message moves to `%DLQ%<group>` instead.
    pub max_attempts: u32,
    /// Long polling: when nothing is visible now, wait up to this long for something to be.
    pub wait: Duration,
    /// When the group was created (its metadata's `created_at_ms`): on a queue where it has
    /// no position yet it starts with the first message stored since, unless the queue is
    /// young (see `store.new_group_start_window`). `None`: at the queue's first message.
    pub group_created_ms: Option<i64>,
    /// Where the group starts on such a queue (its metadata's `start`).
    pub group_start: GroupStart,
    /// The shards holding the topic's queues (its metadata's `queue_shards`); empty means every
    /// shard the store knows.
    pub shards: Vec<ShardId>,
    /// The receiving client: the shard leader records it in the messages' track (ADR 0028).
    pub client_id: Option<ClientId>,
}

/// A pull (PullMessage): the messages of one queue from an offset, read without changing
/// any consumer state (the client keeps its own offset, and may commit it with UpdateOffset).
#[derive(Debug, Clone)]
pub struct PullRequest {
    pub topic: TopicName,
    pub queue_id: u32,
    /// The shard that holds the queue (its metadata's `queue_shards`).
    pub shard: ShardId,
    /// Where to read from; below the queue's retained range reads from its first message.
    pub offset: u64,
    /// 1..=[`crate::domain::MAX_RECEIVE_BATCH`].
    pub max_messages: u32,
    pub filter: MessageFilter,
    /// Long polling: when nothing is there from `offset`, wait up to this long for a message.
    pub wait: Duration,
}

/// What a pull found.
#[derive(Debug, Clone, Default)]
pub struct Pulled {
    pub messages: Vec<PulledMessage>,
    /// Where the next pull goes on (past everything looked at, matching or not).
    pub next_offset: u64,
    /// The queue's retained range when it was read: `[min_offset, max_offset)`.
    pub min_offset: u64,
    pub max_offset: u64,
}

/// One pulled message.
#[derive(Debug, Clone)]
pub struct PulledMessage {
    pub offset: u64,
    /// When the message entered its queue (Unix ms).
    pub store_timestamp_ms: i64,
    pub message: MessageRecord,
}

/// One delivered message.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The topic the message was delivered from (the DLQ topic for dead letters).
    pub topic: TopicName,
    pub queue_id: u32,
    pub offset: u64,
    /// When the message entered its queue (Unix ms).
    pub store_timestamp_ms: i64,
    /// 1 on first delivery.
    pub attempt: u32,
    pub invisible: Duration,
    /// Identifies this delivery; the proxy signs it into the receipt handle.
    pub ticket: ReceiptTicket,
    pub message: MessageRecord,
    /// For a committed transaction: the transaction id its send answered.
    pub transaction_id: Option<String>,
}

/// How a transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransactionResolution {
    Commit,
    Rollback,
}

/// Asks for the transaction half messages due to be checked back with their producers.
#[derive(Debug, Clone)]
pub struct TransactionCheckRequest {
    /// Topics the asking proxy has a live producer for: only their half messages are handed
    /// out (each due check goes to one asker).
    pub topics: Vec<TopicName>,
    /// The shards to look at (the topics' `queue_shards`); empty means every shard the store
    /// knows.
    pub shards: Vec<ShardId>,
    /// Most checks to hand out.
    pub max: u32,
}

/// A half message whose check-back is due: the proxy sends it to a producer of its topic as
/// a RecoverOrphanedTransactionCommand. Each is handed out once per check.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionCheck {
    pub topic: TopicName,
    pub transaction_id: String,
    pub message: MessageRecord,
    /// When the half message was stored (Unix ms).
    pub store_timestamp_ms: i64,
    /// Which check this is: 1 for the first.
    pub check: u32,
}

/// Failures the proxy branches on. The proxy maps each to a protocol code in one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The handle names no current delivery: acked already, redelivered since, or its
    /// invisibility was changed (which issues a new handle).
    #[error("receipt handle is stale: {0}")]
    StaleReceipt(String),
    #[error("transaction {0} not found (committed, rolled back or unknown)")]
    TransactionNotFound(String),
    /// A recall found no parked delay message under its handle: it was delivered (its time
    /// came), recalled already, or never held here.
    #[error("no delay message waiting under recall handle {0} (delivered, recalled or unknown)")]
    MessageNotFound(String),
    #[error("queue {topic}/{queue_id} not found on this store")]
    QueueNotFound { topic: TopicName, queue_id: u32 },
    #[error("shard {shard} is not led by this node (leader hint: {leader:?})")]
    NotLeader { shard: ShardId, leader: Option<u64> },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("store internal error: {0}")]
    Internal(String),
    /// This node has no data of a shard that is not new: it lost its disk, or was down when the
    /// shard was created. It must be replaced (removed from the members, then added back as an
    /// empty learner), never restarted empty (ADR 0014).
    #[error("replica lost: {0}")]
    ReplicaLost(String),
}

/// How a store node opens its replica of a shard (ADR 0013, 0014).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// A new shard: create the group on an empty log.
    Create,
    /// A member that should hold the shard: resume from its log; refused without one
    /// ([`StoreError::ReplicaLost`]).
    Resume,
    /// A node that is not yet a member: open an empty replica that waits for the group's leader
    /// to add it as a learner.
    Join,
}

impl StoreError {
    /// Whether retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::NotLeader { .. } | StoreError::Unavailable(_)
        )
    }
}

/// The data plane.
/// The shard a transaction id or a recall handle names: both start with it (`<shard>-...`),
/// so any proxy routes them to the shard's leader.
pub fn leading_shard(id: &str) -> Option<ShardId> {
    id.split('-').next().and_then(|s| s.parse().ok())
}

/// A group's backlog on a topic: the messages it has not acknowledged (ready and in flight),
/// summed over the topic's queues on `shards`, counted from where the group would start on
/// queues it has not read yet ([`StoreApi::group_queue_stats`]). What KEDA's scaler scales
/// on and a route's lag reports.
pub async fn group_backlog(
    store: &dyn StoreApi,
    topic: &TopicName,
    group: &GroupConfig,
    shards: &[ShardId],
) -> Result<u64, StoreError> {
    let queues = store.group_queue_stats(topic, group, shards).await?;
    Ok(queues
        .iter()
        .flat_map(|q| q.groups.iter())
        .filter(|g| g.group == group.name)
        .map(|g| g.backlog)
        .sum())
}

#[async_trait]
pub trait StoreApi: Send + Sync + 'static {
    /// Appends `messages` to one queue; resolves once they are durable (per the store's flush
    /// mode), one outcome per message, in order.
    async fn append(&self, req: AppendRequest) -> Result<Vec<AppendOutcome>, StoreError>;

    /// Several appends at once, each answered on its own, in order. A store proposes those of
    /// one shard together, so they share Raft entries; by default they run as concurrent
    /// [`StoreApi::append`]s.
    async fn append_many(
        &self,
        reqs: Vec<AppendRequest>,
    ) -> Vec<Result<Vec<AppendOutcome>, StoreError>> {
        futures::future::join_all(reqs.into_iter().map(|req| self.append(req))).await
    }

    /// POP receive; may wait up to `req.wait` when nothing is visible. An empty result means
    /// nothing became visible in time.
    async fn pop(&self, req: PopRequest) -> Result<Vec<Delivery>, StoreError>;

    /// Acknowledges one delivery.
    async fn ack(&self, ticket: &ReceiptTicket) -> Result<(), StoreError>;

    /// Acknowledges several deliveries, each answered on its own, in order; by default as
    /// concurrent [`StoreApi::ack`]s (a store queues them together, so they share Raft
    /// entries).
    async fn ack_many(&self, tickets: Vec<ReceiptTicket>) -> Vec<Result<(), StoreError>> {
        futures::future::join_all(tickets.iter().map(|t| self.ack(t))).await
    }

    /// Makes a delivered message invisible for `invisible` from now. The old ticket dies; the
    /// returned one replaces it.
    async fn change_invisible(
        &self,
        ticket: &ReceiptTicket,
        invisible: Duration,
    ) -> Result<ReceiptTicket, StoreError>;

    /// Makes a delivered message invisible for `invisible` from now, keeping its ticket: the
    /// handle its consumer holds stays valid (the returned ticket differs only in
    /// `visible_at_ms`). What a proxy does for a push consumer that asked for `auto_renew`.
    async fn renew_invisible(
        &self,
        ticket: &ReceiptTicket,
        invisible: Duration,
    ) -> Result<ReceiptTicket, StoreError>;

    /// Moves a delivered message to `%DLQ%<group>` now.
    async fn dead_letter(&self, ticket: &ReceiptTicket) -> Result<(), StoreError>;

    /// Commits (releases into its queue) or rolls back a transaction half message.
    async fn end_transaction(
        &self,
        topic: &TopicName,
        transaction_id: &str,
        resolution: TransactionResolution,
    ) -> Result<(), StoreError>;

    /// Reads messages of one queue from an offset (PullMessage) on the shard's leader, long
    /// polling when there is nothing yet. `Invalid` when `offset` is past the queue's end.
    async fn pull(&self, req: PullRequest) -> Result<Pulled, StoreError>;

    /// Messages whose id or key is the one asked for, with where they are and their track
    /// (ADR 0028), from every shard `req.shards` selects (answered by each shard's leader),
    /// oldest first, at most `req.limit`.
    async fn lookup(&self, req: &LookupRequest) -> Result<Vec<FoundMessage>, StoreError>;

    /// Withdraws a delay message before its delivery time, by the handle its append answered
    /// ([`AppendOutcome::recall_handle`]): it is never delivered. `MessageNotFound` once it
    /// was released into its queue, recalled, or when `topic` is not its topic.
    async fn recall(&self, topic: &TopicName, handle: &str) -> Result<(), StoreError>;

    /// Half messages due to be checked back: each due check is handed out once, to the first
    /// caller that has a producer of its topic (see [`TransactionCheckRequest`]).
    async fn transaction_checks(
        &self,
        req: &TransactionCheckRequest,
    ) -> Result<Vec<TransactionCheck>, StoreError>;

    /// Moves `group`'s position on one queue to `to` (UpdateOffset, `vela admin group reset`):
    /// what it has in flight there is forgotten (those receipt handles go stale) and it goes
    /// on from there, reading again or skipping. Returns the offset it now stands at (`to`
    /// within the queue's retained range); `QueueNotFound` when the queue never held a message.
    async fn reset_offset(
        &self,
        group: &GroupName,
        topic: &TopicName,
        queue_id: u32,
        shard: ShardId,
        to: OffsetTarget,
    ) -> Result<u64, StoreError>;

    /// The first offset of a queue stored at or after `at_ms` (Unix ms), or the queue's max
    /// offset when nothing is; `QueueNotFound` when the store never had a message of the queue.
    async fn offset_at(
        &self,
        topic: &TopicName,
        queue_id: u32,
        shard: ShardId,
        at_ms: i64,
    ) -> Result<u64, StoreError>;

    /// Offsets and per-group positions of a topic's queues held by this store.
    /// `shards`: where the topic's queues are (its metadata's `queue_shards`); empty means every
    /// shard the store knows.
    async fn queue_stats(
        &self,
        topic: &TopicName,
        group: Option<&GroupName>,
        shards: &[ShardId],
    ) -> Result<Vec<QueueStats>, StoreError>;

    /// As [`StoreApi::queue_stats`] for one group, which on a queue it has not read yet is
    /// reported where it would start there (its `start` rule and creation time), with nothing
    /// in flight: the backlog waiting for a group before its first receive.
    async fn group_queue_stats(
        &self,
        topic: &TopicName,
        group: &GroupConfig,
        shards: &[ShardId],
    ) -> Result<Vec<QueueStats>, StoreError> {
        self.queue_stats(topic, Some(&group.name), shards).await
    }

    /// Forgets a deleted topic's queues and consumer state: deletion `drop_id` of it (the
    /// controller's id, [`crate::TopicDrop`]). A shard applies each deletion at most once, so
    /// a drop delivered late cannot drop the messages of the topic created again under the
    /// name; 0 is no id (not fenced). `shards` as for [`StoreApi::queue_stats`].
    async fn drop_topic(
        &self,
        topic: &TopicName,
        drop_id: u64,
        shards: &[ShardId],
    ) -> Result<(), StoreError>;

    /// Sets how long `topic`'s messages are kept, in ms (`None`: the store's retention time),
    /// on every shard holding its queues, at the controller's `revision` of it
    /// ([`crate::TopicConfig::retention_revision`]; 0: none, not fenced): a shard that applied
    /// a newer revision of the topic (a later update, its deletion) keeps what it has, and the
    /// call still succeeds. `shards` as for [`StoreApi::queue_stats`].
    async fn set_topic_retention(
        &self,
        topic: &TopicName,
        retention_ms: Option<u64>,
        revision: u64,
        shards: &[ShardId],
    ) -> Result<(), StoreError>;

    /// Forgets a deleted group's consumer state, for the controller's deletion `drop`: a shard
    /// applies each deletion of a group at most once, so a copy delivered late leaves the
    /// group created again alone (an id of 0: an older controller's deletion, not fenced).
    /// `shards`: for a recorded drop, exactly the shards to drop it from (none: nothing to
    /// do); for an id of 0, every shard a topic has queues on (beyond those the store knows
    /// itself).
    async fn drop_group(
        &self,
        group: &GroupName,
        drop: GroupDropId,
        shards: &[ShardId],
    ) -> Result<(), StoreError>;

    /// Opens store node `node`'s replica of `shard`, whose members are `replicas` (node id →
    /// address), as `mode` says (ADR 0013, 0014).
    async fn open_shard(
        &self,
        node: u64,
        shard: ShardId,
        replicas: &BTreeMap<u64, String>,
        mode: OpenMode,
    ) -> Result<(), StoreError>;

    /// Makes `shard`'s members exactly `replicas` (node id → address): new ones join as learners
    /// and become voters once caught up, the others are removed. Resolves once the shard's
    /// leader committed the membership; `Unavailable` while a new member is still catching up
    /// (call again). Every new member must have opened the shard with [`OpenMode::Join`].
    async fn change_members(
        &self,
        shard: ShardId,
        replicas: &BTreeMap<u64, String>,
    ) -> Result<(), StoreError>;

    /// Deletes store node `node`'s replica of `shard`, which is no longer one of its members
    /// (idempotent; refused for a shard the node's configuration names, or that the node leads).
    async fn remove_shard(&self, node: u64, shard: ShardId) -> Result<(), StoreError>;

    /// The shards of the data plane and the store nodes expected to hold each.
    fn shard_replicas(&self) -> BTreeMap<ShardId, Vec<u64>>;

    /// What every store node reports about its replicas now. A node that cannot be reached is
    /// in the list with the reason, so the caller sees it is down.
    async fn node_status(&self) -> Vec<StoreNodeReport>;

    /// How every store node tiers the shards it holds (ADR 0023); unreachable nodes are in the
    /// list with the reason.
    async fn tier_status(&self) -> Vec<crate::cluster_status::StoreTierReport>;

    /// Hands leadership of `shard` to its voter `to`; resolves once `to` leads (`Ok` at once
    /// when it already does). `Unavailable` when `to` did not take over in time.
    async fn transfer_leader(&self, shard: ShardId, to: u64) -> Result<(), StoreError>;
}

/// Answers a batch of requests each in its place: `run` gets the ones that passed a check
/// (`Ok`), in order, and answers each; a place whose check failed keeps its error.
pub async fn answer_each<T, R, F, Fut>(
    checked: Vec<Result<T, StoreError>>,
    run: F,
) -> Vec<Result<R, StoreError>>
where
    F: FnOnce(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = Vec<Result<R, StoreError>>>,
{
    let mut places = Vec::with_capacity(checked.len());
    let mut valid = Vec::new();
    for c in checked {
        match c {
            Ok(t) => {
                valid.push(t);
                places.push(None);
            }
            Err(err) => places.push(Some(Err(err))),
        }
    }
    let mut answers = run(valid).await.into_iter();
    places
        .into_iter()
        .map(|p| {
            p.or_else(|| answers.next()).unwrap_or_else(|| {
                Err(StoreError::Internal(
                    "a request of the batch went unanswered".into(),
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_is_answered_in_place_around_the_requests_that_failed_their_check() {
        let checked = vec![Ok(1), Err(StoreError::Invalid("bad".into())), Ok(2), Ok(3)];
        let answers = answer_each(checked, |valid: Vec<i32>| async move {
            assert_eq!(valid, [1, 2, 3], "only what passed, in order");
            // The last goes unanswered.
            valid[..2].iter().map(|v| Ok(v * 10)).collect()
        })
        .await;
        assert_eq!(answers[0], Ok(10));
        assert_eq!(answers[1], Err(StoreError::Invalid("bad".into())));
        assert_eq!(answers[2], Ok(20));
        assert!(matches!(answers[3], Err(StoreError::Internal(_))));
    }
}

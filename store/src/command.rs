//! The commands a shard's Raft log carries and what applying them answers.
//!
//! `StoreCommand` is stored in the log with postcard, so its encoding is a storage format:
//! variants are only ever added at the end, never changed or reordered; a new shape is a new
//! variant. Every command carries the time the leader chose (`now_ms`) so applying it never
//! reads a clock and every replica reaches the same state.

use std::fmt;

use serde::{Deserialize, Serialize};
use vela_proto::domain::{GroupName, MessageRecord, TopicName};
use vela_proto::store_api::AppendOutcome;

use crate::state::{TierRefusal, TieredSegment};

/// One entry of a shard's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreCommand {
    /// Messages sent to one queue (bodies included: the log is the commit log).
    Append {
        topic: TopicName,
        queue_id: u32,
        now_ms: i64,
        messages: Vec<MessageRecord>,
    },
    /// A POP receive.
    Pop(PopCommand),
    /// Acknowledgements, coalesced from concurrent callers.
    Ack { deliveries: Vec<DeliveryRef> },
    /// Makes one delivered message invisible for `invisible_ms` from `now_ms`.
    ChangeInvisible {
        delivery: DeliveryRef,
        invisible_ms: u64,
        now_ms: i64,
    },
    /// Moves one delivered message to its group's dead-letter queue.
    DeadLetter { delivery: DeliveryRef, now_ms: i64 },
    /// Delay messages that are due, in due order.
    Release { due: Vec<TimerKey>, now_ms: i64 },
    /// Commits or rolls back a transaction half message.
    EndTransaction {
        topic: TopicName,
        transaction_id: String,
        resolution: TransactionEnd,
        now_ms: i64,
    },
    /// Retention: forget everything that points below this log index.
    Truncate { below_log_index: u64 },
    /// A topic was deleted.
    DropTopic { topic: TopicName },
    /// A consumer group was deleted.
    DropGroup { group: GroupName },
    /// Appends from concurrent callers, coalesced into one entry. Each applies exactly as its
    /// own `Append` would, in order; their records are numbered by one slot sequence running
    /// across all of them (see [`StoreCommand::record`]).
    AppendBatch {
        now_ms: i64,
        appends: Vec<QueueAppend>,
    },
    /// Raises the apply semantics to `version` from this entry on (`state::APPLY_VERSION`). A
    /// replica that does not know `version` stops rather than apply later entries differently.
    SetApplyVersion { version: u32 },
    /// A receive whose work the leader bounded when it planned it (apply version 4): per queue,
    /// in the order given, how far the cursor may skip (offsets the leader found not to match
    /// the filter), how far apply looks, and how many expired deliveries it examines. Apply
    /// scans nothing beyond what the command says, so no build's scan limit is part of what a
    /// receive means.
    PopRanges {
        pop: PopCommand,
        ranges: Vec<ScanRange>,
    },
    /// Appends from concurrent callers, each with the client that sent it (apply version 5).
    /// Slots run across sub-appends as in `AppendBatch`; a message whose (client id, message
    /// id) the shard appended within its deduplication window is answered with the first
    /// outcome and not appended again (`state::dedup`).
    ClientAppends {
        now_ms: i64,
        appends: Vec<ClientAppend>,
    },
    /// A receive with an SQL92 filter (apply version 7). Only the leader reads messages to
    /// evaluate it; the command carries, per queue, the offsets it found matching in
    /// `[skip_to, scan_to)`. Apply delivers those and passes over every other offset there, so
    /// replicas never evaluate the filter and agree whatever their builds' SQL semantics.
    /// `pop.filter` is `All`: redeliveries and parked FIFO messages matched when first picked.
    PopPicked {
        pop: PopCommand,
        picks: Vec<PickedRange>,
    },
    /// Places a group on queues of a topic (apply version 8), each offset clamped to its
    /// queue's retained range. `replace`: a reset (UpdateOffset, `vela admin group reset`): the
    /// group forgets what it has in flight there (those receipt handles go stale) and goes on
    /// from the offset, reading again or skipping. Otherwise a group's start: only queues
    /// where it has no position yet are set. Queues that never held a message are left alone.
    SetOffsets {
        group: GroupName,
        topic: TopicName,
        offsets: Vec<QueueOffset>,
        replace: bool,
    },
    /// Records a sealed segment the leader uploaded to object storage in the shard's tier
    /// manifest (apply version 9; see `state::TierManifest` for what is accepted).
    Tiered { segment: TieredSegment },
    /// Makes one delivered message invisible for `invisible_ms` from `now_ms` and keeps its
    /// delivery id (apply version 10), so the receipt handle its consumer holds stays valid:
    /// the renewal a proxy makes on behalf of a push consumer (`auto_renew`).
    RenewInvisible {
        delivery: DeliveryRef,
        invisible_ms: u64,
        now_ms: i64,
    },
    /// Withdraws the delay message parked under `timer` before it is released (apply version
    /// 11; RecallMessage): it is never indexed, so no group ever gets it. Applies only while
    /// the timer is still parked and belongs to `topic`; a `Release` that came first wins.
    Recall { topic: TopicName, timer: TimerKey },
    /// Sets how long `topic`'s messages are kept (apply version 15; `vela admin topic update
    /// --retention`): `None` goes back to the store's `retention_time`. A topic kept longer than
    /// the store's time keeps the shard's log (local and tiered) that long; one kept shorter
    /// than the shard's log loses its old messages through `Expire`.
    TopicRetention {
        topic: TopicName,
        retention_ms: Option<u64>,
    },
    /// Raises the first retained offset of queues of `topic` to the offsets given (apply
    /// version 15): the leader's retention pass for a topic kept shorter than the shard's log
    /// decides them (the first message stored within the topic's retention). Nothing is
    /// rewritten: below its floor a queue reads as empty, and the log goes with the segments.
    Expire {
        topic: TopicName,
        floors: Vec<ExpiryFloor>,
    },
    /// A topic was deleted (apply version 16): as `DropTopic`, fenced by `drop_id`, the
    /// controller's number for that deletion (ascending over all deletions). The shard
    /// remembers the highest it applied per topic and ignores a drop not above it, so a drop
    /// delivered late (after the name was created again) leaves the new topic's messages alone.
    DropTopicOnce { topic: TopicName, drop_id: u64 },
    /// As `TopicRetention`, at the controller's `revision` of the topic (apply version 17):
    /// applied only above the highest revision the shard applied for the topic (drops
    /// included), so a value delivered late (after a newer update, or after the topic was
    /// deleted) changes nothing.
    TopicRetentionAt {
        topic: TopicName,
        retention_ms: Option<u64>,
        revision: u64,
    },
    /// A consumer group was deleted (apply version 18): as `DropGroup`, fenced by `drop_id`,
    /// the controller's number for that deletion (from the counter topics' revisions come
    /// from). The shard remembers the highest it applied per group and ignores a drop not
    /// above it, so a drop delivered late (after the name was created again) leaves the new
    /// group's positions alone. `floor`: every group drop at or below it was finished on every
    /// shard when the controller answered this one (a drop there is a late copy; the ids kept
    /// at or below it are forgotten). See `state::GroupFence`.
    DropGroupOnce {
        group: GroupName,
        drop_id: u64,
        floor: u64,
    },
}

/// One queue's new first offset inside a [`StoreCommand::Expire`]. `key` is the queue's key in
/// the index when the leader planned it: keys are never reused, so a floor planned for a
/// queue that was dropped (its topic deleted) and made again before the entry applied leaves
/// the new queue alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryFloor {
    pub queue_id: u32,
    pub key: u32,
    pub offset: u64,
}

/// One queue's offset inside a [`StoreCommand::SetOffsets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueOffset {
    pub queue_id: u32,
    pub offset: u64,
}

/// One queue's share of a [`StoreCommand::PopPicked`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PickedRange {
    pub range: ScanRange,
    /// The offsets in `range.skip_to..range.scan_to` that match, ascending.
    pub offsets: Vec<u64>,
}

/// One caller's messages inside a [`StoreCommand::ClientAppends`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAppend {
    /// The sending client, as the proxy validated it (`vela_proto::ClientId`); without one its
    /// messages are never treated as duplicates. A plain string in the log, so what an entry
    /// means never depends on a build's validation rules.
    pub client_id: Option<String>,
    pub append: QueueAppend,
}

/// One queue's share of a [`StoreCommand::PopRanges`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRange {
    pub queue_id: u32,
    /// The cursor moves up to here first: everything before it failed the filter.
    pub skip_to: u64,
    /// Apply examines never-delivered offsets below this.
    pub scan_to: u64,
    /// Expired in-flight deliveries apply examines, at most.
    pub expiries: u32,
}

/// One caller's messages for one queue inside an `AppendBatch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueAppend {
    pub topic: TopicName,
    pub queue_id: u32,
    pub messages: Vec<MessageRecord>,
}

impl StoreCommand {
    /// The name of the variant, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreCommand::Append { .. } => "append",
            StoreCommand::Pop(_) => "pop",
            StoreCommand::Ack { .. } => "ack",
            StoreCommand::ChangeInvisible { .. } => "change_invisible",
            StoreCommand::DeadLetter { .. } => "dead_letter",
            StoreCommand::Release { .. } => "release",
            StoreCommand::EndTransaction { .. } => "end_transaction",
            StoreCommand::Truncate { .. } => "truncate",
            StoreCommand::DropTopic { .. } | StoreCommand::DropTopicOnce { .. } => "drop_topic",
            StoreCommand::DropGroup { .. } | StoreCommand::DropGroupOnce { .. } => "drop_group",
            StoreCommand::AppendBatch { .. } => "append_batch",
            StoreCommand::SetApplyVersion { .. } => "set_apply_version",
            StoreCommand::PopRanges { .. } => "pop",
            StoreCommand::ClientAppends { .. } => "client_appends",
            StoreCommand::PopPicked { .. } => "pop",
            StoreCommand::SetOffsets { .. } => "set_offsets",
            StoreCommand::Tiered { .. } => "tiered",
            StoreCommand::RenewInvisible { .. } => "renew_invisible",
            StoreCommand::Recall { .. } => "recall",
            StoreCommand::TopicRetention { .. } | StoreCommand::TopicRetentionAt { .. } => {
                "topic_retention"
            }
            StoreCommand::Expire { .. } => "expire",
        }
    }

    /// The leader's clock reading the command carries, if it depends on time.
    pub fn now_ms(&self) -> Option<i64> {
        match self {
            StoreCommand::Append { now_ms, .. }
            | StoreCommand::ChangeInvisible { now_ms, .. }
            | StoreCommand::DeadLetter { now_ms, .. }
            | StoreCommand::Release { now_ms, .. }
            | StoreCommand::EndTransaction { now_ms, .. }
            | StoreCommand::AppendBatch { now_ms, .. }
            | StoreCommand::ClientAppends { now_ms, .. }
            | StoreCommand::RenewInvisible { now_ms, .. } => Some(*now_ms),
            StoreCommand::Pop(pop)
            | StoreCommand::PopRanges { pop, .. }
            | StoreCommand::PopPicked { pop, .. } => Some(pop.now_ms),
            StoreCommand::Ack { .. }
            | StoreCommand::Truncate { .. }
            | StoreCommand::DropTopic { .. }
            | StoreCommand::DropTopicOnce { .. }
            | StoreCommand::DropGroup { .. }
            | StoreCommand::DropGroupOnce { .. }
            | StoreCommand::SetApplyVersion { .. }
            | StoreCommand::SetOffsets { .. }
            | StoreCommand::Tiered { .. }
            | StoreCommand::Recall { .. }
            | StoreCommand::TopicRetention { .. }
            | StoreCommand::TopicRetentionAt { .. }
            | StoreCommand::Expire { .. } => None,
        }
    }

    /// Bytes of message bodies the entry carries (what a replay of it reads and decodes).
    pub fn body_bytes(&self) -> u64 {
        let sum = |messages: &[MessageRecord]| -> u64 {
            messages.iter().map(|m| m.body.len() as u64).sum()
        };
        match self {
            StoreCommand::Append { messages, .. } => sum(messages),
            StoreCommand::AppendBatch { appends, .. } => {
                appends.iter().map(|a| sum(&a.messages)).sum()
            }
            StoreCommand::ClientAppends { appends, .. } => {
                appends.iter().map(|a| sum(&a.append.messages)).sum()
            }
            _ => 0,
        }
    }

    /// The message record at `slot` of this entry, if it is an append that has one. In an
    /// `AppendBatch` slots run on from one sub-append to the next: the first message of the
    /// second sub-append has the slot after the last one of the first.
    pub fn record(&self, slot: u32) -> Option<&MessageRecord> {
        let slot = usize::try_from(slot).ok()?;
        match self {
            StoreCommand::Append { messages, .. } => messages.get(slot),
            StoreCommand::AppendBatch { appends, .. } => record_in(appends.iter(), slot),
            StoreCommand::ClientAppends { appends, .. } => {
                record_in(appends.iter().map(|a| &a.append), slot)
            }
            _ => None,
        }
    }
}

/// The record at `slot` of sub-appends whose slots run on from one to the next.
fn record_in<'a>(
    appends: impl Iterator<Item = &'a QueueAppend>,
    mut slot: usize,
) -> Option<&'a MessageRecord> {
    for append in appends {
        match append.messages.get(slot) {
            Some(record) => return Some(record),
            None => slot -= append.messages.len(),
        }
    }
    None
}

/// How a store command is written into a log record (vela-raft's `RecordData`): an encoding
/// byte, then the postcard encoding of the enum (whose variants are only ever appended).
const COMMAND_ENCODING: u8 = 1;

impl vela_raft::entry::RecordData for StoreCommand {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
        vela_raft::entry::encode_postcard(COMMAND_ENCODING, self, out)
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        vela_raft::entry::decode_postcard(COMMAND_ENCODING, bytes)
    }

    fn memory_size(&self) -> usize {
        // A record's memory size includes its inline size: the vector's buffer is that.
        let records = |messages: &[MessageRecord]| {
            messages
                .iter()
                .map(MessageRecord::memory_size)
                .sum::<usize>()
        };
        match self {
            StoreCommand::Append { messages, .. } => records(messages),
            StoreCommand::AppendBatch { appends, .. } => {
                std::mem::size_of_val(appends.as_slice())
                    + appends.iter().map(|a| records(&a.messages)).sum::<usize>()
            }
            StoreCommand::ClientAppends { appends, .. } => {
                std::mem::size_of_val(appends.as_slice())
                    + appends
                        .iter()
                        .map(|a| {
                            records(&a.append.messages)
                                + a.client_id.as_ref().map_or(0, String::len)
                        })
                        .sum::<usize>()
            }
            // Small commands: their encoded length is close enough.
            _ => 0,
        }
    }
}

// openraft logs entries with `Display`; keep it to the identifiers, never bodies.
impl fmt::Display for StoreCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreCommand::Append {
                topic,
                queue_id,
                messages,
                ..
            } => {
                write!(f, "append({topic}/{queue_id}, {} messages)", messages.len())
            }
            StoreCommand::Pop(p) => write!(f, "pop({}, {}, max {})", p.group, p.topic, p.max),
            StoreCommand::Ack { deliveries } => write!(f, "ack({} deliveries)", deliveries.len()),
            StoreCommand::ChangeInvisible {
                delivery,
                invisible_ms,
                ..
            } => {
                write!(f, "change_invisible({delivery}, {invisible_ms} ms)")
            }
            StoreCommand::RenewInvisible {
                delivery,
                invisible_ms,
                ..
            } => {
                write!(f, "renew_invisible({delivery}, {invisible_ms} ms)")
            }
            StoreCommand::DeadLetter { delivery, .. } => write!(f, "dead_letter({delivery})"),
            StoreCommand::Release { due, .. } => write!(f, "release({} due)", due.len()),
            StoreCommand::EndTransaction {
                topic,
                transaction_id,
                resolution,
                ..
            } => {
                write!(
                    f,
                    "end_transaction({topic}, {transaction_id}, {resolution:?})"
                )
            }
            StoreCommand::Truncate { below_log_index } => {
                write!(f, "truncate(below {below_log_index})")
            }
            StoreCommand::DropTopic { topic } => write!(f, "drop_topic({topic})"),
            StoreCommand::DropTopicOnce { topic, drop_id } => {
                write!(f, "drop_topic({topic}, drop {drop_id})")
            }
            StoreCommand::Tiered { segment } => write!(
                f,
                "tiered({}..={} as {})",
                segment.first_index, segment.last_index, segment.key
            ),
            StoreCommand::DropGroup { group } => write!(f, "drop_group({group})"),
            StoreCommand::DropGroupOnce {
                group,
                drop_id,
                floor,
            } => write!(f, "drop_group({group}, drop {drop_id} above {floor})"),
            StoreCommand::TopicRetention {
                topic,
                retention_ms,
            } => match retention_ms {
                Some(ms) => write!(f, "topic_retention({topic}, {ms} ms)"),
                None => write!(f, "topic_retention({topic}, store default)"),
            },
            StoreCommand::TopicRetentionAt {
                topic,
                retention_ms,
                revision,
            } => match retention_ms {
                Some(ms) => write!(f, "topic_retention({topic}, {ms} ms, revision {revision})"),
                None => write!(
                    f,
                    "topic_retention({topic}, store default, revision {revision})"
                ),
            },
            StoreCommand::Expire { topic, floors } => {
                write!(f, "expire({topic}, {} queues)", floors.len())
            }
            StoreCommand::Recall { topic, timer } => write!(
                f,
                "recall({topic}, due {} at {}.{})",
                timer.due_ms, timer.log_index, timer.slot
            ),
            StoreCommand::AppendBatch { appends, .. } => {
                let messages: usize = appends.iter().map(|a| a.messages.len()).sum();
                write!(
                    f,
                    "append_batch({} appends, {messages} messages)",
                    appends.len()
                )
            }
            StoreCommand::SetApplyVersion { version } => {
                write!(f, "set_apply_version({version})")
            }
            StoreCommand::ClientAppends { appends, .. } => {
                let messages: usize = appends.iter().map(|a| a.append.messages.len()).sum();
                write!(
                    f,
                    "client_appends({} appends, {messages} messages)",
                    appends.len()
                )
            }
            StoreCommand::SetOffsets {
                group,
                topic,
                offsets,
                replace,
            } => write!(
                f,
                "set_offsets({group}, {topic}, {} queues{})",
                offsets.len(),
                if *replace { ", reset" } else { "" }
            ),
            StoreCommand::PopPicked { pop: p, picks } => write!(
                f,
                "pop({}, {}, max {}, {} queues, {} picked)",
                p.group,
                p.topic,
                p.max,
                picks.len(),
                picks.iter().map(|r| r.offsets.len()).sum::<usize>()
            ),
            StoreCommand::PopRanges { pop: p, ranges } => write!(
                f,
                "pop({}, {}, max {}, {} queues)",
                p.group,
                p.topic,
                p.max,
                ranges.len()
            ),
        }
    }
}

/// Which queues a POP may take from (log format twin of `QueueSelector`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueChoice {
    All,
    One(u32),
}

/// A tag subscription (log format twin of `TagFilter`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TagSubscription {
    All,
    Tags(Vec<String>),
}

impl From<&vela_proto::domain::TagFilter> for TagSubscription {
    fn from(f: &vela_proto::domain::TagFilter) -> Self {
        match f {
            vela_proto::domain::TagFilter::All => TagSubscription::All,
            vela_proto::domain::TagFilter::Tags(t) => TagSubscription::Tags(t.clone()),
        }
    }
}

/// How a transaction ends (log format twin of `TransactionResolution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransactionEnd {
    Commit,
    Rollback,
}

/// A POP receive, as decided by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopCommand {
    pub group: GroupName,
    pub topic: TopicName,
    pub queues: QueueChoice,
    pub max: u32,
    pub invisible_ms: u64,
    pub filter: TagSubscription,
    pub fifo: bool,
    pub max_attempts: u32,
    pub now_ms: i64,
}

/// Names one delivery of one message to one group (what a receipt ticket carries).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeliveryRef {
    pub group: GroupName,
    pub topic: TopicName,
    pub queue_id: u32,
    pub offset: u64,
    pub delivery_id: u64,
}

impl fmt::Display for DeliveryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}/{}#{} delivery {}",
            self.group, self.topic, self.queue_id, self.offset, self.delivery_id
        )
    }
}

/// Orders delay messages: due time first, then log position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimerKey {
    pub due_ms: i64,
    pub log_index: u64,
    pub slot: u32,
}

/// Where a message's record lives: its Append entry and its position in that batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordRef {
    pub log_index: u64,
    pub slot: u32,
}

/// One message a POP delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoppedMessage {
    pub topic: TopicName,
    pub queue_id: u32,
    pub offset: u64,
    pub record: RecordRef,
    pub attempt: u32,
    pub store_ts_ms: i64,
    pub visible_at_ms: i64,
}

/// Why a command had no effect (responses are not persisted, so this may change freely).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    #[error("delivery {0} is not current")]
    StaleReceipt(String),
    #[error("transaction {0} not found")]
    TransactionNotFound(String),
    #[error("no delay message parked under {0}")]
    MessageNotFound(String),
}

/// What applying a command answers to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// Blank and membership entries.
    Nothing,
    Appended(Vec<AppendOutcome>),
    /// The outcomes of each sub-append of an `AppendBatch`, in order.
    AppendedBatch(Vec<Vec<AppendOutcome>>),
    Popped {
        delivery_id: u64,
        messages: Vec<PoppedMessage>,
        /// Expired deliveries this POP moved to the group's dead-letter queue (their last
        /// attempt was used up); counted by the proposer's metrics.
        #[serde(default)]
        dead_lettered: u32,
    },
    /// One result per acknowledged delivery, in order.
    Acked(Vec<Result<(), ApplyError>>),
    InvisibilityChanged(Result<ChangedDelivery, ApplyError>),
    DeadLettered(Result<(), ApplyError>),
    Released {
        indexed: u32,
    },
    TransactionEnded(Result<(), ApplyError>),
    Truncated,
    Dropped,
    ApplyVersionSet {
        version: u32,
    },
    /// Where the group stands on each queue of a `SetOffsets`, in order (`None`: the queue
    /// never held a message).
    OffsetsSet(Vec<Option<u64>>),
    /// Whether a `Tiered` segment joined the manifest.
    Tiered(Result<(), TierRefusal>),
    /// Whether a `Recall` withdrew its delay message.
    Recalled(Result<(), ApplyError>),
    /// A `TopicRetention` was applied (`false`: the shard's apply version is below 15 and it
    /// changed nothing).
    RetentionSet(bool),
    /// A topic command at a revision the shard had passed (`TopicRetentionAt`): a newer one
    /// was applied, this one changed nothing.
    Superseded,
    /// Queues of an `Expire` whose first retained offset rose.
    Expired(u32),
}

/// The delivery that replaces the one whose invisibility changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedDelivery {
    pub delivery_id: u64,
    pub visible_at_ms: i64,
}

#[cfg(test)]
mod tests;

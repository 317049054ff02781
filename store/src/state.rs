//! A shard's applied state: queue indexes, consumer state, parked delay and transaction
//! messages. Pure and deterministic: `apply` reads no clock and does no I/O, so every replica
//! that applies the same log reaches the same state, and the whole of it is what a snapshot
//! holds. Message bodies stay in the Raft log; the state only points at them.

mod append;
mod consumer;
mod dedup;
#[cfg(test)]
mod golden_tests;
mod group_fence;
mod index;
mod legacy;
mod offsets;
mod plan;
mod pop;
mod reads;
#[cfg(test)]
mod replay_tests;
mod retention;
mod settle;
#[cfg(test)]
mod tests;
mod tier;
mod time;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tracing::warn;
use vela_proto::domain::{
    GroupName, GroupQueueStats, MessageKind, MessageRecord, QueueStats, ShardId, TopicName,
};
use vela_proto::store_api::AppendOutcome;

use crate::command::{
    ApplyError, ChangedDelivery, CommandResponse, DeliveryRef, PopCommand, QueueChoice, RecordRef,
    StoreCommand, TagSubscription, TimerKey, TransactionEnd,
};
use crate::index_db::history::{EventKind, LookupKind, Placed};
pub use consumer::{ConsumerQueue, Inflight};
pub use dedup::{DedupWindow, FirstOutcome, dedup_key};
pub use group_fence::GroupFence;
pub use index::{
    Entries, Frozen, IndexEntry, QueueIndex, TagTable, TrackEvent, message_group_hash,
};
pub use legacy::{EntryMap, LegacyState};
pub use offsets::StartRule;
pub use plan::{PopPlan, ScanMemo, SqlCandidates, SqlProbe, SqlWindow};
pub use reads::ConsumerProgress;
pub use retention::{ExpiryCandidate, group_by_topic};
pub use tier::{TierManifest, TierRefusal, TieredSegment};
use time::deadline;

/// The transaction id of a half message: where its record is. It names the shard first, so any
/// proxy routes an `EndTransaction` to it.
pub fn transaction_id(shard: ShardId, record: RecordRef) -> String {
    format!("{shard}-{}-{}", record.log_index, record.slot)
}

/// The recall handle of the delay message parked under `timer`: where it waits, shard first
/// (so any proxy routes a recall, as with transaction ids).
pub fn recall_handle(shard: ShardId, timer: TimerKey) -> String {
    format!(
        "{shard}-{}-{}-{}",
        timer.due_ms, timer.log_index, timer.slot
    )
}

/// The shard and timer a [`recall_handle`] names; `None` for anything else.
pub fn parse_recall_handle(handle: &str) -> Option<(ShardId, TimerKey)> {
    let mut parts = handle.split('-');
    let shard = parts.next()?.parse().ok()?;
    let timer = TimerKey {
        due_ms: parts.next()?.parse().ok()?,
        log_index: parts.next()?.parse().ok()?,
        slot: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some((shard, timer))
}

/// A message waiting outside its queue: a delay message before its due time, or a transaction
/// half message before its commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedMessage {
    pub topic: TopicName,
    pub queue_id: u32,
    pub tag: u32,
    pub message_group: u64,
    /// For half messages: the delivery time the producer asked for, applied on commit.
    pub deliver_at_ms: Option<i64>,
}

/// What an apply changed that tasks outside the state machine react to.
#[derive(Debug, Default)]
pub struct ApplyEffects {
    /// Topics where something may have become deliverable (wakes long polls).
    pub woken_topics: BTreeSet<TopicName>,
    /// The delay timer set changed (re-arms the release task).
    pub timers_changed: bool,
}

/// What [`ShardState::pull_window`] found on one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullWindow {
    /// Matching entries: (offset, record, store time), ascending.
    pub entries: Vec<(u64, RecordRef, i64)>,
    /// Where the next pull goes on: everything below was looked at.
    pub scanned_to: u64,
    pub min_offset: u64,
    pub max_offset: u64,
}

/// Whether a POP could deliver something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Now,
    /// Nothing now; an in-flight message becomes visible again at this time (Unix ms).
    NotBefore(i64),
    Nothing,
}

/// The part of a POP request that decides availability.
#[derive(Debug, Clone, Copy)]
pub struct PopProbe<'a> {
    pub group: &'a GroupName,
    pub topic: &'a TopicName,
    pub queues: QueueChoice,
    pub filter: &'a TagSubscription,
    pub fifo: bool,
    /// An SQL92 receive: what the leader evaluated (`filter` is then `All`).
    pub sql: Option<SqlProbe<'a>>,
    /// With every queue chosen: read the highest queue id first (a priority topic) instead of
    /// starting where the group's last receive left off. Only the leader's plan uses it.
    pub highest_first: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShardState {
    shard: ShardId,
    tags: TagTable,
    queues: BTreeMap<(TopicName, u32), QueueIndex>,
    consumers: BTreeMap<(GroupName, TopicName, u32), ConsumerQueue>,
    /// Where the next all-queues POP of a (group, topic) starts, so queues are served fairly.
    rotation: BTreeMap<(GroupName, TopicName), u32>,
    timers: BTreeMap<TimerKey, ParkedMessage>,
    half_messages: BTreeMap<RecordRef, ParkedMessage>,
    /// Highest `Truncate` applied: nothing in the state points below this log index.
    truncated_below: u64,
    /// The apply semantics in force ([`APPLY_VERSION`]); raised only by a `SetApplyVersion`
    /// entry, so replaying an old log reproduces the state its writer computed.
    apply_version: u32,
    /// Highest `now_ms` any command carried.
    max_now_ms: i64,
    /// The key the next new queue gets in the index (keys are never reused).
    next_queue_key: u32,
    /// Log index of the last command that added index entries: the index file must hold
    /// everything through it for this state to be usable.
    last_indexing: u64,
    /// Recently sent messages by (client id, message id) (apply version 5). Saved in a
    /// snapshot after the rest of the state (snapshot format 4), not inside it.
    #[serde(skip)]
    dedup: DedupWindow,
    /// The deduplication window's clock (apply version 6): advanced by each time-bearing
    /// command by how far its time passes the highest before it, at most
    /// [`dedup::MAX_STEP_MS`] at once, so a leader's clock that jumps ahead cannot cut the
    /// window short. Saved beside the window (snapshot format 5).
    #[serde(skip)]
    dedup_clock_ms: i64,
    /// The sealed segments in object storage (apply version 9, ADR 0023). Saved beside the
    /// window (snapshot format 6).
    #[serde(skip)]
    tier: TierManifest,
    /// How long topics with a retention of their own keep their messages (apply version 15),
    /// by topic, in ms. Saved beside the tier manifest (snapshot format 7).
    #[serde(skip)]
    topic_retention: BTreeMap<TopicName, u64>,
    /// The highest controller revision applied per topic (apply version 16): a topic's
    /// deletions carry one (`DropTopicOnce`), from a counter the controller keeps across all
    /// topics, and a command of a topic not above it was applied already or is older than one
    /// that was. Kept when the topic is dropped (that is what fences a late copy of the drop):
    /// one entry per topic name that had one. Saved after the retentions (snapshot format 8).
    #[serde(skip)]
    topic_revisions: BTreeMap<TopicName, u64>,
    /// What the shard remembers of consumer groups' deletions (apply version 18,
    /// `DropGroupOnce`), so a late copy of a drop leaves the group created again alone. Saved
    /// after the topics' revisions (snapshot format 9).
    #[serde(skip)]
    group_fence: GroupFence,
    /// The queues' entries: not part of a snapshot, they live in the index file (ADR 0008).
    #[serde(skip)]
    entries: Entries,
}

/// Two states are equal when what a snapshot holds and every retained entry are.
impl PartialEq for ShardState {
    fn eq(&self, other: &Self) -> bool {
        postcard::to_stdvec(self).ok() == postcard::to_stdvec(other).ok()
            && self.dedup == other.dedup
            && self.dedup_clock_ms == other.dedup_clock_ms
            && self.tier == other.tier
            && self.topic_retention == other.topic_retention
            && self.topic_revisions == other.topic_revisions
            && self.group_fence == other.group_fence
            && self.live_entries() == other.live_entries()
    }
}

/// The newest apply semantics this build implements:
/// - 1: as first released;
/// - 2: time never runs backwards: a command's `now_ms` is raised to the highest one applied
///   before it (a new leader's clock may be behind the old one's);
/// - 3: a FIFO consumer parks at most [`MAX_PARKED`] messages per queue behind busy message
///   groups; past that its cursor waits, so memory stays bounded;
/// - 4: receives are planned by the leader (`PopRanges`): apply skips and looks exactly as far
///   as the command says, so no scan limit of a build is part of what a receive means;
/// - 5: sends carry their client id (`ClientAppends`) and a message already appended from the
///   same (client id, message id) within the deduplication window ([`dedup`]) is answered
///   with its first outcome instead of appended again;
/// - 6: the deduplication window keeps its own clock, which a command moves on by at most
///   [`dedup::MAX_STEP_MS`] (a leader whose clock jumped an hour ahead forgot the whole window
///   at once, so a resend across the jump was stored twice);
/// - 7: receives with an SQL92 filter (`PopPicked`) carry the offsets the leader found
///   matching; nothing before this version writes them;
/// - 8: a group's position on a queue can be set (`SetOffsets`): its start, decided by the
///   leader, and resets;
/// - 9: sealed segments uploaded to object storage are recorded in the shard's tier manifest
///   (`Tiered`), which retention (`Truncate`) trims;
/// - 10: a delivery's invisibility can be renewed keeping its delivery id (`RenewInvisible`),
///   so the consumer's receipt handle stays valid;
/// - 11: a delay message can be withdrawn before it is due (`Recall`);
/// - 12: records may be priority messages (`MessageKind::Priority`), which builds before it
///   cannot decode; they apply as normal messages.
/// - 13: broadcast groups (ADR 0029): a broadcast instance's dead letters go to its group's
///   dead-letter topic, and dropping a group drops its instances' positions too;
/// - 14: the deduplication window remembers where a parked delay message's record is, so a
///   resend of it is answered with the same recall handle as its first send.
/// - 15: topics may keep their messages for a time of their own (`TopicRetention`), and the
///   leader expires a topic kept shorter than the shard's log (`Expire`).
/// - 16: a topic's drop carries the controller's id for the deletion (`DropTopicOnce`), and a
///   shard applies each deletion of a topic at most once.
/// - 17: a topic's retention carries the controller's revision (`TopicRetentionAt`), and a
///   shard applies it only above the highest revision it applied for the topic.
/// - 18: a consumer group's drop carries the controller's id for the deletion
///   (`DropGroupOnce`), and a shard applies each deletion of a group at most once.
pub const APPLY_VERSION: u32 = 18;

/// The apply version from which drops of a consumer group are fenced by the deletion's id.
pub const GROUP_DROP_FENCE_APPLY_VERSION: u32 = 18;

/// The apply version from which a topic's retention is fenced by the controller's revision.
pub const RETENTION_FENCE_APPLY_VERSION: u32 = 17;

/// The apply version from which drops of a topic are fenced by the deletion's id.
pub const DROP_FENCE_APPLY_VERSION: u32 = 16;

/// The apply version from which topics have a retention of their own.
pub const TOPIC_RETENTION_APPLY_VERSION: u32 = 15;

/// The apply version from which a resent delay message gets its recall handle again.
pub const RECALL_RESEND_APPLY_VERSION: u32 = 14;

/// The apply version from which broadcast instances' dead letters and drops follow their group.
pub const BROADCAST_APPLY_VERSION: u32 = 13;

/// Most messages a FIFO group parks per queue behind message groups that have one in flight
/// (from apply version 3). A queue whose next message would exceed it is served again once
/// parked messages are delivered.
pub const MAX_PARKED: u64 = 65_536;

/// Most messages a group holds in flight per queue before the leader stops planning new
/// deliveries from that queue (expired ones are still redelivered, and a FIFO group's parked
/// messages, bounded by [`MAX_PARKED`], still go out as their message groups free up). A
/// planning bound, like
/// RocketMQ's `popInflightMessageThreshold`, not an apply rule: receives planned at the same
/// moment may pass it by their batch size. It keeps a group that receives without acking from
/// growing the shard's state (and its snapshots) without limit; an ack that brings the queue
/// back under it wakes a waiting receiver.
pub const MAX_INFLIGHT: usize = 65_536;

/// A tag subscription resolved against the tag table: exact ids, not hashes.
enum TagMatcher {
    All,
    Ids(Vec<u32>),
}

impl TagMatcher {
    fn matches(&self, tag: u32) -> bool {
        match self {
            TagMatcher::All => true,
            TagMatcher::Ids(ids) => tag != 0 && ids.contains(&tag),
        }
    }
}

impl ShardState {
    /// A new shard's state, with the first apply semantics: the leader raises them with a
    /// `SetApplyVersion` entry (see [`APPLY_VERSION`]).
    pub fn new(shard: ShardId) -> Self {
        Self {
            shard,
            apply_version: 1,
            ..Self::default()
        }
    }

    /// The apply semantics in force.
    pub fn apply_version(&self) -> u32 {
        self.apply_version
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// Applies the command at `log_index`.
    pub fn apply(
        &mut self,
        log_index: u64,
        command: &StoreCommand,
        fx: &mut ApplyEffects,
    ) -> CommandResponse {
        let puts = self.entries.puts();
        let response = self.apply_command(log_index, command, fx);
        if self.entries.puts() != puts {
            self.last_indexing = log_index;
        }
        response
    }

    /// Log index of the last command that added index entries (0 = none).
    pub fn last_indexing(&self) -> u64 {
        self.last_indexing
    }

    /// Raises [`ShardState::last_indexing`] (an upgraded format-2 state: its entries were all
    /// written at the snapshot's index).
    pub fn set_last_indexing(&mut self, log_index: u64) {
        self.last_indexing = self.last_indexing.max(log_index);
    }

    fn apply_command(
        &mut self,
        log_index: u64,
        command: &StoreCommand,
        fx: &mut ApplyEffects,
    ) -> CommandResponse {
        let now = command.now_ms().map_or(0, |t| self.observe_time(t));
        match command {
            StoreCommand::Append {
                topic,
                queue_id,
                messages,
                ..
            } => CommandResponse::Appended(self.append(
                RecordRef { log_index, slot: 0 },
                topic,
                *queue_id,
                now,
                messages,
                fx,
            )),
            StoreCommand::AppendBatch { appends, .. } => {
                let mut first = RecordRef { log_index, slot: 0 };
                let outcomes = appends
                    .iter()
                    .map(|a| {
                        let outcomes =
                            self.append(first, &a.topic, a.queue_id, now, &a.messages, fx);
                        first.slot = first
                            .slot
                            .saturating_add(u32::try_from(a.messages.len()).unwrap_or(u32::MAX));
                        outcomes
                    })
                    .collect();
                CommandResponse::AppendedBatch(outcomes)
            }
            StoreCommand::ClientAppends { appends, .. } => {
                let window_now = self.dedup_now(now);
                self.dedup.expire(window_now);
                let mut first = RecordRef { log_index, slot: 0 };
                let outcomes = appends
                    .iter()
                    .map(|a| {
                        let q = &a.append;
                        // Before version 5 (never written so, but replay must not depend
                        // on that) it applies as an `AppendBatch` would.
                        let client = a.client_id.as_deref().filter(|_| self.apply_version >= 5);
                        let outcomes =
                            self.append_deduplicated(first, client, q, now, window_now, fx);
                        first.slot = first
                            .slot
                            .saturating_add(u32::try_from(q.messages.len()).unwrap_or(u32::MAX));
                        outcomes
                    })
                    .collect();
                CommandResponse::AppendedBatch(outcomes)
            }
            StoreCommand::Pop(pop) if pop.now_ms != now => {
                let at_now = PopCommand {
                    now_ms: now,
                    ..pop.clone()
                };
                self.pop(log_index, &at_now, fx)
            }
            StoreCommand::Pop(pop) => self.pop(log_index, pop, fx),
            StoreCommand::PopRanges { pop, ranges } if pop.now_ms != now => {
                let at_now = PopCommand {
                    now_ms: now,
                    ..pop.clone()
                };
                self.pop_ranges(log_index, &at_now, ranges, fx)
            }
            StoreCommand::PopRanges { pop, ranges } => self.pop_ranges(log_index, pop, ranges, fx),
            StoreCommand::SetOffsets {
                group,
                topic,
                offsets,
                replace,
            } => CommandResponse::OffsetsSet(self.set_offsets(group, topic, offsets, *replace, fx)),
            StoreCommand::PopPicked { pop, picks } => {
                let at_now = PopCommand {
                    now_ms: now,
                    ..pop.clone()
                };
                self.pop_picked(log_index, &at_now, picks, fx)
            }
            StoreCommand::Ack { deliveries } => {
                // An ack carries no time: its events take the latest time applied.
                let at = (log_index, self.max_now_ms);
                CommandResponse::Acked(
                    deliveries
                        .iter()
                        .map(|d| self.finish(d, at, None, fx))
                        .collect(),
                )
            }
            StoreCommand::ChangeInvisible {
                delivery,
                invisible_ms,
                ..
            } => {
                let changed =
                    self.change_visibility(delivery, log_index, deadline(now, *invisible_ms));
                if let Ok(c) = &changed {
                    self.put_queue_event(
                        delivery,
                        log_index,
                        EventKind::InvisibilityChanged,
                        now,
                        0,
                        u64::try_from(c.visible_at_ms).unwrap_or(0),
                    );
                }
                if changed.is_ok() {
                    // Receives waiting on the group may have planned their wake-up for the
                    // old visibility time (a push consumer's negative acknowledgement brings
                    // it forward): they plan again.
                    fx.woken_topics.insert(delivery.topic.clone());
                }
                CommandResponse::InvisibilityChanged(changed)
            }
            StoreCommand::RenewInvisible {
                delivery,
                invisible_ms,
                ..
            } => CommandResponse::InvisibilityChanged(if self.apply_version < 10 {
                Err(ApplyError::StaleReceipt(delivery.to_string()))
            } else {
                self.change_visibility(delivery, delivery.delivery_id, deadline(now, *invisible_ms))
            }),
            StoreCommand::DeadLetter { delivery, .. } => CommandResponse::DeadLettered(
                self.finish(delivery, (log_index, now), Some(now), fx),
            ),
            StoreCommand::Release { due, .. } => {
                let mut indexed = 0;
                for key in due {
                    if let Some(parked) = self.timers.remove(key) {
                        let record = RecordRef {
                            log_index: key.log_index,
                            slot: key.slot,
                        };
                        let (_, offset) = self.index(record, &parked, now, fx);
                        self.put_stored(
                            record,
                            log_index,
                            now,
                            &parked.topic,
                            parked.queue_id,
                            offset,
                        );
                        indexed += 1;
                    }
                }
                fx.timers_changed = true;
                CommandResponse::Released { indexed }
            }
            StoreCommand::EndTransaction {
                topic,
                transaction_id,
                resolution,
                ..
            } => CommandResponse::TransactionEnded(self.end_transaction(
                log_index,
                topic,
                transaction_id,
                *resolution,
                now,
                fx,
            )),
            StoreCommand::Truncate { below_log_index } => {
                self.truncate(*below_log_index, fx);
                if self.apply_version >= 9 {
                    self.tier.truncate(self.truncated_below);
                }
                CommandResponse::Truncated
            }
            StoreCommand::Recall { topic, timer } => {
                let parked = (self.apply_version >= 11
                    && self.timers.get(timer).is_some_and(|p| &p.topic == topic))
                .then(|| self.timers.remove(timer))
                .flatten();
                CommandResponse::Recalled(match parked {
                    Some(_) => {
                        fx.timers_changed = true;
                        let record = RecordRef {
                            log_index: timer.log_index,
                            slot: timer.slot,
                        };
                        self.entries.put_record_event(
                            record,
                            TrackEvent::plain(log_index, EventKind::Recalled, now),
                        );
                        Ok(())
                    }
                    None => Err(ApplyError::MessageNotFound(recall_handle(
                        self.shard, *timer,
                    ))),
                })
            }
            StoreCommand::Tiered { segment } => {
                CommandResponse::Tiered(if self.apply_version < 9 {
                    Err(TierRefusal::NotYet)
                } else {
                    self.tier.add(segment, self.truncated_below)
                })
            }
            StoreCommand::TopicRetention {
                topic,
                retention_ms,
            } => CommandResponse::RetentionSet(
                self.apply_version >= TOPIC_RETENTION_APPLY_VERSION
                    && self.set_topic_retention(topic, *retention_ms),
            ),
            StoreCommand::TopicRetentionAt {
                topic,
                retention_ms,
                revision,
            } => {
                if self.apply_version >= RETENTION_FENCE_APPLY_VERSION {
                    if !self.pass_revision(topic, *revision) {
                        return CommandResponse::Superseded;
                    }
                } else if self.apply_version < TOPIC_RETENTION_APPLY_VERSION {
                    return CommandResponse::RetentionSet(false);
                }
                CommandResponse::RetentionSet(self.set_topic_retention(topic, *retention_ms))
            }
            StoreCommand::Expire { topic, floors } => {
                CommandResponse::Expired(if self.apply_version >= TOPIC_RETENTION_APPLY_VERSION {
                    self.expire(topic, floors, fx)
                } else {
                    0
                })
            }
            StoreCommand::DropTopicOnce { topic, drop_id } => {
                if self.apply_version >= DROP_FENCE_APPLY_VERSION
                    && !self.pass_revision(topic, *drop_id)
                {
                    return CommandResponse::Dropped;
                }
                self.drop_topic(topic, fx);
                CommandResponse::Dropped
            }
            StoreCommand::DropTopic { topic } => {
                self.drop_topic(topic, fx);
                CommandResponse::Dropped
            }
            StoreCommand::DropGroupOnce {
                group,
                drop_id,
                floor,
            } => {
                if self.apply_version >= GROUP_DROP_FENCE_APPLY_VERSION
                    && !self.group_fence.pass(group, *drop_id, *floor)
                {
                    return CommandResponse::Dropped;
                }
                self.drop_group(group);
                CommandResponse::Dropped
            }
            StoreCommand::DropGroup { group } => {
                self.drop_group(group);
                CommandResponse::Dropped
            }
            StoreCommand::SetApplyVersion { version } => {
                // The state machine refuses versions it does not know before they get here.
                if self.apply_version < 6 && *version >= 6 {
                    // The window's entries so far carry the commands' times.
                    self.dedup_clock_ms = self.max_now_ms;
                }
                self.apply_version = self.apply_version.max(*version);
                CommandResponse::ApplyVersionSet {
                    version: self.apply_version,
                }
            }
        }
    }

    /// The messages remembered for send deduplication.
    pub fn dedup(&self) -> &DedupWindow {
        &self.dedup
    }

    /// The shard's tier manifest.
    pub fn tier(&self) -> &TierManifest {
        &self.tier
    }

    /// Restores the tier manifest a snapshot saved beside this state.
    pub fn set_tier(&mut self, tier: TierManifest) {
        self.tier = tier;
    }

    /// Where the log this state reads from must be held locally: the retention floor, or past
    /// the tiered segments when the tier holds the log from the floor on.
    pub fn local_floor(&self) -> u64 {
        match (self.tier.start(), self.tier.through()) {
            (Some(start), Some(through)) if start <= self.truncated_below => {
                self.truncated_below.max(through + 1)
            }
            _ => self.truncated_below,
        }
    }

    /// Restores the deduplication window a snapshot saved beside this state.
    pub fn set_dedup(&mut self, dedup: DedupWindow) {
        self.dedup = dedup;
    }

    /// The transaction id of the half message at `record` (what its send answered).
    pub fn transaction_id(&self, record: RecordRef) -> String {
        transaction_id(self.shard, record)
    }

    fn parse_transaction_id(&self, id: &str) -> Option<RecordRef> {
        let mut parts = id.split('-');
        let shard: ShardId = parts.next()?.parse().ok()?;
        let log_index = parts.next()?.parse().ok()?;
        let slot = parts.next()?.parse().ok()?;
        (shard == self.shard && parts.next().is_none()).then_some(RecordRef { log_index, slot })
    }

    fn matcher(&self, filter: &TagSubscription) -> TagMatcher {
        match filter {
            TagSubscription::All => TagMatcher::All,
            TagSubscription::Tags(tags) => {
                TagMatcher::Ids(tags.iter().filter_map(|t| self.tags.lookup(t)).collect())
            }
        }
    }

    /// Queue ids of `topic` held by this shard, ascending.
    pub fn queue_ids(&self, topic: &TopicName) -> Vec<u32> {
        self.queues
            .range((topic.clone(), 0)..=(topic.clone(), u32::MAX))
            .map(|((_, q), _)| *q)
            .collect()
    }

    fn selected_queues(&self, topic: &TopicName, choice: QueueChoice) -> Vec<u32> {
        match choice {
            QueueChoice::One(q) => vec![q],
            QueueChoice::All => self.queue_ids(topic),
        }
    }

    fn truncate(&mut self, below_log_index: u64, fx: &mut ApplyEffects) {
        self.truncated_below = self.truncated_below.max(below_log_index);
        let floor = self.truncated_below;
        // Entries below the floor are gone wherever they are (read-time floor); leading ones
        // raise the queue's minimum. Nothing is rewritten.
        for ((topic, _), index) in &mut self.queues {
            let first_live = live_range(
                &self.entries,
                floor,
                index,
                index.min_offset(),
                index.max_offset(),
            )
            .next()
            .map_or(index.max_offset(), |(offset, _)| offset);
            if first_live != index.min_offset() {
                index.raise_min(first_live);
                fx.woken_topics.insert(topic.clone());
            }
        }
        for ((_, topic, queue_id), consumer) in &mut self.consumers {
            if let Some(index) = self.queues.get(&(topic.clone(), *queue_id)) {
                consumer.forget_gone(index.min_offset(), |o| {
                    live_entry(&self.entries, floor, index, o).is_some()
                });
            }
        }
        // The leader never truncates below a parked message; a replica still drops any it
        // finds so nothing in the state points at a deleted record.
        let before = self.timers.len() + self.half_messages.len();
        self.timers.retain(|k, _| k.log_index >= below_log_index);
        self.half_messages
            .retain(|r, _| r.log_index >= below_log_index);
        let dropped = before - self.timers.len() - self.half_messages.len();
        if dropped > 0 {
            warn!(
                shard = self.shard,
                below_log_index, dropped, "truncation dropped parked messages"
            );
            fx.timers_changed = true;
        }
    }

    /// Moves `topic` to controller revision `revision` when it is above the highest applied
    /// (`false`: it is not, and the command carrying it changes nothing).
    fn pass_revision(&mut self, topic: &TopicName, revision: u64) -> bool {
        if self
            .topic_revisions
            .get(topic)
            .is_some_and(|&applied| applied >= revision)
        {
            return false;
        }
        self.topic_revisions.insert(topic.clone(), revision);
        true
    }

    /// Forgets a deleted consumer group's state on every queue.
    fn drop_group(&mut self, group: &GroupName) {
        if self.apply_version >= BROADCAST_APPLY_VERSION {
            // A broadcast group's instances go with it.
            self.consumers.retain(|(g, _, _), _| !group.owns(g));
            self.rotation.retain(|(g, _), _| !group.owns(g));
        } else {
            self.consumers.retain(|(g, _, _), _| g != group);
            self.rotation.retain(|(g, _), _| g != group);
        }
    }

    /// Forgets a deleted topic: its queues, the groups' state on them, its parked and half
    /// messages, its retention.
    fn drop_topic(&mut self, topic: &TopicName, fx: &mut ApplyEffects) {
        self.topic_retention.remove(topic);
        self.queues.retain(|(t, _), _| t != topic);
        self.consumers.retain(|(_, t, _), _| t != topic);
        self.rotation.retain(|(_, t), _| t != topic);
        self.timers.retain(|_, p| &p.topic != topic);
        self.half_messages.retain(|_, p| &p.topic != topic);
        fx.timers_changed = true;
        fx.woken_topics.insert(topic.clone());
    }

    // ---- reads used outside apply ----

    /// This state as a snapshot restores it, with the entries an index file would hold taken
    /// from `index` (itself, or a state further on: an index file may be ahead of a snapshot).
    #[cfg(test)]
    pub(crate) fn restored(&self, index: &ShardState) -> ShardState {
        let bytes = postcard::to_stdvec(self).expect("encodes");
        let mut back: ShardState = postcard::from_bytes(&bytes).expect("decodes");
        // Saved beside the state in a snapshot (formats 4 and 5).
        back.dedup = self.dedup.clone();
        back.dedup_clock_ms = self.dedup_clock_ms;
        back.tier = self.tier.clone();
        back.topic_retention = self.topic_retention.clone();
        back.topic_revisions = self.topic_revisions.clone();
        back.group_fence = self.group_fence.clone();
        for (key, entry) in index.entries.in_memory() {
            back.entries.put(key.0, key.1, *entry);
        }
        back
    }

    /// A copy of everything a snapshot holds (the entries stay here: they are in the file).
    pub fn snapshot_copy(&mut self) -> ShardState {
        let entries = std::mem::take(&mut self.entries);
        let copy = self.clone();
        self.entries = entries;
        copy
    }

    /// Takes this state's entries (and their file) from `from`, as a restored state continues
    /// on the same index.
    pub fn take_entries_from(&mut self, from: &mut ShardState) {
        self.entries = std::mem::take(&mut from.entries);
    }

    /// The queues' entries.
    pub fn entries(&self) -> &Entries {
        &self.entries
    }

    pub fn entries_mut(&mut self) -> &mut Entries {
        &mut self.entries
    }

    /// The key the next new queue gets in the index.
    pub fn next_queue_key(&self) -> u32 {
        self.next_queue_key
    }

    /// Every retained entry by (topic, queue, offset).
    pub fn live_entries(&self) -> BTreeMap<(TopicName, u32, u64), IndexEntry> {
        self.queues
            .iter()
            .flat_map(|((topic, queue_id), q)| {
                live_range(
                    &self.entries,
                    self.truncated_below,
                    q,
                    q.min_offset(),
                    q.max_offset(),
                )
                .map(move |(offset, e)| ((topic.clone(), *queue_id, offset), e))
            })
            .collect()
    }

    /// Each queue's index key and first retained offset: below these, a replay from this
    /// state reads nothing (garbage collection of the index file).
    pub fn index_floors(&self) -> std::collections::HashMap<u32, u64> {
        self.queues
            .values()
            .map(|q| (q.key(), q.min_offset()))
            .collect()
    }
}

/// The entry at `offset` of `queue` if it is retained: inside the queue's offsets and not below
/// the truncation floor (retention removes entries by raising the floor, not by rewriting). An
/// offset inside the queue always has an entry; one missing means a damaged index, which is
/// reported (apply then stops the shard) rather than read as a gap.
fn live_entry(
    entries: &Entries,
    truncated_below: u64,
    queue: &QueueIndex,
    offset: u64,
) -> Option<IndexEntry> {
    if offset < queue.min_offset() || offset >= queue.max_offset() {
        return None;
    }
    let Some(entry) = entries.get(queue.key(), offset) else {
        entries.report_missing(queue.key(), offset);
        return None;
    };
    (entry.log_index >= truncated_below).then_some(entry)
}

/// The retained entries of `queue` with offsets in `from..to`, ascending (missing ones are
/// reported as in [`live_entry`]).
fn live_range<'a>(
    entries: &'a Entries,
    truncated_below: u64,
    queue: &QueueIndex,
    from: u64,
    to: u64,
) -> impl Iterator<Item = (u64, IndexEntry)> + use<'a> {
    let from = from.max(queue.min_offset());
    let to = to.min(queue.max_offset());
    let key = queue.key();
    let mut inner = entries.range(key, from, to);
    let mut expected = from;
    std::iter::from_fn(move || {
        loop {
            let Some((offset, entry)) = inner.next() else {
                if expected < to {
                    entries.report_missing(key, expected);
                    expected = to;
                }
                return None;
            };
            if offset != expected {
                entries.report_missing(key, expected);
            }
            expected = offset + 1;
            if entry.log_index >= truncated_below {
                return Some((offset, entry));
            }
        }
    })
}

//! Validated domain types. Wire input becomes these once, at the boundary (`TryFrom` in the
//! proxy); inside the system nothing is `Option` that cannot be absent.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use crate::sql::SqlFilter;

/// Identifies one shard (one openraft group of the store).
pub type ShardId = u32;

/// Longest topic name RocketMQ accepts (`TopicValidator.TOPIC_MAX_LENGTH`).
pub const MAX_TOPIC_LEN: usize = 127;
/// Longest group name, so that `%RETRY%`/`%DLQ%` names stay within limits.
pub const MAX_GROUP_LEN: usize = 120;
/// Most messages one receive may return (RocketMQ's `MAX_MSG_NUMS_FOR_POP_REQUEST`).
pub const MAX_RECEIVE_BATCH: u32 = 32;
/// Shortest invisible duration a simple consumer may ask for.
pub const MIN_INVISIBLE: Duration = Duration::from_secs(10);
/// Longest invisible duration.
pub const MAX_INVISIBLE: Duration = Duration::from_secs(12 * 3600);
/// Invisibility used when a push consumer asks the server to choose (`auto_renew`).
pub const DEFAULT_AUTO_RENEW_INVISIBLE: Duration = Duration::from_secs(60);
/// Default deliveries of one message before it is dead-lettered (retryMaxTimes 16 + 1).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 17;
/// Prefix of dead-letter topics: `%DLQ%<group>`.
pub const DLQ_PREFIX: &str = "%DLQ%";
/// The stored property holding a transaction half message's own first check-back time, in
/// whole seconds (its `orphaned_transaction_recovery_duration`; RocketMQ's key). A system
/// key: producers may not set it as a user property, and deliveries carry it as the system
/// property it came from.
pub const CHECK_AFTER_PROPERTY: &str = "CHECK_IMMUNITY_TIME_IN_SECONDS";
/// Longest first check-back time a half message may ask for (RocketMQ's
/// `maxTransactionRecoverySecond`); longer ones are cut to it.
pub const MAX_CHECK_AFTER: Duration = Duration::from_secs(3600);

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} name is empty")]
    Empty { kind: &'static str },
    #[error("{kind} name {name:?} is longer than {max} characters")]
    TooLong {
        kind: &'static str,
        name: String,
        max: usize,
    },
    #[error("{kind} name {name:?} has characters outside [%a-zA-Z0-9_-]")]
    BadChars { kind: &'static str, name: String },
}

fn validate_name(kind: &'static str, name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            kind,
            name: name.to_owned(),
            max,
        });
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'%' || b == b'_' || b == b'-')
    {
        return Err(NameError::BadChars {
            kind,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Folds a RocketMQ namespace into a resource name the way RocketMQ does (`ns%name`).
fn with_namespace(namespace: &str, name: &str) -> String {
    if namespace.is_empty() || name.starts_with(&format!("{namespace}%")) {
        name.to_owned()
    } else {
        format!("{namespace}%{name}")
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(Arc<str>);

        impl $ty {
            /// Validates `name` (`^[%a-zA-Z0-9_-]+$`, bounded length).
            pub fn new(name: impl AsRef<str>) -> Result<Self, NameError> {
                let name = name.as_ref();
                validate_name($kind, name, $max)?;
                Ok(Self(Arc::from(name)))
            }

            /// Builds the name from a RocketMQ `Resource` (namespace folded in as `ns%name`).
            pub fn from_resource(namespace: &str, name: &str) -> Result<Self, NameError> {
                validate_name($kind, name, $max)?;
                Self::new(with_namespace(namespace, name))
            }

            /// The full name (namespace included).
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Splits `ns%name` back into `(namespace, name)` for the wire.
            pub fn split_namespace(&self) -> (&str, &str) {
                match self.0.find('%') {
                    Some(i) if i > 0 && !self.0.starts_with('%') => (&self.0[..i], &self.0[i + 1..]),
                    _ => ("", &self.0),
                }
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0.to_string()
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }
    };
}

name_type!(
    /// A validated topic name; a RocketMQ namespace is folded in as `ns%name`.
    TopicName,
    "topic",
    MAX_TOPIC_LEN
);
name_type!(
    /// A validated consumer group name.
    GroupName,
    "consumer group",
    MAX_GROUP_LEN
);

name_type!(
    /// A validated route name (issue 12).
    RouteName,
    "route",
    MAX_ROUTE_LEN
);

/// Longest route name.
pub const MAX_ROUTE_LEN: usize = 64;

/// Where a topic's messages are: its queues' shards; a dead-letter topic's messages may sit
/// on any shard of any topic in `all` (the store writes dead letters beside the original).
pub fn shards_of_topic<'a>(
    topic: &TopicConfig,
    all: impl IntoIterator<Item = &'a TopicConfig>,
) -> Vec<ShardId> {
    if !topic.name.is_dead_letter() {
        return topic.queue_shards.clone();
    }
    every_queue_shard(all)
}

/// [`shards_of_topic`] for many topics: `every_shard` is [`every_queue_shard`] of all of them,
/// taken once.
pub fn shards_of_topic_among(topic: &TopicConfig, every_shard: &[ShardId]) -> Vec<ShardId> {
    if topic.name.is_dead_letter() {
        every_shard.to_vec()
    } else {
        topic.queue_shards.clone()
    }
}

/// Every shard holding a queue of a topic in `all`, ascending, each once.
pub fn every_queue_shard<'a>(all: impl IntoIterator<Item = &'a TopicConfig>) -> Vec<ShardId> {
    let mut shards: Vec<ShardId> = all
        .into_iter()
        .flat_map(|t| t.queue_shards.iter().copied())
        .collect();
    shards.sort_unstable();
    shards.dedup();
    shards
}

impl GroupName {
    /// The dead-letter topic of this group: `%DLQ%<group>`.
    pub fn dead_letter_topic(&self) -> TopicName {
        // A group name is at most 120 valid characters, so the DLQ name is always valid.
        TopicName(Arc::from(format!("{DLQ_PREFIX}{}", self.as_str())))
    }

    /// The store's name for one consumer instance of a broadcast group (ADR 0029):
    /// `<group>%BCAST%<instance>`, where the instance is the client id with characters
    /// outside `[a-zA-Z0-9_-]` turned into `_` and, when that changed it or it is longer than
    /// [`MAX_BROADCAST_INSTANCE_LEN`], cut and followed by a hash of the client id. The same
    /// client id always names the same instance, on any proxy. `None` when the group's name is
    /// longer than [`MAX_BROADCAST_GROUP_LEN`] (such a group cannot be created as broadcast).
    pub fn broadcast_instance(&self, client_id: &str) -> Option<GroupName> {
        if self.0.len() > MAX_BROADCAST_GROUP_LEN || self.is_broadcast_instance() {
            return None;
        }
        let clean: String = client_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let instance =
            if clean == client_id && !clean.is_empty() && clean.len() <= MAX_BROADCAST_INSTANCE_LEN
            {
                clean
            } else {
                let hash = fnv1a_64(client_id);
                let keep = MAX_BROADCAST_INSTANCE_LEN - 17;
                let head: String = clean.chars().take(keep).collect();
                format!("{head}-{hash:016x}")
            };
        GroupName::new(format!("{}{BROADCAST_MARKER}{instance}", self.0)).ok()
    }

    /// Whether this is the store's name of a broadcast group's consumer instance.
    pub fn is_broadcast_instance(&self) -> bool {
        self.0.contains(BROADCAST_MARKER)
    }

    /// The broadcast group an instance name belongs to; `None` for any other name.
    pub fn broadcast_parent(&self) -> Option<GroupName> {
        let at = self.0.find(BROADCAST_MARKER)?;
        GroupName::new(&self.0[..at]).ok()
    }

    /// Whether `other` is this group or, for a broadcast group, one of its instances.
    pub fn owns(&self, other: &GroupName) -> bool {
        self == other || other.broadcast_parent().as_ref() == Some(self)
    }

    /// The group whose dead-letter topic this one's dead letters go to: a broadcast instance's
    /// go to its group's `%DLQ%<group>`, every other group's to its own.
    pub fn dead_letter_owner(&self) -> GroupName {
        self.broadcast_parent().unwrap_or_else(|| self.clone())
    }
}

/// What separates a broadcast group's name from its instance's in the store's group names; a
/// name the controller refuses for groups users create.
pub const BROADCAST_MARKER: &str = "%BCAST%";
/// Longest name of a broadcast group, so that its instances' names fit [`MAX_GROUP_LEN`].
pub const MAX_BROADCAST_GROUP_LEN: usize = 64;
/// Longest instance part of a broadcast instance's name.
pub const MAX_BROADCAST_INSTANCE_LEN: usize = MAX_GROUP_LEN - MAX_BROADCAST_GROUP_LEN - 7;

/// What kinds of message a topic accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TopicType {
    Normal,
    Fifo,
    Delay,
    Transaction,
    /// Accepts every kind (RocketMQ's MIXED) but priority messages.
    Mixed,
    /// Priority messages (RocketMQ 5.4's PRIORITY): each on the queue its priority names
    /// (clamped to the last queue), received highest queue first.
    Priority,
}

impl TopicType {
    /// Whether a message of `kind` may be sent to a topic of this type.
    pub fn accepts(self, kind: MessageKind) -> bool {
        self.accepted_kinds().contains(&kind)
    }

    /// The kinds this topic accepts, as advertised in routes.
    pub fn accepted_kinds(self) -> &'static [MessageKind] {
        match self {
            TopicType::Normal => &[MessageKind::Normal],
            TopicType::Fifo => &[MessageKind::Fifo],
            TopicType::Delay => &[MessageKind::Delay],
            TopicType::Transaction => &[MessageKind::Transaction],
            TopicType::Priority => &[MessageKind::Priority],
            TopicType::Mixed => &[
                MessageKind::Normal,
                MessageKind::Fifo,
                MessageKind::Delay,
                MessageKind::Transaction,
            ],
        }
    }

    /// The lower-case name used on the CLI and in docs.
    pub fn as_str(self) -> &'static str {
        match self {
            TopicType::Normal => "normal",
            TopicType::Fifo => "fifo",
            TopicType::Delay => "delay",
            TopicType::Transaction => "transaction",
            TopicType::Mixed => "mixed",
            TopicType::Priority => "priority",
        }
    }
}

impl std::str::FromStr for TopicType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "normal" => Ok(TopicType::Normal),
            "fifo" => Ok(TopicType::Fifo),
            "delay" => Ok(TopicType::Delay),
            "transaction" => Ok(TopicType::Transaction),
            "mixed" => Ok(TopicType::Mixed),
            "priority" => Ok(TopicType::Priority),
            other => Err(format!(
                "unknown topic type {other:?} (expected normal, fifo, delay, transaction, \
                 priority or mixed)"
            )),
        }
    }
}

impl fmt::Display for TopicType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of one message, as the producer declared it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageKind {
    Normal,
    Fifo,
    Delay,
    Transaction,
    /// RocketMQ 5.4's PRIORITY: placed on the queue its priority names (clamped to the last),
    /// and a priority topic's receives read the highest queue first. Its priority travels as
    /// the record property [`PRIORITY_PROPERTY`]. Logged from apply version 12 on.
    Priority,
}

/// The record property a priority message keeps its priority in (RocketMQ's
/// `_SYS_MSG_PRIORITY_`): reserved, never a user property.
pub const PRIORITY_PROPERTY: &str = "_SYS_MSG_PRIORITY_";

impl MessageKind {
    /// Whether a message of this kind keeps a delivery time: a delay message, and a
    /// transaction (delivered at its time once committed).
    pub fn is_timed(self) -> bool {
        matches!(self, MessageKind::Delay | MessageKind::Transaction)
    }
}

/// A topic's metadata, owned by the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub name: TopicName,
    pub topic_type: TopicType,
    pub queue_count: u32,
    /// `queue_shards[queue_id]` is the shard holding that queue.
    pub queue_shards: Vec<ShardId>,
    pub created_at_ms: i64,
    pub auto_created: bool,
    /// How long its messages are kept, in ms, when not the store's `retention_time` (`vela
    /// admin topic update --retention`); absent in metadata written before it.
    #[serde(default)]
    pub retention_ms: Option<u64>,
    /// The controller's revision of `retention_ms` (revisions ascend across all topics; drops
    /// take them too): shards apply a topic's retention only above the newest revision of the
    /// topic they applied, so an older value delivered late changes nothing. 0: set by a build
    /// without revisions, or never set (not fenced).
    #[serde(default)]
    pub retention_revision: u64,
}

/// The shortest retention a topic may have of its own (retention passes run every minute, so
/// shorter ones expire late anyway).
pub const MIN_TOPIC_RETENTION_MS: u64 = 1_000;
/// The longest: ten years.
pub const MAX_TOPIC_RETENTION_MS: u64 = 10 * 366 * 24 * 3600 * 1000;

/// Checks a topic's own retention (ms) is within [`MIN_TOPIC_RETENTION_MS`] and
/// [`MAX_TOPIC_RETENTION_MS`].
pub fn check_topic_retention(ms: u64) -> Result<u64, String> {
    if (MIN_TOPIC_RETENTION_MS..=MAX_TOPIC_RETENTION_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(format!(
            "a topic's retention must be between 1s and 3660d, not {ms} ms"
        ))
    }
}

impl TopicConfig {
    /// The shard of `queue_id`, if the queue exists.
    pub fn shard_of(&self, queue_id: u32) -> Option<ShardId> {
        self.queue_shards.get(queue_id as usize).copied()
    }
}

/// What a caller asks for when creating a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    pub name: TopicName,
    pub topic_type: TopicType,
    pub queue_count: u32,
    pub auto_created: bool,
}

/// Where a consumer group's position on a queue is moved to (UpdateOffset, `vela admin group
/// reset`), resolved by the store within the queue's retained range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetTarget {
    /// The first retained message.
    Earliest,
    /// After the last message: only messages stored from now on.
    Latest,
    /// The first message stored at or after this time (Unix ms).
    AtTime(i64),
    Offset(u64),
}

impl TopicName {
    /// A dead-letter topic (`%DLQ%<group>`, in any namespace).
    pub fn is_dead_letter(&self) -> bool {
        self.split_namespace().1.starts_with(DLQ_PREFIX)
    }
}

/// Where a consumer group starts on a queue it has not read yet (`vela admin group create
/// --from`). The start is fixed on the group's first receive there and kept in the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupStart {
    /// A young queue (its first retained message stored within the store's
    /// `new_group_start_window`) and a dead-letter topic from their first message; any other
    /// queue with the messages stored since the group was created.
    #[default]
    Auto,
    /// The first retained message.
    Earliest,
    /// The messages stored since the group was created.
    Latest,
    /// The messages stored at or after this time (Unix ms).
    At(i64),
}

impl fmt::Display for GroupStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupStart::Auto => f.write_str("auto"),
            GroupStart::Earliest => f.write_str("earliest"),
            GroupStart::Latest => f.write_str("latest"),
            GroupStart::At(ms) => write!(f, "at {ms} ms"),
        }
    }
}

/// A consumer group's metadata, owned by the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupConfig {
    pub name: GroupName,
    /// FIFO delivery: one in-flight message per message group, in order.
    pub fifo: bool,
    /// Deliveries of one message before it moves to the group's DLQ.
    pub max_attempts: u32,
    pub created_at_ms: i64,
    pub auto_created: bool,
    /// Where it starts on queues it has not read (absent in metadata written before it).
    #[serde(default)]
    pub start: GroupStart,
    /// How long a message a push consumer failed waits before its next delivery (absent in
    /// metadata written before it: the standard table).
    #[serde(default)]
    pub retry: crate::retry::RetryBackoff,
    /// Every consumer instance gets every message (ADR 0029); absent in metadata written
    /// before it: clustering, each message to one instance.
    #[serde(default)]
    pub broadcast: bool,
}

/// What a caller asks for when creating a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    pub name: GroupName,
    pub fifo: bool,
    pub max_attempts: u32,
    pub auto_created: bool,
    pub start: GroupStart,
    pub retry: crate::retry::RetryBackoff,
    /// Every consumer instance gets every message.
    pub broadcast: bool,
}

/// What an update of a group changes; `None` keeps the value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupUpdate {
    pub max_attempts: Option<u32>,
    pub retry: Option<crate::retry::RetryBackoff>,
}

/// A consumer's tag filter: `*` or `A||B||C`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TagFilter {
    All,
    Tags(Vec<String>),
}

/// Longest tag a message may carry.
pub const MAX_TAG_LEN: usize = 255;
/// Longest tag expression a subscription may have.
pub const MAX_TAG_EXPRESSION_LEN: usize = 16 * 1024;
/// Most distinct tags one tag expression may name.
pub const MAX_EXPRESSION_TAGS: usize = 256;

/// Why a filter expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal {language} expression {expression:?}: {reason}")]
pub struct FilterError {
    /// `tag` or `SQL92`.
    pub language: &'static str,
    /// The expression, cut to its first 64 characters.
    pub expression: String,
    pub reason: String,
}

impl FilterError {
    fn new(language: &'static str, expression: &str, reason: String) -> Self {
        FilterError {
            language,
            expression: expression.chars().take(64).collect(),
            reason,
        }
    }

    /// An SQL92 expression that is not one.
    pub fn sql(expression: &str, reason: String) -> Self {
        Self::new("SQL92", expression, reason)
    }
}

/// What a receive selects: a tag expression, or an SQL92 condition over the message's
/// properties ([`SqlFilter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageFilter {
    Tag(TagFilter),
    Sql(SqlFilter),
}

impl MessageFilter {
    /// Whether a message with `tag` and user `properties` passes.
    pub fn matches(&self, tag: Option<&str>, properties: &[(String, String)]) -> bool {
        match self {
            MessageFilter::Tag(tags) => tags.matches(tag),
            MessageFilter::Sql(sql) => sql.matches(tag, properties),
        }
    }
}

impl From<TagFilter> for MessageFilter {
    fn from(filter: TagFilter) -> Self {
        MessageFilter::Tag(filter)
    }
}

impl TagFilter {
    /// Parses a RocketMQ tag expression. Empty and `*` subscribe to everything. At most
    /// [`MAX_TAG_EXPRESSION_LEN`] bytes and [`MAX_EXPRESSION_TAGS`] distinct tags, each at most
    /// [`MAX_TAG_LEN`] (no message carries a longer one); repeats count once.
    pub fn parse(expression: &str) -> Result<Self, FilterError> {
        let error = |reason: &str| FilterError::new("tag", expression, reason.to_owned());
        if expression.len() > MAX_TAG_EXPRESSION_LEN {
            return Err(error("longer than 16 KiB"));
        }
        let expr = expression.trim();
        if expr.is_empty() || expr == "*" {
            return Ok(TagFilter::All);
        }
        let mut tags = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for part in expr.split("||") {
            let tag = part.trim();
            if tag.is_empty() {
                return Err(error("empty tag"));
            }
            if tag == "*" {
                return Ok(TagFilter::All);
            }
            if tag.len() > MAX_TAG_LEN {
                return Err(error("a tag is longer than 255 bytes"));
            }
            if seen.insert(tag) {
                if tags.len() == MAX_EXPRESSION_TAGS {
                    return Err(error("more than 256 distinct tags"));
                }
                tags.push(tag.to_owned());
            }
        }
        Ok(TagFilter::Tags(tags))
    }

    /// Whether a message with `tag` passes.
    pub fn matches(&self, tag: Option<&str>) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Tags(tags) => tag.is_some_and(|t| tags.iter().any(|x| x == t)),
        }
    }
}

/// The stable hash of a FIFO message group (FNV-1a, 64 bit). The proxy maps groups to queues
/// with it and the store keys FIFO lanes by it in snapshots, so it must never change.
pub fn message_group_hash(group: &str) -> u64 {
    fnv1a_64(group)
}

/// FNV-1a, 64 bit: a hash that is the same on every node, build and run (no seed), for names
/// and keys that must hash alike everywhere.
pub fn fnv1a_64(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A produced message as the system stores it. This is what goes into the Raft log, so its
/// serialized form is part of the segment format (ADR 0001): add new fields only through a
/// new record version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Client-generated id, echoed on send and delivered unchanged.
    pub message_id: String,
    pub topic: TopicName,
    pub kind: MessageKind,
    pub tag: Option<String>,
    pub keys: Vec<String>,
    /// FIFO message group (sharding key).
    pub message_group: Option<String>,
    /// For delay messages: when it becomes visible (Unix ms).
    pub delivery_timestamp_ms: Option<i64>,
    pub born_timestamp_ms: i64,
    pub born_host: String,
    pub trace_context: Option<String>,
    pub properties: Vec<(String, String)>,
    pub body: Bytes,
}

impl MessageRecord {
    /// Bytes this record holds in memory once decoded: its inline size and every allocation it
    /// owns, each with a small allocator overhead. An estimate for memory budgets (the log's
    /// caches); for small messages it is well above [`approx_size`](Self::approx_size).
    pub fn memory_size(&self) -> usize {
        /// Size-class rounding and bookkeeping of one allocation, roughly.
        const PER_ALLOCATION: usize = 16;
        fn heap(len: usize) -> usize {
            if len == 0 { 0 } else { len + PER_ALLOCATION }
        }
        let strings = |v: &[String]| {
            heap(std::mem::size_of_val(v)) + v.iter().map(|s| heap(s.len())).sum::<usize>()
        };
        std::mem::size_of::<Self>()
            + heap(self.message_id.len())
            // An `Arc<str>`: two reference counts before the text.
            + heap(self.topic.as_str().len() + 16)
            + self.tag.as_ref().map_or(0, |t| heap(t.len()))
            + strings(&self.keys)
            + self.message_group.as_ref().map_or(0, |g| heap(g.len()))
            + heap(self.born_host.len())
            + self.trace_context.as_ref().map_or(0, |t| heap(t.len()))
            + heap(std::mem::size_of_val(self.properties.as_slice()))
            + self
                .properties
                .iter()
                .map(|(k, v)| heap(k.len()) + heap(v.len()))
                .sum::<usize>()
            + heap(self.body.len())
    }

    /// Approximate bytes this record takes (body plus metadata), for size accounting.
    pub fn approx_size(&self) -> usize {
        self.body.len()
            + self.message_id.len()
            + self.tag.as_ref().map_or(0, String::len)
            + self.keys.iter().map(String::len).sum::<usize>()
            + self.message_group.as_ref().map_or(0, String::len)
            + self
                .properties
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + 64
    }
}

/// Offsets and backlog of one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    pub topic: TopicName,
    pub queue_id: u32,
    /// First offset still retained.
    pub min_offset: u64,
    /// Offset the next message will get.
    pub max_offset: u64,
    pub groups: Vec<GroupQueueStats>,
}

/// One group's position on one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupQueueStats {
    pub group: GroupName,
    pub topic: TopicName,
    pub queue_id: u32,
    /// Every message below this offset is acknowledged (or filtered out).
    pub consumer_offset: u64,
    /// Delivered and not yet acknowledged.
    pub inflight: u64,
    /// `max_offset - consumer_offset`.
    pub backlog: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broadcast_instance_is_named_after_its_client_the_same_way_everywhere() {
        let group = GroupName::new("ns%prices").expect("valid");
        // A client id of allowed characters is kept as it is.
        let plain = group.broadcast_instance("worker-1").expect("fits");
        assert_eq!(plain.as_str(), "ns%prices%BCAST%worker-1");
        assert!(plain.is_broadcast_instance());
        assert_eq!(plain.broadcast_parent(), Some(group.clone()));
        assert!(group.owns(&plain) && group.owns(&group));
        assert_eq!(plain.dead_letter_owner(), group);
        assert_eq!(
            plain.dead_letter_owner().dead_letter_topic().as_str(),
            "%DLQ%ns%prices"
        );
        // An official client's id: cleaned, and a hash keeps ids that clean alike apart.
        let a = group.broadcast_instance("host@12#0@18c").expect("fits");
        let b = group.broadcast_instance("host.12#0@18c").expect("fits");
        assert_ne!(a, b);
        assert!(
            a.as_str().starts_with("ns%prices%BCAST%host_12_0_18c-"),
            "{a}"
        );
        assert_eq!(group.broadcast_instance("host@12#0@18c"), Some(a));
        // Long ids are cut to fit; the longest group name still fits.
        let long = GroupName::new("g".repeat(MAX_BROADCAST_GROUP_LEN)).expect("valid");
        let named = long.broadcast_instance(&"x".repeat(300)).expect("fits");
        assert!(named.as_str().len() <= MAX_GROUP_LEN);
        assert_eq!(named.broadcast_parent(), Some(long));
        // Too long a group, or an instance's own name, names no instance.
        let longer = GroupName::new("g".repeat(MAX_BROADCAST_GROUP_LEN + 1)).expect("valid");
        assert_eq!(longer.broadcast_instance("worker-1"), None);
        assert_eq!(plain.broadcast_instance("worker-2"), None);
        // Other groups are their own.
        let other = GroupName::new("prices-2").expect("valid");
        assert!(!group.owns(&other));
        assert_eq!(other.broadcast_parent(), None);
        assert_eq!(other.dead_letter_owner(), other);
    }

    #[test]
    fn memory_size_counts_every_allocation_of_a_record() {
        let small = MessageRecord {
            message_id: "01ABCDEF".into(),
            topic: TopicName::new("orders").expect("valid"),
            kind: MessageKind::Normal,
            tag: None,
            keys: vec![],
            message_group: None,
            delivery_timestamp_ms: None,
            born_timestamp_ms: 1,
            born_host: "host".into(),
            trace_context: None,
            properties: vec![],
            body: Bytes::from(vec![0u8; 256]),
        };
        let base = small.memory_size();
        assert!(base >= std::mem::size_of::<MessageRecord>() + 256 + 8 + 6 + 4);
        // Each string is its own allocation, with its overhead.
        let tagged = MessageRecord {
            tag: Some("A".into()),
            keys: vec!["k1".into(), "k2".into()],
            properties: vec![("a".into(), "b".into())],
            ..small.clone()
        };
        let extra = tagged.memory_size() - base;
        let strings = 1 + 2 + 2 + 1 + 1;
        assert!(extra >= strings + 5 * 16, "{extra}");
        assert!(
            small.memory_size() > small.approx_size() * 3 / 2,
            "a small message costs far more than its bytes"
        );
    }

    #[test]
    fn names_are_validated() {
        assert!(TopicName::new("orders").is_ok());
        assert!(TopicName::new("%DLQ%billing").is_ok());
        assert!(matches!(TopicName::new(""), Err(NameError::Empty { .. })));
        assert!(matches!(
            TopicName::new("a b"),
            Err(NameError::BadChars { .. })
        ));
        assert!(matches!(
            TopicName::new("x".repeat(128)),
            Err(NameError::TooLong { .. })
        ));
        assert!(GroupName::new("g".repeat(120)).is_ok());
        assert!(GroupName::new("g".repeat(121)).is_err());
    }

    #[test]
    fn namespaces_fold_and_split() {
        let t = TopicName::from_resource("tenant1", "orders").expect("valid");
        assert_eq!(t.as_str(), "tenant1%orders");
        assert_eq!(t.split_namespace(), ("tenant1", "orders"));
        let plain = TopicName::from_resource("", "orders").expect("valid");
        assert_eq!(plain.split_namespace(), ("", "orders"));
        let dlq = GroupName::new("billing")
            .expect("valid")
            .dead_letter_topic();
        assert_eq!(dlq.as_str(), "%DLQ%billing");
        assert_eq!(dlq.split_namespace(), ("", "%DLQ%billing"));
    }

    #[test]
    fn tag_filters() {
        assert_eq!(TagFilter::parse("*"), Ok(TagFilter::All));
        assert_eq!(TagFilter::parse(""), Ok(TagFilter::All));
        let f = TagFilter::parse("A || B").expect("valid");
        assert!(f.matches(Some("A")) && f.matches(Some("B")));
        assert!(!f.matches(Some("C")) && !f.matches(None));
        assert!(TagFilter::parse("A||").is_err());
        assert_eq!(
            TagFilter::parse("B || A || B || A"),
            Ok(TagFilter::Tags(vec!["B".into(), "A".into()])),
            "repeats count once, first order kept"
        );
    }

    #[test]
    fn tag_expressions_are_bounded() {
        let many = |n: usize| {
            (0..n)
                .map(|i| format!("t{i}"))
                .collect::<Vec<_>>()
                .join("||")
        };
        assert!(TagFilter::parse(&many(MAX_EXPRESSION_TAGS)).is_ok());
        let err = TagFilter::parse(&many(MAX_EXPRESSION_TAGS + 1)).expect_err("too many");
        assert_eq!(err.reason, "more than 256 distinct tags");
        assert_eq!(err.expression.chars().count(), 64, "cut in the error");
        // Thousands of repeats of one tag are one tag (and cheap to check).
        let repeats = vec!["A"; 5000].join("||");
        assert_eq!(
            TagFilter::parse(&repeats),
            Ok(TagFilter::Tags(vec!["A".into()]))
        );
        assert!(TagFilter::parse(&"x".repeat(MAX_TAG_LEN + 1)).is_err());
        assert!(TagFilter::parse(&"A||".repeat(MAX_TAG_EXPRESSION_LEN / 3 + 1)).is_err());
    }

    #[test]
    fn message_group_hash_is_pinned() {
        // Persisted in snapshots: a change here breaks restarts.
        assert_eq!(message_group_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(message_group_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn topic_types_accept_kinds() {
        assert!(TopicType::Normal.accepts(MessageKind::Normal));
        assert!(!TopicType::Normal.accepts(MessageKind::Fifo));
        assert!(TopicType::Mixed.accepts(MessageKind::Transaction));
        assert_eq!("FIFO".parse::<TopicType>(), Ok(TopicType::Fifo));
        assert!("queue".parse::<TopicType>().is_err());
    }

    #[test]
    fn names_serde_validates() {
        let ok: TopicName = serde_json::from_str("\"orders\"").expect("valid");
        assert_eq!(ok.as_str(), "orders");
        assert!(serde_json::from_str::<TopicName>("\"bad name\"").is_err());
    }
}

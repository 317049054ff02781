//! The commands the controller's Raft log carries and what applying one returns.

use std::fmt;

use serde::{Deserialize, Serialize};
use vela_proto::auth::{
    PolicyEntry, ResourcePattern, Subject, UserInfo, UserName, UserStatus, UserType,
};
use vela_proto::retry::RetryBackoff;
use vela_proto::{
    ControllerError, GroupConfig, GroupDrop, GroupName, GroupSpec, GroupStart, RouteName, ShardId,
    TopicConfig, TopicDrop, TopicName, TopicSpec,
};

/// One change to the metadata: the openraft `AppData` of the controller group.
///
/// Every field is decided by the proposer (the leader reads the clock, defaults are resolved), so
/// applying a command is deterministic on every replica. Entries are stored with postcard, which
/// encodes the variant index: only ever ADD variants, at the end, and never change an existing
/// variant's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerCommand {
    /// Creates a topic; its queues are placed on the current shard set when applied.
    CreateTopic {
        spec: TopicSpec,
        now_ms: i64,
    },
    DeleteTopic {
        name: TopicName,
    },
    /// Creates a group that starts as `GroupStart::Auto`; `spec.max_attempts` is already
    /// resolved (never 0).
    CreateGroup {
        spec: LoggedGroup,
        now_ms: i64,
    },
    DeleteGroup {
        name: GroupName,
    },
    /// Replaces the shard set new queues are placed on (sorted, deduplicated, non-empty).
    /// Queues already placed stay where they are.
    SetShards {
        shards: Vec<ShardId>,
    },
    /// Creates a topic whose queues live on shards of `replicas` members (ADR 0013): the
    /// configured shard set when `replicas` is the number of store nodes (`stores`, as the
    /// proposer's configuration lists them; empty in standalone, where every shard has one), else
    /// shards placed for that factor, created (one per store) when there are none yet.
    CreateTopicReplicated {
        spec: TopicSpec,
        replicas: u32,
        stores: Vec<u64>,
        now_ms: i64,
    },
    /// A member of a placed shard holds it: from now on no member is told to create it empty.
    MarkShardCreated {
        shard: ShardId,
    },
    /// Drains store node `store` (ADR 0014): every placed shard with a replica on it gets
    /// another store node of `stores` (the proposer's configured store nodes) instead, and no
    /// new shard is placed on it. All or nothing; idempotent.
    DrainStore {
        store: u64,
        stores: Vec<u64>,
    },
    /// Creates a group with another start than `Auto` (`vela admin group create --from`).
    /// A controller on a build from before it cannot read this entry: create such groups
    /// once every controller runs a build that has it.
    CreateGroupStarting {
        spec: LoggedGroup,
        start: GroupStart,
        now_ms: i64,
    },
    /// Creates a user (ADR 0019); its password travels sealed.
    CreateUser {
        name: UserName,
        password: SealedSecret,
        user_type: UserType,
        status: UserStatus,
    },
    /// Changes what is `Some` of an existing user.
    UpdateUser {
        name: UserName,
        password: Option<SealedSecret>,
        user_type: Option<UserType>,
        status: Option<UserStatus>,
    },
    /// Deletes a user and its ACL.
    DeleteUser {
        name: UserName,
    },
    /// Merges `entries` into the subject's ACL (each replaces the entry of the same resource
    /// and source networks). `create`: the ACL is created when it does not exist (`acl
    /// create`); otherwise it must exist (`acl update`). The subject's user must exist.
    PutAcl {
        subject: Subject,
        entries: Vec<PolicyEntry>,
        create: bool,
    },
    /// Removes the subject's entries for `resources`, or its whole ACL when `resources` is
    /// empty.
    DeleteAcl {
        subject: Subject,
        resources: Vec<ResourcePattern>,
    },
    /// Creates a route (issue 12, ADR 0025), running, created at the proposer's clock; its
    /// secret keys travel sealed.
    CreateRoute {
        route: Box<LoggedRoute>,
    },
    /// Deletes a route.
    DeleteRoute {
        name: RouteName,
    },
    /// Pauses or resumes a route.
    SetRoutePaused {
        name: RouteName,
        paused: bool,
    },
    /// Creates a route to an HTTP target (CloudEvents), running, created at the proposer's
    /// clock. A controller on a build from before it cannot read this entry: create such routes
    /// once every controller runs a build that has it.
    CreateHttpRoute {
        route: Box<LoggedRoute>,
        http: StoredHttp,
    },
    /// Creates a group with a retry back-off other than the standard table (`vela admin group
    /// create --retry-delays | --retry-exponential`). A controller on a build from before it
    /// cannot read this entry: create such groups once every controller runs a build that has
    /// it.
    CreateGroupWithRetry {
        spec: LoggedGroup,
        start: GroupStart,
        retry: RetryBackoff,
        now_ms: i64,
    },
    /// Changes what is `Some` of an existing group (`vela admin group update`). A controller
    /// on a build from before it cannot read this entry: update groups once every controller
    /// runs a build that has it.
    UpdateGroup {
        name: GroupName,
        max_attempts: Option<u32>,
        retry: Option<RetryBackoff>,
    },
    /// Creates a broadcast group (ADR 0029: every consumer instance gets every message). A
    /// controller on a build from before it cannot read this entry: create such groups once
    /// every controller runs a build that has it.
    CreateBroadcastGroup {
        spec: LoggedGroup,
        start: GroupStart,
        retry: RetryBackoff,
        now_ms: i64,
    },
    /// Creates a route to an HTTP target whose requests carry headers, their values sealed. A
    /// controller on a build from before it cannot read this entry: create such routes once
    /// every controller runs a build that has it.
    CreateHttpRouteWithHeaders {
        route: Box<LoggedRoute>,
        http: StoredHttp,
        headers: Vec<StoredHeader>,
    },
    /// Adds a receipt key (ADR 0030), sealed, and makes it the signing key; with `first`, only
    /// into an empty keyring. A controller on a build from before it cannot read this entry:
    /// it is written once every controller runs a build that has it (the first proxy of that
    /// build to start writes it).
    AddReceiptKey {
        id: u32,
        key: SealedSecret,
        created_ms: i64,
        first: bool,
    },
    /// Removes a receipt key that no longer signs.
    RetireReceiptKey {
        id: u32,
    },
    /// Sets (or, with `None`, clears) the object-storage credentials store nodes use, the
    /// secret sealed. A controller on a build from before it cannot read this entry: set them
    /// once every controller runs a build that has it.
    SetTierCredentials {
        credentials: Option<StoredTierCredentials>,
    },
    /// Records store node `id`, one not in `[[cluster.stores]]`, at `addr` (issue 11). A
    /// controller on a build from before it cannot read this entry: scale store nodes out
    /// once every controller runs a build that has it.
    RegisterStore {
        id: u64,
        addr: String,
        now_ms: i64,
    },
    /// Moves the replica of placed shard `shard` on store node `from` to `to` (the replica
    /// balancer, issue 11: a node that joined takes its share). Refused unless `from` is a
    /// member, `to` is not and `to` is not draining. A controller on a build from before it
    /// cannot read this entry: scale store nodes out once every controller runs a build that
    /// has it.
    MoveReplica {
        shard: ShardId,
        from: u64,
        to: u64,
    },
    /// Forgets registered store node `id` (`vela admin store remove`): refused unless it is
    /// draining and no placed shard has it as a member. It leaves the draining set too, so it
    /// may register again as a new node. A controller on a build from before it cannot read
    /// this entry.
    UnregisterStore {
        id: u64,
    },
    /// Sets (or clears, `None`) the replicas a store scale-in in progress lowers the store
    /// StatefulSet to (`vela admin store scale N` below the current replicas), so a new
    /// controller leader finishes it. A controller on a build from before it cannot read this
    /// entry.
    SetStoreScaleIn {
        replicas: Option<u32>,
    },
    /// Ends the drain of store node `store` (`vela admin store undrain`): refused unless it is
    /// draining. Its placed replicas do not move back; the replica balancer evens them out. A
    /// controller on a build from before it cannot read this entry.
    UndrainStore {
        store: u64,
    },
    /// Makes each configured shard (`cluster.shards`) not yet placed a placed shard whose
    /// members are `stores` (the configured store nodes, which hold it since the cluster's
    /// first start), already created: from then on drains, repairs and the replica balancer
    /// move its replicas like any placed shard's (ADR 0032). A controller on a build from
    /// before it cannot read this entry.
    AdoptConfiguredShards {
        stores: Vec<u64>,
    },
    /// Sets how long topic `name`'s messages are kept, in ms (`None`: the store's
    /// `retention_time`); refused for a topic that does not exist. The proposer validated the
    /// value. A controller on a build from before it cannot read this entry.
    SetTopicRetention {
        name: TopicName,
        retention_ms: Option<u64>,
    },
    /// Deletes topic `name` and records that its queues are to be dropped from the shards
    /// holding them, under the next drop id (`vela_proto::TopicDrop`); the name cannot be
    /// created again until `FinishTopicDrop`. For a topic deleted before whose drop is not
    /// finished, answers that drop. A controller on a build from before it cannot read this
    /// entry.
    DeleteTopicDropping {
        name: TopicName,
        /// The proposer's clock: a revision is never below it (in thousandths of a ms), see
        /// `Metadata::next_revision`.
        now_ms: i64,
    },
    /// Drop `id` of topic `name` is done on every shard it names: forgets it (a drop with
    /// another id, or none: nothing changes).
    FinishTopicDrop {
        name: TopicName,
        id: u64,
    },
    /// As `SetTopicRetention`, under the next topic revision, which the topic records as its
    /// `retention_revision` (shards apply a topic's retention only above the newest revision
    /// of the topic they applied). A controller on a build from before it cannot read this
    /// entry.
    SetTopicRetentionRevised {
        name: TopicName,
        retention_ms: Option<u64>,
        /// As in `DeleteTopicDropping`.
        now_ms: i64,
    },
    /// Deletes consumer group `name` and records that its state is to be dropped from the
    /// shards where it can hold some (`Metadata::delete_group_dropping`), under the next
    /// revision (the counter topics' drops and retentions take theirs from); the name cannot be
    /// created again until `FinishGroupDrop`. For a group deleted before whose drop is not finished, answers that
    /// drop. A controller on a build from before it cannot read this entry.
    DeleteGroupDropping {
        name: GroupName,
        /// As in `DeleteTopicDropping`.
        now_ms: i64,
    },
    /// Drop `id` of group `name` is done on every shard it names: forgets it (a drop with
    /// another id, or none: nothing changes).
    FinishGroupDrop {
        name: GroupName,
        id: u64,
    },
}

/// The fields of a group a create entry carries, frozen as first written (postcard encodes
/// them in this order); where it starts travels beside them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedGroup {
    pub name: GroupName,
    pub fifo: bool,
    pub max_attempts: u32,
    pub auto_created: bool,
}

impl ControllerCommand {
    /// The entry that creates the group `spec` names, at `now_ms`.
    pub fn create_group(spec: GroupSpec, now_ms: i64) -> Self {
        let logged = LoggedGroup {
            name: spec.name,
            fifo: spec.fifo,
            max_attempts: spec.max_attempts,
            auto_created: spec.auto_created,
        };
        if spec.broadcast {
            return ControllerCommand::CreateBroadcastGroup {
                spec: logged,
                start: spec.start,
                retry: spec.retry,
                now_ms,
            };
        }
        match (spec.start, spec.retry) {
            (GroupStart::Auto, RetryBackoff::Standard) => ControllerCommand::CreateGroup {
                spec: logged,
                now_ms,
            },
            (start, RetryBackoff::Standard) => ControllerCommand::CreateGroupStarting {
                spec: logged,
                start,
                now_ms,
            },
            (start, retry) => ControllerCommand::CreateGroupWithRetry {
                spec: logged,
                start,
                retry,
                now_ms,
            },
        }
    }
}

use crate::metadata::{LoggedRoute, StoredHeader, StoredHttp, StoredRoute, StoredTierCredentials};
use crate::secrets::SealedSecret;

/// How a controller command is written into a log record (vela-raft's `RecordData`): an encoding
/// byte, then the postcard encoding of the enum (whose variants are only ever appended).
const COMMAND_ENCODING: u8 = 1;

impl vela_raft::entry::RecordData for ControllerCommand {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
        vela_raft::entry::encode_postcard(COMMAND_ENCODING, self, out)
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        vela_raft::entry::decode_postcard(COMMAND_ENCODING, bytes)
    }
}

impl fmt::Display for ControllerCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControllerCommand::CreateTopic { spec, .. } => {
                write!(
                    f,
                    "create-topic {} ({} queues)",
                    spec.name, spec.queue_count
                )
            }
            ControllerCommand::DeleteTopic { name } => write!(f, "delete-topic {name}"),
            ControllerCommand::CreateGroup { spec, .. } => write!(f, "create-group {}", spec.name),
            ControllerCommand::CreateGroupStarting { spec, start, .. } => {
                write!(f, "create-group {} (start {start})", spec.name)
            }
            ControllerCommand::UpdateGroup { name, .. } => write!(f, "update-group {name}"),
            ControllerCommand::CreateGroupWithRetry {
                spec, start, retry, ..
            } => write!(
                f,
                "create-group {} (start {start}, retry {})",
                spec.name,
                retry.describe()
            ),
            ControllerCommand::CreateBroadcastGroup {
                spec, start, retry, ..
            } => write!(
                f,
                "create-group {} (broadcast, start {start}, retry {})",
                spec.name,
                retry.describe()
            ),
            ControllerCommand::DeleteGroup { name } => write!(f, "delete-group {name}"),
            ControllerCommand::SetShards { shards } => write!(f, "set-shards {shards:?}"),
            ControllerCommand::CreateTopicReplicated { spec, replicas, .. } => write!(
                f,
                "create-topic {} ({} queues, {replicas} replicas)",
                spec.name, spec.queue_count
            ),
            ControllerCommand::MarkShardCreated { shard } => {
                write!(f, "mark-shard-created {shard}")
            }
            ControllerCommand::DrainStore { store, .. } => write!(f, "drain-store {store}"),
            ControllerCommand::CreateUser { name, .. } => write!(f, "create-user {name}"),
            ControllerCommand::UpdateUser { name, .. } => write!(f, "update-user {name}"),
            ControllerCommand::DeleteUser { name } => write!(f, "delete-user {name}"),
            ControllerCommand::PutAcl {
                subject, entries, ..
            } => write!(f, "put-acl {subject} ({} entries)", entries.len()),
            ControllerCommand::DeleteAcl { subject, resources } => {
                write!(f, "delete-acl {subject} ({} resources)", resources.len())
            }
            ControllerCommand::CreateRoute { route } => write!(f, "create-route {}", route.name),
            ControllerCommand::CreateHttpRoute { route, .. } => {
                write!(f, "create-route {} (HTTP)", route.name)
            }
            ControllerCommand::CreateHttpRouteWithHeaders { route, headers, .. } => {
                write!(
                    f,
                    "create-route {} (HTTP, {} headers)",
                    route.name,
                    headers.len()
                )
            }
            ControllerCommand::DeleteRoute { name } => write!(f, "delete-route {name}"),
            ControllerCommand::AddReceiptKey { id, first, .. } => {
                write!(
                    f,
                    "add-receipt-key {id}{}",
                    if *first { " (first)" } else { "" }
                )
            }
            ControllerCommand::RetireReceiptKey { id } => write!(f, "retire-receipt-key {id}"),
            ControllerCommand::SetTierCredentials { credentials } => match credentials {
                Some(c) => write!(f, "set-tier-credentials {}", c.access_key_id),
                None => write!(f, "clear-tier-credentials"),
            },
            ControllerCommand::SetRoutePaused { name, paused } => {
                write!(f, "set-route-paused {name} {paused}")
            }
            ControllerCommand::RegisterStore { id, addr, .. } => {
                write!(f, "register-store {id} at {addr}")
            }
            ControllerCommand::MoveReplica { shard, from, to } => {
                write!(f, "move-replica of shard {shard} from {from} to {to}")
            }
            ControllerCommand::UnregisterStore { id } => write!(f, "unregister-store {id}"),
            ControllerCommand::UndrainStore { store } => write!(f, "undrain-store {store}"),
            ControllerCommand::AdoptConfiguredShards { stores } => {
                write!(f, "adopt-configured-shards on {stores:?}")
            }
            ControllerCommand::DeleteTopicDropping { name, .. } => {
                write!(f, "delete-topic-dropping {name}")
            }
            ControllerCommand::FinishTopicDrop { name, id } => {
                write!(f, "finish-topic-drop {name} {id}")
            }
            ControllerCommand::DeleteGroupDropping { name, .. } => {
                write!(f, "delete-group-dropping {name}")
            }
            ControllerCommand::FinishGroupDrop { name, id } => {
                write!(f, "finish-group-drop {name} {id}")
            }
            ControllerCommand::SetTopicRetentionRevised {
                name, retention_ms, ..
            } => match retention_ms {
                Some(ms) => write!(f, "set-topic-retention-revised {name} {ms} ms"),
                None => write!(f, "set-topic-retention-revised {name} store default"),
            },
            ControllerCommand::SetTopicRetention { name, retention_ms } => match retention_ms {
                Some(ms) => write!(f, "set-topic-retention {name} {ms} ms"),
                None => write!(f, "set-topic-retention {name} store default"),
            },
            ControllerCommand::SetStoreScaleIn { replicas } => match replicas {
                Some(n) => write!(f, "set-store-scale-in {n}"),
                None => write!(f, "set-store-scale-in none"),
            },
        }
    }
}

/// What applying a command produced: the openraft response type (`R`).
pub type ControllerResponse = Result<Applied, Rejected>;

/// A command that took effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Topic(TopicConfig),
    Group(GroupConfig),
    Deleted,
    Shards(Vec<ShardId>),
    ShardCreated,
    /// A store node is draining: the placed shards that move off it.
    Drained(Vec<ShardId>),
    /// Entries that carry no command (blank and membership entries).
    Nothing,
    User(UserInfo),
    Acl(vela_proto::auth::Acl),
    Route(Box<StoredRoute>),
    /// The receipt keyring changed.
    ReceiptKeys,
    /// The tier credentials were set or cleared.
    TierCredentials,
    /// A store node was registered (or its address updated).
    StoreRegistered,
    /// A placed replica moves (the reconciler carries it out).
    ReplicaMoved,
    /// A registered store node was forgotten.
    StoreUnregistered,
    /// The target of a store scale-in was set or cleared.
    StoreScaleInSet,
    /// A store node's drain ended.
    StoreUndrained,
    /// The configured shards that became placed shards.
    ShardsAdopted(Vec<ShardId>),
    /// A topic was deleted (or had been): where its queues are to be dropped.
    TopicDropping(TopicDrop),
    /// Whether a topic's drop was recorded and is now forgotten.
    TopicDropFinished(bool),
    /// A group was deleted (or had been): where its state is to be dropped.
    GroupDropping(GroupDrop),
    /// Whether a group's drop was recorded and is now forgotten.
    GroupDropFinished(bool),
}

/// A command apply refused; the decision is part of the replicated outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejected {
    #[error("topic {0} already exists")]
    TopicExists(TopicName),
    #[error("topic {0} not found")]
    TopicNotFound(TopicName),
    #[error("consumer group {0} already exists")]
    GroupExists(GroupName),
    #[error("consumer group {0} not found")]
    GroupNotFound(GroupName),
    #[error("no shards to place the queues of topic {0} on")]
    NoShards(TopicName),
    #[error("topic {topic}: {reason}")]
    Replicas { topic: TopicName, reason: String },
    #[error("shard {0} is not a placed shard")]
    ShardNotPlaced(ShardId),
    #[error("shard id {0} belongs to a shard the controller placed; configure another id")]
    ShardIdTaken(ShardId),
    #[error("store node {0} is not one of the cluster's store nodes")]
    UnknownStore(u64),
    #[error("store node {store} cannot be drained: {reason}")]
    CannotDrain { store: u64, reason: String },
    #[error("user {0} already exists")]
    UserExists(UserName),
    #[error("user {0} not found")]
    UserNotFound(UserName),
    #[error("no ACL for {0}")]
    AclNotFound(Subject),
    #[error("ACL of {subject}: {reason}")]
    AclInvalid { subject: Subject, reason: String },
    #[error("route {0} already exists")]
    RouteExists(RouteName),
    #[error("route {0} not found")]
    RouteNotFound(RouteName),
    #[error("{0}")]
    ReceiptKeys(String),
    #[error("receipt key {0} not found")]
    ReceiptKeyNotFound(u32),
    #[error("{0}")]
    StoreInvalid(String),
    #[error(
        "topic {0} is still being deleted: its queues are not yet dropped from every shard \
         (`vela admin topic delete {0}` finishes it; the controller also retries on its own); \
         create it again afterwards"
    )]
    TopicDropping(TopicName),
    #[error(
        "consumer group {0} is still being deleted: its state is not yet dropped from every \
         shard (`vela admin group delete {0}` finishes it; the controller also retries on its \
         own); create it again afterwards"
    )]
    GroupDropping(GroupName),
}

impl From<Rejected> for ControllerError {
    fn from(rejected: Rejected) -> Self {
        match rejected {
            Rejected::TopicExists(name) => ControllerError::AlreadyExists(format!("topic {name}")),
            Rejected::TopicNotFound(name) => ControllerError::NotFound(format!("topic {name}")),
            Rejected::GroupExists(name) => {
                ControllerError::AlreadyExists(format!("consumer group {name}"))
            }
            Rejected::GroupNotFound(name) => {
                ControllerError::NotFound(format!("consumer group {name}"))
            }
            Rejected::NoShards(_) => ControllerError::Unavailable(rejected.to_string()),
            Rejected::Replicas { .. } => ControllerError::Invalid(rejected.to_string()),
            Rejected::ShardNotPlaced(_) => ControllerError::NotFound(rejected.to_string()),
            Rejected::ShardIdTaken(_) => ControllerError::Invalid(rejected.to_string()),
            Rejected::UnknownStore(_) => ControllerError::NotFound(rejected.to_string()),
            Rejected::CannotDrain { .. } => ControllerError::Invalid(rejected.to_string()),
            Rejected::UserExists(name) => ControllerError::AlreadyExists(format!("user {name}")),
            Rejected::UserNotFound(name) => ControllerError::NotFound(format!("user {name}")),
            Rejected::AclNotFound(subject) => {
                ControllerError::NotFound(format!("ACL of {subject}"))
            }
            Rejected::AclInvalid { .. } => ControllerError::Invalid(rejected.to_string()),
            Rejected::RouteExists(name) => ControllerError::AlreadyExists(format!("route {name}")),
            Rejected::RouteNotFound(name) => ControllerError::NotFound(format!("route {name}")),
            Rejected::ReceiptKeys(reason) => ControllerError::Invalid(reason),
            Rejected::ReceiptKeyNotFound(id) => {
                ControllerError::NotFound(format!("receipt key {id}"))
            }
            Rejected::StoreInvalid(reason) => ControllerError::Invalid(reason),
            Rejected::TopicDropping(_) | Rejected::GroupDropping(_) => {
                ControllerError::BeingDeleted(rejected.to_string())
            }
        }
    }
}

//! `StoreApi` values on the wire (`vela.store.v1`): conversions between the domain types and the
//! generated messages, and between `StoreError` and a gRPC status (its details carry a
//! `StoreFailure`, so the caller gets the same error back, leader hint included). Incoming
//! messages are validated here, once: names, enum values, bounds.

use std::time::Duration;

use prost::Message as _;
use tonic::{Code, Status};

use crate::client_id::ClientId;
use crate::domain::{
    GroupName, GroupQueueStats, GroupStart, MessageFilter, MessageKind, MessageRecord,
    OffsetTarget, QueueStats, SqlFilter, TagFilter, TopicName,
};
use crate::pb::store as pb;
use crate::receipt::ReceiptTicket;
use crate::store_api::{
    AppendOutcome, AppendRequest, Delivery, OpenMode, PopRequest, PullRequest, Pulled,
    PulledMessage, QueueSelector, StoreError, TransactionCheck, TransactionResolution,
};

/// Why a wire message is not a valid domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

impl From<WireError> for Status {
    fn from(e: WireError) -> Self {
        Status::invalid_argument(e.0)
    }
}

impl From<WireError> for StoreError {
    fn from(e: WireError) -> Self {
        StoreError::Internal(format!("a store node sent an invalid reply: {}", e.0))
    }
}

fn topic(name: &str) -> Result<TopicName, WireError> {
    TopicName::new(name).map_err(|e| WireError(e.to_string()))
}

fn group(name: &str) -> Result<GroupName, WireError> {
    GroupName::new(name).map_err(|e| WireError(e.to_string()))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn kind_to_wire(kind: MessageKind) -> pb::MessageKind {
    match kind {
        MessageKind::Normal => pb::MessageKind::Normal,
        MessageKind::Fifo => pb::MessageKind::Fifo,
        MessageKind::Delay => pb::MessageKind::Delay,
        MessageKind::Transaction => pb::MessageKind::Transaction,
        MessageKind::Priority => pb::MessageKind::Priority,
    }
}

fn kind_from_wire(kind: i32) -> Result<MessageKind, WireError> {
    match pb::MessageKind::try_from(kind) {
        Ok(pb::MessageKind::Normal) => Ok(MessageKind::Normal),
        Ok(pb::MessageKind::Fifo) => Ok(MessageKind::Fifo),
        Ok(pb::MessageKind::Delay) => Ok(MessageKind::Delay),
        Ok(pb::MessageKind::Transaction) => Ok(MessageKind::Transaction),
        Ok(pb::MessageKind::Priority) => Ok(MessageKind::Priority),
        _ => Err(WireError(format!("unknown message kind {kind}"))),
    }
}

pub fn message_to_wire(m: &MessageRecord) -> pb::Message {
    pb::Message {
        message_id: m.message_id.clone(),
        topic: m.topic.as_str().to_owned(),
        kind: kind_to_wire(m.kind) as i32,
        tag: m.tag.clone(),
        keys: m.keys.clone(),
        message_group: m.message_group.clone(),
        delivery_timestamp_ms: m.delivery_timestamp_ms,
        born_timestamp_ms: m.born_timestamp_ms,
        born_host: m.born_host.clone(),
        trace_context: m.trace_context.clone(),
        properties: m
            .properties
            .iter()
            .map(|(key, value)| pb::Property {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        body: m.body.clone(),
    }
}

pub fn message_from_wire(m: pb::Message) -> Result<MessageRecord, WireError> {
    Ok(MessageRecord {
        topic: topic(&m.topic)?,
        kind: kind_from_wire(m.kind)?,
        message_id: m.message_id,
        tag: m.tag,
        keys: m.keys,
        message_group: m.message_group,
        delivery_timestamp_ms: m.delivery_timestamp_ms,
        born_timestamp_ms: m.born_timestamp_ms,
        born_host: m.born_host,
        trace_context: m.trace_context,
        properties: m.properties.into_iter().map(|p| (p.key, p.value)).collect(),
        body: m.body,
    })
}

pub fn append_to_wire(req: &AppendRequest) -> pb::AppendRequest {
    pb::AppendRequest {
        topic: req.topic.as_str().to_owned(),
        queue_id: req.queue_id,
        shard: req.shard,
        messages: req.messages.iter().map(message_to_wire).collect(),
        client_id: req
            .client_id
            .as_ref()
            .map_or_else(String::new, |c| c.as_str().to_owned()),
    }
}

pub fn append_from_wire(req: pb::AppendRequest) -> Result<AppendRequest, WireError> {
    Ok(AppendRequest {
        topic: topic(&req.topic)?,
        queue_id: req.queue_id,
        shard: req.shard,
        messages: req
            .messages
            .into_iter()
            .map(message_from_wire)
            .collect::<Result<_, _>>()?,
        client_id: if req.client_id.is_empty() {
            None
        } else {
            Some(ClientId::new(&req.client_id).map_err(|e| WireError(e.to_string()))?)
        },
    })
}

pub fn outcome_to_wire(o: &AppendOutcome) -> pb::AppendOutcome {
    pb::AppendOutcome {
        offset: o.offset,
        transaction_id: o.transaction_id.clone(),
        recall_handle: o.recall_handle.clone(),
    }
}

pub fn outcome_from_wire(o: pb::AppendOutcome) -> AppendOutcome {
    AppendOutcome {
        offset: o.offset,
        transaction_id: o.transaction_id,
        recall_handle: o.recall_handle,
    }
}

pub fn pop_to_wire(req: &PopRequest) -> pb::PopRequest {
    pb::PopRequest {
        group: req.group.as_str().to_owned(),
        topic: req.topic.as_str().to_owned(),
        queue_id: match req.queues {
            QueueSelector::All | QueueSelector::HighestFirst => None,
            QueueSelector::One(q) => Some(q),
        },
        highest_first: req.queues == QueueSelector::HighestFirst,
        max_messages: req.max_messages,
        invisible_ms: millis(req.invisible),
        tags: filter_to_wire(&req.filter).0,
        sql: filter_to_wire(&req.filter).1,
        fifo: req.fifo,
        max_attempts: req.max_attempts,
        wait_ms: millis(req.wait),
        shard: 0,
        group_created_ms: req.group_created_ms,
        group_start: group_start_to_wire(req.group_start).0,
        group_start_ms: group_start_to_wire(req.group_start).1,
        client_id: req
            .client_id
            .as_ref()
            .map_or_else(String::new, |c| c.as_str().to_owned()),
    }
}

/// A filter as the wire carries it: tags (none: every tag) or an SQL92 expression.
fn filter_to_wire(filter: &MessageFilter) -> (Vec<String>, String) {
    match filter {
        MessageFilter::Tag(TagFilter::Tags(tags)) => (tags.clone(), String::new()),
        MessageFilter::Tag(TagFilter::All) => (Vec::new(), String::new()),
        MessageFilter::Sql(sql) => (Vec::new(), sql.expression().to_owned()),
    }
}

fn filter_from_wire(tags: Vec<String>, sql: &str) -> Result<MessageFilter, WireError> {
    if tags.iter().any(|t| t.is_empty()) {
        return Err(WireError("a tag filter holds an empty tag".into()));
    }
    if !sql.is_empty() {
        if !tags.is_empty() {
            return Err(WireError(
                "a receive has both a tag and an SQL92 filter".into(),
            ));
        }
        return Ok(MessageFilter::Sql(
            SqlFilter::parse(sql).map_err(|e| WireError(e.to_string()))?,
        ));
    }
    Ok(if tags.is_empty() {
        MessageFilter::Tag(TagFilter::All)
    } else {
        MessageFilter::Tag(TagFilter::Tags(tags))
    })
}

fn check_batch(max_messages: u32) -> Result<(), WireError> {
    if max_messages == 0 || max_messages > crate::domain::MAX_RECEIVE_BATCH {
        return Err(WireError(format!(
            "receive of {max_messages} messages is outside 1..={}",
            crate::domain::MAX_RECEIVE_BATCH
        )));
    }
    Ok(())
}

pub fn pull_to_wire(req: &PullRequest) -> pb::PullRequest {
    let (tags, sql) = filter_to_wire(&req.filter);
    pb::PullRequest {
        topic: req.topic.as_str().to_owned(),
        queue_id: req.queue_id,
        shard: req.shard,
        offset: req.offset,
        max_messages: req.max_messages,
        tags,
        sql,
        wait_ms: millis(req.wait),
    }
}

pub fn pull_from_wire(req: pb::PullRequest) -> Result<PullRequest, WireError> {
    check_batch(req.max_messages)?;
    Ok(PullRequest {
        topic: topic(&req.topic)?,
        queue_id: req.queue_id,
        shard: req.shard,
        offset: req.offset,
        max_messages: req.max_messages,
        filter: filter_from_wire(req.tags, &req.sql)?,
        wait: Duration::from_millis(req.wait_ms),
    })
}

pub fn pulled_to_wire(p: &Pulled) -> pb::PullReply {
    pb::PullReply {
        messages: p
            .messages
            .iter()
            .map(|m| pb::PulledMessage {
                offset: m.offset,
                store_timestamp_ms: m.store_timestamp_ms,
                message: Some(message_to_wire(&m.message)),
            })
            .collect(),
        next_offset: p.next_offset,
        min_offset: p.min_offset,
        max_offset: p.max_offset,
    }
}

pub fn pulled_from_wire(p: pb::PullReply) -> Result<Pulled, WireError> {
    let messages = p
        .messages
        .into_iter()
        .map(|m| {
            let message = m
                .message
                .ok_or_else(|| WireError("a pulled message without its message".into()))?;
            Ok(PulledMessage {
                offset: m.offset,
                store_timestamp_ms: m.store_timestamp_ms,
                message: message_from_wire(message)?,
            })
        })
        .collect::<Result<_, WireError>>()?;
    Ok(Pulled {
        messages,
        next_offset: p.next_offset,
        min_offset: p.min_offset,
        max_offset: p.max_offset,
    })
}

pub fn pop_from_wire(req: pb::PopRequest) -> Result<PopRequest, WireError> {
    check_batch(req.max_messages)?;
    let filter = filter_from_wire(req.tags, &req.sql)?;
    Ok(PopRequest {
        group: group(&req.group)?,
        topic: topic(&req.topic)?,
        queues: match (req.queue_id, req.highest_first) {
            (Some(q), _) => QueueSelector::One(q),
            (None, true) => QueueSelector::HighestFirst,
            (None, false) => QueueSelector::All,
        },
        max_messages: req.max_messages,
        invisible: Duration::from_millis(req.invisible_ms),
        filter,
        fifo: req.fifo,
        max_attempts: req.max_attempts,
        wait: Duration::from_millis(req.wait_ms),
        group_created_ms: req.group_created_ms,
        group_start: group_start_from_wire(req.group_start, req.group_start_ms)?,
        // A receive on the wire addresses the one shard it names.
        shards: vec![req.shard],
        client_id: if req.client_id.is_empty() {
            None
        } else {
            Some(ClientId::new(&req.client_id).map_err(|e| WireError(e.to_string()))?)
        },
    })
}

pub fn ticket_to_wire(t: &ReceiptTicket) -> pb::Ticket {
    pb::Ticket {
        shard: t.shard,
        group: t.group.as_str().to_owned(),
        topic: t.topic.as_str().to_owned(),
        queue_id: t.queue_id,
        offset: t.offset,
        delivery_id: t.delivery_id,
        visible_at_ms: t.visible_at_ms,
    }
}

pub fn ticket_from_wire(t: Option<pb::Ticket>) -> Result<ReceiptTicket, WireError> {
    let t = t.ok_or_else(|| WireError("missing ticket".into()))?;
    Ok(ReceiptTicket {
        shard: t.shard,
        group: group(&t.group)?,
        topic: topic(&t.topic)?,
        queue_id: t.queue_id,
        offset: t.offset,
        delivery_id: t.delivery_id,
        visible_at_ms: t.visible_at_ms,
    })
}

pub fn delivery_to_wire(d: &Delivery) -> pb::Delivery {
    pb::Delivery {
        topic: d.topic.as_str().to_owned(),
        queue_id: d.queue_id,
        offset: d.offset,
        store_timestamp_ms: d.store_timestamp_ms,
        attempt: d.attempt,
        invisible_ms: millis(d.invisible),
        ticket: Some(ticket_to_wire(&d.ticket)),
        message: Some(message_to_wire(&d.message)),
        transaction_id: d.transaction_id.clone(),
    }
}

pub fn delivery_from_wire(d: pb::Delivery) -> Result<Delivery, WireError> {
    Ok(Delivery {
        topic: topic(&d.topic)?,
        queue_id: d.queue_id,
        offset: d.offset,
        store_timestamp_ms: d.store_timestamp_ms,
        attempt: d.attempt,
        invisible: Duration::from_millis(d.invisible_ms),
        ticket: ticket_from_wire(d.ticket)?,
        message: message_from_wire(
            d.message
                .ok_or_else(|| WireError("delivery without a message".into()))?,
        )?,
        transaction_id: d.transaction_id.filter(|t| !t.is_empty()),
    })
}

pub fn check_to_wire(c: &TransactionCheck) -> pb::TransactionCheck {
    pb::TransactionCheck {
        topic: c.topic.as_str().to_owned(),
        transaction_id: c.transaction_id.clone(),
        message: Some(message_to_wire(&c.message)),
        store_timestamp_ms: c.store_timestamp_ms,
        check: c.check,
    }
}

pub fn check_from_wire(c: pb::TransactionCheck) -> Result<TransactionCheck, WireError> {
    let message = c
        .message
        .ok_or_else(|| WireError("transaction check without its message".into()))?;
    if c.transaction_id.is_empty() {
        return Err(WireError(
            "transaction check without a transaction id".into(),
        ));
    }
    Ok(TransactionCheck {
        topic: topic(&c.topic)?,
        transaction_id: c.transaction_id,
        message: message_from_wire(message)?,
        store_timestamp_ms: c.store_timestamp_ms,
        check: c.check,
    })
}

pub fn resolution_to_wire(r: TransactionResolution) -> pb::Resolution {
    match r {
        TransactionResolution::Commit => pb::Resolution::Commit,
        TransactionResolution::Rollback => pb::Resolution::Rollback,
    }
}

pub fn resolution_from_wire(r: i32) -> Result<TransactionResolution, WireError> {
    match pb::Resolution::try_from(r) {
        Ok(pb::Resolution::Commit) => Ok(TransactionResolution::Commit),
        Ok(pb::Resolution::Rollback) => Ok(TransactionResolution::Rollback),
        _ => Err(WireError(format!("unknown transaction resolution {r}"))),
    }
}

pub fn stats_to_wire(s: &QueueStats) -> pb::QueueStats {
    pb::QueueStats {
        topic: s.topic.as_str().to_owned(),
        queue_id: s.queue_id,
        min_offset: s.min_offset,
        max_offset: s.max_offset,
        groups: s
            .groups
            .iter()
            .map(|g| pb::GroupQueueStats {
                group: g.group.as_str().to_owned(),
                topic: g.topic.as_str().to_owned(),
                queue_id: g.queue_id,
                consumer_offset: g.consumer_offset,
                inflight: g.inflight,
                backlog: g.backlog,
            })
            .collect(),
    }
}

pub fn stats_from_wire(s: pb::QueueStats) -> Result<QueueStats, WireError> {
    Ok(QueueStats {
        topic: topic(&s.topic)?,
        queue_id: s.queue_id,
        min_offset: s.min_offset,
        max_offset: s.max_offset,
        groups: s
            .groups
            .into_iter()
            .map(|g| {
                Ok(GroupQueueStats {
                    group: group(&g.group)?,
                    topic: topic(&g.topic)?,
                    queue_id: g.queue_id,
                    consumer_offset: g.consumer_offset,
                    inflight: g.inflight,
                    backlog: g.backlog,
                })
            })
            .collect::<Result<_, WireError>>()?,
    })
}

pub fn topic_from_wire(name: &str) -> Result<TopicName, WireError> {
    topic(name)
}

pub fn group_from_wire(name: &str) -> Result<GroupName, WireError> {
    group(name)
}

/// The status a store node answers a failed call with.
pub fn error_to_status(err: &StoreError) -> Status {
    let (code, failure) = error_to_failure(err);
    Status::with_details(code, err.to_string(), failure.encode_to_vec().into())
}

/// `err` as the `StoreFailure` that carries it over the wire, and the status code it goes with.
pub fn error_to_failure(err: &StoreError) -> (Code, pb::StoreFailure) {
    use pb::store_failure::Kind;
    let mut failure = pb::StoreFailure {
        message: err.to_string(),
        ..Default::default()
    };
    let (code, kind) = match err {
        StoreError::StaleReceipt(_) => (Code::FailedPrecondition, Kind::StaleReceipt),
        StoreError::TransactionNotFound(id) => {
            failure.topic = id.clone();
            (Code::NotFound, Kind::TransactionNotFound)
        }
        StoreError::MessageNotFound(handle) => {
            failure.topic = handle.clone();
            (Code::NotFound, Kind::MessageNotFound)
        }
        StoreError::QueueNotFound { topic, queue_id } => {
            failure.topic = topic.as_str().to_owned();
            failure.queue_id = *queue_id;
            (Code::NotFound, Kind::QueueNotFound)
        }
        StoreError::NotLeader { shard, leader } => {
            failure.shard = *shard;
            failure.leader = *leader;
            (Code::Unavailable, Kind::NotLeader)
        }
        StoreError::Unavailable(_) => (Code::Unavailable, Kind::Unavailable),
        StoreError::Invalid(_) => (Code::InvalidArgument, Kind::Invalid),
        StoreError::Internal(_) => (Code::Internal, Kind::Internal),
        StoreError::ReplicaLost(_) => (Code::FailedPrecondition, Kind::ReplicaLost),
    };
    failure.kind = kind as i32;
    (code, failure)
}

/// The `StoreError` behind a status from a store node. A status without our details (the call
/// never reached a store: a refused connection, a timeout) is `Unavailable` when retrying can
/// help and `Internal` otherwise.
pub fn status_to_error(status: &Status) -> StoreError {
    let Ok(failure) = pb::StoreFailure::decode(status.details()) else {
        return transport_error(status);
    };
    if failure.kind == 0 && status.details().is_empty() {
        return transport_error(status);
    }
    failure_to_error(failure)
}

/// The `StoreError` a `StoreFailure` carries.
pub fn failure_to_error(failure: pb::StoreFailure) -> StoreError {
    use pb::store_failure::Kind;
    let message = || {
        // The message is the error's Display; keep only what follows its prefix.
        failure
            .message
            .split_once(": ")
            .map_or(failure.message.clone(), |(_, rest)| rest.to_owned())
    };
    match Kind::try_from(failure.kind) {
        Ok(Kind::StaleReceipt) => StoreError::StaleReceipt(message()),
        Ok(Kind::TransactionNotFound) => StoreError::TransactionNotFound(failure.topic),
        Ok(Kind::MessageNotFound) => StoreError::MessageNotFound(failure.topic),
        Ok(Kind::QueueNotFound) => match TopicName::new(&failure.topic) {
            Ok(topic) => StoreError::QueueNotFound {
                topic,
                queue_id: failure.queue_id,
            },
            Err(_) => StoreError::Internal(failure.message),
        },
        Ok(Kind::NotLeader) => StoreError::NotLeader {
            shard: failure.shard,
            leader: failure.leader,
        },
        Ok(Kind::Unavailable) => StoreError::Unavailable(message()),
        Ok(Kind::Invalid) => StoreError::Invalid(message()),
        Ok(Kind::Internal) => StoreError::Internal(message()),
        Ok(Kind::ReplicaLost) => StoreError::ReplicaLost(message()),
        _ => StoreError::Internal(failure.message),
    }
}

/// One append's result as an `AppendMany` reply carries it.
pub fn append_result_to_wire(result: &Result<Vec<AppendOutcome>, StoreError>) -> pb::AppendResult {
    use pb::append_result::Result as Wire;
    pb::AppendResult {
        result: Some(match result {
            Ok(outcomes) => Wire::Appended(pb::AppendReply {
                outcomes: outcomes.iter().map(outcome_to_wire).collect(),
            }),
            Err(err) => Wire::Failed(error_to_failure(err).1),
        }),
    }
}

/// One append's result from an `AppendMany` reply.
pub fn append_result_from_wire(result: pb::AppendResult) -> Result<Vec<AppendOutcome>, StoreError> {
    use pb::append_result::Result as Wire;
    match result.result {
        Some(Wire::Appended(reply)) => {
            Ok(reply.outcomes.into_iter().map(outcome_from_wire).collect())
        }
        Some(Wire::Failed(failure)) => Err(failure_to_error(failure)),
        None => Err(StoreError::Internal(
            "a store node answered an append with neither outcomes nor a failure".into(),
        )),
    }
}

/// One ack's result in an `AckMany` reply.
pub fn ack_result_to_wire(result: &Result<(), StoreError>) -> pb::AckResult {
    use pb::ack_result::Result as Wire;
    pb::AckResult {
        result: Some(match result {
            Ok(()) => Wire::Acked(pb::Empty {}),
            Err(err) => Wire::Failed(error_to_failure(err).1),
        }),
    }
}

/// One ack's result from an `AckMany` reply.
pub fn ack_result_from_wire(result: pb::AckResult) -> Result<(), StoreError> {
    use pb::ack_result::Result as Wire;
    match result.result {
        Some(Wire::Acked(_)) => Ok(()),
        Some(Wire::Failed(failure)) => Err(failure_to_error(failure)),
        None => Err(StoreError::Internal(
            "a store node answered an ack with neither success nor a failure".into(),
        )),
    }
}

fn transport_error(status: &Status) -> StoreError {
    let what = format!("store node: {}: {}", status.code(), status.message());
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            StoreError::Unavailable(what)
        }
        Code::InvalidArgument => StoreError::Invalid(what),
        _ => StoreError::Internal(what),
    }
}

#[cfg(test)]
mod tests;

/// Most members a shard may have.
pub const MAX_REPLICAS: usize = 7;

fn replicas_to_wire(replicas: &std::collections::BTreeMap<u64, String>) -> Vec<pb::ShardReplica> {
    replicas
        .iter()
        .map(|(&id, addr)| pb::ShardReplica {
            id,
            addr: addr.clone(),
        })
        .collect()
}

fn replicas_from_wire(
    shard: crate::ShardId,
    wire: Vec<pb::ShardReplica>,
) -> Result<std::collections::BTreeMap<u64, String>, WireError> {
    if wire.is_empty() || wire.len() > MAX_REPLICAS {
        return Err(WireError(format!(
            "shard {shard} names {} replicas; a shard has 1 to {MAX_REPLICAS}",
            wire.len()
        )));
    }
    let mut replicas = std::collections::BTreeMap::new();
    for r in wire {
        if r.addr.is_empty() {
            return Err(WireError(format!("replica {} has no address", r.id)));
        }
        if replicas.insert(r.id, r.addr).is_some() {
            return Err(WireError(format!("replica {} is named twice", r.id)));
        }
    }
    Ok(replicas)
}

/// A shard to open on a node: its id, its members (node id → address) and how to open it.
pub fn open_shard_to_wire(
    shard: crate::ShardId,
    replicas: &std::collections::BTreeMap<u64, String>,
    mode: OpenMode,
) -> pb::OpenShardRequest {
    pb::OpenShardRequest {
        shard,
        replicas: replicas_to_wire(replicas),
        initialize: mode == OpenMode::Create,
        join: mode == OpenMode::Join,
    }
}

pub fn open_shard_from_wire(
    req: pb::OpenShardRequest,
) -> Result<
    (
        crate::ShardId,
        std::collections::BTreeMap<u64, String>,
        OpenMode,
    ),
    WireError,
> {
    let mode = match (req.initialize, req.join) {
        (true, true) => {
            return Err(WireError(format!(
                "shard {}: a replica is either created or joins, not both",
                req.shard
            )));
        }
        (true, false) => OpenMode::Create,
        (false, true) => OpenMode::Join,
        (false, false) => OpenMode::Resume,
    };
    Ok((
        req.shard,
        replicas_from_wire(req.shard, req.replicas)?,
        mode,
    ))
}

/// A shard's members after a membership change.
pub fn change_members_to_wire(
    shard: crate::ShardId,
    replicas: &std::collections::BTreeMap<u64, String>,
) -> pb::ChangeMembersRequest {
    pb::ChangeMembersRequest {
        shard,
        replicas: replicas_to_wire(replicas),
    }
}

pub fn change_members_from_wire(
    req: pb::ChangeMembersRequest,
) -> Result<(crate::ShardId, std::collections::BTreeMap<u64, String>), WireError> {
    Ok((req.shard, replicas_from_wire(req.shard, req.replicas)?))
}

/// A reset target on the wire: `(to, at_ms, offset)` of a `ResetOffsetRequest`.
pub fn offset_target_to_wire(to: OffsetTarget) -> (u32, i64, u64) {
    match to {
        OffsetTarget::Earliest => (1, 0, 0),
        OffsetTarget::Latest => (2, 0, 0),
        OffsetTarget::AtTime(at_ms) => (3, at_ms, 0),
        OffsetTarget::Offset(offset) => (4, 0, offset),
    }
}

pub fn offset_target_from_wire(
    to: u32,
    at_ms: i64,
    offset: u64,
) -> Result<OffsetTarget, WireError> {
    match to {
        1 => Ok(OffsetTarget::Earliest),
        2 => Ok(OffsetTarget::Latest),
        3 => Ok(OffsetTarget::AtTime(at_ms)),
        4 => Ok(OffsetTarget::Offset(offset)),
        other => Err(WireError(format!("unknown reset target {other}"))),
    }
}

/// A group's start on the wire: `(start, start_at_ms)` (0 auto, 1 earliest, 2 latest, 3 at).
pub fn group_start_to_wire(start: GroupStart) -> (u32, i64) {
    match start {
        GroupStart::Auto => (0, 0),
        GroupStart::Earliest => (1, 0),
        GroupStart::Latest => (2, 0),
        GroupStart::At(ms) => (3, ms),
    }
}

pub fn group_start_from_wire(start: u32, at_ms: i64) -> Result<GroupStart, WireError> {
    match start {
        0 => Ok(GroupStart::Auto),
        1 => Ok(GroupStart::Earliest),
        2 => Ok(GroupStart::Latest),
        3 => Ok(GroupStart::At(at_ms)),
        other => Err(WireError(format!("unknown group start {other}"))),
    }
}

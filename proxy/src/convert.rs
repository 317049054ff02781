//! Validation at the boundary: protobuf requests become domain values here, once, and
//! deliveries become wire messages. Everything is a plain function, so every rule is unit
//! tested without a server.

use std::collections::HashMap;
use std::time::Duration;

use md5::{Digest as _, Md5};
use vela_proto::pb::rocketmq::{self as pb, Code, DigestType, Encoding, FilterType, MessageType};
use vela_proto::store_api::{Delivery, PulledMessage, TransactionCheck};
use vela_proto::{
    CHECK_AFTER_PROPERTY, DLQ_PREFIX, GroupConfig, GroupName, MAX_CHECK_AFTER, MAX_INVISIBLE,
    MAX_RECEIVE_BATCH, MAX_TAG_LEN, MIN_INVISIBLE, MessageFilter, MessageKind, MessageRecord,
    PRIORITY_PROPERTY, SqlFilter, TagFilter, TopicName, TopicType,
};

use crate::config::ProxyConfig;
use crate::route::{message_type_of, topic_resource};
use crate::status::RpcError;

/// The user property a delivered message with a message group carries it in, as Apache's
/// broker adds it (the official clients' tests read it).
pub(crate) const SHARDING_KEY_PROPERTY: &str = "__SHARDINGKEY";
/// The user property a delivered transactional message carries its transaction id in.
pub(crate) const TRANSACTION_ID_PROPERTY: &str = "__transactionId__";
/// Most keys one message may carry.
const MAX_KEYS: usize = 64;
/// Longest key.
const MAX_KEY_LEN: usize = 255;
/// Longest message id (the clients' ids are 32 or 34 characters).
const MAX_MESSAGE_ID_LEN: usize = 128;
/// Most messages one SendMessage may carry.
pub(crate) const MAX_SEND_BATCH: usize = 1024;
/// Most entries one AckMessage may carry.
pub(crate) const MAX_ACK_BATCH: usize = 1024;

/// A wire duration; negative or out-of-range values are rejected.
pub(crate) fn duration_from_pb(d: &prost_types::Duration) -> Option<Duration> {
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    Some(Duration::new(secs, nanos))
}

pub(crate) fn duration_to_pb(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Unix milliseconds of a wire timestamp (saturating; out-of-range nanos are clamped).
pub(crate) fn timestamp_to_ms(t: &prost_types::Timestamp) -> i64 {
    let nanos = i64::from(t.nanos.clamp(0, 999_999_999));
    t.seconds
        .saturating_mul(1000)
        .saturating_add(nanos / 1_000_000)
}

pub(crate) fn ms_to_timestamp(ms: i64) -> prost_types::Timestamp {
    // rem_euclid keeps nanos in 0..1e9 for times before the epoch too.
    let nanos = i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0);
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos,
    }
}

/// The namespace of a resource: its own, else the `x-mq-namespace` header.
fn namespace_of<'a>(resource: &'a pb::Resource, header_namespace: &'a str) -> &'a str {
    if resource.resource_namespace.is_empty() {
        header_namespace
    } else {
        &resource.resource_namespace
    }
}

/// A topic from a request resource (`ILLEGAL_TOPIC` when absent or invalid).
pub(crate) fn topic_name(
    resource: Option<&pb::Resource>,
    header_namespace: &str,
) -> Result<TopicName, RpcError> {
    let resource =
        resource.ok_or_else(|| RpcError::new(Code::IllegalTopic, "topic is required"))?;
    Ok(TopicName::from_resource(
        namespace_of(resource, header_namespace),
        &resource.name,
    )?)
}

/// A consumer group from a request resource (`ILLEGAL_CONSUMER_GROUP` when absent or invalid).
pub(crate) fn group_name(
    resource: Option<&pb::Resource>,
    header_namespace: &str,
) -> Result<GroupName, RpcError> {
    let resource = resource
        .ok_or_else(|| RpcError::new(Code::IllegalConsumerGroup, "consumer group is required"))?;
    let name = GroupName::from_resource(namespace_of(resource, header_namespace), &resource.name)?;
    if name.is_broadcast_instance() {
        return Err(RpcError::new(
            Code::IllegalConsumerGroup,
            format!(
                "consumer group {name} holds {}, which names broadcast groups' instances",
                vela_proto::BROADCAST_MARKER
            ),
        ));
    }
    Ok(name)
}

/// The name the store keeps `group`'s positions under for the calling client: for a broadcast
/// group the caller's own instance (ADR 0029; the client id names it, so every proxy finds
/// the same one), for any other group its own name.
pub(crate) fn positions_of(group: &GroupConfig, client_id: &str) -> Result<GroupName, RpcError> {
    if !group.broadcast {
        return Ok(group.name.clone());
    }
    group.name.broadcast_instance(client_id).ok_or_else(|| {
        RpcError::new(
            Code::IllegalConsumerGroup,
            format!(
                "broadcast group {} has a name longer than {} characters",
                group.name,
                vela_proto::MAX_BROADCAST_GROUP_LEN
            ),
        )
    })
}

/// Whether a receipt's topic is the one a request names. Lenient on the namespace: a
/// dead-letter topic (`%DLQ%...`) is never namespaced, and the handle itself is signed, so
/// the check only catches requests that mix up their fields.
pub(crate) fn same_topic(ticket_topic: &TopicName, requested: &TopicName, bare_name: &str) -> bool {
    ticket_topic == requested || ticket_topic.as_str() == bare_name
}

/// Limits applied to produced messages, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MessageLimits {
    pub max_body_bytes: usize,
    pub max_delay: Duration,
    pub max_property_bytes: usize,
    pub max_properties: usize,
    pub max_message_group_len: usize,
}

impl From<&ProxyConfig> for MessageLimits {
    fn from(c: &ProxyConfig) -> Self {
        Self {
            max_body_bytes: c.max_body_bytes(),
            max_delay: c.max_delay,
            max_property_bytes: usize::try_from(c.max_property_bytes.as_u64())
                .unwrap_or(usize::MAX),
            max_properties: c.max_properties,
            max_message_group_len: c.max_message_group_len,
        }
    }
}

/// A produced message, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProducedMessage {
    pub record: MessageRecord,
    /// The wire `queue_id` the producer filled in (0 when it did not).
    pub requested_queue: i32,
    /// A priority message's priority (0 or more).
    pub priority: Option<i32>,
}

/// The message id of a wire message, for echoing in results even when it is rejected.
pub(crate) fn message_id_of(msg: &pb::Message) -> &str {
    msg.system_properties
        .as_ref()
        .map_or("", |p| p.message_id.as_str())
}

/// Validates one produced message into a record. The topic's type is checked separately
/// ([`check_topic_accepts`]) once the topic is known.
pub(crate) fn produced_message(
    msg: &pb::Message,
    header_namespace: &str,
    limits: &MessageLimits,
    now_ms: i64,
) -> Result<ProducedMessage, RpcError> {
    let topic = topic_name(msg.topic.as_ref(), header_namespace)?;
    if topic.as_str().starts_with(DLQ_PREFIX) {
        return Err(RpcError::new(
            Code::Forbidden,
            format!("{topic} is a dead-letter topic: only its group's exhausted messages go there"),
        ));
    }
    let props = msg
        .system_properties
        .as_ref()
        .ok_or_else(|| RpcError::bad_request("message has no system properties"))?;
    if props.message_id.trim().is_empty() {
        return Err(RpcError::new(Code::IllegalMessageId, "message id is empty"));
    }
    if props.message_id.len() > MAX_MESSAGE_ID_LEN {
        return Err(RpcError::new(
            Code::IllegalMessageId,
            format!("message id is longer than {MAX_MESSAGE_ID_LEN} bytes"),
        ));
    }
    if props.body_encoding == Encoding::Gzip as i32 {
        return Err(RpcError::new(
            Code::Unsupported,
            "gzip-encoded bodies are not supported",
        ));
    }
    if msg.body.is_empty() {
        return Err(RpcError::new(
            Code::MessageBodyEmpty,
            "message body is empty",
        ));
    }
    if msg.body.len() > limits.max_body_bytes {
        return Err(RpcError::new(
            Code::MessageBodyTooLarge,
            format!(
                "message body of {} bytes exceeds the limit of {} bytes",
                msg.body.len(),
                limits.max_body_bytes
            ),
        ));
    }

    let tag = match props.tag.as_deref() {
        None | Some("") => None,
        Some(tag) if tag.trim().is_empty() || tag.contains('|') => {
            return Err(RpcError::new(
                Code::IllegalMessageTag,
                format!("tag {tag:?} is blank or contains '|'"),
            ));
        }
        Some(tag) if tag.len() > MAX_TAG_LEN => {
            return Err(RpcError::new(
                Code::IllegalMessageTag,
                format!("tag of {} bytes is longer than {MAX_TAG_LEN}", tag.len()),
            ));
        }
        Some(tag) => Some(tag.to_owned()),
    };
    if let Some(key) = props.keys.iter().find(|k| k.trim().is_empty()) {
        return Err(RpcError::new(
            Code::IllegalMessageKey,
            format!("message key {key:?} is blank"),
        ));
    }
    if props.keys.len() > MAX_KEYS {
        return Err(RpcError::new(
            Code::IllegalMessageKey,
            format!(
                "{} message keys exceed the limit of {MAX_KEYS}",
                props.keys.len()
            ),
        ));
    }
    if props.keys.iter().any(|k| k.len() > MAX_KEY_LEN) {
        return Err(RpcError::new(
            Code::IllegalMessageKey,
            format!("a message key is longer than {MAX_KEY_LEN} bytes"),
        ));
    }
    let message_group = props.message_group.as_deref().filter(|g| !g.is_empty());
    if let Some(group) = message_group
        && group.chars().count() > limits.max_message_group_len
    {
        return Err(RpcError::new(
            Code::IllegalMessageGroup,
            format!(
                "message group is longer than {} characters",
                limits.max_message_group_len
            ),
        ));
    }
    let delivery_ms = props.delivery_timestamp.as_ref().map(timestamp_to_ms);
    let kind = message_kind(
        props.message_type,
        message_group.is_some(),
        delivery_ms.is_some(),
    )?;
    match kind {
        MessageKind::Fifo if message_group.is_none() => {
            return Err(RpcError::new(
                Code::IllegalMessageGroup,
                "fifo message has no message group",
            ));
        }
        MessageKind::Delay if delivery_ms.is_none() => {
            return Err(RpcError::new(
                Code::IllegalDeliveryTime,
                "delay message has no delivery timestamp",
            ));
        }
        _ => {}
    }
    // A transaction keeps the delivery time it asked for: applied when it commits.
    let delivery_ms = delivery_ms.filter(|_| kind.is_timed());
    if let Some(at) = delivery_ms {
        let max_ms = i64::try_from(limits.max_delay.as_millis()).unwrap_or(i64::MAX);
        if at.saturating_sub(now_ms) > max_ms {
            return Err(RpcError::new(
                Code::IllegalDeliveryTime,
                format!(
                    "delivery timestamp {at} is more than {} s in the future",
                    limits.max_delay.as_secs()
                ),
            ));
        }
    }
    let mut properties = user_properties(&msg.user_properties, limits)?;
    if kind == MessageKind::Transaction
        && let Some(wanted) = &props.orphaned_transaction_recovery_duration
    {
        let after = duration_from_pb(wanted).ok_or_else(|| {
            RpcError::bad_request("orphaned transaction recovery duration is negative")
        })?;
        // Whole seconds, at most an hour, as RocketMQ keeps it.
        let secs = after.min(MAX_CHECK_AFTER).as_secs();
        properties.push((CHECK_AFTER_PROPERTY.to_owned(), secs.to_string()));
    }
    let priority = match (kind, props.priority) {
        (MessageKind::Priority, Some(p)) if p >= 0 => Some(p),
        (MessageKind::Priority, _) => {
            return Err(RpcError::new(
                Code::MessagePropertyConflictWithType,
                "a priority message needs a priority of 0 or more",
            ));
        }
        // Another kind ignores a priority, as Apache's broker drops it.
        _ => None,
    };
    if let Some(p) = priority {
        properties.push((PRIORITY_PROPERTY.to_owned(), p.to_string()));
    }

    let record = MessageRecord {
        message_id: props.message_id.clone(),
        topic,
        kind,
        tag,
        keys: props.keys.clone(),
        message_group: message_group.map(str::to_owned),
        delivery_timestamp_ms: delivery_ms,
        born_timestamp_ms: props
            .born_timestamp
            .as_ref()
            .map_or(now_ms, timestamp_to_ms),
        born_host: props.born_host.clone(),
        trace_context: props.trace_context.clone().filter(|t| !t.is_empty()),
        properties,
        // A copy, not a slice: the decoded body shares the allocation of the whole gRPC read
        // buffer, and the store's log cache would keep that alive (measured: ~10 KiB of memory
        // per cached 256-byte message).
        body: bytes::Bytes::copy_from_slice(&msg.body),
    };
    Ok(ProducedMessage {
        record,
        requested_queue: props.queue_id,
        priority,
    })
}

/// The kind a producer declared. An unspecified type is inferred the way the clients choose
/// it (delay > fifo > normal); lite messages are not supported.
fn message_kind(
    message_type: i32,
    has_group: bool,
    has_delivery: bool,
) -> Result<MessageKind, RpcError> {
    match MessageType::try_from(message_type) {
        Ok(MessageType::Normal) => Ok(MessageKind::Normal),
        Ok(MessageType::Fifo) => Ok(MessageKind::Fifo),
        Ok(MessageType::Delay) => Ok(MessageKind::Delay),
        Ok(MessageType::Transaction) => Ok(MessageKind::Transaction),
        Ok(MessageType::Priority) => Ok(MessageKind::Priority),
        Ok(MessageType::Unspecified) => Ok(if has_delivery {
            MessageKind::Delay
        } else if has_group {
            MessageKind::Fifo
        } else {
            MessageKind::Normal
        }),
        Ok(MessageType::Lite) => Err(RpcError::new(
            Code::Unsupported,
            "lite messages are not supported",
        )),
        Err(_) => Err(RpcError::bad_request(format!(
            "unknown message type {message_type}"
        ))),
    }
}

pub(crate) fn kind_name(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Normal => "normal",
        MessageKind::Fifo => "fifo",
        MessageKind::Delay => "delay",
        MessageKind::Transaction => "transaction",
        MessageKind::Priority => "priority",
    }
}

/// `MESSAGE_PROPERTY_CONFLICT_WITH_TYPE` unless the topic accepts the message's kind.
pub(crate) fn check_topic_accepts(
    topic: &TopicName,
    topic_type: TopicType,
    kind: MessageKind,
) -> Result<(), RpcError> {
    if topic_type.accepts(kind) {
        return Ok(());
    }
    Err(RpcError::new(
        Code::MessagePropertyConflictWithType,
        format!(
            "topic {topic} is {topic_type} and does not accept {} messages",
            kind_name(kind)
        ),
    ))
}

fn user_properties(
    props: &HashMap<String, String>,
    limits: &MessageLimits,
) -> Result<Vec<(String, String)>, RpcError> {
    if props.len() > limits.max_properties {
        return Err(RpcError::new(
            Code::MessagePropertiesTooLarge,
            format!(
                "{} user properties exceed the limit of {}",
                props.len(),
                limits.max_properties
            ),
        ));
    }
    let bytes: usize = props.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > limits.max_property_bytes {
        return Err(RpcError::new(
            Code::MessagePropertiesTooLarge,
            format!(
                "user properties of {bytes} bytes exceed the limit of {} bytes",
                limits.max_property_bytes
            ),
        ));
    }
    if let Some(key) = props
        .keys()
        .find(|k| k.trim().is_empty() || k.contains(char::is_control))
    {
        return Err(RpcError::new(
            Code::IllegalMessagePropertyKey,
            format!("user property key {key:?} is blank or has control characters"),
        ));
    }
    // The two keys deliveries add (`__SHARDINGKEY`, `__transactionId__`) are overwritten
    // there; this one would change when the message is checked back.
    if let Some(key) = [CHECK_AFTER_PROPERTY, PRIORITY_PROPERTY]
        .into_iter()
        .find(|k| props.contains_key(*k))
    {
        return Err(RpcError::new(
            Code::IllegalMessagePropertyKey,
            format!("user property key {key} is reserved for the system"),
        ));
    }
    let mut out: Vec<(String, String)> =
        props.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    // A stable order keeps the stored record (and its size) deterministic.
    out.sort_unstable();
    Ok(out)
}

/// A receive request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReceiveParams {
    pub group: GroupName,
    pub topic: TopicName,
    pub filter: MessageFilter,
    pub batch: u32,
    pub invisible: Duration,
    /// The long-polling time the client asked for, if any.
    pub requested_poll: Option<Duration>,
}

/// Validates a receive request (protocol.md §4.5).
pub(crate) fn receive_params(
    req: &pb::ReceiveMessageRequest,
    header_namespace: &str,
    default_auto_renew_invisible: Duration,
) -> Result<ReceiveParams, RpcError> {
    let group = group_name(req.group.as_ref(), header_namespace)?;
    let queue = req
        .message_queue
        .as_ref()
        .ok_or_else(|| RpcError::new(Code::IllegalTopic, "message queue is required"))?;
    let topic = topic_name(queue.topic.as_ref(), header_namespace)?;
    let filter = message_filter(req.filter_expression.as_ref())?;
    if req.batch_size <= 0 {
        return Err(RpcError::bad_request(format!(
            "batch size {} must be positive",
            req.batch_size
        )));
    }
    let batch = u32::try_from(req.batch_size)
        .unwrap_or(MAX_RECEIVE_BATCH)
        .min(MAX_RECEIVE_BATCH);
    let invisible = match (&req.invisible_duration, req.auto_renew) {
        (Some(d), _) => receive_invisible(d)?,
        (None, true) => default_auto_renew_invisible,
        (None, false) => {
            return Err(RpcError::new(
                Code::IllegalInvisibleTime,
                "invisible duration is required",
            ));
        }
    };
    let requested_poll = req.long_polling_timeout.as_ref().and_then(duration_from_pb);
    Ok(ReceiveParams {
        group,
        topic,
        filter,
        batch,
        invisible,
        requested_poll,
    })
}

fn receive_invisible(d: &prost_types::Duration) -> Result<Duration, RpcError> {
    match duration_from_pb(d) {
        Some(v) if (MIN_INVISIBLE..=MAX_INVISIBLE).contains(&v) => Ok(v),
        _ => Err(RpcError::new(
            Code::IllegalInvisibleTime,
            format!(
                "invisible duration must be between {} s and {} s",
                MIN_INVISIBLE.as_secs(),
                MAX_INVISIBLE.as_secs()
            ),
        )),
    }
}

/// The new invisibility of a ChangeInvisibleDuration: 0..=12 h. No lower bound, unlike a
/// receive: push consumers nack with the retry table's short delays (1 s, 5 s), and the Java
/// proxy validates this call with a minimum of 0 too.
pub(crate) fn changed_invisible(d: Option<&prost_types::Duration>) -> Result<Duration, RpcError> {
    match d.and_then(duration_from_pb) {
        Some(v) if v <= MAX_INVISIBLE => Ok(v),
        _ => Err(RpcError::new(
            Code::IllegalInvisibleTime,
            format!(
                "invisible duration must be between 0 s and {} s",
                MAX_INVISIBLE.as_secs()
            ),
        )),
    }
}

/// How long a receive may wait for messages: the requested time clamped to `[min, max]`,
/// then to what is left of the client's deadline, however short: a receive whose deadline
/// leaves less than `min` is served with the time that is left (Apache's proxy refuses it with
/// `ILLEGAL_POLLING_TIME`; the Python client's 2 s `await_duration` gives such deadlines).
pub(crate) fn poll_time(
    requested: Option<Duration>,
    remaining: Option<Duration>,
    min: Duration,
    max: Duration,
) -> Duration {
    let wanted = requested.unwrap_or(Duration::ZERO).clamp(min, max.max(min));
    remaining.map_or(wanted, |left| wanted.min(left))
}

/// A receive's or pull's filter: tags (none: every message) or an SQL92 expression.
pub(crate) fn message_filter(
    filter: Option<&pb::FilterExpression>,
) -> Result<MessageFilter, RpcError> {
    Ok(match filter {
        None => MessageFilter::Tag(TagFilter::All),
        Some(f) if f.r#type == FilterType::Sql as i32 => {
            MessageFilter::Sql(SqlFilter::parse(&f.expression)?)
        }
        Some(f) => MessageFilter::Tag(TagFilter::parse(&f.expression)?),
    })
}

/// A pulled message as the wire message: its queue and offset, no receipt handle.
pub(crate) fn pulled_message(
    topic: &TopicName,
    queue_id: u32,
    m: PulledMessage,
    store_host: &str,
) -> pb::Message {
    let mut message = wire_message(m.message, topic, m.store_timestamp_ms, store_host);
    place(&mut message, queue_id, m.offset);
    message
}

/// Sets where a message stands: its queue and offset.
fn place(message: &mut pb::Message, queue_id: u32, offset: u64) {
    if let Some(props) = message.system_properties.as_mut() {
        props.queue_id = i32::try_from(queue_id).unwrap_or(i32::MAX);
        props.queue_offset = Some(i64::try_from(offset).unwrap_or(i64::MAX));
    }
}

/// A stored message as a consumer's listener gets it to verify (VerifyMessageCommand): its
/// queue and offset in `topic` when known, no receipt handle (it is not a delivery).
pub(crate) fn verified_message(
    found: vela_proto::lookup::FoundMessage,
    topic: &TopicName,
    store_host: &str,
) -> pb::Message {
    let position = found
        .positions
        .iter()
        .find(|p| &p.topic == topic)
        .map(|p| (p.queue_id, p.offset));
    let mut message = wire_message(found.message, topic, found.store_timestamp_ms, store_host);
    if let Some((queue_id, offset)) = position {
        place(&mut message, queue_id, offset);
    }
    message
}

/// The MD5 of a body as the clients verify it: upper-case hex.
pub(crate) fn body_md5(body: &[u8]) -> String {
    hex::encode_upper(Md5::digest(body))
}

/// A delivery as the wire message consumers get (protocol.md §4.5, "delivered Message").
pub(crate) fn delivered_message(
    d: Delivery,
    receipt_handle: String,
    store_host: &str,
) -> pb::Message {
    let dead_letter_queue = (d.topic.as_str().starts_with(DLQ_PREFIX)
        && d.topic != d.message.topic)
        .then(|| pb::DeadLetterQueue {
            topic: topic_resource(&d.message.topic).name,
            message_id: d.message.message_id.clone(),
        });
    let mut message = wire_message(d.message, &d.topic, d.store_timestamp_ms, store_host);
    if let Some(transaction_id) = d.transaction_id {
        message
            .user_properties
            .insert(TRANSACTION_ID_PROPERTY.to_owned(), transaction_id);
    }
    if let Some(props) = message.system_properties.as_mut() {
        props.receipt_handle = Some(receipt_handle);
        props.queue_id = i32::try_from(d.queue_id).unwrap_or(i32::MAX);
        props.queue_offset = Some(i64::try_from(d.offset).unwrap_or(i64::MAX));
        props.invisible_duration = Some(duration_to_pb(d.invisible));
        props.delivery_attempt = Some(i32::try_from(d.attempt).unwrap_or(i32::MAX));
        props.dead_letter_queue = dead_letter_queue;
    }
    message
}

/// A half message as a producer's transaction checker gets it
/// (RecoverOrphanedTransactionCommand): no receipt handle, no queue offset yet.
pub(crate) fn checked_message(check: TransactionCheck, store_host: &str) -> pb::Message {
    let topic = check.topic.clone();
    wire_message(check.message, &topic, check.store_timestamp_ms, store_host)
}

/// What every message sent to a client carries. The stored system property of a
/// transaction's own first check-back time goes back to the field it came from.
fn wire_message(
    record: MessageRecord,
    topic: &TopicName,
    store_timestamp_ms: i64,
    store_host: &str,
) -> pb::Message {
    let mut check_after = None;
    let mut priority = None;
    let mut user_properties: HashMap<String, String> = record
        .properties
        .into_iter()
        .filter(|(k, v)| {
            if k == CHECK_AFTER_PROPERTY {
                check_after = v.parse::<u64>().ok().map(Duration::from_secs);
                false
            } else if k == PRIORITY_PROPERTY {
                priority = v.parse::<i32>().ok();
                false
            } else {
                true
            }
        })
        .collect();
    if let Some(group) = &record.message_group {
        user_properties.insert(SHARDING_KEY_PROPERTY.to_owned(), group.clone());
    }
    let system_properties = pb::SystemProperties {
        tag: record.tag,
        keys: record.keys,
        message_id: record.message_id,
        body_digest: Some(pb::Digest {
            r#type: DigestType::Md5 as i32,
            checksum: body_md5(&record.body),
        }),
        body_encoding: Encoding::Identity as i32,
        message_type: message_type_of(record.kind) as i32,
        born_timestamp: Some(ms_to_timestamp(record.born_timestamp_ms)),
        born_host: record.born_host,
        store_timestamp: Some(ms_to_timestamp(store_timestamp_ms)),
        store_host: store_host.to_owned(),
        delivery_timestamp: record.delivery_timestamp_ms.map(ms_to_timestamp),
        receipt_handle: None,
        queue_id: 0,
        queue_offset: None,
        invisible_duration: None,
        delivery_attempt: None,
        message_group: record.message_group,
        trace_context: record.trace_context,
        orphaned_transaction_recovery_duration: check_after.map(duration_to_pb),
        dead_letter_queue: None,
        lite_topic: None,
        priority,
    };
    pb::Message {
        topic: Some(topic_resource(topic)),
        user_properties,
        system_properties: Some(system_properties),
        body: record.body,
    }
}

#[cfg(test)]
mod tests;

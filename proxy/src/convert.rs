//! Validation at the boundary: protobuf requests become domain values here, once, and
//! deliveries become wire messages. Everything is a plain function, so every rule is unit
//! tested without a server.

use std::collections::HashMap;
use std::time::Duration;

use md5::{Digest as _, Md5};
use vela_proto::pb::rocketmq::{self as pb, Code, DigestType, Encoding, FilterType, MessageType};
use vela_proto::store_api::Delivery;
use vela_proto::{
    DLQ_PREFIX, GroupName, MAX_INVISIBLE, MAX_RECEIVE_BATCH, MIN_INVISIBLE, MessageKind,
    MessageRecord, TagFilter, TopicName, TopicType,
};

use crate::config::ProxyConfig;
use crate::route::{message_type_of, topic_resource};
use crate::status::RpcError;

/// Longest tag accepted. Tags are interned by the store (one entry per distinct tag), so an
/// unbounded tag would be unbounded memory.
const MAX_TAG_LEN: usize = 255;

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
    Ok(GroupName::from_resource(
        namespace_of(resource, header_namespace),
        &resource.name,
    )?)
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
    let props = msg
        .system_properties
        .as_ref()
        .ok_or_else(|| RpcError::bad_request("message has no system properties"))?;
    if props.message_id.trim().is_empty() {
        return Err(RpcError::new(Code::IllegalMessageId, "message id is empty"));
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
        MessageKind::Delay => {
            let Some(at) = delivery_ms else {
                return Err(RpcError::new(
                    Code::IllegalDeliveryTime,
                    "delay message has no delivery timestamp",
                ));
            };
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
        _ => {}
    }
    let properties = user_properties(&msg.user_properties, limits)?;

    let record = MessageRecord {
        message_id: props.message_id.clone(),
        topic,
        kind,
        tag,
        keys: props.keys.clone(),
        message_group: message_group.map(str::to_owned),
        delivery_timestamp_ms: if kind == MessageKind::Delay {
            delivery_ms
        } else {
            None
        },
        born_timestamp_ms: props
            .born_timestamp
            .as_ref()
            .map_or(now_ms, timestamp_to_ms),
        born_host: props.born_host.clone(),
        trace_context: props.trace_context.clone().filter(|t| !t.is_empty()),
        properties,
        body: msg.body.clone(),
    };
    Ok(ProducedMessage {
        record,
        requested_queue: props.queue_id,
    })
}

/// The kind a producer declared. An unspecified type is inferred the way the clients choose
/// it (delay > fifo > normal); lite and priority messages are not supported.
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
        Ok(MessageType::Unspecified) => Ok(if has_delivery {
            MessageKind::Delay
        } else if has_group {
            MessageKind::Fifo
        } else {
            MessageKind::Normal
        }),
        Ok(other @ (MessageType::Lite | MessageType::Priority)) => Err(RpcError::new(
            Code::Unsupported,
            format!(
                "{} messages are not supported",
                other.as_str_name().to_ascii_lowercase()
            ),
        )),
        Err(_) => Err(RpcError::bad_request(format!(
            "unknown message type {message_type}"
        ))),
    }
}

fn kind_name(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Normal => "normal",
        MessageKind::Fifo => "fifo",
        MessageKind::Delay => "delay",
        MessageKind::Transaction => "transaction",
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
    pub filter: TagFilter,
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
    let filter = match &req.filter_expression {
        None => TagFilter::All,
        Some(f) if f.r#type == FilterType::Sql as i32 => {
            return Err(RpcError::new(
                Code::IllegalFilterExpression,
                "sql92 filter expressions are not supported",
            ));
        }
        Some(f) => TagFilter::parse(&f.expression)?,
    };
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

/// How long a receive may wait for messages: the requested time clamped to
/// `[min, max]`, then to what is left of the client's deadline. `ILLEGAL_POLLING_TIME` when
/// the deadline leaves less than `min` (as the Java proxy does).
pub(crate) fn poll_time(
    requested: Option<Duration>,
    remaining: Option<Duration>,
    min: Duration,
    max: Duration,
) -> Result<Duration, RpcError> {
    let wanted = requested.unwrap_or(Duration::ZERO).clamp(min, max.max(min));
    match remaining {
        Some(left) if left < wanted => {
            if left >= min {
                Ok(left)
            } else {
                Err(RpcError::new(
                    Code::IllegalPollingTime,
                    format!(
                        "the call deadline leaves {} ms, less than the minimum long polling of {} ms",
                        left.as_millis(),
                        min.as_millis()
                    ),
                ))
            }
        }
        _ => Ok(wanted),
    }
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
    let record = d.message;
    let dead_letter_queue = (d.topic.as_str().starts_with(DLQ_PREFIX) && d.topic != record.topic)
        .then(|| pb::DeadLetterQueue {
            topic: topic_resource(&record.topic).name,
            message_id: record.message_id.clone(),
        });
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
        store_timestamp: Some(ms_to_timestamp(d.store_timestamp_ms)),
        store_host: store_host.to_owned(),
        delivery_timestamp: record.delivery_timestamp_ms.map(ms_to_timestamp),
        receipt_handle: Some(receipt_handle),
        queue_id: i32::try_from(d.queue_id).unwrap_or(i32::MAX),
        queue_offset: Some(i64::try_from(d.offset).unwrap_or(i64::MAX)),
        invisible_duration: Some(duration_to_pb(d.invisible)),
        delivery_attempt: Some(i32::try_from(d.attempt).unwrap_or(i32::MAX)),
        message_group: record.message_group,
        trace_context: record.trace_context,
        orphaned_transaction_recovery_duration: None,
        dead_letter_queue,
        lite_topic: None,
        priority: None,
    };
    pb::Message {
        topic: Some(topic_resource(&d.topic)),
        user_properties: record.properties.into_iter().collect(),
        system_properties: Some(system_properties),
        body: record.body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use vela_proto::receipt::ReceiptTicket;

    const NOW: i64 = 1_800_000_000_000;

    fn limits() -> MessageLimits {
        MessageLimits::from(&ProxyConfig::default())
    }

    fn wire(message_type: MessageType) -> pb::Message {
        pb::Message {
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: "orders".into(),
            }),
            user_properties: HashMap::from([("k".to_owned(), "v".to_owned())]),
            system_properties: Some(pb::SystemProperties {
                tag: Some("TagA".into()),
                keys: vec!["key1".into()],
                message_id: "01C6AF690D5CAD67206887C01800000001".into(),
                body_encoding: Encoding::Identity as i32,
                message_type: message_type as i32,
                born_timestamp: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5_000_000,
                }),
                born_host: "vm".into(),
                queue_id: 3,
                ..Default::default()
            }),
            body: Bytes::from_static(b"hello"),
        }
    }

    fn props(m: &mut pb::Message) -> &mut pb::SystemProperties {
        m.system_properties.get_or_insert_with(Default::default)
    }

    fn code_of(msg: &pb::Message) -> Code {
        produced_message(msg, "", &limits(), NOW)
            .expect_err("rejected")
            .code
    }

    #[test]
    fn a_normal_message_converts() {
        let out = produced_message(&wire(MessageType::Normal), "", &limits(), NOW).expect("valid");
        let r = &out.record;
        assert_eq!(r.topic.as_str(), "orders");
        assert_eq!(r.kind, MessageKind::Normal);
        assert_eq!(r.tag.as_deref(), Some("TagA"));
        assert_eq!(r.keys, vec!["key1".to_owned()]);
        assert_eq!(r.message_id, "01C6AF690D5CAD67206887C01800000001");
        assert_eq!(r.born_timestamp_ms, 1_700_000_000_005);
        assert_eq!(r.properties, vec![("k".to_owned(), "v".to_owned())]);
        assert_eq!(r.delivery_timestamp_ms, None);
        assert_eq!(out.requested_queue, 3);
    }

    #[test]
    fn the_header_namespace_applies_when_the_resource_has_none() {
        let out =
            produced_message(&wire(MessageType::Normal), "tenant", &limits(), NOW).expect("valid");
        assert_eq!(out.record.topic.as_str(), "tenant%orders");
        let mut own = wire(MessageType::Normal);
        if let Some(t) = own.topic.as_mut() {
            t.resource_namespace = "mine".into();
        }
        let out = produced_message(&own, "tenant", &limits(), NOW).expect("valid");
        assert_eq!(out.record.topic.as_str(), "mine%orders");
    }

    #[test]
    fn bad_messages_get_their_codes() {
        let mut m = wire(MessageType::Normal);
        m.body = Bytes::new();
        assert_eq!(code_of(&m), Code::MessageBodyEmpty);

        m.body = Bytes::from(vec![0u8; 4 * 1024 * 1024 + 1]);
        assert_eq!(code_of(&m), Code::MessageBodyTooLarge);

        let mut m = wire(MessageType::Normal);
        m.topic = Some(pb::Resource {
            resource_namespace: String::new(),
            name: "bad topic".into(),
        });
        assert_eq!(code_of(&m), Code::IllegalTopic);
        m.topic = None;
        assert_eq!(code_of(&m), Code::IllegalTopic);

        let mut m = wire(MessageType::Normal);
        props(&mut m).tag = Some("a|b".into());
        assert_eq!(code_of(&m), Code::IllegalMessageTag);

        let mut m = wire(MessageType::Normal);
        props(&mut m).message_id.clear();
        assert_eq!(code_of(&m), Code::IllegalMessageId);

        let mut m = wire(MessageType::Normal);
        m.system_properties = None;
        assert_eq!(code_of(&m), Code::BadRequest);

        let mut m = wire(MessageType::Normal);
        props(&mut m).keys = vec![" ".into()];
        assert_eq!(code_of(&m), Code::IllegalMessageKey);

        assert_eq!(code_of(&wire(MessageType::Fifo)), Code::IllegalMessageGroup);
        let mut m = wire(MessageType::Fifo);
        props(&mut m).message_group = Some("g".repeat(65));
        assert_eq!(code_of(&m), Code::IllegalMessageGroup);

        assert_eq!(
            code_of(&wire(MessageType::Delay)),
            Code::IllegalDeliveryTime
        );
        let mut m = wire(MessageType::Delay);
        props(&mut m).delivery_timestamp = Some(ms_to_timestamp(NOW + 25 * 3600 * 1000));
        assert_eq!(code_of(&m), Code::IllegalDeliveryTime);

        assert_eq!(code_of(&wire(MessageType::Priority)), Code::Unsupported);
        let mut m = wire(MessageType::Normal);
        props(&mut m).message_type = 77;
        assert_eq!(code_of(&m), Code::BadRequest);
    }

    #[test]
    fn property_limits() {
        let mut m = wire(MessageType::Normal);
        m.user_properties = (0..129)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        assert_eq!(code_of(&m), Code::MessagePropertiesTooLarge);
        m.user_properties = HashMap::from([("big".to_owned(), "x".repeat(16 * 1024))]);
        assert_eq!(code_of(&m), Code::MessagePropertiesTooLarge);
        m.user_properties = HashMap::from([(String::new(), "v".to_owned())]);
        assert_eq!(code_of(&m), Code::IllegalMessagePropertyKey);
        m.user_properties = (0..128)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        assert!(produced_message(&m, "", &limits(), NOW).is_ok());
    }

    #[test]
    fn kinds_and_delays() {
        let mut m = wire(MessageType::Delay);
        props(&mut m).delivery_timestamp = Some(prost_types::Timestamp {
            seconds: NOW / 1000 + 60,
            nanos: 0,
        });
        let out = produced_message(&m, "", &limits(), NOW).expect("valid");
        assert_eq!(out.record.kind, MessageKind::Delay);
        assert_eq!(out.record.delivery_timestamp_ms, Some(NOW + 60_000));

        let mut m = wire(MessageType::Unspecified);
        props(&mut m).message_group = Some("g1".into());
        let out = produced_message(&m, "", &limits(), NOW).expect("valid");
        assert_eq!(out.record.kind, MessageKind::Fifo);
        assert_eq!(out.record.message_group.as_deref(), Some("g1"));

        let t = TopicName::new("orders").expect("valid");
        assert!(check_topic_accepts(&t, TopicType::Mixed, MessageKind::Transaction).is_ok());
        let err =
            check_topic_accepts(&t, TopicType::Normal, MessageKind::Fifo).expect_err("conflict");
        assert_eq!(err.code, Code::MessagePropertyConflictWithType);
        assert_eq!(
            err.message,
            "topic orders is normal and does not accept fifo messages"
        );
    }

    fn receive_req() -> pb::ReceiveMessageRequest {
        pb::ReceiveMessageRequest {
            group: Some(pb::Resource {
                resource_namespace: String::new(),
                name: "billing".into(),
            }),
            message_queue: Some(pb::MessageQueue {
                topic: Some(pb::Resource {
                    resource_namespace: String::new(),
                    name: "orders".into(),
                }),
                ..Default::default()
            }),
            filter_expression: Some(pb::FilterExpression {
                r#type: FilterType::Tag as i32,
                expression: "A||B".into(),
            }),
            batch_size: 64,
            invisible_duration: Some(duration_to_pb(Duration::from_secs(15))),
            auto_renew: false,
            long_polling_timeout: Some(duration_to_pb(Duration::from_secs(40))),
            attempt_id: None,
        }
    }

    #[test]
    fn receive_requests_validate() {
        let auto = Duration::from_secs(60);
        let p = receive_params(&receive_req(), "", auto).expect("valid");
        assert_eq!(p.group.as_str(), "billing");
        assert_eq!(p.topic.as_str(), "orders");
        assert_eq!(p.batch, 32, "clamped to 32");
        assert_eq!(p.invisible, Duration::from_secs(15));
        assert_eq!(p.filter, TagFilter::Tags(vec!["A".into(), "B".into()]));
        assert_eq!(p.requested_poll, Some(Duration::from_secs(40)));

        let code =
            |r: pb::ReceiveMessageRequest| receive_params(&r, "", auto).expect_err("rejected").code;
        let mut r = receive_req();
        r.invisible_duration = Some(duration_to_pb(Duration::from_secs(9)));
        assert_eq!(code(r), Code::IllegalInvisibleTime);
        let mut r = receive_req();
        r.invisible_duration = Some(duration_to_pb(Duration::from_secs(12 * 3600 + 1)));
        assert_eq!(code(r), Code::IllegalInvisibleTime);
        let mut r = receive_req();
        r.invisible_duration = Some(prost_types::Duration {
            seconds: -5,
            nanos: 0,
        });
        assert_eq!(code(r), Code::IllegalInvisibleTime);
        let mut r = receive_req();
        r.invisible_duration = None;
        assert_eq!(code(r), Code::IllegalInvisibleTime);
        let mut r = receive_req();
        r.batch_size = 0;
        assert_eq!(code(r), Code::BadRequest);
        let mut r = receive_req();
        r.filter_expression = Some(pb::FilterExpression {
            r#type: FilterType::Sql as i32,
            expression: "a > 1".into(),
        });
        assert_eq!(code(r), Code::IllegalFilterExpression);
        let mut r = receive_req();
        r.filter_expression = Some(pb::FilterExpression {
            r#type: FilterType::Tag as i32,
            expression: "A||".into(),
        });
        assert_eq!(code(r), Code::IllegalFilterExpression);
        let mut r = receive_req();
        r.group = None;
        assert_eq!(code(r), Code::IllegalConsumerGroup);
        let mut r = receive_req();
        r.message_queue = None;
        assert_eq!(code(r), Code::IllegalTopic);

        // Push consumers: auto_renew without invisibility gets the server default.
        let mut r = receive_req();
        r.invisible_duration = None;
        r.auto_renew = true;
        assert_eq!(receive_params(&r, "", auto).expect("valid").invisible, auto);
    }

    #[test]
    fn change_invisible_allows_short_nacks() {
        assert_eq!(
            changed_invisible(Some(&duration_to_pb(Duration::from_secs(1)))),
            Ok(Duration::from_secs(1))
        );
        assert_eq!(
            changed_invisible(Some(&duration_to_pb(Duration::ZERO))),
            Ok(Duration::ZERO)
        );
        assert!(changed_invisible(None).is_err());
        assert!(changed_invisible(Some(&duration_to_pb(Duration::from_secs(13 * 3600)))).is_err());
    }

    #[test]
    fn polling_time_is_clamped_to_the_deadline() {
        let (min, max) = (Duration::from_secs(5), Duration::from_secs(20));
        let s = Duration::from_secs;
        // Rust 5.0.0: asks 40 s with a 40 s deadline -> 20 s.
        assert_eq!(poll_time(Some(s(40)), Some(s(39)), min, max), Ok(s(20)));
        // Python: asks 5 s with an 8 s deadline -> 5 s.
        assert_eq!(poll_time(Some(s(5)), Some(s(7)), min, max), Ok(s(5)));
        // Asking for less than the minimum gets the minimum.
        assert_eq!(poll_time(Some(s(1)), None, min, max), Ok(s(5)));
        assert_eq!(poll_time(None, None, min, max), Ok(s(5)));
        // The deadline wins when it is shorter but still long enough.
        assert_eq!(poll_time(Some(s(20)), Some(s(12)), min, max), Ok(s(12)));
        assert_eq!(
            poll_time(Some(s(20)), Some(s(4)), min, max).map_err(|e| e.code),
            Err(Code::IllegalPollingTime)
        );
    }

    #[test]
    fn times_round_trip() {
        for ms in [0, 1, 999, 1_700_000_000_123, -1, -1001] {
            assert_eq!(timestamp_to_ms(&ms_to_timestamp(ms)), ms);
        }
        assert_eq!(
            duration_from_pb(&prost_types::Duration {
                seconds: 1,
                nanos: -1
            }),
            None
        );
        assert_eq!(
            duration_from_pb(&duration_to_pb(Duration::from_millis(1500))),
            Some(Duration::from_millis(1500))
        );
        let extreme = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: i32::MAX,
        };
        assert_eq!(timestamp_to_ms(&extreme), i64::MAX);
    }

    #[test]
    fn deliveries_carry_what_clients_require() {
        let record = produced_message(&wire(MessageType::Normal), "tenant", &limits(), NOW)
            .expect("valid")
            .record;
        let topic = record.topic.clone();
        let delivery = Delivery {
            topic: topic.clone(),
            queue_id: 2,
            offset: 41,
            store_timestamp_ms: NOW,
            attempt: 1,
            invisible: Duration::from_secs(15),
            ticket: ReceiptTicket {
                shard: 0,
                group: GroupName::new("billing").expect("valid"),
                topic,
                queue_id: 2,
                offset: 41,
                delivery_id: 7,
                visible_at_ms: NOW + 15_000,
            },
            message: record,
        };
        let m = delivered_message(delivery, "handle-1".into(), "127.0.0.1:8081");
        let topic = m.topic.expect("topic set");
        assert_eq!(
            (topic.resource_namespace.as_str(), topic.name.as_str()),
            ("tenant", "orders")
        );
        let p = m.system_properties.expect("system properties set");
        assert_eq!(p.receipt_handle.as_deref(), Some("handle-1"));
        assert_eq!(p.body_encoding, Encoding::Identity as i32);
        let digest = p.body_digest.expect("digest set");
        assert_eq!(digest.r#type, DigestType::Md5 as i32);
        assert_eq!(
            digest.checksum, "5D41402ABC4B2A76B9719D911017C592",
            "md5(hello), upper hex"
        );
        assert_eq!(p.delivery_attempt, Some(1));
        assert_eq!((p.queue_id, p.queue_offset), (2, Some(41)));
        assert_eq!(p.store_timestamp, Some(ms_to_timestamp(NOW)));
        assert_eq!(p.store_host, "127.0.0.1:8081");
        assert_eq!(p.message_type, MessageType::Normal as i32);
        assert_eq!(
            p.invisible_duration,
            Some(duration_to_pb(Duration::from_secs(15)))
        );
        assert!(p.dead_letter_queue.is_none());
        assert_eq!(m.user_properties.get("k").map(String::as_str), Some("v"));
        assert_eq!(m.body, Bytes::from_static(b"hello"));
    }

    #[test]
    fn dead_letters_name_their_origin() {
        let record = produced_message(&wire(MessageType::Normal), "", &limits(), NOW)
            .expect("valid")
            .record;
        let group = GroupName::new("billing").expect("valid");
        let dlq = group.dead_letter_topic();
        let delivery = Delivery {
            topic: dlq.clone(),
            queue_id: 0,
            offset: 0,
            store_timestamp_ms: NOW,
            attempt: 1,
            invisible: Duration::from_secs(15),
            ticket: ReceiptTicket {
                shard: 0,
                group,
                topic: dlq,
                queue_id: 0,
                offset: 0,
                delivery_id: 1,
                visible_at_ms: 0,
            },
            message: record,
        };
        let m = delivered_message(delivery, "h".into(), "host:1");
        assert_eq!(m.topic.map(|t| t.name), Some("%DLQ%billing".to_owned()));
        let dlq = m
            .system_properties
            .and_then(|p| p.dead_letter_queue)
            .expect("dlq info");
        assert_eq!(dlq.topic, "orders");
        assert_eq!(dlq.message_id, "01C6AF690D5CAD67206887C01800000001");
    }

    #[test]
    fn topic_match_is_lenient_on_namespaces_only() {
        let dlq = TopicName::new("%DLQ%ns%g").expect("valid");
        let requested = TopicName::from_resource("ns", "%DLQ%ns%g").expect("valid");
        assert!(same_topic(&dlq, &requested, "%DLQ%ns%g"));
        let other = TopicName::new("other").expect("valid");
        assert!(!same_topic(&dlq, &other, "other"));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn any_message() -> impl Strategy<Value = pb::Message> {
        (
            (
                ".{0,12}",
                ".{0,12}",
                proptest::option::of(".{0,6}"),
                proptest::collection::vec(".{0,4}", 0..3),
            ),
            (
                -2i32..8,
                proptest::option::of(".{0,70}"),
                proptest::option::of(any::<i64>()),
            ),
            (
                proptest::collection::hash_map(".{0,5}", ".{0,5}", 0..4),
                proptest::collection::vec(any::<u8>(), 0..80),
            ),
            (".{0,40}", any::<i32>()),
        )
            .prop_map(
                |((ns, name, tag, keys), (kind, group, delivery), (props, body), (id, queue))| {
                    pb::Message {
                        topic: Some(pb::Resource {
                            resource_namespace: ns,
                            name,
                        }),
                        user_properties: props,
                        system_properties: Some(pb::SystemProperties {
                            tag,
                            keys,
                            message_id: id,
                            message_type: kind,
                            message_group: group,
                            delivery_timestamp: delivery.map(|s| prost_types::Timestamp {
                                seconds: s,
                                nanos: 0,
                            }),
                            queue_id: queue,
                            ..Default::default()
                        }),
                        body: Bytes::from(body),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn produced_messages_never_panic_and_keep_the_limits(msg in any_message(), now in any::<i64>()) {
            let limits = MessageLimits { max_body_bytes: 64, ..MessageLimits::from(&ProxyConfig::default()) };
            if let Ok(p) = produced_message(&msg, "", &limits, now) {
                let r = p.record;
                prop_assert!(!r.body.is_empty() && r.body.len() <= 64);
                prop_assert!(r.tag.as_deref().is_none_or(|t| !t.contains('|') && !t.trim().is_empty()));
                prop_assert!(!r.message_id.trim().is_empty());
                prop_assert!(r.kind != MessageKind::Fifo || r.message_group.is_some());
                prop_assert!(r.message_group.as_deref().is_none_or(|g| g.chars().count() <= 64));
                prop_assert_eq!(r.delivery_timestamp_ms.is_some(), r.kind == MessageKind::Delay);
            }
        }

        #[test]
        fn poll_time_stays_in_bounds(req in proptest::option::of(0u64..100_000), left in proptest::option::of(0u64..100_000)) {
            let (min, max) = (Duration::from_secs(5), Duration::from_secs(20));
            let out = poll_time(req.map(Duration::from_millis), left.map(Duration::from_millis), min, max);
            match out {
                Ok(wait) => {
                    prop_assert!(wait >= min && wait <= max);
                    prop_assert!(left.is_none_or(|l| wait <= Duration::from_millis(l)));
                }
                Err(e) => {
                    prop_assert_eq!(e.code, Code::IllegalPollingTime);
                    prop_assert!(left.is_some_and(|l| Duration::from_millis(l) < min));
                }
            }
        }

        #[test]
        fn grpc_timeouts_never_panic(s in ".{0,12}") {
            let _ = crate::headers::parse_grpc_timeout(&s);
        }
    }
}

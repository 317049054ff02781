//! What users send and receive: [`Message`] (validated on build, like the official clients),
//! [`SendReceipt`], [`MessageView`] and [`FilterExpression`].

use std::collections::HashMap;
use std::time::SystemTime;

use bytes::Bytes;
use vela_proto::pb::rocketmq as pb;
use vela_proto::{SqlFilter, TagFilter, TopicName};

use crate::config::Endpoint;
use crate::error::{Error, Result};

/// The kind of message, derived from its properties (group → FIFO, delivery time → DELAY,
/// priority → PRIORITY), or TRANSACTION when sent in a [`Transaction`](crate::Transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageKind {
    Normal,
    Fifo,
    Delay,
    Transaction,
    /// RocketMQ 5.4's priority message: for a topic of type priority, whose queue ids are its
    /// priorities; consumers get higher priorities first.
    Priority,
}

impl MessageKind {
    pub(crate) fn to_proto(self) -> pb::MessageType {
        match self {
            MessageKind::Normal => pb::MessageType::Normal,
            MessageKind::Fifo => pb::MessageType::Fifo,
            MessageKind::Delay => pb::MessageType::Delay,
            MessageKind::Transaction => pb::MessageType::Transaction,
            MessageKind::Priority => pb::MessageType::Priority,
        }
    }
}

/// A message to publish. Build it with [`Message::builder`].
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    topic: TopicName,
    body: Bytes,
    tag: Option<String>,
    keys: Vec<String>,
    properties: HashMap<String, String>,
    message_group: Option<String>,
    delivery_timestamp: Option<SystemTime>,
    priority: Option<u32>,
    /// Sent under this id instead of a new one (a copy of a message from elsewhere).
    message_id: Option<String>,
    /// Sent in a transaction (set by `Transaction::send`).
    transactional: bool,
}

impl Message {
    pub fn builder(topic: impl Into<String>) -> MessageBuilder {
        MessageBuilder {
            topic: topic.into(),
            ..MessageBuilder::default()
        }
    }

    pub fn topic(&self) -> &str {
        self.topic.as_str()
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    pub fn properties(&self) -> &HashMap<String, String> {
        &self.properties
    }

    pub fn message_group(&self) -> Option<&str> {
        self.message_group.as_deref()
    }

    pub fn delivery_timestamp(&self) -> Option<SystemTime> {
        self.delivery_timestamp
    }

    /// The priority of a PRIORITY message.
    pub fn priority(&self) -> Option<u32> {
        self.priority
    }

    /// The id the message is sent under, when the builder set one.
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    pub fn kind(&self) -> MessageKind {
        if self.transactional {
            MessageKind::Transaction
        } else if self.delivery_timestamp.is_some() {
            MessageKind::Delay
        } else if self.message_group.is_some() {
            MessageKind::Fifo
        } else if self.priority.is_some() {
            MessageKind::Priority
        } else {
            MessageKind::Normal
        }
    }

    /// This message with one more user property (the request-reply properties).
    pub(crate) fn with_property(mut self, key: &str, value: &str) -> Self {
        self.properties.insert(key.to_owned(), value.to_owned());
        self
    }

    /// This message as the half message of a transaction.
    pub(crate) fn into_transactional(mut self) -> Self {
        self.transactional = true;
        self
    }

    /// The wire form, stamped with the id, queue and producer host chosen at send time.
    pub(crate) fn to_proto(
        &self,
        namespace: &str,
        message_id: String,
        queue_id: i32,
        born_host: &str,
        trace_context: Option<&str>,
    ) -> pb::Message {
        pb::Message {
            topic: Some(pb::Resource {
                resource_namespace: namespace.to_owned(),
                name: self.topic.as_str().to_owned(),
            }),
            user_properties: self.properties.clone(),
            system_properties: Some(pb::SystemProperties {
                tag: self.tag.clone(),
                keys: self.keys.clone(),
                message_id,
                body_encoding: pb::Encoding::Identity as i32,
                message_type: self.kind().to_proto() as i32,
                born_timestamp: Some(SystemTime::now().into()),
                born_host: born_host.to_owned(),
                delivery_timestamp: self.delivery_timestamp.map(Into::into),
                queue_id,
                message_group: self.message_group.clone(),
                trace_context: trace_context.map(str::to_owned),
                priority: self
                    .priority
                    .filter(|_| self.kind() == MessageKind::Priority)
                    .map(|p| i32::try_from(p).unwrap_or(i32::MAX)),
                ..Default::default()
            }),
            body: self.body.clone(),
        }
    }
}

/// Builds a [`Message`]; [`MessageBuilder::build`] validates it.
#[derive(Debug, Default, Clone)]
pub struct MessageBuilder {
    topic: String,
    body: Bytes,
    tag: Option<String>,
    keys: Vec<String>,
    properties: HashMap<String, String>,
    message_group: Option<String>,
    delivery_timestamp: Option<SystemTime>,
    priority: Option<u32>,
    message_id: Option<String>,
}

impl MessageBuilder {
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The tag consumers filter on (no `|`).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// Business keys the server indexes.
    pub fn keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.keys.extend(keys.into_iter().map(Into::into));
        self
    }

    /// A user property.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// Makes this a FIFO message: messages of one group are stored and delivered in order.
    pub fn message_group(mut self, group: impl Into<String>) -> Self {
        self.message_group = Some(group.into());
        self
    }

    /// Makes this a DELAY message, delivered no earlier than `at`.
    pub fn delivery_timestamp(mut self, at: SystemTime) -> Self {
        self.delivery_timestamp = Some(at);
        self
    }

    /// Makes this a PRIORITY message (RocketMQ 5.4) for a topic of type priority: it goes to
    /// the queue its priority names (the last one for a priority past it), and consumers get
    /// higher priorities first. Not with a message group or a delivery time.
    pub fn priority(mut self, priority: u32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Sends the message under `id` (at most 128 bytes, no spaces) instead of a new id: what a
    /// copy of a message from another server keeps (a Vela route with `--keep-message-id`).
    /// A server that deduplicates sends by client and message id then stores a resend once.
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    pub fn build(self) -> Result<Message> {
        let invalid = |msg: String| Err(Error::InvalidArgument(msg));
        let topic = TopicName::new(&self.topic)
            .map_err(|e| Error::InvalidArgument(format!("message topic: {e}")))?;
        if self.body.is_empty() {
            return invalid(format!("message body for topic {topic} is empty"));
        }
        if let Some(tag) = &self.tag {
            if is_blank(tag) {
                return invalid("message tag is blank".into());
            }
            if tag.contains('|') {
                return invalid(format!("message tag {tag:?} contains '|'"));
            }
        }
        if self.keys.iter().any(|k| is_blank(k)) {
            return invalid("message keys must not be blank".into());
        }
        for (k, v) in &self.properties {
            if is_blank(k) || is_blank(v) {
                return invalid(format!(
                    "message property {k:?}={v:?} has a blank key or value"
                ));
            }
        }
        if let Some(group) = &self.message_group {
            if is_blank(group) {
                return invalid("message group is blank".into());
            }
            if self.delivery_timestamp.is_some() {
                return invalid(format!(
                    "message group {group:?} and a delivery timestamp are mutually exclusive"
                ));
            }
        }
        if self.priority.is_some()
            && (self.message_group.is_some() || self.delivery_timestamp.is_some())
        {
            return invalid(
                "a priority message has neither a message group nor a delivery timestamp".into(),
            );
        }
        if let Some(id) = &self.message_id
            && (id.is_empty()
                || id.len() > 128
                || id.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return invalid(format!(
                "message id {id:?} is not 1 to 128 bytes without spaces"
            ));
        }
        Ok(Message {
            topic,
            body: self.body,
            tag: self.tag,
            keys: self.keys,
            properties: self.properties,
            message_group: self.message_group,
            delivery_timestamp: self.delivery_timestamp,
            priority: self.priority,
            message_id: self.message_id,
            transactional: false,
        })
    }
}

fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// The server's acknowledgement of one stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendReceipt {
    /// The client-generated id the server stored the message under.
    pub message_id: String,
    /// Offset of the stored message in the queue the server placed it on (the server may
    /// choose another queue than the one asked for, e.g. by message group for FIFO).
    pub offset: i64,
    /// Set for transactional messages only.
    pub transaction_id: Option<String>,
    /// Set for a delay message the server holds until its delivery time: pass it to
    /// [`Producer::recall`](crate::Producer::recall) to withdraw the message before then.
    pub recall_handle: Option<String>,
}

/// A received message. Pass it back to `ack` / `change_invisible_duration`.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageView {
    pub message_id: String,
    pub topic: String,
    pub tag: Option<String>,
    pub keys: Vec<String>,
    pub properties: HashMap<String, String>,
    pub message_group: Option<String>,
    pub body: Bytes,
    /// 1 on the first delivery, incremented on each redelivery.
    pub delivery_attempt: u32,
    pub queue_id: i32,
    pub offset: i64,
    pub born_host: String,
    pub born_timestamp: Option<SystemTime>,
    pub store_timestamp: Option<SystemTime>,
    /// When a DELAY message was scheduled for delivery.
    pub delivery_timestamp: Option<SystemTime>,
    /// The priority of a PRIORITY message.
    pub priority: Option<u32>,
    /// Received from a dead-letter topic (`%DLQ%<group>`): the topic it was dead-lettered
    /// from, where a redrive sends it back to.
    pub dead_letter_topic: Option<String>,
    /// The producer's W3C `traceparent`, when its send was traced (see the crate docs on
    /// tracing); [`MessageView::trace_context`] parses it.
    pub traceparent: Option<String>,
    pub(crate) receipt_handle: String,
    /// Where the message was received from; acks go back there.
    pub(crate) endpoint: Endpoint,
}

impl MessageView {
    /// A message with every field empty that no server delivered (acking it fails): for
    /// tests of code that handles received messages.
    pub fn detached(topic: impl Into<String>, message_id: impl Into<String>) -> Self {
        MessageView {
            message_id: message_id.into(),
            topic: topic.into(),
            tag: None,
            keys: Vec::new(),
            properties: HashMap::new(),
            message_group: None,
            body: Bytes::new(),
            delivery_attempt: 1,
            queue_id: 0,
            offset: 0,
            born_host: String::new(),
            born_timestamp: None,
            store_timestamp: None,
            delivery_timestamp: None,
            priority: None,
            dead_letter_topic: None,
            traceparent: None,
            receipt_handle: String::new(),
            endpoint: Endpoint {
                host: "0.0.0.0".into(),
                port: 0,
            },
        }
    }

    /// The producer's span, to link a processing span to (`Link::with_context`), when the
    /// message was sent in a sampled trace.
    pub fn trace_context(&self) -> Option<opentelemetry::trace::SpanContext> {
        crate::trace::parse_traceparent(self.traceparent.as_deref()?)
    }

    /// The current receipt handle (replaced by `change_invisible_duration`).
    pub fn receipt_handle(&self) -> &str {
        &self.receipt_handle
    }
}

/// Which messages of a topic a consumer wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterExpression {
    kind: pb::FilterType,
    expression: String,
}

impl FilterExpression {
    /// Every message of the topic (`*`).
    pub fn all() -> Self {
        FilterExpression::tag("*")
    }

    /// A tag expression: `*` or `TagA||TagB`.
    pub fn tag(expression: impl Into<String>) -> Self {
        FilterExpression {
            kind: pb::FilterType::Tag,
            expression: expression.into(),
        }
    }

    /// An SQL92 condition over the message's user properties and its tag (`TAGS`), as
    /// RocketMQ's `MessageSelector.bySql`: `region = 'eu' AND amount > 100`. The server
    /// evaluates it; messages that do not match (a missing property, a type mismatch) are not
    /// delivered to the group. A malformed expression fails when the consumer is built.
    pub fn sql(expression: impl Into<String>) -> Self {
        FilterExpression {
            kind: pb::FilterType::Sql,
            expression: expression.into(),
        }
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match self.kind {
            pb::FilterType::Sql => SqlFilter::parse(&self.expression)
                .map(|_| ())
                .map_err(|e| Error::InvalidArgument(e.to_string())),
            _ => TagFilter::parse(&self.expression)
                .map(|_| ())
                .map_err(|e| Error::InvalidArgument(e.to_string())),
        }
    }

    pub(crate) fn to_proto(&self) -> pb::FilterExpression {
        pb::FilterExpression {
            r#type: self.kind as i32,
            expression: self.expression.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn base() -> MessageBuilder {
        Message::builder("orders").body("hello")
    }

    #[test]
    fn builds_and_derives_the_kind() {
        let m = base()
            .tag("A")
            .keys(["k1", "k2"])
            .property("p", "v")
            .build()
            .unwrap();
        assert_eq!(m.kind(), MessageKind::Normal);
        assert_eq!(m.keys(), ["k1", "k2"]);
        assert_eq!(
            base().message_group("g").build().unwrap().kind(),
            MessageKind::Fifo
        );
        let at = SystemTime::now() + Duration::from_secs(10);
        assert_eq!(
            base().delivery_timestamp(at).build().unwrap().kind(),
            MessageKind::Delay
        );
    }

    #[test]
    fn rejects_what_the_official_clients_reject() {
        let rejected = [
            Message::builder("bad topic").body("x"),
            Message::builder("").body("x"),
            Message::builder("a".repeat(200)).body("x"),
            Message::builder("orders"),
            base().tag("A|B"),
            base().tag(" "),
            base().keys([""]),
            base().property("", "v"),
            base().property("k", " "),
            base().message_group(""),
            base()
                .message_group("g")
                .delivery_timestamp(SystemTime::now()),
        ];
        for b in rejected {
            let dbg = format!("{b:?}");
            assert!(
                matches!(b.build(), Err(Error::InvalidArgument(_))),
                "accepted {dbg}"
            );
        }
    }

    #[test]
    fn a_priority_message_is_neither_fifo_nor_delay() {
        let m = base().priority(5).build().unwrap();
        assert_eq!(m.kind(), MessageKind::Priority);
        assert_eq!(m.priority(), Some(5));
        let sp = m
            .to_proto("", "01AB".into(), 0, "host", None)
            .system_properties
            .unwrap();
        assert_eq!(sp.message_type, pb::MessageType::Priority as i32);
        assert_eq!(sp.priority, Some(5));
        let plain = base()
            .build()
            .unwrap()
            .to_proto("", "01AC".into(), 0, "host", None);
        assert_eq!(plain.system_properties.unwrap().priority, None);
        for b in [
            base().priority(1).message_group("g"),
            base().priority(1).delivery_timestamp(SystemTime::now()),
        ] {
            assert!(matches!(b.build(), Err(Error::InvalidArgument(_))));
        }
    }

    #[test]
    fn wire_form_carries_every_field() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let m = base()
            .tag("A")
            .keys(["k"])
            .property("p", "v")
            .delivery_timestamp(at)
            .build()
            .unwrap();
        let pb = m.to_proto("ns", "01AB".into(), 3, "host", None);
        assert_eq!(pb.topic.as_ref().unwrap().resource_namespace, "ns");
        assert_eq!(pb.topic.as_ref().unwrap().name, "orders");
        assert_eq!(pb.user_properties.get("p").map(String::as_str), Some("v"));
        let sp = pb.system_properties.unwrap();
        assert_eq!(sp.message_id, "01AB");
        assert_eq!(sp.tag.as_deref(), Some("A"));
        assert_eq!(sp.queue_id, 3);
        assert_eq!(sp.message_type, pb::MessageType::Delay as i32);
        assert_eq!(sp.body_encoding, pb::Encoding::Identity as i32);
        assert_eq!(sp.delivery_timestamp.unwrap().seconds, 2_000_000_000);
        assert!(sp.born_timestamp.is_some());
        assert_eq!(pb.body, Bytes::from_static(b"hello"));
    }

    #[test]
    fn filter_validation() {
        assert!(FilterExpression::all().validate().is_ok());
        assert!(FilterExpression::tag("A||B").validate().is_ok());
        assert!(FilterExpression::tag("A||").validate().is_err());
        assert!(FilterExpression::sql("a > 1").validate().is_ok());
        assert!(FilterExpression::sql(" ").validate().is_err());
        assert_eq!(
            FilterExpression::sql("a > 1").to_proto().r#type,
            pb::FilterType::Sql as i32
        );
    }
}

//! Interpreting a `ReceiveMessage` response stream (`Status`, then messages, then an optional
//! delivery timestamp) into [`MessageView`]s. Pure: the consumer collects the stream first.

use std::time::SystemTime;

use md5::Md5;
use sha1::{Digest as _, Sha1};
use tracing::warn;
use vela_proto::pb::rocketmq::{self as pb, Code, receive_message_response::Content};

use crate::config::Endpoint;
use crate::error::{Error, Result};
use crate::message::MessageView;

const RPC: &str = "ReceiveMessage";

/// Turns the collected stream into messages. `MESSAGE_NOT_FOUND` means an empty poll; any other
/// non-OK status is an error; a stream without a status breaks the protocol. Messages whose body
/// fails its digest are dropped (they become visible again and are redelivered).
pub(crate) fn parse_receive_stream(
    items: Vec<pb::ReceiveMessageResponse>,
    endpoint: &Endpoint,
) -> Result<Vec<MessageView>> {
    let mut status = None;
    let mut messages = Vec::new();
    for item in items {
        match item.content {
            Some(Content::Status(s)) => status = Some(s),
            Some(Content::Message(m)) => messages.push(m),
            Some(Content::DeliveryTimestamp(_)) => {}
            None => return Err(Error::invalid_response(RPC, "stream item without content")),
        }
    }
    let status = status.ok_or_else(|| Error::invalid_response(RPC, "stream carried no status"))?;
    match Code::try_from(status.code) {
        Ok(Code::Ok | Code::MultipleResults) => {}
        Ok(Code::MessageNotFound) => return Ok(Vec::new()),
        _ => return Err(Error::from_status(RPC, &status)),
    }
    let mut views = Vec::with_capacity(messages.len());
    for message in messages {
        let view = to_view(message, endpoint)?;
        if let Some(view) = view {
            views.push(view);
        }
    }
    Ok(views)
}

/// A half message a server's check-back names, as the checker sees it (no receipt handle: it
/// cannot be acknowledged). A body that fails its digest is refused.
pub(crate) fn checked_view(message: pb::Message, endpoint: &Endpoint) -> Result<MessageView> {
    to_view_with(message, endpoint, false)?
        .ok_or_else(|| Error::invalid_response(RPC, "checked message fails its body digest"))
}

/// Converts one delivered message; `Ok(None)` when its body is corrupted.
fn to_view(message: pb::Message, endpoint: &Endpoint) -> Result<Option<MessageView>> {
    to_view_with(message, endpoint, true)
}

fn to_view_with(
    message: pb::Message,
    endpoint: &Endpoint,
    delivered: bool,
) -> Result<Option<MessageView>> {
    let topic = message
        .topic
        .ok_or_else(|| Error::invalid_response(RPC, "delivered message without a topic"))?;
    let sp = message.system_properties.ok_or_else(|| {
        Error::invalid_response(RPC, "delivered message without system properties")
    })?;
    if sp.message_id.is_empty() {
        return Err(Error::invalid_response(
            RPC,
            "delivered message without a message id",
        ));
    }
    let receipt_handle = match sp.receipt_handle.filter(|h| !h.is_empty()) {
        Some(handle) => handle,
        None if !delivered => String::new(),
        None => {
            return Err(Error::invalid_response(
                RPC,
                format!("message {} has no receipt handle", sp.message_id),
            ));
        }
    };
    match pb::Encoding::try_from(sp.body_encoding) {
        Ok(pb::Encoding::Identity) => {}
        _ => {
            return Err(Error::invalid_response(
                RPC,
                format!(
                    "message {} has unsupported body encoding {}",
                    sp.message_id, sp.body_encoding
                ),
            ));
        }
    }
    if let Some(digest) = &sp.body_digest
        && !digest_matches(digest, &message.body)
    {
        warn!(message_id = %sp.message_id, topic = %topic.name, "dropping message whose body fails its digest");
        return Ok(None);
    }
    Ok(Some(MessageView {
        message_id: sp.message_id,
        topic: topic.name,
        tag: sp.tag,
        keys: sp.keys,
        properties: message.user_properties,
        message_group: sp.message_group,
        body: message.body,
        delivery_attempt: sp
            .delivery_attempt
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(1),
        queue_id: sp.queue_id,
        offset: sp.queue_offset.unwrap_or(-1),
        born_host: sp.born_host,
        born_timestamp: sp.born_timestamp.and_then(to_system_time),
        store_timestamp: sp.store_timestamp.and_then(to_system_time),
        delivery_timestamp: sp.delivery_timestamp.and_then(to_system_time),
        priority: sp.priority.and_then(|p| u32::try_from(p).ok()),
        dead_letter_topic: sp.dead_letter_queue.map(|d| d.topic),
        traceparent: sp.trace_context.filter(|t| !t.is_empty()),
        receipt_handle,
        endpoint: endpoint.clone(),
    }))
}

fn to_system_time(ts: prost_types::Timestamp) -> Option<SystemTime> {
    SystemTime::try_from(ts).ok()
}

/// MD5 and SHA1 digests (upper-case hex on the wire) are verified; CRC32 formats differ
/// between clients and servers, so it is not.
fn digest_matches(digest: &pb::Digest, body: &[u8]) -> bool {
    let computed = match pb::DigestType::try_from(digest.r#type) {
        Ok(pb::DigestType::Md5) => hex::encode(Md5::digest(body)),
        Ok(pb::DigestType::Sha1) => hex::encode(Sha1::digest(body)),
        _ => return true,
    };
    computed.eq_ignore_ascii_case(&digest.checksum)
}

#[cfg(test)]
pub(crate) mod tests {
    use bytes::Bytes;

    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint::parse("127.0.0.1:8081").unwrap()
    }

    fn status(code: Code) -> pb::ReceiveMessageResponse {
        pb::ReceiveMessageResponse {
            content: Some(Content::Status(pb::Status {
                code: code as i32,
                message: code.as_str_name().into(),
            })),
        }
    }

    fn timestamp() -> pb::ReceiveMessageResponse {
        pb::ReceiveMessageResponse {
            content: Some(Content::DeliveryTimestamp(SystemTime::now().into())),
        }
    }

    pub(crate) fn delivered(id: &str, body: &'static [u8]) -> pb::Message {
        pb::Message {
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: "t".into(),
            }),
            user_properties: [("k".to_owned(), "v".to_owned())].into(),
            system_properties: Some(pb::SystemProperties {
                tag: Some("A".into()),
                keys: vec!["key".into()],
                message_id: id.into(),
                body_digest: Some(pb::Digest {
                    r#type: pb::DigestType::Md5 as i32,
                    checksum: hex::encode_upper(Md5::digest(body)),
                }),
                body_encoding: pb::Encoding::Identity as i32,
                message_type: pb::MessageType::Normal as i32,
                born_timestamp: Some(SystemTime::now().into()),
                store_timestamp: Some(SystemTime::now().into()),
                receipt_handle: Some(format!("handle-{id}")),
                queue_id: 0,
                queue_offset: Some(7),
                delivery_attempt: Some(2),
                ..Default::default()
            }),
            body: Bytes::from_static(body),
        }
    }

    fn message(m: pb::Message) -> pb::ReceiveMessageResponse {
        pb::ReceiveMessageResponse {
            content: Some(Content::Message(m)),
        }
    }

    #[test]
    fn parses_status_messages_and_timestamp() {
        let items = vec![
            status(Code::Ok),
            message(delivered("01A", b"one")),
            message(delivered("01B", b"two")),
            timestamp(),
        ];
        let views = parse_receive_stream(items, &endpoint()).unwrap();
        assert_eq!(views.len(), 2);
        let v = &views[0];
        assert_eq!(v.message_id, "01A");
        assert_eq!(v.topic, "t");
        assert_eq!(v.tag.as_deref(), Some("A"));
        assert_eq!(v.keys, ["key"]);
        assert_eq!(v.properties.get("k").map(String::as_str), Some("v"));
        assert_eq!(&v.body[..], b"one");
        assert_eq!((v.delivery_attempt, v.offset), (2, 7));
        assert_eq!(v.receipt_handle(), "handle-01A");
        assert!(v.store_timestamp.is_some());
    }

    #[test]
    fn not_found_is_an_empty_poll() {
        let views = parse_receive_stream(
            vec![status(Code::MessageNotFound), timestamp()],
            &endpoint(),
        );
        assert!(views.unwrap().is_empty());
    }

    #[test]
    fn error_statuses_and_broken_streams_fail() {
        let err = parse_receive_stream(
            vec![status(Code::TooManyRequests), timestamp()],
            &endpoint(),
        )
        .unwrap_err();
        assert!(err.is_too_many_requests());
        let no_status = parse_receive_stream(vec![message(delivered("01A", b"x"))], &endpoint());
        assert!(matches!(no_status, Err(Error::InvalidResponse { .. })));
        let empty_item = pb::ReceiveMessageResponse { content: None };
        assert!(parse_receive_stream(vec![status(Code::Ok), empty_item], &endpoint()).is_err());
        let mut no_handle = delivered("01A", b"x");
        no_handle.system_properties.as_mut().unwrap().receipt_handle = None;
        assert!(
            parse_receive_stream(vec![status(Code::Ok), message(no_handle)], &endpoint()).is_err()
        );
        let mut no_encoding = delivered("01A", b"x");
        no_encoding
            .system_properties
            .as_mut()
            .unwrap()
            .body_encoding = 0;
        assert!(
            parse_receive_stream(vec![status(Code::Ok), message(no_encoding)], &endpoint())
                .is_err()
        );
    }

    #[test]
    fn corrupted_bodies_are_dropped() {
        let mut corrupted = delivered("01B", b"two");
        corrupted.body = Bytes::from_static(b"tampered");
        let items = vec![
            status(Code::Ok),
            message(delivered("01A", b"one")),
            message(corrupted),
            timestamp(),
        ];
        let views = parse_receive_stream(items, &endpoint()).unwrap();
        assert_eq!(
            views
                .iter()
                .map(|v| v.message_id.as_str())
                .collect::<Vec<_>>(),
            ["01A"]
        );
    }

    #[test]
    fn sha1_digests_are_checked_case_insensitively() {
        let body = b"abc";
        let sha1 = pb::Digest {
            r#type: pb::DigestType::Sha1 as i32,
            checksum: "A9993E364706816ABA3E25717850C26C9CD0D89D".into(),
        };
        assert!(digest_matches(&sha1, body));
        assert!(!digest_matches(&sha1, b"abd"));
        let crc = pb::Digest {
            r#type: pb::DigestType::Crc32 as i32,
            checksum: "whatever".into(),
        };
        assert!(digest_matches(&crc, body));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn item() -> impl Strategy<Value = pb::ReceiveMessageResponse> {
            prop_oneof![
                prop::sample::select(vec![
                    Code::Ok,
                    Code::MessageNotFound,
                    Code::TooManyRequests,
                    Code::InternalError,
                ])
                .prop_map(status),
                "[0-9A-F]{1,34}".prop_map(|id| message(delivered(&id, b"body"))),
                Just(timestamp()),
                Just(pb::ReceiveMessageResponse { content: None }),
            ]
        }

        proptest! {
            /// Whatever the server streams, parsing returns (never panics), and succeeds with
            /// messages only when the last status said OK.
            #[test]
            fn any_stream_parses_without_panicking(items in prop::collection::vec(item(), 0..8)) {
                let last_status = items.iter().rev().find_map(|i| match &i.content {
                    Some(Content::Status(s)) => Some(s.code),
                    _ => None,
                });
                let has_empty = items.iter().any(|i| i.content.is_none());
                let messages = items
                    .iter()
                    .filter(|i| matches!(i.content, Some(Content::Message(_))))
                    .count();
                match parse_receive_stream(items, &endpoint()) {
                    Ok(views) => {
                        prop_assert!(!has_empty);
                        if last_status == Some(Code::MessageNotFound as i32) {
                            prop_assert!(views.is_empty());
                        } else {
                            prop_assert_eq!(last_status, Some(Code::Ok as i32));
                            prop_assert_eq!(views.len(), messages);
                        }
                    }
                    Err(_) => prop_assert!(
                        has_empty
                            || last_status.is_none()
                            || !matches!(
                                Code::try_from(last_status.unwrap_or_default()),
                                Ok(Code::Ok | Code::MessageNotFound)
                            )
                    ),
                }
            }
        }
    }
}

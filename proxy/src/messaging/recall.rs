//! RecallMessage: withdrawing a delay message before it is due.
//!
//! A send that parks a delay message answers a recall handle (`SendResultEntry.recall_handle`,
//! as RocketMQ 5.3.2+ does). The client's handle wraps the store's (which names the shard,
//! the due time and the record, so any proxy routes it) and the message id (which the recall
//! answers): `base64url("1 <store handle> <message id>")`. Clients treat it as opaque.
//!
//! A recall that finds nothing waiting (delivered, recalled already, another topic) answers
//! NOT_FOUND (40400): the official clients take MESSAGE_NOT_FOUND (40401) for "nothing to
//! receive" and would report the failed recall as a success.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use vela_proto::pb::rocketmq::{self as pb, Code};

use crate::Shared;
use crate::convert;
use crate::headers::RequestMeta;
use crate::status::{RpcError, ok_status};

/// The format version a handle starts with.
const VERSION: &str = "1";
/// Longest handle accepted (a valid one is well under 200 bytes).
const MAX_HANDLE: usize = 512;

/// The client's recall handle for a message the store parked under `store_handle`.
pub(super) fn encode(store_handle: &str, message_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{VERSION} {store_handle} {message_id}"))
}

/// The store handle and message id a client's recall handle carries.
fn decode(handle: &str) -> Option<(String, String)> {
    if handle.len() > MAX_HANDLE {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(handle.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.splitn(3, ' ');
    if parts.next()? != VERSION {
        return None;
    }
    let store = parts.next()?;
    let id = parts.next()?;
    (!store.is_empty() && !id.is_empty()).then(|| (store.to_owned(), id.to_owned()))
}

pub(super) async fn recall_message(
    shared: &Shared,
    meta: &RequestMeta,
    req: &pb::RecallMessageRequest,
) -> Result<pb::RecallMessageResponse, RpcError> {
    let topic = convert::topic_name(req.topic.as_ref(), &meta.namespace)?;
    let (store_handle, message_id) = decode(&req.recall_handle).ok_or_else(|| {
        RpcError::bad_request(format!(
            "recall handle {:?} is not one a send of this service answered",
            truncated(&req.recall_handle)
        ))
    })?;
    shared
        .ctx
        .store
        .recall(&topic, &store_handle)
        .await
        .map_err(|e| {
            let err = RpcError::from(e);
            if err.code == Code::NotFound {
                RpcError::new(
                    Code::NotFound,
                    format!(
                        "delay message {message_id} of {topic} is not waiting any more: \
                     delivered (its time came), recalled already, or not of this topic"
                    ),
                )
            } else {
                err
            }
        })?;
    tracing::debug!(%topic, %message_id, "delay message recalled");
    Ok(pb::RecallMessageResponse {
        status: Some(ok_status()),
        message_id,
    })
}

fn truncated(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_handle_carries_the_store_handle_and_the_message_id() {
        let handle = encode("3-1800000000000-42-1", "01AB");
        assert_eq!(
            decode(&handle),
            Some(("3-1800000000000-42-1".into(), "01AB".into()))
        );
        assert!(!handle.contains(' '), "opaque and URL-safe: {handle}");
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "not base64 !",
            &URL_SAFE_NO_PAD.encode("2 0-1-2-3 id"),
            &URL_SAFE_NO_PAD.encode("1 0-1-2-3"),
            &URL_SAFE_NO_PAD.encode("1  id"),
            &URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
            &"A".repeat(MAX_HANDLE + 1),
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn decoding_never_panics(s in ".{0,600}") {
            let _ = decode(&s);
        }
    }
}

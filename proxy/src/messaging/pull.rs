//! PullMessage: a consumer that keeps its own offsets reads a queue from an offset (Apache's
//! proxy answers UNIMPLEMENTED). Nothing of the group's state changes: the client commits
//! where it got to with UpdateOffset if it wants the server to remember it.
//!
//! The stream is `Status` (OK with messages, MESSAGE_NOT_FOUND without), one item per message
//! (with its queue id and offset, no receipt handle: there is nothing to acknowledge), then
//! `next_offset`, where the next pull goes on (past what was looked at, matching or not). An
//! offset below the queue's retained messages reads from the first one; past its end is
//! ILLEGAL_OFFSET.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use vela_proto::pb::rocketmq::{self as pb, Code, pull_message_response::Content};
use vela_proto::store_api::{PullRequest, Pulled};
use vela_proto::{MAX_RECEIVE_BATCH, StoreError};

use super::ResponseStream;
use super::offsets::queue_of;
use crate::Shared;
use crate::auth::Creator;
use crate::convert;
use crate::headers::RequestMeta;
use crate::status::{RpcError, ok_status};

/// Kept back from the caller's deadline so the answer arrives before it.
const DEADLINE_MARGIN: Duration = Duration::from_millis(200);

/// The pull stream; the work runs when tonic polls the body.
pub(super) fn pull_stream(
    shared: Arc<Shared>,
    meta: RequestMeta,
    req: pb::PullMessageRequest,
) -> ResponseStream<pb::PullMessageResponse> {
    let items = async move {
        let started = Instant::now();
        let mut items = Vec::new();
        let code = match pull(&shared, &meta, &req).await {
            Ok((messages, next_offset)) => {
                let code = if messages.is_empty() {
                    let status = RpcError::new(Code::MessageNotFound, "no new message");
                    items.push(Content::Status(status.to_status(meta.legacy_codes)));
                    Code::MessageNotFound
                } else {
                    items.push(Content::Status(ok_status()));
                    items.extend(messages.into_iter().map(Content::Message));
                    Code::Ok
                };
                items.push(Content::NextOffset(next_offset));
                code
            }
            Err(err) => {
                tracing::debug!(code = ?err.code, error = %err.message, "pull rejected");
                items.push(Content::Status(err.to_status(meta.legacy_codes)));
                err.code
            }
        };
        shared
            .ctx
            .metrics
            .observe_rpc("PullMessage", code as i32, started.elapsed());
        items
    };
    Box::pin(futures::stream::once(items).flat_map(|items| {
        futures::stream::iter(items.into_iter().map(|content| {
            Ok(pb::PullMessageResponse {
                content: Some(content),
            })
        }))
    }))
}

async fn pull(
    shared: &Shared,
    meta: &RequestMeta,
    req: &pb::PullMessageRequest,
) -> Result<(Vec<pb::Message>, i64), RpcError> {
    let group = convert::group_name(req.group.as_ref(), &meta.namespace)?;
    let group = shared
        .metadata
        .group(&group, Creator::new(&shared.guard, meta))
        .await?;
    let (topic, queue_id, shard) = queue_of(shared, meta, req.message_queue.as_ref()).await?;
    let offset = u64::try_from(req.offset).map_err(|_| {
        RpcError::new(
            Code::IllegalOffset,
            format!("offset {} is negative", req.offset),
        )
    })?;
    let max_messages = u32::try_from(req.batch_size)
        .ok()
        .filter(|b| (1..=MAX_RECEIVE_BATCH).contains(b))
        .ok_or_else(|| {
            RpcError::bad_request(format!(
                "batch size {} is outside 1..={MAX_RECEIVE_BATCH}",
                req.batch_size
            ))
        })?;
    let filter = convert::message_filter(req.filter_expression.as_ref())?;
    let requested = req
        .long_polling_timeout
        .as_ref()
        .and_then(convert::duration_from_pb);
    let remaining = meta
        .remaining()
        .map(|left| left.saturating_sub(DEADLINE_MARGIN));
    let config = &shared.ctx.config;
    let wait = convert::poll_time(
        requested,
        remaining,
        Duration::ZERO,
        config.max_long_polling,
    );
    let pulled = shared
        .ctx
        .store
        .pull(PullRequest {
            topic: topic.clone(),
            queue_id,
            shard,
            offset,
            max_messages,
            filter,
            wait,
        })
        .await
        .map_err(|e| match e {
            StoreError::Invalid(why) => RpcError::new(Code::IllegalOffset, why),
            other => other.into(),
        })?;
    let Pulled {
        messages,
        next_offset,
        ..
    } = pulled;
    let bytes: u64 = messages.iter().map(|m| m.message.body.len() as u64).sum();
    shared.ctx.metrics.delivered(
        topic.as_str(),
        group.name.as_str(),
        (messages.len() as u64, bytes),
        (0, 0),
    );
    let wire = messages
        .into_iter()
        .map(|m| convert::pulled_message(&topic, queue_id, m, &shared.store_host))
        .collect();
    Ok((wire, i64::try_from(next_offset).unwrap_or(i64::MAX)))
}

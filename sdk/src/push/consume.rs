//! A push consumer's work on one assigned queue: receive what fits, hand each message to the
//! listener (in order per message group on a FIFO group), keep it invisible while that runs,
//! then acknowledge or retry it.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{ConsumeResult, PushInner};
use crate::StatusCode;
use crate::error::Error;
use crate::message::{FilterExpression, MessageView};
use crate::route::RouteQueue;

/// Pause after a failed receive, doubling while receives keep failing.
const RECEIVE_RETRY: Duration = Duration::from_millis(200);
const RECEIVE_RETRY_MAX: Duration = Duration::from_secs(5);
/// Attempts at acknowledging a processed message before it is left to be redelivered.
const ACK_ATTEMPTS: u32 = 3;
/// Pause before re-trying a renewal or an acknowledgement that failed.
const RENEW_RETRY: Duration = Duration::from_secs(1);

/// Receives from `queue` until `stop`, dispatching what arrives. A FIFO group's batch is
/// finished before the next receive, so its order holds; a normal group receives again as
/// soon as there is room.
pub(super) async fn receive_loop(
    inner: Arc<PushInner>,
    queue: RouteQueue,
    filter: FilterExpression,
    stop: CancellationToken,
) {
    let mut retry = RECEIVE_RETRY;
    loop {
        let settings = inner.calls.core.shared.server_settings().consumer;
        // Room for at least one message, then for as many more as one receive may ask.
        let mut room = tokio::select! {
            _ = stop.cancelled() => return,
            permit = inner.cached.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let more = (settings.batch_size as usize)
            .saturating_sub(1)
            .min(inner.cached.available_permits());
        if more > 0
            && let Ok(extra) = inner.cached.clone().try_acquire_many_owned(more as u32)
        {
            room.merge(extra);
        }
        let batch = u32::try_from(room.num_permits()).unwrap_or(u32::MAX);
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            received = inner.calls.receive(
                &queue,
                &filter,
                batch,
                inner.invisible,
                settings.long_polling,
            ) => received,
        };
        let received_at = Instant::now();
        let messages = match received {
            Ok(messages) => {
                retry = RECEIVE_RETRY;
                messages
            }
            Err(Error::Shutdown) => return,
            Err(e) => {
                warn!(group = %inner.calls.group, queue = queue.id(), error = %e, "receive failed; retrying");
                drop(room);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(RECEIVE_RETRY_MAX);
                continue;
            }
        };
        // One permit per message received; the rest of the room is given back.
        let renew_at = renewal_due(received_at, inner.invisible);
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            let Some(held) = room.split(1) else { break };
            pending.push(Pending {
                message,
                received_at,
                renew_at,
                _held: held,
            });
        }
        drop(room);
        if settings.fifo {
            let mut running = Vec::new();
            for lane in fifo_lanes(pending) {
                running.push(inner.work.spawn(consume_lane(
                    inner.clone(),
                    lane,
                    true,
                    stop.clone(),
                )));
            }
            for task in running {
                if let Err(e) = task.await {
                    warn!(group = %inner.calls.group, error = %e, "a FIFO consume task failed");
                }
            }
        } else {
            for one in pending {
                inner.work.spawn(consume_lane(
                    inner.clone(),
                    VecDeque::from([one]),
                    false,
                    stop.clone(),
                ));
            }
        }
    }
}

/// A received message not yet finished.
struct Pending {
    message: MessageView,
    received_at: Instant,
    /// When its invisibility is next renewed.
    renew_at: Instant,
    /// Its place among the messages the consumer holds.
    _held: OwnedSemaphorePermit,
}

/// A batch split by message group, each group's messages in the order received.
fn fifo_lanes(messages: Vec<Pending>) -> Vec<VecDeque<Pending>> {
    let mut lanes: Vec<(Option<String>, VecDeque<Pending>)> = Vec::new();
    for pending in messages {
        let group = pending.message.message_group.clone();
        match lanes.iter_mut().find(|(g, _)| *g == group) {
            Some((_, lane)) => lane.push_back(pending),
            None => lanes.push((group, VecDeque::from([pending]))),
        }
    }
    lanes.into_iter().map(|(_, lane)| lane).collect()
}

/// Consumes `lane` in order, keeping every message of it invisible until it is finished.
/// Success acknowledges. On failure a normal group's message is made visible again after the
/// group's back-off for its attempt; a FIFO group's is handed to the listener again after the
/// back-off, until the group's attempts are used up, and then forwarded to the dead-letter
/// queue. Returns early only when the consumer stops (what is left is then given back by the
/// server when the client leaves); a listener call in progress always finishes.
async fn consume_lane(
    inner: Arc<PushInner>,
    mut lane: VecDeque<Pending>,
    fifo: bool,
    stop: CancellationToken,
) {
    while !lane.is_empty() {
        let slot = inner.consuming.clone().acquire_owned();
        let Some(Ok(_slot)) = keeping(&inner, lane.make_contiguous(), Some(&stop), slot).await
        else {
            return;
        };
        loop {
            let current = &lane[0];
            let (view, received_at) = (current.message.clone(), current.received_at);
            let started = Instant::now();
            let cx = crate::trace::process_span(
                &view,
                inner.calls.group.as_str(),
                &inner.calls.core.shared.client_id,
            );
            let run = tokio::spawn(opentelemetry::trace::FutureExt::with_context(
                (inner.listener)(view),
                cx.clone(),
            ));
            let result = match keeping(&inner, lane.make_contiguous(), None, run).await {
                Some(Ok(result)) => result,
                Some(Err(e)) => {
                    warn!(group = %inner.calls.group, message_id = %lane[0].message.message_id, error = %e, "the listener panicked; counted as a failure");
                    ConsumeResult::Failure
                }
                None => ConsumeResult::Failure,
            };
            crate::trace::end_process(&cx, result == ConsumeResult::Success);
            let message = &mut lane[0].message;
            inner.calls.core.shared.metrics.consumed(
                &message.topic,
                inner.calls.group.as_str(),
                started.duration_since(received_at),
                started.elapsed(),
                result == ConsumeResult::Success,
            );
            if result == ConsumeResult::Success {
                ack(&inner, message).await;
                break;
            }
            let retry = inner.calls.core.shared.server_settings().consumer.retry;
            let delay = retry.delay(message.delivery_attempt);
            if !fifo {
                if let Err(e) = inner.calls.change_invisible_duration(message, delay).await {
                    warn!(group = %inner.calls.group, message_id = %message.message_id, error = %e, "could not schedule the retry; the message comes back when its invisibility ends");
                }
                break;
            }
            if retry.exhausted(message.delivery_attempt) {
                if let Err(e) = inner
                    .calls
                    .forward_to_dead_letter_queue(message, retry.max_attempts)
                    .await
                {
                    warn!(group = %inner.calls.group, message_id = %message.message_id, error = %e, "could not dead-letter the message; it comes back when its invisibility ends");
                }
                break;
            }
            // Wait out the back-off holding the message (and the rest of its group), then
            // hand it to the listener again.
            let backoff = tokio::time::sleep(delay);
            if keeping(&inner, lane.make_contiguous(), Some(&stop), backoff)
                .await
                .is_none()
            {
                return;
            }
            let message = &mut lane[0].message;
            message.delivery_attempt = message.delivery_attempt.saturating_add(1);
        }
        lane.pop_front();
    }
}

/// Drives `work` to its end while keeping every message of `lane` invisible; `None` if
/// `stop` (when given) fires first.
async fn keeping<T>(
    inner: &PushInner,
    lane: &mut [Pending],
    stop: Option<&CancellationToken>,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::pin!(work);
    loop {
        let next = lane.iter().map(|p| p.renew_at).min();
        let renewal = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let stopped = async {
            match stop {
                Some(stop) => stop.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            out = &mut work => return Some(out),
            _ = stopped => return None,
            _ = renewal => {
                let now = Instant::now();
                for pending in lane.iter_mut().filter(|p| p.renew_at <= now) {
                    pending.renew_at = renew(inner, &mut pending.message).await;
                }
            }
        }
    }
}

/// When a message made invisible at `since` for `invisible` is next renewed: with a third of
/// its invisibility left.
fn renewal_due(since: Instant, invisible: Duration) -> Instant {
    since + invisible * 2 / 3
}

/// Renews the message's invisibility; returns when to renew next.
async fn renew(inner: &PushInner, message: &mut MessageView) -> Instant {
    let now = Instant::now();
    match inner
        .calls
        .change_invisible_duration(message, inner.invisible)
        .await
    {
        Ok(()) => {
            debug!(group = %inner.calls.group, message_id = %message.message_id, "renewed the invisibility of a message being consumed");
            renewal_due(now, inner.invisible)
        }
        Err(e) => {
            warn!(group = %inner.calls.group, message_id = %message.message_id, error = %e, "could not renew the invisibility of a message being consumed; it may be redelivered");
            now + RENEW_RETRY
        }
    }
}

/// Acknowledges a processed message, retrying transient failures a few times. A handle the
/// server no longer knows is not retried: the message was redelivered or settled meanwhile.
async fn ack(inner: &PushInner, message: &MessageView) {
    for attempt in 1..=ACK_ATTEMPTS {
        match inner.calls.ack(message).await {
            Ok(()) => return,
            Err(e)
                if e.code() == Some(StatusCode::InvalidReceiptHandle)
                    || attempt == ACK_ATTEMPTS =>
            {
                warn!(group = %inner.calls.group, message_id = %message.message_id, error = %e, "could not acknowledge a processed message; it may be delivered again");
                return;
            }
            Err(e) => {
                debug!(group = %inner.calls.group, message_id = %message.message_id, error = %e, "acknowledgement failed; retrying");
                tokio::time::sleep(RENEW_RETRY * attempt).await;
            }
        }
    }
}

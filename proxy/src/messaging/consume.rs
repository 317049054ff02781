//! The consumer side: POP receive (with the exact stream shape clients parse), ack, change of
//! invisibility, dead-lettering, push-consumer assignments and heartbeats.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use vela_proto::pb::rocketmq::{self as pb, ClientType, Code, receive_message_response::Content};
use vela_proto::receipt::ReceiptTicket;
use vela_proto::store_api::{PopRequest, QueueSelector, StoreError};
use vela_proto::{DEFAULT_AUTO_RENEW_INVISIBLE, GroupName, TopicName, TopicType};

use super::ResponseStream;
use crate::Shared;
use crate::auth::Creator;
use crate::convert;
use crate::headers::RequestMeta;
use crate::held::Renewal;
use crate::route;
use crate::status::{RpcError, aggregate_code, ok_status};

/// Kept free of the client's deadline, so the answer is on the wire before the client gives up.
const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

pub(super) async fn heartbeat(
    shared: &Shared,
    meta: &RequestMeta,
    req: &pb::HeartbeatRequest,
) -> Result<pb::HeartbeatResponse, RpcError> {
    let is_consumer = req.client_type != ClientType::Producer as i32;
    if let Some(resource) = req
        .group
        .as_ref()
        .filter(|g| is_consumer && !g.name.is_empty())
    {
        let group = convert::group_name(Some(resource), &meta.namespace)?;
        // Creates the group when auto-creation is on. A missing group is not the heartbeat's
        // failure (clients only log it); receive reports it.
        if let Err(e) = shared
            .metadata
            .group(&group, Creator::new(&shared.guard, meta))
            .await
        {
            tracing::debug!(%group, error = %e.message, "heartbeat for an unusable group");
        }
    }
    Ok(pb::HeartbeatResponse {
        status: Some(ok_status()),
    })
}

/// Push consumers poll what this returns. A receive pops from every queue of the topic, so
/// one assignment does the work of all (as the Java proxy's queue -1); FIFO groups get one per
/// queue, as in the Java proxy.
pub(super) async fn query_assignment(
    shared: &Shared,
    meta: &RequestMeta,
    req: &pb::QueryAssignmentRequest,
) -> Result<pb::QueryAssignmentResponse, RpcError> {
    let topic_name = convert::topic_name(req.topic.as_ref(), &meta.namespace)?;
    let group_name = convert::group_name(req.group.as_ref(), &meta.namespace)?;
    let topic = shared
        .metadata
        .declare_topic(&topic_name, Creator::new(&shared.guard, meta))
        .await?;
    let group = shared
        .metadata
        .group(&group_name, Creator::new(&shared.guard, meta))
        .await?;
    let endpoints = route::route_endpoints(
        shared.advertised.as_ref(),
        req.endpoints.as_ref(),
        &shared.listen_endpoints,
    );
    let mut queues = route::message_queues(&topic, &endpoints);
    if !group.fifo {
        queues.truncate(1);
    }
    Ok(pb::QueryAssignmentResponse {
        status: Some(ok_status()),
        assignments: queues
            .into_iter()
            .map(|q| pb::Assignment {
                message_queue: Some(q),
            })
            .collect(),
    })
}

/// The receive stream: `Status`, then one item per message, then `delivery_timestamp`, then
/// the end (protocol.md §4.5). The work runs when tonic polls the body, i.e. after the
/// response headers are out.
pub(super) fn receive_stream(
    shared: Arc<Shared>,
    meta: RequestMeta,
    req: pb::ReceiveMessageRequest,
) -> ResponseStream<pb::ReceiveMessageResponse> {
    let items = async move {
        let started = Instant::now();
        let span = tracing::debug_span!(
            "rpc",
            rpc = "ReceiveMessage",
            client_id = meta.client_id.as_deref().unwrap_or("")
        );
        let outcome = tracing::Instrument::instrument(receive(&shared, &meta, &req), span).await;
        let mut items = Vec::new();
        let code = match outcome {
            Ok(messages) if messages.is_empty() => {
                let status = RpcError::new(Code::MessageNotFound, "no new message");
                items.push(Content::Status(status.to_status(meta.legacy_codes)));
                Code::MessageNotFound
            }
            Ok(messages) => {
                items.push(Content::Status(ok_status()));
                items.extend(messages.into_iter().map(Content::Message));
                Code::Ok
            }
            Err(err) => {
                tracing::debug!(code = ?err.code, error = %err.message, "receive rejected");
                items.push(Content::Status(err.to_status(meta.legacy_codes)));
                err.code
            }
        };
        items.push(Content::DeliveryTimestamp(convert::ms_to_timestamp(
            shared.ctx.clock.now_ms(),
        )));
        shared
            .ctx
            .metrics
            .observe_rpc("ReceiveMessage", code as i32, started.elapsed());
        items
    };
    Box::pin(futures::stream::once(items).flat_map(|items| {
        futures::stream::iter(items.into_iter().map(|content| {
            Ok(pb::ReceiveMessageResponse {
                content: Some(content),
            })
        }))
    }))
}

async fn receive(
    shared: &Shared,
    meta: &RequestMeta,
    req: &pb::ReceiveMessageRequest,
) -> Result<Vec<pb::Message>, RpcError> {
    let client_id = meta.require_client_id()?;
    if shared.guard.enabled() {
        let needs = crate::auth::needs::Needs::needs(req, &meta.namespace);
        shared.guard.check(meta, &needs).await?;
    }
    let config = &shared.ctx.config;
    let params = convert::receive_params(req, &meta.namespace, DEFAULT_AUTO_RENEW_INVISIBLE)?;
    let group = shared
        .metadata
        .group(&params.group, Creator::new(&shared.guard, meta))
        .await?;
    // Dead-letter topics exist once their group does (the metadata lookup ensures them), so
    // unknown names never reach the store.
    let topic = shared.metadata.topic(&params.topic).await?;
    let remaining = meta
        .remaining()
        .map(|left| left.saturating_sub(DEADLINE_MARGIN));
    let wait = convert::poll_time(
        params.requested_poll,
        remaining,
        config.min_long_polling,
        config.max_long_polling,
    );
    // A priority topic's queue ids are its priorities: its receives read the highest first,
    // over its shards in that order too.
    let highest_first = topic.topic_type == TopicType::Priority;
    let mut shards = shared.shards_of(&topic).await;
    if highest_first {
        shards = Vec::new();
        for shard in topic.queue_shards.iter().rev() {
            if !shards.contains(shard) {
                shards.push(*shard);
            }
        }
    }
    // A broadcast group's instance is born at its first receive: "latest" and "auto" count
    // from then on each queue it has no position on yet.
    let (positions, born_ms) = if group.broadcast {
        (
            convert::positions_of(&group, client_id)?,
            shared.ctx.clock.now_ms(),
        )
    } else {
        (params.group.clone(), group.created_at_ms)
    };
    let request = PopRequest {
        group: positions,
        topic: params.topic.clone(),
        queues: if highest_first {
            QueueSelector::HighestFirst
        } else {
            QueueSelector::All
        },
        max_messages: params.batch,
        invisible: params.invisible,
        filter: params.filter,
        fifo: group.fifo,
        max_attempts: group.max_attempts,
        wait,
        group_created_ms: Some(born_ms),
        group_start: group.start,
        shards,
        // Already validated as a header; one the store would refuse is just not recorded.
        client_id: meta
            .client_id
            .as_deref()
            .and_then(|c| vela_proto::ClientId::new(c).ok()),
    };
    // A push consumer asking again with the `attempt_id` of a receive whose answer it never
    // got: what that answer delivered is made visible again first, so this receive can return
    // it instead of it staying invisible for the whole invisibility.
    let attempt = req.attempt_id.as_deref().filter(|a| !a.is_empty());
    if let (Some(client), Some(attempt)) = (&meta.client_id, attempt) {
        let lost = shared.held.take_attempt(client, attempt);
        if !lost.is_empty() {
            let count = lost.len();
            let released = release(shared, lost, Duration::ZERO).await;
            tracing::debug!(
                client,
                attempt,
                count,
                released,
                "a receive was retried: released what its lost answer delivered"
            );
        }
    }
    // Nothing is delivered that could not be handed out with a receipt handle.
    shared
        .receipts
        .ensure_loaded(shared.ctx.controller.as_ref())
        .await?;
    let deliveries = shared.ctx.store.pop(request).await?;
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(client) = &meta.client_id {
        let now_ms = shared.ctx.clock.now_ms();
        let max = config.auto_renew_max;
        let renewal = (req.auto_renew && !max.is_zero()).then(|| Renewal {
            invisible: params.invisible,
            until_ms: now_ms.saturating_add(i64::try_from(max.as_millis()).unwrap_or(i64::MAX)),
        });
        shared.held.delivered(
            client,
            deliveries.iter().map(|d| &d.ticket),
            now_ms,
            renewal,
            attempt,
        );
    }
    let (mut all, mut retried) = ((0u64, 0u64), (0u64, 0u64));
    for d in &deliveries {
        let len = d.message.body.len() as u64;
        all = (all.0 + 1, all.1 + len);
        if d.attempt > 1 {
            retried = (retried.0 + 1, retried.1 + len);
        }
    }
    shared
        .ctx
        .metrics
        .delivered(params.topic.as_str(), params.group.as_str(), all, retried);
    deliveries
        .into_iter()
        .map(|d| {
            let handle = shared.receipts.encode(&d.ticket)?;
            Ok(convert::delivered_message(d, handle, &shared.store_host))
        })
        .collect::<Result<_, RpcError>>()
}

/// Most releases of a departing client's deliveries in flight at once.
const RELEASES_AT_ONCE: usize = 64;

/// A client leaves: the deliveries it received here and did not settle become visible again
/// soon ([`crate::held::RELEASE_AFTER`]) instead of at the end of their invisibility. A
/// producer's termination names no group and holds nothing.
pub(super) async fn notify_client_termination(
    shared: &Shared,
    meta: &RequestMeta,
    req: &pb::NotifyClientTerminationRequest,
) -> Result<pb::NotifyClientTerminationResponse, RpcError> {
    let client = meta.require_client_id()?;
    let group = match req.group.as_ref().filter(|g| !g.name.is_empty()) {
        Some(g) => Some(convert::group_name(Some(g), &meta.namespace)?),
        None => None,
    };
    let tickets = shared.held.take(client, group.as_ref());
    if !tickets.is_empty() {
        let count = tickets.len();
        let released = release(shared, tickets, crate::held::RELEASE_AFTER).await;
        tracing::debug!(
            client,
            count,
            released,
            "released a departing client's deliveries"
        );
    }
    Ok(pb::NotifyClientTerminationResponse {
        status: Some(ok_status()),
    })
}

/// Makes deliveries visible again after `after`; returns how many were still current (the rest
/// were settled elsewhere or had expired: nothing to give back).
pub(super) async fn release(
    shared: &Shared,
    tickets: Vec<ReceiptTicket>,
    after: Duration,
) -> usize {
    futures::stream::iter(tickets)
        .map(|ticket| async move {
            shared
                .ctx
                .store
                .change_invisible(&ticket, after)
                .await
                .is_ok()
        })
        .buffer_unordered(RELEASES_AT_ONCE)
        .filter(|released| std::future::ready(*released))
        .count()
        .await
}

/// How often the proxy looks for deliveries to renew for `auto_renew` consumers (RocketMQ's
/// `renewSchedulePeriodMillis`).
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// Deliveries are renewed once they would become visible within this long.
const RENEW_AHEAD: Duration = Duration::from_secs(20);
/// Most renewals in flight at once.
const RENEWALS_AT_ONCE: usize = 64;

/// Keeps the deliveries of push consumers that asked for `auto_renew` invisible while they
/// hold them ([`crate::held`]), every [`RENEW_EVERY`] until `shutdown`. A renewal keeps the
/// delivery id, so the handle the client holds stays valid at any proxy. A delivery the store
/// says is no longer current (settled or redelivered) is forgotten; one that failed for another
/// reason is tried again next round.
pub(crate) async fn auto_renew(shared: Arc<Shared>, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let due = shared.held.due(shared.ctx.clock.now_ms(), RENEW_AHEAD);
        if due.is_empty() {
            continue;
        }
        let count = due.len();
        let renewed = futures::stream::iter(due)
            .map(|(client, ticket, invisible)| {
                let shared = &shared;
                async move {
                    match shared.ctx.store.renew_invisible(&ticket, invisible).await {
                        Ok(renewed) => {
                            shared.held.renewed_here(&client, &renewed);
                            true
                        }
                        Err(StoreError::StaleReceipt(_)) => {
                            shared.held.settled(&client, &ticket);
                            false
                        }
                        Err(err) => {
                            tracing::debug!(%client, error = %err, "renewing a push consumer's delivery failed; next round tries again");
                            false
                        }
                    }
                }
            })
            .buffer_unordered(RENEWALS_AT_ONCE)
            .filter(|renewed| std::future::ready(*renewed))
            .count()
            .await;
        tracing::debug!(count, renewed, "renewed push consumers' deliveries");
    }
}

/// The group and topic a consumer call names, with the bare topic name for the lenient
/// namespace comparison.
struct ConsumerTarget {
    group: GroupName,
    topic: TopicName,
    bare_topic: String,
}

fn consumer_target(
    meta: &RequestMeta,
    group: Option<&pb::Resource>,
    topic: Option<&pb::Resource>,
) -> Result<ConsumerTarget, RpcError> {
    Ok(ConsumerTarget {
        group: convert::group_name(group, &meta.namespace)?,
        topic: convert::topic_name(topic, &meta.namespace)?,
        bare_topic: topic.map(|t| t.name.clone()).unwrap_or_default(),
    })
}

/// Verifies a receipt handle and that it belongs to the group and topic of the request.
async fn ticket_for(
    shared: &Shared,
    target: &ConsumerTarget,
    handle: &str,
) -> Result<ReceiptTicket, RpcError> {
    let ticket = shared
        .receipts
        .decode(shared.ctx.controller.as_ref(), handle)
        .await?;
    // A broadcast group's deliveries belong to one of its instances.
    if !target.group.owns(&ticket.group)
        || !convert::same_topic(&ticket.topic, &target.topic, &target.bare_topic)
    {
        return Err(RpcError::new(
            Code::InvalidReceiptHandle,
            format!(
                "receipt handle belongs to group {} and topic {}, not {} and {}",
                ticket.group, ticket.topic, target.group, target.topic
            ),
        ));
    }
    Ok(ticket)
}

pub(super) async fn ack_message(
    shared: &Shared,
    meta: &RequestMeta,
    req: &pb::AckMessageRequest,
) -> Result<pb::AckMessageResponse, RpcError> {
    if req.entries.is_empty() {
        return Err(RpcError::bad_request("ack request carries no entry"));
    }
    if req.entries.len() > convert::MAX_ACK_BATCH {
        return Err(RpcError::bad_request(format!(
            "ack request carries {} entries, more than {}",
            req.entries.len(),
            convert::MAX_ACK_BATCH
        )));
    }
    let target = consumer_target(meta, req.group.as_ref(), req.topic.as_ref())?;
    let acks = req.entries.iter().map(|entry| {
        let target = &target;
        async move {
            let ticket = ticket_for(shared, target, &entry.receipt_handle).await?;
            shared.ctx.store.ack(&ticket).await?;
            if let Some(client) = &meta.client_id {
                shared.held.settled(client, &ticket);
            }
            Ok::<(), RpcError>(())
        }
    });
    let results = futures::future::join_all(acks).await;
    let code = aggregate_code(
        results
            .iter()
            .map(|r| r.as_ref().map_or_else(|e| e.code, |_| Code::Ok)),
    );
    let entries: Vec<pb::AckMessageResultEntry> = req
        .entries
        .iter()
        .zip(&results)
        .map(|(entry, result)| pb::AckMessageResultEntry {
            message_id: entry.message_id.clone(),
            receipt_handle: entry.receipt_handle.clone(),
            status: Some(match result {
                Ok(()) => ok_status(),
                Err(e) => e.to_status(meta.legacy_codes),
            }),
        })
        .collect();
    let status = match code {
        Code::Ok => ok_status(),
        Code::MultipleResults => pb::Status {
            code: Code::MultipleResults as i32,
            message: "entries of the request had different results".to_owned(),
        },
        _ => entries[0].status.clone().unwrap_or_else(ok_status),
    };
    Ok(pb::AckMessageResponse {
        status: Some(status),
        entries,
    })
}

pub(super) async fn change_invisible_duration(
    shared: &Shared,
    meta: &RequestMeta,
    req: &pb::ChangeInvisibleDurationRequest,
) -> Result<pb::ChangeInvisibleDurationResponse, RpcError> {
    let target = consumer_target(meta, req.group.as_ref(), req.topic.as_ref())?;
    let invisible = convert::changed_invisible(req.invisible_duration.as_ref())?;
    let ticket = ticket_for(shared, &target, &req.receipt_handle).await?;
    let renewed = shared
        .ctx
        .store
        .change_invisible(&ticket, invisible)
        .await?;
    if let Some(client) = &meta.client_id {
        shared.held.renewed(client, &renewed);
    }
    Ok(pb::ChangeInvisibleDurationResponse {
        status: Some(ok_status()),
        receipt_handle: shared.receipts.encode(&renewed)?,
    })
}

pub(super) async fn forward_to_dead_letter_queue(
    shared: &Shared,
    meta: &RequestMeta,
    req: &pb::ForwardMessageToDeadLetterQueueRequest,
) -> Result<pb::ForwardMessageToDeadLetterQueueResponse, RpcError> {
    let target = consumer_target(meta, req.group.as_ref(), req.topic.as_ref())?;
    let ticket = ticket_for(shared, &target, &req.receipt_handle).await?;
    shared.ctx.store.dead_letter(&ticket).await?;
    shared
        .ctx
        .metrics
        .dead_lettered(target.topic.as_str(), target.group.as_str());
    if let Some(client) = &meta.client_id {
        shared.held.settled(client, &ticket);
    }
    tracing::debug!(group = %target.group, topic = %target.topic, message_id = %req.message_id, "forwarded to dead-letter queue");
    Ok(pb::ForwardMessageToDeadLetterQueueResponse {
        status: Some(ok_status()),
    })
}

//! The producer side: routes, sends (one store append per queue touched by a request) and
//! transaction ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use vela_proto::pb::rocketmq::{self as pb, Code, TransactionResolution as WireResolution};
use vela_proto::store_api::{AppendOutcome, AppendRequest, TransactionResolution};
use vela_proto::{ClientId, MessageKind, MessageRecord, ShardId, TopicConfig, TopicName};
use vela_telemetry::KeyValue;
use vela_telemetry::traces::{BoxedSpan, end_span};

use crate::Shared;
use crate::auth::Creator;
use crate::convert::{self, MessageLimits, ProducedMessage};
use crate::headers::{CLIENT_ID, RequestMeta};
use crate::route;
use crate::status::{RpcError, aggregate_code, ok_status};

pub(super) async fn query_route(
    shared: &Shared,
    meta: &RequestMeta,
    req: &pb::QueryRouteRequest,
) -> Result<pb::QueryRouteResponse, RpcError> {
    let topic = convert::topic_name(req.topic.as_ref(), &meta.namespace)?;
    let config = shared
        .metadata
        .declare_topic(&topic, Creator::new(&shared.guard, meta))
        .await?;
    let endpoints = route::route_endpoints(
        shared.advertised.as_ref(),
        req.endpoints.as_ref(),
        &shared.listen_endpoints,
    );
    Ok(pb::QueryRouteResponse {
        status: Some(ok_status()),
        message_queues: route::message_queues(&config, &endpoints),
    })
}

/// Messages of one request bound for one queue: they go to the store as one append.
struct QueueBatch {
    shard: ShardId,
    /// `(index in the request, record)`.
    items: Vec<(usize, MessageRecord)>,
}

pub(super) async fn send_message(
    shared: &Shared,
    meta: &RequestMeta,
    req: &pb::SendMessageRequest,
) -> Result<pb::SendMessageResponse, RpcError> {
    if req.messages.is_empty() {
        return Err(RpcError::bad_request("send request carries no message"));
    }
    if req.messages.len() > convert::MAX_SEND_BATCH {
        return Err(RpcError::bad_request(format!(
            "send request carries {} messages, more than {}",
            req.messages.len(),
            convert::MAX_SEND_BATCH
        )));
    }
    // Sends name their client so the store can tell a retry from a new message.
    let client_id = meta
        .client_id
        .as_deref()
        .map(ClientId::new)
        .transpose()
        .map_err(|e| RpcError::bad_request(format!("header {CLIENT_ID}: {e}")))?;
    let limits = MessageLimits::from(&shared.ctx.config);
    let now_ms = shared.ctx.clock.now_ms();
    let mut results: Vec<Result<AppendOutcome, RpcError>> = vec![
        Err(RpcError::new(
            Code::InternalServerError,
            "message was not processed"
        ));
        req.messages.len()
    ];

    // Validate every message and group the good ones by queue.
    let mut topics: HashMap<TopicName, Result<Arc<TopicConfig>, RpcError>> = HashMap::new();
    // One round-robin queue per topic per request, so a batch stays one append.
    let mut round_robin: HashMap<TopicName, u32> = HashMap::new();
    let mut batches: BTreeMap<(TopicName, u32), QueueBatch> = BTreeMap::new();
    for (index, msg) in req.messages.iter().enumerate() {
        let produced = match convert::produced_message(msg, &meta.namespace, &limits, now_ms) {
            Ok(p) => p,
            Err(e) => {
                results[index] = Err(e);
                continue;
            }
        };
        let topic_name = produced.record.topic.clone();
        if !topics.contains_key(&topic_name) {
            let looked_up = shared.metadata.topic(&topic_name).await;
            topics.insert(topic_name.clone(), looked_up);
        }
        let topic = match topics.get(&topic_name) {
            Some(Ok(topic)) => topic.clone(),
            Some(Err(e)) => {
                results[index] = Err(e.clone());
                continue;
            }
            None => continue,
        };
        match place(shared, &topic, produced, &mut round_robin) {
            Ok((queue_id, shard, record)) => batches
                .entry((topic_name, queue_id))
                .or_insert_with(|| QueueBatch {
                    shard,
                    items: Vec::new(),
                })
                .items
                .push((index, record)),
            Err(e) => results[index] = Err(e),
        }
    }

    // One append per queue, all queues at once.
    let appends = batches.into_iter().map(|((topic, queue_id), batch)| {
        let client_id = client_id.clone();
        async move {
            let (indexes, messages): (Vec<usize>, Vec<MessageRecord>) =
                batch.items.into_iter().unzip();
            let kinds: Vec<(MessageKind, usize)> =
                messages.iter().map(|m| (m.kind, m.body.len())).collect();
            let count = messages.len();
            let spans = publish_spans(shared, &topic, queue_id, &messages);
            let request = AppendRequest {
                topic: topic.clone(),
                queue_id,
                shard: batch.shard,
                messages,
                client_id,
            };
            let outcome = match shared.ctx.store.append(request).await {
                Ok(outcomes) if outcomes.len() == count => Ok(outcomes),
                Ok(outcomes) => Err(RpcError::new(
                    Code::InternalServerError,
                    format!(
                        "store answered {} outcomes for {count} messages on {topic}/{queue_id}",
                        outcomes.len()
                    ),
                )),
                Err(e) => Err(RpcError::from(e)),
            };
            if outcome.is_ok() {
                record_produced(shared, &topic, &kinds);
            }
            for span in spans {
                end_span(Some(span), &outcome);
            }
            (indexes, outcome)
        }
    });
    for (indexes, outcome) in futures::future::join_all(appends).await {
        match outcome {
            Ok(outcomes) => {
                for (index, o) in indexes.into_iter().zip(outcomes) {
                    results[index] = Ok(o);
                }
            }
            Err(e) => {
                for index in indexes {
                    results[index] = Err(e.clone());
                }
            }
        }
    }

    let codes: Vec<Code> = results
        .iter()
        .map(|r| r.as_ref().map_or_else(|e| e.code, |_| Code::Ok))
        .collect();
    let entries: Vec<pb::SendResultEntry> = req
        .messages
        .iter()
        .zip(results)
        .map(|(msg, result)| send_entry(msg, result, meta.legacy_codes))
        .collect();
    let top = match aggregate_code(codes) {
        Code::Ok => ok_status(),
        Code::MultipleResults => pb::Status {
            code: Code::MultipleResults as i32,
            message: "messages of the request had different results".to_owned(),
        },
        // Every entry failed the same way: the first one says why.
        _ => entries[0].status.clone().unwrap_or_else(ok_status),
    };
    Ok(pb::SendMessageResponse {
        status: Some(top),
        entries,
    })
}

/// Picks the queue of a validated message after checking the topic accepts its type: FIFO
/// by a stable hash of the message group, a priority message the queue its priority names
/// (clamped to the last, as RocketMQ 5.4 does), else the queue the producer chose if usable,
/// else round-robin.
fn place(
    shared: &Shared,
    topic: &TopicConfig,
    produced: ProducedMessage,
    round_robin: &mut HashMap<TopicName, u32>,
) -> Result<(u32, ShardId, MessageRecord), RpcError> {
    let ProducedMessage {
        record,
        requested_queue,
        priority,
    } = produced;
    convert::check_topic_accepts(&topic.name, topic.topic_type, record.kind)?;
    let count = topic.queue_count.max(1);
    let queue_id = match (&record.message_group, record.kind) {
        (Some(group), MessageKind::Fifo) => route::fifo_queue(group, count),
        (_, MessageKind::Priority) => u32::try_from(priority.unwrap_or(0))
            .unwrap_or(0)
            .min(count - 1),
        _ => match route::requested_queue(requested_queue, count) {
            Some(q) => q,
            None => *round_robin.entry(topic.name.clone()).or_insert_with(|| {
                (shared.next_queue.fetch_add(1, Ordering::Relaxed) % u64::from(count)) as u32
            }),
        },
    };
    let shard = topic.shard_of(queue_id).ok_or_else(|| {
        RpcError::new(
            Code::InternalServerError,
            format!("topic {} has no shard for queue {queue_id}", topic.name),
        )
    })?;
    Ok((queue_id, shard, record))
}

fn record_produced(shared: &Shared, topic: &TopicName, kinds: &[(MessageKind, usize)]) {
    for kind in [
        MessageKind::Normal,
        MessageKind::Fifo,
        MessageKind::Delay,
        MessageKind::Transaction,
        MessageKind::Priority,
    ] {
        if kinds.iter().any(|(k, _)| *k == kind) {
            shared.ctx.metrics.produced(
                topic.as_str(),
                kind_label(kind),
                kinds
                    .iter()
                    .filter(|(k, _)| *k == kind)
                    .map(|(_, len)| *len),
            );
        }
    }
}

/// A span per message that carries a sampled producer trace, open while the message is stored.
fn publish_spans(
    shared: &Shared,
    topic: &TopicName,
    queue_id: u32,
    messages: &[MessageRecord],
) -> Vec<BoxedSpan> {
    let tracer = &shared.ctx.tracer;
    if !tracer.is_on() {
        return Vec::new();
    }
    messages
        .iter()
        .filter(|m| m.trace_context.is_some())
        .filter_map(|m| {
            let mut attributes = vec![
                KeyValue::new("messaging.system", "rocketmq"),
                KeyValue::new("messaging.operation.name", "publish"),
                KeyValue::new("messaging.destination.name", topic.as_str().to_owned()),
                KeyValue::new("messaging.destination.partition.id", i64::from(queue_id)),
                KeyValue::new("messaging.message.id", m.message_id.clone()),
                KeyValue::new("messaging.message.body.size", m.body.len() as i64),
                KeyValue::new("messaging.rocketmq.message.type", kind_label(m.kind)),
            ];
            if let Some(tag) = &m.tag {
                attributes.push(KeyValue::new("messaging.rocketmq.message.tag", tag.clone()));
            }
            if let Some(group) = &m.message_group {
                attributes.push(KeyValue::new(
                    "messaging.rocketmq.message.group",
                    group.clone(),
                ));
            }
            tracer.continue_trace(
                format!("publish {topic}"),
                m.trace_context.as_deref(),
                attributes,
            )
        })
        .collect()
}

fn kind_label(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Normal => "normal",
        MessageKind::Fifo => "fifo",
        MessageKind::Delay => "delay",
        MessageKind::Transaction => "transaction",
        MessageKind::Priority => "priority",
    }
}

fn send_entry(
    msg: &pb::Message,
    result: Result<AppendOutcome, RpcError>,
    legacy_codes: bool,
) -> pb::SendResultEntry {
    let message_id = convert::message_id_of(msg).to_owned();
    match result {
        Ok(outcome) => pb::SendResultEntry {
            status: Some(ok_status()),
            // Apache answers the message id for sends that are not transactions.
            transaction_id: outcome.transaction_id.unwrap_or_else(|| message_id.clone()),
            // Delay and half messages get their offset when released; 0 until then.
            offset: outcome
                .offset
                .map_or(0, |o| i64::try_from(o).unwrap_or(i64::MAX)),
            recall_handle: outcome
                .recall_handle
                .map(|h| super::recall::encode(&h, &message_id))
                .unwrap_or_default(),
            message_id,
        },
        Err(e) => pb::SendResultEntry {
            status: Some(e.to_status(legacy_codes)),
            message_id,
            ..Default::default()
        },
    }
}

pub(super) async fn end_transaction(
    shared: &Shared,
    meta: &RequestMeta,
    req: &pb::EndTransactionRequest,
) -> Result<pb::EndTransactionResponse, RpcError> {
    let topic = convert::topic_name(req.topic.as_ref(), &meta.namespace)?;
    if req.transaction_id.trim().is_empty() {
        return Err(RpcError::new(
            Code::InvalidTransactionId,
            "transaction id is empty",
        ));
    }
    let resolution = match WireResolution::try_from(req.resolution) {
        Ok(WireResolution::Commit) => TransactionResolution::Commit,
        Ok(WireResolution::Rollback) => TransactionResolution::Rollback,
        _ => {
            return Err(RpcError::bad_request(format!(
                "transaction resolution {} is neither commit nor rollback",
                req.resolution
            )));
        }
    };
    shared
        .ctx
        .store
        .end_transaction(&topic, &req.transaction_id, resolution)
        .await?;
    tracing::debug!(%topic, transaction_id = %req.transaction_id, ?resolution, "transaction ended");
    shared
        .ctx
        .metrics
        .transaction_ended(topic.as_str(), resolution == TransactionResolution::Commit);
    Ok(pb::EndTransactionResponse {
        status: Some(ok_status()),
    })
}

//! The calls every consumer of a group makes: receive from a queue, acknowledge, change a
//! message's invisibility, forward it to the dead-letter queue, ask for queue assignments.
//! [`SimpleConsumer`](crate::SimpleConsumer) and [`PushConsumer`](crate::PushConsumer) both
//! run on a [`GroupClient`].

use std::time::{Duration, SystemTime};

use vela_proto::pb::rocketmq as pb;
use vela_proto::{GroupName, TopicName};

use crate::client::{ClientCore, proto_duration, request_with};
use crate::config::{ClientConfig, Endpoint};
use crate::error::{Error, Result, check_status};
use crate::message::{FilterExpression, MessageView};
use crate::receive::parse_receive_stream;
use crate::route::RouteQueue;

/// A consumer's subscriptions: topic and filter, one per topic.
pub(crate) type Subscriptions = Vec<(String, FilterExpression)>;

/// Adds a subscription; one for a topic already subscribed replaces it.
pub(crate) fn subscribe(
    subscriptions: &mut Subscriptions,
    topic: String,
    filter: FilterExpression,
) {
    subscriptions.retain(|(t, _)| *t != topic);
    subscriptions.push((topic, filter));
}

/// What a consumer announces, checked before anything is sent: the group, the group as a
/// resource of the configured namespace, and one entry per subscription.
pub(crate) fn announced(
    config: &ClientConfig,
    group: &str,
    subscriptions: &Subscriptions,
) -> Result<(GroupName, pb::Resource, Vec<pb::SubscriptionEntry>)> {
    let group = GroupName::new(group)
        .map_err(|e| Error::InvalidArgument(format!("consumer group: {e}")))?;
    if subscriptions.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "consumer group {group} subscribes to no topic"
        )));
    }
    let resource = |name: &str| pb::Resource {
        resource_namespace: config.namespace.clone(),
        name: name.to_owned(),
    };
    let mut entries = Vec::with_capacity(subscriptions.len());
    for (topic, filter) in subscriptions {
        TopicName::new(topic)
            .map_err(|e| Error::InvalidArgument(format!("subscribed topic: {e}")))?;
        filter.validate()?;
        entries.push(pb::SubscriptionEntry {
            topic: Some(resource(topic)),
            expression: Some(filter.to_proto()),
        });
    }
    let group_resource = resource(group.as_str());
    Ok((group, group_resource, entries))
}

/// One client of one consumer group.
pub(crate) struct GroupClient {
    pub(crate) core: ClientCore,
    pub(crate) group: GroupName,
}

impl GroupClient {
    /// Long-polls up to `batch` messages of `queue` for at most `await_duration`; they stay
    /// invisible to the rest of the group for `invisible_duration`.
    pub(crate) async fn receive(
        &self,
        queue: &RouteQueue,
        filter: &FilterExpression,
        batch: u32,
        invisible_duration: Duration,
        await_duration: Duration,
    ) -> Result<Vec<MessageView>> {
        let shared = &self.core.shared;
        shared.ensure_running()?;
        let request = pb::ReceiveMessageRequest {
            group: Some(shared.resource(self.group.as_str())),
            message_queue: Some(queue.proto.clone()),
            filter_expression: Some(filter.to_proto()),
            batch_size: i32::try_from(batch).unwrap_or(i32::MAX),
            invisible_duration: proto_duration(invisible_duration),
            auto_renew: false,
            long_polling_timeout: proto_duration(await_duration),
            attempt_id: None,
        };
        let started = SystemTime::now();
        // The server may hold the call for the whole long-polling time before answering.
        let deadline = shared.config.request_timeout + await_duration;
        let items = shared
            .call(
                &queue.endpoint,
                "ReceiveMessage",
                deadline,
                |mut rpc, timeout| async move {
                    let mut stream = rpc
                        .receive_message(request_with(request, timeout))
                        .await?
                        .into_inner();
                    let mut items = Vec::new();
                    while let Some(item) = stream.message().await? {
                        items.push(item);
                    }
                    Ok(items)
                },
            )
            .await?;
        let messages = parse_receive_stream(items, &queue.endpoint)?;
        let now = SystemTime::now();
        for m in &messages {
            // Deliverable from when it was stored, or a delay message's delivery time.
            let available = m.store_timestamp.max(m.delivery_timestamp);
            if let Some(latency) = available.and_then(|at| now.duration_since(at).ok()) {
                shared
                    .metrics
                    .delivered(&m.topic, self.group.as_str(), latency);
            }
        }
        crate::trace::receive_span(
            &queue
                .proto
                .topic
                .as_ref()
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            self.group.as_str(),
            &shared.client_id,
            started,
            &messages,
        );
        Ok(messages)
    }

    /// Acknowledges a received message: it will not be delivered to this group again.
    pub(crate) async fn ack(&self, message: &MessageView) -> Result<()> {
        let shared = &self.core.shared;
        shared.ensure_running()?;
        let request = pb::AckMessageRequest {
            group: Some(shared.resource(self.group.as_str())),
            topic: Some(shared.resource(&message.topic)),
            entries: vec![pb::AckMessageEntry {
                message_id: message.message_id.clone(),
                receipt_handle: message.receipt_handle.clone(),
                lite_topic: None,
            }],
        };
        let reply =
            shared
                .call(
                    &message.endpoint,
                    "AckMessage",
                    shared.config.request_timeout,
                    |mut rpc, timeout| async move {
                        rpc.ack_message(request_with(request, timeout)).await
                    },
                )
                .await?
                .into_inner();
        check_status("AckMessage", reply.status.as_ref(), &[])?;
        if let Some(status) = reply.entries.first().and_then(|e| e.status.as_ref()) {
            check_status("AckMessage", Some(status), &[])?;
        }
        Ok(())
    }

    /// Acknowledges `messages` with one AckMessage per endpoint and topic (the request takes
    /// entries); the result of each message, in order.
    pub(crate) async fn ack_many(&self, messages: &[MessageView]) -> Vec<Result<()>> {
        let shared = &self.core.shared;
        if let Err(e) = shared.ensure_running() {
            return messages.iter().map(|_| Err(e.duplicate())).collect();
        }
        // Indexes of the messages, by where their acks go.
        let mut calls: Vec<((&Endpoint, &str), Vec<usize>)> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let to = (&m.endpoint, m.topic.as_str());
            match calls.iter_mut().find(|(at, _)| *at == to) {
                Some((_, indexes)) => indexes.push(i),
                None => calls.push((to, vec![i])),
            }
        }
        let mut results: Vec<Result<()>> = messages
            .iter()
            .map(|_| {
                Err(Error::invalid_response(
                    "AckMessage",
                    "no entry for the message",
                ))
            })
            .collect();
        let answers =
            futures::future::join_all(calls.iter().map(|((endpoint, topic), indexes)| {
                let request = pb::AckMessageRequest {
                    group: Some(shared.resource(self.group.as_str())),
                    topic: Some(shared.resource(topic)),
                    entries: indexes
                        .iter()
                        .map(|&i| pb::AckMessageEntry {
                            message_id: messages[i].message_id.clone(),
                            receipt_handle: messages[i].receipt_handle.clone(),
                            lite_topic: None,
                        })
                        .collect(),
                };
                shared.call(
                    endpoint,
                    "AckMessage",
                    shared.config.request_timeout,
                    |mut rpc, timeout| async move {
                        rpc.ack_message(request_with(request, timeout)).await
                    },
                )
            }))
            .await;
        for ((_, indexes), answer) in calls.iter().zip(answers) {
            let reply = match answer.map(tonic::Response::into_inner) {
                Ok(reply) => reply,
                Err(e) => {
                    for &i in indexes {
                        results[i] = Err(e.duplicate());
                    }
                    continue;
                }
            };
            // A failed request fails each of its entries; otherwise each entry has its own
            // status (an OK request may still refuse some, a stale handle for one).
            let overall = check_status("AckMessage", reply.status.as_ref(), &[]);
            for &i in indexes {
                let m = &messages[i];
                results[i] = match &overall {
                    Err(e) if reply.entries.is_empty() => Err(e.duplicate()),
                    _ => match reply
                        .entries
                        .iter()
                        .find(|e| e.receipt_handle == m.receipt_handle)
                    {
                        Some(entry) => check_status("AckMessage", entry.status.as_ref(), &[]),
                        None => match &overall {
                            Err(e) => Err(e.duplicate()),
                            Ok(()) => Err(Error::invalid_response(
                                "AckMessage",
                                format!("no entry for message {}", m.message_id),
                            )),
                        },
                    },
                };
            }
        }
        results
    }

    /// Makes the message invisible for `invisible_duration` from now; on success the view
    /// carries the new receipt handle.
    pub(crate) async fn change_invisible_duration(
        &self,
        message: &mut MessageView,
        invisible_duration: Duration,
    ) -> Result<()> {
        let shared = &self.core.shared;
        shared.ensure_running()?;
        let request = pb::ChangeInvisibleDurationRequest {
            group: Some(shared.resource(self.group.as_str())),
            topic: Some(shared.resource(&message.topic)),
            receipt_handle: message.receipt_handle.clone(),
            invisible_duration: proto_duration(invisible_duration),
            message_id: message.message_id.clone(),
            lite_topic: None,
            suspend: None,
        };
        let reply = shared
            .call(
                &message.endpoint,
                "ChangeInvisibleDuration",
                shared.config.request_timeout,
                |mut rpc, timeout| async move {
                    rpc.change_invisible_duration(request_with(request, timeout))
                        .await
                },
            )
            .await?
            .into_inner();
        check_status("ChangeInvisibleDuration", reply.status.as_ref(), &[])?;
        if reply.receipt_handle.is_empty() {
            return Err(Error::invalid_response(
                "ChangeInvisibleDuration",
                format!("no new receipt handle for message {}", message.message_id),
            ));
        }
        message.receipt_handle = reply.receipt_handle;
        Ok(())
    }

    /// Moves the message to the group's dead-letter queue (what FIFO consumers do once a
    /// message used up its attempts).
    pub(crate) async fn forward_to_dead_letter_queue(
        &self,
        message: &MessageView,
        max_attempts: u32,
    ) -> Result<()> {
        let shared = &self.core.shared;
        shared.ensure_running()?;
        let request = pb::ForwardMessageToDeadLetterQueueRequest {
            group: Some(shared.resource(self.group.as_str())),
            topic: Some(shared.resource(&message.topic)),
            receipt_handle: message.receipt_handle.clone(),
            message_id: message.message_id.clone(),
            delivery_attempt: i32::try_from(message.delivery_attempt).unwrap_or(i32::MAX),
            max_delivery_attempts: i32::try_from(max_attempts).unwrap_or(i32::MAX),
            lite_topic: None,
        };
        let reply = shared
            .call(
                &message.endpoint,
                "ForwardMessageToDeadLetterQueue",
                shared.config.request_timeout,
                |mut rpc, timeout| async move {
                    rpc.forward_message_to_dead_letter_queue(request_with(request, timeout))
                        .await
                },
            )
            .await?
            .into_inner();
        check_status(
            "ForwardMessageToDeadLetterQueue",
            reply.status.as_ref(),
            &[],
        )
    }

    /// The queues of `topic` this client should poll, asked of the access point.
    pub(crate) async fn query_assignment(&self, topic: &str) -> Result<Vec<RouteQueue>> {
        let shared = &self.core.shared;
        shared.ensure_running()?;
        let access_point: Endpoint = shared.config.endpoint.clone();
        let request = pb::QueryAssignmentRequest {
            topic: Some(shared.resource(topic)),
            group: Some(shared.resource(self.group.as_str())),
            endpoints: Some(access_point.to_proto()),
        };
        let reply = shared
            .call(
                &access_point,
                "QueryAssignment",
                shared.config.request_timeout,
                |mut rpc, timeout| async move {
                    rpc.query_assignment(request_with(request, timeout)).await
                },
            )
            .await?
            .into_inner();
        check_status("QueryAssignment", reply.status.as_ref(), &[])?;
        reply
            .assignments
            .into_iter()
            .filter_map(|a| a.message_queue)
            .map(|q| RouteQueue::from_assignment(topic, q))
            .collect()
    }
}

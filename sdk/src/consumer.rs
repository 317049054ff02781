//! The [`SimpleConsumer`]: long-polls messages (POP style), acknowledges them and changes their
//! invisibility, rotating over its subscribed topics.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use vela_proto::MAX_RECEIVE_BATCH;

use crate::client::{ClientCore, Role};
use crate::config::ClientConfig;
use crate::consume::{GroupClient, Subscriptions, announced, subscribe};
use crate::error::{Error, Result};
use crate::message::{FilterExpression, MessageView};

/// Default long-polling time of a receive (the server clamps it to its own maximum, 20 s on
/// the RocketMQ proxy).
pub const DEFAULT_AWAIT_DURATION: Duration = Duration::from_secs(20);

/// Receives messages of its subscriptions on behalf of a consumer group. Cheap to clone.
#[derive(Clone)]
pub struct SimpleConsumer {
    inner: Arc<ConsumerInner>,
}

struct ConsumerInner {
    calls: GroupClient,
    subscriptions: Subscriptions,
    await_duration: Duration,
    next_topic: AtomicUsize,
}

/// Configures and starts a [`SimpleConsumer`].
#[derive(Debug, Clone)]
pub struct SimpleConsumerBuilder {
    config: ClientConfig,
    group: String,
    subscriptions: Subscriptions,
    await_duration: Duration,
    instance: Option<String>,
}

impl SimpleConsumerBuilder {
    /// Subscribes to `topic` with `filter` (a later call for the same topic replaces it).
    pub fn subscribe(mut self, topic: impl Into<String>, filter: FilterExpression) -> Self {
        subscribe(&mut self.subscriptions, topic.into(), filter);
        self
    }

    /// Names this consumer instance: its client id becomes `name` (1 to 49 characters of
    /// `[a-zA-Z0-9_-]`). In a broadcast group the server keeps each instance's position under
    /// its name, so a process restarted with the same name goes on where it stopped; without
    /// one every start is a new instance. Give each running process its own name: two live
    /// consumers with one name are one instance and share its messages.
    pub fn instance_name(mut self, name: impl Into<String>) -> Self {
        self.instance = Some(name.into());
        self
    }

    /// How long a receive may wait on the server for messages (default 20 s).
    pub fn await_duration(mut self, duration: Duration) -> Self {
        self.await_duration = duration;
        self
    }

    /// Validates the group and subscriptions, fetches routes, opens the Telemetry stream
    /// (announcing the subscriptions) and starts heartbeats.
    pub async fn build(self) -> Result<SimpleConsumer> {
        let (group, group_resource, entries) =
            announced(&self.config, &self.group, &self.subscriptions)?;
        let role = Role::SimpleConsumer {
            group: group_resource,
            subscriptions: entries,
            await_duration: self.await_duration,
        };
        let topics: Vec<String> = self.subscriptions.iter().map(|(t, _)| t.clone()).collect();
        let instance = crate::identity::instance_client_id(self.instance.as_deref())?;
        let core =
            ClientCore::start(self.config, role, &topics, Default::default(), instance).await?;
        Ok(SimpleConsumer {
            inner: Arc::new(ConsumerInner {
                calls: GroupClient { core, group },
                subscriptions: self.subscriptions,
                await_duration: self.await_duration,
                next_topic: AtomicUsize::new(0),
            }),
        })
    }
}

impl std::fmt::Debug for SimpleConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimpleConsumer")
            .field("client_id", &self.inner.calls.core.shared.client_id)
            .finish_non_exhaustive()
    }
}

impl SimpleConsumer {
    pub fn builder(config: ClientConfig, group: impl Into<String>) -> SimpleConsumerBuilder {
        SimpleConsumerBuilder {
            config,
            group: group.into(),
            subscriptions: Vec::new(),
            await_duration: DEFAULT_AWAIT_DURATION,
            instance: None,
        }
    }

    pub fn group(&self) -> &str {
        self.inner.calls.group.as_str()
    }

    /// This client's `x-mq-client-id`.
    pub fn client_id(&self) -> &str {
        &self.inner.calls.core.shared.client_id
    }

    /// Long-polls up to `max_messages` (1..=32) from the next subscribed topic. The messages
    /// stay invisible to other consumers of the group for `invisible_duration`; ack them before
    /// it ends or they are redelivered. An empty poll returns an empty vector.
    pub async fn receive(
        &self,
        max_messages: u32,
        invisible_duration: Duration,
    ) -> Result<Vec<MessageView>> {
        let inner = &self.inner;
        let shared = &inner.calls.core.shared;
        shared.ensure_running()?;
        if !(1..=MAX_RECEIVE_BATCH).contains(&max_messages) {
            return Err(Error::InvalidArgument(format!(
                "max_messages {max_messages} is outside 1..={MAX_RECEIVE_BATCH}"
            )));
        }
        if invisible_duration.is_zero() {
            return Err(Error::InvalidArgument(
                "invisible_duration must be positive".into(),
            ));
        }
        let index = inner.next_topic.fetch_add(1, Ordering::Relaxed) % inner.subscriptions.len();
        let (topic, filter) = &inner.subscriptions[index];
        let route = shared.route(topic).await?;
        let queue = route.pick_readable()?;
        inner
            .calls
            .receive(
                queue,
                filter,
                max_messages,
                invisible_duration,
                inner.await_duration,
            )
            .await
    }

    /// Acknowledges a received message: it will not be delivered to this group again.
    pub async fn ack(&self, message: &MessageView) -> Result<()> {
        self.inner.calls.ack(message).await
    }

    /// Acknowledges several received messages with one request per server and topic (the
    /// protocol's AckMessage takes many entries), instead of one request each. Returns each
    /// message's result, in order: one can fail (a stale receipt handle) while the others
    /// succeed.
    pub async fn ack_many(&self, messages: &[MessageView]) -> Vec<Result<()>> {
        self.inner.calls.ack_many(messages).await
    }

    /// Makes the message invisible for `invisible_duration` from now (zero makes it visible
    /// again at once: a negative acknowledgement). On success the view carries the new receipt
    /// handle, which the next ack or change must use.
    pub async fn change_invisible_duration(
        &self,
        message: &mut MessageView,
        invisible_duration: Duration,
    ) -> Result<()> {
        self.inner
            .calls
            .change_invisible_duration(message, invisible_duration)
            .await
    }

    /// Tells the server this consumer is leaving and stops its background tasks. The server
    /// makes the messages this consumer received and did not ack visible again soon (Vela and
    /// RocketMQ within about a second), instead of when their invisibility ends.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.calls.core.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vela_proto::pb::rocketmq as pb;

    use super::*;
    use crate::fake_server::{Call, FakeServer, Recorded};
    use crate::receive::tests::delivered;

    fn config(fake: &FakeServer) -> ClientConfig {
        ClientConfig::builder()
            .endpoint(fake.endpoint())
            .build()
            .unwrap()
    }

    async fn consumer(fake: &FakeServer) -> SimpleConsumer {
        SimpleConsumer::builder(config(fake), "billing")
            .subscribe("orders", FilterExpression::tag("A||B"))
            .await_duration(Duration::from_secs(5))
            .build()
            .await
            .unwrap()
    }

    fn find<T>(calls: &[Call], f: impl Fn(&Recorded) -> Option<T>) -> Vec<T> {
        calls.iter().filter_map(|c| f(&c.request)).collect()
    }

    #[tokio::test]
    async fn start_announces_the_subscription() {
        let fake = FakeServer::start().await;
        let consumer = consumer(&fake).await;
        let calls = fake.state.calls();
        let settings = find(&calls, |r| match r {
            Recorded::Telemetry(pb::TelemetryCommand {
                command: Some(pb::telemetry_command::Command::Settings(s)),
                ..
            }) => Some(s.clone()),
            _ => None,
        });
        let settings = settings.first().expect("settings on telemetry").clone();
        assert_eq!(
            settings.client_type,
            Some(pb::ClientType::SimpleConsumer as i32)
        );
        let Some(pb::settings::PubSub::Subscription(sub)) = settings.pub_sub else {
            panic!("expected subscription settings");
        };
        assert_eq!(sub.group.unwrap().name, "billing");
        assert_eq!(sub.subscriptions[0].topic.as_ref().unwrap().name, "orders");
        assert_eq!(
            sub.subscriptions[0].expression.as_ref().unwrap().expression,
            "A||B"
        );
        assert_eq!(sub.long_polling_timeout.unwrap().seconds, 5);
        fake.wait_for("a consumer heartbeat", |calls| {
            calls.iter().any(|c| {
                matches!(&c.request, Recorded::Heartbeat(h)
                if h.group.as_ref().is_some_and(|g| g.name == "billing")
                && h.client_type == pb::ClientType::SimpleConsumer as i32)
            })
        })
        .await;
        consumer.shutdown().await.unwrap();
        let notified = find(&fake.state.calls(), |r| match r {
            Recorded::Notify(n) => n.group.clone(),
            _ => None,
        });
        assert_eq!(notified[0].name, "billing");
    }

    #[tokio::test]
    async fn receive_change_invisible_and_ack() {
        let fake = FakeServer::start().await;
        let consumer = consumer(&fake).await;
        assert!(
            consumer
                .receive(16, Duration::from_secs(15))
                .await
                .unwrap()
                .is_empty()
        );

        fake.state.behaviour.lock().deliveries =
            vec![delivered("01A", b"one"), delivered("01B", b"two")];
        let mut messages = consumer.receive(16, Duration::from_secs(15)).await.unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(&messages[1].body[..], b"two");

        let calls = fake.state.calls();
        let receives: Vec<(pb::ReceiveMessageRequest, tonic::metadata::MetadataMap)> = calls
            .iter()
            .filter_map(|c| match &c.request {
                Recorded::Receive(r) => Some((r.clone(), c.headers.clone())),
                _ => None,
            })
            .collect();
        let (request, headers) = &receives[1];
        assert_eq!(request.group.as_ref().unwrap().name, "billing");
        assert_eq!(
            request
                .message_queue
                .as_ref()
                .unwrap()
                .broker
                .as_ref()
                .unwrap()
                .name,
            "fake"
        );
        assert_eq!(
            request.filter_expression.as_ref().unwrap().expression,
            "A||B"
        );
        assert_eq!(
            request.filter_expression.as_ref().unwrap().r#type,
            pb::FilterType::Tag as i32
        );
        assert_eq!(request.batch_size, 16);
        assert_eq!(request.invisible_duration.unwrap().seconds, 15);
        assert_eq!(request.long_polling_timeout.unwrap().seconds, 5);
        assert!(!request.auto_renew);
        // Deadline = request timeout (3 s) + await duration (5 s), in tonic's encoding.
        let timeout = headers.get("grpc-timeout").unwrap().to_str().unwrap();
        assert!(timeout.starts_with("8000"), "grpc-timeout {timeout}");

        let message = &mut messages[0];
        consumer
            .change_invisible_duration(message, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(message.receipt_handle(), "handle-01A-renewed");
        consumer.ack(message).await.unwrap();
        let calls = fake.state.calls();
        let changes = find(&calls, |r| match r {
            Recorded::ChangeInvisible(c) => Some(c.clone()),
            _ => None,
        });
        assert_eq!(changes[0].receipt_handle, "handle-01A");
        assert_eq!(changes[0].invisible_duration.unwrap().seconds, 30);
        assert_eq!(changes[0].group.as_ref().unwrap().name, "billing");
        let acks = find(&calls, |r| match r {
            Recorded::Ack(a) => Some(a.clone()),
            _ => None,
        });
        assert_eq!(acks[0].topic.as_ref().unwrap().name, "t");
        assert_eq!(acks[0].entries[0].receipt_handle, "handle-01A-renewed");
        assert_eq!(acks[0].entries[0].message_id, "01A");
    }

    #[tokio::test]
    async fn receive_times_out_when_the_server_holds_too_long() {
        let fake = FakeServer::start().await;
        let config = ClientConfig::builder()
            .endpoint(fake.endpoint())
            .request_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let consumer = SimpleConsumer::builder(config, "billing")
            .subscribe("orders", FilterExpression::all())
            .await_duration(Duration::from_millis(100))
            .build()
            .await
            .unwrap();
        fake.state.behaviour.lock().receive_delay = Duration::from_secs(2);
        let err = consumer
            .receive(1, Duration::from_secs(15))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Timeout {
                    rpc: "ReceiveMessage",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn rejects_bad_arguments_before_calling() {
        let fake = FakeServer::start().await;
        let no_topic = SimpleConsumer::builder(config(&fake), "billing")
            .build()
            .await;
        assert!(matches!(no_topic, Err(Error::InvalidArgument(_))));
        let bad_group = SimpleConsumer::builder(config(&fake), "bad group")
            .subscribe("orders", FilterExpression::all())
            .build()
            .await;
        assert!(matches!(bad_group, Err(Error::InvalidArgument(_))));
        let consumer = consumer(&fake).await;
        assert!(consumer.receive(0, Duration::from_secs(15)).await.is_err());
        assert!(consumer.receive(33, Duration::from_secs(15)).await.is_err());
        assert!(consumer.receive(1, Duration::ZERO).await.is_err());
        assert!(
            find(&fake.state.calls(), |r| matches!(r, Recorded::Receive(_))
                .then_some(()))
            .is_empty()
        );
    }
}

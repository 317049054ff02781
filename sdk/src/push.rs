//! The [`PushConsumer`]: receives in the background and hands each message to a listener,
//! acknowledging what it processed and retrying what it failed, as the official push consumers
//! do.
//!
//! - Queues to poll come from `QueryAssignment`, asked every 5 s per subscribed topic; each
//!   assigned queue has its own receive loop.
//! - At most `consumption_concurrency` listener calls run at once, and at most
//!   `max_cached_messages` messages are held (received, not yet finished); a receive asks for
//!   no more than fits.
//! - While the listener runs the consumer keeps the message invisible to the rest of the group
//!   itself (`ChangeInvisibleDuration` when a third of its invisibility is left), so a slow
//!   listener is not raced by a redelivery and no server-side handle state is needed.
//! - `Success` acknowledges. `Failure` on a normal group makes the message visible again after
//!   the group's back-off for that attempt (the server dead-letters it once the group's
//!   attempts are used up). On a FIFO group the listener is called again after the back-off,
//!   in place, so later messages of its message group wait; once the attempts are used up the
//!   message is forwarded to the dead-letter queue and the group moves on.
//! - A server may ask the consumer to run one stored message through its listener (RocketMQ's
//!   consumeMessageDirectly; `vela admin message verify`): the listener is called outside the
//!   concurrency limit and its answer goes back to the server; nothing is acknowledged.
//! - [`PushConsumer::shutdown`] stops receiving, lets every listener call in progress finish
//!   and settle, then tells the server the client is leaving (which makes what it held and
//!   had not started visible again at once).

mod consume;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::client::{Answerers, ClientCore, Role, Verifier};
use crate::config::ClientConfig;
use crate::consume::{GroupClient, Subscriptions, announced, subscribe};
use crate::error::{Error, Result};
use crate::message::{FilterExpression, MessageView};
use crate::route::RouteQueue;

/// Listener calls running at once by default (the Java client's consumption threads).
pub const DEFAULT_CONSUMPTION_CONCURRENCY: usize = 20;
/// Messages held (received, not yet finished) at most by default (the Java client's).
pub const DEFAULT_MAX_CACHED_MESSAGES: usize = 1024;
/// How long received messages stay invisible to the rest of the group before the consumer
/// renews them (the RocketMQ proxy's invisibility for push consumers).
pub const DEFAULT_PUSH_INVISIBLE_DURATION: Duration = Duration::from_secs(60);
/// Shortest invisibility the server accepts on a receive.
const MIN_INVISIBLE: Duration = Duration::from_secs(10);
/// How often the assigned queues are asked for again.
const ASSIGNMENT_INTERVAL: Duration = Duration::from_secs(5);

/// What a listener answers for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeResult {
    /// Processed: the message is acknowledged.
    Success,
    /// Not processed: the message is retried after the group's back-off.
    Failure,
}

type ListenerFuture = Pin<Box<dyn Future<Output = ConsumeResult> + Send>>;
type Listener = Arc<dyn Fn(MessageView) -> ListenerFuture + Send + Sync>;

/// Configures and starts a [`PushConsumer`].
pub struct PushConsumerBuilder {
    config: ClientConfig,
    group: String,
    subscriptions: Subscriptions,
    listener: Option<Listener>,
    concurrency: usize,
    max_cached: usize,
    invisible: Duration,
    instance: Option<String>,
}

impl std::fmt::Debug for PushConsumerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConsumerBuilder")
            .field("group", &self.group)
            .field("subscriptions", &self.subscriptions)
            .field("listener", &self.listener.is_some())
            .field("concurrency", &self.concurrency)
            .field("max_cached", &self.max_cached)
            .field("invisible", &self.invisible)
            .finish_non_exhaustive()
    }
}

impl PushConsumerBuilder {
    /// Subscribes to `topic` with `filter` (a later call for the same topic replaces it).
    pub fn subscribe(mut self, topic: impl Into<String>, filter: FilterExpression) -> Self {
        subscribe(&mut self.subscriptions, topic.into(), filter);
        self
    }

    /// The function each message is handed to. It gets its own copy of the message; what it
    /// answers decides between acknowledging and retrying. A listener that panics counts as
    /// [`ConsumeResult::Failure`].
    pub fn listener<F, Fut>(mut self, listener: F) -> Self
    where
        F: Fn(MessageView) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ConsumeResult> + Send + 'static,
    {
        self.listener = Some(Arc::new(move |message| Box::pin(listener(message))));
        self
    }

    /// Listener calls running at once, at least 1 (default 20).
    pub fn consumption_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Messages held at most, received and not yet finished, at least 1 (default 1024).
    pub fn max_cached_messages(mut self, max: usize) -> Self {
        self.max_cached = max;
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

    /// How long a received message stays invisible to the rest of the group between the
    /// consumer's renewals, at least 10 s (default 60 s). If this client dies, its messages come
    /// back after at most this long.
    pub fn invisible_duration(mut self, duration: Duration) -> Self {
        self.invisible = duration;
        self
    }

    /// Validates the configuration, fetches routes, opens the Telemetry stream (announcing a
    /// push consumer and its subscriptions), waits for the server's settings and starts
    /// consuming.
    pub async fn build(self) -> Result<PushConsumer> {
        let (group, group_resource, entries) =
            announced(&self.config, &self.group, &self.subscriptions)?;
        let listener = self.listener.ok_or_else(|| {
            Error::InvalidArgument(format!("push consumer of {group} has no listener"))
        })?;
        if self.concurrency == 0 || self.max_cached == 0 {
            return Err(Error::InvalidArgument(
                "consumption_concurrency and max_cached_messages must be at least 1".into(),
            ));
        }
        if self.invisible < MIN_INVISIBLE {
            return Err(Error::InvalidArgument(format!(
                "invisible_duration {:?} is below the minimum {MIN_INVISIBLE:?}",
                self.invisible
            )));
        }
        let role = Role::PushConsumer {
            group: group_resource,
            subscriptions: entries,
        };
        let topics: Vec<String> = self.subscriptions.iter().map(|(t, _)| t.clone()).collect();
        let instance = crate::identity::instance_client_id(self.instance.as_deref())?;
        let verifier: Verifier = {
            let listener = listener.clone();
            Arc::new(move |message| {
                let consumed = listener(message);
                Box::pin(async move { consumed.await == ConsumeResult::Success })
            })
        };
        let answerers = Answerers {
            checker: None,
            verifier: Some(verifier),
        };
        let core = ClientCore::start(self.config, role, &topics, answerers, instance).await?;
        let inner = Arc::new(PushInner {
            calls: GroupClient { core, group },
            listener,
            consuming: Arc::new(Semaphore::new(self.concurrency)),
            cached: Arc::new(Semaphore::new(self.max_cached)),
            invisible: self.invisible,
            stop: CancellationToken::new(),
            work: TaskTracker::new(),
        });
        let assigner = tokio::spawn(assignment_loop(inner.clone(), self.subscriptions));
        Ok(PushConsumer {
            inner,
            assigner: Mutex::new(Some(assigner)),
        })
    }
}

/// Receives messages of its subscriptions on behalf of a consumer group and hands each to a
/// listener. Dropping it stops the background work without waiting; [`shutdown`] waits for
/// the listener calls in progress and tells the server.
///
/// [`shutdown`]: PushConsumer::shutdown
pub struct PushConsumer {
    inner: Arc<PushInner>,
    assigner: Mutex<Option<JoinHandle<()>>>,
}

/// What the background tasks share.
pub(crate) struct PushInner {
    pub(crate) calls: GroupClient,
    pub(crate) listener: Listener,
    /// One permit per listener call running.
    pub(crate) consuming: Arc<Semaphore>,
    /// One permit per message held.
    pub(crate) cached: Arc<Semaphore>,
    pub(crate) invisible: Duration,
    /// Cancelled when the consumer stops.
    pub(crate) stop: CancellationToken,
    /// Every receive loop and every message being consumed.
    pub(crate) work: TaskTracker,
}

impl std::fmt::Debug for PushConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConsumer")
            .field("client_id", &self.inner.calls.core.shared.client_id)
            .field("group", &self.inner.calls.group)
            .finish_non_exhaustive()
    }
}

impl PushConsumer {
    pub fn builder(config: ClientConfig, group: impl Into<String>) -> PushConsumerBuilder {
        PushConsumerBuilder {
            config,
            group: group.into(),
            subscriptions: Vec::new(),
            listener: None,
            concurrency: DEFAULT_CONSUMPTION_CONCURRENCY,
            max_cached: DEFAULT_MAX_CACHED_MESSAGES,
            invisible: DEFAULT_PUSH_INVISIBLE_DURATION,
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

    /// Stops receiving, waits for the listener calls in progress to finish and their messages
    /// to be acknowledged or retried, then tells the server this consumer is leaving: what it
    /// received and had not started becomes visible to the group again at once. Messages
    /// waiting for a local FIFO retry are given back the same way. Idempotent.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.stop.cancel();
        if let Some(assigner) = self.assigner.lock().take() {
            assigner.abort();
        }
        self.inner.work.close();
        self.inner.work.wait().await;
        self.inner.calls.core.shutdown().await
    }
}

impl Drop for PushConsumer {
    fn drop(&mut self) {
        self.inner.stop.cancel();
        if let Some(assigner) = self.assigner.lock().take() {
            assigner.abort();
        }
    }
}

/// One assigned queue: what identifies it across `QueryAssignment` replies.
type QueueKey = (String, String, i32);

fn queue_key(topic: &str, queue: &RouteQueue) -> QueueKey {
    let broker = queue
        .proto
        .broker
        .as_ref()
        .map(|b| b.name.clone())
        .unwrap_or_default();
    (topic.to_owned(), broker, queue.id())
}

/// Asks for each topic's assigned queues every 5 s and keeps one receive loop per assigned
/// queue: new assignments start one, withdrawn ones stop theirs. A failed ask keeps the loops
/// running as they are.
async fn assignment_loop(inner: Arc<PushInner>, subscriptions: Subscriptions) {
    let mut loops: HashMap<QueueKey, CancellationToken> = HashMap::new();
    let mut ticker = tokio::time::interval(ASSIGNMENT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for (topic, filter) in &subscriptions {
            let queues = match inner.calls.query_assignment(topic).await {
                Ok(queues) => queues,
                Err(e) => {
                    warn!(group = %inner.calls.group, %topic, error = %e, "query assignment failed; polling the queues assigned before");
                    continue;
                }
            };
            let assigned: HashMap<QueueKey, RouteQueue> = queues
                .into_iter()
                .map(|q| (queue_key(topic, &q), q))
                .collect();
            loops.retain(|key, stop| {
                let keep = key.0 != *topic || assigned.contains_key(key);
                if !keep {
                    stop.cancel();
                }
                keep
            });
            for (key, queue) in assigned {
                if loops.contains_key(&key) {
                    continue;
                }
                let stop = inner.stop.child_token();
                loops.insert(key, stop.clone());
                inner.work.spawn(consume::receive_loop(
                    inner.clone(),
                    queue,
                    filter.clone(),
                    stop,
                ));
            }
        }
    }
}

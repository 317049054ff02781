//! Request-reply over two topics: a [`Requester`] sends a request carrying a correlation id
//! and the topic to answer on, and waits for the reply with that id; the responder, an
//! ordinary consumer of the request topic, answers with [`reply_to`]. Nothing on the server is
//! special: the two properties travel as user properties, so any RocketMQ 5 server carries
//! them and a responder in another language can answer by copying them.
//!
//! Each requester reads its reply topic as its own consumer group, and hands every reply to
//! the request waiting for its correlation id; a reply nobody waits for any more (its request
//! timed out) is acknowledged and dropped. Give each requester instance its own reply topic,
//! or at least its own group: requesters sharing a group would take each other's replies.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::identity::MessageIdGenerator;
use crate::message::{Message, MessageView, SendReceipt};
use crate::{ClientConfig, FilterExpression, Producer, SimpleConsumer};

/// The user property a request and its reply carry: the id that pairs them.
pub const CORRELATION_ID_PROPERTY: &str = "__CORRELATION_ID";
/// The user property a request carries: the topic its reply goes to.
pub const REPLY_TO_PROPERTY: &str = "__REPLY_TO";

/// How long a reply stays invisible to the requester's group while it is handed over.
const REPLY_INVISIBLE: Duration = Duration::from_secs(30);
/// Pause after a failed receive of replies before the next one.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<MessageView>>>>;

/// Sends requests and waits for their replies (see the module docs).
#[derive(Debug)]
pub struct Requester {
    producer: Producer,
    consumer: Arc<SimpleConsumer>,
    reply_topic: String,
    waiting: Waiting,
    stop: CancellationToken,
}

impl Requester {
    /// A requester that sends with a producer of `config` and reads replies from
    /// `reply_topic` as consumer group `reply_group` (both its own).
    pub async fn new(
        config: ClientConfig,
        reply_topic: impl Into<String>,
        reply_group: impl Into<String>,
    ) -> Result<Self> {
        let reply_topic = reply_topic.into();
        let consumer = SimpleConsumer::builder(config.clone(), reply_group)
            .subscribe(&reply_topic, FilterExpression::all())
            .await_duration(Duration::from_secs(5))
            .build()
            .await?;
        let producer = Producer::builder(config).build().await?;
        let requester = Self {
            producer,
            consumer: Arc::new(consumer),
            reply_topic,
            waiting: Waiting::default(),
            stop: CancellationToken::new(),
        };
        tokio::spawn(dispatch(
            requester.consumer.clone(),
            requester.waiting.clone(),
            requester.stop.clone(),
        ));
        Ok(requester)
    }

    /// Sends `request` and waits up to `timeout` for its reply. Fails with
    /// [`Error::NoReply`] when none came in time (a reply that comes later is dropped).
    pub async fn request(&self, request: Message, timeout: Duration) -> Result<MessageView> {
        if self.stop.is_cancelled() {
            return Err(Error::Shutdown);
        }
        let correlation_id = MessageIdGenerator::global().next_id();
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(correlation_id.clone(), tx);
        let forget = |waiting: &Waiting| waiting.lock().remove(&correlation_id);
        let request = request
            .with_property(CORRELATION_ID_PROPERTY, &correlation_id)
            .with_property(REPLY_TO_PROPERTY, &self.reply_topic);
        if let Err(e) = self.producer.send(request).await {
            forget(&self.waiting);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            // The dispatcher stopped: the requester is shutting down.
            Ok(Err(_)) => Err(Error::Shutdown),
            Err(_) => {
                forget(&self.waiting);
                Err(Error::NoReply {
                    correlation_id,
                    timeout,
                })
            }
        }
    }

    /// Stops reading replies (requests still waiting fail with [`Error::Shutdown`]) and shuts
    /// the producer and the consumer down.
    pub async fn shutdown(&self) -> Result<()> {
        self.stop.cancel();
        self.waiting.lock().clear();
        let consumer = self.consumer.shutdown().await;
        self.producer.shutdown().await?;
        consumer
    }
}

/// The reply to `request` (received by a responder): a message to the topic the request
/// names, with its correlation id. Send it with any producer.
pub fn reply_to(request: &MessageView, body: impl Into<bytes::Bytes>) -> Result<Message> {
    let property = |name: &str| {
        request.properties.get(name).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "message {} is no request: it has no {name} property",
                request.message_id
            ))
        })
    };
    let correlation_id = property(CORRELATION_ID_PROPERTY)?;
    let topic = property(REPLY_TO_PROPERTY)?;
    Message::builder(topic.as_str())
        .body(body)
        .property(CORRELATION_ID_PROPERTY, correlation_id.as_str())
        .build()
}

/// Sends `reply` with `producer`: shorthand for `producer.send(reply_to(request, body)?)`.
pub async fn send_reply(
    producer: &Producer,
    request: &MessageView,
    body: impl Into<bytes::Bytes>,
) -> Result<SendReceipt> {
    producer.send(reply_to(request, body)?).await
}

/// Reads replies until stopped, handing each to the request waiting for it.
async fn dispatch(consumer: Arc<SimpleConsumer>, waiting: Waiting, stop: CancellationToken) {
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => return,
            received = consumer.receive(32, REPLY_INVISIBLE) => received,
        };
        let replies = match received {
            Ok(replies) => replies,
            Err(Error::Shutdown) => return,
            Err(e) => {
                warn!(error = %e, "receiving replies failed; trying again");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RETRY_PAUSE) => continue,
                }
            }
        };
        for reply in replies {
            if let Err(e) = consumer.ack(&reply).await {
                debug!(error = %e, message_id = %reply.message_id, "acking a reply failed");
            }
            let waiter = reply
                .properties
                .get(CORRELATION_ID_PROPERTY)
                .and_then(|id| waiting.lock().remove(id));
            match waiter {
                Some(tx) => {
                    // The request may have given up just now; then the reply is dropped.
                    let _ = tx.send(reply);
                }
                None => debug!(message_id = %reply.message_id, "a reply nobody waits for"),
            }
        }
    }
}

//! The [`Producer`]: publishes messages one per request (or a same-topic batch in one request),
//! choosing queues from the topic route and retrying retryable failures.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::task::JoinHandle;
use tracing::debug;
use vela_proto::TopicName;
use vela_proto::pb::rocketmq::{self as pb, Code};

use crate::client::{ClientCore, Role, request_with};
use crate::config::ClientConfig;
use crate::error::{Error, Result, check_status};
use crate::identity::{MessageIdGenerator, hostname};
use crate::message::{Message, MessageView, SendReceipt};
use crate::transaction::{Checker, Transaction, TransactionResolution};

const SEND_RPC: &str = "SendMessage";
const RECALL_RPC: &str = "RecallMessage";

/// Publishes messages. Cheap to clone (clones share one connection and background tasks).
#[derive(Clone)]
pub struct Producer {
    inner: Arc<ProducerInner>,
}

pub(crate) struct ProducerInner {
    pub(crate) core: ClientCore,
    max_attempts: Option<u32>,
    transactional: bool,
}

/// Configures and starts a [`Producer`].
#[derive(Clone)]
pub struct ProducerBuilder {
    config: ClientConfig,
    topics: Vec<String>,
    max_attempts: Option<u32>,
    checker: Option<Checker>,
    instance: Option<String>,
}

impl std::fmt::Debug for ProducerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerBuilder")
            .field("config", &self.config)
            .field("topics", &self.topics)
            .field("max_attempts", &self.max_attempts)
            .field("transaction_checker", &self.checker.is_some())
            .finish()
    }
}

impl ProducerBuilder {
    /// Topics to resolve at start-up (a bad topic then fails `build`); others resolve on first send.
    pub fn topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.topics.extend(topics.into_iter().map(Into::into));
        self
    }

    /// Names this producer instance: its client id becomes `name` (1 to 49 characters of
    /// `[a-zA-Z0-9_-]`). A Vela server deduplicates sends by client id and message id
    /// (ADR 0012), so a process restarted under the same name that sends a message again
    /// with the same id ([`MessageBuilder::message_id`](crate::MessageBuilder::message_id))
    /// within the deduplication window (2 minutes) has it stored once.
    pub fn instance_name(mut self, name: impl Into<String>) -> Self {
        self.instance = Some(name.into());
        self
    }

    /// Overrides the attempts per send (default: the server's back-off policy, else 3).
    pub fn max_send_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Makes this a transactional producer: `check` answers the server's check-backs about
    /// transactions left open (see [`Producer::begin_transaction`]). It is called on a task of
    /// its own for each check-back, with the half message (which cannot be acknowledged).
    pub fn transaction_checker<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn(MessageView) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = TransactionResolution> + Send + 'static,
    {
        self.checker = Some(crate::transaction::checker(check));
        self
    }

    /// Fetches the routes, opens the Telemetry stream (announcing the publishing topics), waits
    /// briefly for the server's settings and starts heartbeats.
    pub async fn build(self) -> Result<Producer> {
        if self.max_attempts == Some(0) {
            return Err(Error::InvalidArgument(
                "max_send_attempts must be at least 1".into(),
            ));
        }
        let mut resources = Vec::with_capacity(self.topics.len());
        for topic in &self.topics {
            TopicName::new(topic)
                .map_err(|e| Error::InvalidArgument(format!("producer topic: {e}")))?;
            resources.push(pb::Resource {
                resource_namespace: self.config.namespace.clone(),
                name: topic.clone(),
            });
        }
        let transactional = self.checker.is_some();
        let instance = crate::identity::instance_client_id(self.instance.as_deref())?;
        let core = ClientCore::start(
            self.config,
            Role::Producer { topics: resources },
            &self.topics,
            crate::client::Answerers {
                checker: self.checker,
                verifier: None,
            },
            instance,
        )
        .await?;
        Ok(Producer {
            inner: Arc::new(ProducerInner {
                core,
                max_attempts: self.max_attempts,
                transactional,
            }),
        })
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("client_id", &self.inner.core.shared.client_id)
            .finish_non_exhaustive()
    }
}

impl Producer {
    pub fn builder(config: ClientConfig) -> ProducerBuilder {
        ProducerBuilder {
            config,
            topics: Vec::new(),
            max_attempts: None,
            checker: None,
            instance: None,
        }
    }

    /// This client's `x-mq-client-id`.
    pub fn client_id(&self) -> &str {
        &self.inner.core.shared.client_id
    }

    /// Sends one message and waits for the server to store it.
    pub async fn send(&self, message: Message) -> Result<SendReceipt> {
        let mut receipts = self
            .inner
            .send_messages(std::slice::from_ref(&message))
            .await?;
        receipts
            .pop()
            .ok_or_else(|| Error::invalid_response(SEND_RPC, "no send result entry"))
    }

    /// Starts sending one message on a spawned task and returns at once, so a caller can keep
    /// many sends in flight. Await the [`SendFuture`] for the receipt; dropping it does not
    /// cancel the send. Must be called inside a Tokio runtime.
    pub fn send_async(&self, message: Message) -> SendFuture {
        let inner = self.inner.clone();
        SendFuture {
            task: tokio::spawn(async move {
                let mut receipts = inner.send_messages(std::slice::from_ref(&message)).await?;
                receipts
                    .pop()
                    .ok_or_else(|| Error::invalid_response(SEND_RPC, "no send result entry"))
            }),
        }
    }

    /// Sends messages of one topic in one request (the server stores them as one append).
    /// They must share the topic and kind, and FIFO messages their group. Receipts are in
    /// input order; the batch succeeds or fails as a whole.
    pub async fn send_batch(&self, messages: Vec<Message>) -> Result<Vec<SendReceipt>> {
        let first = messages.first().ok_or_else(|| {
            Error::InvalidArgument("send_batch needs at least one message".into())
        })?;
        for m in &messages[1..] {
            if m.topic() != first.topic() {
                return Err(Error::InvalidArgument(format!(
                    "batch mixes topics {} and {}",
                    first.topic(),
                    m.topic()
                )));
            }
            if m.kind() != first.kind() || m.message_group() != first.message_group() {
                return Err(Error::InvalidArgument(
                    "batch messages must share their kind and message group".into(),
                ));
            }
        }
        self.inner.send_messages(&messages).await
    }

    /// Withdraws a delay message of `topic` before its delivery time, by the
    /// [`SendReceipt::recall_handle`] its send answered; no consumer gets it. Returns the
    /// recalled message's id. Fails with [`StatusCode::NotFound`](crate::StatusCode::NotFound) once the message was
    /// delivered (its time came) or recalled already.
    pub async fn recall(&self, topic: &str, recall_handle: &str) -> Result<String> {
        let shared = &self.inner.core.shared;
        shared.ensure_running()?;
        if recall_handle.trim().is_empty() {
            return Err(Error::InvalidArgument("the recall handle is empty".into()));
        }
        let request = pb::RecallMessageRequest {
            topic: Some(shared.resource(topic)),
            recall_handle: recall_handle.to_owned(),
        };
        let endpoint = shared.config.endpoint.clone();
        let reply = shared
            .call(
                &endpoint,
                RECALL_RPC,
                shared.config.request_timeout,
                |mut rpc, timeout| async move {
                    rpc.recall_message(request_with(request, timeout)).await
                },
            )
            .await?
            .into_inner();
        check_status(RECALL_RPC, reply.status.as_ref(), &[])?;
        Ok(reply.message_id)
    }

    /// Starts a transaction: its message stays invisible to consumers until
    /// [`Transaction::commit`]. Needs a [`transaction_checker`](ProducerBuilder::transaction_checker)
    /// (as the official clients do), which the server asks about a transaction left open.
    pub fn begin_transaction(&self) -> Result<Transaction> {
        self.inner.core.shared.ensure_running()?;
        if !self.inner.transactional {
            return Err(Error::InvalidArgument(
                "a transaction needs a producer built with a transaction_checker".into(),
            ));
        }
        Ok(Transaction::new(self.inner.clone()))
    }

    /// Tells the server this producer is leaving and stops its background tasks. Later calls
    /// fail with [`Error::Shutdown`].
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.core.shutdown().await
    }
}

impl ProducerInner {
    /// Sends `message` as a transaction's half message.
    pub(crate) async fn send_transactional(&self, message: Message) -> Result<SendReceipt> {
        let mut receipts = self.send_messages(&[message.into_transactional()]).await?;
        receipts
            .pop()
            .ok_or_else(|| Error::invalid_response(SEND_RPC, "no send result entry"))
    }

    async fn send_messages(&self, messages: &[Message]) -> Result<Vec<SendReceipt>> {
        let shared = &self.core.shared;
        shared.ensure_running()?;
        let settings = shared.server_settings();
        for m in messages {
            if m.body().len() > settings.max_body_size {
                return Err(Error::InvalidArgument(format!(
                    "message body of {} bytes exceeds the server's limit of {} bytes",
                    m.body().len(),
                    settings.max_body_size
                )));
            }
        }
        let first = &messages[0];
        let span = crate::trace::send_span(first.topic(), &shared.client_id, messages.len());
        let started = std::time::Instant::now();
        let result = self
            .send_traced(messages, span.traceparent.as_deref())
            .await;
        shared.metrics.sent(
            first.topic(),
            messages.len(),
            result.is_ok(),
            started.elapsed(),
        );
        span.end(&result);
        result
    }

    async fn send_traced(
        &self,
        messages: &[Message],
        traceparent: Option<&str>,
    ) -> Result<Vec<SendReceipt>> {
        let shared = &self.core.shared;
        let settings = shared.server_settings();
        let first = &messages[0];
        let route = shared.route(first.topic()).await?;
        let ids: Vec<String> = messages
            .iter()
            .map(|m| {
                m.message_id()
                    .map_or_else(|| MessageIdGenerator::global().next_id(), str::to_owned)
            })
            .collect();
        let max_attempts = self
            .max_attempts
            .unwrap_or(settings.send_max_attempts)
            .max(1);
        let mut attempt = 1;
        loop {
            let queue = route.pick_writable(
                first.kind(),
                first.message_group(),
                settings.validate_message_type,
            )?;
            let request = pb::SendMessageRequest {
                messages: messages
                    .iter()
                    .zip(&ids)
                    .map(|(m, id)| {
                        m.to_proto(
                            &shared.config.namespace,
                            id.clone(),
                            queue.id(),
                            hostname(),
                            traceparent,
                        )
                    })
                    .collect(),
            };
            let result = shared
                .call(
                    &queue.endpoint,
                    SEND_RPC,
                    shared.config.request_timeout,
                    |mut rpc, timeout| async move {
                        rpc.send_message(request_with(request, timeout)).await
                    },
                )
                .await
                .and_then(|reply| parse_send_reply(reply.into_inner(), &ids));
            match result {
                Ok(receipts) => return Ok(receipts),
                Err(e) if e.is_retryable() && attempt < max_attempts => {
                    // Throttling asks us to slow down; other failures retry at once (on the
                    // next queue), as the official clients do.
                    let delay = if e.is_too_many_requests() {
                        settings.backoff.delay(attempt)
                    } else {
                        std::time::Duration::ZERO
                    };
                    debug!(
                        client_id = %shared.client_id,
                        topic = first.topic(),
                        attempt,
                        ?delay,
                        error = %e,
                        "send failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    shared.ensure_running()?;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Checks a send reply against the request: status OK (or MULTIPLE_RESULTS with every entry
/// OK), one entry per message echoing its id.
fn parse_send_reply(reply: pb::SendMessageResponse, ids: &[String]) -> Result<Vec<SendReceipt>> {
    check_status(SEND_RPC, reply.status.as_ref(), &[Code::MultipleResults])?;
    if reply.entries.len() != ids.len() {
        return Err(Error::invalid_response(
            SEND_RPC,
            format!("{} entries for {} messages", reply.entries.len(), ids.len()),
        ));
    }
    reply
        .entries
        .into_iter()
        .zip(ids)
        .map(|(entry, id)| {
            if let Some(status) = &entry.status {
                check_status(SEND_RPC, Some(status), &[])?;
            }
            if entry.message_id != *id {
                return Err(Error::invalid_response(
                    SEND_RPC,
                    format!(
                        "entry names message {} where {id} was sent",
                        entry.message_id
                    ),
                ));
            }
            // Servers answer the message id as the transaction id of a send that is not a
            // transaction (Apache does, and Vela too).
            let transaction_id =
                Some(entry.transaction_id).filter(|t| !t.is_empty() && *t != entry.message_id);
            Ok(SendReceipt {
                message_id: entry.message_id,
                offset: entry.offset,
                transaction_id,
                recall_handle: Some(entry.recall_handle).filter(|h| !h.is_empty()),
            })
        })
        .collect()
}

/// The pending result of [`Producer::send_async`].
#[derive(Debug)]
pub struct SendFuture {
    task: JoinHandle<Result<SendReceipt>>,
}

impl Future for SendFuture {
    type Output = Result<SendReceipt>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.task)
            .poll(cx)
            .map(|joined| match joined {
                Ok(result) => result,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Cancelled: the runtime is shutting down.
                Err(_) => Err(Error::Shutdown),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, code: Code) -> pb::SendResultEntry {
        pb::SendResultEntry {
            status: Some(pb::Status {
                code: code as i32,
                message: String::new(),
            }),
            message_id: id.into(),
            transaction_id: String::new(),
            offset: 42,
            recall_handle: String::new(),
        }
    }

    fn reply(code: Code, entries: Vec<pb::SendResultEntry>) -> pb::SendMessageResponse {
        pb::SendMessageResponse {
            status: Some(pb::Status {
                code: code as i32,
                message: String::new(),
            }),
            entries,
        }
    }

    #[test]
    fn send_reply_is_checked_against_the_request() {
        let ids = vec!["01A".to_owned(), "01B".to_owned()];
        let ok = reply(
            Code::Ok,
            vec![entry("01A", Code::Ok), entry("01B", Code::Ok)],
        );
        let receipts = parse_send_reply(ok, &ids).unwrap();
        assert_eq!(receipts[1].message_id, "01B");
        assert_eq!(receipts[1].offset, 42);
        assert_eq!(receipts[1].transaction_id, None);
        let mut echoed = entry("01A", Code::Ok);
        echoed.transaction_id = "01A".into();
        let mut half = entry("01B", Code::Ok);
        half.transaction_id = "0-7-1".into();
        let receipts = parse_send_reply(reply(Code::Ok, vec![echoed, half]), &ids).unwrap();
        assert_eq!(
            receipts[0].transaction_id, None,
            "the message id echoed for a plain send"
        );
        assert_eq!(receipts[1].transaction_id.as_deref(), Some("0-7-1"));

        let short = reply(Code::Ok, vec![entry("01A", Code::Ok)]);
        assert!(matches!(
            parse_send_reply(short, &ids),
            Err(Error::InvalidResponse { .. })
        ));
        let wrong_id = reply(
            Code::Ok,
            vec![entry("01A", Code::Ok), entry("01C", Code::Ok)],
        );
        assert!(parse_send_reply(wrong_id, &ids).is_err());
        let mixed = reply(
            Code::MultipleResults,
            vec![
                entry("01A", Code::Ok),
                entry("01B", Code::MessageBodyTooLarge),
            ],
        );
        let err = parse_send_reply(mixed, &ids).unwrap_err();
        assert_eq!(err.status_code(), Some(Code::MessageBodyTooLarge as i32));
        let failed = reply(Code::TooManyRequests, vec![]);
        assert!(
            parse_send_reply(failed, &ids)
                .unwrap_err()
                .is_too_many_requests()
        );
    }

    mod wire {
        use std::time::Duration;

        use hmac::{Hmac, KeyInit, Mac};
        use sha1::Sha1;

        use super::*;
        use crate::fake_server::{Call, FakeServer, Recorded};

        fn sends(calls: &[Call]) -> Vec<(pb::SendMessageRequest, tonic::metadata::MetadataMap)> {
            calls
                .iter()
                .filter_map(|c| match &c.request {
                    Recorded::Send(r) => Some((r.clone(), c.headers.clone())),
                    _ => None,
                })
                .collect()
        }

        async fn producer(fake: &FakeServer) -> Producer {
            let config = ClientConfig::builder()
                .endpoint(fake.endpoint())
                .namespace("ns")
                .credentials("myAK", "mySecret")
                .build()
                .unwrap();
            Producer::builder(config)
                .topics(["orders"])
                .build()
                .await
                .unwrap()
        }

        #[tokio::test]
        async fn start_send_and_shutdown_look_like_an_official_client() {
            let fake = FakeServer::start().await;
            let producer = producer(&fake).await;
            let calls = fake.state.calls();
            let route = calls.iter().find_map(|c| match &c.request {
                Recorded::QueryRoute(r) => Some(r.clone()),
                _ => None,
            });
            let route = route.expect("QueryRoute at start");
            assert_eq!(route.topic.as_ref().unwrap().name, "orders");
            assert_eq!(route.topic.as_ref().unwrap().resource_namespace, "ns");
            assert_eq!(
                route.endpoints.unwrap().addresses[0].port,
                i32::from(fake.addr.port())
            );
            let settings = calls.iter().find_map(|c| match &c.request {
                Recorded::Telemetry(pb::TelemetryCommand {
                    command: Some(pb::telemetry_command::Command::Settings(s)),
                    ..
                }) => Some(s.clone()),
                _ => None,
            });
            let settings = settings.expect("settings on the telemetry stream");
            assert_eq!(settings.client_type, Some(pb::ClientType::Producer as i32));
            assert_eq!(
                settings.user_agent.unwrap().language,
                pb::Language::Rust as i32
            );
            match settings.pub_sub {
                Some(pb::settings::PubSub::Publishing(p)) => assert_eq!(p.topics[0].name, "orders"),
                other => panic!("expected publishing settings, got {other:?}"),
            }
            fake.wait_for("a producer heartbeat", |calls| {
                calls.iter().any(|c| {
                    matches!(&c.request, Recorded::Heartbeat(h)
                    if h.client_type == pb::ClientType::Producer as i32 && h.group.is_none())
                })
            })
            .await;

            let message = Message::builder("orders")
                .body("hello")
                .tag("A")
                .keys(["k1"])
                .build()
                .unwrap();
            let receipt = producer.send(message).await.unwrap();
            let sent = sends(&fake.state.calls());
            assert_eq!(sent.len(), 1);
            let (request, headers) = &sent[0];
            assert_eq!(request.messages.len(), 1);
            let m = &request.messages[0];
            let sp = m.system_properties.as_ref().unwrap();
            assert_eq!(sp.message_id, receipt.message_id);
            assert_eq!(sp.message_id.len(), 34);
            assert_eq!(sp.tag.as_deref(), Some("A"));
            assert_eq!(sp.keys, ["k1"]);
            assert_eq!(sp.message_type, pb::MessageType::Normal as i32);
            assert_eq!(sp.body_encoding, pb::Encoding::Identity as i32);
            assert_eq!(sp.queue_id, 0);
            assert!(sp.born_timestamp.is_some() && !sp.born_host.is_empty());
            assert_eq!(m.topic.as_ref().unwrap().resource_namespace, "ns");
            assert_eq!(&m.body[..], b"hello");

            let header = |k: &str| headers.get(k).map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(
                header("x-mq-client-id").as_deref(),
                Some(producer.client_id())
            );
            assert_eq!(header("x-mq-language").as_deref(), Some("RUST"));
            assert_eq!(header("x-mq-protocol").as_deref(), Some("v2"));
            assert_eq!(header("x-mq-namespace").as_deref(), Some("ns"));
            assert!(header("x-mq-request-id").is_some());
            assert!(header("grpc-timeout").is_some());
            let date = header("x-mq-date-time").unwrap();
            let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(b"mySecret").unwrap();
            mac.update(date.as_bytes());
            let signature = hex::encode(mac.finalize().into_bytes());
            assert_eq!(
                header("authorization").unwrap(),
                format!(
                    "MQv2-HMAC-SHA1 Credential=myAK, SignedHeaders=x-mq-date-time, Signature={signature}"
                )
            );

            producer.shutdown().await.unwrap();
            assert!(
                fake.state
                    .calls()
                    .iter()
                    .any(|c| matches!(&c.request, Recorded::Notify(n) if n.group.is_none()))
            );
            let after = Message::builder("orders").body("late").build().unwrap();
            assert!(matches!(producer.send(after).await, Err(Error::Shutdown)));
        }

        #[tokio::test]
        async fn retries_retryable_failures_with_the_same_message_id() {
            let fake = FakeServer::start().await;
            fake.state.behaviour.lock().send_failures =
                [Code::InternalError, Code::TooManyRequests].into();
            let producer = producer(&fake).await;
            let receipt = producer
                .send(Message::builder("orders").body("x").build().unwrap())
                .await
                .unwrap();
            let sent = sends(&fake.state.calls());
            assert_eq!(sent.len(), 3);
            for (request, _) in &sent {
                assert_eq!(
                    request.messages[0]
                        .system_properties
                        .as_ref()
                        .unwrap()
                        .message_id,
                    receipt.message_id
                );
            }
        }

        #[tokio::test]
        async fn sends_under_the_id_the_builder_set() {
            let fake = FakeServer::start().await;
            let producer = producer(&fake).await;
            let message = Message::builder("orders")
                .body("x")
                .message_id("01ORIGINAL")
                .build()
                .unwrap();
            assert_eq!(message.message_id(), Some("01ORIGINAL"));
            let receipt = producer.send(message).await.unwrap();
            assert_eq!(receipt.message_id, "01ORIGINAL");
            let sent = sends(&fake.state.calls());
            let id = &sent[0].0.messages[0]
                .system_properties
                .as_ref()
                .unwrap()
                .message_id;
            assert_eq!(id, "01ORIGINAL");
            for bad in ["", "a b", &"x".repeat(129)] {
                assert!(
                    Message::builder("orders")
                        .body("x")
                        .message_id(bad)
                        .build()
                        .is_err()
                );
            }
        }

        #[tokio::test]
        async fn gives_up_after_max_attempts_and_never_retries_bad_requests() {
            let fake = FakeServer::start().await;
            fake.state.behaviour.lock().send_failures = [
                Code::InternalError,
                Code::InternalError,
                Code::InternalError,
                Code::BadRequest,
            ]
            .into();
            let producer = producer(&fake).await;
            let err = producer
                .send(Message::builder("orders").body("x").build().unwrap())
                .await
                .unwrap_err();
            assert_eq!(err.status_code(), Some(Code::InternalError as i32));
            assert_eq!(sends(&fake.state.calls()).len(), 3);
            let err = producer
                .send(Message::builder("orders").body("x").build().unwrap())
                .await
                .unwrap_err();
            assert!(err.is_bad_request());
            assert_eq!(sends(&fake.state.calls()).len(), 4);
        }

        #[tokio::test]
        async fn adopts_the_servers_max_body_size() {
            let fake = FakeServer::start().await;
            fake.state.behaviour.lock().max_body_size = 8;
            let producer = producer(&fake).await;
            let err = producer
                .send(
                    Message::builder("orders")
                        .body("123456789")
                        .build()
                        .unwrap(),
                )
                .await
                .unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
            assert!(sends(&fake.state.calls()).is_empty());
            producer
                .send(Message::builder("orders").body("12345678").build().unwrap())
                .await
                .unwrap();
        }

        #[tokio::test]
        async fn batch_goes_in_one_request_and_async_sends_pipeline() {
            let fake = FakeServer::start().await;
            let producer = producer(&fake).await;
            let batch = (0..3)
                .map(|i| {
                    Message::builder("orders")
                        .body(format!("m{i}"))
                        .build()
                        .unwrap()
                })
                .collect();
            let receipts = producer.send_batch(batch).await.unwrap();
            assert_eq!(receipts.len(), 3);
            assert_eq!(sends(&fake.state.calls()).len(), 1);
            assert_eq!(sends(&fake.state.calls())[0].0.messages.len(), 3);
            let mixed = vec![
                Message::builder("orders").body("a").build().unwrap(),
                Message::builder("other").body("b").build().unwrap(),
            ];
            assert!(matches!(
                producer.send_batch(mixed).await,
                Err(Error::InvalidArgument(_))
            ));

            let pending: Vec<SendFuture> = (0..10)
                .map(|i| {
                    producer.send_async(
                        Message::builder("orders")
                            .body(format!("a{i}"))
                            .build()
                            .unwrap(),
                    )
                })
                .collect();
            let mut ids = std::collections::HashSet::new();
            for f in pending {
                ids.insert(
                    tokio::time::timeout(Duration::from_secs(5), f)
                        .await
                        .unwrap()
                        .unwrap()
                        .message_id,
                );
            }
            assert_eq!(ids.len(), 10);
            assert_eq!(sends(&fake.state.calls()).len(), 11);
        }

        #[tokio::test]
        async fn fifo_and_delay_messages_carry_their_properties() {
            let fake = FakeServer::start().await;
            let producer = producer(&fake).await;
            producer
                .send(
                    Message::builder("orders")
                        .body("f")
                        .message_group("g1")
                        .build()
                        .unwrap(),
                )
                .await
                .unwrap();
            let at = std::time::SystemTime::now() + Duration::from_secs(60);
            producer
                .send(
                    Message::builder("orders")
                        .body("d")
                        .delivery_timestamp(at)
                        .build()
                        .unwrap(),
                )
                .await
                .unwrap();
            let sent = sends(&fake.state.calls());
            let fifo = sent[0].0.messages[0].system_properties.clone().unwrap();
            assert_eq!(fifo.message_type, pb::MessageType::Fifo as i32);
            assert_eq!(fifo.message_group.as_deref(), Some("g1"));
            let delay = sent[1].0.messages[0].system_properties.clone().unwrap();
            assert_eq!(delay.message_type, pb::MessageType::Delay as i32);
            assert_eq!(delay.delivery_timestamp, Some(at.into()));
        }

        #[tokio::test]
        async fn unreachable_server_is_a_retryable_transport_error() {
            // Bind and drop a listener to get a port nobody listens on.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let config = ClientConfig::builder()
                .endpoint(format!("127.0.0.1:{port}"))
                .request_timeout(Duration::from_millis(500))
                .build()
                .unwrap();
            let err = Producer::builder(config)
                .topics(["orders"])
                .build()
                .await
                .err()
                .unwrap();
            assert!(err.is_retryable(), "{err}");
            assert!(
                matches!(err, Error::Transport { .. } | Error::Timeout { .. }),
                "{err}"
            );
        }
    }
}

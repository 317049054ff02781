//! The machinery producers and consumers share: one gRPC channel and Telemetry stream per
//! server endpoint, the route cache, the settings the server pushed, the heartbeat/route-refresh
//! task, deadlines on every call, and shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::{debug, warn};
use vela_proto::pb::rocketmq::messaging_service_client::MessagingServiceClient;
use vela_proto::pb::rocketmq::{self as pb, Code, retry_policy, telemetry_command};

use crate::transaction::Checker;

/// A push consumer's listener, as the server's message verification runs it: `true` when it
/// consumed the message.
pub(crate) type Verifier =
    Arc<dyn Fn(crate::MessageView) -> futures::future::BoxFuture<'static, bool> + Send + Sync>;

/// What answers the server's commands to this client, beside Settings.
#[derive(Clone, Default)]
pub(crate) struct Answerers {
    /// A producer's transaction checker: answers the server's check-backs.
    pub checker: Option<Checker>,
    /// A push consumer's listener: answers the server's message verifications.
    pub verifier: Option<Verifier>,
}

use crate::config::{ClientConfig, Endpoint};
use crate::error::{Error, Result, check_status};
use crate::identity::{hostname, next_client_id};
use crate::metadata::{CLIENT_VERSION, RequestSigner};
use crate::policy::ConsumerSettings;
use crate::route::TopicRoute;

/// The generated client with our header interceptor.
pub(crate) type Rpc = MessagingServiceClient<InterceptedService<Channel, RequestSigner>>;

const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
const ROUTE_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// How often the client re-sends its Settings on an open Telemetry stream (as Python does).
const SETTINGS_RESYNC_INTERVAL: Duration = Duration::from_secs(300);
/// Pause before re-opening a Telemetry stream the server closed or broke; doubles while the
/// stream keeps failing before the server says anything.
const TELEMETRY_REOPEN_DELAY: Duration = Duration::from_secs(1);
const TELEMETRY_REOPEN_DELAY_MAX: Duration = Duration::from_secs(30);

/// What the server told us in its Settings reply (defaults until it does).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServerSettings {
    pub(crate) max_body_size: usize,
    pub(crate) validate_message_type: bool,
    pub(crate) send_max_attempts: u32,
    pub(crate) backoff: ExponentialBackoff,
    /// The collector the client's metrics go to (`host:port`), when the server names one.
    pub(crate) metrics_collector: Option<String>,
    /// A consumer's group settings (defaults for producers).
    pub(crate) consumer: ConsumerSettings,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_body_size: 4 * 1024 * 1024,
            validate_message_type: true,
            send_max_attempts: 3,
            backoff: ExponentialBackoff::default(),
            metrics_collector: None,
            consumer: ConsumerSettings::default(),
        }
    }
}

impl ServerSettings {
    /// Folds a Settings reply in: publishing limits and an exponential back-off when present.
    fn adopt(&mut self, reply: &pb::Settings) {
        self.metrics_collector = crate::metrics::collector_of(reply.metric.as_ref());
        if let Some(pb::settings::PubSub::Publishing(p)) = &reply.pub_sub {
            if let Ok(size) = usize::try_from(p.max_body_size)
                && size > 0
            {
                self.max_body_size = size;
            }
            self.validate_message_type = p.validate_message_type;
        }
        if let Some(pb::settings::PubSub::Subscription(s)) = &reply.pub_sub {
            self.consumer.adopt(s, reply.backoff_policy.as_ref());
            return;
        }
        if let Some(policy) = &reply.backoff_policy {
            if let Ok(attempts) = u32::try_from(policy.max_attempts)
                && attempts > 0
            {
                self.send_max_attempts = attempts;
            }
            if let Some(retry_policy::Strategy::ExponentialBackoff(e)) = &policy.strategy {
                self.backoff = ExponentialBackoff::from_proto(e);
            }
        }
    }
}

/// Delay before retry `n` (1-based): `initial * multiplier^(n-1)`, capped at `max`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExponentialBackoff {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
    pub(crate) multiplier: f32,
}

impl Default for ExponentialBackoff {
    fn default() -> Self {
        ExponentialBackoff {
            initial: Duration::from_millis(10),
            max: Duration::from_secs(1),
            multiplier: 2.0,
        }
    }
}

impl ExponentialBackoff {
    pub(crate) fn from_proto(e: &pb::ExponentialBackoff) -> Self {
        let default = ExponentialBackoff::default();
        let duration =
            |d: Option<prost_types::Duration>| d.and_then(|d| Duration::try_from(d).ok());
        ExponentialBackoff {
            initial: duration(e.initial).unwrap_or(default.initial),
            max: duration(e.max).unwrap_or(default.max),
            multiplier: if e.multiplier.is_finite() && e.multiplier >= 1.0 {
                e.multiplier
            } else {
                default.multiplier
            },
        }
    }

    pub(crate) fn delay(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(64) as i32;
        let factor = f64::from(self.multiplier).powi(exponent);
        let delay = self.initial.as_secs_f64() * factor;
        if !delay.is_finite() || delay >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(delay)
        }
    }
}

/// Which kind of client this is, as announced in Settings and Heartbeat.
#[derive(Debug, Clone)]
pub(crate) enum Role {
    Producer {
        topics: Vec<pb::Resource>,
    },
    SimpleConsumer {
        group: pb::Resource,
        subscriptions: Vec<pb::SubscriptionEntry>,
        await_duration: Duration,
    },
    PushConsumer {
        group: pb::Resource,
        subscriptions: Vec<pb::SubscriptionEntry>,
    },
}

impl Role {
    fn client_type(&self) -> pb::ClientType {
        match self {
            Role::Producer { .. } => pb::ClientType::Producer,
            Role::SimpleConsumer { .. } => pb::ClientType::SimpleConsumer,
            Role::PushConsumer { .. } => pb::ClientType::PushConsumer,
        }
    }

    fn group(&self) -> Option<pb::Resource> {
        match self {
            Role::Producer { .. } => None,
            Role::SimpleConsumer { group, .. } | Role::PushConsumer { group, .. } => {
                Some(group.clone())
            }
        }
    }
}

/// One server endpoint: its channel and the task that owns its Telemetry stream.
struct Session {
    rpc: Rpc,
    telemetry: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.telemetry.abort();
    }
}

/// State shared by a client handle and its background tasks.
pub(crate) struct Shared {
    pub(crate) config: ClientConfig,
    pub(crate) client_id: String,
    role: Role,
    signer: RequestSigner,
    sessions: Mutex<HashMap<Endpoint, Arc<Session>>>,
    routes: RwLock<HashMap<String, Arc<TopicRoute>>>,
    server_settings: watch::Sender<Option<ServerSettings>>,
    shut_down: AtomicBool,
    answerers: Answerers,
    /// The client's own metrics (exported where the server's Settings say).
    pub(crate) metrics: Arc<crate::metrics::ClientMetrics>,
}

/// A client's core: the shared state plus the heartbeat task, stopped on drop or shutdown.
pub(crate) struct ClientCore {
    pub(crate) shared: Arc<Shared>,
    heartbeat: Mutex<Option<JoinHandle<()>>>,
    metrics_task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for ClientCore {
    fn drop(&mut self) {
        if let Some(task) = self.heartbeat.lock().take() {
            task.abort();
        }
        if let Some(task) = self.metrics_task.lock().take() {
            task.abort();
        }
    }
}

/// Exports the client's metrics every `metrics_interval` to the collector the server names.
async fn metrics_loop(shared: Arc<Shared>) {
    let interval = shared.config.metrics_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let collector = shared.server_settings().metrics_collector;
        shared
            .metrics
            .export_to(collector.as_deref(), shared.config.request_timeout)
            .await;
    }
}

impl ClientCore {
    /// Opens the session to the access point, fetches the routes of `topics` (opening sessions
    /// to their endpoints), waits up to one request timeout for the server's Settings reply and
    /// starts heartbeats.
    pub(crate) async fn start(
        config: ClientConfig,
        role: Role,
        topics: &[String],
        answerers: Answerers,
        instance: Option<String>,
    ) -> Result<Self> {
        let client_id = instance.unwrap_or_else(next_client_id);
        let signer = RequestSigner::new(&config, &client_id)?;
        let (server_settings, mut settings_rx) = watch::channel(None);
        let metrics = crate::metrics::ClientMetrics::new(&client_id);
        let shared = Arc::new(Shared {
            config,
            metrics,
            client_id,
            role,
            signer,
            sessions: Mutex::new(HashMap::new()),
            routes: RwLock::new(HashMap::new()),
            server_settings,
            shut_down: AtomicBool::new(false),
            answerers,
        });
        let core = ClientCore {
            shared: shared.clone(),
            heartbeat: Mutex::new(None),
            metrics_task: Mutex::new(None),
        };
        shared.session(&shared.config.endpoint)?;
        for topic in topics {
            shared.route(topic).await?;
        }
        let timeout = shared.config.request_timeout;
        match tokio::time::timeout(timeout, settings_rx.wait_for(Option::is_some)).await {
            Ok(Ok(_)) => {}
            _ => warn!(
                client_id = %shared.client_id,
                ?timeout,
                "no settings reply on the telemetry stream yet; using defaults until it comes"
            ),
        }
        let task = tokio::spawn(heartbeat_loop(shared.clone()));
        *core.heartbeat.lock() = Some(task);
        *core.metrics_task.lock() = Some(tokio::spawn(metrics_loop(shared.clone())));
        Ok(core)
    }

    /// Notifies every endpoint that this client is going away and stops all tasks.
    /// Idempotent; returns the first notification failure after cleaning up regardless.
    pub(crate) async fn shutdown(&self) -> Result<()> {
        if self.shared.shut_down.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        if let Some(task) = self.heartbeat.lock().take() {
            task.abort();
        }
        if let Some(task) = self.metrics_task.lock().take() {
            task.abort();
        }
        let shared = &self.shared;
        // What was recorded since the last export goes out before the client leaves.
        let collector = shared.server_settings().metrics_collector;
        shared
            .metrics
            .export_to(collector.as_deref(), shared.config.request_timeout)
            .await;
        let endpoints: Vec<Endpoint> = shared.sessions.lock().keys().cloned().collect();
        let mut first_error = None;
        for endpoint in endpoints {
            let request = pb::NotifyClientTerminationRequest {
                group: shared.role.group(),
            };
            let result = shared
                .call(
                    &endpoint,
                    "NotifyClientTermination",
                    shared.config.request_timeout,
                    |mut rpc, timeout| async move {
                        rpc.notify_client_termination(request_with(request, timeout))
                            .await
                    },
                )
                .await
                .and_then(|r| {
                    check_status(
                        "NotifyClientTermination",
                        r.into_inner().status.as_ref(),
                        &[],
                    )
                });
            if let Err(e) = result {
                warn!(client_id = %shared.client_id, %endpoint, error = %e, "notify client termination failed");
                first_error.get_or_insert(e);
            }
        }
        // Dropping the sessions aborts their Telemetry streams.
        shared.sessions.lock().clear();
        first_error.map_or(Ok(()), Err)
    }
}

impl Shared {
    pub(crate) fn ensure_running(&self) -> Result<()> {
        if self.shut_down.load(Ordering::SeqCst) {
            Err(Error::Shutdown)
        } else {
            Ok(())
        }
    }

    /// The latest settings from the server (defaults before the first reply).
    pub(crate) fn server_settings(&self) -> ServerSettings {
        self.server_settings.borrow().clone().unwrap_or_default()
    }

    /// A resource in the configured namespace.
    pub(crate) fn resource(&self, name: &str) -> pb::Resource {
        pb::Resource {
            resource_namespace: self.config.namespace.clone(),
            name: name.to_owned(),
        }
    }

    /// The session for `endpoint`, created (with its Telemetry stream) on first use.
    fn session(&self, endpoint: &Endpoint) -> Result<Arc<Session>> {
        let mut sessions = self.sessions.lock();
        if let Some(s) = sessions.get(endpoint) {
            return Ok(s.clone());
        }
        // No new streams once shut down (an in-flight call may still reach here).
        self.ensure_running()?;
        let mut dial =
            tonic::transport::Endpoint::from_shared(endpoint.uri(self.config.tls.is_some()))
                .map_err(|e| Error::InvalidArgument(format!("endpoint {endpoint}: {e}")))?;
        if let Some(tls) = &self.config.tls {
            dial = dial
                .tls_config(tls.client_config())
                .map_err(|e| Error::InvalidArgument(format!("TLS to {endpoint}: {e}")))?;
        }
        let channel = dial
            .connect_timeout(self.config.request_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect_lazy();
        let rpc = MessagingServiceClient::with_interceptor(channel, self.signer.clone())
            .max_decoding_message_size(usize::MAX);
        let telemetry = tokio::spawn(telemetry_loop(
            rpc.clone(),
            endpoint.clone(),
            self.settings_command(endpoint),
            self.server_settings.clone(),
            self.client_id.clone(),
            self.answerers.clone(),
            self.config.request_timeout,
        ));
        let session = Arc::new(Session { rpc, telemetry });
        sessions.insert(endpoint.clone(), session.clone());
        Ok(session)
    }

    /// The Settings this client announces on a Telemetry stream to `endpoint`.
    fn settings_command(&self, endpoint: &Endpoint) -> pb::TelemetryCommand {
        let pub_sub = match &self.role {
            Role::Producer { topics } => pb::settings::PubSub::Publishing(pb::Publishing {
                topics: topics.clone(),
                max_body_size: 0,
                validate_message_type: true,
            }),
            Role::SimpleConsumer {
                group,
                subscriptions,
                await_duration,
            } => pb::settings::PubSub::Subscription(pb::Subscription {
                group: Some(group.clone()),
                subscriptions: subscriptions.clone(),
                long_polling_timeout: proto_duration(*await_duration),
                ..Default::default()
            }),
            // As the official push consumers: the server says how long to poll.
            Role::PushConsumer {
                group,
                subscriptions,
            } => pb::settings::PubSub::Subscription(pb::Subscription {
                group: Some(group.clone()),
                subscriptions: subscriptions.clone(),
                ..Default::default()
            }),
        };
        let settings = pb::Settings {
            client_type: Some(self.role.client_type() as i32),
            access_point: Some(endpoint.to_proto()),
            backoff_policy: None,
            request_timeout: proto_duration(self.config.request_timeout),
            user_agent: Some(pb::Ua {
                language: pb::Language::Rust as i32,
                version: CLIENT_VERSION.to_owned(),
                platform: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
                hostname: hostname().to_owned(),
            }),
            metric: None,
            pub_sub: Some(pub_sub),
        };
        pb::TelemetryCommand {
            status: None,
            command: Some(telemetry_command::Command::Settings(settings)),
        }
    }

    /// Runs one RPC against `endpoint` under `timeout` (both the gRPC deadline header and a
    /// local timer). `f` gets a client handle and the timeout to stamp on its request.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        endpoint: &Endpoint,
        rpc_name: &'static str,
        timeout: Duration,
        f: F,
    ) -> Result<T>
    where
        F: FnOnce(Rpc, Duration) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let rpc = self.session(endpoint)?.rpc.clone();
        match tokio::time::timeout(timeout, f(rpc, timeout)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(status)) => Err(Error::from_grpc(
                rpc_name,
                &endpoint.to_string(),
                timeout,
                status,
            )),
            Err(_) => Err(Error::Timeout {
                rpc: rpc_name,
                endpoint: endpoint.to_string(),
                timeout,
            }),
        }
    }

    /// The route of `topic`: cached, else fetched from the access point.
    pub(crate) async fn route(&self, topic: &str) -> Result<Arc<TopicRoute>> {
        if let Some(route) = self.routes.read().get(topic) {
            return Ok(route.clone());
        }
        self.fetch_route(topic).await
    }

    async fn fetch_route(&self, topic: &str) -> Result<Arc<TopicRoute>> {
        let access_point = self.config.endpoint.clone();
        let request = pb::QueryRouteRequest {
            topic: Some(self.resource(topic)),
            endpoints: Some(access_point.to_proto()),
        };
        let reply = self
            .call(&access_point, "QueryRoute", self.config.request_timeout, |mut rpc, timeout| async move {
                rpc.query_route(request_with(request, timeout)).await
            })
            .await?
            .into_inner();
        check_status("QueryRoute", reply.status.as_ref(), &[])?;
        let route = Arc::new(TopicRoute::from_proto(topic, reply.message_queues)?);
        // Open sessions (and Telemetry streams) to the route's brokers up front, as the
        // official clients do, so the server knows this client before its first send/receive.
        for endpoint in route.endpoints() {
            self.session(endpoint)?;
        }
        self.routes.write().insert(topic.to_owned(), route.clone());
        Ok(route)
    }
}

/// A request carrying `timeout` as its gRPC deadline.
pub(crate) fn request_with<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

pub(crate) fn proto_duration(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}

/// Heartbeats every endpoint every 10 s (the first at once) and refreshes cached routes every
/// 30 s. Failures are only logged: the next round retries.
async fn heartbeat_loop(shared: Arc<Shared>) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut refresh = tokio::time::interval(ROUTE_REFRESH_INTERVAL);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.tick().await;
    loop {
        tokio::select! {
            _ = heartbeat.tick() => send_heartbeats(&shared).await,
            _ = refresh.tick() => {
                let topics: Vec<String> = shared.routes.read().keys().cloned().collect();
                for topic in topics {
                    if let Err(e) = shared.fetch_route(&topic).await {
                        warn!(client_id = %shared.client_id, %topic, error = %e, "route refresh failed; keeping the cached route");
                    }
                }
            }
        }
    }
}

async fn send_heartbeats(shared: &Shared) {
    let endpoints: Vec<Endpoint> = shared.sessions.lock().keys().cloned().collect();
    for endpoint in endpoints {
        let request = pb::HeartbeatRequest {
            group: shared.role.group(),
            client_type: shared.role.client_type() as i32,
        };
        let result =
            shared
                .call(
                    &endpoint,
                    "Heartbeat",
                    shared.config.request_timeout,
                    |mut rpc, timeout| async move {
                        rpc.heartbeat(request_with(request, timeout)).await
                    },
                )
                .await
                .and_then(|r| check_status("Heartbeat", r.into_inner().status.as_ref(), &[]));
        if let Err(e) = result {
            warn!(client_id = %shared.client_id, %endpoint, error = %e, "heartbeat failed");
        }
    }
}

/// Keeps a Telemetry stream to `endpoint` open for the client's lifetime: sends the client's
/// Settings first (and every 5 min), adopts the server's Settings replies, hands transaction
/// check-backs to the producer's checker (with `answer_timeout` for its answer) and message
/// verifications to the push consumer's listener, and re-opens the stream a second after the
/// server ends or breaks it. Aborted when the session is dropped.
async fn telemetry_loop(
    rpc: Rpc,
    endpoint: Endpoint,
    settings: pb::TelemetryCommand,
    server_settings: watch::Sender<Option<ServerSettings>>,
    client_id: String,
    answerers: Answerers,
    answer_timeout: Duration,
) {
    let mut reopen_delay = TELEMETRY_REOPEN_DELAY;
    loop {
        let (outbound, outbound_rx) = mpsc::channel(4);
        if outbound.send(settings.clone()).await.is_err() {
            return;
        }
        match rpc
            .clone()
            .telemetry(ReceiverStream::new(outbound_rx))
            .await
        {
            Ok(response) => {
                let mut inbound = response.into_inner();
                let mut resync = tokio::time::interval(SETTINGS_RESYNC_INTERVAL);
                resync.tick().await;
                loop {
                    tokio::select! {
                        command = inbound.message() => match command {
                            Ok(Some(pb::TelemetryCommand {
                                command: Some(telemetry_command::Command::RecoverOrphanedTransactionCommand(check)),
                                ..
                            })) => {
                                reopen_delay = TELEMETRY_REOPEN_DELAY;
                                match &answerers.checker {
                                    Some(checker) => {
                                        tokio::spawn(crate::transaction::answer_check(
                                            rpc.clone(),
                                            endpoint.clone(),
                                            checker.clone(),
                                            check,
                                            answer_timeout,
                                        ));
                                    }
                                    None => warn!(
                                        %client_id,
                                        %endpoint,
                                        transaction_id = %check.transaction_id,
                                        "transaction check-back, but this producer has no transaction checker"
                                    ),
                                }
                            }
                            Ok(Some(pb::TelemetryCommand {
                                command: Some(telemetry_command::Command::VerifyMessageCommand(verify)),
                                ..
                            })) => {
                                reopen_delay = TELEMETRY_REOPEN_DELAY;
                                tokio::spawn(answer_verification(
                                    answerers.verifier.clone(),
                                    verify,
                                    endpoint.clone(),
                                    outbound.clone(),
                                ));
                            }
                            Ok(Some(pb::TelemetryCommand {
                                command: Some(telemetry_command::Command::PrintThreadStackTraceCommand(dump)),
                                ..
                            })) => {
                                reopen_delay = TELEMETRY_REOPEN_DELAY;
                                let refused = stack_dump_refused(dump.nonce);
                                if outbound.send(refused).await.is_err() {
                                    break;
                                }
                            }
                            Ok(Some(command)) => {
                                reopen_delay = TELEMETRY_REOPEN_DELAY;
                                handle_server_command(command, &server_settings, &client_id, &endpoint);
                            }
                            Ok(None) => {
                                debug!(%client_id, %endpoint, "telemetry stream closed by the server");
                                break;
                            }
                            Err(status) => {
                                warn!(%client_id, %endpoint, %status, "telemetry stream failed");
                                break;
                            }
                        },
                        _ = resync.tick() => {
                            if outbound.send(settings.clone()).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            Err(status) => {
                warn!(%client_id, %endpoint, %status, "opening the telemetry stream failed")
            }
        }
        tokio::time::sleep(reopen_delay).await;
        reopen_delay = (reopen_delay * 2).min(TELEMETRY_REOPEN_DELAY_MAX);
    }
}

/// Runs a message the server sent to verify through the push consumer's listener and answers
/// with the outcome: OK when the listener consumed it, FAILED_TO_CONSUME_MESSAGE when not (or
/// when the message is unusable), NOT_IMPLEMENTED for clients without a listener. Nothing is
/// acknowledged: the message is not a delivery.
async fn answer_verification(
    verifier: Option<Verifier>,
    command: pb::VerifyMessageCommand,
    endpoint: Endpoint,
    outbound: mpsc::Sender<pb::TelemetryCommand>,
) {
    let (code, message) = match (verifier, command.message) {
        (None, _) => (
            Code::NotImplemented,
            "only push consumers verify messages".to_owned(),
        ),
        (Some(_), None) => (
            Code::FailedToConsumeMessage,
            "the command carries no message".to_owned(),
        ),
        (Some(verifier), Some(message)) => match crate::receive::checked_view(message, &endpoint) {
            Ok(view) => {
                let message_id = view.message_id.clone();
                if verifier(view).await {
                    (Code::Ok, String::new())
                } else {
                    (
                        Code::FailedToConsumeMessage,
                        format!("the listener did not consume message {message_id}"),
                    )
                }
            }
            Err(e) => (Code::FailedToConsumeMessage, e.to_string()),
        },
    };
    let answer = pb::TelemetryCommand {
        status: Some(pb::Status {
            code: code as i32,
            message,
        }),
        command: Some(telemetry_command::Command::VerifyMessageResult(
            pb::VerifyMessageResult {
                nonce: command.nonce,
            },
        )),
    };
    // The stream may have closed meanwhile; the server then gets no answer and says so.
    let _ = outbound.send(answer).await;
}

/// The answer to a thread dump request: a Rust process cannot dump its threads' stacks.
fn stack_dump_refused(nonce: String) -> pb::TelemetryCommand {
    pb::TelemetryCommand {
        status: Some(pb::Status {
            code: Code::NotImplemented as i32,
            message: "the Rust client cannot dump its threads".to_owned(),
        }),
        command: Some(telemetry_command::Command::ThreadStackTrace(
            pb::ThreadStackTrace {
                nonce,
                thread_stack_trace: None,
            },
        )),
    }
}

fn handle_server_command(
    command: pb::TelemetryCommand,
    server_settings: &watch::Sender<Option<ServerSettings>>,
    client_id: &str,
    endpoint: &Endpoint,
) {
    let status_ok = command
        .status
        .as_ref()
        .is_none_or(|s| s.code == Code::Ok as i32);
    match command.command {
        Some(telemetry_command::Command::Settings(reply)) if status_ok => {
            server_settings.send_modify(|current| {
                let mut adopted = current.clone().unwrap_or_default();
                adopted.adopt(&reply);
                debug!(%client_id, %endpoint, settings = ?adopted, "adopted server settings");
                *current = Some(adopted);
            });
        }
        Some(telemetry_command::Command::Settings(_)) => {
            warn!(%client_id, %endpoint, status = ?command.status, "server rejected the client settings");
        }
        other => {
            debug!(%client_id, %endpoint, command = ?other, status = ?command.status, "ignoring telemetry command");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b = ExponentialBackoff::default();
        assert_eq!(b.delay(1), Duration::from_millis(10));
        assert_eq!(b.delay(2), Duration::from_millis(20));
        assert_eq!(b.delay(4), Duration::from_millis(80));
        assert_eq!(b.delay(20), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn adopts_publishing_settings_and_backoff() {
        let mut s = ServerSettings::default();
        s.adopt(&pb::Settings {
            backoff_policy: Some(pb::RetryPolicy {
                max_attempts: 5,
                strategy: Some(retry_policy::Strategy::ExponentialBackoff(
                    pb::ExponentialBackoff {
                        initial: proto_duration(Duration::from_millis(50)),
                        max: proto_duration(Duration::from_secs(2)),
                        multiplier: 3.0,
                    },
                )),
            }),
            pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing {
                topics: vec![],
                max_body_size: 1024,
                validate_message_type: false,
            })),
            ..Default::default()
        });
        assert_eq!(s.max_body_size, 1024);
        assert!(!s.validate_message_type);
        assert_eq!(s.send_max_attempts, 5);
        assert_eq!(s.backoff.delay(2), Duration::from_millis(150));
        // A zero size (a server echoing an unset field) must not disable sending.
        s.adopt(&pb::Settings {
            pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing::default())),
            ..Default::default()
        });
        assert_eq!(s.max_body_size, 1024);
    }

    async fn verified(
        verifier: Option<Verifier>,
        message: Option<pb::Message>,
    ) -> (i32, pb::TelemetryCommand) {
        let (tx, mut rx) = mpsc::channel(1);
        let command = pb::VerifyMessageCommand {
            nonce: "n-1".into(),
            message,
        };
        let endpoint = Endpoint::parse("127.0.0.1:8081").expect("endpoint");
        answer_verification(verifier, command, endpoint, tx).await;
        let answer = rx.recv().await.expect("an answer");
        let code = answer.status.as_ref().map_or(-1, |s| s.code);
        (code, answer)
    }

    #[tokio::test]
    async fn a_verification_runs_the_listener_and_answers_with_its_outcome() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = |consume: bool| -> Verifier {
            let seen = seen.clone();
            Arc::new(move |m: crate::MessageView| {
                seen.lock().push((m.message_id.clone(), m.body.clone()));
                Box::pin(async move { consume })
            })
        };
        let message = || Some(crate::receive::tests::delivered("M1", b"hello"));

        let (code, answer) = verified(Some(listener(true)), message()).await;
        assert_eq!(code, Code::Ok as i32);
        assert_eq!(
            answer.command,
            Some(telemetry_command::Command::VerifyMessageResult(
                pb::VerifyMessageResult {
                    nonce: "n-1".into()
                }
            ))
        );
        let (code, _) = verified(Some(listener(false)), message()).await;
        assert_eq!(code, Code::FailedToConsumeMessage as i32);
        assert_eq!(
            seen.lock().clone(),
            vec![
                ("M1".to_owned(), bytes::Bytes::from_static(b"hello")),
                ("M1".to_owned(), bytes::Bytes::from_static(b"hello")),
            ]
        );

        let (code, _) = verified(None, message()).await;
        assert_eq!(
            code,
            Code::NotImplemented as i32,
            "no listener, no verification"
        );
        let (code, _) = verified(Some(listener(true)), None).await;
        assert_eq!(code, Code::FailedToConsumeMessage as i32);
        let mut broken = crate::receive::tests::delivered("M2", b"hello");
        broken.system_properties = None;
        let (code, _) = verified(Some(listener(true)), Some(broken)).await;
        assert_eq!(code, Code::FailedToConsumeMessage as i32);
        assert_eq!(seen.lock().len(), 2, "unusable messages reach no listener");
        assert_eq!(
            stack_dump_refused("n-2".into()).status.map(|s| s.code),
            Some(Code::NotImplemented as i32)
        );
    }
}

//! One route at work: a SimpleConsumer of the route's group on the source and a Producer on the
//! target. Each received message is sent to the target, then acknowledged on the source, in the
//! order received: the group's position is the checkpoint, so a crash resends at most what was
//! received and not yet acknowledged. A failing target is retried with backoff, the same message
//! first, while the received messages are kept invisible, so nothing is lost or reordered.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::BackoffBuilder;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use vela_proto::route::{RouteConfig, RouteEndpoint, RouteFilter, RouteState, RouteStatus};
use vela_sdk::{ClientConfig, FilterExpression, MessageView, Producer, SimpleConsumer};

use crate::copy::{copy_of, written_by_a_route};
use crate::{LocalAddress, LocalSource, now_ms};
use vela_proto::ControllerApi;

/// Messages asked for per receive.
const BATCH: u32 = 16;
/// How long received messages stay invisible to other receives; renewed while a send retries.
const INVISIBLE: Duration = Duration::from_secs(30);
/// Renew the received messages' invisibility when this much of it is left.
const RENEW_WHEN_LEFT: Duration = Duration::from_secs(20);
/// How long a receive waits for messages before it answers empty.
const LONG_POLL: Duration = Duration::from_secs(5);

/// What the worker shares with the manager.
pub(crate) struct WorkerCtx {
    pub route: RouteConfig,
    pub local: LocalSource,
    /// Lists the proxies a cluster's local source is reached through.
    pub controller: Arc<dyn ControllerApi>,
    pub status: Arc<Mutex<RouteStatus>>,
    pub stop: CancellationToken,
}

impl WorkerCtx {
    fn set_state(&self, state: RouteState) {
        self.status.lock().state = state;
    }

    fn failed(&self, what: &str, err: &dyn std::fmt::Display) {
        let message = format!("{what}: {err}");
        tracing::warn!(route = %self.route.spec.name, error = %message, "route attempt failed");
        let mut status = self.status.lock();
        status.errors += 1;
        status.last_error = Some(message);
        status.last_error_ms = Some(now_ms());
        status.state = RouteState::Retrying;
    }

    /// Sleeps `delay` unless stopped first; false when stopped.
    async fn pause(&self, delay: Duration) -> bool {
        tokio::select! {
            () = self.stop.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

/// Delays after consecutive failures: from 200 ms, doubling with jitter, at most 30 s, never
/// giving up (the route keeps its checkpoint meanwhile).
fn failure_backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Runs the route until `stop`: connects, copies, and on any failure backs off and starts over.
pub(crate) async fn run(ctx: WorkerCtx) {
    let mut backoff = failure_backoff();
    for attempt in 0.. {
        if ctx.stop.is_cancelled() {
            return;
        }
        ctx.set_state(RouteState::Starting);
        let attempt = async {
            let (consumer, producer) = connect(&ctx, attempt).await?;
            let copied = copy_until_stopped(&ctx, &consumer, &producer, &mut backoff).await;
            let _ = consumer.shutdown().await;
            let _ = producer.shutdown().await;
            copied
        };
        match attempt.await {
            Ok(()) => return,
            Err(err) => ctx.failed("starting or receiving", &err),
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(30));
        if !ctx.pause(delay).await {
            return;
        }
    }
}

/// Where this Vela's own clients reach it now: the configured address, or one of the proxies
/// the controller heard from (another one on each attempt, so a dead proxy is left behind).
async fn local_address(ctx: &WorkerCtx, attempt: usize) -> Result<String, vela_sdk::Error> {
    match &ctx.local.address {
        LocalAddress::Fixed(address) => Ok(address.clone()),
        LocalAddress::Proxies => {
            let proxies = ctx.controller.proxies().await.map_err(|e| {
                vela_sdk::Error::InvalidArgument(format!("listing the cluster's proxies: {e}"))
            })?;
            if proxies.is_empty() {
                return Err(vela_sdk::Error::InvalidArgument(
                    "no proxy of this cluster is alive to read the source through".into(),
                ));
            }
            Ok(proxies[attempt % proxies.len()].addr.clone())
        }
    }
}

fn client_config(
    endpoint: &RouteEndpoint,
    local: &LocalSource,
    local_address: &str,
) -> Result<ClientConfig, vela_sdk::Error> {
    let (address, tls, ca) = match &endpoint.address {
        Some(address) => (address.as_str(), endpoint.tls, None),
        None => (local_address, local.ca_pem.is_some(), local.ca_pem.clone()),
    };
    let scheme = if tls { "https://" } else { "" };
    let mut config = ClientConfig::builder()
        .endpoint(format!("{scheme}{address}"))
        .request_timeout(Duration::from_secs(5));
    if let Some(ca) = ca {
        config = config.ca_pem(ca);
    }
    if let Some(c) = &endpoint.credentials {
        config = config.credentials(&c.access_key, c.secret_key.expose());
    }
    config.build()
}

async fn connect(
    ctx: &WorkerCtx,
    attempt: usize,
) -> Result<(SimpleConsumer, Producer), vela_sdk::Error> {
    let spec = &ctx.route.spec;
    let local = match (&spec.source.address, &spec.target.address) {
        (Some(_), Some(_)) => String::new(),
        _ => local_address(ctx, attempt).await?,
    };
    let filter = match &spec.filter {
        RouteFilter::All => FilterExpression::all(),
        RouteFilter::Tag(e) => FilterExpression::tag(e),
        RouteFilter::Sql(e) => FilterExpression::sql(e),
    };
    let consumer = SimpleConsumer::builder(
        client_config(&spec.source, &ctx.local, &local)?,
        spec.group.as_str(),
    )
    .subscribe(spec.source_topic.as_str(), filter)
    .await_duration(LONG_POLL)
    .build()
    .await?;
    let producer = match Producer::builder(client_config(&spec.target, &ctx.local, &local)?)
        .topics([spec.target_topic.as_str()])
        .build()
        .await
    {
        Ok(p) => p,
        Err(err) => {
            let _ = consumer.shutdown().await;
            return Err(err);
        }
    };
    Ok((consumer, producer))
}

/// Receives and copies until stopped (`Ok`) or the source fails (`Err`: reconnect).
async fn copy_until_stopped(
    ctx: &WorkerCtx,
    consumer: &SimpleConsumer,
    producer: &Producer,
    backoff: &mut backon::ExponentialBackoff,
) -> Result<(), vela_sdk::Error> {
    loop {
        let received = tokio::select! {
            () = ctx.stop.cancelled() => return Ok(()),
            r = consumer.receive(BATCH, INVISIBLE) => r,
        };
        let mut batch = match received {
            Ok(batch) => batch,
            Err(err) if err.is_retryable() => {
                ctx.failed("receiving from the source", &err);
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                if !ctx.pause(delay).await {
                    return Ok(());
                }
                continue;
            }
            Err(err) => return Err(err),
        };
        let received_at = tokio::time::Instant::now();
        {
            let mut status = ctx.status.lock();
            if status.state != RouteState::Retrying || batch.is_empty() {
                status.state = RouteState::Running;
            }
            status.lag_ms = Some(match batch.last().and_then(|m| m.store_timestamp) {
                Some(stored) => SystemTime::now()
                    .duration_since(stored)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                None => 0,
            });
        }
        let mut renewed_at = received_at;
        for i in 0..batch.len() {
            let (done, rest) = batch.split_at_mut(i + 1);
            let message = &mut done[i];
            if !copy_one(
                ctx,
                consumer,
                producer,
                message,
                rest,
                &mut renewed_at,
                backoff,
            )
            .await
            {
                return Ok(());
            }
        }
        *backoff = failure_backoff();
    }
}

/// Copies one message and acknowledges it. False when stopped first (the message stays
/// unacknowledged: it is received again, by this route after a restart).
async fn copy_one(
    ctx: &WorkerCtx,
    consumer: &SimpleConsumer,
    producer: &Producer,
    message: &mut MessageView,
    waiting: &mut [MessageView],
    renewed_at: &mut tokio::time::Instant,
    backoff: &mut backon::ExponentialBackoff,
) -> bool {
    let spec = &ctx.route.spec;
    if written_by_a_route(message) {
        ctx.status.lock().skipped_routed += 1;
        ack(ctx, consumer, message).await;
        return true;
    }
    loop {
        if ctx.stop.is_cancelled() {
            return false;
        }
        let sent = match copy_of(spec, message, &ctx.local.cluster) {
            Ok(copy) => tokio::select! {
                () = ctx.stop.cancelled() => return false,
                r = producer.send(copy) => r.map(|_| ()),
            },
            Err(err) => Err(err),
        };
        match sent {
            Ok(()) => break,
            Err(err) => {
                ctx.failed("sending to the target", &err);
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                if !ctx.pause(delay).await {
                    return false;
                }
                // Keep this message and the rest of its batch invisible while the target is
                // retried, so nothing is delivered past it (order) or to no one (loss).
                if renewed_at.elapsed() + RENEW_WHEN_LEFT >= INVISIBLE {
                    for m in std::iter::once(&mut *message).chain(waiting.iter_mut()) {
                        if let Err(err) = consumer.change_invisible_duration(m, INVISIBLE).await {
                            ctx.failed("keeping received messages invisible", &err);
                        }
                    }
                    *renewed_at = tokio::time::Instant::now();
                }
            }
        }
    }
    {
        let mut status = ctx.status.lock();
        status.copied += 1;
        if message.delivery_attempt > 1 {
            status.duplicates += 1;
        }
        status.last_copied_ms = Some(now_ms());
        status.state = RouteState::Running;
    }
    ack(ctx, consumer, message).await;
    true
}

/// Acknowledges on the source. A failed ack is counted; the message comes back and is copied
/// again (a duplicate, counted then).
async fn ack(ctx: &WorkerCtx, consumer: &SimpleConsumer, message: &MessageView) {
    if let Err(err) = consumer.ack(message).await {
        ctx.failed("acknowledging on the source", &err);
    }
}

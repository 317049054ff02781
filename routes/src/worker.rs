//! One route at work: a SimpleConsumer of the route's group on the source and a sink for the
//! target (a Producer, or HTTP). Each received message is sent to the target, then acknowledged on the source, in the
//! order received: the group's position is the checkpoint, so a crash resends at most what was
//! received and not yet acknowledged. A failing target is retried with backoff, the same message
//! first, while the received messages are kept invisible, so nothing is lost or reordered.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::BackoffBuilder;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use vela_proto::route::{
    RouteConfig, RouteEndpoint, RouteFilter, RouteState, RouteStatus, RouteTarget,
};
use vela_sdk::{ClientConfig, FilterExpression, MessageView, Producer, SimpleConsumer};

use crate::copy::written_by_a_route;
use crate::sink::Sink;
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
            let (consumer, sink) = connect(&ctx, attempt).await?;
            let copied = copy_until_stopped(&ctx, &consumer, &sink, &mut backoff).await;
            let _ = consumer.shutdown().await;
            sink.shutdown().await;
            copied
        };
        match attempt.await {
            Ok(()) => return,
            Err(err) => ctx.failed("starting", &err),
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

/// The client id a route's producer sends with, the same wherever and whenever the route
/// runs: a copy resent after the route restarts (with `--keep-message-id`, under the same
/// message id) is then stored once by a Vela target within its deduplication window
/// (ADR 0012). The route's name when it fits a client id as it is, else a hash of it.
pub(crate) fn producer_name(route: &vela_proto::RouteName) -> String {
    let name = route.as_str();
    let clean = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let prefixed = format!("vela-route-{name}");
    if clean && prefixed.len() <= vela_proto::MAX_BROADCAST_INSTANCE_LEN {
        return prefixed;
    }
    format!("vela-route-{:016x}", vela_proto::fnv1a_64(name))
}

async fn connect(ctx: &WorkerCtx, attempt: usize) -> Result<(SimpleConsumer, Sink), String> {
    let spec = &ctx.route.spec;
    let needs_local = spec.source.address.is_none()
        || matches!(&spec.target, RouteTarget::Topic { endpoint, .. } if endpoint.address.is_none());
    let local = if needs_local {
        local_address(ctx, attempt)
            .await
            .map_err(|e| e.to_string())?
    } else {
        String::new()
    };
    let filter = match &spec.filter {
        RouteFilter::All => FilterExpression::all(),
        RouteFilter::Tag(e) => FilterExpression::tag(e),
        RouteFilter::Sql(e) => FilterExpression::sql(e),
    };
    let source =
        client_config(&spec.source, &ctx.local, &local).map_err(|e| format!("the source: {e}"))?;
    let consumer = SimpleConsumer::builder(source, spec.group.as_str())
        .subscribe(spec.source_topic.as_str(), filter)
        .await_duration(LONG_POLL)
        .build()
        .await
        .map_err(|e| format!("the source: {e}"))?;
    let sink = match &spec.target {
        RouteTarget::Topic { topic, endpoint } => {
            let producer = async {
                Producer::builder(client_config(endpoint, &ctx.local, &local)?)
                    .instance_name(producer_name(&spec.name))
                    .topics([topic.as_str()])
                    .build()
                    .await
            };
            producer.await.map(|producer| Sink::Topic {
                producer,
                topic: topic.clone(),
            })
        }
        .map_err(|e| format!("the target: {e}")),
        RouteTarget::Http(http) => Sink::http(http.clone()),
    };
    match sink {
        Ok(sink) => Ok((consumer, sink)),
        Err(err) => {
            let _ = consumer.shutdown().await;
            Err(err)
        }
    }
}

/// Receives and copies until stopped (`Ok`) or the source fails (`Err`: reconnect).
async fn copy_until_stopped(
    ctx: &WorkerCtx,
    consumer: &SimpleConsumer,
    sink: &Sink,
    backoff: &mut backon::ExponentialBackoff,
) -> Result<(), String> {
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
            Err(err) => return Err(format!("receiving from the source: {err}")),
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
        let mut i = 0;
        while i < batch.len() {
            if written_by_a_route(&batch[i]) {
                ctx.status.lock().skipped_routed += 1;
                ack(ctx, consumer, std::slice::from_ref(&batch[i])).await;
                i += 1;
                continue;
            }
            // The next messages to deliver together: up to the sink's chunk, stopping at one
            // a route wrote.
            let mut end = i + 1;
            while end < batch.len() && end - i < sink.chunk() && !written_by_a_route(&batch[end]) {
                end += 1;
            }
            let (head, waiting) = batch.split_at_mut(end);
            let chunk = &mut head[i..];
            if !deliver(
                ctx,
                consumer,
                sink,
                chunk,
                waiting,
                &mut renewed_at,
                backoff,
            )
            .await
            {
                return Ok(());
            }
            i = end;
        }
        *backoff = failure_backoff();
    }
}

/// Delivers `chunk` (retrying only what is not delivered yet) and acknowledges it. False when
/// stopped first (the messages stay unacknowledged: they are received again, by this route
/// after a restart).
async fn deliver(
    ctx: &WorkerCtx,
    consumer: &SimpleConsumer,
    sink: &Sink,
    chunk: &mut [MessageView],
    waiting: &mut [MessageView],
    renewed_at: &mut tokio::time::Instant,
    backoff: &mut backon::ExponentialBackoff,
) -> bool {
    let mut delivered = vec![false; chunk.len()];
    loop {
        if ctx.stop.is_cancelled() {
            return false;
        }
        let attempt = tokio::select! {
            () = ctx.stop.cancelled() => return false,
            r = sink.deliver(&ctx.route.spec, &ctx.local.cluster, chunk, &mut delivered) => r,
        };
        match attempt {
            Ok(()) => break,
            Err(err) => {
                ctx.failed("sending to the target", &err);
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                if !ctx.pause(delay).await {
                    return false;
                }
                // Keep these messages and the rest of their batch invisible while the target
                // is retried, so nothing is delivered past them (order) or to no one (loss).
                if renewed_at.elapsed() + RENEW_WHEN_LEFT >= INVISIBLE {
                    for m in chunk.iter_mut().chain(waiting.iter_mut()) {
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
        for m in chunk.iter() {
            status.copied += 1;
            if m.delivery_attempt > 1 {
                status.duplicates += 1;
            }
        }
        status.last_copied_ms = Some(now_ms());
        status.state = RouteState::Running;
    }
    ack(ctx, consumer, chunk).await;
    true
}

/// Acknowledges on the source, with one request for all of `messages`. A failed ack is
/// counted; the message comes back and is copied again (a duplicate, counted then).
async fn ack(ctx: &WorkerCtx, consumer: &SimpleConsumer, messages: &[MessageView]) {
    for result in consumer.ack_many(messages).await {
        if let Err(err) = result {
            ctx.failed("acknowledging on the source", &err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_producer_is_named_after_its_route_wherever_it_runs() {
        let name = |n: &str| vela_proto::RouteName::new(n).expect("valid");
        assert_eq!(producer_name(&name("eu-copy")), "vela-route-eu-copy");
        // Names a client id cannot hold as they are (a namespace's `%`, too long) are hashed.
        let hashed = producer_name(&name("ns%eu-copy"));
        assert!(
            hashed.starts_with("vela-route-") && hashed.len() == 27,
            "{hashed}"
        );
        assert_eq!(hashed, producer_name(&name("ns%eu-copy")));
        assert_ne!(hashed, producer_name(&name("ns%us-copy")));
        let long = producer_name(&name(&"r".repeat(64)));
        assert!(
            long.len() <= vela_proto::MAX_BROADCAST_INSTANCE_LEN,
            "{long}"
        );
    }
}

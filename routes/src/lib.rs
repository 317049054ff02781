//! Routes (issue 12, ADR 0025): a topic copied from one RocketMQ 5 gRPC endpoint to another by
//! a consumer group on the source, run inside Vela.
//!
//! - [`RouteManager`]: reads the routes from the controller's metadata every few seconds and
//!   keeps one worker running per route that is not paused; reports how each is doing
//!   ([`vela_proto::route::RouteRuntime`]) and its metrics.
//! - `worker`: one route at work (SimpleConsumer on the source, Producer on the target, both
//!   `vela-sdk`, so either side can be any RocketMQ 5 gRPC server).
//! - `copy`: what is written for one source message, and which messages are not copied.
//! - `sink`: where copies go: a topic (Producer) or an HTTP endpoint (CloudEvents 1.0).

// Tests may unwrap: a panic there is a failed test.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod copy;
mod metrics;
mod sink;
mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vela_proto::route::{RouteConfig, RouteRuntime, RouteState, RouteStatus};
use vela_proto::{ControllerApi, GroupName, RouteName, TopicName};

pub use copy::{copy_of, written_by_a_route};
pub use metrics::{RouteMetrics, StatusSource};
pub use sink::{EVENT_TYPE, cloud_event};

/// How often the manager reads the routes and measures lag.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);
/// The window `copy_rate` is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// How routes that name no source reach this Vela.
#[derive(Clone)]
pub enum LocalAddress {
    /// `HOST:PORT` of this process's gRPC port (standalone).
    Fixed(String),
    /// One of the proxies the controller heard from (a cluster's controller leader), chosen
    /// again on each connection attempt.
    Proxies,
}

/// The source of routes that name none: this Vela, as its own clients reach it.
#[derive(Clone)]
pub struct LocalSource {
    pub address: LocalAddress,
    /// The CA (PEM) to trust when that port speaks TLS; `None`: plaintext.
    pub ca_pem: Option<Vec<u8>>,
    /// This cluster's name (`cluster.name`): the origin copies carry.
    pub cluster: String,
}

/// Measures a group's backlog on a topic of this Vela (messages not yet acknowledged).
#[async_trait]
pub trait LagProbe: Send + Sync + 'static {
    async fn backlog(&self, topic: &TopicName, group: &GroupName) -> Option<u64>;
}

struct Running {
    config: RouteConfig,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// One route's counters and the samples its rate is computed from.
struct Tracked {
    status: Arc<Mutex<RouteStatus>>,
    samples: VecDeque<(tokio::time::Instant, u64)>,
}

/// Runs every route of the metadata that is not paused.
pub struct RouteManager {
    controller: Arc<dyn ControllerApi>,
    local: LocalSource,
    lag: Option<Arc<dyn LagProbe>>,
    running: tokio::sync::Mutex<BTreeMap<RouteName, Running>>,
    tracked: Mutex<BTreeMap<RouteName, Tracked>>,
    /// Wakes the manager when an admin call changed the routes.
    changed: tokio::sync::Notify,
}

impl RouteManager {
    pub fn new(
        controller: Arc<dyn ControllerApi>,
        local: LocalSource,
        lag: Option<Arc<dyn LagProbe>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            controller,
            local,
            lag,
            running: tokio::sync::Mutex::new(BTreeMap::new()),
            tracked: Mutex::new(BTreeMap::new()),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// Keeps the routes running until `shutdown`, then stops every worker (messages received
    /// and not yet copied are received again after a restart).
    pub fn spawn(self: &Arc<Self>, shutdown: CancellationToken) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RECONCILE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => this.reconcile().await,
                    () = this.changed.notified() => this.reconcile().await,
                }
            }
            this.stop_all().await;
        })
    }

    /// Starts, restarts and stops workers so that exactly the unpaused routes run.
    pub async fn reconcile(&self) {
        let routes = match self.controller.routes().await {
            Ok(routes) => routes,
            Err(err) => {
                tracing::debug!(error = %err, "reading routes; trying again");
                return;
            }
        };
        let wanted: BTreeMap<RouteName, RouteConfig> = routes
            .into_iter()
            .map(|r| (r.spec.name.clone(), r))
            .collect();
        let mut running = self.running.lock().await;
        let stale: Vec<RouteName> = running
            .iter()
            .filter(|(name, r)| {
                wanted
                    .get(*name)
                    .is_none_or(|w| w.paused || w.spec != r.config.spec)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(r) = running.remove(&name) {
                stop(r).await;
            }
        }
        {
            let mut tracked = self.tracked.lock();
            tracked.retain(|name, _| wanted.contains_key(name));
            for (name, route) in &wanted {
                let t = tracked.entry(name.clone()).or_insert_with(|| Tracked {
                    status: Arc::new(Mutex::new(RouteStatus::new(RouteState::Starting))),
                    samples: VecDeque::new(),
                });
                if route.paused {
                    t.status.lock().state = RouteState::Paused;
                }
            }
        }
        for (name, route) in &wanted {
            if route.paused || running.contains_key(name) {
                continue;
            }
            let Some(status) = self.tracked.lock().get(name).map(|t| t.status.clone()) else {
                continue;
            };
            let stop = CancellationToken::new();
            let task = tokio::spawn(worker::run(worker::WorkerCtx {
                route: route.clone(),
                local: self.local.clone(),
                controller: self.controller.clone(),
                status,
                stop: stop.clone(),
            }));
            tracing::info!(route = %name, "route started");
            running.insert(
                name.clone(),
                Running {
                    config: route.clone(),
                    stop,
                    task,
                },
            );
        }
        drop(running);
        self.measure(&wanted).await;
    }

    /// Lag of routes whose source is this Vela, and every route's copy rate.
    async fn measure(&self, routes: &BTreeMap<RouteName, RouteConfig>) {
        for (name, route) in routes {
            let lag = match (&self.lag, &route.spec.source.address) {
                (Some(probe), None) => {
                    probe
                        .backlog(&route.spec.source_topic, &route.spec.group)
                        .await
                }
                _ => None,
            };
            let now = tokio::time::Instant::now();
            let mut tracked = self.tracked.lock();
            let Some(t) = tracked.get_mut(name) else {
                continue;
            };
            let mut status = t.status.lock();
            status.lag_messages = lag;
            t.samples.push_back((now, status.copied));
            while t
                .samples
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
            {
                t.samples.pop_front();
            }
            status.copy_rate = match t.samples.front() {
                Some((at, copied)) if now.duration_since(*at) >= Duration::from_secs(1) => {
                    (status.copied - copied) as f64 / now.duration_since(*at).as_secs_f64()
                }
                _ => 0.0,
            };
        }
    }

    async fn stop_all(&self) {
        let running = std::mem::take(&mut *self.running.lock().await);
        for (_, r) in running {
            stop(r).await;
        }
        for t in self.tracked.lock().values() {
            t.status.lock().state = RouteState::Stopped;
        }
    }
}

async fn stop(r: Running) {
    r.stop.cancel();
    if let Err(err) = r.task.await {
        tracing::warn!(route = %r.config.spec.name, error = %err, "route worker ended abnormally");
    }
    tracing::info!(route = %r.config.spec.name, "route stopped");
}

impl RouteRuntime for RouteManager {
    fn statuses(&self) -> BTreeMap<RouteName, RouteStatus> {
        self.tracked
            .lock()
            .iter()
            .map(|(name, t)| (name.clone(), t.status.lock().clone()))
            .collect()
    }

    fn changed(&self) {
        self.changed.notify_one();
    }
}

/// Now, as Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

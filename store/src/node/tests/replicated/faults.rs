//! Fault schedules over replicated shards under a bounded concurrent load, checked by an oracle
//! of what was acknowledged. A producer sends numbered messages and a consumer receives and acks
//! them, either straight on the node the cluster names leader (in process) or, over gRPC,
//! through a proxy's `RemoteStore`, which finds each shard's leader itself and covers both
//! shards, retrying through leader changes. Sends name their client, so a retried send is
//! stored once however its first attempt ended. Meanwhile the schedule, drawn from the seed, cuts the
//! power of one node or of all at once (their disks drop every unsynced write), restarts them,
//! partitions the leader from the others, and sets message loss and delay. Afterwards the
//! network heals, every node runs, in-flight deliveries expire, and the rest is drained. The
//! oracle checks:
//! - every acknowledged send is delivered at least once;
//! - no message (queue, offset) is delivered after its ack was acknowledged;
//! - no message is stored twice (delivered from two offsets): retries are deduplicated;
//! - nothing is delivered that was never sent;
//! - once calm, the replicas of each shard hold the same state at the same applied index.
//!
//! The sweep runs over the in-process hub and over real gRPC connections on loopback (both
//! through the same fault seam). The seed decides the schedule and the network's fates; thread timing is not replayed, so a
//! rerun of a failing seed (`VELA_SIM_SEED=<n>`) repeats the same faults, not every interleaving.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use vela_proto::ClientId;
use vela_raft::vfs::sim::seed_sweep;

use super::*;

/// Steps of a schedule (each a fault or a pause, then 0.2–0.9 s of load).
const STEPS: usize = 10;
/// Most messages the producer sends (one every 20 ms while the schedule runs).
const MAX_SENDS: usize = 1000;
/// How long one attempt of a client call may take before the client tries again.
const ATTEMPT: Duration = Duration::from_secs(2);

#[derive(Default)]
pub(super) struct Oracle {
    /// Bodies whose send was acknowledged.
    pub(super) sent: BTreeSet<String>,
    /// Bodies a send was attempted for.
    pub(super) attempted: BTreeSet<String>,
    /// (queue, offset) of messages whose ack was acknowledged.
    pub(super) acked: BTreeSet<(u32, u64)>,
    /// Every body delivered.
    pub(super) delivered: BTreeSet<String>,
    /// Where each body was delivered from: more than one (queue, offset) is a duplicate append.
    stored_at: BTreeMap<String, (u32, u64, String)>,
    violations: Vec<String>,
}

impl Oracle {
    /// Fails (naming `context`) if the oracle saw a violation or an acknowledged send never
    /// came, or if fewer than half of the sends were acknowledged.
    pub(super) fn check(&self, context: &str) {
        let missing: Vec<&String> = self.sent.difference(&self.delivered).collect();
        assert!(
            self.violations.is_empty(),
            "{context}: violations {:?}",
            self.violations
        );
        assert!(
            missing.is_empty(),
            "{context}: acknowledged sends never delivered: {missing:?}"
        );
        assert!(
            self.sent.len() * 2 >= self.attempted.len(),
            "{context}: only {} of {} sends were acknowledged",
            self.sent.len(),
            self.attempted.len()
        );
    }
}

/// How the test's clients reach the store.
#[derive(Clone)]
pub(super) enum Clients {
    /// Straight to the node the running nodes agree leads shard 0 (sends go to shard 0).
    Leader(Nodes),
    /// Straight to a running node that leads the placed shard (sends go to it).
    Placed(Nodes, ShardId),
    /// Through a proxy's `RemoteStore` over gRPC, which finds leaders itself (sends alternate
    /// between the shards; receives cover both).
    Remote(Arc<vela_proto::store_client::RemoteStore>),
}

impl Clients {
    fn store(&self) -> Option<Arc<dyn StoreApi>> {
        self.labelled().map(|(_, store)| store)
    }

    /// The store to call and who it is (a node id, or "remote").
    fn labelled(&self) -> Option<(String, Arc<dyn StoreApi>)> {
        match self {
            Clients::Leader(nodes) => {
                let leader = agreed_leader(nodes)?;
                let store: Arc<dyn StoreApi> = nodes.lock().get(&leader)?.clone();
                Some((format!("node {leader}"), store))
            }
            Clients::Placed(nodes, shard) => {
                let nodes = nodes.lock();
                let (id, store) = nodes
                    .iter()
                    .find(|(id, store)| store.shard_leader(*shard) == Some(**id))?;
                let store: Arc<dyn StoreApi> = store.clone();
                Some((format!("node {id}"), store))
            }
            Clients::Remote(remote) => Some(("remote".into(), remote.clone())),
        }
    }

    /// The shard (and its queue) send number `i` goes to.
    fn shard_of(&self, i: usize) -> ShardId {
        match self {
            Clients::Leader(_) => 0,
            Clients::Placed(_, shard) => *shard,
            Clients::Remote(_) => SHARDS[i % SHARDS.len()],
        }
    }
}

/// Sends `body` until a node acknowledges it or `attempts` run out.
pub(super) async fn send(clients: &Clients, i: usize, body: &str, attempts: u32) -> bool {
    let shard = clients.shard_of(i);
    for _ in 0..attempts {
        if let Some(store) = clients.store() {
            let req = AppendRequest {
                shard,
                queue_id: shard,
                client_id: Some(ClientId::new("faults@1").expect("valid client id")),
                ..append(vec![message(body)])
            };
            if let Ok(Ok(_)) = tokio::time::timeout(ATTEMPT, store.append(req)).await {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// One receive, acking what came; returns how many messages came.
/// Receives once and acks what came; `None` when the receive failed (no leader yet, a node
/// unreachable), which says nothing about whether anything is left.
pub(super) async fn receive_once(
    clients: &Clients,
    oracle: &parking_lot::Mutex<Oracle>,
) -> Option<usize> {
    receive_from(clients, oracle, Vec::new()).await
}

/// One receive (and ack) of up to 16 from `shards` (empty: every shard the client covers).
/// `None` when it failed.
async fn receive_from(
    clients: &Clients,
    oracle: &parking_lot::Mutex<Oracle>,
    shards: Vec<ShardId>,
) -> Option<usize> {
    let Some((via, store)) = clients.labelled() else {
        tokio::time::sleep(Duration::from_millis(50)).await;
        return None;
    };
    let req = PopRequest {
        shards,
        ..pop(16, Duration::from_millis(100))
    };
    let Ok(Ok(deliveries)) = tokio::time::timeout(ATTEMPT, store.pop(req)).await else {
        tokio::time::sleep(Duration::from_millis(50)).await;
        return None;
    };
    for d in &deliveries {
        let key = (d.queue_id, d.offset);
        let body = String::from_utf8_lossy(&d.message.body).into_owned();
        {
            let mut o = oracle.lock();
            if o.acked.contains(&key) {
                o.violations.push(format!(
                    "{body} at {key:?} delivered after its ack was acknowledged"
                ));
            }
            if !o.attempted.contains(&body) {
                o.violations
                    .push(format!("{body} delivered but never sent"));
            }
            match o.stored_at.get(&body).cloned() {
                Some((q, offset, first_via)) if (q, offset) != key => o.violations.push(format!(
                    "{body} stored twice, at {:?} (delivered by {first_via}) and at {key:?} \
                     (delivered by {via})",
                    (q, offset)
                )),
                _ => {
                    o.stored_at
                        .insert(body.clone(), (key.0, key.1, via.clone()));
                }
            }
            o.delivered.insert(body);
        }
        if let Ok(Ok(())) = tokio::time::timeout(ATTEMPT, store.ack(&d.ticket)).await {
            oracle.lock().acked.insert(key);
        }
    }
    Some(deliveries.len())
}

/// A producer sending numbered messages (one every 20 ms, at most [`MAX_SENDS`]) and a
/// consumer receiving and acking, both recorded by one oracle.
pub(super) struct Load {
    clients: Clients,
    oracle: Arc<parking_lot::Mutex<Oracle>>,
    producing: Arc<AtomicBool>,
    consuming: Arc<AtomicBool>,
    producer: tokio::task::JoinHandle<()>,
    consumer: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Starts both; bodies are `<prefix>-<n>`.
    pub(super) fn start(clients: Clients, prefix: String) -> Load {
        let oracle = Arc::new(parking_lot::Mutex::new(Oracle::default()));
        let producing = Arc::new(AtomicBool::new(true));
        let consuming = Arc::new(AtomicBool::new(true));
        let producer = {
            let (clients, oracle, producing) = (clients.clone(), oracle.clone(), producing.clone());
            tokio::spawn(async move {
                for i in 0..MAX_SENDS {
                    if !producing.load(Ordering::SeqCst) {
                        break;
                    }
                    let body = format!("{prefix}-{i:03}");
                    oracle.lock().attempted.insert(body.clone());
                    if send(&clients, i, &body, 100).await {
                        oracle.lock().sent.insert(body);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let consumer = {
            let (clients, oracle, consuming) = (clients.clone(), oracle.clone(), consuming.clone());
            tokio::spawn(async move {
                while consuming.load(Ordering::SeqCst) {
                    receive_once(&clients, &oracle).await;
                }
            })
        };
        Load {
            clients,
            oracle,
            producing,
            consuming,
            producer,
            consumer,
        }
    }

    /// The end of a schedule on `shard`: stops the producer, checks that `members` hold the
    /// same state, drains, checks the oracle, and stops the cluster; `context` (the seed and
    /// what the schedule did) names any failure.
    pub(super) async fn finish(
        mut self,
        cluster: Cluster,
        clock: &ManualClock,
        shard: ShardId,
        members: &[NodeId],
        context: &str,
    ) {
        self.stop_producing().await;
        let agreed = super::agree::replicas_agree(&cluster, shard, members).await;
        let o = self.drain(clock).await;
        eprintln!(
            "{context}: {} of {} sends acknowledged, {} acks, {} bodies delivered",
            o.sent.len(),
            o.attempted.len(),
            o.acked.len(),
            o.delivered.len()
        );
        o.check(context);
        if let Err(why) = agreed {
            panic!("{context}: {why}");
        }
        cluster.shutdown().await;
    }

    /// Stops the producer (its send in progress finishes first).
    pub(super) async fn stop_producing(&mut self) {
        self.producing.store(false, Ordering::SeqCst);
        (&mut self.producer).await.expect("producer task");
    }

    /// Stops the consumer, lets in-flight deliveries expire (`clock` moves past their
    /// invisibility), receives what is left and returns the oracle.
    pub(super) async fn drain(self, clock: &ManualClock) -> Oracle {
        self.consuming.store(false, Ordering::SeqCst);
        self.consumer.await.expect("consumer task");
        clock.advance(Duration::from_secs(31));
        let mut empty = 0;
        let mut rounds = 0;
        // Five empty rounds in a row end it; a failed one (an election after the calm began)
        // proves nothing and is retried, up to a bound. Through `RemoteStore` a round asks
        // each shard on its own: a receive over all of them answers empty when one shard is
        // empty and another has no leader yet, which proves nothing either.
        let shards: Vec<Vec<ShardId>> = match &self.clients {
            Clients::Remote(remote) => remote
                .shard_replicas()
                .into_keys()
                .map(|shard| vec![shard])
                .collect(),
            _ => vec![Vec::new()],
        };
        while empty < 5 && rounds < 400 {
            rounds += 1;
            let mut round = Some(0);
            for named in &shards {
                round = match (
                    round,
                    receive_from(&self.clients, &self.oracle, named.clone()).await,
                ) {
                    (Some(total), Some(got)) => Some(total + got),
                    _ => None,
                };
            }
            match round {
                Some(0) => empty += 1,
                Some(_) => empty = 0,
                None => {}
            }
        }
        std::mem::take(&mut *self.oracle.lock())
    }
}

/// Three nodes with a leader and this build's semantics, and a load on them (bodies
/// `<prefix>-<n>`), straight to the leader in process or through `RemoteStore` over gRPC.
pub(super) async fn loaded_cluster(
    transport: Transport,
    seed: u64,
    prefix: &str,
) -> (Arc<ManualClock>, Cluster, Load) {
    let (clock, shared) = manual_clock();
    let cluster = Cluster::start_on(transport, &[1, 2, 3], seed, shared).await;
    cluster.leader().await;
    cluster.current_apply_version().await;
    let clients = match transport {
        Transport::InProcess => Clients::Leader(cluster.nodes.clone()),
        Transport::Grpc => Clients::Remote(cluster.remote_store()),
    };
    let load = Load::start(clients, format!("{prefix}{seed}"));
    (clock, cluster, load)
}

async fn schedule(seed: u64, transport: Transport) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let (clock, mut cluster, mut load) = loaded_cluster(transport, seed, "s").await;
    let faults = cluster.faults.clone();
    let mut log = Vec::new();
    let mut partitioned = false;
    for _step in 0..STEPS {
        if partitioned {
            faults.heal();
            partitioned = false;
            log.push("heal".to_string());
        }
        let down: Vec<NodeId> = cluster
            .voters
            .iter()
            .filter(|id| !cluster.running().contains(id))
            .copied()
            .collect();
        match rng.random_range(0..10) {
            0..=1 if down.is_empty() => {
                let running = cluster.running();
                let victim = running[rng.random_range(0..running.len())];
                cluster.power_cut(victim).await;
                log.push(format!("power cut {victim}"));
            }
            2..=3 if !down.is_empty() => {
                for id in down {
                    cluster.open(id).await;
                    log.push(format!("restart {id}"));
                }
            }
            4..=5 if down.is_empty() => {
                if let Some(leader) = agreed_leader(&cluster.nodes) {
                    let rest: Vec<NodeId> = cluster
                        .voters
                        .iter()
                        .copied()
                        .filter(|&n| n != leader)
                        .collect();
                    faults.partition(&[leader], &rest);
                    partitioned = true;
                    log.push(format!("partition {leader} from {rest:?}"));
                }
            }
            6 if down.is_empty() => {
                for id in cluster.running() {
                    cluster.power_cut(id).await;
                }
                for id in cluster.voters.clone() {
                    cluster.open(id).await;
                }
                log.push("power cut every node, restart all".to_string());
            }
            7 => {
                let loss = rng.random_range(0.0..0.05);
                let delay = Duration::from_micros(rng.random_range(0..3000));
                faults.set_loss(loss);
                faults.set_delay(Duration::ZERO, delay);
                log.push(format!("loss {loss:.3}, delay up to {delay:?}"));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..900))).await;
    }
    load.stop_producing().await;

    // Calm: heal, every node back, no loss; stop the consumer, let in-flight deliveries expire
    // and drain what is left.
    faults.heal();
    faults.set_loss(0.0);
    faults.set_delay(Duration::ZERO, Duration::ZERO);
    for id in cluster.voters.clone() {
        if !cluster.running().contains(&id) {
            cluster.open(id).await;
        }
    }
    let mut agreed = Vec::new();
    for shard in SHARDS {
        let voters: Vec<NodeId> = cluster.voters.iter().copied().collect();
        if let Err(why) = super::agree::replicas_agree(&cluster, shard, &voters).await {
            agreed.push(why);
        }
    }
    let o = load.drain(&clock).await;
    eprintln!(
        "seed {seed} ({transport:?}): {} of {} sends acknowledged, {} acks, {} bodies delivered; schedule {log:?}",
        o.sent.len(),
        o.attempted.len(),
        o.acked.len(),
        o.delivered.len()
    );
    o.check(&format!("seed {seed} ({transport:?}); schedule {log:?}"));
    assert!(
        agreed.is_empty(),
        "seed {seed} ({transport:?}); schedule {log:?}: {agreed:?}"
    );
    cluster.shutdown().await;
}

/// Runs `schedule` for every seed of the sweep (see `seed_sweep`), each on a runtime of its
/// own.
pub(super) fn sweep_seeds<F, Fut>(name: &str, default_seeds: u64, schedule: F)
where
    F: Fn(u64) -> Fut + std::panic::RefUnwindSafe,
    Fut: std::future::Future<Output = ()>,
{
    seed_sweep(name, default_seeds, |seed| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(schedule(seed));
    });
}

fn sweep(name: &str, default_seeds: u64, transport: Transport) {
    sweep_seeds(name, default_seeds, |seed| schedule(seed, transport));
}

#[test]
fn acknowledged_sends_and_acks_survive_fault_schedules() {
    sweep("replicated fault schedule", 3, Transport::InProcess);
}

#[test]
fn acknowledged_sends_and_acks_survive_fault_schedules_over_grpc_through_remote_store() {
    sweep(
        "replicated fault schedule over gRPC, clients through RemoteStore",
        2,
        Transport::Grpc,
    );
}

//! The in-process cluster of store nodes the replicated tests run: nodes on simulated disks,
//! Raft through the in-process hub or over gRPC on loopback, kill, power cut, restart,
//! partition and delay, and the helpers the tests share.

use super::*;

/// How the nodes of a test cluster reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    InProcess,
    Grpc,
}

/// A node's Raft service while it runs (gRPC clusters).
pub(super) struct Served {
    pub(super) server: Arc<RaftServer<ShardTypes, ShardStateMachine>>,
    pub(super) stop: oneshot::Sender<()>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

/// An in-process cluster of store nodes that hold every shard of the default config.
pub(super) struct Cluster {
    pub(super) transport: Transport,
    pub(super) faults: Arc<NetFaults>,
    pub(super) hub: Arc<Hub>,
    /// Raft addresses (gRPC: loopback ports chosen at start and kept across restarts).
    pub(super) addrs: BTreeMap<NodeId, SocketAddr>,
    pub(super) served: BTreeMap<NodeId, Served>,
    pub(super) clock: SharedClock,
    /// How far each node's wall clock is off `clock`, in milliseconds (see
    /// [`Cluster::jump_clock`]).
    pub(super) skews: BTreeMap<NodeId, Arc<AtomicI64>>,
    pub(super) voters: BTreeSet<NodeId>,
    pub(super) disks: BTreeMap<NodeId, SimVfs>,
    pub(super) nodes: Nodes,
    pub(super) builds: Builds,
    /// Each node's configuration (`node_config` unless a test changes it before a restart).
    pub(super) config: fn(NodeId) -> StoreConfig,
    /// Makes in-process replica copies stall (see `LocalSource`).
    pub(super) stall_copies: Arc<std::sync::atomic::AtomicBool>,
}

/// What the in-process cluster's shard leaders learn of each node's build: a running node knows
/// this build's apply version unless a test plants an older one (a node not yet upgraded).
#[derive(Clone, Default)]
pub(super) struct Builds {
    pub(super) nodes: Nodes,
    pub(super) planted: Arc<parking_lot::Mutex<BTreeMap<NodeId, u32>>>,
}

#[async_trait]
impl PeerBuilds for Builds {
    async fn max_apply_version(&self, node: u64, _addr: &str) -> Option<u32> {
        if !self.nodes.lock().contains_key(&node) {
            return None;
        }
        Some(
            self.planted
                .lock()
                .get(&node)
                .copied()
                .unwrap_or(crate::state::APPLY_VERSION),
        )
    }

    /// A node playing an older build knows only that build's version when it leads, too.
    fn own_apply_version(&self, me: u64) -> u32 {
        self.planted
            .lock()
            .get(&me)
            .copied()
            .unwrap_or(crate::state::APPLY_VERSION)
    }
}

/// Replica copies between the nodes of an in-process cluster: straight from the other store.
/// While `stall` is set, a copy sends its first batch, waits two seconds and fails (a node can
/// be stopped in the middle of one).
pub(super) struct LocalSource {
    pub(super) nodes: Nodes,
    pub(super) stall: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl crate::ReplicaSource for LocalSource {
    async fn fetch(
        &self,
        node: u64,
        _addr: &str,
        request: crate::CopyRequest,
    ) -> Result<futures::stream::BoxStream<'static, Result<crate::ReplicaChunk, String>>, String>
    {
        use futures::StreamExt;
        let store = self
            .nodes
            .lock()
            .get(&node)
            .cloned()
            .ok_or_else(|| format!("node {node} is down"))?;
        let chunks = store.copy_shard(request).map_err(|e| e.to_string())?;
        let chunks = tokio_stream::wrappers::ReceiverStream::new(chunks)
            .map(|c| c.map_err(|e| e.to_string()));
        if !self.stall.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(chunks.boxed());
        }
        let stalled = futures::stream::once(async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Err("the copy stalled (test)".to_owned())
        });
        Ok(chunks.take(1).chain(stalled).boxed())
    }

    /// Short, so a copy that fails for good fails its install within a test.
    fn patience(&self) -> Duration {
        Duration::from_secs(5)
    }
}

/// The Raft addresses of nodes `ids`, as members are named to a shard.
pub(super) fn members_of(cluster: &Cluster, ids: &[NodeId]) -> BTreeMap<u64, String> {
    ids.iter()
        .map(|&id| (id, cluster.addrs[&id].to_string()))
        .collect()
}

/// The running nodes, shared with the client tasks of a test.
pub(super) type Nodes = Arc<parking_lot::Mutex<BTreeMap<NodeId, Arc<Store>>>>;

/// Shards every node holds a replica of.
pub(super) const SHARDS: [ShardId; 2] = [0, 1];

pub(super) fn node_config(id: NodeId) -> StoreConfig {
    StoreConfig {
        node_id: id,
        data_dir: format!("/data/store-{id}").into(),
        shards: SHARDS.to_vec(),
        ..StoreConfig::default()
    }
}

impl Cluster {
    pub(super) async fn start_on(
        transport: Transport,
        ids: &[NodeId],
        seed: u64,
        clock: SharedClock,
    ) -> Cluster {
        Self::start_with_builds(transport, ids, seed, clock, BTreeMap::new()).await
    }

    /// [`Cluster::start_on`], with the builds of some nodes knowing only an older apply
    /// version (in process only: over gRPC the nodes report their real build).
    pub(super) async fn start_with_builds(
        transport: Transport,
        ids: &[NodeId],
        seed: u64,
        clock: SharedClock,
        planted: BTreeMap<NodeId, u32>,
    ) -> Cluster {
        Self::start_full(transport, ids, seed, clock, planted, node_config).await
    }

    /// [`Cluster::start_on`] with every node configured by `config`.
    pub(super) async fn start_configured(
        ids: &[NodeId],
        seed: u64,
        clock: SharedClock,
        config: fn(NodeId) -> StoreConfig,
    ) -> Cluster {
        Self::start_full(
            Transport::InProcess,
            ids,
            seed,
            clock,
            BTreeMap::new(),
            config,
        )
        .await
    }

    pub(super) async fn start_full(
        transport: Transport,
        ids: &[NodeId],
        seed: u64,
        clock: SharedClock,
        planted: BTreeMap<NodeId, u32>,
        config: fn(NodeId) -> StoreConfig,
    ) -> Cluster {
        let faults = NetFaults::new(seed);
        let mut addrs = BTreeMap::new();
        // Bound together, so no two nodes get the same free port; released before use.
        let mut holders = Vec::new();
        for &id in ids {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            addrs.insert(id, l.local_addr().expect("bound address"));
            holders.push(l);
        }
        drop(holders);
        let nodes = Nodes::default();
        let mut cluster = Cluster {
            transport,
            hub: Hub::new(faults.clone()),
            faults,
            addrs,
            served: BTreeMap::new(),
            clock,
            skews: ids.iter().map(|&id| (id, Arc::default())).collect(),
            voters: ids.iter().copied().collect(),
            disks: BTreeMap::new(),
            builds: Builds {
                nodes: nodes.clone(),
                planted: Arc::new(parking_lot::Mutex::new(planted)),
            },
            nodes,
            config,
            stall_copies: Arc::default(),
        };
        for &id in ids {
            cluster.disks.insert(id, SimVfs::new());
            cluster.open(id).await;
        }
        cluster
    }

    /// Opens node `id` on its disk and makes it reachable.
    pub(super) async fn open(&mut self, id: NodeId) {
        let voters: BTreeMap<u64, String> = self
            .voters
            .iter()
            .map(|v| (*v, self.addrs[v].to_string()))
            .collect();
        let vfs: Arc<dyn Vfs> = Arc::new(self.disks[&id].clone());
        let cfg = (self.config)(id);
        let clock: SharedClock = Arc::new(SkewedClock {
            base: self.clock.clone(),
            skew: self.skews.entry(id).or_default().clone(),
        });
        let store = match self.transport {
            Transport::InProcess => {
                let hub = self.hub.clone();
                Store::open_replicated(
                    cfg,
                    clock,
                    vfs,
                    voters,
                    move |shard| hub.network(u64::from(shard), id),
                    true,
                    Arc::new(self.builds.clone()),
                    Arc::new(LocalSource {
                        nodes: self.nodes.clone(),
                        stall: self.stall_copies.clone(),
                    }),
                )
                .await
            }
            Transport::Grpc => {
                let pool = ChannelPool::new();
                let faults = self.faults.clone();
                let builds = crate::GrpcPeerBuilds::new();
                Store::open_replicated(
                    cfg,
                    clock,
                    vfs,
                    voters,
                    move |shard| {
                        GrpcNetwork::<Vec<u8>>::new(u64::from(shard), id, pool.clone())
                            .with_faults(faults.clone())
                    },
                    true,
                    builds,
                    Arc::new(crate::GrpcReplicaSource::new()),
                )
                .await
            }
        }
        .unwrap_or_else(|e| panic!("node {id} opens: {e}"));
        match self.transport {
            Transport::InProcess => {
                for (shard, raft) in store.shard_rafts() {
                    self.hub.register(u64::from(shard), id, raft);
                }
            }
            Transport::Grpc => {
                let server = RaftServer::new(id);
                for (shard, raft) in store.shard_rafts() {
                    server.register(u64::from(shard), raft);
                }
                let listener = tokio::net::TcpListener::bind(self.addrs[&id])
                    .await
                    .expect("the node's port is free again");
                let (stop, stopped) = oneshot::channel::<()>();
                let service = server.service();
                // One port per node carries Raft and the store service, as in a deployment.
                let registrar: crate::service::ShardRegistrar = {
                    let server = server.clone();
                    Arc::new(move |shard, raft| match raft {
                        Some(raft) => server.register(u64::from(shard), raft),
                        None => server.unregister(u64::from(shard)),
                    })
                };
                let store_service =
                    crate::service::StoreService::server_with(store.clone(), Some(registrar));
                let task = tokio::spawn(async move {
                    tonic::transport::Server::builder()
                        .add_service(service)
                        .add_service(store_service)
                        .serve_with_incoming_shutdown(
                            TcpIncoming::from(listener).with_nodelay(Some(true)),
                            async {
                                stopped.await.ok();
                            },
                        )
                        .await
                        .expect("raft service runs");
                });
                self.served.insert(id, Served { server, stop, task });
            }
        }
        self.nodes.lock().insert(id, store);
    }

    /// Steps node `id`'s wall clock by `delta_ms` (negative: back), as NTP stepping or a
    /// resumed VM does; it runs on from there. Kept across restarts of the node.
    pub(super) fn jump_clock(&mut self, id: NodeId, delta_ms: i64) {
        self.skews
            .entry(id)
            .or_default()
            .fetch_add(delta_ms, Ordering::SeqCst);
    }

    /// Sets every node's clock right again.
    pub(super) fn correct_clocks(&self) {
        for skew in self.skews.values() {
            skew.store(0, Ordering::SeqCst);
        }
    }

    /// Makes node `id`'s replica of `shard` (opened while it runs) reachable over Raft.
    pub(super) fn register(&self, shard: ShardId, id: NodeId, raft: crate::ShardRaft) {
        match self.transport {
            Transport::InProcess => self.hub.register(u64::from(shard), id, raft),
            Transport::Grpc => {
                if let Some(served) = self.served.get(&id) {
                    served.server.register(u64::from(shard), raft);
                }
            }
        }
    }

    /// Makes node `id` unreachable: peers see refused requests from now on.
    pub(super) async fn disconnect(&mut self, id: NodeId) {
        self.hub.unregister_node(id);
        if let Some(served) = self.served.remove(&id) {
            for shard in self.node(id).shard_ids() {
                served.server.unregister(u64::from(shard));
            }
            served.stop.send(()).ok();
            served.task.await.expect("raft service stops");
        }
    }

    /// A proxy's view of the cluster: `StoreApi` over gRPC to whichever node leads a shard.
    pub(super) fn remote_store(&self) -> Arc<vela_proto::store_client::RemoteStore> {
        let map = vela_proto::store_client::ClusterMap {
            stores: self
                .addrs
                .iter()
                .map(|(id, addr)| (*id, addr.to_string()))
                .collect(),
            shards: SHARDS
                .iter()
                .map(|&s| (s, self.voters.iter().copied().collect()))
                .collect(),
        };
        Arc::new(vela_proto::store_client::RemoteStore::new(map).expect("a valid cluster map"))
    }

    pub(super) fn node(&self, id: NodeId) -> Arc<Store> {
        self.nodes.lock()[&id].clone()
    }

    pub(super) fn running(&self) -> Vec<NodeId> {
        self.nodes.lock().keys().copied().collect()
    }

    /// Stops node `id` as an operator does: it hands its shards' leadership over and stops
    /// cleanly, then becomes unreachable.
    pub(super) async fn stop(&mut self, id: NodeId) {
        let store = self.node(id);
        store.shutdown().await.expect("clean shutdown");
        self.disconnect(id).await;
        self.nodes.lock().remove(&id);
    }

    /// Cuts node `id`'s power: what its disk had not synced is gone.
    pub(super) async fn power_cut(&mut self, id: NodeId) {
        self.disconnect(id).await;
        let disk = self.disks.remove(&id).expect("node has a disk");
        let survived = disk.crash(CrashMode::DropAllUnsynced);
        let store = self.nodes.lock().remove(&id).expect("node runs");
        // The crashed disk fails every call: this only stops the tasks.
        store.halt().await.ok();
        self.disks.insert(id, survived);
    }

    /// The leader of shard 0 that every running node agrees on, still after a short while (on
    /// a loaded machine a second election can follow the first at once).
    pub(super) async fn leader(&self) -> NodeId {
        for _ in 0..400 {
            if let Some(leader) = agreed_leader(&self.nodes) {
                tokio::time::sleep(Duration::from_millis(150)).await;
                if agreed_leader(&self.nodes) == Some(leader) {
                    return leader;
                }
                continue;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the running nodes agree on no leader of shard 0");
    }

    /// Appends `req` through the leader the running nodes agree on, and again through the next
    /// one when leadership moved meanwhile, as a client does; returns the node that took it.
    pub(super) async fn append_via_leader(&self, req: AppendRequest) -> NodeId {
        let mut attempt = 0;
        loop {
            let leader = self.leader().await;
            match self.node(leader).append(req.clone()).await {
                Ok(_) => return leader,
                Err(StoreError::NotLeader { .. }) if attempt < 20 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("the leader appends: {err:?}"),
            }
        }
    }

    /// Waits until every running node applies this build's semantics on every shard (the
    /// leaders raise them once elected), so sends are deduplicated from the first.
    pub(super) async fn current_apply_version(&self) {
        for _ in 0..400 {
            let running = self.running();
            if running.iter().all(|&id| {
                let store = self.node(id);
                store
                    .shard_ids()
                    .iter()
                    .all(|&s| store.apply_version(s) == Some(crate::state::APPLY_VERSION))
            }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "the shards never reached apply version {}",
            crate::state::APPLY_VERSION
        );
    }

    pub(super) fn last_applied(&self, id: NodeId) -> u64 {
        let rafts = self.node(id).shard_rafts();
        let metrics = rafts[0].1.metrics().borrow_watched().clone();
        metrics.last_applied.map_or(0, |l| l.index)
    }

    pub(super) async fn shutdown(mut self) {
        for id in self.running() {
            self.disconnect(id).await;
            let store = self.node(id);
            store.shutdown().await.expect("clean shutdown");
        }
    }
}

/// A node's wall clock: the cluster's clock, off by the node's skew.
#[derive(Debug)]
struct SkewedClock {
    base: SharedClock,
    skew: Arc<AtomicI64>,
}

impl Clock for SkewedClock {
    fn now_ms(&self) -> i64 {
        self.base
            .now_ms()
            .saturating_add(self.skew.load(Ordering::SeqCst))
    }
}

/// The leader of shard 0 if every running node names the same running node.
pub(super) fn agreed_leader(nodes: &Nodes) -> Option<NodeId> {
    let nodes = nodes.lock();
    let views: Vec<Option<NodeId>> = nodes.values().map(|s| s.shard_leader(0)).collect();
    match views.first() {
        Some(Some(leader))
            if nodes.contains_key(leader) && views.iter().all(|v| v == &Some(*leader)) =>
        {
            Some(*leader)
        }
        _ => None,
    }
}

/// Receives and acks on `store` until `want` messages came or three receives in a row found
/// nothing; returns the bodies received.
pub(super) async fn drain(store: &Store, want: usize) -> Vec<String> {
    let mut got = Vec::new();
    let mut empty = 0;
    while got.len() < want && empty < 3 {
        let deliveries = store
            .pop(pop(32, Duration::from_millis(200)))
            .await
            .expect("receives on the leader");
        for d in &deliveries {
            store.ack(&d.ticket).await.expect("acks on the leader");
        }
        empty = if deliveries.is_empty() { empty + 1 } else { 0 };
        got.extend(bodies(&deliveries));
    }
    got
}

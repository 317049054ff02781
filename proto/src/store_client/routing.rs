//! How a [`RemoteStore`](super::RemoteStore) reaches the store nodes: the nodes it knows (the
//! cluster map's and those learnt from the controller) with a client each, the leader it last
//! saw for each shard, and the retry loops that send a call to a node or to a shard's leader.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::{
    ATTEMPT, ClusterMap, FIRST_BACKOFF, MAX_BACKOFF, MAX_REPLY_BYTES, RECEIVE_RETRY_FOR, acks,
    batched, lazy_channel, sends,
};
use crate::domain::ShardId;
use crate::pb::store::store_client::StoreClient;
use crate::store_api::{Delivery, PopRequest, StoreError};
use crate::store_wire::*;

/// What a [`RemoteStore`] knows of the cluster and how it reaches a shard's leader; shared with
/// the tasks that send batched calls ([`batched`]).
pub(super) struct Routing {
    /// The map it was made with; its store nodes are a starting point of `nodes`.
    pub(super) map: ClusterMap,
    /// Every store node it knows: the map's and those learnt since
    /// ([`RemoteStore::learn_stores`]). Never shrinks.
    pub(super) nodes: parking_lot::RwLock<Arc<Nodes>>,
    /// The node last seen leading each shard.
    pub(super) leaders: Mutex<HashMap<ShardId, u64>>,
    /// Which shard a receive asks first, so shards are served in turn.
    pub(super) turn: AtomicUsize,
    /// Appends waiting for an append call to their shard (see [`sends`]).
    pub(super) appends: batched::Batcher<sends::Appends>,
    /// Acks waiting for an ack call to their shard (see [`acks`]).
    pub(super) acks: batched::Batcher<acks::Acks>,
}

/// The store nodes a [`Routing`] reaches, with a client each.
#[derive(Default, Clone)]
pub(super) struct Nodes {
    pub(super) addrs: BTreeMap<u64, String>,
    pub(super) clients: BTreeMap<u64, StoreClient<Channel>>,
}

impl Nodes {
    /// Adds (or moves) node `node` to `addr`.
    pub(super) fn insert(&mut self, node: u64, addr: &str) -> Result<(), String> {
        let channel =
            lazy_channel(addr).map_err(|e| format!("store node {node} address {addr:?}: {e}"))?;
        let client = StoreClient::new(channel)
            .max_decoding_message_size(MAX_REPLY_BYTES)
            .max_encoding_message_size(MAX_REPLY_BYTES);
        self.addrs.insert(node, addr.to_owned());
        self.clients.insert(node, client);
        Ok(())
    }
}

impl Routing {
    pub(super) fn new(map: ClusterMap) -> Result<Self, String> {
        if map.shards.is_empty() {
            return Err("the cluster map has no shards".into());
        }
        for (shard, replicas) in &map.shards {
            if replicas.is_empty() {
                return Err(format!("shard {shard} has no replicas"));
            }
            if let Some(node) = replicas.iter().find(|n| !map.stores.contains_key(n)) {
                return Err(format!(
                    "shard {shard} names store node {node}, which has no address"
                ));
            }
        }
        let mut nodes = Nodes::default();
        for (&node, addr) in &map.stores {
            nodes.insert(node, addr)?;
        }
        Ok(Routing {
            map,
            nodes: parking_lot::RwLock::new(Arc::new(nodes)),
            leaders: Mutex::new(HashMap::new()),
            turn: AtomicUsize::new(0),
            appends: batched::Batcher::default(),
            acks: batched::Batcher::gathering_bursts(super::acks::LONE_ACK_YIELDS),
        })
    }

    pub(super) fn known_leader(&self, shard: ShardId) -> Option<u64> {
        self.leaders.lock().get(&shard).copied()
    }

    /// What a node that does not lead `shard` said of its leader: the next call goes there (if it
    /// is one of the shard's replicas), or to the replicas in turn.
    pub(super) fn follow_hint(&self, shard: ShardId, leader: Option<u64>) {
        match leader.filter(|l| self.candidates(shard).contains(l)) {
            Some(leader) => self.leaders.lock().insert(shard, leader),
            None => self.leaders.lock().remove(&shard),
        };
    }

    /// The client of store node `node`, if it is known.
    pub(super) fn client(&self, node: u64) -> Option<StoreClient<Channel>> {
        self.nodes.read().clients.get(&node).cloned()
    }

    /// The store nodes it knows now.
    pub(super) fn nodes(&self) -> Arc<Nodes> {
        self.nodes.read().clone()
    }

    /// `named`, or every shard of the map when it names none.
    pub(super) fn scope(&self, named: &[ShardId]) -> Vec<ShardId> {
        if named.is_empty() {
            self.map.shards.keys().copied().collect()
        } else {
            let mut shards = named.to_vec();
            shards.sort_unstable();
            shards.dedup();
            shards
        }
    }

    /// The shards a receive covers (see [`RemoteStore::scope`]), starting with the one whose
    /// turn it is.
    pub(super) fn shards_in_turn(&self, named: &[ShardId]) -> Vec<ShardId> {
        let mut shards = self.scope(named);
        let turn = self.turn.fetch_add(1, Ordering::Relaxed) % shards.len().max(1);
        shards.rotate_left(turn);
        shards
    }

    /// The store nodes that may lead `shard`, in the order they are tried: a configured shard's
    /// replicas as the cluster map lists them, then every other node known (the controller may
    /// have moved its replicas since, ADR 0032); for a shard placed at runtime, which the map
    /// does not list, every node known.
    pub(super) fn candidates(&self, shard: ShardId) -> Vec<u64> {
        let known = self.nodes();
        let listed = self
            .map
            .shards
            .get(&shard)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        listed
            .iter()
            .copied()
            .filter(|n| known.clients.contains_key(n))
            .chain(known.addrs.keys().copied().filter(|n| !listed.contains(n)))
            .collect()
    }

    /// Runs `call` once against store node `node` (`what` names it in errors).
    pub(super) async fn on_node<T, F, Fut>(
        &self,
        node: u64,
        what: String,
        within: Duration,
        call: F,
    ) -> Result<(), StoreError>
    where
        F: FnOnce(StoreClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self
            .client(node)
            .ok_or_else(|| StoreError::Invalid(format!("store node {node} has no address")))?;
        match tokio::time::timeout(within, call(client)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(status_to_error(&status)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "store node {node} did not {what} within {within:?}"
            ))),
        }
    }

    /// Runs `call` against the leader of `shard`, following leader hints and retrying
    /// retryable failures for up to `retry_for`. Each attempt may take [`ATTEMPT`] (plus what
    /// the call itself waits, `extra`): a node that took the call but cannot answer (a leader
    /// cut off from its majority) is given up on and the next replica tried.
    pub(super) async fn on_shard<T, F, Fut>(
        &self,
        shard: ShardId,
        retry_for: Duration,
        extra: Duration,
        call: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(StoreClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let replicas = self.candidates(shard);
        if replicas.is_empty() {
            return Err(StoreError::Invalid(
                "the cluster map has no store nodes".into(),
            ));
        }
        let deadline = Instant::now() + retry_for;
        let mut backoff = FIRST_BACKOFF;
        let mut next = 0usize;
        let mut hops = 0usize;
        loop {
            let known = self.leaders.lock().get(&shard).copied();
            let node = known.unwrap_or(replicas[next % replicas.len()]);
            let Some(client) = self.client(node) else {
                if known.is_some() {
                    // Led last from a node removed since: ask the replicas.
                    self.leaders.lock().remove(&shard);
                    continue;
                }
                return Err(StoreError::Invalid(format!(
                    "store node {node} has no address"
                )));
            };
            let attempt = ATTEMPT
                .min(deadline.saturating_duration_since(Instant::now()))
                .max(FIRST_BACKOFF)
                + extra;
            let err = match tokio::time::timeout(attempt, call(client)).await {
                Ok(Ok(reply)) => {
                    self.leaders.lock().insert(shard, node);
                    return Ok(reply.into_inner());
                }
                Ok(Err(status)) => status_to_error(&status),
                Err(_) => StoreError::Unavailable(format!(
                    "store node {node} did not answer for shard {shard} within {attempt:?}"
                )),
            };
            match &err {
                StoreError::NotLeader {
                    leader: Some(leader),
                    ..
                } if *leader != node && replicas.contains(leader) && hops < 2 * replicas.len() => {
                    // Follow the hint at once (a bounded number of times: hints can be stale).
                    hops += 1;
                    self.leaders.lock().insert(shard, *leader);
                    continue;
                }
                StoreError::NotLeader { .. } | StoreError::Unavailable(_) => {
                    self.leaders.lock().remove(&shard);
                    next += 1;
                    hops = 0;
                }
                _ => return Err(err),
            }
            if Instant::now() + backoff > deadline {
                return Err(err);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One receive from `shard` that does not wait for messages, retried for up to `retry_for`.
    pub(super) async fn pop_on(
        &self,
        shard: ShardId,
        req: &PopRequest,
        retry_for: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut wire = pop_to_wire(req);
        wire.shard = shard;
        wire.wait_ms = 0;
        let reply = self
            .on_shard(shard, retry_for, Duration::ZERO, |mut c| {
                let wire = wire.clone();
                async move { c.pop(wire).await }
            })
            .await?;
        reply
            .deliveries
            .into_iter()
            .map(|d| delivery_from_wire(d).map_err(StoreError::from))
            .collect()
    }

    /// Whether `shard` has something for `req` within `wait`.
    pub(super) async fn await_on(
        &self,
        shard: ShardId,
        req: &PopRequest,
        wait: Duration,
    ) -> Result<bool, StoreError> {
        let mut wire = pop_to_wire(req);
        wire.shard = shard;
        wire.wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        let reply = self
            .on_shard(shard, RECEIVE_RETRY_FOR.min(wait), wait, |mut c| {
                let wire = wire.clone();
                async move { c.await_deliverable(wire).await }
            })
            .await?;
        Ok(reply.deliverable)
    }
}

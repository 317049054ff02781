//! [`RemoteStore`]: `StoreApi` over gRPC for a cluster's proxies. It knows which store nodes hold
//! each shard (a [`ClusterMap`]) and sends every call to the shard's leader: the one it last saw
//! answer, else the one a `NotLeader` reply named, else the replicas in turn. Leader changes,
//! refused connections and timeouts are retried within a bounded time; everything else is
//! returned as the store node answered it.
//!
//! A receive covers the topic's shards one at a time: it takes what the first shard (in turn)
//! holds; when no shard has anything it waits on all of them at once without taking anything
//! (`AwaitDeliverable`) and receives from the first that has something, so no message is taken
//! for a receive that ended elsewhere.
//!
//! Retried sends: a send whose reply was lost may have been stored; retrying it is safe because
//! the shard deduplicates by (client id, message id) (ADR 0012).
//!
//! Shards the controller placed at runtime (ADR 0013) are not in the map: a call for one tries
//! every store node, following `NotLeader` hints (a node that does not hold it gives none), and
//! receives, statistics and drops cover the shards their caller names.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::cluster_status::{ShardMember, StoreNodeReport, ask_each, member_from_wire};
use crate::domain::{GroupConfig, GroupName, OffsetTarget, QueueStats, ShardId, TopicName};
use crate::lookup::{FoundMessage, LookupRequest, found_from_wire, lookup_to_wire};
use crate::pb::store as pb;
use crate::receipt::ReceiptTicket;
use crate::store_api::{
    AppendOutcome, AppendRequest, Delivery, GroupDropId, OpenMode, PopRequest, PullRequest, Pulled,
    StoreApi, StoreError, TransactionCheck, TransactionCheckRequest, TransactionResolution,
};
use crate::store_wire::*;

mod acks;
mod batched;
mod routing;
mod sends;

use routing::{Nodes, Routing};

/// Which store nodes hold which shards.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterMap {
    /// Store node id → address of its store service (`host:port`).
    pub stores: BTreeMap<u64, String>,
    /// Shard → the store nodes holding a replica of it.
    pub shards: BTreeMap<ShardId, Vec<u64>>,
}

/// How long a call keeps retrying through leader changes and unreachable nodes.
const RETRY_FOR: Duration = Duration::from_secs(10);
/// How long one shard of a receive is retried before the receive moves on without it.
const RECEIVE_RETRY_FOR: Duration = Duration::from_secs(1);
/// How long one attempt may take (beyond a receive's own wait) before the next replica is tried.
const ATTEMPT: Duration = Duration::from_secs(3);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// How long a leadership transfer may take (the target must catch up and win an election).
const TRANSFER_FOR: Duration = Duration::from_secs(5);
/// What a membership change may wait on its leader beyond [`ATTEMPT`]: new members catching up
/// and two membership entries committing.
const MEMBERS_EXTRA: Duration = Duration::from_secs(20);
/// Largest reply accepted from a store node (a receive of 32 messages of up to 4 MiB each).
const MAX_REPLY_BYTES: usize = 256 * 1024 * 1024;

/// A channel to a cluster node at `addr` (`host:port`), connected on first use, with the
/// connect timeout and keep-alives every internal client uses.
pub fn lazy_channel(addr: &str) -> Result<Channel, String> {
    Ok(crate::cluster_tls::endpoint(addr)?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect_lazy())
}

/// `StoreApi` over gRPC, routing each call to the shard's leader.
pub struct RemoteStore {
    routing: Arc<Routing>,
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStore")
            .field("map", &self.routing.map)
            .finish_non_exhaustive()
    }
}

impl RemoteStore {
    /// A client of the cluster `map` (connections are made on first use). Fails on an address
    /// that is not `host:port` or a shard whose replicas are unknown nodes.
    pub fn new(map: ClusterMap) -> Result<Self, String> {
        Ok(RemoteStore {
            routing: Arc::new(Routing::new(map)?),
        })
    }

    /// Makes a batched append call wait `linger` for more sends to its shard before it goes
    /// (`proxy.send_linger`; see `store_client/batched.rs`). A send that finds its shard idle still goes at
    /// once.
    pub fn set_send_linger(&self, linger: Duration) {
        self.routing.appends.set_linger(linger);
    }

    /// Makes every ack call wait `linger` for more acks to its shard before it goes, the first
    /// of a burst too (`proxy.ack_linger`; 0: no timer, a lone ack only lets the rest of its
    /// burst queue first, see `store_client/acks.rs`).
    pub fn set_ack_linger(&self, linger: Duration) {
        self.routing.acks.set_linger(linger);
    }

    /// Makes the store nodes it reaches those of its map plus `stores` (as the controller lists
    /// them: nodes that joined at runtime, a removed one gone; a node of the map keeps the
    /// map's address). Returns how many were added, moved or dropped; an address that is not
    /// `host:port` is skipped with an error in the log.
    pub fn learn_stores(&self, stores: &BTreeMap<u64, String>) -> usize {
        let mut wanted = stores.clone();
        wanted.extend(self.routing.map.stores.clone());
        let current = self.routing.nodes.read().clone();
        if current.addrs == wanted {
            return 0;
        }
        let mut next = Nodes::default();
        let mut changes = current
            .addrs
            .keys()
            .filter(|id| !wanted.contains_key(id))
            .count();
        for (&node, addr) in &wanted {
            if current.addrs.get(&node) == Some(addr) {
                next.addrs.insert(node, addr.clone());
                next.clients.insert(node, current.clients[&node].clone());
                continue;
            }
            match next.insert(node, addr) {
                Ok(()) => changes += 1,
                Err(err) => tracing::error!(error = %err, "a store node the controller lists"),
            }
        }
        // A shard last led from a node no longer listed is asked afresh.
        self.routing
            .leaders
            .lock()
            .retain(|_, node| next.addrs.contains_key(node));
        *self.routing.nodes.write() = Arc::new(next);
        changes
    }

    /// The store nodes it knows (id → address).
    pub fn store_addrs(&self) -> BTreeMap<u64, String> {
        self.routing.nodes.read().addrs.clone()
    }

    /// The node this client last saw lead `shard` (from a reply or a leader hint), if any.
    pub fn known_leader(&self, shard: ShardId) -> Option<u64> {
        self.routing.known_leader(shard)
    }

    /// Append calls (`Append` or `AppendMany`) this client has made to store nodes, each
    /// counted once however often it was retried: fewer than the appends asked of it when
    /// concurrent sends shared calls.
    pub fn append_calls(&self) -> u64 {
        self.routing.appends.calls.load(Ordering::Relaxed)
    }

    /// Ack calls (`Ack` or `AckMany`) this client has made, counted as [`Self::append_calls`].
    pub fn ack_calls(&self) -> u64 {
        self.routing.acks.calls.load(Ordering::Relaxed)
    }
}

impl RemoteStore {
    /// QueueStats on every shard `shards` selects, `wire` naming what to report.
    async fn queue_stats_wire(
        &self,
        wire: pb::QueueStatsRequest,
        shards: &[ShardId],
    ) -> Result<Vec<QueueStats>, StoreError> {
        let mut stats = Vec::new();
        for shard in self.routing.scope(shards) {
            let wire = pb::QueueStatsRequest {
                shard,
                ..wire.clone()
            };
            let reply = self
                .routing
                .on_shard(shard, RETRY_FOR, Duration::ZERO, |mut c| {
                    let wire = wire.clone();
                    async move { c.queue_stats(wire).await }
                })
                .await?;
            for s in reply.queues {
                stats.push(stats_from_wire(s)?);
            }
        }
        stats.sort_by_key(|s| s.queue_id);
        Ok(stats)
    }
}

impl RemoteStore {
    /// `ChangeInvisible`, or with `renew` `RenewInvisible` (the delivery keeps its id).
    async fn make_invisible(
        &self,
        ticket: &ReceiptTicket,
        invisible: Duration,
        renew: bool,
    ) -> Result<ReceiptTicket, StoreError> {
        let wire = pb::ChangeInvisibleRequest {
            ticket: Some(ticket_to_wire(ticket)),
            invisible_ms: u64::try_from(invisible.as_millis()).unwrap_or(u64::MAX),
        };
        let reply = self
            .routing
            .on_shard(ticket.shard, RETRY_FOR, Duration::ZERO, |mut c| {
                let wire = wire.clone();
                async move {
                    if renew {
                        c.renew_invisible(wire).await
                    } else {
                        c.change_invisible(wire).await
                    }
                }
            })
            .await?;
        Ok(ticket_from_wire(Some(reply))?)
    }
}

#[async_trait]
impl StoreApi for RemoteStore {
    async fn append(&self, req: AppendRequest) -> Result<Vec<AppendOutcome>, StoreError> {
        // Concurrent appends to one shard share calls (see `sends`).
        batched::call::<sends::Appends>(&self.routing, req.shard, req).await
    }

    async fn pop(&self, req: PopRequest) -> Result<Vec<Delivery>, StoreError> {
        let deadline = Instant::now() + req.wait.min(Duration::from_secs(3600));
        let mut first: Option<ShardId> = None;
        loop {
            // Take what the first shard (in turn, or the one that said it has something) holds.
            let mut order = self.routing.shards_in_turn(&req.shards);
            if let Some(s) = first.take() {
                order.retain(|&o| o != s);
                order.insert(0, s);
            }
            let mut failure = None;
            let mut answered = 0;
            for &shard in &order {
                // A zero-wait receive still gets a moment per shard to find its leader.
                let budget = deadline
                    .saturating_duration_since(Instant::now())
                    .clamp(FIRST_BACKOFF, RECEIVE_RETRY_FOR);
                match self.routing.pop_on(shard, &req, budget).await {
                    Ok(deliveries) if !deliveries.is_empty() => return Ok(deliveries),
                    Ok(_) => answered += 1,
                    Err(err) if err.is_retryable() => {
                        failure.get_or_insert(err);
                    }
                    Err(err) => return Err(err),
                }
            }
            if answered == 0
                && let Some(err) = failure
            {
                return Err(err);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            // Wait on every shard at once; receive from the first that has something.
            let waits = order.iter().map(|&shard| {
                let req = &req;
                Box::pin(async move { (shard, self.routing.await_on(shard, req, left).await) })
            });
            let mut pending: Vec<_> = waits.collect();
            let mut ready = None;
            while !pending.is_empty() {
                let ((shard, result), _, rest) = futures::future::select_all(pending).await;
                pending = rest;
                match result {
                    Ok(true) => {
                        ready = Some(shard);
                        break;
                    }
                    Ok(false) => {}
                    // A shard that cannot be reached now is looked at again next round.
                    Err(_) => {}
                }
            }
            match ready {
                Some(shard) => first = Some(shard),
                None if Instant::now() >= deadline => return Ok(Vec::new()),
                // Every wait failed early (leaders moving): pause before the next round.
                None => tokio::time::sleep(FIRST_BACKOFF.min(left)).await,
            }
        }
    }

    async fn ack(&self, ticket: &ReceiptTicket) -> Result<(), StoreError> {
        // Concurrent acks of one shard share calls (see `acks`).
        batched::call::<acks::Acks>(&self.routing, ticket.shard, ticket.clone()).await
    }

    async fn change_invisible(
        &self,
        ticket: &ReceiptTicket,
        invisible: Duration,
    ) -> Result<ReceiptTicket, StoreError> {
        self.make_invisible(ticket, invisible, false).await
    }

    async fn renew_invisible(
        &self,
        ticket: &ReceiptTicket,
        invisible: Duration,
    ) -> Result<ReceiptTicket, StoreError> {
        self.make_invisible(ticket, invisible, true).await
    }

    async fn dead_letter(&self, ticket: &ReceiptTicket) -> Result<(), StoreError> {
        let wire = pb::TicketRequest {
            ticket: Some(ticket_to_wire(ticket)),
        };
        self.routing
            .on_shard(ticket.shard, RETRY_FOR, Duration::ZERO, |mut c| {
                let wire = wire.clone();
                async move { c.dead_letter(wire).await }
            })
            .await
            .map(|_| ())
    }

    async fn pull(&self, req: PullRequest) -> Result<Pulled, StoreError> {
        let wire = pull_to_wire(&req);
        let reply = self
            .routing
            .on_shard(req.shard, RETRY_FOR, req.wait, |mut c| {
                let wire = wire.clone();
                async move { c.pull(wire).await }
            })
            .await?;
        pulled_from_wire(reply).map_err(StoreError::from)
    }

    async fn lookup(&self, req: &LookupRequest) -> Result<Vec<FoundMessage>, StoreError> {
        let mut found = Vec::new();
        for shard in self.routing.scope(&req.shards) {
            let wire = lookup_to_wire(req, shard);
            let reply = self
                .routing
                .on_shard(shard, RETRY_FOR, Duration::ZERO, |mut c| {
                    let wire = wire.clone();
                    async move { c.lookup(wire).await }
                })
                .await?;
            found.extend(found_from_wire(reply).map_err(StoreError::from)?);
        }
        found.sort_by_key(|f| f.store_timestamp_ms);
        found.truncate(req.limit as usize);
        Ok(found)
    }

    async fn recall(&self, topic: &TopicName, handle: &str) -> Result<(), StoreError> {
        let shard = crate::store_api::leading_shard(handle)
            .ok_or_else(|| StoreError::MessageNotFound(handle.to_owned()))?;
        let wire = pb::RecallRequest {
            topic: topic.as_str().to_owned(),
            handle: handle.to_owned(),
        };
        self.routing
            .on_shard(shard, RETRY_FOR, Duration::ZERO, |mut c| {
                let wire = wire.clone();
                async move { c.recall(wire).await }
            })
            .await
            .map(|_| ())
    }

    async fn end_transaction(
        &self,
        topic: &TopicName,
        transaction_id: &str,
        resolution: TransactionResolution,
    ) -> Result<(), StoreError> {
        let shard = crate::store_api::leading_shard(transaction_id)
            .ok_or_else(|| StoreError::TransactionNotFound(transaction_id.to_owned()))?;
        let wire = pb::EndTransactionRequest {
            topic: topic.as_str().to_owned(),
            transaction_id: transaction_id.to_owned(),
            resolution: resolution_to_wire(resolution) as i32,
        };
        self.routing
            .on_shard(shard, RETRY_FOR, Duration::ZERO, |mut c| {
                let wire = wire.clone();
                async move { c.end_transaction(wire).await }
            })
            .await
            .map(|_| ())
    }

    /// Asks each shard in scope in turn; a shard that fails (an election, a store too old to
    /// know the call) is skipped, and its checks are asked for again at the next poll.
    async fn transaction_checks(
        &self,
        req: &TransactionCheckRequest,
    ) -> Result<Vec<TransactionCheck>, StoreError> {
        let topics: Vec<String> = req.topics.iter().map(|t| t.as_str().to_owned()).collect();
        let mut checks = Vec::new();
        let mut failed = None;
        for shard in self.routing.scope(&req.shards) {
            let max = req
                .max
                .saturating_sub(u32::try_from(checks.len()).unwrap_or(u32::MAX));
            if max == 0 {
                break;
            }
            let wire = pb::TransactionChecksRequest {
                topics: topics.clone(),
                shard,
                max,
            };
            let reply = self
                .routing
                .on_shard(shard, RECEIVE_RETRY_FOR, Duration::ZERO, |mut c| {
                    let wire = wire.clone();
                    async move { c.transaction_checks(wire).await }
                })
                .await;
            match reply {
                Ok(reply) => {
                    for check in reply.checks {
                        checks.push(check_from_wire(check)?);
                    }
                }
                Err(err) => failed = Some(err),
            }
        }
        match failed {
            Some(err) if checks.is_empty() => Err(err),
            _ => Ok(checks),
        }
    }

    async fn reset_offset(
        &self,
        group: &GroupName,
        topic: &TopicName,
        queue_id: u32,
        shard: ShardId,
        to: OffsetTarget,
    ) -> Result<u64, StoreError> {
        let (to, at_ms, offset) = crate::store_wire::offset_target_to_wire(to);
        let wire = pb::ResetOffsetRequest {
            group: group.as_str().to_owned(),
            topic: topic.as_str().to_owned(),
            queue_id,
            shard,
            to,
            at_ms,
            offset,
        };
        // Retried like the other calls: a reset that lands twice puts the group at the same
        // place (for `Latest`, the end as it is then).
        let reply = self
            .routing
            .on_shard(shard, RETRY_FOR, Duration::ZERO, |mut c| {
                let wire = wire.clone();
                async move { c.reset_offset(wire).await }
            })
            .await?;
        Ok(reply.offset)
    }

    async fn offset_at(
        &self,
        topic: &TopicName,
        queue_id: u32,
        shard: ShardId,
        at_ms: i64,
    ) -> Result<u64, StoreError> {
        let wire = pb::OffsetAtRequest {
            topic: topic.as_str().to_owned(),
            queue_id,
            shard,
            at_ms,
        };
        let reply = self
            .routing
            .on_shard(shard, RETRY_FOR, Duration::ZERO, |mut c| {
                let wire = wire.clone();
                async move { c.offset_at(wire).await }
            })
            .await?;
        Ok(reply.offset)
    }

    async fn queue_stats(
        &self,
        topic: &TopicName,
        group: Option<&GroupName>,
        shards: &[ShardId],
    ) -> Result<Vec<QueueStats>, StoreError> {
        let wire = pb::QueueStatsRequest {
            topic: topic.as_str().to_owned(),
            group: group.map(|g| g.as_str().to_owned()),
            ..Default::default()
        };
        self.queue_stats_wire(wire, shards).await
    }

    async fn group_queue_stats(
        &self,
        topic: &TopicName,
        group: &GroupConfig,
        shards: &[ShardId],
    ) -> Result<Vec<QueueStats>, StoreError> {
        let (group_start, group_start_ms) = group_start_to_wire(group.start);
        let wire = pb::QueueStatsRequest {
            topic: topic.as_str().to_owned(),
            group: Some(group.name.as_str().to_owned()),
            group_created_ms: Some(group.created_at_ms),
            group_start,
            group_start_ms,
            shard: 0,
        };
        self.queue_stats_wire(wire, shards).await
    }

    async fn drop_topic(
        &self,
        topic: &TopicName,
        drop_id: u64,
        shards: &[ShardId],
    ) -> Result<(), StoreError> {
        for shard in self.routing.scope(shards) {
            let wire = pb::DropTopicRequest {
                topic: topic.as_str().to_owned(),
                shard,
                drop_id,
            };
            self.routing
                .on_shard(shard, RETRY_FOR, Duration::ZERO, |mut c| {
                    let wire = wire.clone();
                    async move { c.drop_topic(wire).await }
                })
                .await?;
        }
        Ok(())
    }

    async fn set_topic_retention(
        &self,
        topic: &TopicName,
        retention_ms: Option<u64>,
        revision: u64,
        shards: &[ShardId],
    ) -> Result<(), StoreError> {
        for shard in self.routing.scope(shards) {
            let wire = pb::SetTopicRetentionRequest {
                topic: topic.as_str().to_owned(),
                shard,
                retention_ms,
                revision,
            };
            self.routing
                .on_shard(shard, RETRY_FOR, Duration::ZERO, |mut c| {
                    let wire = wire.clone();
                    async move { c.set_topic_retention(wire).await }
                })
                .await?;
        }
        Ok(())
    }

    async fn drop_group(
        &self,
        group: &GroupName,
        drop: GroupDropId,
        shards: &[ShardId],
    ) -> Result<(), StoreError> {
        let targets = if drop.id == 0 {
            // An older controller's deletion names no shards: every one a topic has queues on
            // (the caller's) and every configured one.
            let mut all = self.routing.scope(&[]);
            all.extend_from_slice(shards);
            self.routing.scope(&all)
        } else if shards.is_empty() {
            // A recorded drop without shards: none of them exists any more.
            Vec::new()
        } else {
            self.routing.scope(shards)
        };
        for shard in targets {
            let wire = pb::DropGroupRequest {
                group: group.as_str().to_owned(),
                shard,
                drop_id: drop.id,
                drop_floor: drop.floor,
            };
            self.routing
                .on_shard(shard, RETRY_FOR, Duration::ZERO, |mut c| {
                    let wire = wire.clone();
                    async move { c.drop_group(wire).await }
                })
                .await?;
        }
        Ok(())
    }

    async fn open_shard(
        &self,
        node: u64,
        shard: ShardId,
        replicas: &BTreeMap<u64, String>,
        mode: OpenMode,
    ) -> Result<(), StoreError> {
        let wire = open_shard_to_wire(shard, replicas, mode);
        self.routing
            .on_node(
                node,
                format!("open shard {shard}"),
                ATTEMPT,
                |mut c| async move { c.open_shard(wire).await },
            )
            .await
    }

    async fn change_members(
        &self,
        shard: ShardId,
        replicas: &BTreeMap<u64, String>,
    ) -> Result<(), StoreError> {
        let wire = change_members_to_wire(shard, replicas);
        self.routing
            .on_shard(shard, TRANSFER_FOR, MEMBERS_EXTRA, |mut c| {
                let wire = wire.clone();
                async move { c.change_members(wire).await }
            })
            .await?;
        Ok(())
    }

    async fn remove_shard(&self, node: u64, shard: ShardId) -> Result<(), StoreError> {
        let wire = pb::RemoveShardRequest { shard, node };
        // The node waits for the replica's tasks and files to go (it finishes even when this
        // call gives up).
        let within = ATTEMPT + MEMBERS_EXTRA;
        self.routing
            .on_node(
                node,
                format!("remove shard {shard}"),
                within,
                |mut c| async move { c.remove_shard(wire).await },
            )
            .await
    }

    fn shard_replicas(&self) -> BTreeMap<ShardId, Vec<u64>> {
        self.routing.map.shards.clone()
    }

    async fn node_status(&self) -> Vec<StoreNodeReport> {
        let nodes = self.routing.nodes();
        ask_each(
            &nodes.clients,
            &nodes.addrs,
            |mut c| async move { c.node_status(pb::Empty {}).await },
            shard_members_from_wire,
        )
        .await
    }

    async fn tier_status(&self) -> Vec<crate::cluster_status::StoreTierReport> {
        let nodes = self.routing.nodes();
        ask_each(
            &nodes.clients,
            &nodes.addrs,
            |mut c| async move { c.tier_status(pb::Empty {}).await },
            |reply: pb::TierStatusReply| {
                Ok(reply
                    .shards
                    .into_iter()
                    .map(crate::cluster_status::ShardTier::from_wire)
                    .collect())
            },
        )
        .await
    }

    async fn transfer_leader(&self, shard: ShardId, to: u64) -> Result<(), StoreError> {
        // The shard's leader checks the target: the map's members of a configured shard may be
        // out of date (the controller moves its replicas, ADR 0032).
        let wire = pb::TransferLeaderRequest { shard, to };
        self.routing
            .on_shard(shard, TRANSFER_FOR, TRANSFER_FOR, |mut c| async move {
                c.transfer_leader(wire).await
            })
            .await?;
        self.routing.leaders.lock().insert(shard, to);
        Ok(())
    }
}

fn shard_members_from_wire(reply: pb::NodeStatusReply) -> Result<Vec<ShardMember>, String> {
    reply
        .shards
        .into_iter()
        .map(|m| {
            let status = m
                .status
                .ok_or_else(|| format!("shard {} reported without a status", m.shard))?;
            let retention = m
                .retention
                .map(|r| {
                    r.topics
                        .into_iter()
                        .map(|t| {
                            let topic = TopicName::new(&t.topic).map_err(|e| {
                                format!("shard {} reported a topic retention: {e}", m.shard)
                            })?;
                            Ok((topic, t.retention_ms))
                        })
                        .collect::<Result<BTreeMap<_, _>, String>>()
                })
                .transpose()?;
            Ok(ShardMember {
                shard: m.shard,
                status: member_from_wire(status)?,
                retention,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn learnt_store_nodes_are_added_moved_and_dropped() {
        let store = RemoteStore::new(ClusterMap {
            stores: [(1, "s1:7000".to_owned())].into(),
            shards: [(0, vec![1])].into(),
        })
        .expect("a valid map");
        let listed: BTreeMap<u64, String> =
            [(1, "s1:7000".to_owned()), (4, "s4:7000".to_owned())].into();
        assert_eq!(store.learn_stores(&listed), 1);
        assert_eq!(store.learn_stores(&listed), 0);
        assert_eq!(store.store_addrs(), listed);
        // The learnt node is asked for its status like the configured ones.
        let nodes: Vec<u64> = store.node_status().await.iter().map(|r| r.node).collect();
        assert_eq!(nodes, vec![1, 4]);
        // A node that moved gets a new address; a configured node keeps the map's.
        let moved: BTreeMap<u64, String> = [
            (1, "elsewhere:7000".to_owned()),
            (4, "10.0.0.4:7000".to_owned()),
        ]
        .into();
        assert_eq!(store.learn_stores(&moved), 1);
        assert_eq!(
            store.store_addrs(),
            [(1, "s1:7000".to_owned()), (4, "10.0.0.4:7000".to_owned())].into()
        );
        // One no longer listed (removed) is dropped, never one of the map; an address that
        // is not host:port is skipped.
        store.routing.leaders.lock().extend([(7, 4), (0, 1)]);
        assert_eq!(store.learn_stores(&[(5, "no port".to_owned())].into()), 1);
        assert_eq!(store.store_addrs(), [(1, "s1:7000".to_owned())].into());
        // A shard last led from the dropped node forgets it; the others keep theirs.
        assert_eq!(store.known_leader(7), None);
        assert_eq!(store.known_leader(0), Some(1));
    }

    /// A configured shard is looked for on the members the map lists first, then on every other
    /// node known (the controller may have moved it there, ADR 0032); a placed shard on every
    /// node known.
    #[tokio::test]
    async fn shards_are_looked_for_beyond_the_members_the_map_lists() {
        let store = RemoteStore::new(ClusterMap {
            stores: [(1, "s1:7000".to_owned()), (3, "s3:7000".to_owned())].into(),
            shards: [(0, vec![3, 1])].into(),
        })
        .expect("a valid map");
        assert_eq!(store.routing.candidates(0), vec![3, 1]);
        store.learn_stores(&[(2, "s2:7000".to_owned()), (4, "s4:7000".to_owned())].into());
        assert_eq!(store.routing.candidates(0), vec![3, 1, 2, 4]);
        assert_eq!(store.routing.candidates(9), vec![1, 2, 3, 4]);
    }
}

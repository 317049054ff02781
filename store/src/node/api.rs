//! The store's [`StoreApi`]: what a proxy in the same process calls (standalone), each call on
//! the shards this node holds. Over the network the store RPC (`service`) serves the same
//! operations shard by shard.

use super::*;
use vela_proto::GroupDropId;
use vela_proto::lookup::{FoundMessage, LookupRequest};

/// The apply version from which a renewal keeps the delivery id (`RenewInvisible`).
const RENEW_APPLY_VERSION: u32 = 10;
/// The apply version from which a delay message can be recalled (`Recall`).
const RECALL_APPLY_VERSION: u32 = 11;

#[async_trait]
impl StoreApi for Store {
    async fn lookup(&self, req: &LookupRequest) -> Result<Vec<FoundMessage>, StoreError> {
        let mut found = Vec::new();
        for id in self.shards().keys() {
            if !req.shards.is_empty() && !req.shards.contains(id) {
                continue;
            }
            match self.lookup_shard(*id, req).await {
                Ok(more) => found.extend(more),
                // Another node leads it; a cluster's proxies ask that one.
                Err(StoreError::NotLeader { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        found.sort_by_key(|f| f.store_timestamp_ms);
        found.truncate(req.limit as usize);
        Ok(found)
    }

    async fn append(&self, req: AppendRequest) -> Result<Vec<AppendOutcome>, StoreError> {
        let local = self.shard(req.shard)?;
        self.check_append(&req)?;
        let spans = self.append_spans(&req);
        let _admitted = local.shard.fairness.produce().await;
        // Concurrent appends to the shard share Raft entries (see `shard::coalesce`).
        let result = local
            .appends
            .append(req.client_id, req.topic, req.queue_id, req.messages)
            .await;
        super::spans::end_append_spans(spans, &result);
        result
    }

    async fn append_many(
        &self,
        reqs: Vec<AppendRequest>,
    ) -> Vec<Result<Vec<AppendOutcome>, StoreError>> {
        let checked = reqs
            .into_iter()
            .map(|req| self.check_append(&req).map(|()| req))
            .collect();
        vela_proto::store_api::answer_each(checked, |valid| async move {
            let count = valid.len();
            // The appends by shard, each with its place among the valid ones.
            let mut by_shard: BTreeMap<ShardId, Vec<(usize, AppendRequest)>> = BTreeMap::new();
            for (at, req) in valid.into_iter().enumerate() {
                by_shard.entry(req.shard).or_default().push((at, req));
            }
            let per_shard = by_shard.into_iter().map(|(shard, appends)| async move {
                let local = match self.shard(shard) {
                    Ok(local) => local,
                    Err(err) => {
                        return appends
                            .into_iter()
                            .map(|(at, _)| (at, Err(err.clone())))
                            .collect::<Vec<_>>();
                    }
                };
                let _admitted = local.shard.fairness.produce().await;
                let spans: Vec<_> = appends.iter().map(|(_, r)| self.append_spans(r)).collect();
                let (places, appends): (Vec<usize>, Vec<_>) = appends
                    .into_iter()
                    .map(|(at, r)| (at, (r.client_id, r.topic, r.queue_id, r.messages)))
                    .unzip();
                // Queued together, so they go out in the same entries.
                let answers = local.appends.append_many(appends).await;
                for (spans, answer) in spans.into_iter().zip(&answers) {
                    super::spans::end_append_spans(spans, answer);
                }
                places.into_iter().zip(answers).collect()
            });
            let mut results: Vec<Result<Vec<AppendOutcome>, StoreError>> = (0..count)
                .map(|_| Err(StoreError::Internal("an append went unanswered".into())))
                .collect();
            for (at, result) in futures::future::join_all(per_shard)
                .await
                .into_iter()
                .flatten()
            {
                results[at] = result;
            }
            results
        })
        .await
    }

    async fn pop(&self, req: PopRequest) -> Result<Vec<Delivery>, StoreError> {
        let shards = self.shards_in_turn()?;
        self.pop_from(&shards, req).await
    }

    async fn ack(&self, ticket: &ReceiptTicket) -> Result<(), StoreError> {
        let local = self.shard(ticket.shard)?;
        let _consuming = local.shard.fairness.consume_for(&ticket.group, 1);
        let delivery = delivery_ref(ticket);
        // Cheap rejection of handles that are already dead; apply re-checks anyway. The state
        // may be behind (a new leader that has not applied what earlier leaders committed, or a
        // deposed one that does not know it yet), so a rejection is confirmed after a read
        // barrier: a live handle is never refused for want of a log entry this node lacks.
        let dead = || {
            local
                .shard
                .shared
                .applied
                .read()
                .state
                .current_delivery(&delivery)
                .is_none()
        };
        self.check_leader(&local.shard)?;
        if dead() {
            self.read_barrier(&local.shard).await?;
            if dead() {
                return Err(StoreError::StaleReceipt(delivery.to_string()));
            }
        }
        let (reply, answer) = oneshot::channel();
        local
            .acks
            .send(PendingAck { delivery, reply })
            .await
            .map_err(|_| StoreError::Unavailable("store is shutting down".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("store is shutting down".into()))?
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
        let shard = &self.shard(ticket.shard)?.shard;
        let _consuming = shard.fairness.consume_for(&ticket.group, 1);
        let command = StoreCommand::DeadLetter {
            delivery: delivery_ref(ticket),
            now_ms: self.clock.now_ms(),
        };
        match shard.write(command).await? {
            CommandResponse::DeadLettered(result) => result.map_err(to_store_error),
            other => Err(unexpected("dead_letter", &other)),
        }
    }

    async fn pull(&self, req: PullRequest) -> Result<Pulled, StoreError> {
        self.pull_shard(&req).await
    }

    async fn recall(&self, topic: &TopicName, handle: &str) -> Result<(), StoreError> {
        let not_found = || StoreError::MessageNotFound(handle.to_owned());
        let (shard, timer) = crate::state::parse_recall_handle(handle).ok_or_else(not_found)?;
        let local = match self.shard(shard) {
            Ok(local) => local,
            Err(err @ StoreError::NotLeader { .. }) => return Err(err),
            Err(_) => return Err(not_found()),
        };
        let version = local.shard.shared.applied.read().state.apply_version();
        if version < RECALL_APPLY_VERSION {
            return Err(StoreError::Unavailable(format!(
                "recall needs apply version {RECALL_APPLY_VERSION}; shard {shard} runs \
                 {version} until every replica runs a build that knows it"
            )));
        }
        let command = StoreCommand::Recall {
            topic: topic.clone(),
            timer,
        };
        match local.shard.write(command).await? {
            CommandResponse::Recalled(result) => result.map_err(to_store_error),
            other => Err(unexpected("recall", &other)),
        }
    }

    async fn end_transaction(
        &self,
        topic: &TopicName,
        transaction_id: &str,
        resolution: TransactionResolution,
    ) -> Result<(), StoreError> {
        let not_found = || StoreError::TransactionNotFound(transaction_id.to_owned());
        let shard = vela_proto::store_api::leading_shard(transaction_id).ok_or_else(not_found)?;
        // A replicated node that does not hold the shard says NotLeader: the shard may be
        // placed on other nodes (ADR 0013).
        let local = match self.shard(shard) {
            Ok(local) => local,
            Err(err @ StoreError::NotLeader { .. }) => return Err(err),
            Err(_) => return Err(not_found()),
        };
        let command = StoreCommand::EndTransaction {
            topic: topic.clone(),
            transaction_id: transaction_id.to_owned(),
            resolution: match resolution {
                TransactionResolution::Commit => TransactionEnd::Commit,
                TransactionResolution::Rollback => TransactionEnd::Rollback,
            },
            now_ms: self.clock.now_ms(),
        };
        match local.shard.write(command).await? {
            CommandResponse::TransactionEnded(result) => result.map_err(to_store_error),
            other => Err(unexpected("end_transaction", &other)),
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
        let local = self.shard(shard)?;
        self.reset_on(&local.shard, group, topic, queue_id, to)
            .await
    }

    async fn offset_at(
        &self,
        topic: &TopicName,
        queue_id: u32,
        shard: ShardId,
        at_ms: i64,
    ) -> Result<u64, StoreError> {
        let local = self.shard(shard)?;
        scoped::offset_on(&local.shard, topic, queue_id, at_ms)
    }

    // In process the store covers every shard it leads, whatever the caller names.
    async fn transaction_checks(
        &self,
        req: &TransactionCheckRequest,
    ) -> Result<Vec<TransactionCheck>, StoreError> {
        let mut checks = Vec::new();
        for local in self.shards().values() {
            let max = usize::try_from(req.max).unwrap_or(usize::MAX) - checks.len();
            if max == 0 {
                break;
            }
            if self.replicated && !local.shard.raft.is_leader() {
                continue;
            }
            checks.extend(self.checks_on(&local.shard, &req.topics, max).await?);
        }
        Ok(checks)
    }

    async fn group_queue_stats(
        &self,
        topic: &TopicName,
        group: &vela_proto::domain::GroupConfig,
        _shards: &[ShardId],
    ) -> Result<Vec<QueueStats>, StoreError> {
        let mut stats: Vec<QueueStats> = self
            .shards()
            .values()
            .flat_map(|l| {
                let applied = l.shard.shared.applied.read();
                let rule = self.start_rule(&applied.state, group.start, group.created_at_ms);
                applied
                    .state
                    .queue_stats_with(topic, Some(&group.name), Some(rule))
            })
            .collect();
        stats.sort_by_key(|s| s.queue_id);
        Ok(stats)
    }

    // In process the store covers every shard it holds, whatever the caller names.
    async fn queue_stats(
        &self,
        topic: &TopicName,
        group: Option<&GroupName>,
        _shards: &[ShardId],
    ) -> Result<Vec<QueueStats>, StoreError> {
        let mut stats: Vec<QueueStats> = self
            .shards()
            .values()
            .flat_map(|l| {
                l.shard
                    .shared
                    .applied
                    .read()
                    .state
                    .queue_stats(topic, group)
            })
            .collect();
        stats.sort_by_key(|s| s.queue_id);
        Ok(stats)
    }

    async fn drop_topic(
        &self,
        topic: &TopicName,
        drop_id: u64,
        _shards: &[ShardId],
    ) -> Result<(), StoreError> {
        for local in self.shards().values() {
            let command = super::scoped::drop_command(&local.shard, topic, drop_id);
            match local.shard.write(command.clone()).await? {
                CommandResponse::Dropped => {}
                other => return Err(unexpected(command.kind(), &other)),
            }
        }
        Ok(())
    }

    async fn set_topic_retention(
        &self,
        topic: &TopicName,
        retention_ms: Option<u64>,
        revision: u64,
        _shards: &[ShardId],
    ) -> Result<(), StoreError> {
        let shards: Vec<ShardId> = self.shards().keys().copied().collect();
        for shard in shards {
            self.set_topic_retention_shard(shard, topic, retention_ms, revision)
                .await?;
        }
        Ok(())
    }

    async fn drop_group(
        &self,
        group: &GroupName,
        drop: GroupDropId,
        _shards: &[ShardId],
    ) -> Result<(), StoreError> {
        self.drop_group_everywhere(group, drop.id, drop.floor).await
    }

    /// In process only this node itself can be asked; the node's Raft transport must learn of
    /// the shard separately (a store node's gRPC service registers it, see `StoreService`).
    async fn open_shard(
        &self,
        node: u64,
        shard: ShardId,
        replicas: &BTreeMap<u64, String>,
        mode: vela_proto::OpenMode,
    ) -> Result<(), StoreError> {
        self.this_node(node)?;
        self.open_shard_here(shard, replicas.clone(), mode)
            .await
            .map(|_| ())
    }

    async fn change_members(
        &self,
        shard: ShardId,
        replicas: &BTreeMap<u64, String>,
    ) -> Result<(), StoreError> {
        Store::change_members(self, shard, replicas).await
    }

    async fn remove_shard(&self, node: u64, shard: ShardId) -> Result<(), StoreError> {
        self.this_node(node)?;
        Store::remove_shard(self, shard).await
    }

    fn shard_replicas(&self) -> BTreeMap<ShardId, Vec<u64>> {
        self.shards()
            .iter()
            .map(|(&id, local)| {
                let metrics = local.shard.raft.metrics().borrow_watched().clone();
                (
                    id,
                    metrics.membership_config.membership().voter_ids().collect(),
                )
            })
            .collect()
    }

    async fn node_status(&self) -> Vec<StoreNodeReport> {
        vec![NodeReport {
            node: self.config.node_id,
            addr: "in-process".to_owned(),
            report: Ok(self.member_statuses()),
        }]
    }

    async fn tier_status(&self) -> Vec<vela_proto::cluster_status::StoreTierReport> {
        vec![NodeReport {
            node: self.config.node_id,
            addr: "in-process".to_owned(),
            report: Ok(Store::tier_status(self)),
        }]
    }

    async fn transfer_leader(&self, shard: ShardId, to: u64) -> Result<(), StoreError> {
        Store::transfer_leader(self, shard, to).await
    }
}

impl Store {
    /// Makes a delivered message invisible for `invisible` from now: a change, which issues a
    /// new delivery id, or with `renew` a renewal keeping it (from apply version
    /// [`RENEW_APPLY_VERSION`]; before, refused as unavailable).
    async fn make_invisible(
        &self,
        ticket: &ReceiptTicket,
        invisible: Duration,
        renew: bool,
    ) -> Result<ReceiptTicket, StoreError> {
        let shard = &self.shard(ticket.shard)?.shard;
        let version = shard.shared.applied.read().state.apply_version();
        if renew && version < RENEW_APPLY_VERSION {
            return Err(StoreError::Unavailable(format!(
                "renewing keeps the receipt handle from apply version {RENEW_APPLY_VERSION}; \
                 shard {} runs {version} until every replica runs a build that knows it",
                ticket.shard
            )));
        }
        let _consuming = shard.fairness.consume_for(&ticket.group, 1);
        let (delivery, invisible_ms, now_ms) = (
            delivery_ref(ticket),
            duration_ms(invisible),
            self.clock.now_ms(),
        );
        let command = if renew {
            StoreCommand::RenewInvisible {
                delivery,
                invisible_ms,
                now_ms,
            }
        } else {
            StoreCommand::ChangeInvisible {
                delivery,
                invisible_ms,
                now_ms,
            }
        };
        let kind = command.kind();
        match shard.write(command).await? {
            CommandResponse::InvisibilityChanged(Ok(changed)) => Ok(ReceiptTicket {
                delivery_id: changed.delivery_id,
                visible_at_ms: changed.visible_at_ms,
                ..ticket.clone()
            }),
            CommandResponse::InvisibilityChanged(Err(err)) => Err(to_store_error(err)),
            other => Err(unexpected(kind, &other)),
        }
    }
}

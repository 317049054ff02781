//! The fake store: an append-only log per queue, POP with per-delivery ids, long polling on a
//! notification.

use super::*;

struct Stored {
    record: MessageRecord,
    store_timestamp_ms: i64,
    /// Of a committed transaction.
    transaction_id: Option<String>,
}

#[derive(Default)]
struct StoreState {
    queues: BTreeMap<(TopicName, u32), Vec<Stored>>,
    /// `(group, topic, queue, offset)` -> current delivery id.
    inflight: HashMap<(GroupName, TopicName, u32, u64), u64>,
    acked: HashMap<(GroupName, TopicName, u32, u64), ()>,
    attempts: HashMap<(GroupName, TopicName, u32, u64), u32>,
    /// Transaction id -> (topic, queue, record) of half messages.
    half: HashMap<String, (TopicName, u32, MessageRecord)>,
    /// Recall handles of delay messages: their topic and message id.
    recallable: HashMap<String, (TopicName, String)>,
    /// Half messages handed out for a check-back (each is due at once, and handed out once).
    checked: std::collections::HashSet<String>,
    dead_lettered: Vec<(GroupName, u64)>,
    /// Topics' own retentions (ms), as the admin set them.
    retention: BTreeMap<TopicName, u64>,
    /// While set, drops fail as they do when a shard has no leader.
    refuse_drops: bool,
    /// Every drop that took effect: (topic, drop id).
    drops: Vec<(TopicName, u64)>,
    /// Every group drop that took effect: (group, drop id).
    group_drops: Vec<(GroupName, u64)>,
}

#[derive(Default)]
pub struct FakeStore {
    state: Mutex<StoreState>,
    appended: Notify,
    next_delivery: AtomicU64,
    /// Number of `append` calls, to check that a request's messages go as one append.
    pub append_calls: AtomicU64,
    /// The client id the last append named.
    pub last_client_id: Mutex<Option<vela_proto::ClientId>>,
    /// The shards the last receive named.
    pub last_pop_shards: Mutex<Option<Vec<ShardId>>>,
    /// The last transaction check request.
    pub last_check_request: Mutex<Option<TransactionCheckRequest>>,
    /// Every change of invisibility: (offset, new invisibility).
    pub invisibility_changes: Mutex<Vec<(u64, Duration)>>,
    /// Every reset: (group, topic, queue, target).
    pub resets: Mutex<Vec<(GroupName, TopicName, u32, vela_proto::OffsetTarget)>>,
}

impl FakeStore {
    /// Makes topic drops fail (`Unavailable`) or succeed again.
    pub fn refuse_drops(&self, refuse: bool) {
        self.state.lock().refuse_drops = refuse;
    }

    /// Every drop that took effect: (topic, drop id).
    pub fn drops(&self) -> Vec<(TopicName, u64)> {
        self.state.lock().drops.clone()
    }

    /// Every group drop that took effect: (group, drop id).
    pub fn group_drops(&self) -> Vec<(GroupName, u64)> {
        self.state.lock().group_drops.clone()
    }

    /// The retention `topic` was given, in ms.
    pub fn retention_of(&self, topic: &TopicName) -> Option<u64> {
        self.state.lock().retention.get(topic).copied()
    }

    pub fn dead_lettered(&self) -> usize {
        self.state.lock().dead_lettered.len()
    }

    fn try_pop(&self, req: &PopRequest) -> Vec<Delivery> {
        let now_ms = vela_proto::SystemClock.now_ms();
        let mut state = self.state.lock();
        let keys: Vec<(TopicName, u32)> = state
            .queues
            .keys()
            .filter(|(t, q)| {
                *t == req.topic
                    && (req.queues == QueueSelector::All || req.queues == QueueSelector::One(*q))
            })
            .cloned()
            .collect();
        let mut out = Vec::new();
        for (topic, queue_id) in keys {
            let len = state
                .queues
                .get(&(topic.clone(), queue_id))
                .map_or(0, Vec::len);
            for offset in 0..len as u64 {
                if out.len() as u32 >= req.max_messages {
                    return out;
                }
                let key = (req.group.clone(), topic.clone(), queue_id, offset);
                if state.acked.contains_key(&key) || state.inflight.contains_key(&key) {
                    continue;
                }
                let Some(stored) = state
                    .queues
                    .get(&(topic.clone(), queue_id))
                    .and_then(|q| q.get(offset as usize))
                else {
                    continue;
                };
                let due = stored
                    .record
                    .delivery_timestamp_ms
                    .is_none_or(|at| at <= now_ms);
                if !due
                    || !req
                        .filter
                        .matches(stored.record.tag.as_deref(), &stored.record.properties)
                {
                    continue;
                }
                let message = stored.record.clone();
                let store_timestamp_ms = stored.store_timestamp_ms;
                let transaction_id = stored.transaction_id.clone();
                let delivery_id = self.next_delivery.fetch_add(1, Ordering::Relaxed) + 1;
                state.inflight.insert(key.clone(), delivery_id);
                let attempt = state.attempts.entry(key).or_insert(0);
                *attempt += 1;
                out.push(Delivery {
                    topic: topic.clone(),
                    queue_id,
                    offset,
                    store_timestamp_ms,
                    attempt: *attempt,
                    invisible: req.invisible,
                    ticket: ReceiptTicket {
                        shard: 0,
                        group: req.group.clone(),
                        topic: topic.clone(),
                        queue_id,
                        offset,
                        delivery_id,
                        visible_at_ms: 0,
                    },
                    message,
                    transaction_id,
                });
            }
        }
        out
    }

    fn current(
        &self,
        state: &StoreState,
        t: &ReceiptTicket,
    ) -> Result<(GroupName, TopicName, u32, u64), StoreError> {
        let key = (t.group.clone(), t.topic.clone(), t.queue_id, t.offset);
        match state.inflight.get(&key) {
            Some(id) if *id == t.delivery_id => Ok(key),
            _ => Err(StoreError::StaleReceipt(format!(
                "delivery {} is not current",
                t.delivery_id
            ))),
        }
    }
}

#[async_trait]
impl StoreApi for FakeStore {
    async fn append(&self, req: AppendRequest) -> Result<Vec<AppendOutcome>, StoreError> {
        self.append_calls.fetch_add(1, Ordering::Relaxed);
        *self.last_client_id.lock() = req.client_id.clone();
        let mut outcomes = Vec::new();
        {
            let mut state = self.state.lock();
            for record in req.messages {
                if record.kind == MessageKind::Transaction {
                    let txn = format!("txn-{}", record.message_id);
                    state
                        .half
                        .insert(txn.clone(), (req.topic.clone(), req.queue_id, record));
                    outcomes.push(AppendOutcome {
                        offset: None,
                        transaction_id: Some(txn),
                        recall_handle: None,
                    });
                    continue;
                }
                // Delay messages are queued at once here; each can be recalled (taken out)
                // until it is received.
                let recall_handle = (record.kind == MessageKind::Delay).then(|| {
                    let handle = format!("recall-{}", record.message_id);
                    state.recallable.insert(
                        handle.clone(),
                        (req.topic.clone(), record.message_id.clone()),
                    );
                    handle
                });
                let queue = state
                    .queues
                    .entry((req.topic.clone(), req.queue_id))
                    .or_default();
                queue.push(Stored {
                    record,
                    store_timestamp_ms: 1_800_000_000_000,
                    transaction_id: None,
                });
                outcomes.push(AppendOutcome {
                    offset: Some(queue.len() as u64 - 1),
                    transaction_id: None,
                    recall_handle,
                });
            }
        }
        self.appended.notify_waiters();
        Ok(outcomes)
    }

    async fn pop(&self, req: PopRequest) -> Result<Vec<Delivery>, StoreError> {
        *self.last_pop_shards.lock() = Some(req.shards.clone());
        let deadline = tokio::time::Instant::now() + req.wait;
        loop {
            let notified = self.appended.notified();
            let found = self.try_pop(&req);
            if !found.is_empty() {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&self, ticket: &ReceiptTicket) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        let key = self.current(&state, ticket)?;
        state.inflight.remove(&key);
        state.acked.insert(key, ());
        Ok(())
    }

    async fn change_invisible(
        &self,
        ticket: &ReceiptTicket,
        invisible: Duration,
    ) -> Result<ReceiptTicket, StoreError> {
        let mut state = self.state.lock();
        let key = self.current(&state, ticket)?;
        self.invisibility_changes
            .lock()
            .push((ticket.offset, invisible));
        let delivery_id = self.next_delivery.fetch_add(1, Ordering::Relaxed) + 1;
        state.inflight.insert(key, delivery_id);
        Ok(ReceiptTicket {
            delivery_id,
            ..ticket.clone()
        })
    }

    async fn renew_invisible(
        &self,
        ticket: &ReceiptTicket,
        invisible: Duration,
    ) -> Result<ReceiptTicket, StoreError> {
        let state = self.state.lock();
        self.current(&state, ticket)?;
        Ok(ReceiptTicket {
            visible_at_ms: ticket.visible_at_ms
                + i64::try_from(invisible.as_millis()).expect("fits"),
            ..ticket.clone()
        })
    }

    async fn dead_letter(&self, ticket: &ReceiptTicket) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        let key = self.current(&state, ticket)?;
        state.inflight.remove(&key);
        state.dead_lettered.push((key.0.clone(), key.3));
        state.acked.insert(key, ());
        Ok(())
    }

    async fn transaction_checks(
        &self,
        req: &TransactionCheckRequest,
    ) -> Result<Vec<TransactionCheck>, StoreError> {
        *self.last_check_request.lock() = Some(req.clone());
        let mut state = self.state.lock();
        let StoreState { half, checked, .. } = &mut *state;
        let mut due: Vec<TransactionCheck> = half
            .iter()
            .filter(|(id, (topic, _, _))| req.topics.contains(topic) && !checked.contains(*id))
            .map(|(id, (topic, _, record))| TransactionCheck {
                topic: topic.clone(),
                transaction_id: id.clone(),
                message: record.clone(),
                store_timestamp_ms: 1_800_000_000_000,
                check: 1,
            })
            .collect();
        due.sort_by(|a, b| a.transaction_id.cmp(&b.transaction_id));
        due.truncate(usize::try_from(req.max).unwrap_or(usize::MAX));
        checked.extend(due.iter().map(|c| c.transaction_id.clone()));
        Ok(due)
    }

    /// Reads what is stored from the offset at once (no long polling, no filter).
    async fn lookup(
        &self,
        _: &vela_proto::lookup::LookupRequest,
    ) -> Result<Vec<vela_proto::lookup::FoundMessage>, StoreError> {
        // Lookups are the store's (tested there and end to end in t29).
        Err(StoreError::Unavailable(
            "the fake store keeps no lookup index".into(),
        ))
    }

    async fn pull(
        &self,
        req: vela_proto::store_api::PullRequest,
    ) -> Result<vela_proto::store_api::Pulled, StoreError> {
        let state = self.state.lock();
        let queue = state
            .queues
            .get(&(req.topic.clone(), req.queue_id))
            .map_or(&[][..], Vec::as_slice);
        let end = queue.len() as u64;
        if req.offset > end {
            return Err(StoreError::Invalid(format!(
                "offset {} is past {end}",
                req.offset
            )));
        }
        let messages: Vec<_> = queue
            .iter()
            .enumerate()
            .skip(usize::try_from(req.offset).unwrap_or(usize::MAX))
            .take(req.max_messages as usize)
            .map(|(i, s)| vela_proto::store_api::PulledMessage {
                offset: i as u64,
                store_timestamp_ms: s.store_timestamp_ms,
                message: s.record.clone(),
            })
            .collect();
        Ok(vela_proto::store_api::Pulled {
            next_offset: req.offset + messages.len() as u64,
            messages,
            min_offset: 0,
            max_offset: end,
        })
    }

    async fn recall(&self, topic: &TopicName, handle: &str) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        let not_found = || StoreError::MessageNotFound(handle.to_owned());
        let (parked_topic, id) = state
            .recallable
            .get(handle)
            .cloned()
            .ok_or_else(not_found)?;
        if &parked_topic != topic {
            return Err(not_found());
        }
        state.recallable.remove(handle);
        for queue in state.queues.values_mut() {
            queue.retain(|s| s.record.message_id != id);
        }
        Ok(())
    }

    async fn end_transaction(
        &self,
        _topic: &TopicName,
        transaction_id: &str,
        resolution: TransactionResolution,
    ) -> Result<(), StoreError> {
        let released = {
            let mut state = self.state.lock();
            let (topic, queue_id, record) = state
                .half
                .remove(transaction_id)
                .ok_or_else(|| StoreError::TransactionNotFound(transaction_id.to_owned()))?;
            if resolution == TransactionResolution::Commit {
                state
                    .queues
                    .entry((topic, queue_id))
                    .or_default()
                    .push(Stored {
                        record,
                        store_timestamp_ms: 1,
                        transaction_id: Some(transaction_id.to_owned()),
                    });
                true
            } else {
                false
            }
        };
        if released {
            self.appended.notify_waiters();
        }
        Ok(())
    }

    async fn queue_stats(
        &self,
        topic: &TopicName,
        group: Option<&GroupName>,
        _shards: &[ShardId],
    ) -> Result<Vec<QueueStats>, StoreError> {
        let state = self.state.lock();
        Ok(state
            .queues
            .iter()
            .filter(|((t, _), _)| t == topic)
            .map(|((t, q), msgs)| {
                let max_offset = msgs.len() as u64;
                // A group that received from the queue stands at its first unacknowledged
                // offset.
                let groups = group
                    .filter(|g| {
                        state
                            .attempts
                            .keys()
                            .any(|(ag, at, aq, _)| ag == *g && at == t && aq == q)
                    })
                    .map(|g| {
                        let consumer_offset = (0..max_offset)
                            .find(|o| !state.acked.contains_key(&(g.clone(), t.clone(), *q, *o)))
                            .unwrap_or(max_offset);
                        vela_proto::GroupQueueStats {
                            group: g.clone(),
                            topic: t.clone(),
                            queue_id: *q,
                            consumer_offset,
                            inflight: 0,
                            backlog: max_offset - consumer_offset,
                        }
                    })
                    .into_iter()
                    .collect();
                QueueStats {
                    topic: t.clone(),
                    queue_id: *q,
                    min_offset: 0,
                    max_offset,
                    groups,
                }
            })
            .collect())
    }

    async fn reset_offset(
        &self,
        group: &GroupName,
        topic: &TopicName,
        queue_id: u32,
        shard: ShardId,
        to: vela_proto::OffsetTarget,
    ) -> Result<u64, StoreError> {
        use vela_proto::OffsetTarget;
        let end = self
            .state
            .lock()
            .queues
            .get(&(topic.clone(), queue_id))
            .map(|q| q.len() as u64)
            .ok_or_else(|| StoreError::QueueNotFound {
                topic: topic.clone(),
                queue_id,
            })?;
        let offset = match to {
            OffsetTarget::Earliest => 0,
            OffsetTarget::Latest => end,
            OffsetTarget::AtTime(at_ms) => self.offset_at(topic, queue_id, shard, at_ms).await?,
            OffsetTarget::Offset(offset) => offset.min(end),
        };
        self.resets
            .lock()
            .push((group.clone(), topic.clone(), queue_id, to));
        Ok(offset)
    }

    async fn offset_at(
        &self,
        topic: &TopicName,
        queue_id: u32,
        _shard: ShardId,
        at_ms: i64,
    ) -> Result<u64, StoreError> {
        let state = self.state.lock();
        let queue = state
            .queues
            .get(&(topic.clone(), queue_id))
            .ok_or_else(|| StoreError::QueueNotFound {
                topic: topic.clone(),
                queue_id,
            })?;
        Ok(queue
            .iter()
            .position(|m| m.store_timestamp_ms >= at_ms)
            .unwrap_or(queue.len()) as u64)
    }

    async fn drop_topic(
        &self,
        topic: &TopicName,
        drop_id: u64,
        _shards: &[ShardId],
    ) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        if state.refuse_drops {
            return Err(StoreError::Unavailable("shard 1 has no leader".into()));
        }
        state.drops.push((topic.clone(), drop_id));
        state.queues.retain(|(t, _), _| t != topic);
        Ok(())
    }

    async fn drop_group(
        &self,
        group: &GroupName,
        drop: vela_proto::GroupDropId,
        _shards: &[ShardId],
    ) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        if state.refuse_drops {
            return Err(StoreError::Unavailable("shard 1 has no leader".into()));
        }
        state.group_drops.push((group.clone(), drop.id));
        Ok(())
    }

    async fn set_topic_retention(
        &self,
        topic: &TopicName,
        retention_ms: Option<u64>,
        _revision: u64,
        _shards: &[ShardId],
    ) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        match retention_ms {
            Some(ms) => state.retention.insert(topic.clone(), ms),
            None => state.retention.remove(topic),
        };
        Ok(())
    }

    async fn open_shard(
        &self,
        _node: u64,
        shard: ShardId,
        _replicas: &BTreeMap<u64, String>,
        _mode: vela_proto::OpenMode,
    ) -> Result<(), StoreError> {
        Err(StoreError::Invalid(format!(
            "the fake store holds shard 0 only, not {shard}"
        )))
    }

    async fn change_members(
        &self,
        shard: ShardId,
        _replicas: &BTreeMap<u64, String>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Invalid(format!(
            "the fake store's shard {shard} has one member"
        )))
    }

    async fn remove_shard(&self, _node: u64, shard: ShardId) -> Result<(), StoreError> {
        Err(StoreError::Invalid(format!(
            "the fake store holds shard {shard} by configuration"
        )))
    }

    fn shard_replicas(&self) -> BTreeMap<ShardId, Vec<u64>> {
        BTreeMap::from([(0, vec![1])])
    }

    /// One node leading the one shard.
    async fn node_status(&self) -> Vec<StoreNodeReport> {
        vec![NodeReport {
            node: 1,
            addr: "in-process".into(),
            report: Ok(vec![ShardMember {
                shard: 0,
                status: single_leader(),
                retention: None,
            }]),
        }]
    }

    /// The one shard, leading, without a tier.
    async fn tier_status(&self) -> Vec<vela_proto::cluster_status::StoreTierReport> {
        vec![NodeReport {
            node: 1,
            addr: "in-process".into(),
            report: Ok(vec![vela_proto::cluster_status::ShardTier {
                shard: 0,
                leader: true,
                ..Default::default()
            }]),
        }]
    }

    async fn transfer_leader(&self, shard: ShardId, to: u64) -> Result<(), StoreError> {
        Err(StoreError::Invalid(format!(
            "store node {to} holds no replica of shard {shard}"
        )))
    }
}

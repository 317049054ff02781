//! The receive path: a receive long-polls the applied state of its shards, plans what to deliver
//! on the leader (so a receive that finds nothing writes nothing to the log), proposes it, and
//! reads the delivered messages back from the log.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;
use vela_proto::MessageKind;
use vela_proto::domain::{MessageFilter, SqlFilter};
use vela_proto::receipt::ReceiptTicket;
use vela_proto::store_api::{Delivery, PopRequest, QueueSelector, StoreError};

use super::{Store, duration_ms};
use crate::command::{
    CommandResponse, PickedRange, PopCommand, PoppedMessage, QueueChoice, RecordRef, StoreCommand,
    TagSubscription,
};
use crate::shard::{DamageFound, RecordReadError, Shard, unexpected};
use crate::state::{
    Availability, MAX_INFLIGHT, PopPlan, PopProbe, SqlCandidates, SqlProbe, SqlWindow,
    transaction_id,
};

impl Store {
    /// Receives from `shards` (tried in this order): the receive loop behind
    /// [`StoreApi::pop`] and the shard-scoped receives (`scoped`).
    pub(crate) async fn pop_from(
        &self,
        shards: &[Arc<Shard>],
        req: PopRequest,
    ) -> Result<Vec<Delivery>, StoreError> {
        match self.receive_loop(shards, &req, false).await? {
            Received::Delivered(deliveries) => Ok(deliveries),
            Received::Deliverable | Received::Nothing => Ok(Vec::new()),
        }
    }

    /// Waits as a receive would, until `shards` hold something for it (`Deliverable`) or
    /// its wait ends (`Nothing`); with `deliver`, receives it (`Delivered`).
    pub(crate) async fn receive_loop(
        &self,
        shards: &[Arc<Shard>],
        req: &PopRequest,
        probe_only: bool,
    ) -> Result<Received, StoreError> {
        if req.max_messages == 0 || req.max_messages > vela_proto::domain::MAX_RECEIVE_BATCH {
            return Err(StoreError::Invalid(format!(
                "receive of {} messages is outside 1..={}",
                req.max_messages,
                vela_proto::domain::MAX_RECEIVE_BATCH
            )));
        }
        // An SQL92 filter is evaluated by the leader on the messages themselves and the
        // receive carries the matches (`PopPicked`); its tag subscription is then `All`.
        let (filter, sql) = match &req.filter {
            MessageFilter::Tag(tags) => (TagSubscription::from(tags), None),
            MessageFilter::Sql(sql) => (TagSubscription::All, Some(sql)),
        };
        let queues = match req.queues {
            QueueSelector::All | QueueSelector::HighestFirst => QueueChoice::All,
            QueueSelector::One(q) => QueueChoice::One(q),
        };
        let probe = PopProbe {
            group: &req.group,
            topic: &req.topic,
            queues,
            filter: &filter,
            fifo: req.fifo,
            sql: None,
            highest_first: req.queues == QueueSelector::HighestFirst,
        };
        // A group reading a queue for the first time gets its start there first (once: a
        // queue that appears during the wait is young, where the start is its beginning, as
        // apply gives a group without one).
        for shard in shards {
            self.start_group(shard, req, queues).await?;
        }
        // Bounded so a huge wait from a remote caller cannot overflow the clock.
        let deadline = Instant::now() + req.wait.min(Duration::from_secs(3600));
        loop {
            // Register for wakeups before looking, so an append in between is not missed.
            let notifies: Vec<Arc<Notify>> = shards
                .iter()
                .map(|s| s.shared.wakeups.subscribe(&req.topic, &req.group))
                .collect();
            let mut woken: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> =
                notifies.iter().map(|n| Box::pin(n.notified())).collect();
            for w in &mut woken {
                w.as_mut().enable();
            }
            let now_ms = self.clock.now_ms();
            let mut earliest: Option<i64> = None;
            let pop = PopCommand {
                group: req.group.clone(),
                topic: req.topic.clone(),
                queues,
                max: req.max_messages,
                invisible_ms: duration_ms(req.invisible),
                filter: filter.clone(),
                fifo: req.fifo,
                max_attempts: req.max_attempts.max(1),
                now_ms,
            };
            let mut more_to_scan = false;
            for shard in shards {
                let windows = match sql {
                    Some(sql) => Some(self.evaluate_sql(shard, probe, sql).await?),
                    None => None,
                };
                let probe = PopProbe {
                    sql: sql.zip(windows.as_ref()).map(|(sql, windows)| SqlProbe {
                        expression: sql.expression(),
                        windows,
                    }),
                    ..probe
                };
                let (command, waiting) = plan_receive(shard, probe, &pop, now_ms);
                match waiting {
                    Waiting::No => {}
                    Waiting::Until(at) => earliest = Some(earliest.map_or(at, |e| e.min(at))),
                    Waiting::MoreToScan => more_to_scan = true,
                }
                let Some(command) = command else { continue };
                if probe_only {
                    return Ok(Received::Deliverable);
                }
                let _consuming = shard
                    .fairness
                    .consume_for(&req.group, req.max_messages as usize);
                let response = shard.write(command).await?;
                if let CommandResponse::Popped { dead_lettered, .. } = &response
                    && *dead_lettered > 0
                {
                    // A broadcast instance's dead letters count as its group's.
                    self.metrics.dead_lettered(
                        req.topic.as_str(),
                        req.group.dead_letter_owner().as_str(),
                        u64::from(*dead_lettered),
                    );
                }
                match response {
                    CommandResponse::Popped {
                        delivery_id,
                        messages,
                        ..
                    } if !messages.is_empty() => {
                        // Judged by the newest message: a retried old one in a batch of new
                        // ones does not make a group that keeps up look behind.
                        let age = |newest: i64| {
                            Duration::from_millis(
                                u64::try_from(now_ms.saturating_sub(newest)).unwrap_or(0),
                            )
                        };
                        if let Some(newest) = messages.iter().map(|m| m.store_ts_ms).max() {
                            let newest_first = messages
                                .iter()
                                .filter(|m| m.attempt <= 1)
                                .map(|m| m.store_ts_ms)
                                .max();
                            let pace = crate::shard::fairness::Pace::of(
                                req.max_messages as usize,
                                messages.len(),
                                newest_first.map(age),
                                req.fifo,
                            );
                            shard.fairness.note_delivered(&req.group, age(newest), pace);
                        }
                        // Pass the wake on: another receiver of the group may find more (see
                        // `TopicWakeups`).
                        for notify in &notifies {
                            notify.notify_one();
                        }
                        if let Some(client) = &req.client_id {
                            super::lookup::note_receiver(
                                shard,
                                client,
                                delivery_id,
                                now_ms,
                                &messages,
                            );
                        }
                        return match read_deliveries(shard, req, delivery_id, messages).await {
                            Ok(delivered) => Ok(Received::Delivered(delivered)),
                            Err(err) => {
                                if err.is_damage() {
                                    self.report_damage(shard, err.log_index);
                                }
                                Err(err.into())
                            }
                        };
                    }
                    // Nothing delivered (the state moved on, or the receive only parked or
                    // dead-lettered): look again right away.
                    CommandResponse::Popped { .. } => more_to_scan = true,
                    other => return Err(unexpected("pop", &other)),
                }
            }
            if more_to_scan && Instant::now() < deadline {
                // A long backlog is searched in slices, yielding between them, so one receive
                // never holds the state for long.
                tokio::task::yield_now().await;
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Received::Nothing);
            }
            let wake_at = earliest.map_or(deadline, |at| {
                let ms = u64::try_from(at.saturating_sub(self.clock.now_ms())).unwrap_or(0);
                deadline.min(now + Duration::from_millis(ms))
            });
            tokio::select! {
                _ = futures::future::select_all(woken) => {}
                _ = tokio::time::sleep_until(wake_at) => {}
                _ = self.cancel.cancelled() => return Err(StoreError::Unavailable("store is shutting down".into())),
            }
        }
    }
}

impl Store {
    /// Reads and evaluates, for an SQL92 receive on `shard`, the next messages of each queue
    /// from where its search stands (off the async workers: it reads the log).
    async fn evaluate_sql(
        &self,
        shard: &Arc<Shard>,
        probe: PopProbe<'_>,
        sql: &SqlFilter,
    ) -> Result<HashMap<u32, SqlWindow>, StoreError> {
        let candidates = {
            let applied = shard.shared.applied.read();
            if applied.state.apply_version() < SQL_APPLY_VERSION {
                return Err(StoreError::Unavailable(format!(
                    "SQL92 filters need every replica of shard {} on a build with apply \
                     version {SQL_APPLY_VERSION} (it runs {})",
                    shard.id,
                    applied.state.apply_version()
                )));
            }
            let memo = shard.shared.scan_memo.lock();
            applied
                .state
                .sql_candidates(probe, sql.expression(), &memo, SQL_WINDOW, MAX_INFLIGHT)
        };
        if candidates.is_empty() {
            return Ok(HashMap::new());
        }
        let reader = Arc::clone(shard);
        let filter = sql.clone();
        let evaluated =
            tokio::task::spawn_blocking(move || evaluate_windows(&reader, &filter, candidates))
                .await
                .map_err(|e| StoreError::Internal(format!("SQL92 evaluation failed: {e}")))?;
        evaluated.map_err(|err| {
            if err.is_damage() {
                self.report_damage(shard, err.log_index);
            }
            err.into()
        })
    }

    /// A read on this node found `shard`'s record at `log_index` damaged. The messages it
    /// holds cannot be delivered from this replica, and a replica with damaged entries must
    /// not lead or vote: the store confirms the damage and, for a placed shard with other
    /// members, sets the replica aside to be copied again from them, as after a scrub (see
    /// `damaged`). The receive that found it fails; the next finds the new leader.
    fn report_damage(&self, shard: &Arc<Shard>, log_index: u64) {
        tracing::error!(
            shard = shard.id,
            log_index,
            "a read found a damaged log record; reporting the replica"
        );
        let _ = self
            .damaged
            .send((Arc::downgrade(shard), DamageFound::Read { log_index }));
    }
}

/// Messages an SQL92 receive reads and evaluates per queue in one slice of its search.
const SQL_WINDOW: usize = 256;
/// Bytes of messages one queue's window reads at most (it stops early past this).
const SQL_WINDOW_BYTES: usize = 16 << 20;
/// Messages read from the log at a time while evaluating a window.
const SQL_READ_CHUNK: usize = 64;
/// The apply version from which a receive can carry picked offsets (`PopPicked`).
const SQL_APPLY_VERSION: u32 = 7;

/// Reads the candidates' records and evaluates `sql` on them: per queue, the window that was
/// evaluated and the offsets that match. A record retention removed meanwhile does not match.
fn evaluate_windows(
    shard: &Shard,
    sql: &SqlFilter,
    candidates: Vec<SqlCandidates>,
) -> Result<HashMap<u32, SqlWindow>, RecordReadError> {
    let mut windows = HashMap::with_capacity(candidates.len());
    for queue in candidates {
        let mut window = SqlWindow {
            to: queue.to,
            matches: Vec::new(),
        };
        let mut bytes = 0usize;
        for chunk in queue.entries.chunks(SQL_READ_CHUNK) {
            if bytes > SQL_WINDOW_BYTES {
                window.to = chunk[0].0;
                break;
            }
            let refs: Vec<RecordRef> = chunk.iter().map(|(_, r)| *r).collect();
            for ((offset, _), record) in chunk.iter().zip(shard.read_records_blocking(&refs)?) {
                let Some(record) = record else { continue };
                bytes += record.body.len();
                if sql.matches(record.tag.as_deref(), &record.properties) {
                    window.matches.push(*offset);
                }
            }
        }
        windows.insert(queue.queue_id, window);
    }
    Ok(windows)
}

/// Index entries one slice of a receive's search examines, per shard (the state's read lock is
/// held for one slice).
const SCAN_SLICE: u64 = 262_144;

/// How a receive loop ended.
pub(crate) enum Received {
    Delivered(Vec<Delivery>),
    /// Something can be delivered (the loop only looked).
    Deliverable,
    /// The wait ended with nothing to deliver.
    Nothing,
}

/// Whether a receive that delivered nothing now should wait.
enum Waiting {
    /// Nothing in flight to wait for.
    No,
    /// Until an in-flight message becomes visible again.
    Until(i64),
    /// The search is not finished: plan again without waiting.
    MoreToScan,
}

/// What a receive should propose on `shard` now, if anything. From apply version 4 the leader
/// plans the receive (`PopRanges`), so a receive that finds nothing writes nothing; before it,
/// the first release's availability check and `Pop` are kept.
fn plan_receive(
    shard: &Shard,
    probe: PopProbe<'_>,
    pop: &PopCommand,
    now_ms: i64,
) -> (Option<StoreCommand>, Waiting) {
    let applied = shard.shared.applied.read();
    // Planned at the time the state is at (this node's clock may be behind earlier leaders');
    // apply raises the command's time to it too. A wait is told in this node's clock.
    let clock_ms = now_ms;
    let now_ms = applied.state.time_at(clock_ms);
    let until = |at: i64| Waiting::Until(at.saturating_sub(now_ms - clock_ms));
    if applied.state.apply_version() < 4 {
        return match applied.state.availability(probe, now_ms) {
            Availability::Now => (Some(StoreCommand::Pop(pop.clone())), Waiting::No),
            Availability::NotBefore(at) => (None, until(at)),
            Availability::Nothing => (None, Waiting::No),
        };
    }
    let mut budget = SCAN_SLICE;
    let plan = {
        let mut memo = shard.shared.scan_memo.lock();
        applied
            .state
            .plan_pop(probe, pop.max, now_ms, &mut memo, &mut budget)
    };
    match plan {
        PopPlan::Propose(ranges) => match probe.sql {
            Some(sql) => {
                let picks = ranges
                    .into_iter()
                    .map(|range| PickedRange {
                        offsets: sql
                            .windows
                            .get(&range.queue_id)
                            .map(|w| {
                                w.matches
                                    .iter()
                                    .copied()
                                    .filter(|o| (range.skip_to..range.scan_to).contains(o))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        range,
                    })
                    .collect();
                (
                    Some(StoreCommand::PopPicked {
                        pop: pop.clone(),
                        picks,
                    }),
                    Waiting::No,
                )
            }
            None => (
                Some(StoreCommand::PopRanges {
                    pop: pop.clone(),
                    ranges,
                }),
                Waiting::No,
            ),
        },
        PopPlan::NotBefore(at) => (None, until(at)),
        PopPlan::Nothing => (None, Waiting::No),
        PopPlan::Continue => (None, Waiting::MoreToScan),
    }
}

/// Reads the records a POP delivered from the log (or the tier).
async fn read_deliveries(
    shard: &Shard,
    req: &PopRequest,
    delivery_id: u64,
    popped: Vec<PoppedMessage>,
) -> Result<Vec<Delivery>, RecordReadError> {
    let records: Vec<RecordRef> = popped.iter().map(|p| p.record).collect();
    let messages = shard.read_records(&records).await?;
    let mut out = Vec::with_capacity(popped.len());
    for (p, message) in popped.into_iter().zip(messages) {
        let Some(message) = message else {
            // Retention removed the record between the POP and this read; it stays in flight
            // until its deadline and is then forgotten.
            warn!(
                shard = shard.id,
                log_index = p.record.log_index,
                slot = p.record.slot,
                "delivered record is gone"
            );
            continue;
        };
        out.push(Delivery {
            ticket: ReceiptTicket {
                shard: shard.id,
                group: req.group.clone(),
                topic: p.topic.clone(),
                queue_id: p.queue_id,
                offset: p.offset,
                delivery_id,
                visible_at_ms: p.visible_at_ms,
            },
            topic: p.topic,
            queue_id: p.queue_id,
            offset: p.offset,
            store_timestamp_ms: p.store_ts_ms,
            attempt: p.attempt,
            invisible: req.invisible,
            transaction_id: (message.kind == MessageKind::Transaction)
                .then(|| transaction_id(shard.id, p.record)),
            message,
        });
    }
    Ok(out)
}

//! Transaction check-back, on a shard's leader: which unresolved half messages are due to be
//! checked with a producer (the proxies pull them, `StoreApi::transaction_checks`), and rolling
//! back those that no check resolved.
//!
//! A half message's schedule follows from the time it was stored (the leader's clock stamped
//! on its log entry) and the policy: check `k` (from 0) falls due at `first_due + k × interval`,
//! where `first_due` is the stored time plus the message's own first-check time or the
//! configured one, and after `max_checks` checks, at `first_due + max_checks × interval`, the
//! leader rolls the message back. Nothing about checks is written to the log, so a restart or
//! a new leader keeps the count; a new leader only does not know which check the old one
//! handed out last, so a check may be handed out once more.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use vela_proto::clock::SharedClock;
use vela_proto::domain::{CHECK_AFTER_PROPERTY, MAX_CHECK_AFTER, MessageRecord, TopicName};
use vela_proto::store_api::{StoreError, TransactionCheck};

use super::{RecordReadError, Shard};
use crate::command::{ApplyError, CommandResponse, RecordRef, StoreCommand, TransactionEnd};
use crate::metrics::StoreMetrics;

/// Half messages whose schedule one pass learns at most (each needs its record read).
const LEARN_BATCH: usize = 1024;
/// How often the leader looks for half messages to roll back.
const ROLLBACK_SCAN: Duration = Duration::from_secs(1);

/// When half messages are checked back and given up on (`store.transaction_check_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CheckPolicy {
    /// First check after the message was stored, unless the message asks for its own time.
    pub first: Duration,
    /// Between two checks (never zero).
    pub interval: Duration,
    pub max_checks: u32,
}

/// What a half message's schedule says at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    NotYet,
    /// Check `k` (from 0) is due.
    Check(u32),
    /// Every check has had its interval: roll the message back.
    Expired,
}

/// When one half message is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Schedule {
    first_due_ms: i64,
    interval_ms: i64,
    max_checks: u32,
}

impl Schedule {
    fn new(stored_ms: i64, own_first: Option<Duration>, policy: CheckPolicy) -> Self {
        let first = own_first.map_or(policy.first, |own| own.min(MAX_CHECK_AFTER));
        Schedule {
            first_due_ms: stored_ms.saturating_add(millis(first)),
            interval_ms: millis(policy.interval).max(1),
            max_checks: policy.max_checks,
        }
    }

    fn at(&self, now_ms: i64) -> Due {
        if now_ms < self.first_due_ms {
            return Due::NotYet;
        }
        let passed = (now_ms - self.first_due_ms) / self.interval_ms;
        match u32::try_from(passed) {
            Ok(k) if k < self.max_checks => Due::Check(k),
            _ => Due::Expired,
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The first check-back time a half message asks for itself, if any.
fn own_first_check(message: &MessageRecord) -> Option<Duration> {
    message
        .properties
        .iter()
        .find(|(k, _)| k == CHECK_AFTER_PROPERTY)
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}

struct Tracked {
    schedule: Schedule,
    /// The last check handed out by this node.
    handed: Option<u32>,
}

/// The leader's schedules of the shard's half messages (rebuilt from the log by a new leader).
#[derive(Default)]
pub(crate) struct CheckBook {
    tracked: HashMap<RecordRef, Tracked>,
}

impl Shard {
    /// The shard's half messages with their schedules learned (at most [`LEARN_BATCH`] new ones
    /// a call; the rest on later calls), and the book rid of messages that ended.
    async fn refresh_checks(
        &self,
        now_ms: i64,
        policy: CheckPolicy,
    ) -> Result<Vec<(RecordRef, TopicName)>, RecordReadError> {
        let halves: Vec<(RecordRef, TopicName)> = {
            let applied = self.shared.applied.read();
            applied
                .state
                .half_messages()
                .map(|(r, t)| (r, t.clone()))
                .collect()
        };
        let unknown: Vec<RecordRef> = {
            let mut book = self.checks.lock();
            let live: HashSet<RecordRef> = halves.iter().map(|(r, _)| *r).collect();
            book.tracked.retain(|r, _| live.contains(r));
            halves
                .iter()
                .map(|(r, _)| *r)
                .filter(|r| !book.tracked.contains_key(r))
                .take(LEARN_BATCH)
                .collect()
        };
        if unknown.is_empty() {
            return Ok(halves);
        }
        let stored = self.read_stored(&unknown).await?;
        let mut book = self.checks.lock();
        for (record, stored) in unknown.into_iter().zip(stored) {
            // Retention never cuts below a half message; if its record is gone all the same,
            // it is checked (and given up on) as if stored now.
            let schedule = match stored {
                Some((message, stored_ms)) => {
                    Schedule::new(stored_ms, own_first_check(&message), policy)
                }
                None => Schedule::new(now_ms, None, policy),
            };
            book.tracked.insert(
                record,
                Tracked {
                    schedule,
                    handed: None,
                },
            );
        }
        Ok(halves)
    }

    /// Hands out up to `max` checks now due of half messages of `topics`, each once.
    pub(crate) async fn transaction_checks(
        &self,
        topics: &[TopicName],
        max: usize,
        now_ms: i64,
        policy: CheckPolicy,
    ) -> Result<Vec<TransactionCheck>, StoreError> {
        let halves = self.refresh_checks(now_ms, policy).await?;
        let due: Vec<(RecordRef, TopicName, u32)> = {
            let mut book = self.checks.lock();
            halves
                .into_iter()
                .filter(|(_, topic)| topics.contains(topic))
                .filter_map(|(record, topic)| {
                    let tracked = book.tracked.get_mut(&record)?;
                    match tracked.schedule.at(now_ms) {
                        Due::Check(k) if tracked.handed != Some(k) => {
                            tracked.handed = Some(k);
                            Some((record, topic, k))
                        }
                        _ => None,
                    }
                })
                .take(max)
                .collect()
        };
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let records: Vec<RecordRef> = due.iter().map(|(r, _, _)| *r).collect();
        let stored = self.read_stored(&records).await?;
        let applied = self.shared.applied.read();
        Ok(due
            .into_iter()
            .zip(stored)
            .filter_map(|((record, topic, k), stored)| {
                let (message, store_timestamp_ms) = stored?;
                Some(TransactionCheck {
                    topic,
                    transaction_id: applied.state.transaction_id(record),
                    message,
                    store_timestamp_ms,
                    check: k + 1,
                })
            })
            .collect())
    }

    /// Of `halves`, those every check of which has passed unanswered.
    fn expired_transactions(
        &self,
        halves: Vec<(RecordRef, TopicName)>,
        now_ms: i64,
    ) -> Vec<(RecordRef, TopicName)> {
        let book = self.checks.lock();
        halves
            .into_iter()
            .filter(|(record, _)| {
                book.tracked
                    .get(record)
                    .is_some_and(|t| t.schedule.at(now_ms) == Due::Expired)
            })
            .collect()
    }

    /// Rolls back one expired half message. False when it ended meanwhile.
    async fn roll_back_expired(
        &self,
        record: RecordRef,
        topic: &TopicName,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let transaction_id = self.shared.applied.read().state.transaction_id(record);
        let command = StoreCommand::EndTransaction {
            topic: topic.clone(),
            transaction_id: transaction_id.clone(),
            resolution: TransactionEnd::Rollback,
            now_ms,
        };
        match self.write(command).await? {
            CommandResponse::TransactionEnded(Ok(())) => {
                warn!(
                    shard = self.id,
                    %topic,
                    %transaction_id,
                    "transaction rolled back: no producer resolved it within its check-backs"
                );
                Ok(true)
            }
            CommandResponse::TransactionEnded(Err(ApplyError::TransactionNotFound(_))) => Ok(false),
            other => Err(super::unexpected("end_transaction", &other)),
        }
    }
}

/// The leader rolls back half messages whose check-backs all went unanswered, so an orphan
/// neither waits forever nor holds the shard's log retention. It also reports the shard's
/// half messages per topic (`rocketmq_half_messages`).
pub(crate) async fn roll_back_orphans(
    shard: Arc<Shard>,
    clock: SharedClock,
    policy: CheckPolicy,
    metrics: Arc<StoreMetrics>,
    cancel: CancellationToken,
) {
    let mut reported = BTreeSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                metrics.half_messages(shard.id, &BTreeMap::new(), &mut reported);
                return;
            }
            _ = tokio::time::sleep(ROLLBACK_SCAN) => {}
        }
        if !shard.raft.is_leader() {
            metrics.half_messages(shard.id, &BTreeMap::new(), &mut reported);
            continue;
        }
        let now_ms = shard.shared.applied.read().state.time_at(clock.now_ms());
        let halves = match shard.refresh_checks(now_ms, policy).await {
            Ok(halves) => halves,
            Err(err) => {
                warn!(shard = shard.id, error = %err, "reading half messages failed");
                continue;
            }
        };
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for (_, topic) in &halves {
            *counts.entry(topic.as_str().to_owned()).or_default() += 1;
        }
        metrics.half_messages(shard.id, &counts, &mut reported);
        for (record, topic) in shard.expired_transactions(halves, now_ms) {
            match shard.roll_back_expired(record, &topic, now_ms).await {
                Ok(true) => metrics.orphan_rolled_back(shard.id),
                Ok(false) => debug!(shard = shard.id, ?record, "half message ended meanwhile"),
                Err(err) => {
                    warn!(shard = shard.id, error = %err, "rolling back an orphaned transaction failed");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: CheckPolicy = CheckPolicy {
        first: Duration::from_secs(6),
        interval: Duration::from_secs(30),
        max_checks: 3,
    };

    #[test]
    fn checks_fall_due_from_the_stored_time_then_the_message_expires() {
        let s = Schedule::new(1_000, None, POLICY);
        assert_eq!(s.at(0), Due::NotYet, "a clock behind the stored time");
        assert_eq!(s.at(6_999), Due::NotYet);
        assert_eq!(s.at(7_000), Due::Check(0));
        assert_eq!(s.at(36_999), Due::Check(0));
        assert_eq!(s.at(37_000), Due::Check(1));
        assert_eq!(s.at(67_000), Due::Check(2));
        assert_eq!(s.at(96_999), Due::Check(2));
        assert_eq!(s.at(97_000), Due::Expired, "after max_checks intervals");
        assert_eq!(s.at(i64::MAX), Due::Expired);
    }

    #[test]
    fn a_message_may_ask_for_its_own_first_check_up_to_an_hour() {
        let own = Schedule::new(0, Some(Duration::from_secs(2)), POLICY);
        assert_eq!(own.at(1_999), Due::NotYet);
        assert_eq!(own.at(2_000), Due::Check(0));
        let capped = Schedule::new(0, Some(Duration::from_secs(10 * 3600)), POLICY);
        assert_eq!(capped.at(3_599_999), Due::NotYet);
        assert_eq!(capped.at(3_600_000), Due::Check(0));
    }

    #[test]
    fn no_checks_means_rolled_back_when_the_first_would_fall_due() {
        let s = Schedule::new(
            0,
            None,
            CheckPolicy {
                max_checks: 0,
                ..POLICY
            },
        );
        assert_eq!(s.at(5_999), Due::NotYet);
        assert_eq!(s.at(6_000), Due::Expired);
    }

    #[test]
    fn the_own_time_is_read_from_the_system_property() {
        let mut message = MessageRecord {
            message_id: "id".into(),
            topic: TopicName::new("orders").expect("valid"),
            kind: vela_proto::domain::MessageKind::Transaction,
            tag: None,
            keys: vec![],
            message_group: None,
            delivery_timestamp_ms: None,
            born_timestamp_ms: 0,
            born_host: "test".into(),
            trace_context: None,
            properties: vec![("a".into(), "b".into())],
            body: bytes::Bytes::from_static(b"body"),
        };
        assert_eq!(own_first_check(&message), None);
        message
            .properties
            .push((CHECK_AFTER_PROPERTY.to_owned(), "42".to_owned()));
        assert_eq!(own_first_check(&message), Some(Duration::from_secs(42)));
    }
}

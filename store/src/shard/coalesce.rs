//! Coalesces concurrent appends to one shard into fewer Raft entries. Appends wait in a queue;
//! up to [`PROPOSERS`] tasks take whatever has queued and propose it as one entry, so while
//! earlier entries are in flight new appends gather and go out together as one `AppendBatch`.
//! Nothing waits for company: a lone append is proposed at once as a plain `Append`. Once the
//! shard applies version 5, appends that name their client go out as `ClientAppends`, which
//! apply deduplicates by (client id, message id).
//!
//! Memory is bounded: an append takes its size from a budget of [`MAX_PENDING_BYTES`] before it
//! queues and gives it back once answered, so a burst of producers waits (backpressure) instead
//! of growing the queue without limit.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use vela_proto::ClientId;
use vela_proto::clock::SharedClock;
use vela_proto::domain::{MessageRecord, TopicName};
use vela_proto::store_api::{AppendOutcome, StoreError};

use crate::command::{ClientAppend, CommandResponse, QueueAppend, StoreCommand};
use crate::shard::{Shard, unexpected};

/// Proposer tasks per shard, so entries carrying appends in flight at once. While all are busy,
/// new appends queue up and the next free proposer takes all of them; more than one keeps the
/// log busy while an earlier entry is being fsynced or applied. 3 measured best in the store's
/// throughput test (2, 4, 8 and 16 all sent fewer messages per second).
const PROPOSERS: usize = 3;
/// Most messages one `AppendBatch` carries.
const MAX_BATCH_MESSAGES: usize = 8192;
/// Most message bytes (approximate) one `AppendBatch` carries, so one entry stays a reasonable
/// unit to write, replicate and cache.
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Message bytes (approximate) of the appends a shard holds at once, waiting or being proposed.
/// An append larger than this takes the whole budget and goes alone.
pub(crate) const MAX_PENDING_BYTES: usize = 64 << 20;

type AppendReply = oneshot::Sender<Result<Vec<AppendOutcome>, StoreError>>;
type Answer = oneshot::Receiver<Result<Vec<AppendOutcome>, StoreError>>;

/// One caller's append, waiting to be proposed.
struct PendingAppend {
    append: ClientAppend,
    reply: AppendReply,
    /// Its share of the pending-bytes budget, given back when it is answered.
    _budget: OwnedSemaphorePermit,
}

impl PendingAppend {
    fn approx_bytes(&self) -> usize {
        self.append
            .append
            .messages
            .iter()
            .map(MessageRecord::approx_size)
            .sum()
    }

    fn len(&self) -> usize {
        self.append.append.messages.len()
    }
}

/// Appends that go out in one proposal, within the batch bounds.
struct Batch {
    appends: Vec<PendingAppend>,
    messages: usize,
    bytes: usize,
}

impl Batch {
    fn new(first: PendingAppend) -> Self {
        let mut batch = Batch {
            appends: Vec::new(),
            messages: 0,
            bytes: 0,
        };
        batch.push(first);
        batch
    }

    fn push(&mut self, append: PendingAppend) {
        self.messages += append.len();
        self.bytes += append.approx_bytes();
        self.appends.push(append);
    }

    /// Whether `next` may join without pushing the batch past its bounds. A batch always takes
    /// its first append, however large, so an oversized request still goes out (alone).
    fn fits(&self, next: &PendingAppend) -> bool {
        self.messages + next.len() <= MAX_BATCH_MESSAGES
            && self.bytes + next.approx_bytes() <= MAX_BATCH_BYTES
    }
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<PendingAppend>,
    /// Proposer tasks running; each proposes until it finds the queue empty.
    proposers: usize,
    closed: bool,
}

impl Queue {
    /// The oldest waiting appends, as many as fit one batch; `None` when nothing waits.
    fn take_batch(&mut self) -> Option<Batch> {
        let mut batch = Batch::new(self.waiting.pop_front()?);
        while let Some(next) = self.waiting.front() {
            if !batch.fits(next) {
                break;
            }
            if let Some(next) = self.waiting.pop_front() {
                batch.push(next);
            }
        }
        Some(batch)
    }
}

/// The append path of one shard.
pub(crate) struct AppendCoalescer {
    shard: Arc<Shard>,
    clock: SharedClock,
    queue: Mutex<Queue>,
    budget: Arc<Semaphore>,
}

fn shutting_down() -> StoreError {
    StoreError::Unavailable("store is shutting down".into())
}

/// The share of the pending-bytes budget `messages` take: their approximate size, at least 1
/// and at most the whole budget.
fn share_of(messages: &[MessageRecord]) -> u32 {
    let bytes: usize = messages.iter().map(MessageRecord::approx_size).sum();
    u32::try_from(bytes.clamp(1, MAX_PENDING_BYTES)).unwrap_or(u32::MAX)
}

/// An append waiting to be proposed, holding `budget`, with the receiver of its answer.
fn waiting(
    client_id: Option<ClientId>,
    topic: TopicName,
    queue_id: u32,
    messages: Vec<MessageRecord>,
    budget: OwnedSemaphorePermit,
) -> (PendingAppend, Answer) {
    let (reply, answer) = oneshot::channel();
    let append = PendingAppend {
        append: ClientAppend {
            client_id: client_id.map(|c| c.as_str().to_owned()),
            append: QueueAppend {
                topic,
                queue_id,
                messages,
            },
        },
        reply,
        _budget: budget,
    };
    (append, answer)
}

impl AppendCoalescer {
    pub fn new(shard: Arc<Shard>, clock: SharedClock) -> Arc<Self> {
        Arc::new(Self {
            shard,
            clock,
            queue: Mutex::new(Queue::default()),
            budget: Arc::new(Semaphore::new(MAX_PENDING_BYTES)),
        })
    }

    /// Budget left for pending appends, in bytes.
    #[cfg(test)]
    fn budget_left(&self) -> usize {
        self.budget.available_permits()
    }

    /// Takes `messages`' share of the pending-bytes budget (waiting while it is spent) and
    /// wraps them as an append waiting to be proposed, with the receiver of its answer.
    async fn pending(
        &self,
        client_id: Option<ClientId>,
        topic: TopicName,
        queue_id: u32,
        messages: Vec<MessageRecord>,
    ) -> Result<(PendingAppend, Answer), StoreError> {
        let budget = self
            .budget
            .clone()
            .acquire_many_owned(share_of(&messages))
            .await
            .map_err(|_| shutting_down())?;
        Ok(waiting(client_id, topic, queue_id, messages, budget))
    }

    /// Appends several callers' messages at once: they queue together, so the proposers take
    /// them into the same entries (as many as fit one). Each is answered on its own, in order.
    /// Their budget is taken in one piece (a batch holding part of it while waiting for the
    /// rest could wait forever on another doing the same).
    pub async fn append_many(
        self: &Arc<Self>,
        appends: Vec<(Option<ClientId>, TopicName, u32, Vec<MessageRecord>)>,
    ) -> Vec<Result<Vec<AppendOutcome>, StoreError>> {
        let shares: Vec<u32> = appends.iter().map(|(_, _, _, m)| share_of(m)).collect();
        let total: u64 = shares.iter().map(|&s| u64::from(s)).sum();
        let total = u32::try_from(total.min(MAX_PENDING_BYTES as u64)).unwrap_or(u32::MAX);
        let Ok(mut budget) = self.budget.clone().acquire_many_owned(total).await else {
            return appends.iter().map(|_| Err(shutting_down())).collect();
        };
        let mut answers = Vec::with_capacity(appends.len());
        let mut ready = Vec::with_capacity(appends.len());
        for ((client_id, topic, queue_id, messages), share) in appends.into_iter().zip(shares) {
            // The total was capped at the whole budget: the last appends may get less.
            let take = (share as usize).min(budget.num_permits());
            let Some(part) = budget.split(take) else {
                answers.push(Err(StoreError::Internal(
                    "append budget split failed".into(),
                )));
                continue;
            };
            let (append, answer) = waiting(client_id, topic, queue_id, messages, part);
            ready.push(append);
            answers.push(Ok(answer));
        }
        let start_proposer = {
            let mut queue = self.queue.lock();
            if queue.closed {
                drop(queue);
                for append in ready {
                    append.reply.send(Err(shutting_down())).ok();
                }
                false
            } else {
                queue.waiting.extend(ready);
                let start = queue.proposers < PROPOSERS;
                if start {
                    queue.proposers += 1;
                }
                start
            }
        };
        if start_proposer {
            tokio::spawn(self.clone().propose_until_empty());
        }
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            results.push(match answer {
                Ok(answer) => answer.await.unwrap_or_else(|_| Err(shutting_down())),
                Err(err) => Err(err),
            });
        }
        results
    }

    /// Appends `messages` to a queue and returns where they landed, once the entry carrying
    /// them is committed and applied.
    pub async fn append(
        self: &Arc<Self>,
        client_id: Option<ClientId>,
        topic: TopicName,
        queue_id: u32,
        messages: Vec<MessageRecord>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let (append, answer) = self.pending(client_id, topic, queue_id, messages).await?;
        let route = {
            let mut queue = self.queue.lock();
            if queue.closed {
                return Err(shutting_down());
            }
            if queue.waiting.is_empty() && queue.proposers < PROPOSERS {
                queue.proposers += 1;
                Route::Alone(append)
            } else {
                queue.waiting.push_back(append);
                let start = queue.proposers < PROPOSERS;
                if start {
                    queue.proposers += 1;
                }
                Route::Queued {
                    start_proposer: start,
                }
            }
        };
        match route {
            Route::Alone(append) => {
                // Nobody to wait for and a slot free: propose on this task, without the hop to
                // a proposer task. Only this caller's append is at stake if it goes away.
                let _slot = ProposerSlot(self);
                append_alone(&self.shard, self.clock.now_ms(), append.append).await
            }
            Route::Queued { start_proposer } => {
                // Batches are proposed in tasks of their own: a caller that goes away (a
                // cancelled request) must not take other callers' appends down with it.
                if start_proposer {
                    tokio::spawn(self.clone().propose_until_empty());
                }
                answer.await.map_err(|_| shutting_down())?
            }
        }
    }

    /// Stops taking appends; those still waiting are answered as the store shutting down.
    /// Entries already proposed finish (or fail as Raft stops).
    pub fn close(&self) {
        self.budget.close();
        let waiting = {
            let mut queue = self.queue.lock();
            queue.closed = true;
            std::mem::take(&mut queue.waiting)
        };
        for append in waiting {
            append.reply.send(Err(shutting_down())).ok();
        }
    }

    /// Gives up a proposer slot held by a caller that proposed its own append. Appends that
    /// queued meanwhile found every slot taken, so the slot passes to a proposer task for them.
    fn release_slot(self: &Arc<Self>) {
        let mut queue = self.queue.lock();
        if !queue.waiting.is_empty()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(self.clone().propose_until_empty());
            return;
        }
        queue.proposers -= 1;
    }

    async fn propose_until_empty(self: Arc<Self>) {
        loop {
            let batch = {
                let mut queue = self.queue.lock();
                match queue.take_batch() {
                    Some(batch) => batch,
                    None => {
                        queue.proposers -= 1;
                        return;
                    }
                }
            };
            propose(&self.shard, self.clock.now_ms(), batch.appends).await;
        }
    }
}

/// How one append goes out.
enum Route {
    /// Proposed by its caller, as the only append around.
    Alone(PendingAppend),
    /// Queued for a proposer task; `start_proposer` when this caller must start one.
    Queued { start_proposer: bool },
}

/// A proposer slot taken by a caller proposing its own append; released however that ends
/// (answered, failed, or the caller dropped).
struct ProposerSlot<'a>(&'a Arc<AppendCoalescer>);

impl Drop for ProposerSlot<'_> {
    fn drop(&mut self) {
        self.0.release_slot();
    }
}

/// Whether the shard deduplicates sends (apply version 5): only then may `ClientAppends`
/// entries be written.
///
/// Right after an election the applied state can still be behind what earlier leaders
/// committed (after every member restarted, it starts from its snapshot), and with it the
/// apply version: sends written meanwhile as `AppendBatch` would not be deduplicated, and a
/// resend of a message stored before the election would be stored again. So below version 5
/// the leader first waits (at most [`CATCH_UP_WAIT`]) until it applied an entry of its own
/// term, which it does only after everything committed before it; once it has, the wait is
/// over at once for the rest of the term.
async fn deduplicates(shard: &Shard) -> bool {
    if shard.shared.current_apply_version() >= 5 {
        return true;
    }
    let caught_up = |m: &openraft::RaftMetrics<crate::shard::ShardTypes>| {
        m.last_applied
            .is_some_and(|applied| applied.leader_id.term >= m.current_term)
    };
    if !caught_up(&shard.raft.metrics().borrow_watched()) {
        let waited = shard
            .raft
            .wait(Some(CATCH_UP_WAIT))
            .metrics(caught_up, "the leader applied an entry of its term")
            .await;
        if let Err(e) = waited {
            tracing::debug!(shard = shard.id, error = %e, "apply did not catch up");
        }
    }
    shard.shared.current_apply_version() >= 5
}

/// Longest an append waits for a new leader's applied state to catch up.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// Proposes one caller's messages as a plain `Append` (a `ClientAppends` of one when it names
/// its client and the shard deduplicates) and returns their outcomes.
async fn append_alone(
    shard: &Shard,
    now_ms: i64,
    append: ClientAppend,
) -> Result<Vec<AppendOutcome>, StoreError> {
    let count = append.append.messages.len();
    if append.client_id.is_some() && deduplicates(shard).await {
        let command = StoreCommand::ClientAppends {
            now_ms,
            appends: vec![append],
        };
        return match shard.write(command).await? {
            CommandResponse::AppendedBatch(mut outcomes)
                if outcomes.len() == 1 && outcomes[0].len() == count =>
            {
                Ok(outcomes.swap_remove(0))
            }
            other => Err(unexpected("client_appends", &other)),
        };
    }
    let QueueAppend {
        topic,
        queue_id,
        messages,
    } = append.append;
    let command = StoreCommand::Append {
        topic,
        queue_id,
        now_ms,
        messages,
    };
    match shard.write(command).await? {
        CommandResponse::Appended(outcomes) if outcomes.len() == count => Ok(outcomes),
        other => Err(unexpected("append", &other)),
    }
}

/// Proposes `appends` as one entry and answers every caller once it is committed and applied:
/// one append alone (see [`append_alone`]), several as an `AppendBatch`, or a `ClientAppends`
/// when any names its client and the shard deduplicates. A failed proposal fails every caller
/// in it with the same error.
async fn propose(shard: &Shard, now_ms: i64, mut appends: Vec<PendingAppend>) {
    if appends.len() == 1
        && let Some(append) = appends.pop()
    {
        let result = append_alone(shard, now_ms, append.append).await;
        append.reply.send(result).ok();
        return;
    }
    let mut counts = Vec::with_capacity(appends.len());
    let mut replies = Vec::with_capacity(appends.len());
    let with_clients =
        appends.iter().any(|a| a.append.client_id.is_some()) && deduplicates(shard).await;
    let subs: Vec<ClientAppend> = appends
        .into_iter()
        .map(|a| {
            counts.push(a.len());
            replies.push(a.reply);
            a.append
        })
        .collect();
    let (kind, command) = if with_clients {
        (
            "client_appends",
            StoreCommand::ClientAppends {
                now_ms,
                appends: subs,
            },
        )
    } else {
        (
            "append_batch",
            StoreCommand::AppendBatch {
                now_ms,
                appends: subs.into_iter().map(|a| a.append).collect(),
            },
        )
    };
    let failure = match shard.write(command).await {
        Ok(CommandResponse::AppendedBatch(outcomes)) if outcomes.len() == replies.len() => {
            for ((reply, outcomes), count) in replies.into_iter().zip(outcomes).zip(counts) {
                let result = if outcomes.len() == count {
                    Ok(outcomes)
                } else {
                    Err(StoreError::Internal(format!(
                        "{kind} answered {} outcomes for a sub-append of {count} messages",
                        outcomes.len()
                    )))
                };
                reply.send(result).ok();
            }
            return;
        }
        Ok(other) => unexpected(kind, &other),
        Err(err) => err,
    };
    for reply in replies {
        reply.send(Err(failure.clone())).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use vela_proto::domain::MessageKind;

    fn pending(
        bodies: &[usize],
    ) -> (
        PendingAppend,
        oneshot::Receiver<Result<Vec<AppendOutcome>, StoreError>>,
    ) {
        let topic = TopicName::new("orders").expect("valid");
        let (reply, answer) = oneshot::channel();
        let messages = bodies
            .iter()
            .map(|&size| MessageRecord {
                message_id: String::new(),
                topic: topic.clone(),
                kind: MessageKind::Normal,
                tag: None,
                keys: vec![],
                message_group: None,
                delivery_timestamp_ms: None,
                born_timestamp_ms: 0,
                born_host: String::new(),
                trace_context: None,
                properties: vec![],
                body: Bytes::from(vec![0u8; size]),
            })
            .collect();
        let budget = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("a fresh semaphore has a permit");
        (
            PendingAppend {
                append: ClientAppend {
                    client_id: None,
                    append: QueueAppend {
                        topic,
                        queue_id: 0,
                        messages,
                    },
                },
                reply,
                _budget: budget,
            },
            answer,
        )
    }

    #[test]
    fn a_batch_is_bounded_by_bytes_and_messages_but_always_takes_its_first() {
        let (huge, _a) = pending(&[MAX_BATCH_BYTES + 1]);
        let mut batch = Batch::new(huge);
        let (small, _b) = pending(&[1]);
        assert!(
            !batch.fits(&small),
            "nothing joins an oversized first append"
        );

        // A record's approximate size is its body plus 64 bytes of overhead here.
        let (half, _c) = pending(&[MAX_BATCH_BYTES / 2 - 64]);
        batch = Batch::new(half);
        let (other_half, _d) = pending(&[MAX_BATCH_BYTES / 2 - 64]);
        assert!(batch.fits(&other_half));
        batch.push(other_half);
        let (one_more, _e) = pending(&[1]);
        assert!(!batch.fits(&one_more));

        let (many, _f) = pending(&vec![0; MAX_BATCH_MESSAGES - 1]);
        batch = Batch::new(many);
        let (one, _g) = pending(&[0]);
        assert!(batch.fits(&one));
        batch.push(one);
        let (another, _h) = pending(&[0]);
        assert!(!batch.fits(&another));
        assert_eq!(batch.messages, MAX_BATCH_MESSAGES);
    }

    #[test]
    fn batches_take_the_oldest_appends_that_fit() {
        let mut queue = Queue::default();
        let mut answers = Vec::new();
        for bodies in [
            vec![MAX_BATCH_BYTES / 2],
            vec![1],
            vec![MAX_BATCH_BYTES / 2],
            vec![2, 2],
        ] {
            let (append, answer) = pending(&bodies);
            queue.waiting.push_back(append);
            answers.push(answer);
        }
        let sizes = |batch: &Batch| -> Vec<usize> {
            batch.appends.iter().map(PendingAppend::len).collect()
        };
        let first = queue.take_batch().expect("appends wait");
        assert_eq!(sizes(&first), [1, 1], "the third would overflow the bytes");
        let second = queue.take_batch().expect("appends wait");
        assert_eq!(sizes(&second), [1, 2]);
        assert_eq!(
            second.appends[1].append.append.messages[0].body.len(),
            2,
            "in arrival order"
        );
        assert!(queue.take_batch().is_none());
    }

    /// Shard 0 with default settings in `dir`.
    async fn open_shard(dir: &std::path::Path) -> Arc<Shard> {
        let cfg = crate::config::StoreConfig {
            data_dir: dir.to_path_buf(),
            ..crate::config::StoreConfig::default()
        };
        let writer = vela_raft::LogWriter::spawn("test-writer").expect("writer thread");
        Shard::open(&cfg, 0, vela_raft::vfs::StdVfs::shared(), &writer)
            .await
            .expect("opens")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pending_bytes_are_bounded_and_given_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shard = open_shard(dir.path()).await;
        let coalescer =
            AppendCoalescer::new(shard.clone(), Arc::new(vela_proto::clock::SystemClock));
        assert_eq!(coalescer.budget_left(), MAX_PENDING_BYTES);
        // 64 appends of 4 MiB: four times the budget. They wait for room instead of queueing
        // without bound, and every one still lands.
        let mut calls = Vec::new();
        for _ in 0..64 {
            let (append, _answer) = pending(&[4 << 20]);
            let c = coalescer.clone();
            calls.push(tokio::spawn(async move {
                c.append(
                    None,
                    append.append.append.topic,
                    0,
                    append.append.append.messages,
                )
                .await
            }));
        }
        let mut most_in_use = 0;
        while !calls.iter().all(|c| c.is_finished()) {
            most_in_use = most_in_use.max(MAX_PENDING_BYTES - coalescer.budget_left());
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        for call in calls {
            call.await.expect("joins").expect("appends");
        }
        assert!(most_in_use <= MAX_PENDING_BYTES);
        assert_eq!(coalescer.budget_left(), MAX_PENDING_BYTES, "all given back");
        // One append larger than the whole budget still goes out, alone.
        let (huge, _answer) = pending(&[MAX_PENDING_BYTES + 1]);
        coalescer
            .append(
                None,
                huge.append.append.topic,
                0,
                huge.append.append.messages,
            )
            .await
            .expect("an oversized append lands");
        coalescer.close();
        shard.close().await.expect("closes");
    }

    #[tokio::test]
    async fn appends_queued_together_share_one_entry_and_are_answered_each_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shard = open_shard(dir.path()).await;
        let coalescer =
            AppendCoalescer::new(shard.clone(), Arc::new(vela_proto::clock::SystemClock));
        let last_index = || {
            shard
                .raft
                .metrics()
                .borrow_watched()
                .last_log_index
                .unwrap_or(0)
        };
        // The first entry of the shard's term goes out before the measure starts.
        let (first, _answer) = pending(&[1]);
        coalescer
            .append(
                None,
                first.append.append.topic,
                0,
                first.append.append.messages,
            )
            .await
            .expect("appends");
        let before = last_index();
        let sizes = [1usize, 3, 2, 1, 4];
        let appends = sizes
            .iter()
            .map(|&n| {
                let (append, _answer) = pending(&vec![8; n]);
                let a = append.append;
                (None, a.append.topic, 0, a.append.messages)
            })
            .collect();
        let results = coalescer.append_many(appends).await;
        assert_eq!(last_index(), before + 1, "one entry for all five appends");
        let mut next_offset = 1;
        for (result, n) in results.into_iter().zip(sizes) {
            let offsets: Vec<_> = result
                .expect("appends")
                .into_iter()
                .map(|o| o.offset.expect("a normal message gets its offset"))
                .collect();
            let expected: Vec<u64> = (next_offset..next_offset + n as u64).collect();
            assert_eq!(offsets, expected, "each append's own offsets, in order");
            next_offset += n as u64;
        }
        assert_eq!(coalescer.budget_left(), MAX_PENDING_BYTES, "all given back");
        coalescer.close();
        let (late, _answer) = pending(&[1]);
        let after_close = coalescer
            .append_many(vec![(
                None,
                late.append.append.topic,
                0,
                late.append.append.messages,
            )])
            .await;
        assert!(
            matches!(after_close[..], [Err(StoreError::Unavailable(_))]),
            "{after_close:?}"
        );
        shard.close().await.expect("closes");
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_mid_proposal_gives_its_slot_back() {
        use futures::FutureExt;

        let dir = tempfile::tempdir().expect("tempdir");
        let shard = open_shard(dir.path()).await;
        let coalescer =
            AppendCoalescer::new(shard.clone(), Arc::new(vela_proto::clock::SystemClock));
        for _ in 0..PROPOSERS + 1 {
            let (append, _answer) = pending(&[1]);
            // Polled once (it takes a slot and proposes), then dropped like a cancelled request.
            let dropped = coalescer
                .append(
                    None,
                    append.append.append.topic,
                    0,
                    append.append.append.messages,
                )
                .now_or_never();
            assert!(
                dropped.is_none(),
                "a write is not answered on its first poll"
            );
        }
        assert_eq!(coalescer.queue.lock().proposers, 0);
        let (append, _answer) = pending(&[1]);
        let outcomes = coalescer
            .append(
                None,
                append.append.append.topic,
                0,
                append.append.append.messages,
            )
            .await
            .expect("appends");
        assert_eq!(outcomes.len(), 1);
        shard.close().await.expect("closes");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_caller_with_the_same_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shard = open_shard(dir.path()).await;
        shard.close().await.expect("closes");
        let (appends, answers): (Vec<_>, Vec<_>) =
            [&[1][..], &[2, 3], &[4]].iter().map(|b| pending(b)).unzip();
        propose(&shard, 0, appends).await;
        let mut errors = Vec::new();
        for answer in answers {
            match answer.await.expect("every caller is answered") {
                Err(err) => errors.push(err),
                Ok(outcomes) => panic!("a stopped shard appended: {outcomes:?}"),
            }
        }
        assert!(
            matches!(errors[0], StoreError::Unavailable(_)),
            "{:?}",
            errors[0]
        );
        assert!(errors.iter().all(|e| e == &errors[0]), "{errors:?}");

        let (lone, answer) = pending(&[1]);
        propose(&shard, 0, vec![lone]).await;
        assert!(matches!(answer.await, Ok(Err(StoreError::Unavailable(_)))));

        let coalescer = AppendCoalescer::new(shard, Arc::new(vela_proto::clock::SystemClock));
        let (append, _answer) = pending(&[1]);
        let through_the_queue = coalescer
            .append(
                None,
                append.append.append.topic,
                0,
                append.append.append.messages,
            )
            .await;
        assert!(
            matches!(through_the_queue, Err(StoreError::Unavailable(_))),
            "{through_the_queue:?}"
        );
        coalescer.close();
        let (append, _answer) = pending(&[1]);
        let after_close = coalescer
            .append(
                None,
                append.append.append.topic,
                0,
                append.append.append.messages,
            )
            .await;
        assert_eq!(after_close, Err(shutting_down()));
    }
}

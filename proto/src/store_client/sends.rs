//! Send batching: a proxy's concurrent appends to one shard share calls to its leader.
//!
//! At most [`CALLS_PER_SHARD`] append call runs per shard. An append that finds it free goes
//! out at once as a plain `Append`: nothing waits for company, so a lone send pays no delay. An
//! append that finds it busy waits, and when the call finishes everything waiting goes
//! out (up to [`MAX_BATCH_APPENDS`] appends and [`MAX_BATCH_BYTES`]) as one `AppendMany`, which
//! the store proposes together. Under load a shard's log then writes, replicates and applies fewer,
//! larger entries, and the proxy and the store handle fewer calls: the Raft and gRPC work paid
//! per call and per entry, not per message, is what a single-message send cost in a cluster.
//!
//! Each append still gets its own answer. A call that fails fails every append in it (after the
//! usual retries through leader changes); an append the store answered with a retryable error
//! (its shard changed leader meanwhile) is retried alone, which is safe for the same reason any
//! retried send is: the shard deduplicates sends that name their client by (client id, message
//! id) (ADR 0012). A store node that answers `UNIMPLEMENTED` (an older version, during a
//! rolling restart) gets one `Append` per send, and is offered `AppendMany` again after
//! [`ASK_AGAIN_AFTER`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::Code;

use super::{RETRY_FOR, Routing};
use crate::domain::{MessageRecord, ShardId};
use crate::pb::store as pb;
use crate::store_api::{AppendOutcome, AppendRequest, StoreError};
use crate::store_wire::{append_result_from_wire, append_to_wire, outcome_from_wire};

/// Append calls in flight per shard; appends beyond them wait and go out together. One
/// measured best in the cluster benchmark (64 single-message producers through one proxy,
/// docs/benchmarks.md): 3,475–3,702 msg/s against 2,848–3,479 with 2 and 2,597–2,844 with 4,
/// with the least CPU per message; a lone send never waits either way.
pub(super) const CALLS_PER_SHARD: usize = 1;
/// Most appends one `AppendMany` carries.
const MAX_BATCH_APPENDS: usize = 256;
/// Most message bytes (approximate) one `AppendMany` carries; a larger append goes alone.
const MAX_BATCH_BYTES: usize = 4 << 20;
/// How long a store node that does not know `AppendMany` gets plain appends only.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(30);

type Outcome = Result<Vec<AppendOutcome>, StoreError>;

/// An append waiting for a call.
struct Waiting {
    req: AppendRequest,
    bytes: usize,
    reply: oneshot::Sender<Outcome>,
}

/// One shard's appends and calls.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    /// Calls running: an append's own, or a task sending what waits.
    calls: usize,
}

impl Queue {
    /// The oldest waiting appends, as many as fit one call; empty when nothing waits.
    fn take_batch(&mut self) -> Vec<Waiting> {
        let mut batch: Vec<Waiting> = Vec::new();
        let mut bytes = 0;
        while let Some(next) = self.waiting.front() {
            let full = batch.len() >= MAX_BATCH_APPENDS
                || (!batch.is_empty() && bytes + next.bytes > MAX_BATCH_BYTES);
            if full {
                break;
            }
            bytes += next.bytes;
            if let Some(next) = self.waiting.pop_front() {
                batch.push(next);
            }
        }
        batch
    }
}

/// The send queues of a [`Routing`], by shard.
#[derive(Default)]
pub(super) struct Sends {
    queues: Mutex<HashMap<ShardId, Queue>>,
    /// Append and AppendMany calls made (each counted once, however often it was retried).
    pub(super) calls: AtomicU64,
    /// Until when `AppendMany` is not offered: a store node answered it `UNIMPLEMENTED`.
    plain_until: Mutex<Option<Instant>>,
}

impl Sends {
    fn offers_many(&self) -> bool {
        let mut until = self.plain_until.lock();
        match *until {
            Some(t) if Instant::now() < t => false,
            Some(_) => {
                *until = None;
                true
            }
            None => true,
        }
    }
}

/// Appends `req` through `routing`, sharing a call with other appends to its shard when every
/// call to it is busy.
pub(super) async fn append(routing: &Arc<Routing>, req: AppendRequest) -> Outcome {
    let shard = req.shard;
    let answer = {
        let mut queues = routing.sends.queues.lock();
        let queue = queues.entry(shard).or_default();
        if queue.waiting.is_empty() && queue.calls < CALLS_PER_SHARD {
            queue.calls += 1;
            Err(req)
        } else {
            let (reply, answer) = oneshot::channel();
            let bytes = req.messages.iter().map(MessageRecord::approx_size).sum();
            queue.waiting.push_back(Waiting { req, bytes, reply });
            if queue.calls < CALLS_PER_SHARD {
                // Appends wait although a call is free (a task that should have sent them
                // could not start): send them now.
                queue.calls += 1;
                tokio::spawn(drain(routing.clone(), shard));
            }
            Ok(answer)
        }
    };
    match answer {
        Err(req) => {
            let _call = Call { routing, shard };
            append_one(routing, req).await
        }
        Ok(answer) => answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the call carrying this append was dropped".into(),
            ))
        }),
    }
}

/// A call slot taken by an append sending itself; handed to a task for the appends that queued
/// meanwhile, however the append's own call ends (answered, failed, or its caller gone).
struct Call<'a> {
    routing: &'a Arc<Routing>,
    shard: ShardId,
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        let mut queues = self.routing.sends.queues.lock();
        let Some(queue) = queues.get_mut(&self.shard) else {
            return;
        };
        if !queue.waiting.is_empty()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(drain(self.routing.clone(), self.shard));
            return;
        }
        queue.calls = queue.calls.saturating_sub(1);
    }
}

/// Sends what waits for `shard`, a call at a time, until nothing does; then gives the call slot
/// back.
async fn drain(routing: Arc<Routing>, shard: ShardId) {
    loop {
        let batch = {
            let mut queues = routing.sends.queues.lock();
            let Some(queue) = queues.get_mut(&shard) else {
                return;
            };
            let batch = queue.take_batch();
            if batch.is_empty() {
                queue.calls = queue.calls.saturating_sub(1);
                return;
            }
            batch
        };
        send_batch(&routing, shard, batch).await;
    }
}

/// One `Append` call (retried through leader changes, as every call).
async fn append_one(routing: &Routing, req: AppendRequest) -> Outcome {
    routing.sends.calls.fetch_add(1, Ordering::Relaxed);
    let wire = append_to_wire(&req);
    let reply = routing
        .on_shard(req.shard, RETRY_FOR, Duration::ZERO, |mut c| {
            let wire = wire.clone();
            async move { c.append(wire).await }
        })
        .await?;
    Ok(reply.outcomes.into_iter().map(outcome_from_wire).collect())
}

/// Sends `batch` as one `AppendMany` (or one `Append` each, where that is all the store knows)
/// and answers every append in it.
async fn send_batch(routing: &Routing, shard: ShardId, batch: Vec<Waiting>) {
    if batch.len() == 1 || !routing.sends.offers_many() {
        one_by_one(routing, batch).await;
        return;
    }
    routing.sends.calls.fetch_add(1, Ordering::Relaxed);
    let wire = pb::AppendManyRequest {
        shard,
        appends: batch.iter().map(|w| append_to_wire(&w.req)).collect(),
    };
    let reply = routing
        .on_shard(shard, RETRY_FOR, Duration::ZERO, |mut c| {
            let wire = wire.clone();
            async move {
                match c.append_many(wire).await {
                    // An older store node. A batch has at least two appends, so an empty
                    // answer can only mean this.
                    Err(status) if status.code() == Code::Unimplemented => {
                        Ok(tonic::Response::new(pb::AppendManyReply::default()))
                    }
                    other => other,
                }
            }
        })
        .await;
    let results = match reply {
        Ok(reply) if reply.results.is_empty() => {
            tracing::info!(
                shard,
                "a store node does not know AppendMany (an older version): sending one append \
                 per call for {ASK_AGAIN_AFTER:?}"
            );
            *routing.sends.plain_until.lock() = Some(Instant::now() + ASK_AGAIN_AFTER);
            one_by_one(routing, batch).await;
            return;
        }
        Ok(reply) if reply.results.len() == batch.len() => reply.results,
        Ok(reply) => {
            let err = StoreError::Internal(format!(
                "a store node answered {} results to {} appends",
                reply.results.len(),
                batch.len()
            ));
            for w in batch {
                w.reply.send(Err(err.clone())).ok();
            }
            return;
        }
        Err(err) => {
            for w in batch {
                w.reply.send(Err(err.clone())).ok();
            }
            return;
        }
    };
    let mut again = Vec::new();
    for (w, result) in batch.into_iter().zip(results) {
        match append_result_from_wire(result) {
            Err(err) if err.is_retryable() => again.push(w),
            outcome => {
                w.reply.send(outcome).ok();
            }
        }
    }
    one_by_one(routing, again).await;
}

/// Sends each append of `batch` on its own call, all at once, and answers each.
async fn one_by_one(routing: &Routing, batch: Vec<Waiting>) {
    futures::future::join_all(batch.into_iter().map(|w| async move {
        let outcome = append_one(routing, w.req).await;
        w.reply.send(outcome).ok();
    }))
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TopicName;

    fn waiting(bytes: usize) -> (Waiting, oneshot::Receiver<Outcome>) {
        let (reply, answer) = oneshot::channel();
        let req = AppendRequest {
            topic: TopicName::new("orders").expect("valid"),
            queue_id: 0,
            shard: 0,
            messages: Vec::new(),
            client_id: None,
        };
        (Waiting { req, bytes, reply }, answer)
    }

    #[test]
    fn a_call_takes_the_oldest_waiting_appends_within_its_bounds() {
        let mut queue = Queue::default();
        let mut answers = Vec::new();
        for bytes in [
            MAX_BATCH_BYTES / 2,
            10,
            MAX_BATCH_BYTES / 2,
            MAX_BATCH_BYTES * 2,
            1,
        ] {
            let (w, a) = waiting(bytes);
            queue.waiting.push_back(w);
            answers.push(a);
        }
        let sizes = |batch: &[Waiting]| batch.iter().map(|w| w.bytes).collect::<Vec<_>>();
        assert_eq!(
            sizes(&queue.take_batch()),
            [MAX_BATCH_BYTES / 2, 10],
            "the third would pass the byte bound"
        );
        assert_eq!(sizes(&queue.take_batch()), [MAX_BATCH_BYTES / 2]);
        assert_eq!(
            sizes(&queue.take_batch()),
            [MAX_BATCH_BYTES * 2],
            "an oversized append goes, alone"
        );
        assert_eq!(sizes(&queue.take_batch()), [1]);
        assert!(queue.take_batch().is_empty());

        for _ in 0..MAX_BATCH_APPENDS + 3 {
            let (w, a) = waiting(0);
            queue.waiting.push_back(w);
            answers.push(a);
        }
        assert_eq!(queue.take_batch().len(), MAX_BATCH_APPENDS);
        assert_eq!(queue.take_batch().len(), 3);
    }
}

//! Call batching: a proxy's concurrent requests of one kind to one shard share calls to its
//! leader (sends: `AppendMany`, see [`super::sends`]; acks: `AckMany`, see [`super::acks`]).
//!
//! At most [`CALLS_PER_SHARD`] call of a kind runs per shard. A request that finds it free goes
//! out at once on the single-request call: nothing waits for company, so a lone request pays no
//! delay. A request that finds it busy waits, and when the call finishes everything waiting goes
//! out (up to the kind's bounds in requests and bytes) as one batched call, which the store
//! handles together: under load the shard's log writes, replicates and applies fewer, larger
//! entries, and the proxy and the store handle fewer calls. The Raft and gRPC work paid per call
//! and per entry, not per message, is what a single-message request cost in a cluster.
//!
//! A batched call may first *linger* (`proxy.send_linger`, `proxy.ack_linger`): when requests
//! already waited for a busy call, the call that takes them waits that long before it goes, so
//! more gather and the shard writes fewer, larger entries; each costs the proxy, the leader and
//! every follower the same whatever it carries (docs/benchmarks.md, 2026-12-07: at 5,000 single
//! sends per second through a three-store cluster, 2 ms took the brokers' CPU per message from
//! 309–316 to 208 µs with the same latency percentiles). A lone send at an idle shard never
//! waits. A lone ack waits for the rest of its burst without a timer (`lone_yields`, see
//! `acks`), or lingers when `proxy.ack_linger` is set: a consumer acks every message of a
//! receive at once, and the first would otherwise go alone and the rest behind it, two
//! entries where one does.
//!
//! Each request still gets its own answer. A call that fails fails every request in it (after
//! the usual retries through leader changes); a request the store answered with a retryable
//! error (its shard changed leader meanwhile) is retried alone on its own call. A store node that
//! answers the batched call `UNIMPLEMENTED` (an older version, during a rolling restart) gets one
//! call per request of that kind, and is offered the batched call again after
//! [`ASK_AGAIN_AFTER`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Routing;
use crate::domain::ShardId;
use crate::store_api::StoreError;

/// Calls of a kind in flight per shard; requests beyond them wait and go out together. One
/// measured best for sends in the cluster benchmark (64 single-message producers through one
/// proxy, docs/benchmarks.md): 3,475–3,702 msg/s against 2,848–3,479 with 2 and 2,597–2,844
/// with 4, with the least CPU per message; a lone request never waits either way.
pub(super) const CALLS_PER_SHARD: usize = 1;
/// How long a store node that does not know a batched call gets single calls only.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(30);

/// What a batched call answers: one result per request, in order; `None` when the store node
/// does not know the call (an older version).
pub(super) type ManyResults<K> =
    Result<Option<Vec<Result<<K as Kind>::Out, StoreError>>>, StoreError>;

/// A kind of request that is batched per shard: its single and its batched call.
pub(super) trait Kind: Sized + Send + Sync + 'static {
    type Req: Send + Sync + 'static;
    /// A request as its calls carry it.
    type Wire: Send + Sync + 'static;
    type Out: Send + 'static;
    /// The batched call's name, for logs.
    const MANY: &'static str;
    /// Most requests one batched call carries.
    const MAX_REQUESTS: usize;
    /// Most bytes (approximate) one batched call carries; a larger request goes alone.
    const MAX_BYTES: usize;

    fn bytes(req: &Self::Req) -> usize;
    fn to_wire(req: &Self::Req) -> Self::Wire;
    /// This kind's queues and counters in `routing`.
    fn batcher(routing: &Routing) -> &Batcher<Self>;
    /// One request on its own call (retried through leader changes, as every call).
    fn call_one(
        routing: &Routing,
        shard: ShardId,
        wire: Self::Wire,
    ) -> impl Future<Output = Result<Self::Out, StoreError>> + Send + '_;
    /// Several requests on one batched call.
    fn call_many(
        routing: &Routing,
        shard: ShardId,
        wires: Vec<Self::Wire>,
    ) -> impl Future<Output = ManyResults<Self>> + Send + '_;
}

type Outcome<K> = Result<<K as Kind>::Out, StoreError>;

/// A batched call's reply, with `UNIMPLEMENTED` (an older store node) read as an empty one: a
/// batch has at least two requests, so an empty answer can only mean that.
pub(super) fn older_as_empty<R: Default>(
    reply: Result<tonic::Response<R>, tonic::Status>,
) -> Result<tonic::Response<R>, tonic::Status> {
    match reply {
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            Ok(tonic::Response::new(R::default()))
        }
        other => other,
    }
}

/// The results of a batched call's reply (`None`: it was empty, see [`older_as_empty`]).
pub(super) fn results_of<W, K: Kind>(
    results: Vec<W>,
    from_wire: fn(W) -> Result<K::Out, StoreError>,
) -> Option<Vec<Result<K::Out, StoreError>>> {
    (!results.is_empty()).then(|| results.into_iter().map(from_wire).collect())
}

/// A request waiting for a call.
struct Waiting<K: Kind> {
    req: K::Req,
    bytes: usize,
    reply: oneshot::Sender<Outcome<K>>,
}

/// One shard's waiting requests and calls of a kind.
struct Queue<K: Kind> {
    waiting: VecDeque<Waiting<K>>,
    /// Calls running: a request's own, or a task sending what waits.
    calls: usize,
}

impl<K: Kind> Default for Queue<K> {
    fn default() -> Self {
        Self {
            waiting: VecDeque::new(),
            calls: 0,
        }
    }
}

impl<K: Kind> Queue<K> {
    /// Whether a call that already carries `count` requests of `bytes` has no room for one of
    /// `next` bytes (a lone request goes whatever its size).
    fn full(count: usize, bytes: usize, next: usize) -> bool {
        count >= K::MAX_REQUESTS || (count > 0 && bytes + next > K::MAX_BYTES)
    }

    /// Whether at least as much waits as one call carries (nothing to gain by waiting for more).
    fn holds_full_batch(&self) -> bool {
        let mut bytes = 0;
        for (count, w) in self.waiting.iter().enumerate() {
            if Self::full(count, bytes, w.bytes) {
                return true;
            }
            bytes += w.bytes;
        }
        self.waiting.len() >= K::MAX_REQUESTS
    }

    /// The oldest waiting requests, as many as fit one call; empty when nothing waits.
    fn take_batch(&mut self) -> Vec<Waiting<K>> {
        let mut batch: Vec<Waiting<K>> = Vec::new();
        let mut bytes = 0;
        while let Some(next) = self.waiting.front() {
            if Self::full(batch.len(), bytes, next.bytes) {
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

/// The queues of one kind of request, by shard.
pub(super) struct Batcher<K: Kind> {
    queues: Mutex<HashMap<ShardId, Queue<K>>>,
    /// Calls made (single or batched; each counted once, however often it was retried).
    pub(super) calls: AtomicU64,
    /// Until when the batched call is not offered: a store node answered it `UNIMPLEMENTED`.
    single_until: Mutex<Option<Instant>>,
    /// How long a batched call waits for more requests before it goes (microseconds; 0: not
    /// at all).
    linger_us: AtomicU64,
    /// How often a request that finds its shard idle lets the runtime run before its call goes
    /// (0: it goes at once). Acks come in bursts, one per message of a receive, all read from
    /// the connection together: a few turns of the runtime let the rest of the burst queue, so
    /// it goes as one call instead of a lone first one and the rest behind it.
    lone_yields: u32,
}

impl<K: Kind> Default for Batcher<K> {
    fn default() -> Self {
        Self {
            queues: Mutex::default(),
            calls: AtomicU64::new(0),
            single_until: Mutex::new(None),
            linger_us: AtomicU64::new(0),
            lone_yields: 0,
        }
    }
}

impl<K: Kind> Batcher<K> {
    /// Makes each batched call wait `linger` for more requests before it goes.
    pub(super) fn set_linger(&self, linger: Duration) {
        let us = u64::try_from(linger.as_micros()).unwrap_or(u64::MAX);
        self.linger_us.store(us, Ordering::Relaxed);
    }

    /// A batcher whose lone requests let the runtime run `yields` times before their call goes
    /// (or linger, when a linger is set), so a burst shares the call.
    pub(super) fn gathering_bursts(yields: u32) -> Self {
        Self {
            lone_yields: yields,
            ..Self::default()
        }
    }

    fn linger(&self) -> Duration {
        Duration::from_micros(self.linger_us.load(Ordering::Relaxed))
    }

    fn offers_many(&self) -> bool {
        let mut until = self.single_until.lock();
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

/// Sends `req` to `shard` through `routing`, sharing a call with other requests of its kind to
/// the shard when every call to it is busy.
pub(super) async fn call<K: Kind>(
    routing: &Arc<Routing>,
    shard: ShardId,
    req: K::Req,
) -> Outcome<K> {
    let answer = {
        let batcher = K::batcher(routing);
        let lone_goes = batcher.lone_yields == 0;
        let mut queues = batcher.queues.lock();
        let queue = queues.entry(shard).or_default();
        if lone_goes && queue.waiting.is_empty() && queue.calls < CALLS_PER_SHARD {
            queue.calls += 1;
            Err(req)
        } else {
            let (reply, answer) = oneshot::channel();
            let bytes = K::bytes(&req);
            queue.waiting.push_back(Waiting { req, bytes, reply });
            if queue.calls < CALLS_PER_SHARD {
                // The call is free: the request waits for the rest of its burst (see
                // `lone_yields`), or requests wait although a call is free (a task that should
                // have sent them could not start). A call takes them now.
                queue.calls += 1;
                tokio::spawn(drain::<K>(routing.clone(), shard));
            }
            Ok(answer)
        }
    };
    match answer {
        Err(req) => {
            let _call = CallSlot::<K> {
                routing,
                shard,
                kind: std::marker::PhantomData,
            };
            call_one::<K>(routing, shard, &req).await
        }
        Ok(answer) => answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "the {} call carrying this request was dropped",
                K::MANY
            )))
        }),
    }
}

/// A call slot taken by a request sending itself; handed to a task for the requests that
/// queued meanwhile, however the request's own call ends (answered, failed, or its caller gone).
struct CallSlot<'a, K: Kind> {
    routing: &'a Arc<Routing>,
    shard: ShardId,
    kind: std::marker::PhantomData<K>,
}

impl<K: Kind> Drop for CallSlot<'_, K> {
    fn drop(&mut self) {
        let mut queues = K::batcher(self.routing).queues.lock();
        let Some(queue) = queues.get_mut(&self.shard) else {
            return;
        };
        if !queue.waiting.is_empty()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(drain::<K>(self.routing.clone(), self.shard));
            return;
        }
        queue.calls = queue.calls.saturating_sub(1);
    }
}

/// Sends what waits for `shard`, a call at a time (each after the kind's linger, unless a full
/// batch already waits), until nothing does; then gives the call slot back.
async fn drain<K: Kind>(routing: Arc<Routing>, shard: ShardId) {
    let linger = K::batcher(&routing).linger();
    let yields = K::batcher(&routing).lone_yields;
    loop {
        if !full_batch_waits::<K>(&routing, shard) {
            if !linger.is_zero() {
                tokio::time::sleep(linger).await;
            } else {
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
            }
        }
        let batch = {
            let mut queues = K::batcher(&routing).queues.lock();
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
        send_batch::<K>(&routing, shard, batch).await;
    }
}

/// Whether at least as much waits for `shard` as one call carries.
fn full_batch_waits<K: Kind>(routing: &Routing, shard: ShardId) -> bool {
    let queues = K::batcher(routing).queues.lock();
    queues.get(&shard).is_some_and(Queue::holds_full_batch)
}

async fn call_one<K: Kind>(routing: &Routing, shard: ShardId, req: &K::Req) -> Outcome<K> {
    K::batcher(routing).calls.fetch_add(1, Ordering::Relaxed);
    K::call_one(routing, shard, K::to_wire(req)).await
}

/// How often a batched call goes again, as one, to the leader a node that does not lead the
/// shard named (see [`send_batch`]).
const BATCH_REDIRECTS: usize = 2;

/// Sends `batch` as one batched call (or one single call each, where that is all the store
/// knows) and answers every request in it.
async fn send_batch<K: Kind>(routing: &Routing, shard: ShardId, mut batch: Vec<Waiting<K>>) {
    let batcher = K::batcher(routing);
    if batch.len() == 1 || !batcher.offers_many() {
        one_by_one::<K>(routing, shard, batch).await;
        return;
    }
    batcher.calls.fetch_add(1, Ordering::Relaxed);
    let mut redirects = 0;
    loop {
        let wires = batch.iter().map(|w| K::to_wire(&w.req)).collect();
        let results = match K::call_many(routing, shard, wires).await {
            Ok(None) => {
                tracing::info!(
                    shard,
                    call = K::MANY,
                    "a store node does not know a batched call (an older version): sending one \
                     request per call for {ASK_AGAIN_AFTER:?}"
                );
                *batcher.single_until.lock() = Some(Instant::now() + ASK_AGAIN_AFTER);
                one_by_one::<K>(routing, shard, batch).await;
                return;
            }
            Ok(Some(results)) if results.len() == batch.len() => results,
            Ok(Some(results)) => {
                let err = StoreError::Internal(format!(
                    "a store node answered {} results to {} requests of {}",
                    results.len(),
                    batch.len(),
                    K::MANY
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
        // Whether every request to go again was refused as "not the leader", and whom the
        // answering node named.
        let (mut not_led, mut hint) = (true, None);
        for (w, result) in batch.into_iter().zip(results) {
            match result {
                Err(err) if err.is_retryable() => {
                    match err {
                        StoreError::NotLeader { leader, .. } => hint = hint.or(leader),
                        _ => not_led = false,
                    }
                    again.push(w);
                }
                outcome => {
                    w.reply.send(outcome).ok();
                }
            }
        }
        if not_led && again.len() > 1 && redirects < BATCH_REDIRECTS {
            // The node the proxy took for the leader does not lead the shard (leadership
            // moved): the call goes again, as one, where that node pointed.
            redirects += 1;
            routing.follow_hint(shard, hint);
            batch = again;
            continue;
        }
        one_by_one::<K>(routing, shard, again).await;
        return;
    }
}

/// Sends each request of `batch` on its own call, all at once, and answers each.
async fn one_by_one<K: Kind>(routing: &Routing, shard: ShardId, batch: Vec<Waiting<K>>) {
    futures::future::join_all(batch.into_iter().map(|w| async move {
        let outcome = call_one::<K>(routing, shard, &w.req).await;
        w.reply.send(outcome).ok();
    }))
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kind with small bounds; its calls are never made here.
    struct Small;

    impl Kind for Small {
        type Req = usize;
        type Wire = usize;
        type Out = ();
        const MANY: &'static str = "SmallMany";
        const MAX_REQUESTS: usize = 4;
        const MAX_BYTES: usize = 100;

        fn bytes(req: &usize) -> usize {
            *req
        }
        fn to_wire(req: &usize) -> usize {
            *req
        }
        fn batcher(_: &Routing) -> &Batcher<Self> {
            unreachable!("not called by take_batch")
        }
        async fn call_one(_: &Routing, _: ShardId, _: usize) -> Result<(), StoreError> {
            Ok(())
        }
        async fn call_many(_: &Routing, _: ShardId, _: Vec<usize>) -> ManyResults<Self> {
            Ok(None)
        }
    }

    /// A kind whose calls are counted; `$yields` as its batcher's lone requests yield.
    macro_rules! counted_kind {
        ($name:ident, $yields:expr) => {
            struct $name;
            impl $name {
                fn counts() -> &'static (AtomicU64, AtomicU64) {
                    static COUNTS: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));
                    &COUNTS
                }
            }
            impl Kind for $name {
                type Req = usize;
                type Wire = usize;
                type Out = usize;
                const MANY: &'static str = "CountedMany";
                const MAX_REQUESTS: usize = 256;
                const MAX_BYTES: usize = usize::MAX;

                fn bytes(_: &usize) -> usize {
                    0
                }
                fn to_wire(req: &usize) -> usize {
                    *req
                }
                fn batcher(_: &Routing) -> &Batcher<Self> {
                    static BATCHER: std::sync::LazyLock<Batcher<$name>> =
                        std::sync::LazyLock::new(|| Batcher::gathering_bursts($yields));
                    &BATCHER
                }
                async fn call_one(_: &Routing, _: ShardId, req: usize) -> Outcome<Self> {
                    Self::counts().0.fetch_add(1, Ordering::Relaxed);
                    // A call takes a while: other tasks run meanwhile.
                    tokio::task::yield_now().await;
                    Ok(req)
                }
                async fn call_many(_: &Routing, _: ShardId, reqs: Vec<usize>) -> ManyResults<Self> {
                    Self::counts().1.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                    Ok(Some(reqs.into_iter().map(Ok).collect()))
                }
            }
        };
    }
    counted_kind!(Gathering, 4);
    counted_kind!(Immediate, 0);

    fn routing() -> Arc<Routing> {
        let map = super::super::ClusterMap {
            stores: [(1, "127.0.0.1:9".to_owned())].into(),
            shards: [(0, vec![1])].into(),
        };
        Arc::new(Routing::new(map).expect("a valid map"))
    }

    /// 32 requests made at once, as a consumer's acks of one receive arrive: (single calls,
    /// batched calls) they took, each answered with its own value.
    async fn burst<K: Kind<Req = usize, Out = usize>>(
        counts: &(AtomicU64, AtomicU64),
    ) -> (u64, u64) {
        let routing = routing();
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let routing = routing.clone();
                tokio::spawn(async move { call::<K>(&routing, 0, i).await })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.expect("joins").expect("answered"), i);
        }
        (
            counts.0.load(Ordering::Relaxed),
            counts.1.load(Ordering::Relaxed),
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_burst_shares_one_call_when_its_first_request_lets_the_rest_queue() {
        assert_eq!(burst::<Gathering>(Gathering::counts()).await, (0, 1));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_first_request_that_goes_at_once_leaves_the_rest_a_second_call() {
        assert_eq!(burst::<Immediate>(Immediate::counts()).await, (1, 1));
    }

    /// A store node of a version before it refused whole batched calls: asked for a shard it
    /// does not lead, it answers each request `NotLeader` naming node 2. Counts (single calls,
    /// batched calls).
    struct OlderStore;

    impl OlderStore {
        fn counts() -> &'static (AtomicU64, AtomicU64) {
            static COUNTS: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));
            &COUNTS
        }
    }

    impl Kind for OlderStore {
        type Req = usize;
        type Wire = usize;
        type Out = usize;
        const MANY: &'static str = "OlderMany";
        const MAX_REQUESTS: usize = 256;
        const MAX_BYTES: usize = usize::MAX;

        fn bytes(_: &usize) -> usize {
            0
        }
        fn to_wire(req: &usize) -> usize {
            *req
        }
        fn batcher(_: &Routing) -> &Batcher<Self> {
            static BATCHER: std::sync::LazyLock<Batcher<OlderStore>> =
                std::sync::LazyLock::new(|| Batcher::gathering_bursts(4));
            &BATCHER
        }
        async fn call_one(_: &Routing, _: ShardId, req: usize) -> Outcome<Self> {
            Self::counts().0.fetch_add(1, Ordering::Relaxed);
            Ok(req)
        }
        async fn call_many(
            routing: &Routing,
            shard: ShardId,
            reqs: Vec<usize>,
        ) -> ManyResults<Self> {
            Self::counts().1.fetch_add(1, Ordering::Relaxed);
            tokio::task::yield_now().await;
            // As `on_shard` would: a call that succeeded records the node it went to.
            let leading = routing.known_leader(shard) == Some(2);
            Ok(Some(
                reqs.into_iter()
                    .map(|r| {
                        if leading {
                            Ok(r)
                        } else {
                            Err(StoreError::NotLeader {
                                shard,
                                leader: Some(2),
                            })
                        }
                    })
                    .collect(),
            ))
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_burst_an_older_store_refuses_request_by_request_goes_again_as_one_call() {
        let map = super::super::ClusterMap {
            stores: [
                (1, "127.0.0.1:9".to_owned()),
                (2, "127.0.0.1:10".to_owned()),
            ]
            .into(),
            shards: [(0, vec![1, 2])].into(),
        };
        let routing = Arc::new(Routing::new(map).expect("a valid map"));
        routing.follow_hint(0, Some(1));
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let routing = routing.clone();
                tokio::spawn(async move { call::<OlderStore>(&routing, 0, i).await })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.expect("joins").expect("answered"), i);
        }
        let counts = OlderStore::counts();
        assert_eq!(
            (
                counts.0.load(Ordering::Relaxed),
                counts.1.load(Ordering::Relaxed)
            ),
            (0, 2),
            "one refused call, then one to the leader it named; no request alone"
        );
        assert_eq!(routing.known_leader(0), Some(2));
    }

    #[test]
    fn a_call_takes_the_oldest_waiting_requests_within_its_bounds() {
        let mut queue = Queue::<Small>::default();
        let mut answers = Vec::new();
        let mut wait = |queue: &mut Queue<Small>, bytes: usize| {
            let (reply, answer) = oneshot::channel();
            queue.waiting.push_back(Waiting {
                req: bytes,
                bytes,
                reply,
            });
            answers.push(answer);
        };
        for bytes in [50, 10, 50, 200, 1] {
            wait(&mut queue, bytes);
        }
        let sizes = |batch: &[Waiting<Small>]| batch.iter().map(|w| w.bytes).collect::<Vec<_>>();
        assert_eq!(
            sizes(&queue.take_batch()),
            [50, 10],
            "the third would pass the byte bound"
        );
        assert_eq!(sizes(&queue.take_batch()), [50]);
        assert_eq!(
            sizes(&queue.take_batch()),
            [200],
            "an oversized request goes, alone"
        );
        assert_eq!(sizes(&queue.take_batch()), [1]);
        assert!(queue.take_batch().is_empty());

        for _ in 0..Small::MAX_REQUESTS + 3 {
            wait(&mut queue, 0);
        }
        assert_eq!(queue.take_batch().len(), Small::MAX_REQUESTS);
        assert_eq!(queue.take_batch().len(), 3);
    }
}

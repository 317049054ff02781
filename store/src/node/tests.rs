//! The store on real vela-raft logs in a temp dir: durability across restarts, snapshots,
//! long polling, delay accuracy, transactions; background upkeep (retention, scrub) in `upkeep`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use vela_proto::clock::{Clock, SharedClock, SystemClock};
use vela_proto::domain::{GroupName, MessageKind, MessageRecord, TagFilter, TopicName};
use vela_proto::store_api::{
    AppendRequest, PopRequest, QueueSelector, StoreApi, StoreError, TransactionResolution,
};

use super::*;

mod broadcast;
mod clock;
mod fairness;
mod lookup;
mod offsets;
mod replicated;
mod sql;
mod tiering;
mod topic_drop;
mod topic_retention;
mod transactions;
mod upkeep;

#[derive(Debug)]
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl ManualClock {
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }

    /// Steps the clock back by `d`.
    fn rewind(&self, d: Duration) {
        self.0.fetch_sub(d.as_millis() as i64, Ordering::SeqCst);
    }
}

fn manual_clock() -> (Arc<ManualClock>, SharedClock) {
    let clock = Arc::new(ManualClock(AtomicI64::new(1_700_000_000_000)));
    (clock.clone(), clock)
}

/// A store in a fresh directory on a manual clock: the directory (keep it alive), the clock,
/// the clock as the store sees it (to reopen on it), the store.
async fn open_on_manual_clock() -> (tempfile::TempDir, Arc<ManualClock>, SharedClock, Arc<Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clock, shared) = manual_clock();
    let store = Store::open(config(dir.path()), shared.clone())
        .await
        .expect("opens");
    (dir, clock, shared, store)
}

fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        data_dir: dir.to_path_buf(),
        // The machine's disk is shared: its fill must not refuse these tests' sends (the guard
        // has its own test).
        disk_full_ratio: 1.0,
        ..StoreConfig::default()
    }
}

fn topic() -> TopicName {
    TopicName::new("orders").expect("valid")
}

fn group() -> GroupName {
    GroupName::new("billing").expect("valid")
}

fn message(body: &str) -> MessageRecord {
    MessageRecord {
        message_id: format!("id-{body}"),
        topic: topic(),
        kind: MessageKind::Normal,
        tag: Some("A".into()),
        keys: vec![],
        message_group: None,
        delivery_timestamp_ms: None,
        born_timestamp_ms: 1,
        born_host: "test".into(),
        trace_context: None,
        properties: vec![],
        body: Bytes::from(body.to_owned()),
    }
}

fn append(messages: Vec<MessageRecord>) -> AppendRequest {
    AppendRequest {
        topic: topic(),
        queue_id: 0,
        shard: 0,
        messages,
        client_id: None,
    }
}

/// One message with `body` for `topic`'s queue 0.
fn on(topic: &TopicName, body: &str) -> AppendRequest {
    AppendRequest {
        topic: topic.clone(),
        messages: vec![MessageRecord {
            topic: topic.clone(),
            ..message(body)
        }],
        ..append(vec![])
    }
}

/// A receive of up to 32 by `group` from `topic`, not waiting.
fn pop_from(topic: &TopicName, group: &str) -> PopRequest {
    PopRequest {
        topic: topic.clone(),
        group: GroupName::new(group).expect("valid"),
        ..pop(32, Duration::ZERO)
    }
}

fn pop(max: u32, wait: Duration) -> PopRequest {
    PopRequest {
        group: group(),
        topic: topic(),
        queues: QueueSelector::All,
        max_messages: max,
        invisible: Duration::from_secs(30),
        filter: TagFilter::All.into(),
        fifo: false,
        max_attempts: 16,
        wait,
        group_created_ms: None,
        group_start: Default::default(),
        shards: Vec::new(),
        client_id: None,
    }
}

/// Reads the applied state of shard `shard` on `store`.
fn read_state<T>(
    store: &Store,
    shard: ShardId,
    read: impl FnOnce(&crate::state::ShardState) -> T,
) -> T {
    read(&store.shards()[&shard].shard.shared.applied.read().state)
}

fn bodies(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| String::from_utf8_lossy(&d.message.body).into_owned())
        .collect()
}

#[tokio::test]
async fn acks_and_in_flight_state_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clock, shared) = manual_clock();
    let store = Store::open(config(dir.path()), shared.clone())
        .await
        .expect("opens");
    let outcomes = store
        .append(append(vec![message("a"), message("b"), message("c")]))
        .await
        .expect("appends");
    assert_eq!(
        outcomes.iter().map(|o| o.offset).collect::<Vec<_>>(),
        vec![Some(0), Some(1), Some(2)]
    );
    let got = store.pop(pop(2, Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&got), vec!["a", "b"]);
    assert_eq!(
        got[0].message,
        message("a"),
        "the record comes back from the log unchanged"
    );
    assert_eq!(got[0].attempt, 1);
    store.ack(&got[0].ticket).await.expect("acks");
    assert!(matches!(
        store.ack(&got[0].ticket).await,
        Err(StoreError::StaleReceipt(_))
    ));
    store.shutdown().await.expect("shuts down");
    drop(store);

    let store = Store::open(config(dir.path()), shared.clone())
        .await
        .expect("reopens");
    assert!(
        matches!(
            store.ack(&got[0].ticket).await,
            Err(StoreError::StaleReceipt(_))
        ),
        "ack survived"
    );
    let next = store.pop(pop(32, Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&next), vec!["c"], "b is still in flight, a is acked");
    clock.advance(Duration::from_secs(30));
    let again = store.pop(pop(32, Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&again), vec!["b", "c"]);
    assert_eq!(
        again.iter().map(|d| d.attempt).collect::<Vec<_>>(),
        vec![2, 2]
    );
    let more = store
        .append(append(vec![message("d")]))
        .await
        .expect("appends");
    assert_eq!(more[0].offset, Some(3), "offsets continue after a restart");
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn a_resent_message_is_stored_once_across_a_restart_and_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clock, shared) = manual_clock();
    let from = |client: &str, bodies: &[&str]| AppendRequest {
        client_id: Some(vela_proto::ClientId::new(client).expect("valid client id")),
        ..append(bodies.iter().map(|b| message(b)).collect())
    };
    let offsets = |outcomes: Vec<vela_proto::store_api::AppendOutcome>| {
        outcomes.iter().map(|o| o.offset).collect::<Vec<_>>()
    };
    let store = Store::open(config(dir.path()), shared.clone())
        .await
        .expect("opens");
    let first = store
        .append(from("c@1", &["a", "b"]))
        .await
        .expect("appends");
    assert_eq!(offsets(first), vec![Some(0), Some(1)]);
    // A retry of both plus a new one: only the new one is appended.
    let retry = store
        .append(from("c@1", &["a", "b", "c"]))
        .await
        .expect("appends");
    assert_eq!(offsets(retry), vec![Some(0), Some(1), Some(2)]);
    // The same message ids from another client are other messages.
    let other = store.append(from("c@2", &["a"])).await.expect("appends");
    assert_eq!(offsets(other), vec![Some(3)]);
    store.shutdown().await.expect("shuts down");
    drop(store);

    // Reopened from the log alone, then from a snapshot: the window is state like any other.
    for round in 0..2 {
        let store = Store::open(config(dir.path()), shared.clone())
            .await
            .expect("reopens");
        let again = store.append(from("c@1", &["b"])).await.expect("appends");
        assert_eq!(offsets(again), vec![Some(1)], "round {round}");
        if round == 0 {
            store.snapshot().await.expect("snapshots");
        }
        store.shutdown().await.expect("shuts down");
    }
    let store = Store::open(config(dir.path()), shared.clone())
        .await
        .expect("reopens");
    let got = store.pop(pop(32, Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&got), vec!["a", "b", "c", "a"]);
    // Two minutes of sends later a resend is a new message (the window's clock moves by at
    // most a second per entry, so time passes in steps, as on a busy shard).
    for i in 0..121 {
        clock.advance(Duration::from_secs(1));
        store
            .append(from("c@3", &[&format!("tick-{i}")]))
            .await
            .expect("appends");
    }
    let late = store.append(from("c@1", &["a"])).await.expect("appends");
    assert_eq!(offsets(late), vec![Some(125)]);
    store.shutdown().await.expect("shuts down");
}

/// Entries that carry many bytes trigger a snapshot before `snapshot_every_entries` would, so
/// what a restart replays stays bounded in bytes.
#[tokio::test]
async fn bytes_applied_trigger_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_clock, shared) = manual_clock();
    let cfg = StoreConfig {
        snapshot_every_entries: 1_000_000,
        snapshot_every_bytes: bytesize::ByteSize::kib(4),
        ..config(dir.path())
    };
    let store = Arc::new(Store::open(cfg, shared).await.expect("opens"));
    let hub = vela_telemetry::MetricsHub::standalone();
    store.register_metrics(
        &hub.meter("vela-store"),
        &vela_telemetry::NodeLabels::unnamed(vela_telemetry::NodeType::Store),
    );
    let snapshots = || {
        std::fs::read_dir(dir.path().join("shards/0/snapshots"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(snapshots(), 0);
    let big = MessageRecord {
        body: Bytes::from(vec![b'x'; 8 * 1024]),
        ..message("big")
    };
    store.append(append(vec![big])).await.expect("appends");
    let deadline = Instant::now() + Duration::from_secs(20);
    while snapshots() == 0 {
        assert!(Instant::now() < deadline, "no snapshot after 8 KiB applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The build was timed, as the append's write was; the index file has a size.
    let counted = |text: &str, family: &str| {
        text.lines()
            .filter(|l| l.starts_with(&format!("{family}_count")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    loop {
        let text = hub.prometheus_text().expect("encodes");
        if counted(&text, "vela_store_snapshot_seconds") >= 1 {
            assert!(counted(&text, "vela_raft_write_seconds") >= 1, "{text}");
            assert!(
                text.lines()
                    .any(|l| l.starts_with("vela_store_index_bytes{")),
                "{text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no timed snapshot: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Arc::into_inner(store)
        .expect("one owner")
        .shutdown()
        .await
        .expect("shuts down");
}

#[tokio::test]
async fn state_restores_from_a_snapshot_plus_the_log_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clock, shared) = manual_clock();
    let cfg = StoreConfig {
        snapshot_every_entries: 7,
        ..config(dir.path())
    };
    let store = Store::open(cfg.clone(), shared.clone())
        .await
        .expect("opens");
    for i in 0..20 {
        store
            .append(append(vec![message(&i.to_string())]))
            .await
            .expect("appends");
    }
    let got = store.pop(pop(10, Duration::ZERO)).await.expect("pops");
    for d in &got[..5] {
        store.ack(&d.ticket).await.expect("acks");
    }
    store.snapshot().await.expect("snapshots");
    let changed = store
        .change_invisible(&got[5].ticket, Duration::from_secs(300))
        .await
        .expect("changes");
    store
        .append(append(vec![message("after-snapshot")]))
        .await
        .expect("appends");
    let stats_before = store
        .queue_stats(&topic(), Some(&group()), &[])
        .await
        .expect("stats");
    store.shutdown().await.expect("shuts down");
    assert!(
        std::fs::read_dir(dir.path().join("shards/0/snapshots"))
            .expect("snapshot directory")
            .count()
            > 0
    );

    let store = Store::open(cfg, shared).await.expect("reopens");
    assert_eq!(
        store
            .queue_stats(&topic(), Some(&group()), &[])
            .await
            .expect("stats"),
        stats_before
    );
    assert!(
        matches!(
            store.ack(&got[5].ticket).await,
            Err(StoreError::StaleReceipt(_))
        ),
        "old handle stays dead"
    );
    clock.advance(Duration::from_secs(30));
    let redelivered = store.pop(pop(32, Duration::ZERO)).await.expect("pops");
    let names = bodies(&redelivered);
    assert_eq!(
        names[..4],
        ["6", "7", "8", "9"],
        "in-flight ones whose deadline passed come back first"
    );
    assert!(names.contains(&"after-snapshot".to_owned()));
    assert!(
        !names.contains(&"5".to_owned()),
        "its invisibility was extended"
    );
    store
        .ack(&changed)
        .await
        .expect("the changed handle still acks");
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn long_poll_wakes_when_a_message_arrives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(config(dir.path()), Arc::new(SystemClock))
        .await
        .expect("opens");
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let got = store.pop(pop(1, Duration::from_secs(10))).await;
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "nothing to receive yet");
    store
        .append(append(vec![message("hello")]))
        .await
        .expect("appends");
    let (got, waited) = waiting.await.expect("joins");
    assert_eq!(bodies(&got.expect("pops")), vec!["hello"]);
    assert!(
        waited < Duration::from_secs(2),
        "woke on arrival, after {waited:?}"
    );
    // With nothing arriving, a long poll ends empty at its deadline.
    let started = Instant::now();
    assert!(
        store
            .pop(pop(1, Duration::from_millis(300)))
            .await
            .expect("pops")
            .is_empty()
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn long_poll_wakes_at_a_redelivery_deadline_and_when_a_fifo_group_frees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(config(dir.path()), Arc::new(SystemClock))
        .await
        .expect("opens");
    let fifo = |wait| PopRequest {
        fifo: true,
        invisible: Duration::from_millis(400),
        ..pop(1, wait)
    };
    let grouped = |body: &str| MessageRecord {
        message_group: Some("g".into()),
        kind: MessageKind::Fifo,
        ..message(body)
    };
    store
        .append(append(vec![grouped("first"), grouped("second")]))
        .await
        .expect("appends");
    let first = store.pop(fifo(Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&first), vec!["first"]);

    // Nothing else is deliverable until "first" expires: the long poll sleeps until then.
    let started = Instant::now();
    let again = store.pop(fifo(Duration::from_secs(5))).await.expect("pops");
    assert_eq!(bodies(&again), vec!["first"]);
    assert_eq!(again[0].attempt, 2);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "waited {waited:?}"
    );

    // Acking it frees the group and wakes a waiting receiver.
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move { store.pop(fifo(Duration::from_secs(5))).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    store.ack(&again[0].ticket).await.expect("acks");
    let next = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("woke")
        .expect("joins");
    assert_eq!(bodies(&next.expect("pops")), vec!["second"]);
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn a_node_with_several_shards_serves_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_clock, shared) = manual_clock();
    let cfg = StoreConfig {
        shards: vec![0, 1],
        ..config(dir.path())
    };
    let store = Store::open(cfg, shared).await.expect("opens");
    assert_eq!(store.shard_ids(), vec![0, 1]);
    store
        .append(append(vec![message("zero")]))
        .await
        .expect("appends to shard 0");
    let on_one = AppendRequest {
        shard: 1,
        queue_id: 1,
        ..append(vec![message("one")])
    };
    store.append(on_one).await.expect("appends to shard 1");
    let mut got = store.pop(pop(32, Duration::ZERO)).await.expect("pops");
    got.extend(store.pop(pop(32, Duration::ZERO)).await.expect("pops"));
    let mut names = bodies(&got);
    names.sort();
    assert_eq!(names, vec!["one", "zero"]);
    let on_shard_one = got
        .iter()
        .find(|d| d.queue_id == 1)
        .expect("delivery from queue 1");
    assert_eq!(on_shard_one.ticket.shard, 1);
    store
        .ack(&on_shard_one.ticket)
        .await
        .expect("acks on shard 1");
    let stats = store
        .queue_stats(&topic(), Some(&group()), &[])
        .await
        .expect("stats");
    assert_eq!(
        stats.iter().map(|s| s.queue_id).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert!(dir.path().join("shards/1/log").is_dir());
    store
        .drop_group(&group(), vela_proto::GroupDropId { id: 3, floor: 0 }, &[])
        .await
        .expect("drops the group on every shard");
    assert!(
        store
            .queue_stats(&topic(), Some(&group()), &[])
            .await
            .expect("stats")
            .iter()
            .all(|s| s.groups.is_empty())
    );
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn delay_messages_are_released_on_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock: SharedClock = Arc::new(SystemClock);
    let store = Store::open(config(dir.path()), clock.clone())
        .await
        .expect("opens");
    let mut lateness = Vec::new();
    for delay_ms in [200, 400, 600] {
        let due = clock.now_ms() + delay_ms;
        let delayed = MessageRecord {
            kind: MessageKind::Delay,
            delivery_timestamp_ms: Some(due),
            ..message(&delay_ms.to_string())
        };
        let outcome = store.append(append(vec![delayed])).await.expect("appends");
        assert_eq!(outcome[0].offset, None, "not in the queue before it is due");
        let got = store
            .pop(pop(1, Duration::from_secs(5)))
            .await
            .expect("pops");
        let late = clock.now_ms() - due;
        assert_eq!(bodies(&got), vec![delay_ms.to_string()]);
        assert!(late >= 0, "released {}ms early", -late);
        lateness.push(late);
    }
    assert!(
        lateness.iter().all(|l| *l < 100),
        "lateness {lateness:?} ms"
    );
    let too_far = MessageRecord {
        delivery_timestamp_ms: Some(clock.now_ms() + 25 * 3600 * 1000),
        ..message("far")
    };
    assert!(matches!(
        store.append(append(vec![too_far])).await,
        Err(StoreError::Invalid(_))
    ));
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn transactions_change_invisible_and_dead_letters_through_the_api() {
    let (_dir, _clock, _shared, store) = open_on_manual_clock().await;
    let half = MessageRecord {
        kind: MessageKind::Transaction,
        ..message("tx")
    };
    let outcome = store
        .append(append(vec![half.clone(), half]))
        .await
        .expect("appends");
    let ids: Vec<String> = outcome
        .iter()
        .map(|o| o.transaction_id.clone().expect("transaction id"))
        .collect();
    assert!(
        store
            .pop(pop(1, Duration::ZERO))
            .await
            .expect("pops")
            .is_empty()
    );
    store
        .end_transaction(&topic(), &ids[0], TransactionResolution::Commit)
        .await
        .expect("commits");
    store
        .end_transaction(&topic(), &ids[1], TransactionResolution::Rollback)
        .await
        .expect("rolls back");
    assert!(matches!(
        store
            .end_transaction(&topic(), &ids[1], TransactionResolution::Commit)
            .await,
        Err(StoreError::TransactionNotFound(_))
    ));
    assert!(matches!(
        store
            .end_transaction(&topic(), "9-1-1", TransactionResolution::Commit)
            .await,
        Err(StoreError::TransactionNotFound(_))
    ));
    let got = store.pop(pop(32, Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&got), vec!["tx"]);
    let renewed = store
        .change_invisible(&got[0].ticket, Duration::from_secs(60))
        .await
        .expect("changes");
    assert_ne!(renewed.delivery_id, got[0].ticket.delivery_id);
    assert!(matches!(
        store.ack(&got[0].ticket).await,
        Err(StoreError::StaleReceipt(_))
    ));
    store.dead_letter(&renewed).await.expect("dead-letters");
    let dlq = PopRequest {
        topic: group().dead_letter_topic(),
        ..pop(32, Duration::ZERO)
    };
    let dead = store.pop(dlq).await.expect("pops the dlq");
    assert_eq!(bodies(&dead), vec!["tx"]);
    assert_eq!(dead[0].topic, group().dead_letter_topic());
    assert_eq!(dead[0].ticket.topic, group().dead_letter_topic());
    assert!(matches!(
        store
            .append(AppendRequest {
                shard: 5,
                ..append(vec![message("x")])
            })
            .await,
        Err(StoreError::Invalid(_))
    ));
    store.shutdown().await.expect("shuts down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_entries_and_get_dense_offsets() {
    const TASKS: usize = 200;
    const SENDS: usize = 20;
    const QUEUES: u32 = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    // A tiny entry cache, so most bodies are read back from the segment files.
    let cfg = StoreConfig {
        log_cache: bytesize::ByteSize::kib(16),
        ..config(dir.path())
    };
    let store = Store::open(cfg, Arc::new(SystemClock))
        .await
        .expect("opens");
    let mut senders = JoinSet::new();
    for task in 0..TASKS {
        let store = store.clone();
        senders.spawn(async move {
            let queue_id = task as u32 % QUEUES;
            let mut placed = Vec::with_capacity(SENDS);
            for i in 0..SENDS {
                let body = format!("{task}-{i}");
                let outcomes = store
                    .append(AppendRequest {
                        queue_id,
                        ..append(vec![message(&body)])
                    })
                    .await
                    .expect("appends");
                assert_eq!(outcomes.len(), 1);
                let offset = outcomes[0]
                    .offset
                    .expect("a normal message is indexed at once");
                placed.push((queue_id, offset, body));
            }
            placed
        });
    }
    let mut sent: BTreeMap<(u32, u64), String> = BTreeMap::new();
    while let Some(placed) = senders.join_next().await {
        let placed = placed.expect("joins");
        assert!(
            placed.windows(2).all(|w| w[0].1 < w[1].1),
            "one caller's sequential sends keep their order"
        );
        for (queue_id, offset, body) in placed {
            assert!(
                sent.insert((queue_id, offset), body).is_none(),
                "offset {offset} of queue {queue_id} given twice"
            );
        }
    }
    assert_eq!(sent.len(), TASKS * SENDS);
    for queue_id in 0..QUEUES {
        let offsets: Vec<u64> = sent
            .keys()
            .filter(|(q, _)| *q == queue_id)
            .map(|(_, o)| *o)
            .collect();
        let expected: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(offsets, expected, "offsets of queue {queue_id} are dense");
    }
    let entries = store.shards()[&0].shard.shared.last_applied_index();
    assert!(
        entries < (TASKS * SENDS) as u64,
        "{} sends took {entries} log entries: concurrent appends were not coalesced",
        TASKS * SENDS
    );

    let mut read: BTreeMap<(u32, u64), String> = BTreeMap::new();
    loop {
        let got = store.pop(pop(32, Duration::ZERO)).await.expect("pops");
        if got.is_empty() {
            break;
        }
        for d in got {
            let body = String::from_utf8_lossy(&d.message.body).into_owned();
            assert_eq!(d.message, message(&body), "the record reads back unchanged");
            read.insert((d.queue_id, d.offset), body);
        }
    }
    assert_eq!(
        read, sent,
        "every body reads back at the offset its send was told"
    );
    store.shutdown().await.expect("shuts down");
}

/// Throughput of single-message sends and of acks from many concurrent callers, with fsync
/// group commit. Run in release: `cargo test --release -p vela-store -- --ignored throughput
/// --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run explicitly in release mode"]
async fn throughput_of_sends_and_acks() {
    const CALLERS: usize = 256;
    const RUN: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(config(dir.path()), Arc::new(SystemClock))
        .await
        .expect("opens");
    let started = Instant::now();
    let mut senders = JoinSet::new();
    for caller in 0..CALLERS {
        let store = store.clone();
        senders.spawn(async move {
            let mut sent = 0u64;
            while started.elapsed() < RUN {
                let m = MessageRecord {
                    body: Bytes::from(vec![b'x'; 128]),
                    ..message(&caller.to_string())
                };
                store.append(append(vec![m])).await.expect("appends");
                sent += 1;
            }
            sent
        });
    }
    let mut sent = 0;
    while let Some(n) = senders.join_next().await {
        sent += n.expect("joins");
    }
    let send_rate = sent as f64 / started.elapsed().as_secs_f64();

    let mut tickets = Vec::new();
    loop {
        let got = store.pop(pop(32, Duration::ZERO)).await.expect("pops");
        if got.is_empty() {
            break;
        }
        tickets.extend(got.into_iter().map(|d| d.ticket));
    }
    assert_eq!(tickets.len() as u64, sent);
    let tickets = Arc::new(tickets);
    let started = Instant::now();
    let mut ackers = JoinSet::new();
    for caller in 0..CALLERS {
        let (store, tickets) = (store.clone(), tickets.clone());
        ackers.spawn(async move {
            for t in tickets.iter().skip(caller).step_by(CALLERS) {
                store.ack(t).await.expect("acks");
            }
        });
    }
    while let Some(r) = ackers.join_next().await {
        r.expect("joins");
    }
    let ack_rate = tickets.len() as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "sends/s {send_rate:.0} (single-message, {CALLERS} callers), acks/s {ack_rate:.0}, messages {sent}"
    );
    store.shutdown().await.expect("shuts down");
}

/// A selective tag filter over a deep backlog: the receive finds the one match without writing
/// an entry per slice of non-matching messages, and a receive that finds nothing writes
/// nothing at all (apply version 4: receives planned by the leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selective_filter_finds_its_match_deep_in_a_backlog_without_empty_receives() {
    let (_dir, _clock, _shared, store) = open_on_manual_clock().await;
    let tagged = |tag: &str, n: usize| -> Vec<MessageRecord> {
        (0..n)
            .map(|i| MessageRecord {
                tag: Some(tag.to_owned()),
                ..message(&format!("{tag}-{i}"))
            })
            .collect()
    };
    // 600,000 non-matching messages (more than two search slices), then one match.
    for _ in 0..75 {
        store
            .append(append(tagged("B", 8_000)))
            .await
            .expect("appends");
    }
    store.append(append(tagged("A", 1))).await.expect("appends");
    let shard = store.shards()[&0].shard.clone();
    let entries_before = shard.shared.last_applied_index();

    // Waiting receives, as clients make them: a search that takes several slices continues
    // within the wait (and, through the scan memo, across receives).
    let only = |tag: &str| PopRequest {
        filter: TagFilter::Tags(vec![tag.to_owned()]).into(),
        ..pop(32, Duration::from_millis(500))
    };
    let got = store
        .pop(PopRequest {
            // The search of 600,000 entries takes most of a second in a debug build.
            wait: Duration::from_secs(20),
            ..only("A")
        })
        .await
        .expect("pops");
    assert_eq!(bodies(&got), vec!["A-0".to_string()]);
    // Each slice that passed over a long run of non-matching messages moves the group's
    // cursor past it (so its lag leaves them out): one small entry per slice.
    assert_eq!(
        shard.shared.last_applied_index(),
        entries_before + 3,
        "one entry for the receive that delivered and one per slice passed over"
    );
    let stats = store
        .queue_stats(&topic(), Some(&group()), &[])
        .await
        .expect("stats");
    assert_eq!(stats[0].groups[0].backlog, 1, "only the one in flight");

    let entries_before = shard.shared.last_applied_index();
    assert!(
        store.pop(only("C")).await.expect("pops").is_empty(),
        "nothing matches C"
    );
    assert!(
        store.pop(only("A")).await.expect("pops").is_empty(),
        "the one A is in flight"
    );
    assert_eq!(
        shard.shared.last_applied_index(),
        entries_before,
        "empty receives write nothing to the log"
    );
    store.shutdown().await.expect("shuts down");
}

/// The store's metric lines that start with one of `prefixes`, as `/metrics` shows them
/// less the labels every line has (`cluster`, `node_id`, `node_type`).
pub(super) fn metric_lines(store: &Arc<Store>, prefixes: &[&str]) -> Vec<String> {
    let hub = vela_telemetry::MetricsHub::standalone();
    store.register_metrics(
        &hub.meter("vela-store"),
        &vela_telemetry::NodeLabels::unnamed(vela_telemetry::NodeType::Store),
    );
    let text = hub.prometheus_text().expect("encodes");
    text.lines()
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .map(|l| l.replace(r#"cluster="vela",node_id="0",node_type="store","#, ""))
        .collect()
}

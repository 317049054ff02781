//! The store's metrics (`docs/metrics.md`). The store keeps its own counts (cheap, lock-held
//! for a map update) and, once the process registers it, OpenTelemetry observable instruments
//! read them, and the consumer, Raft and storage gauges are worked out from the shards'
//! state, on every collection (a `/metrics` scrape or an OTLP export). Where RocketMQ has a
//! name (`rocketmq_consumer_lag_messages`…) it is used; the rest carry `vela_`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use vela_proto::domain::ShardId;
use vela_telemetry::{KeyValue, Meter, NodeLabels, is_system};

use crate::node::Store;

/// How a scrub ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ScrubResult {
    Clean,
    Damaged,
    Failed,
}

impl ScrubResult {
    fn label(self) -> &'static str {
        match self {
            ScrubResult::Clean => "clean",
            ScrubResult::Damaged => "damaged",
            ScrubResult::Failed => "failed",
        }
    }
}

/// Counts of a store node; the instruments that export them are made by `register`.
#[derive(Default)]
pub(crate) struct StoreMetrics {
    scrubs: Mutex<BTreeMap<(ShardId, ScrubResult), u64>>,
    damaged_segments: Mutex<BTreeMap<ShardId, u64>>,
    half_messages: Mutex<BTreeMap<(ShardId, String), i64>>,
    orphans_rolled_back: Mutex<BTreeMap<ShardId, u64>>,
    /// Moves into a dead-letter queue after the last attempt, by origin topic and group.
    dead_letters: Mutex<BTreeMap<(String, String), u64>>,
    /// How often each shard's leader changed, as this node saw it.
    leader_changes: Mutex<BTreeMap<ShardId, u64>>,
    /// The consumer progress of the led shards, worked out once per collection.
    progress: Mutex<Option<(Instant, Arc<Vec<GroupProgress>>)>>,
    /// The log fsync instruments of the last registration, for shards that open later.
    log_instruments: Mutex<Option<LogInstruments>>,
    /// The registered instruments (kept so their callbacks stay).
    registered: Mutex<Vec<Box<dyn std::any::Any + Send + Sync>>>,
}

impl std::fmt::Debug for StoreMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreMetrics").finish_non_exhaustive()
    }
}

/// The histograms every shard's log records its fsyncs on.
#[derive(Clone)]
struct LogInstruments {
    fsync_seconds: vela_telemetry::Histogram<f64>,
    batch_appends: vela_telemetry::Histogram<u64>,
    write_seconds: vela_telemetry::Histogram<f64>,
    snapshot_seconds: vela_telemetry::Histogram<f64>,
    labels: NodeLabels,
}

/// Buckets of a shard write (propose → commit → apply) and of a snapshot build, seconds:
/// 500 µs to 30 s.
const WRITE_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// RocketMQ-like fsync buckets, seconds: 100 µs to 1 s.
const FSYNC_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];
/// Appends per group commit.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// One group's progress on one topic, summed over the queues of the shards this node leads.
#[derive(Debug, Clone, Default)]
struct GroupProgress {
    topic: String,
    group: String,
    lag: u64,
    inflight: u64,
    ready: u64,
    oldest_unacked_ms: Option<i64>,
    oldest_ready_ms: Option<i64>,
}

/// Shows a broadcast group's instances (ADR 0029) as their group: the slowest instance's lag
/// and ready messages, the in-flight messages of all, the oldest times of any. Label values
/// stay bounded by the groups, however many instances come and go.
fn fold_broadcast_instances(
    by_group: BTreeMap<(String, String), GroupProgress>,
) -> Vec<GroupProgress> {
    let mut folded: BTreeMap<(String, String), GroupProgress> = BTreeMap::new();
    for ((topic, group), p) in by_group {
        let Some((parent, _)) = group.split_once(vela_proto::BROADCAST_MARKER) else {
            folded.insert((topic, group), p);
            continue;
        };
        let name = parent.to_owned();
        match folded.entry((topic, name.clone())) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(GroupProgress { group: name, ..p });
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let e = o.get_mut();
                e.lag = e.lag.max(p.lag);
                e.inflight += p.inflight;
                e.ready = e.ready.max(p.ready);
                e.oldest_unacked_ms = min_some(e.oldest_unacked_ms, p.oldest_unacked_ms);
                e.oldest_ready_ms = min_some(e.oldest_ready_ms, p.oldest_ready_ms);
            }
        }
    }
    folded.into_values().collect()
}

/// One collection reads the shards once for all five consumer gauges.
const PROGRESS_REUSE: Duration = Duration::from_millis(500);

impl StoreMetrics {
    /// The half messages per topic of a shard this node leads (an empty map when it stopped
    /// leading); topics that had some and now have none disappear.
    pub fn half_messages(
        &self,
        shard: ShardId,
        counts: &BTreeMap<String, i64>,
        reported: &mut BTreeSet<String>,
    ) {
        let mut halves = self.half_messages.lock();
        for topic in reported.iter().filter(|t| !counts.contains_key(*t)) {
            halves.remove(&(shard, topic.clone()));
        }
        for (topic, count) in counts {
            halves.insert((shard, topic.clone()), *count);
        }
        *reported = counts.keys().cloned().collect();
    }

    /// Shard `shard` has a new leader (not the first one this node learnt of).
    pub fn leader_changed(&self, shard: ShardId) {
        *self.leader_changes.lock().entry(shard).or_default() += 1;
    }

    pub fn orphan_rolled_back(&self, shard: ShardId) {
        *self.orphans_rolled_back.lock().entry(shard).or_default() += 1;
    }

    /// `count` messages of `topic` moved to `group`'s dead-letter queue on a shard this node
    /// leads.
    pub fn dead_lettered(&self, topic: &str, group: &str, count: u64) {
        *self
            .dead_letters
            .lock()
            .entry((topic.to_owned(), group.to_owned()))
            .or_default() += count;
    }

    /// Records a scrub's end; `damaged` is set for a scrub that ran to the end.
    pub fn scrubbed(&self, shard: ShardId, result: ScrubResult, damaged: Option<usize>) {
        *self.scrubs.lock().entry((shard, result)).or_default() += 1;
        if let Some(damaged) = damaged {
            self.damaged_segments
                .lock()
                .insert(shard, u64::try_from(damaged).unwrap_or(u64::MAX));
        }
    }

    /// Makes `shard` record its fsyncs, writes and snapshot builds, if metrics are registered.
    pub(crate) fn attach_shard(&self, shard: &crate::shard::Shard) {
        if let Some(i) = self.log_instruments.lock().as_ref() {
            shard.log.set_metrics(vela_raft::log_metrics::LogMetrics {
                fsync_seconds: i.fsync_seconds.clone(),
                batch_appends: i.batch_appends.clone(),
                attributes: i.labels.with([shard_label(shard.id)]).into(),
            });
            *shard.shared.timings.write() = Some(crate::shard::ShardTimings {
                write_seconds: i.write_seconds.clone(),
                snapshot_seconds: i.snapshot_seconds.clone(),
                attributes: i.labels.with([shard_label(shard.id)]),
            });
        }
    }

    /// The consumer progress of the shards `store` leads, reused within one collection.
    fn progress(&self, store: &Store) -> Arc<Vec<GroupProgress>> {
        let mut cached = self.progress.lock();
        if let Some((at, progress)) = cached.as_ref()
            && at.elapsed() < PROGRESS_REUSE
        {
            return progress.clone();
        }
        let mut by_group: BTreeMap<(String, String), GroupProgress> = BTreeMap::new();
        for p in store.consumer_progress() {
            let entry = by_group
                .entry((p.topic.as_str().to_owned(), p.group.as_str().to_owned()))
                .or_insert_with(|| GroupProgress {
                    topic: p.topic.as_str().to_owned(),
                    group: p.group.as_str().to_owned(),
                    ..Default::default()
                });
            entry.lag += p.lag;
            entry.inflight += p.inflight;
            entry.ready += p.ready;
            entry.oldest_unacked_ms = min_some(entry.oldest_unacked_ms, p.oldest_unacked_ms);
            entry.oldest_ready_ms = min_some(entry.oldest_ready_ms, p.oldest_ready_ms);
        }
        let progress = Arc::new(fold_broadcast_instances(by_group));
        *cached = Some((Instant::now(), progress.clone()));
        progress
    }

    /// Makes the instruments that export this node's metrics on `meter` (a process has one
    /// meter; tests make one per look).
    pub fn register(self: &Arc<Self>, store: &Arc<Store>, meter: &Meter, labels: &NodeLabels) {
        let mut kept: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();
        *self.log_instruments.lock() = Some(LogInstruments {
            fsync_seconds: meter
                .f64_histogram("vela_raft_fsync_seconds")
                .with_unit("s")
                .with_description("Time one group-commit fsync of a shard's log took")
                .with_boundaries(FSYNC_BUCKETS.to_vec())
                .build(),
            batch_appends: meter
                .u64_histogram("vela_raft_fsync_batch_appends")
                .with_description("Log appends (each one or more entries) one fsync made durable")
                .with_boundaries(BATCH_BUCKETS.to_vec())
                .build(),
            write_seconds: meter
                .f64_histogram("vela_raft_write_seconds")
                .with_unit("s")
                .with_description(
                    "Time from proposing a command to a shard's log until it is committed and applied (leader)",
                )
                .with_boundaries(WRITE_BUCKETS.to_vec())
                .build(),
            snapshot_seconds: meter
                .f64_histogram("vela_store_snapshot_seconds")
                .with_unit("s")
                .with_description(
                    "Time building a shard snapshot took (state copy, index file made durable, file written)",
                )
                .with_boundaries(WRITE_BUCKETS.to_vec())
                .build(),
            labels: labels.clone(),
        });
        for shard in store.shard_handles() {
            self.attach_shard(&shard);
        }
        let store = Arc::downgrade(store);
        let this = Arc::downgrade(self);

        // Consumer progress: one gauge per quantity, all from one read of the shards.
        type Pick = fn(&GroupProgress, i64) -> Option<i64>;
        let consumer_gauges: [(&'static str, &'static str, Pick); 5] = [
            (
                "rocketmq_consumer_lag_messages",
                "Messages not yet acknowledged by the group (max offset minus consumer offset)",
                |p, _| Some(clamp(p.lag)),
            ),
            (
                "rocketmq_consumer_inflight_messages",
                "Messages delivered to the group and not yet acknowledged",
                |p, _| Some(clamp(p.inflight)),
            ),
            (
                "rocketmq_consumer_ready_messages",
                "Messages ready for the group and not yet delivered",
                |p, _| Some(clamp(p.ready)),
            ),
            (
                "rocketmq_consumer_lag_latency",
                "Milliseconds since the oldest message the group has not acknowledged was stored",
                |p, now| p.oldest_unacked_ms.map(|t| (now - t).max(0)),
            ),
            (
                "rocketmq_consumer_queueing_latency",
                "Milliseconds since the oldest message ready for the group and not yet delivered was stored",
                |p, now| p.oldest_ready_ms.map(|t| (now - t).max(0)),
            ),
        ];
        for (name, help, pick) in consumer_gauges {
            let (store, this, labels) = (store.clone(), this.clone(), labels.clone());
            kept.push(Box::new(
                meter
                    .i64_observable_gauge(name)
                    .with_description(help)
                    .with_callback(move |o| {
                        let (Some(store), Some(this)) = (store.upgrade(), this.upgrade()) else {
                            return;
                        };
                        let now = store.now_ms();
                        for p in this.progress(&store).iter() {
                            if let Some(value) = pick(p, now) {
                                o.observe(
                                    value,
                                    &labels.with([
                                        KeyValue::new("topic", p.topic.clone()),
                                        KeyValue::new("consumer_group", p.group.clone()),
                                        KeyValue::new(
                                            "is_system",
                                            is_system(&p.topic) || is_system(&p.group),
                                        ),
                                    ]),
                                );
                            }
                        }
                    })
                    .build(),
            ));
        }

        // Raft, per shard on this node.
        {
            let (store, this, labels) = (store.clone(), this.clone(), labels.clone());
            kept.push(Box::new(
                meter
                    .i64_observable_gauge("vela_raft_term")
                    .with_description("The shard's current Raft term on this node")
                    .with_callback(move |o| {
                        let (Some(store), Some(_)) = (store.upgrade(), this.upgrade()) else {
                            return;
                        };
                        for r in store.raft_reports() {
                            o.observe(clamp(r.term), &labels.with([shard_label(r.shard)]));
                        }
                    })
                    .build(),
            ));
        }
        {
            let (store, labels) = (store.clone(), labels.clone());
            kept.push(Box::new(
                meter
                    .i64_observable_gauge("vela_raft_leader")
                    .with_description("1 when this node leads the shard, else 0")
                    .with_callback(move |o| {
                        let Some(store) = store.upgrade() else { return };
                        for r in store.raft_reports() {
                            o.observe(i64::from(r.leading), &labels.with([shard_label(r.shard)]));
                        }
                    })
                    .build(),
            ));
        }
        {
            let (store, labels) = (store.clone(), labels.clone());
            kept.push(Box::new(
                meter
                    .i64_observable_gauge("vela_raft_apply_lag_entries")
                    .with_description(
                        "Committed log entries of the shard not yet applied on this node",
                    )
                    .with_callback(move |o| {
                        let Some(store) = store.upgrade() else { return };
                        for r in store.raft_reports() {
                            o.observe(
                                clamp(r.committed.saturating_sub(r.applied)),
                                &labels.with([shard_label(r.shard)]),
                            );
                        }
                    })
                    .build(),
            ));
        }
        {
            let (store, this, labels) = (store.clone(), this.clone(), labels.clone());
            kept.push(Box::new(
                meter
                    .u64_observable_counter("vela_raft_leader_changes_total")
                    .with_description("Leader changes of the shard this node saw")
                    .with_callback(move |o| {
                        let (Some(store), Some(this)) = (store.upgrade(), this.upgrade()) else {
                            return;
                        };
                        let changes = this.leader_changes.lock();
                        for r in store.raft_reports() {
                            let seen = changes.get(&r.shard).copied().unwrap_or(0);
                            o.observe(seen, &labels.with([shard_label(r.shard)]));
                        }
                    })
                    .build(),
            ));
        }

        // Storage.
        {
            let (store, labels) = (store.clone(), labels.clone());
            kept.push(Box::new(
                meter
                    .i64_observable_gauge("rocketmq_storage_size")
                    .with_description(
                        "Bytes this store node keeps on local disk (logs, indexes, snapshots), and in object storage for the shards it leads",
                    )
                    .with_callback(move |o| {
                        let Some(store) = store.upgrade() else { return };
                        if let Some(bytes) = store.disk_usage() {
                            o.observe(
                                clamp(bytes),
                                &labels.with([
                                    KeyValue::new("storage_type", "local"),
                                    KeyValue::new("storage_medium", "disk"),
                                ]),
                            );
                        }
                        if let Some(bytes) = crate::tier_metrics::tiered_bytes(&store) {
                            o.observe(
                                clamp(bytes),
                                &labels.with([
                                    KeyValue::new("storage_type", "tiered"),
                                    KeyValue::new("storage_medium", "blob"),
                                ]),
                            );
                        }
                    })
                    .build(),
            ));
        }

        // The data disk (sends stop when it is too full: `node::disk`).
        {
            let (store, labels) = (store.clone(), labels.clone());
            kept.push(Box::new(
                meter
                    .f64_observable_gauge("vela_store_disk_used_ratio")
                    .with_description(
                        "Share of the file system holding the store's data that is in use",
                    )
                    .with_callback(move |o| {
                        let Some(store) = store.upgrade() else { return };
                        if let (Some(ratio), _) = store.disk_state() {
                            o.observe(ratio, &labels.with([]));
                        }
                    })
                    .build(),
            ));
        }
        {
            let (store, labels) = (store.clone(), labels.clone());
            kept.push(Box::new(
                meter
                    .i64_observable_gauge("vela_store_disk_full")
                    .with_description("1 while the store refuses sends because its data disk is past store.disk_full_ratio")
                    .with_callback(move |o| {
                        let Some(store) = store.upgrade() else { return };
                        o.observe(i64::from(store.disk_state().1), &labels.with([]));
                    })
                    .build(),
            ));
        }
        // Whether the node is saturated (`shard/saturation.rs`): when the fairness cap applies.
        {
            let (store, labels) = (store.clone(), labels.clone());
            kept.push(Box::new(
                meter
                    .f64_observable_gauge("vela_store_runtime_lag_seconds")
                    .with_description(
                        "How late the node's async runtime fires a 5 ms timer, smoothed",
                    )
                    .with_callback(move |o| {
                        let Some(store) = store.upgrade() else { return };
                        o.observe(store.saturation_state().0.as_secs_f64(), &labels.with([]));
                    })
                    .build(),
            ));
        }
        {
            let (store, labels) = (store.clone(), labels.clone());
            kept.push(Box::new(
                meter
                    .i64_observable_gauge("vela_store_saturated")
                    .with_description("1 while the runtime lag says the node is saturated: only then do sends wait for consumer work")
                    .with_callback(move |o| {
                        let Some(store) = store.upgrade() else { return };
                        o.observe(i64::from(store.saturation_state().1), &labels.with([]));
                    })
                    .build(),
            ));
        }
        // Each shard's log on this node.
        for (name, help, bytes) in [
            (
                "vela_store_log_segments",
                "Segment files of the shard's log on this node",
                false,
            ),
            (
                "vela_store_log_bytes",
                "Bytes of the shard's log segments on this node",
                true,
            ),
        ] {
            let (store, labels) = (store.clone(), labels.clone());
            kept.push(Box::new(
                meter
                    .i64_observable_gauge(name)
                    .with_description(help)
                    .with_callback(move |o| {
                        let Some(store) = store.upgrade() else { return };
                        for shard in store.shard_handles() {
                            let segments = shard.log.segments();
                            let value = if bytes {
                                segments.iter().map(|s| s.bytes).sum::<u64>()
                            } else {
                                segments.len() as u64
                            };
                            o.observe(clamp(value), &labels.with([shard_label(shard.id)]));
                        }
                    })
                    .build(),
            ));
        }

        // Each shard's index file on this node.
        {
            let (store, labels) = (store.clone(), labels.clone());
            kept.push(Box::new(
                meter
                    .i64_observable_gauge("vela_store_index_bytes")
                    .with_description("Bytes of the shard's index file (index.redb) on this node")
                    .with_callback(move |o| {
                        let Some(store) = store.upgrade() else { return };
                        for shard in store.shard_handles() {
                            if let Some(bytes) = shard.shared.index.file_bytes() {
                                o.observe(clamp(bytes), &labels.with([shard_label(shard.id)]));
                            }
                        }
                    })
                    .build(),
            ));
        }

        // The store's own counts.
        {
            let (this, labels) = (this.clone(), labels.clone());
            kept.push(Box::new(
                meter
                    .u64_observable_counter("rocketmq_send_to_dlq_messages_total")
                    .with_description("Messages moved to a group's dead-letter queue")
                    .with_callback(move |o| {
                        let Some(this) = this.upgrade() else { return };
                        for ((topic, group), count) in this.dead_letters.lock().iter() {
                            o.observe(
                                *count,
                                &labels.with([
                                    KeyValue::new("topic", topic.clone()),
                                    KeyValue::new("consumer_group", group.clone()),
                                ]),
                            );
                        }
                    })
                    .build(),
            ));
        }
        {
            let (this, labels) = (this.clone(), labels.clone());
            kept.push(Box::new(
                meter
                    .i64_observable_gauge("rocketmq_half_messages")
                    .with_description("Transaction half messages waiting for a commit or rollback, on the shards this node leads")
                    .with_callback(move |o| {
                        let Some(this) = this.upgrade() else { return };
                        for ((shard, topic), count) in this.half_messages.lock().iter() {
                            o.observe(
                                *count,
                                &labels.with([
                                    KeyValue::new("topic", topic.clone()),
                                    shard_label(*shard),
                                ]),
                            );
                        }
                    })
                    .build(),
            ));
        }
        {
            let (this, labels) = (this.clone(), labels.clone());
            kept.push(Box::new(
                meter
                    .u64_observable_counter("vela_store_scrubs_total")
                    .with_description(
                        "Background scrubs of a shard's sealed log segments, by result",
                    )
                    .with_callback(move |o| {
                        let Some(this) = this.upgrade() else { return };
                        for ((shard, result), count) in this.scrubs.lock().iter() {
                            o.observe(
                                *count,
                                &labels.with([
                                    shard_label(*shard),
                                    KeyValue::new("result", result.label()),
                                ]),
                            );
                        }
                    })
                    .build(),
            ));
        }
        {
            let (this, labels) = (this.clone(), labels.clone());
            kept.push(Box::new(
                meter
                    .i64_observable_gauge("vela_store_damaged_segments")
                    .with_description("Sealed log segments of a shard that its last completed scrub found damaged")
                    .with_callback(move |o| {
                        let Some(this) = this.upgrade() else { return };
                        for (shard, count) in this.damaged_segments.lock().iter() {
                            o.observe(clamp(*count), &labels.with([shard_label(*shard)]));
                        }
                    })
                    .build(),
            ));
        }
        {
            let (this, labels) = (this.clone(), labels.clone());
            kept.push(Box::new(
                meter
                    .u64_observable_counter("vela_store_orphans_rolled_back_total")
                    .with_description("Transaction half messages the shard leader rolled back after their check-backs went unanswered")
                    .with_callback(move |o| {
                        let Some(this) = this.upgrade() else { return };
                        for (shard, count) in this.orphans_rolled_back.lock().iter() {
                            o.observe(*count, &labels.with([shard_label(*shard)]));
                        }
                    })
                    .build(),
            ));
        }
        kept.extend(crate::tier_metrics::instruments(&store, meter, labels));
        self.registered.lock().extend(kept);
    }
}

fn shard_label(shard: ShardId) -> KeyValue {
    KeyValue::new("shard", i64::from(shard))
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What the Raft gauges read of one shard on this node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RaftReport {
    pub shard: ShardId,
    pub term: u64,
    pub leading: bool,
    pub committed: u64,
    pub applied: u64,
}

/// Counts the leader changes of `shard` this node sees, from openraft's metrics channel, until
/// `cancel` fires or the shard's Raft stops.
pub(crate) async fn watch_leaders(
    shard: Arc<crate::shard::Shard>,
    metrics: Arc<StoreMetrics>,
    cancel: tokio_util::sync::CancellationToken,
) {
    use openraft::async_runtime::WatchReceiver;
    let mut rx = shard.raft.metrics();
    let mut leader = rx.borrow_and_update().current_leader;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let now = rx.borrow_and_update().current_leader;
        if now.is_some() && now != leader {
            if leader.is_some() {
                metrics.leader_changed(shard.id);
            }
            leader = now;
        }
    }
}

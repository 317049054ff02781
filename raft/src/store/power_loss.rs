//! Power-loss tests of the log on the simulated disk (`vfs::sim`). Each seed runs a random
//! workload (appends awaited and in flight, truncations, purges, compactions, votes, clean
//! restarts and process kills), cuts the power at a random point, reopens, and checks the oracle:
//! - every acknowledged entry that was not truncated or compacted away is there, byte for byte;
//! - every entry served is the newest one written at its index (nothing stale, nothing corrupt);
//! - the newest acknowledged vote is there;
//! - a bit flipped in a sealed segment makes the open fail with `Corrupt`, never a silent loss.
//!
//! `VELA_SIM_SEED=<n>` replays one seed, `VELA_SIM_SEEDS=<count>` runs a longer sweep.

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::storage::RaftLogStorage;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::*;
use crate::test_support::*;
use crate::vfs::sim::{CrashMode, SimVfs, seed_sweep};

/// What the test knows was written.
#[derive(Default, Debug)]
struct Oracle {
    /// Newest (term, body) written at each index, acknowledged or not.
    written: BTreeMap<u64, (u64, String)>,
    /// Indexes whose newest write was acknowledged (flush callback fired).
    acked: BTreeMap<u64, (u64, String)>,
    vote_term: u64,
    /// Highest committed index saved: Raft never truncates at or below it.
    committed: u64,
    term: u64,
    /// Index of the next append.
    next: u64,
}

impl Oracle {
    fn write(&mut self, index: u64, body: &str, acked: bool) {
        let value = (self.term, body.to_string());
        self.written.insert(index, value.clone());
        if acked {
            self.acked.insert(index, value);
        } else {
            self.acked.remove(&index);
        }
    }

    /// The next `n` entries to append, recorded as written (and acknowledged if `acked`: the
    /// caller awaits their flush).
    fn next_batch(&mut self, n: u64, acked: bool, rng: &mut Xoshiro256PlusPlus) -> Vec<TestEntry> {
        let batch = (self.next..self.next + n)
            .map(|i| {
                let body = body_for(i, self.term, rng);
                self.write(i, &body, acked);
                entry(self.term, i, &body)
            })
            .collect();
        self.next += n;
        batch
    }

    fn truncate_after(&mut self, keep: u64) {
        self.written.retain(|i, _| *i <= keep);
        self.acked.retain(|i, _| *i <= keep);
        self.next = keep + 1;
        self.term += 1;
    }
}

fn body_for(index: u64, term: u64, rng: &mut Xoshiro256PlusPlus) -> String {
    let len = rng.random_range(0..300);
    let mut body = format!("{index}@{term}:");
    body.extend(std::iter::repeat_n('x', len));
    body
}

fn sim_config(sim: &SimVfs, segment_bytes: u64, cache_bytes: usize) -> LogStoreConfig {
    LogStoreConfig {
        dir: "/data/log".into(),
        segment_bytes,
        flush: FlushMode::Sync,
        cache_bytes,
        compact_on_purge: false,
        preallocate_bytes: crate::store::DEFAULT_PREALLOCATE_BYTES,
        vfs: Arc::new(sim.clone()),
    }
}

fn check(store: &TestStore, oracle: &Oracle, floor: u64) {
    let reader = store.reader();
    let got = reader.entries(..).expect("recovered log reads back");
    let mut prev = None;
    for e in &got {
        let index = e.index();
        if let Some(p) = prev {
            assert_eq!(index, p + 1, "recovered log has a hole");
        }
        prev = Some(index);
        let openraft::EntryPayload::Normal(body) = &e.payload else {
            panic!("unexpected payload at {index}");
        };
        let want = oracle
            .written
            .get(&index)
            .unwrap_or_else(|| panic!("index {index} was never written"));
        assert_eq!(
            (e.log_id.leader_id.term, body),
            (want.0, &want.1),
            "index {index} serves something other than its newest write"
        );
    }
    for (index, _) in oracle.acked.range(floor..) {
        assert!(
            reader.entry(*index).expect("reads").is_some(),
            "acknowledged index {index} is lost (log holds {:?}..={:?})",
            reader.first_index(),
            reader.last_index()
        );
    }
}

async fn workload(seed: u64) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut sim = SimVfs::new();
    let segment_bytes = rng.random_range(200..4000);
    let cache_bytes = if rng.random_bool(0.5) { 0 } else { 1 << 16 };
    let cfg = |sim: &SimVfs| sim_config(sim, segment_bytes, cache_bytes);
    let mut store = TestStore::open(cfg(&sim)).await.expect("fresh open");
    let mut oracle = Oracle {
        term: 1,
        next: 1,
        ..Oracle::default()
    };
    // Lowest index the oracle may expect: compaction removes what is below it.
    let mut floor = 0;
    let steps = rng.random_range(5..60);
    for step in 0..steps {
        let pick = rng.random_range(0..100);
        eprintln!(
            "step {step}: op {pick}, next {}, floor {floor}",
            oracle.next
        );
        match pick {
            0..45 => {
                let n = rng.random_range(1..8);
                let batch = oracle.next_batch(n, true, &mut rng);
                append(&store, batch).await.expect("append");
            }
            45..55 => {
                // In flight: queued, never awaited.
                let n = rng.random_range(1..4);
                let batch = oracle.next_batch(n, false, &mut rng);
                store.append_entries(batch, None).expect("queue append");
            }
            55..62 if oracle.next > floor.max(1) + 1 => {
                let purged = store.log_state().0.map_or(0, |p| p.index());
                let lowest = purged.max(floor).max(oracle.committed);
                let keep = rng.random_range(lowest..oracle.next);
                let term = oracle.written.get(&keep).map_or(0, |w| w.0);
                let last = (keep > 0).then(|| log_id(term, keep));
                RaftLogStorage::truncate_after(&mut store, last)
                    .await
                    .expect("truncate");
                oracle.truncate_after(keep);
            }
            62..70 if !oracle.acked.is_empty() => {
                let acked: Vec<u64> = oracle.acked.keys().copied().collect();
                let p = acked[rng.random_range(0..acked.len())];
                let term = oracle.acked[&p].0;
                RaftLogStorage::purge(&mut store, log_id(term, p))
                    .await
                    .expect("purge");
            }
            70..78 => {
                let below = rng.random_range(0..oracle.next + 1);
                let replay_floor = rng.random_range(0..oracle.next + 1);
                store.set_replay_floor(Some(replay_floor));
                store.compact_below(below).await.expect("compact");
                floor = floor.max(store.reader().first_index().unwrap_or(0));
            }
            78..84 => {
                oracle.vote_term += 1;
                let vote = openraft::Vote::new_committed(oracle.vote_term, 0);
                RaftLogStorage::save_vote(&mut store, &vote)
                    .await
                    .expect("vote");
            }
            84..90 => {
                if let Some((&i, (t, _))) = oracle.acked.last_key_value() {
                    store
                        .save_committed(Some(log_id(*t, i)))
                        .expect("committed");
                    oracle.committed = oracle.committed.max(i);
                }
            }
            90..95 => {
                store.shutdown().await.expect("clean shutdown");
                drop(store);
                store = TestStore::open(cfg(&sim)).await.expect("clean reopen");
                check(&store, &oracle, floor);
            }
            _ => {
                // A process kill keeps the page cache; recovery must make what it serves durable,
                // because Raft may commit and apply it from now on.
                // Killed a few disk operations into appends in flight, so that some of what
                // recovery finds is written but not synced.
                sim.arm_crash(rng.random_range(0..4), CrashMode::ProcessKill);
                let n = rng.random_range(1..8);
                let batch = oracle.next_batch(n, false, &mut rng);
                store.append_entries(batch, None).ok();
                for _ in 0..20 {
                    if sim.has_crashed() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                sim = sim.kill_process();
                drop(store);
                store = TestStore::open(cfg(&sim)).await.expect("reopen after kill");
                let recovered = store.reader().entries(..).expect("reads");
                for e in recovered {
                    if let openraft::EntryPayload::Normal(body) = &e.payload {
                        oracle
                            .acked
                            .insert(e.index(), (e.log_id.leader_id.term, body.clone()));
                    }
                }
                oracle.next = store.reader().last_index().map_or(oracle.next, |l| l + 1);
                oracle.written.retain(|i, _| *i < oracle.next);
                oracle.acked.retain(|i, _| *i < oracle.next);
                oracle.term += 1;
                check(&store, &oracle, floor);
                if rng.random_bool(0.3) {
                    // Cut the power before anything else syncs what recovery served.
                    break;
                }
            }
        }
    }

    // Power cut a few disk operations into whatever is in flight.
    let mode = CrashMode::Random { seed: rng.random() };
    sim.arm_crash(rng.random_range(0..12), mode);
    for _ in 0..rng.random_range(0..4) {
        let n = rng.random_range(1..12);
        let batch = oracle.next_batch(n, false, &mut rng);
        if store.append_entries(batch, None).is_err() {
            break;
        }
    }
    for _ in 0..20 {
        if sim.has_crashed() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let after = sim.crash(mode);
    drop(store);
    let mut store = TestStore::open(cfg(&after))
        .await
        .expect("a power cut never makes the log unopenable");
    check(&store, &oracle, floor);
    let mut reader = RaftLogStorage::get_log_reader(&mut store).await;
    let vote = openraft::storage::RaftLogReader::read_vote(&mut reader)
        .await
        .expect("vote reads");
    assert!(
        vote.map_or(0, |v| v.leader_id().term) >= oracle.vote_term,
        "acknowledged vote lost: {vote:?} < term {}",
        oracle.vote_term
    );
    store.shutdown().await.expect("shutdown");
    drop(store);

    // Bit rot in a sealed segment is refused, never served or silently dropped.
    let segments: Vec<_> = after
        .file_paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    if segments.len() >= 2 {
        let victim = &segments[rng.random_range(0..segments.len() - 1)];
        let len = after.file_len(victim).expect("len");
        after
            .flip_bit(victim, rng.random_range(0..len * 8))
            .expect("flip");
        // Open trusts a sealed segment's checksummed header and footer trailer; its records
        // and offsets are verified when read and by the scrub. Either way a flipped bit is
        // refused or reported, and never served.
        match TestStore::open(cfg(&after)).await {
            Err(LogError::Corrupt { .. }) => {}
            Err(other) => panic!("bit rot reported as {other}"),
            Ok(store) => {
                match store.reader().entries(..) {
                    Err(LogError::Corrupt { .. }) => {}
                    Err(other) => panic!("bit rot read back as {other}"),
                    Ok(entries) => {
                        for e in entries {
                            let openraft::EntryPayload::Normal(body) = &e.payload else {
                                panic!("unexpected payload");
                            };
                            let want = &oracle.written[&e.index()];
                            assert_eq!((e.log_id.leader_id.term, body), (want.0, &want.1));
                        }
                    }
                }
                let report = store.reader().scrub().expect("scrub runs");
                assert!(
                    report.damaged.iter().any(|(p, _)| p == victim),
                    "scrub missed bit rot in {}: {report:?}",
                    victim.display()
                );
                store.shutdown().await.ok();
            }
        }
    }
}

#[test]
fn acknowledged_entries_survive_power_loss() {
    seed_sweep("log power-loss sweep", 150, |seed| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(workload(seed));
    });
}

/// One small, fully deterministic workload (awaited appends that roll tiny segments, a vote, a
/// purge and a compaction), cut by a power failure after every possible number of disk
/// operations, several tear patterns each: the systematic complement of the random sweep, which
/// catches orderings that need the crash in a narrow window (a new segment's name durable before
/// its header, say).
#[test]
fn every_crash_point_of_a_rolling_workload_recovers() {
    async fn run(sim: &SimVfs) -> Oracle {
        let mut oracle = Oracle {
            term: 1,
            next: 1,
            ..Oracle::default()
        };
        let Ok(mut store) = TestStore::open(sim_config(sim, 300, 0)).await else {
            return oracle;
        };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        for i in 1..=24u64 {
            let body = body_for(i, 1, &mut rng);
            oracle.write(i, &body, false);
            oracle.next = i + 1;
            if append(&store, vec![entry(1, i, &body)]).await.is_err() {
                return oracle;
            }
            oracle.acked.insert(i, (1, body));
            if i == 12 {
                let vote = openraft::Vote::new_committed(2, 0);
                if RaftLogStorage::save_vote(&mut store, &vote).await.is_err() {
                    return oracle;
                }
                oracle.vote_term = 2;
                if RaftLogStorage::purge(&mut store, log_id(1, 6))
                    .await
                    .is_err()
                {
                    return oracle;
                }
                store.set_replay_floor(Some(4));
                if store.compact_below(4).await.is_err() {
                    return oracle;
                }
            }
        }
        store.shutdown().await.ok();
        oracle
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let probe = SimVfs::new();
    rt.block_on(run(&probe));
    let total = probe.change_count();
    assert!(total > 50, "the workload touches the disk: {total}");
    for at in 0..=total {
        for tear in 0..4u64 {
            let sim = SimVfs::new();
            let mode = CrashMode::Random {
                seed: at * 16 + tear,
            };
            sim.arm_crash(at, mode);
            let oracle = rt.block_on(run(&sim));
            let after = sim.crash(mode);
            rt.block_on(async {
                let store = TestStore::open(sim_config(&after, 300, 0))
                    .await
                    .unwrap_or_else(|e| panic!("crash after {at} operations (tear {tear}): {e}"));
                let floor = store.reader().first_index().unwrap_or(0);
                check(&store, &oracle, floor.min(4));
                store.shutdown().await.ok();
            });
        }
    }
}

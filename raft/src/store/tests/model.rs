//! Model-based check: random appends, truncations, purges and reopens against a plain `Vec` of
//! the live entries, with segments small enough that every operation crosses segment boundaries.
use proptest::prelude::*;

use super::*;

#[derive(Clone, Debug)]
enum Op {
    Append(u64),
    /// Keep a fraction (per mille) of the live entries.
    Truncate(u64),
    /// Purge a fraction (per mille) of the live entries, past the end above 1000.
    Purge(u64),
    /// Compact below a fraction (per mille) of the physical entries.
    Compact(u64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..12).prop_map(Op::Append),
        2 => (0u64..1000).prop_map(Op::Truncate),
        2 => (0u64..1100).prop_map(Op::Purge),
        1 => (0u64..1000).prop_map(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    /// (index, term) of the entries openraft sees (after its purge point).
    live: Vec<(u64, u64)>,
    /// (index, term) of the entries in the files (purge is logical).
    physical: Vec<(u64, u64)>,
    purged: Option<(u64, u64)>,
    term: u64,
}

impl Model {
    fn next_index(&self) -> u64 {
        match (self.live.last(), self.purged) {
            (Some((i, _)), _) => i + 1,
            (None, Some((p, _))) => p + 1,
            (None, None) => 1,
        }
    }
}

fn body(index: u64, term: u64) -> String {
    format!("{index}@{term}:{}", "x".repeat((index % 17) as usize * 5))
}

fn triples(entries: Vec<TestEntry>) -> Vec<(u64, u64, String)> {
    entries
        .into_iter()
        .map(|e| {
            let openraft::EntryPayload::Normal(b) = e.payload else {
                panic!("unexpected payload")
            };
            (e.log_id.index(), e.log_id.leader_id.term, b)
        })
        .collect()
}

fn want(entries: &[(u64, u64)]) -> Vec<(u64, u64, String)> {
    entries.iter().map(|&(i, t)| (i, t, body(i, t))).collect()
}

async fn check(store: &mut TestStore, model: &Model) {
    assert_eq!(
        triples(store.reader().entries(..).unwrap()),
        want(&model.physical)
    );
    let mut reader = RaftLogStorage::get_log_reader(store).await;
    assert_eq!(
        triples(reader.try_get_log_entries(..).await.unwrap()),
        want(&model.live)
    );
    for &(i, t) in model.live.iter().step_by(5) {
        let e = store.reader().entry(i).unwrap().unwrap();
        assert_eq!(e.log_id, log_id(t, i));
    }
    let state = RaftLogStorage::get_log_state(store).await.unwrap();
    assert_eq!(
        state.last_purged_log_id,
        model.purged.map(|(i, t)| log_id(t, i))
    );
    let last = model.live.last().copied().or(model.purged);
    assert_eq!(state.last_log_id, last.map(|(i, t)| log_id(t, i)));
    assert_eq!(
        store.reader().first_index(),
        model.physical.first().map(|e| e.0)
    );
}

async fn run(ops: Vec<Op>, cache_bytes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 300, cache_bytes);
    cfg.flush = FlushMode::Async {
        interval: Duration::from_secs(60),
    };
    let mut store = TestStore::open(cfg.clone()).await.unwrap();
    let mut model = Model {
        term: 1,
        ..Model::default()
    };
    for op in ops {
        match op {
            Op::Append(n) => {
                let first = model.next_index();
                let batch: Vec<_> = (first..first + n)
                    .map(|i| entry(model.term, i, &body(i, model.term)))
                    .collect();
                append(&store, batch).await.unwrap();
                let added = (first..first + n).map(|i| (i, model.term));
                model.live.extend(added.clone());
                model.physical.extend(added);
            }
            Op::Truncate(per_mille) => {
                if model.live.is_empty() {
                    continue;
                }
                let keep = (model.live.len() as u64 * per_mille / 1000).max(1) as usize;
                let (i, t) = model.live[keep - 1];
                RaftLogStorage::truncate_after(&mut store, Some(log_id(t, i)))
                    .await
                    .unwrap();
                model.live.truncate(keep);
                model.physical.retain(|&(j, _)| j <= i);
                model.term += 1;
            }
            Op::Purge(per_mille) => {
                let count = model.live.len() as u64 * per_mille / 1000;
                let target = if count == 0 {
                    continue;
                } else if (count as usize) <= model.live.len() {
                    model.live[count as usize - 1]
                } else {
                    (
                        model.next_index() + count - model.live.len() as u64,
                        model.term,
                    )
                };
                RaftLogStorage::purge(&mut store, log_id(target.1, target.0))
                    .await
                    .unwrap();
                model.live.retain(|&(i, _)| i > target.0);
                if model.physical.last().is_none_or(|l| l.0 < target.0) {
                    // Purged past the end: a snapshot replaced the whole log.
                    model.physical.clear();
                }
                model.purged = Some(target);
            }
            Op::Compact(per_mille) => {
                let Some(&(below, _)) = model
                    .physical
                    .get((model.physical.len() as u64 * per_mille / 1000) as usize)
                else {
                    continue;
                };
                store.set_replay_floor(Some(u64::MAX));
                let removed = store.compact_below(below).await.unwrap();
                let limit = below.min(model.purged.map_or(0, |p| p.0 + 1));
                for segment in &removed {
                    assert!(segment.last_index.is_some_and(|l| l < limit));
                }
                let gone = removed.last().and_then(|s| s.last_index).unwrap_or(0);
                model.physical.retain(|&(i, _)| i > gone);
                store.set_replay_floor(None);
            }
            Op::Reopen => {
                store.shutdown().await.unwrap();
                drop(store);
                store = TestStore::open(cfg.clone()).await.unwrap();
            }
        }
        check(&mut store, &model).await;
    }
    store.shutdown().await.unwrap();
    drop(store);
    let mut store = TestStore::open(cfg).await.unwrap();
    check(&mut store, &model).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn matches_a_vec_model(ops in proptest::collection::vec(op(), 1..30), cached in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops, if cached { 1 << 20 } else { 0 }));
    }
}

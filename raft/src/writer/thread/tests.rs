//! Logs sharing one writer thread: each is durable on its own, closes on its own, and keeps
//! working while another closes.

use std::sync::Arc;

use openraft::entry::RaftEntry;

use super::*;
use crate::test_support::*;
use crate::vfs::sim::{CrashMode, SimVfs};
use crate::{LogStoreConfig, SegmentLogStore};

fn sim_config(sim: &SimVfs, dir: &str) -> LogStoreConfig {
    LogStoreConfig {
        vfs: Arc::new(sim.clone()),
        ..config(Path::new(dir), 2_000, 0)
    }
}

fn indexes(store: &TestStore) -> Vec<u64> {
    store
        .reader()
        .entries(..)
        .expect("reads")
        .iter()
        .map(|e| e.index())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_on_one_writer_are_each_durable_and_close_on_their_own() {
    let sim = SimVfs::new();
    let writer = LogWriter::<TestConfig>::spawn("shared-writer-test").expect("thread");
    let a = SegmentLogStore::open_on(sim_config(&sim, "/data/a"), None, &writer)
        .await
        .expect("a opens");
    let b = SegmentLogStore::open_on(sim_config(&sim, "/data/b"), None, &writer)
        .await
        .expect("b opens");
    // Both logs append at once, across several segments each.
    for round in 0..20 {
        let range = round * 5 + 1..round * 5 + 6;
        let (to_a, to_b) = tokio::join!(
            append(&a, entries(1, range.clone(), 120)),
            append(&b, entries(1, range, 80))
        );
        to_a.expect("a appends");
        to_b.expect("b appends");
    }
    assert!(a.segments().len() > 2 && b.segments().len() > 2);

    // One log shuts down; the other keeps going on the same thread.
    a.shutdown().await.expect("a shuts down");
    assert!(append(&a, entries(1, 101..102, 10)).await.is_err());
    append(&b, entries(1, 101..106, 80))
        .await
        .expect("b appends after a closed");
    // Queued, never awaited, then dropped without a shutdown: the drop closes it on the thread.
    b.append_entries(entries(1, 106..110, 80), None)
        .expect("queues");
    drop(b);
    drop(a);
    drop(writer);

    // A power cut keeps only what was fsynced.
    let after = sim.crash(CrashMode::DropAllUnsynced);
    let a = TestStore::open(sim_config(&after, "/data/a"))
        .await
        .expect("a reopens");
    let b = TestStore::open(sim_config(&after, "/data/b"))
        .await
        .expect("b reopens");
    assert_eq!(indexes(&a), (1..=100).collect::<Vec<_>>());
    assert_eq!(indexes(&b), (1..=109).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_thread_ends_with_its_last_handle_and_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = LogWriter::<TestConfig>::spawn("ending-writer-test").expect("thread");
    let weak = Arc::downgrade(&writer.shared);
    let log = SegmentLogStore::open_on(config(dir.path(), 4_096, 0), None, &writer)
        .await
        .expect("opens");
    append(&log, entries(1, 1..4, 10)).await.expect("appends");
    drop(writer);
    // The log keeps the thread: its own handle went with the node's, not with the log.
    append(&log, entries(1, 4..6, 10))
        .await
        .expect("appends with the node's handle gone");
    drop(log);
    assert!(weak.upgrade().is_none(), "the thread's state is gone");
}

//! Tests of the segment log store:
//! - openraft's own storage suite, with roomy segments and with tiny segments and no cache (every
//!   read from disk, every append rolling segments);
//! - restart keeps entries, vote, committed and purged state; rollover and sealing;
//! - torn tails (cut mid-record, flipped byte, garbage) are cut back and appends continue;
//! - corruption in a sealed segment and index gaps fail the open;
//! - truncation across segments, purge as a logical floor, compaction and its limits;
//! - the directory lock, async flush mode, and an ignored throughput micro benchmark.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use openraft::StorageError;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use tempfile::TempDir;

use super::*;
use crate::test_support::*;

struct Builder {
    segment_bytes: u64,
    cache_bytes: usize,
}

impl StoreBuilder<TestConfig, TestStore, TestStateMachine, TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TempDir, TestStore, TestStateMachine), StorageError<TestConfig>> {
        let dir =
            tempfile::tempdir().map_err(|e| StorageError::read(TestConfig::err_from_error(&e)))?;
        let store = SegmentLogStore::open(config(dir.path(), self.segment_bytes, self.cache_bytes))
            .await
            .map_err(|e| StorageError::read(TestConfig::err_from_error(&e)))?;
        Ok((dir, store, TestStateMachine::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_with_default_segments() -> Result<(), StorageError<TestConfig>> {
    Suite::test_all(Builder {
        segment_bytes: 64 * 1024 * 1024,
        cache_bytes: 64 * 1024 * 1024,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_with_tiny_segments_and_no_cache() -> Result<(), StorageError<TestConfig>> {
    Suite::test_all(Builder {
        segment_bytes: 80,
        cache_bytes: 0,
    })
    .await
}

fn segment_paths(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    paths.sort();
    paths
}

fn bodies(entries: &[TestEntry]) -> Vec<(u64, String)> {
    entries
        .iter()
        .map(|e| match &e.payload {
            openraft::EntryPayload::Normal(body) => (e.index(), body.clone()),
            other => (e.index(), format!("{other:?}")),
        })
        .collect()
}

#[tokio::test]
async fn restart_keeps_entries_vote_committed_and_purged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 2048, 4096);
    let expected = entries(1, 1..201, 100);
    {
        let mut store = TestStore::open(cfg.clone()).await.unwrap();
        for chunk in expected.chunks(7) {
            append(&store, chunk.to_vec()).await.unwrap();
        }
        let vote = openraft::Vote::new_committed(3, 0);
        RaftLogStorage::save_vote(&mut store, &vote).await.unwrap();
        RaftLogStorage::save_committed(&mut store, Some(log_id(1, 150)))
            .await
            .unwrap();
        RaftLogStorage::purge(&mut store, log_id(1, 40))
            .await
            .unwrap();

        let segments = store.segments();
        assert!(segments.len() > 5, "2 KiB segments roll over: {segments:?}");
        assert!(segments[..segments.len() - 1].iter().all(|s| s.sealed));
        for pair in segments.windows(2) {
            assert_eq!(pair[0].last_index.map(|l| l + 1), Some(pair[1].first_index));
        }
        // Purge is logical: every segment stays.
        assert_eq!(segments[0].first_index, 1);
        store.shutdown().await.unwrap();
    }

    let mut store = TestStore::open(cfg).await.unwrap();
    let state = RaftLogStorage::get_log_state(&mut store).await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 40)));
    assert_eq!(state.last_log_id, Some(log_id(1, 200)));
    assert_eq!(
        RaftLogStorage::read_committed(&mut store).await.unwrap(),
        Some(log_id(1, 150))
    );
    let mut reader = RaftLogStorage::get_log_reader(&mut store).await;
    assert_eq!(
        reader.read_vote().await.unwrap(),
        Some(openraft::Vote::new_committed(3, 0))
    );

    assert_eq!(
        bodies(&reader.try_get_log_entries(..).await.unwrap()),
        bodies(&expected[40..]),
        "openraft does not see what it purged"
    );

    let handle = store.reader();
    assert_eq!(handle.first_index(), Some(1));
    assert_eq!(handle.last_index(), Some(200));
    assert!(
        handle.entry(40).unwrap().is_some(),
        "the store still reads it"
    );
    assert_eq!(handle.entry(201).unwrap(), None);
    let all = handle.entries(..).unwrap();
    assert_eq!(bodies(&all), bodies(&expected));
    for index in [41, 77, 128, 200] {
        let got = handle.entry(index).unwrap().unwrap();
        assert_eq!(
            bodies(&[got]),
            bodies(&expected[index as usize - 1..index as usize])
        );
    }

    append(&store, entries(2, 201..211, 100)).await.unwrap();
    assert_eq!(handle.last_index(), Some(210));
    assert!(matches!(
        store.append_entries(entries(2, 215..216, 10), None),
        Err(LogError::NonContiguous {
            expected: 211,
            found: 215
        })
    ));
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn torn_tail_cut_mid_record_is_dropped_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1 << 20, 1 << 20);
    {
        let store = TestStore::open(cfg.clone()).await.unwrap();
        append(&store, entries(1, 1..21, 64)).await.unwrap();
        store.shutdown().await.unwrap();
    }
    let path = segment_paths(dir.path()).pop().unwrap();
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    let store = TestStore::open(cfg).await.unwrap();
    let handle = store.reader();
    assert_eq!(handle.last_index(), Some(19));
    assert_eq!(
        bodies(&handle.entries(..).unwrap()),
        bodies(&entries(1, 1..20, 64))
    );
    assert!(
        fs::metadata(&path).unwrap().len() < len - 5,
        "file cut to the last good record"
    );
    append(&store, entries(2, 20..23, 64)).await.unwrap();
    assert_eq!(handle.last_index(), Some(22));
    assert_eq!(
        bodies(&handle.entries(18..).unwrap()),
        bodies(&[entries(1, 18..20, 64), entries(2, 20..23, 64)].concat())
    );
}

#[tokio::test]
async fn flipped_byte_or_garbage_in_last_record_is_dropped() {
    for damage in ["flip", "garbage", "zeros"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 1 << 20, 1 << 20);
        {
            let store = TestStore::open(cfg.clone()).await.unwrap();
            append(&store, entries(1, 1..11, 64)).await.unwrap();
            store.shutdown().await.unwrap();
        }
        let path = segment_paths(dir.path()).pop().unwrap();
        let mut data = fs::read(&path).unwrap();
        let expected_last = match damage {
            "flip" => {
                let at = data.len() - 3;
                data[at] ^= 0x10;
                9
            }
            "garbage" => {
                data.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
                10
            }
            _ => {
                data.extend_from_slice(&[0u8; 4096]);
                10
            }
        };
        fs::write(&path, &data).unwrap();

        let store = TestStore::open(cfg).await.unwrap();
        let handle = store.reader();
        assert_eq!(handle.last_index(), Some(expected_last), "damage {damage}");
        assert_eq!(
            bodies(&handle.entries(..).unwrap()),
            bodies(&entries(1, 1..expected_last + 1, 64)),
            "damage {damage}"
        );
        append(&store, entries(2, expected_last + 1..expected_last + 2, 8))
            .await
            .unwrap();
        assert_eq!(handle.last_index(), Some(expected_last + 1));
    }
}

#[tokio::test]
async fn corruption_below_the_committed_index_of_the_active_segment_fails_the_open() {
    // A bit flip in an early record of the active segment looks like a torn tail to the
    // scanner, but everything after it was fsynced and committed: recovery must refuse to cut.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1 << 20, 1 << 20);
    {
        let mut store = TestStore::open(cfg.clone()).await.unwrap();
        append(&store, entries(1, 1..21, 64)).await.unwrap();
        RaftLogStorage::save_committed(&mut store, Some(log_id(1, 20)))
            .await
            .unwrap();
        store.shutdown().await.unwrap();
    }
    let path = segment_paths(dir.path()).pop().unwrap();
    let mut data = fs::read(&path).unwrap();
    let at = data.len() / 3;
    data[at] ^= 0x01;
    fs::write(&path, &data).unwrap();

    match TestStore::open(cfg.clone()).await {
        Err(LogError::CommittedLost { committed, .. }) => assert_eq!(committed, 20),
        other => panic!("expected CommittedLost, got {other:?}"),
    }
    // In async mode the same situation is accepted (an unsynced tail may be lost).
    let async_cfg = LogStoreConfig {
        flush: FlushMode::Async {
            interval: std::time::Duration::from_millis(5),
        },
        ..cfg
    };
    let store = TestStore::open(async_cfg).await.unwrap();
    assert!(store.reader().last_index().unwrap_or(0) < 20);
}

#[tokio::test]
async fn an_unreadable_committed_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1 << 20, 1 << 20);
    {
        let mut store = TestStore::open(cfg.clone()).await.unwrap();
        append(&store, entries(1, 1..6, 16)).await.unwrap();
        RaftLogStorage::save_committed(&mut store, Some(log_id(1, 5)))
            .await
            .unwrap();
        store.shutdown().await.unwrap();
    }
    fs::write(dir.path().join("committed.bin"), b"torn").unwrap();
    let mut store = TestStore::open(cfg).await.unwrap();
    assert_eq!(
        RaftLogStorage::read_committed(&mut store).await.unwrap(),
        None
    );
    assert_eq!(store.reader().last_index(), Some(5));
}

#[tokio::test]
async fn corruption_in_a_sealed_segment_is_never_served_and_the_scrub_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 512, 0);
    {
        let store = TestStore::open(cfg.clone()).await.unwrap();
        append(&store, entries(1, 1..41, 64)).await.unwrap();
        store.shutdown().await.unwrap();
    }
    let paths = segment_paths(dir.path());
    assert!(paths.len() >= 3);
    let sealed = &paths[1];
    let mut data = fs::read(sealed).unwrap();
    // A byte inside a record (the header and the footer have checksums read at open).
    let at = 64 + 20;
    data[at] ^= 0x01;
    fs::write(sealed, &data).unwrap();

    // Open trusts the footer and does not read records: start-up does not grow with the log.
    let store = TestStore::open(cfg).await.unwrap();
    let first_in_damaged = store.segments()[1].first_index;
    match store.reader().entry(first_in_damaged) {
        Err(LogError::Corrupt { path, .. }) => assert_eq!(&path, sealed),
        other => panic!("expected corrupt, got {other:?}"),
    }
    assert!(matches!(
        store.reader().entries(..),
        Err(LogError::Corrupt { .. })
    ));
    let report = store.reader().scrub().unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(&report.damaged[0].0, sealed);
    assert!(report.segments >= 2);
}

#[tokio::test]
async fn a_damaged_header_of_a_sealed_segment_fails_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 512, 1 << 20);
    {
        let store = TestStore::open(cfg.clone()).await.unwrap();
        append(&store, entries(1, 1..41, 64)).await.unwrap();
        store.shutdown().await.unwrap();
    }
    let paths = segment_paths(dir.path());
    let sealed = &paths[1];
    let mut data = fs::read(sealed).unwrap();
    data[20] ^= 0x01;
    fs::write(sealed, &data).unwrap();
    match TestStore::open(cfg).await {
        Err(LogError::Corrupt { path, .. }) => assert_eq!(&path, sealed),
        other => panic!("expected corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_sealed_segment_cut_short_is_a_gap_or_a_reported_footer() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 512, 1 << 20);
    {
        let store = TestStore::open(cfg.clone()).await.unwrap();
        append(&store, entries(1, 1..41, 64)).await.unwrap();
        store.shutdown().await.unwrap();
    }
    let paths = segment_paths(dir.path());
    let sealed = &paths[0];
    let len = fs::metadata(sealed).unwrap().len();
    let cut = |to: u64| {
        fs::OpenOptions::new()
            .write(true)
            .open(sealed)
            .unwrap()
            .set_len(to)
            .unwrap();
    };
    // Losing only footer bytes: the records still verify and continue into the next segment,
    // so the log opens, serves them, and the scrub reports the footer.
    cut(len - 1);
    let store = TestStore::open(cfg.clone()).await.unwrap();
    assert_eq!(
        bodies(&store.reader().entries(..).unwrap()),
        bodies(&entries(1, 1..41, 64))
    );
    let report = store.reader().scrub().unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    store.shutdown().await.unwrap();
    drop(store);
    // Losing a record: the next segment no longer continues it.
    cut(200);
    assert!(matches!(
        TestStore::open(cfg).await,
        Err(LogError::Gap { .. })
    ));
}

#[tokio::test]
async fn missing_middle_segment_is_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 512, 1 << 20);
    {
        let store = TestStore::open(cfg.clone()).await.unwrap();
        append(&store, entries(1, 1..41, 64)).await.unwrap();
        store.shutdown().await.unwrap();
    }
    let paths = segment_paths(dir.path());
    assert!(paths.len() >= 3);
    fs::remove_file(&paths[1]).unwrap();
    assert!(matches!(
        TestStore::open(cfg).await,
        Err(LogError::Gap { .. })
    ));
}

#[tokio::test]
async fn torn_header_of_the_last_segment_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 512, 1 << 20);
    {
        let store = TestStore::open(cfg.clone()).await.unwrap();
        append(&store, entries(1, 1..11, 64)).await.unwrap();
        store.shutdown().await.unwrap();
    }
    let last = segment_paths(dir.path()).pop().unwrap();
    let next_index =
        crate::segment::parse_segment_file_name(last.file_name().unwrap().to_str().unwrap())
            .unwrap();
    // A crash right after creating the next segment: only part of its header made it.
    let torn = dir
        .path()
        .join(crate::segment::segment_file_name(next_index + 1000));
    fs::File::create(&torn).unwrap().write_all(b"VELA").unwrap();

    let store = TestStore::open(cfg).await.unwrap();
    assert!(!torn.exists());
    assert_eq!(store.reader().last_index(), Some(10));
    append(&store, entries(1, 11..12, 8)).await.unwrap();
}

#[tokio::test]
async fn truncate_across_segments_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 512, 0);
    {
        let mut store = TestStore::open(cfg.clone()).await.unwrap();
        append(&store, entries(1, 1..61, 64)).await.unwrap();
        let before = store.segments().len();
        RaftLogStorage::truncate_after(&mut store, Some(log_id(1, 12)))
            .await
            .unwrap();
        let after = store.segments();
        assert!(after.len() < before);
        assert_eq!(after.last().unwrap().last_index, Some(12));
        assert!(!after.last().unwrap().sealed || after.last().unwrap().bytes >= 512);
        assert_eq!(segment_paths(dir.path()).len(), after.len());
        assert_eq!(store.reader().entry(13).unwrap(), None);
        append(&store, entries(2, 13..31, 64)).await.unwrap();
        store.shutdown().await.unwrap();
    }
    let store = TestStore::open(cfg).await.unwrap();
    let expected = [entries(1, 1..13, 64), entries(2, 13..31, 64)].concat();
    assert_eq!(
        bodies(&store.reader().entries(..).unwrap()),
        bodies(&expected)
    );
}

#[tokio::test]
async fn truncate_everything_and_purge_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 512, 1 << 20);
    let mut store = TestStore::open(cfg.clone()).await.unwrap();
    append(&store, entries(1, 5..25, 64)).await.unwrap();
    RaftLogStorage::truncate_after(&mut store, None)
        .await
        .unwrap();
    assert!(store.segments().is_empty());
    assert!(segment_paths(dir.path()).is_empty());
    assert_eq!(store.reader().first_index(), None);

    append(&store, entries(1, 1..11, 64)).await.unwrap();
    RaftLogStorage::purge(&mut store, log_id(1, 30))
        .await
        .unwrap();
    assert!(store.segments().is_empty());
    let state = RaftLogStorage::get_log_state(&mut store).await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 30)));
    assert!(matches!(
        store.append_entries(entries(1, 30..31, 8), None),
        Err(LogError::BeforePurged { .. })
    ));
    append(&store, entries(2, 31..33, 64)).await.unwrap();
    store.shutdown().await.unwrap();
    drop(store);

    let mut store = TestStore::open(cfg).await.unwrap();
    let state = RaftLogStorage::get_log_state(&mut store).await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 30)));
    assert_eq!(state.last_log_id, Some(log_id(2, 32)));
    assert_eq!(store.reader().first_index(), Some(31));
}

#[tokio::test]
async fn compaction_stops_at_the_purge_point_the_replay_floor_and_the_newest_segment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 512, 1 << 20);
    let mut store = TestStore::open(cfg.clone()).await.unwrap();
    append(&store, entries(1, 1..41, 64)).await.unwrap();
    let before = store.segments();
    assert!(before.len() > 4);

    // Without a replay floor nothing may go.
    assert!(store.compact_below(30).await.unwrap().is_empty());
    store.set_replay_floor(Some(u64::MAX));
    // Nor above openraft's purge point.
    assert!(store.compact_below(30).await.unwrap().is_empty());
    RaftLogStorage::purge(&mut store, log_id(1, 35))
        .await
        .unwrap();
    store.set_replay_floor(Some(20));
    let removed = store.compact_below(30).await.unwrap();
    assert!(!removed.is_empty());
    assert!(removed.iter().all(|s| s.last_index < Some(20)));
    let first = store.reader().first_index().unwrap();
    assert!(
        first <= 20 && first > 1,
        "whole segments below the floor went"
    );
    assert_eq!(
        segment_paths(dir.path()).len(),
        before.len() - removed.len()
    );

    // Everything below the purge point, floor lifted: all but the newest segment.
    store.set_replay_floor(Some(u64::MAX));
    store.compact_below(u64::MAX).await.unwrap();
    assert_eq!(store.segments().len(), 1);
    assert_eq!(store.reader().last_index(), Some(40));
    store.shutdown().await.unwrap();
    drop(store);

    let store = TestStore::open(cfg).await.unwrap();
    let first = store.reader().first_index().unwrap();
    assert_eq!(
        bodies(&store.reader().entries(..).unwrap()),
        bodies(&entries(1, first..41, 64))
    );
}

#[tokio::test]
async fn opening_for_a_snapshot_checks_the_log_reaches_and_continues_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 512, 1 << 20);
    {
        let mut store = TestStore::open(cfg.clone()).await.unwrap();
        append(&store, entries(1, 1..41, 64)).await.unwrap();
        RaftLogStorage::purge(&mut store, log_id(1, 30))
            .await
            .unwrap();
        store.set_replay_floor(Some(21));
        store.compact_below(21).await.unwrap();
        store.shutdown().await.unwrap();
    }
    let first = TestStore::open(cfg.clone())
        .await
        .unwrap()
        .reader()
        .first_index()
        .unwrap();
    assert!(first > 1 && first <= 21);

    // A snapshot beyond the end of the log: acknowledged entries are missing.
    assert!(matches!(
        TestStore::open_for_snapshot(cfg.clone(), Some(log_id(1, 45))).await,
        Err(LogError::BehindSnapshot {
            snapshot: 45,
            recovered: Some(40),
            ..
        })
    ));
    // A snapshot older than the log's first entry: the entries after it are gone.
    assert!(matches!(
        TestStore::open_for_snapshot(cfg.clone(), Some(log_id(1, first - 2))).await,
        Err(LogError::SnapshotGap { .. })
    ));
    // An older generation than the purge point: the purge point comes down to it.
    let mut store = TestStore::open_for_snapshot(cfg.clone(), Some(log_id(1, 25)))
        .await
        .unwrap();
    let state = RaftLogStorage::get_log_state(&mut store).await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 25)));
    assert_eq!(state.last_log_id, Some(log_id(1, 40)));
    store.shutdown().await.unwrap();
    // The files are untouched by refusals.
    assert_eq!(
        TestStore::open(cfg).await.unwrap().reader().first_index(),
        Some(first)
    );
}

#[tokio::test]
async fn a_directory_has_one_store_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1 << 20, 1 << 20);
    let store = TestStore::open(cfg.clone()).await.unwrap();
    assert!(matches!(
        TestStore::open(cfg.clone()).await,
        Err(LogError::Locked { .. })
    ));
    append(&store, entries(1, 1..3, 8)).await.unwrap();
    store.shutdown().await.unwrap();
    assert!(matches!(
        store.append_entries(entries(1, 3..4, 8), None),
        Err(LogError::Closed)
    ));
    // Reads keep working on a closed store; a new store may open the directory.
    assert_eq!(store.reader().last_index(), Some(2));
    let reopened = TestStore::open(cfg).await.unwrap();
    assert_eq!(reopened.reader().last_index(), Some(2));
}

#[tokio::test]
async fn async_flush_mode_acknowledges_and_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 4096, 1 << 20);
    cfg.flush = FlushMode::Async {
        interval: Duration::from_millis(20),
    };
    {
        let store = TestStore::open(cfg.clone()).await.unwrap();
        for chunk in entries(1, 1..101, 64).chunks(10) {
            append(&store, chunk.to_vec()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        store.sync().await.unwrap();
        store.shutdown().await.unwrap();
    }
    let store = TestStore::open(cfg).await.unwrap();
    assert_eq!(
        bodies(&store.reader().entries(..).unwrap()),
        bodies(&entries(1, 1..101, 64))
    );
}

#[tokio::test]
async fn readers_see_appends_before_the_flush_callback() {
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::open(config(dir.path(), 1 << 20, 0))
        .await
        .unwrap();
    let handle = store.reader();
    let (tx, rx) = TestConfig::oneshot();
    store
        .append_entries(entries(1, 1..1001, 256), Some(IOFlushed::signal(tx)))
        .unwrap();
    // Readable at once (from the pinned cache even with a zero budget), flushed or not.
    assert_eq!(handle.entries(..).unwrap().len(), 1000);
    rx.await.unwrap().unwrap();
    // The next append evicts the written entries; reads then come from the file.
    append(&store, entries(1, 1001..1002, 8)).await.unwrap();
    assert_eq!(
        bodies(&handle.entries(..).unwrap()),
        bodies(&[entries(1, 1..1001, 256), entries(1, 1001..1002, 8)].concat())
    );
}

/// `cargo test -p vela-raft --release -- --ignored --nocapture append_throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "micro benchmark; prints entries/s"]
async fn append_throughput() {
    const ENTRIES: u64 = 20_000;
    const BATCH: u64 = 32;
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::open(config(dir.path(), 64 << 20, 64 << 20))
        .await
        .unwrap();

    // Pipelined like openraft does: keep appending without waiting for each flush.
    let batches: Vec<_> = (1..=ENTRIES)
        .step_by(BATCH as usize)
        .map(|first| entries(1, first..first + BATCH, 1024))
        .collect();
    let started = Instant::now();
    let mut pending = Vec::new();
    for batch in batches {
        let (tx, rx) = TestConfig::oneshot();
        store
            .append_entries(batch, Some(IOFlushed::signal(tx)))
            .unwrap();
        pending.push(rx);
    }
    for rx in pending {
        rx.await.unwrap().unwrap();
    }
    let pipelined = started.elapsed();

    // One batch at a time: every batch pays its own fsync.
    let started = Instant::now();
    let base = ENTRIES + 1;
    for first in (base..base + 2_000).step_by(BATCH as usize) {
        append(&store, entries(1, first..first + BATCH, 1024))
            .await
            .unwrap();
    }
    let serial = started.elapsed();
    eprintln!(
        "pipelined: {ENTRIES} x 1 KiB in {pipelined:?} = {:.0} entries/s; serial batches of {BATCH}: {:.0} entries/s",
        ENTRIES as f64 / pipelined.as_secs_f64(),
        2_000.0 / serial.as_secs_f64()
    );
    store.shutdown().await.unwrap();
}

#[test]
fn store_and_handle_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<TestStore>();
    assert_send_sync::<LogHandle<TestConfig>>();
}

/// Model-based check: random appends, truncations, purges and reopens against a plain `Vec` of
/// the live entries, with segments small enough that every operation crosses segment boundaries.
mod model {
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
}

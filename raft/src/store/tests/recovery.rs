//! Recovery at open: torn tails of the newest segment are cut and appends continue; damage
//! anywhere else (sealed records, headers, footers, missing segments, a lost committed index) is
//! refused, reported by the scrub, or never served.

use super::*;

/// These tests place damage relative to where a segment's file ends, so the writer zeroes
/// nothing ahead of the records here; the zeros themselves are one of the tails recovery cuts
/// (the `zeros` damage below, `the_active_segment_is_zeroed_ahead_and_cut_back_at_seal_and_open`
/// and the power-loss sweeps, which run with them).
fn config(dir: &Path, segment_bytes: u64, cache_bytes: usize) -> LogStoreConfig {
    LogStoreConfig {
        preallocate_bytes: 0,
        ..crate::test_support::config(dir, segment_bytes, cache_bytes)
    }
}

/// Writes entries `range` (term 1, 64-byte bodies) into a new log at `cfg` and closes it.
async fn write_and_close(cfg: &LogStoreConfig, range: std::ops::Range<u64>) {
    let store = TestStore::open(cfg.clone()).await.unwrap();
    append(&store, entries(1, range, 64)).await.unwrap();
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn torn_tail_cut_mid_record_is_dropped_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1 << 20, 1 << 20);
    write_and_close(&cfg, 1..21).await;
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
        write_and_close(&cfg, 1..11).await;
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
    write_and_close(&cfg, 1..41).await;
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
    write_and_close(&cfg, 1..41).await;
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
    write_and_close(&cfg, 1..41).await;
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
    write_and_close(&cfg, 1..41).await;
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
    write_and_close(&cfg, 1..11).await;
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

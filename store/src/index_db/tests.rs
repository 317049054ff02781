//! The index file's format, and what survives a power cut, torn writes and bit rot on the
//! simulated disk.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use vela_raft::vfs::sim::{CrashMode, SimVfs, seed_sweep};

use super::*;

fn entry(log_index: u64) -> IndexEntry {
    IndexEntry {
        log_index,
        slot: (log_index % 7) as u32,
        store_ts_ms: 1_700_000_000_000 + log_index as i64,
        tag: (log_index % 3) as u32,
        message_group: log_index.wrapping_mul(0x9e37_79b9_7f4a_7c15),
    }
}

fn batch(queue: u32, offsets: std::ops::Range<u64>) -> BTreeMap<(u32, u64), IndexEntry> {
    offsets.map(|o| ((queue, o), entry(o + 1))).collect()
}

fn sim_vfs(sim: &SimVfs) -> Arc<dyn Vfs> {
    Arc::new(sim.clone())
}

#[test]
fn key_and_entry_golden_bytes() {
    assert_eq!(
        hex::encode(encode_key(0x0102_0304, 0x05)),
        "010203040000000000000005"
    );
    let e = IndexEntry {
        log_index: 0x1122,
        slot: 3,
        store_ts_ms: -2,
        tag: 9,
        message_group: 0xabcd,
    };
    let bytes = encode_entry(4, 5, &e);
    assert_eq!(
        hex::encode(bytes),
        "01000000000000030000000000001122fffffffffffffffe000000000000abcd00000009000000006cb6062e"
    );
    assert_eq!(decode_entry(4, 5, &bytes), Ok(e));
    assert!(
        decode_entry(4, 6, &bytes).is_err(),
        "an entry read under another key is refused"
    );
    let mut flipped = bytes;
    flipped[20] ^= 0x10;
    assert!(
        decode_entry(4, 5, &flipped).is_err(),
        "a damaged entry is refused"
    );
    assert_eq!(
        hex::encode(encode_tag_key(1, 2, 3)),
        "00000001000000020000000000000003"
    );
    assert!(
        encode_key(1, u64::MAX) < encode_key(2, 0),
        "keys sort by queue, then offset"
    );
}

#[test]
fn writes_read_back_by_key_and_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vfs = vela_raft::vfs::StdVfs::shared();
    let db = IndexDb::open(&vfs, dir.path(), 1 << 20).expect("opens");
    assert_eq!(db.indexed_through().expect("meta"), None);
    db.write(&batch(1, 0..100), &HistoryRows::default(), 10)
        .expect("writes");
    db.write(&batch(2, 0..5), &HistoryRows::default(), 8)
        .expect("writes");
    assert_eq!(
        db.indexed_through().expect("meta"),
        Some(10),
        "never lowered"
    );
    let view = db.view().expect("view");
    assert_eq!(view.get(1, 42).expect("reads"), Some(entry(43)));
    assert_eq!(view.get(1, 100).expect("reads"), None);
    let got: Vec<u64> = view
        .range(1, 95, 200)
        .expect("range")
        .map(|r| r.expect("reads").0)
        .collect();
    assert_eq!(got, vec![95, 96, 97, 98, 99]);
    drop(view);
    drop(db);
    let db = IndexDb::open(&vfs, dir.path(), 1 << 20).expect("reopens");
    assert_eq!(db.count(), 105);
}

#[test]
fn garbage_collection_keeps_what_a_floor_protects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vfs = vela_raft::vfs::StdVfs::shared();
    let db = IndexDb::open(&vfs, dir.path(), 1 << 20).expect("opens");
    db.write(&batch(0, 0..50_000), &HistoryRows::default(), 1)
        .expect("writes");
    db.write(&batch(1, 0..10), &HistoryRows::default(), 1)
        .expect("writes");
    db.write(&batch(2, 0..10), &HistoryRows::default(), 1)
        .expect("writes");
    db.write(&batch(3, 0..10), &HistoryRows::default(), 1)
        .expect("writes");
    // Queue 0 keeps 40,000.., queue 1 is gone from both generations, queue 2 keeps all, queue 3
    // was made after the newest generation (its key is past the limit).
    let floors = HashMap::from([(0, 40_000), (2, 0)]);
    let collected = db.collect_garbage(&floors, 3, 0).expect("collects");
    assert_eq!(collected.entries, 40_000 + 10);
    let view = db.view().expect("view");
    assert_eq!(view.get(0, 39_999).expect("reads"), None);
    assert_eq!(view.get(0, 40_000).expect("reads"), Some(entry(40_001)));
    assert_eq!(view.get(1, 0).expect("reads"), None);
    assert_eq!(view.get(2, 0).expect("reads"), Some(entry(1)));
    assert_eq!(view.get(3, 9).expect("reads"), Some(entry(10)));
    assert_eq!(db.count(), 10_000 + 10 + 10);
    assert_eq!(
        db.collect_garbage(&floors, 3, 0).expect("collects").entries,
        0
    );
}

#[test]
fn a_file_of_another_format_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vfs = vela_raft::vfs::StdVfs::shared();
    {
        let db = IndexDb::open(&vfs, dir.path(), 1 << 20).expect("opens");
        let tx = db.db().begin_write().expect("tx");
        tx.open_table(META)
            .expect("meta")
            .insert(META_FORMAT, INDEX_FORMAT + 1)
            .expect("insert");
        tx.commit().expect("commit");
    }
    let err = IndexDb::open(&vfs, dir.path(), 1 << 20).expect_err("refused");
    assert!(err.to_string().contains("index format"), "{err}");
}

/// What one seed checks: entries made durable survive a power cut at any point after; later
/// writes survive whole or not at all, as `indexed_through` says.
fn power_cut_case(seed: u64) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let sim = SimVfs::new();
    let dir = Path::new("/shard");
    let vfs = sim_vfs(&sim);
    vela_raft::vfs::create_dir_all(&*vfs, dir).expect("dir");
    let db = IndexDb::open(&vfs, dir, 1 << 20).expect("opens");
    let mut durable = BTreeMap::new();
    let mut durable_through = 0;
    let mut written = BTreeMap::new();
    let mut next = 0u64;
    let steps = rng.random_range(1..12);
    for step in 1..=steps {
        let n = rng.random_range(1..3_000);
        let part = batch(rng.random_range(0..3), next..next + n);
        next += n;
        db.write(&part, &HistoryRows::default(), step)
            .expect("writes");
        written.insert(step, part);
        if rng.random_bool(0.4) {
            db.make_durable().expect("syncs");
            durable_through = step;
            for (_, part) in written.range(..=step) {
                durable.extend(part.iter().map(|(k, v)| (*k, *v)));
            }
        }
    }
    let crashed = sim.crash(CrashMode::Random { seed: rng.random() });
    drop(db);
    let vfs = sim_vfs(&crashed);
    let db = IndexDb::open(&vfs, dir, 1 << 20).expect("reopens after a power cut");
    let through = db.indexed_through().expect("meta").unwrap_or(0);
    assert!(
        through >= durable_through,
        "durable through {durable_through}, file says {through}"
    );
    let view = db.view().expect("view");
    let mut expected = BTreeMap::new();
    for (_, part) in written.range(..=through) {
        expected.extend(part.iter().map(|(k, v)| (*k, *v)));
    }
    for ((queue, offset), e) in &expected {
        assert_eq!(
            view.get(*queue, *offset).expect("reads"),
            Some(*e),
            "entry ({queue}, {offset}) written through {through}"
        );
    }
    for ((queue, offset), e) in &durable {
        assert_eq!(view.get(*queue, *offset).expect("reads"), Some(*e));
    }
}

#[test]
fn durable_entries_survive_power_cuts() {
    seed_sweep("index power-cut sweep", 24, power_cut_case);
}

/// A crash while the file is first made leaves either no index file or a complete one.
#[test]
fn creation_is_atomic_across_power_cuts() {
    seed_sweep("index creation sweep", 24, |seed| {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let sim = SimVfs::new();
        let dir = Path::new("/shard");
        let vfs = sim_vfs(&sim);
        vela_raft::vfs::create_dir_all(&*vfs, dir).expect("dir");
        sim.arm_crash(rng.random_range(0..40), CrashMode::Random { seed });
        let _ = IndexDb::open(&vfs, dir, 1 << 20);
        let crashed = sim.crash(CrashMode::Random { seed: rng.random() });
        let vfs = sim_vfs(&crashed);
        let db = IndexDb::open(&vfs, dir, 1 << 20).expect("opens after a crash in creation");
        db.write(&batch(0, 0..10), &HistoryRows::default(), 1)
            .expect("writes");
    });
}

/// A flipped bit anywhere in the file is reported, or harmless: a read never returns an entry
/// that was not written.
#[test]
fn bit_rot_never_serves_a_wrong_entry() {
    seed_sweep("index bit-rot sweep", 32, |seed| {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let sim = SimVfs::new();
        let dir = Path::new("/shard");
        let vfs = sim_vfs(&sim);
        vela_raft::vfs::create_dir_all(&*vfs, dir).expect("dir");
        let written = batch(0, 0..5_000);
        {
            let db = IndexDb::open(&vfs, dir, 1 << 20).expect("opens");
            db.write(&written, &HistoryRows::default(), 1)
                .expect("writes");
            db.make_durable().expect("syncs");
        }
        let path = dir.join(INDEX_FILE);
        let len = sim.file_len(&path).expect("len");
        sim.flip_bit(&path, rng.random_range(0..len * 8))
            .expect("flips");
        let Ok(db) = IndexDb::open(&vfs, dir, 1 << 20) else {
            return; // refused: reported
        };
        let Ok(view) = db.view() else { return };
        for ((queue, offset), e) in &written {
            // An error or a missing entry is reported by the caller; a wrong one never.
            if let Ok(Some(got)) = view.get(*queue, *offset) {
                assert_eq!(got, *e, "a damaged file served a wrong entry");
            }
        }
    });
}

#[test]
fn tag_keys_find_the_next_tagged_entry_and_are_collected_with_their_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vfs = vela_raft::vfs::StdVfs::shared();
    let db = IndexDb::open(&vfs, dir.path(), 1 << 20).expect("opens");
    // entry(n) has tag n % 3, so offsets o have tag (o + 1) % 3; tag 0 is untagged.
    db.write(&batch(0, 0..300), &HistoryRows::default(), 1)
        .expect("writes");
    db.write(&batch(1, 0..300), &HistoryRows::default(), 1)
        .expect("writes");
    let view = db.view().expect("view");
    assert_eq!(view.first_tagged(0, &[1], 0, 300).expect("reads"), Some(0));
    assert_eq!(view.first_tagged(0, &[2], 0, 300).expect("reads"), Some(1));
    assert_eq!(view.first_tagged(0, &[2], 2, 300).expect("reads"), Some(4));
    assert_eq!(
        view.first_tagged(0, &[2, 1], 2, 300).expect("reads"),
        Some(3)
    );
    assert_eq!(view.first_tagged(0, &[7], 0, 300).expect("reads"), None);
    assert_eq!(
        view.first_tagged(0, &[1], 298, 299).expect("reads"),
        None,
        "bounded"
    );
    assert_eq!(db.tag_count(), 400, "untagged entries have no tag key");
    drop(view);
    let floors = HashMap::from([(0, 150)]);
    db.collect_garbage(&floors, 2, 0).expect("collects");
    assert_eq!(
        db.tag_count(),
        100,
        "queue 0 keeps its upper half, queue 1 is gone"
    );
    let view = db.view().expect("view");
    assert_eq!(
        view.first_tagged(0, &[1], 0, 300).expect("reads"),
        Some(150)
    );
    assert_eq!(view.first_tagged(1, &[1], 0, 300).expect("reads"), None);
}

/// Every row of `db` through its own view, one batch.
fn all_rows(db: &Arc<IndexDb>) -> IndexRows {
    let view = db.view().expect("view");
    let mut all = IndexRows::default();
    for rows in view.export(usize::MAX) {
        let rows = rows.expect("exports");
        all.entries.extend(rows.entries);
        all.tags.extend(rows.tags);
        all.history.lookups.extend(rows.history.lookups);
        all.history.record_events.extend(rows.history.record_events);
        all.history.queue_events.extend(rows.history.queue_events);
    }
    all
}

#[test]
fn an_export_imported_into_an_empty_file_answers_the_same() {
    let vfs = vela_raft::vfs::StdVfs::shared();
    let from_dir = tempfile::tempdir().expect("tempdir");
    let from = IndexDb::open(&vfs, from_dir.path(), 1 << 20).expect("opens");
    // Offsets o have tag (o + 1) % 3, so a third are untagged.
    from.write(&batch(0, 0..40), &HistoryRows::default(), 7)
        .expect("writes");
    from.write(&batch(1, 5..25), &HistoryRows::default(), 9)
        .expect("writes");
    // And a message's lookup and track (ADR 0028): four history rows.
    let mut history = HistoryRows::default();
    for (kind, text) in [
        (history::LookupKind::MessageId, "m"),
        (history::LookupKind::Key, "k"),
    ] {
        history.lookups.push((
            history::encode_lookup_key(kind, history::lookup_hash(text), 11, 0),
            history::encode_lookup_value(Some(history::Placed {
                key: 4,
                queue_id: 0,
                offset: 100,
            })),
        ));
    }
    let key = history::record_event_key(11, 0, 11, history::EventKind::Stored);
    history
        .record_events
        .push((key, history::encode_event(&key, 1, 0, 100, "t")));
    let key = history::queue_event_key(4, 100, 12, history::EventKind::Acked);
    history
        .queue_events
        .push((key, history::encode_event(&key, 2, 0, 0, "g")));
    from.write(&batch(4, 100..103), &history, 12)
        .expect("writes");
    let to_dir = tempfile::tempdir().expect("tempdir");
    let to = IndexDb::open(&vfs, to_dir.path(), 1 << 20).expect("opens");

    let view = from.view().expect("view");
    let mut batches = 0;
    for rows in view.export(3) {
        let rows = rows.expect("exports");
        assert!(
            !rows.is_empty() && rows.len() <= 3,
            "batch of {}",
            rows.len()
        );
        assert!(rows.entries.is_sorted() && rows.tags.is_sorted());
        to.import(&rows).expect("imports");
        batches += 1;
    }
    to.finish_import(12).expect("finishes");
    let rows = (40 + 20 + 3) + from.tag_count() as usize;
    assert_eq!(batches, rows.div_ceil(3) + 4usize.div_ceil(3));
    assert_eq!(to.indexed_through().expect("meta"), Some(12));
    assert_eq!(to.count(), from.count());
    assert_eq!(to.tag_count(), from.tag_count());
    assert_eq!(all_rows(&to), all_rows(&from));
    assert_eq!(all_rows(&to).history.len(), 4);
    assert_eq!(
        to.view()
            .expect("view")
            .queue_events(4, 100)
            .expect("reads")[0]
            .name,
        "g"
    );

    let copy = to.view().expect("view");
    for queue in 0..6 {
        for offset in 0..110 {
            assert_eq!(
                copy.get(queue, offset).expect("reads"),
                view.get(queue, offset).expect("reads"),
                "({queue}, {offset})"
            );
        }
        let range = |v: &IndexView| -> Vec<(u64, IndexEntry)> {
            v.range(queue, 0, u64::MAX)
                .expect("range")
                .map(|r| r.expect("reads"))
                .collect()
        };
        assert_eq!(range(&copy), range(&view));
        for tags in [&[1][..], &[2], &[1, 2], &[0]] {
            for from_offset in [0, 6, 20, 39, 101] {
                assert_eq!(
                    copy.first_tagged(queue, tags, from_offset, 200)
                        .expect("reads"),
                    view.first_tagged(queue, tags, from_offset, 200)
                        .expect("reads"),
                    "queue {queue}, tags {tags:?}, from {from_offset}"
                );
            }
        }
    }

    // A batch of 0 is one row at a time; finishing again sets exactly what it is told.
    assert!(view.export(0).all(|rows| rows.expect("exports").len() == 1));
    to.finish_import(3).expect("finishes");
    assert_eq!(to.indexed_through().expect("meta"), Some(3));
}

#[test]
fn an_export_does_not_see_writes_after_its_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vfs = vela_raft::vfs::StdVfs::shared();
    let db = IndexDb::open(&vfs, dir.path(), 1 << 20).expect("opens");
    db.write(&batch(0, 0..10), &HistoryRows::default(), 1)
        .expect("writes");
    let before = all_rows(&db);
    let view = db.view().expect("view");
    let mut export = view.export(4);
    let first = export.next().expect("a batch").expect("exports");
    db.write(&batch(0, 10..20), &HistoryRows::default(), 2)
        .expect("writes");
    db.write(&batch(1, 0..10), &HistoryRows::default(), 3)
        .expect("writes");
    let mut seen = first;
    for rows in export {
        let rows = rows.expect("exports");
        seen.entries.extend(rows.entries);
        seen.tags.extend(rows.tags);
    }
    assert_eq!(seen, before);
    assert_eq!(seen.entries.len(), 10);
    assert_ne!(
        all_rows(&db),
        before,
        "the file itself has the later writes"
    );
}

#[test]
fn an_import_is_durable_once_finished() {
    let from_dir = tempfile::tempdir().expect("tempdir");
    let std_vfs = vela_raft::vfs::StdVfs::shared();
    let from = IndexDb::open(&std_vfs, from_dir.path(), 1 << 20).expect("opens");
    from.write(&batch(0, 0..2_000), &HistoryRows::default(), 5)
        .expect("writes");
    from.write(&batch(2, 0..50), &HistoryRows::default(), 6)
        .expect("writes");
    let exported = all_rows(&from);

    let sim = SimVfs::new();
    let dir = Path::new("/shard");
    let vfs = sim_vfs(&sim);
    vela_raft::vfs::create_dir_all(&*vfs, dir).expect("dir");
    let db = IndexDb::open(&vfs, dir, 1 << 20).expect("opens");
    for rows in from.view().expect("view").export(500) {
        db.import(&rows.expect("exports")).expect("imports");
    }
    db.finish_import(6).expect("finishes");
    let crashed = sim.crash(CrashMode::DropAllUnsynced);
    drop(db);
    let vfs = sim_vfs(&crashed);
    let db = IndexDb::open(&vfs, dir, 1 << 20).expect("reopens after a power cut");
    assert_eq!(db.indexed_through().expect("meta"), Some(6));
    assert_eq!(all_rows(&db), exported);
    let view = db.view().expect("view");
    assert_eq!(view.get(0, 1_999).expect("reads"), Some(entry(2_000)));
    assert_eq!(view.first_tagged(2, &[2], 0, 50).expect("reads"), Some(1));
}

#[test]
fn an_import_refuses_a_damaged_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vfs = vela_raft::vfs::StdVfs::shared();
    let db = IndexDb::open(&vfs, dir.path(), 1 << 20).expect("opens");
    let mut value = encode_entry(0, 1, &entry(2));
    value[10] ^= 1;
    let rows = IndexRows {
        entries: vec![(encode_key(0, 1), value)],
        ..Default::default()
    };
    let err = db.import(&rows).expect_err("refused");
    assert!(err.to_string().contains("damaged"), "{err}");
    assert_eq!(db.count(), 0);
    let moved = IndexRows {
        entries: vec![(encode_key(0, 2), encode_entry(0, 1, &entry(2)))],
        ..Default::default()
    };
    db.import(&moved)
        .expect_err("an entry under another key is refused");
}

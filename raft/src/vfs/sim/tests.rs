//! The simulated disk's rules, one per test.

use super::*;

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

#[test]
fn unsynced_data_and_names_are_lost_at_a_strict_crash() {
    let vfs = SimVfs::new();
    create_dir_all(&vfs, &p("/d")).unwrap();
    let a = vfs.create_new(&p("/d/a")).unwrap();
    a.write_all_at(b"one", 0).unwrap();
    a.sync_data().unwrap();
    vfs.sync_dir(&p("/d")).unwrap();
    a.write_all_at(b"two", 3).unwrap();
    let b = vfs.create_new(&p("/d/b")).unwrap();
    b.write_all_at(b"x", 0).unwrap();
    b.sync_data().unwrap(); // data synced, but the name is not

    let after = vfs.crash(CrashMode::DropAllUnsynced);
    assert!(a.write_all_at(b"late", 0).is_err(), "the old disk is gone");
    assert_eq!(after.read(&p("/d/a")).unwrap(), b"one");
    assert_eq!(
        after.read(&p("/d/b")).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
}

#[test]
fn rename_is_durable_only_after_the_directory_sync() {
    let vfs = SimVfs::new();
    create_dir_all(&vfs, &p("/d")).unwrap();
    let f = vfs.create_truncate(&p("/d/f.tmp")).unwrap();
    f.write_all_at(b"new", 0).unwrap();
    f.sync_data().unwrap();
    vfs.rename(&p("/d/f.tmp"), &p("/d/f")).unwrap();
    let lost = vfs.crash(CrashMode::DropAllUnsynced);
    assert!(lost.read(&p("/d/f")).is_err());

    let vfs = SimVfs::new();
    create_dir_all(&vfs, &p("/d")).unwrap();
    let f = vfs.create_truncate(&p("/d/f.tmp")).unwrap();
    f.write_all_at(b"new", 0).unwrap();
    f.sync_data().unwrap();
    vfs.rename(&p("/d/f.tmp"), &p("/d/f")).unwrap();
    vfs.sync_dir(&p("/d")).unwrap();
    let kept = vfs.crash(CrashMode::DropAllUnsynced);
    assert_eq!(kept.read(&p("/d/f")).unwrap(), b"new");
    assert!(kept.read(&p("/d/f.tmp")).is_err());
}

/// A directory moves whole, and the move survives a power cut only once its parent is synced.
#[test]
fn a_directory_rename_moves_the_tree_and_is_durable_after_the_parent_sync() {
    let make = || {
        let vfs = SimVfs::new();
        create_dir_all(&vfs, &p("/d/s/log")).unwrap();
        let f = vfs.create_new(&p("/d/s/log/seg")).unwrap();
        f.write_all_at(b"data", 0).unwrap();
        f.sync_data().unwrap();
        for dir in ["/d/s/log", "/d/s", "/d", "/"] {
            vfs.sync_dir(&p(dir)).unwrap();
        }
        vfs
    };
    let vfs = make();
    assert_eq!(
        vfs.rename_dir(&p("/d/s/log/seg"), &p("/d/s/log/x"))
            .unwrap_err()
            .kind(),
        io::ErrorKind::NotADirectory
    );
    vfs.rename_dir(&p("/d/s"), &p("/d/s.aside")).unwrap();
    assert!(!vfs.is_dir(&p("/d/s")));
    assert_eq!(vfs.read(&p("/d/s.aside/log/seg")).unwrap(), b"data");
    let lost = vfs.crash(CrashMode::DropAllUnsynced);
    assert_eq!(lost.read(&p("/d/s/log/seg")).unwrap(), b"data");
    assert!(!lost.is_dir(&p("/d/s.aside")));

    let vfs = make();
    vfs.rename_dir(&p("/d/s"), &p("/d/s.aside")).unwrap();
    vfs.sync_dir(&p("/d")).unwrap();
    let kept = vfs.crash(CrashMode::DropAllUnsynced);
    assert_eq!(kept.read(&p("/d/s.aside/log/seg")).unwrap(), b"data");
    assert!(kept.read(&p("/d/s/log/seg")).is_err());
    assert_eq!(
        kept.rename_dir(&p("/d/s.aside"), &p("/d/s.aside"))
            .unwrap_err()
            .kind(),
        io::ErrorKind::AlreadyExists
    );

    // A change inside the tree not yet synced moves with it: it never lands under the old
    // name, which a new tree may use.
    let vfs = make();
    vfs.remove_file(&p("/d/s/log/seg")).unwrap();
    vfs.rename_dir(&p("/d/s"), &p("/d/s.aside")).unwrap();
    vfs.sync_dir(&p("/d")).unwrap();
    create_dir_all(&vfs, &p("/d/s/log")).unwrap();
    vfs.create_new(&p("/d/s/log/seg")).unwrap();
    for dir in ["/d/s/log", "/d/s", "/d", "/d/s.aside/log"] {
        vfs.sync_dir(&p(dir)).unwrap();
    }
    let after = vfs.crash(CrashMode::DropAllUnsynced);
    assert!(
        after.read(&p("/d/s/log/seg")).is_ok(),
        "the new tree's file"
    );
    assert!(
        after.read(&p("/d/s.aside/log/seg")).is_err(),
        "removed in the old tree"
    );
}

#[test]
fn random_crashes_keep_a_prefix_and_tear_sectors() {
    // Write 4 sectors of 0xAA over zeros without syncing; every outcome is each sector
    // either old or new, and the synced prefix always survives.
    let mut saw_partial = false;
    for seed in 0..64 {
        let vfs = SimVfs::new();
        create_dir_all(&vfs, &p("/d")).unwrap();
        let f = vfs.create_new(&p("/d/f")).unwrap();
        f.write_all_at(&[1u8; 512], 0).unwrap();
        f.sync_data().unwrap();
        vfs.sync_dir(&p("/d")).unwrap();
        f.write_all_at(&[0xAA; 2048], 512).unwrap();
        let after = vfs.crash(CrashMode::Random { seed });
        let data = after.read(&p("/d/f")).unwrap();
        assert_eq!(&data[..512], &[1u8; 512][..]);
        let landed = data[512..]
            .chunks(512)
            .filter(|s| s.iter().all(|b| *b == 0xAA))
            .count();
        for sector in data[512..].chunks(512) {
            assert!(sector.iter().all(|b| *b == 0xAA) || sector.iter().all(|b| *b == 0));
        }
        saw_partial |= landed > 0 && landed < 4;
    }
    assert!(saw_partial, "some seed tears the write");
}

#[test]
fn directories_need_their_parent_synced_and_locks_exclude() {
    let vfs = SimVfs::new();
    create_dir_all(&vfs, &p("/x/y")).unwrap();
    let l = vfs.try_lock(&p("/x/y/LOCK")).unwrap();
    assert!(l.is_some());
    assert!(vfs.try_lock(&p("/x/y/LOCK")).unwrap().is_none());
    drop(l);
    assert!(vfs.try_lock(&p("/x/y/LOCK")).unwrap().is_some());
    // create_dir_all syncs what it creates
    let after = vfs.crash(CrashMode::DropAllUnsynced);
    assert!(after.list_files(&p("/x/y")).unwrap().is_empty());
    assert!(
        vfs.list_files(&p("/x")).is_err(),
        "the crashed disk refuses calls"
    );
}

#[test]
fn bit_flips_change_content_everywhere() {
    let vfs = SimVfs::new();
    create_dir_all(&vfs, &p("/d")).unwrap();
    let f = vfs.create_new(&p("/d/f")).unwrap();
    f.write_all_at(&[0u8; 4], 0).unwrap();
    f.sync_data().unwrap();
    vfs.sync_dir(&p("/d")).unwrap();
    vfs.flip_bit(&p("/d/f"), 9).unwrap();
    assert_eq!(vfs.read(&p("/d/f")).unwrap(), vec![0, 2, 0, 0]);
    let after = vfs.crash(CrashMode::DropAllUnsynced);
    assert_eq!(after.read(&p("/d/f")).unwrap(), vec![0, 2, 0, 0]);
}

#[test]
fn a_removed_tree_stays_removed_and_does_not_come_back_with_a_new_directory() {
    let vfs = SimVfs::new();
    create_dir_all(&vfs, &p("/s/7/log")).unwrap();
    let seg = vfs.create_new(&p("/s/7/log/seg")).unwrap();
    seg.write_all_at(b"old", 0).unwrap();
    seg.sync_data().unwrap();
    vfs.sync_dir(&p("/s/7/log")).unwrap();
    vfs.create_new(&p("/s/7/PLACED")).unwrap();
    vfs.sync_dir(&p("/s/7")).unwrap();
    assert_eq!(vfs.list_dirs(&p("/s")).unwrap(), vec!["7".to_string()]);
    assert_eq!(
        vfs.remove_dir(&p("/s/7")).unwrap_err().kind(),
        io::ErrorKind::DirectoryNotEmpty
    );

    crate::vfs::remove_dir_all(&vfs, &p("/s/7")).unwrap();
    assert!(!vfs.is_dir(&p("/s/7")));
    assert!(vfs.list_dirs(&p("/s")).unwrap().is_empty());
    // Made again, empty: the old segment must not reappear after a power cut.
    create_dir_all(&vfs, &p("/s/7/log")).unwrap();
    let after = vfs.crash(CrashMode::DropAllUnsynced);
    assert!(after.is_dir(&p("/s/7/log")));
    assert!(after.list_files(&p("/s/7/log")).unwrap().is_empty());
    assert!(after.list_files(&p("/s/7")).unwrap().is_empty());
}

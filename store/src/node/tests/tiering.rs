//! Tiering on real files (ADR 0023): sealed segments go to object storage (a local directory,
//! or a fault-injecting in-memory store), local copies go after local retention, and every
//! message still reads back, before and after a restart; retention counts the tiered log too;
//! failures of the object store lose nothing.

use std::sync::atomic::Ordering;

use vela_tier::faults::FaultyStore;
use vela_tier::{ReadLimits, Tier, TierConfig, TierStats};

use super::*;
use crate::node::tier::TierSettings;

const SETTINGS: TierSettings = TierSettings {
    interval: Duration::from_millis(50),
    orphan_grace: Duration::from_secs(3600),
};

fn tiered_config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        segment_size: bytesize::ByteSize::kib(8),
        local_retention_time: Duration::ZERO,
        ..config(&dir.join("store"))
    }
}

fn file_tier(dir: &std::path::Path, cache: &str) -> Arc<Tier> {
    let cfg = TierConfig {
        url: Some(format!("file://{}/tier", dir.display())),
        read_block: bytesize::ByteSize::kib(16),
        ..TierConfig::default()
    };
    Tier::open(&cfg, &dir.join(cache)).expect("tier opens")
}

/// The first log index of each local segment file of shard 0, ascending.
fn local_segments(dir: &std::path::Path) -> Vec<u64> {
    let mut firsts: Vec<u64> = std::fs::read_dir(dir.join("store/shards/0/log"))
        .expect("log dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    firsts.sort_unstable();
    firsts
}

async fn append_numbered(store: &Store, range: std::ops::Range<usize>) {
    let pad = "x".repeat(1000);
    for i in range {
        store
            .append(append(vec![message(&format!("m{i:04}-{pad}"))]))
            .await
            .expect("appends");
    }
}

/// Receives (and acks) everything `group` can get, in order of offsets.
async fn receive_all(store: &Store, group: &str, expect: usize) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < expect && Instant::now() < deadline {
        let mut req = pop(32, Duration::from_millis(200));
        req.group = GroupName::new(group).expect("valid");
        let batch = store.pop(req).await.expect("pops");
        for d in &batch {
            store.ack(&d.ticket).await.expect("acks");
        }
        got.extend(bodies(&batch).into_iter().map(|b| b[..5].to_owned()));
    }
    got
}

fn numbered(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m{i:04}")).collect()
}

/// Waits until `check` holds of shard 0's tier status.
async fn until_status(
    store: &Store,
    what: &str,
    check: impl Fn(&vela_proto::cluster_status::ShardTier) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = store.tier_status();
        if check(&status[0]) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sealed_segments_go_to_the_tier_leave_local_disk_and_read_back_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = tiered_config(dir.path());
    let clock: SharedClock = Arc::new(SystemClock);
    let store = Store::open(cfg.clone(), clock.clone())
        .await
        .expect("opens");
    let tier = file_tier(dir.path(), "cache");
    store
        .attach_tier(tier.clone(), SETTINGS)
        .await
        .expect("attaches");
    append_numbered(&store, 0..60).await;
    until_status(&store, "tiered and evicted", |s| {
        s.tiered_segments >= 4 && s.local_first.is_some_and(|f| f > 0) && s.pending_segments == 0
    })
    .await;
    let status = store.tier_status()[0].clone();
    let local = local_segments(dir.path());
    assert_eq!(
        local.first().copied(),
        status.local_first,
        "the oldest files are gone: {local:?}"
    );
    assert_eq!(status.tiered_first, Some(0));
    assert!(status.local_first.expect("local log") <= status.tiered_last.expect("tiered") + 1);
    assert!(status.uploaded_segments >= 4 && status.evicted_bytes > 0);
    assert_eq!(status.last_error, None);
    let objects = tier.list_segments(0).await.expect("lists");
    assert_eq!(objects.len() as u64, status.tiered_segments);
    // Everything reads back, the evicted part from the tier.
    assert_eq!(receive_all(&store, "first", 60).await, numbered(0..60));
    assert!(
        TierStats::get(&tier.stats().get_requests) > 0,
        "read from the tier"
    );
    store.shutdown().await.expect("shuts down");

    // After a restart (an empty read cache), a new group reads it all again.
    let store = Store::open(cfg, clock).await.expect("reopens");
    let tier = file_tier(dir.path(), "cache");
    store
        .attach_tier(tier.clone(), SETTINGS)
        .await
        .expect("attaches");
    assert_eq!(receive_all(&store, "again", 60).await, numbered(0..60));
    assert!(TierStats::get(&tier.stats().get_requests) > 0);
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn an_object_store_outage_keeps_local_data_and_tiering_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = tiered_config(dir.path());
    let store = Store::open(cfg, Arc::new(SystemClock))
        .await
        .expect("opens");
    let faulty = Arc::new(FaultyStore::new(Arc::new(
        vela_tier::object_store::memory::InMemory::new(),
    )));
    let limits = ReadLimits {
        cache_bytes: 1 << 20,
        block_bytes: 16 << 10,
        concurrent_reads: 2,
        part_bytes: 5 << 20,
    };
    let tier = Tier::with_store(
        faulty.clone(),
        "p",
        "memory://",
        &dir.path().join("c"),
        limits,
    )
    .expect("tier");
    faulty.faults.fail_writes.store(true, Ordering::SeqCst);
    store
        .attach_tier(tier.clone(), SETTINGS)
        .await
        .expect("attaches");
    append_numbered(&store, 0..40).await;
    until_status(&store, "the failure is reported", |s| {
        s.last_error.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = store.tier_status()[0].clone();
    assert_eq!(status.tiered_segments, 0);
    assert_eq!(status.local_first, Some(0), "nothing left local disk");
    assert!(status.pending_segments >= 3);
    assert_eq!(
        local_segments(dir.path()).first(),
        Some(&0),
        "the oldest file is kept"
    );
    // Sends go on meanwhile.
    append_numbered(&store, 40..50).await;
    // The store comes back: the segments go up (after the back-off) and leave local disk.
    faulty.faults.fail_writes.store(false, Ordering::SeqCst);
    until_status(&store, "tiered after the outage", |s| {
        s.tiered_segments >= 3 && s.local_first.is_some_and(|f| f > 0) && s.last_error.is_none()
    })
    .await;
    // Reads fail while the store is unreachable (retriable), and work once it is back: what
    // the failed receive took is delivered again once its invisibility ends.
    faulty.faults.fail_reads.store(true, Ordering::SeqCst);
    let mut req = pop(32, Duration::ZERO);
    req.group = GroupName::new("reader").expect("valid");
    req.invisible = Duration::from_millis(500);
    assert!(matches!(
        store.pop(req).await,
        Err(StoreError::Unavailable(_))
    ));
    faulty.faults.fail_reads.store(false, Ordering::SeqCst);
    let mut got = receive_all(&store, "reader", 50).await;
    got.sort();
    assert_eq!(got, numbered(0..50));
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn retention_counts_the_tier_and_deletes_expired_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig {
        retention_time: Duration::ZERO,
        ..tiered_config(dir.path())
    };
    let store = Store::open(cfg, Arc::new(SystemClock))
        .await
        .expect("opens");
    let tier = file_tier(dir.path(), "cache");
    // A deposed leader's upload of a range the manifest will name under another key.
    let stray = Tier::segment_key(0, 1, 3, 0);
    std::fs::create_dir_all(dir.path().join("tier/shards/00000")).expect("mkdir");
    std::fs::write(dir.path().join("tier").join(&stray), b"old").expect("writes");
    store
        .attach_tier(tier.clone(), SETTINGS)
        .await
        .expect("attaches");
    append_numbered(&store, 0..40).await;
    until_status(&store, "tiered and evicted", |s| {
        s.tiered_segments >= 3 && s.local_first.is_some_and(|f| f > 0)
    })
    .await;
    let cuts = store.enforce_retention().await.expect("retention runs");
    let cut = cuts[&0].expect("something was removed");
    let status = store.tier_status()[0].clone();
    assert_eq!(status.retained_from, cut);
    assert!(
        status
            .tiered_first
            .is_none_or(|f| status.tiered_last.expect("tiered") >= cut && f <= cut),
        "the manifest kept only what reaches the floor: {status:?}"
    );
    // The leader deletes what the manifest dropped (and the stray below the floor).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let objects = tier.list_segments(0).await.expect("lists");
        if objects.iter().all(|o| o.last_index >= cut) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "objects below {cut} remain: {objects:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = store.queue_stats(&topic(), None, &[]).await.expect("stats");
    assert!(stats[0].min_offset > 0, "old messages are gone: {stats:?}");
    store.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn sends_are_refused_retriably_while_the_data_disk_is_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Any real file system is more used than this.
    let cfg = StoreConfig {
        disk_full_ratio: 1e-9,
        ..config(dir.path())
    };
    let store = Store::open(cfg.clone(), Arc::new(SystemClock))
        .await
        .expect("opens");
    let refused = store.append(append(vec![message("x")])).await;
    let Err(StoreError::Unavailable(why)) = refused else {
        panic!("a send on a full disk: {refused:?}");
    };
    assert!(why.contains("data disk") && why.contains("full"), "{why}");
    let lines = metric_lines(&store, &["vela_store_disk_"]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("vela_store_disk_full{") && l.ends_with(" 1")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("vela_store_disk_used_ratio{"))
    );
    // Receives go on (they are what frees space).
    store.pop(pop(1, Duration::ZERO)).await.expect("receives");
    store.shutdown().await.expect("shuts down");
    let store = Store::open(
        StoreConfig {
            disk_full_ratio: 1.0,
            ..cfg.clone()
        },
        Arc::new(SystemClock),
    )
    .await
    .expect("reopens");
    store
        .append(append(vec![message("x")]))
        .await
        .expect("taken again");
    store.shutdown().await.expect("shuts down");
    let bad = Store::open(
        StoreConfig {
            disk_full_ratio: 0.0,
            ..cfg
        },
        Arc::new(SystemClock),
    )
    .await;
    assert!(matches!(bad, Err(StoreOpenError::Config(_))));
}

/// Fencing without conditional writes: every leader writes under its own term's key, and the
/// manifest takes the first commit for a range. A deposed leader's upload of a range already
/// recorded (here: garbage under a later term's key) is refused when its entry applies, and
/// readers never see it.
#[tokio::test]
async fn a_second_upload_of_a_recorded_range_never_becomes_the_copy_readers_use() {
    use crate::command::{CommandResponse, StoreCommand};
    use crate::state::{TierRefusal, TieredSegment};

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tiered_config(dir.path()), Arc::new(SystemClock))
        .await
        .expect("opens");
    let tier = file_tier(dir.path(), "cache");
    store
        .attach_tier(tier.clone(), SETTINGS)
        .await
        .expect("attaches");
    append_numbered(&store, 0..40).await;
    until_status(&store, "tiered and evicted", |s| {
        s.tiered_segments >= 2 && s.local_first.is_some_and(|f| f > 0)
    })
    .await;
    let shard = store.shards()[&0].shard.clone();
    let recorded = read_state(&store, 0, |s| {
        s.tier().segments().next().cloned().expect("a segment")
    });
    let other = Tier::segment_key(0, recorded.first_index, recorded.last_index, 99);
    std::fs::write(dir.path().join("tier").join(&other), vec![0u8; 4096]).expect("writes");
    let stale = TieredSegment {
        key: other.clone(),
        bytes: 4096,
        ..recorded.clone()
    };
    let answer = shard
        .write(StoreCommand::Tiered { segment: stale })
        .await
        .expect("applies");
    assert_eq!(answer, CommandResponse::Tiered(Err(TierRefusal::Covered)));
    let through = read_state(&store, 0, |s| s.tier().through().expect("tiered"));
    let gap = TieredSegment {
        key: Tier::segment_key(0, through + 5, through + 9, 99),
        first_index: through + 5,
        last_index: through + 9,
        ..recorded.clone()
    };
    let answer = shard
        .write(StoreCommand::Tiered { segment: gap })
        .await
        .expect("applies");
    assert_eq!(answer, CommandResponse::Tiered(Err(TierRefusal::Gap)));
    let named = read_state(&store, 0, |s| {
        s.tier()
            .segment_for(recorded.first_index)
            .map(|s| s.key.clone())
    });
    assert_eq!(named, Some(recorded.key), "the first commit stays the copy");
    assert_eq!(receive_all(&store, "after", 40).await, numbered(0..40));
    store.shutdown().await.expect("shuts down");
}

use std::sync::atomic::Ordering;

use object_store::memory::InMemory;
use vela_raft::codec::{
    RecordHead, RecordKind, encode_footer, encode_record, encode_segment_header,
};

use super::*;
use crate::faults::FaultyStore;

openraft::declare_raft_types!(
    pub T:
        D = String,
        R = String,
);

/// A sealed segment file of records `first..first+count`, each body `body_len` bytes.
fn write_segment(dir: &FsPath, first: u64, count: u64, body_len: usize) -> Segment {
    let mut out = encode_segment_header(first, 1).to_vec();
    let mut offsets = Vec::new();
    for index in first..first + count {
        offsets.push(out.len() as u32);
        let head = RecordHead {
            kind: RecordKind::Normal,
            term: 2,
            node: 1,
            index,
        };
        encode_record(head, &mut out, |o| {
            let mut body = format!("entry-{index}-").into_bytes();
            body.resize(body_len, b'a' + (index % 26) as u8);
            o.extend_from_slice(&body);
            Ok::<(), String>(())
        })
        .unwrap();
    }
    let end = out.len() as u64;
    encode_footer(&offsets, end, 100, 200, &mut out);
    let path = dir.join(format!("{first:020}.seg"));
    std::fs::write(&path, out).unwrap();
    let file = vela_raft::vfs::StdVfs::shared().open(&path).unwrap();
    Segment { path, file }
}

struct Segment {
    path: PathBuf,
    file: Arc<dyn vela_raft::vfs::VfsFile>,
}

impl Segment {
    fn len(&self) -> u64 {
        std::fs::metadata(&self.path).unwrap().len()
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }
}

fn limits(block: u64) -> ReadLimits {
    ReadLimits {
        cache_bytes: 64 << 20,
        block_bytes: block,
        concurrent_reads: 4,
        part_bytes: 5 << 20,
    }
}

fn body_of(entry: &<T as openraft::RaftTypeConfig>::Entry) -> String {
    match &entry.payload {
        openraft::EntryPayload::Normal(s) => s.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

/// Reads `from..=last` of the segment `key` holding `first..=last`, 37 entries at a time.
async fn read_all(tier: &Tier, key: &str, bytes: u64, first: u64, last: u64) -> Vec<u64> {
    read_from(tier, key, bytes, (first, last), first).await
}

async fn read_from(
    tier: &Tier,
    key: &str,
    bytes: u64,
    (first, last): (u64, u64),
    from: u64,
) -> Vec<u64> {
    let segment = SegmentRef {
        key,
        bytes,
        first_index: first,
        last_index: last,
    };
    let mut got = Vec::new();
    let mut at = from;
    while at <= last {
        let entries = tier.read_entries::<T>(segment, at, at + 36).await.unwrap();
        for e in &entries {
            assert!(body_of(e).starts_with(&format!("entry-{}-", e.log_id.index)));
            got.push(e.log_id.index);
        }
        at += 37;
    }
    got
}

#[test]
fn segment_keys_name_shard_range_and_term() {
    let key = Tier::segment_key(3, 1, 12345, 7);
    assert_eq!(
        key,
        "shards/00003/00000000000000000001-00000000000000012345-t7.seg"
    );
    assert_eq!(Tier::parse_segment_key(&key), Some((1, 12345, 7)));
    assert_eq!(Tier::parse_segment_key("shards/00003/x.seg"), None);
    assert_eq!(Tier::parse_segment_key("shards/00003/1-2-t3.idx"), None);
    assert_eq!(
        Location::parse("s3://bkt/a/b/").unwrap(),
        Location::S3 {
            bucket: "bkt".into(),
            prefix: "a/b".into()
        }
    );
    assert_eq!(
        Location::parse("file:///var/t").unwrap(),
        Location::File("/var/t".into())
    );
}

#[tokio::test]
async fn a_segment_goes_up_whole_and_reads_back_by_ranges_in_a_file_tier() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_segment(dir.path(), 10, 500, 300);
    let len = file.len();
    let cfg = TierConfig {
        url: Some(format!("file://{}/tier", dir.path().display())),
        read_block: bytesize::ByteSize::kib(16),
        ..TierConfig::default()
    };
    let tier = Tier::open(&cfg, &dir.path().join("cache")).unwrap();
    let key = Tier::segment_key(0, 10, 509, 2);
    let up = tier.upload_segment(&key, &file.file, len).await.unwrap();
    assert_eq!(up.bytes, len);
    assert_eq!(up.crc32c, crc32c::crc32c(&file.bytes()));
    // Unchanged on the other side.
    let stored = dir.path().join("tier").join(&key);
    assert_eq!(std::fs::read(&stored).unwrap(), file.bytes());
    let listed = tier.list_segments(0).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].first_index, listed[0].last_index, listed[0].term),
        (10, 509, 2)
    );
    let got = read_all(&tier, &key, len, 10, 509).await;
    assert_eq!(got, (10..=509).collect::<Vec<_>>());
    let stats = tier.stats();
    let gets = TierStats::get(&stats.get_requests);
    assert!(gets >= len / (16 << 10), "{gets} range reads");
    assert!(TierStats::get(&stats.cache_hits) > 0);
    // A second pass is served by the cache.
    read_all(&tier, &key, len, 10, 509).await;
    assert_eq!(TierStats::get(&stats.get_requests), gets);
    // A range outside the segment is empty; the manifest and the object must agree.
    let wrong = SegmentRef {
        key: &key,
        bytes: len,
        first_index: 11,
        last_index: 509,
    };
    let fresh = Tier::open(&cfg, &dir.path().join("cache2")).unwrap();
    assert!(matches!(
        fresh.read_entries::<T>(wrong, 11, 12).await,
        Err(TierError::Shared(_))
    ));
    tier.delete(&key).await.unwrap();
    assert!(tier.list_segments(0).await.unwrap().is_empty());
}

#[tokio::test]
async fn large_segments_go_up_in_parts_and_failed_uploads_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_segment(dir.path(), 1, 12_000, 1000);
    let len = file.len();
    assert!(len > 10 << 20);
    let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
    let tier = Tier::with_store(
        faulty.clone(),
        "vela",
        "memory://",
        &dir.path().join("cache"),
        limits(1 << 20),
    )
    .unwrap();
    let key = Tier::segment_key(1, 1, 12_000, 4);
    // A part fails: the upload fails and leaves no object.
    faulty.faults.fail_parts_after.store(1, Ordering::SeqCst);
    assert!(tier.upload_segment(&key, &file.file, len).await.is_err());
    assert!(tier.list_segments(1).await.unwrap().is_empty());
    // The store is down: the same.
    faulty.faults.fail_parts_after.store(0, Ordering::SeqCst);
    faulty.faults.fail_writes.store(true, Ordering::SeqCst);
    assert!(tier.upload_segment(&key, &file.file, len).await.is_err());
    assert!(tier.list_segments(1).await.unwrap().is_empty());
    assert_eq!(TierStats::get(&tier.stats().upload_failures), 2);
    // Back up: the retry succeeds, in parts.
    faulty.faults.fail_writes.store(false, Ordering::SeqCst);
    let parts_before = faulty.requests.parts.load(Ordering::SeqCst);
    let up = tier.upload_segment(&key, &file.file, len).await.unwrap();
    assert_eq!(up.bytes, len);
    assert!(faulty.requests.parts.load(Ordering::SeqCst) - parts_before >= 2);
    let listed = tier.list_segments(1).await.unwrap();
    assert_eq!(listed[0].key, key);
    // Reads fail while the store does, then work: a failure is not cached.
    let segment = SegmentRef {
        key: &key,
        bytes: len,
        first_index: 1,
        last_index: 12_000,
    };
    faulty.faults.fail_reads.store(true, Ordering::SeqCst);
    assert!(tier.read_entries::<T>(segment, 5000, 5002).await.is_err());
    faulty.faults.fail_reads.store(false, Ordering::SeqCst);
    let entries = tier.read_entries::<T>(segment, 5000, 5002).await.unwrap();
    let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, vec![5000, 5001, 5002]);
    assert!(faulty.requests.gets.load(Ordering::SeqCst) > 0);
}

#[tokio::test]
async fn damaged_objects_are_errors_never_entries() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_segment(dir.path(), 1, 50, 200);
    let len = file.len();
    let cfg = TierConfig {
        url: Some(format!("file://{}/tier", dir.path().display())),
        read_block: bytesize::ByteSize::kib(4),
        ..TierConfig::default()
    };
    let tier = Tier::open(&cfg, &dir.path().join("cache")).unwrap();
    let key = Tier::segment_key(2, 1, 50, 1);
    tier.upload_segment(&key, &file.file, len).await.unwrap();
    // Flip a byte of a record in the stored object.
    let stored = dir.path().join("tier").join(&key);
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[200] ^= 0x40;
    std::fs::write(&stored, bytes).unwrap();
    let segment = SegmentRef {
        key: &key,
        bytes: len,
        first_index: 1,
        last_index: 50,
    };
    let err = tier.read_entries::<T>(segment, 1, 3).await.unwrap_err();
    assert!(err.to_string().contains("damaged"), "{err}");
    // Other records still read.
    assert_eq!(
        tier.read_entries::<T>(segment, 40, 41).await.unwrap().len(),
        2
    );
}

/// Against a real S3-compatible server when the test script started one (`scripts/test.sh`
/// starts moto and sets `VELA_TEST_S3_ENDPOINT` and `VELA_TEST_S3_BUCKET`).
#[tokio::test]
async fn s3_upload_in_parts_list_read_and_delete() {
    let (Ok(endpoint), Ok(bucket)) = (
        std::env::var("VELA_TEST_S3_ENDPOINT"),
        std::env::var("VELA_TEST_S3_BUCKET"),
    ) else {
        assert!(
            std::env::var_os("VELA_TEST_REQUIRE_S3").is_none(),
            "VELA_TEST_REQUIRE_S3 is set but VELA_TEST_S3_ENDPOINT / VELA_TEST_S3_BUCKET are not"
        );
        eprintln!("VELA_TEST_S3_ENDPOINT is not set: no S3 server to test against");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = write_segment(dir.path(), 1, 12_000, 1000);
    let len = file.len();
    let cfg = TierConfig {
        url: Some(format!("s3://{bucket}/unit-{}", std::process::id())),
        endpoint: Some(endpoint),
        allow_http: true,
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        read_block: bytesize::ByteSize::mib(1),
        ..TierConfig::default()
    };
    let tier = Tier::open(&cfg, &dir.path().join("cache")).unwrap();
    let key = Tier::segment_key(0, 1, 12_000, 1);
    let up = tier.upload_segment(&key, &file.file, len).await.unwrap();
    assert_eq!(up.bytes, len);
    assert_eq!(tier.list_segments(0).await.unwrap()[0].key, key);
    let got = read_from(&tier, &key, len, (1, 12_000), 11_000).await;
    assert_eq!(got, (11_000..=12_000).collect::<Vec<_>>());
    assert!(TierStats::get(&tier.stats().get_requests) > 0);
    tier.delete(&key).await.unwrap();
    assert!(tier.list_segments(0).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_s3_tier_signs_with_the_managed_pair_while_it_is_set() {
    let endpoint = crate::signed_by::SignedBy::start().await.expect("endpoint");
    let cache = tempfile::tempdir().expect("tmp");
    let cfg = TierConfig {
        url: Some("s3://bkt/vela".into()),
        endpoint: Some(endpoint.endpoint()),
        allow_http: true,
        access_key_id: Some("CONFIGURED".into()),
        secret_access_key: Some("configured-secret".into()),
        ..TierConfig::default()
    };
    let tier = Tier::open(&cfg, cache.path()).expect("opens");
    assert!(tier.signs_requests());
    tier.list_segments(0).await.expect("lists");
    assert!(tier.use_credentials(Some(("MANAGED", "managed-secret"))));
    assert!(!tier.use_credentials(Some(("MANAGED", "managed-secret"))));
    assert_eq!(tier.managed_key_id().as_deref(), Some("MANAGED"));
    tier.list_segments(0).await.expect("lists");
    // A new secret for the same id is a change too.
    assert!(tier.use_credentials(Some(("MANAGED", "rotated-secret"))));
    assert!(tier.use_credentials(None));
    assert_eq!(tier.managed_key_id(), None);
    tier.list_segments(0).await.expect("lists");
    assert_eq!(endpoint.seen(), ["CONFIGURED", "MANAGED", "CONFIGURED"]);

    // A directory tier has nothing to sign with.
    let dir = tempfile::tempdir().expect("tmp");
    let local = TierConfig {
        url: Some(format!("file://{}", dir.path().display())),
        ..TierConfig::default()
    };
    let tier = Tier::open(&local, cache.path()).expect("opens");
    assert!(!tier.signs_requests());
    assert!(!tier.use_credentials(Some(("MANAGED", "managed-secret"))));
}

#[test]
fn a_pace_spreads_what_is_pending_over_the_time_given_and_never_below_its_floor() {
    let second = std::time::Duration::from_secs(1);
    assert_eq!(
        Pace::spreading(64 << 20, 5 * second, 8 << 20),
        Pace::BytesPerSecond((64 << 20) / 5)
    );
    assert_eq!(
        Pace::spreading(1 << 20, 5 * second, 8 << 20),
        Pace::BytesPerSecond(8 << 20),
        "a little is sent at the floor's rate"
    );
    assert_eq!(
        Pace::spreading(1 << 30, std::time::Duration::ZERO, 1),
        Pace::Unpaced
    );
    assert_eq!(Pace::BytesPerSecond(1 << 20).due(3 << 20), 3 * second);
    assert_eq!(Pace::Unpaced.due(u64::MAX), std::time::Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_paced_upload_to_a_file_tier_takes_its_time_and_arrives_whole() {
    let dir = tempfile::tempdir().unwrap();
    // About 5 MiB: six reads of 1 MiB.
    let file = write_segment(dir.path(), 10, 600, 10 << 10);
    let len = file.len();
    assert!(len > 5 << 20 && len < 6 << 20, "{len}");
    let cfg = TierConfig {
        url: Some(format!("file://{}/tier", dir.path().display())),
        ..TierConfig::default()
    };
    let tier = Tier::open(&cfg, &dir.path().join("cache")).unwrap();
    // Unfinished copies a crash left behind: one two hours ago, one just now (that may be
    // another node's, still running).
    let shard_dir = dir.path().join("tier").join("shards/00000");
    std::fs::create_dir_all(&shard_dir).unwrap();
    let stale = |name: &str| {
        let path = shard_dir.join(name);
        std::fs::write(&path, b"partial").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
            .unwrap();
        path
    };
    let (old, recent) = (stale("a.seg#0"), shard_dir.join("b.seg#0"));
    std::fs::write(&recent, b"partial").unwrap();

    let key = Tier::segment_key(0, 10, 609, 2);
    let started = tokio::time::Instant::now();
    let up = tier
        .upload_segment_paced(&key, &file.file, len, Pace::BytesPerSecond(1 << 20))
        .await
        .unwrap();
    // The last chunk starts at 5 MiB: not before 5 s at 1 MiB/s.
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(up.crc32c, crc32c::crc32c(&file.bytes()));
    let stored = dir.path().join("tier").join(&key);
    assert_eq!(std::fs::read(&stored).unwrap(), file.bytes());
    let mut staged = stored.into_os_string();
    staged.push("#0");
    assert!(
        !PathBuf::from(staged).exists(),
        "the staged copy was renamed"
    );
    assert!(!old.exists(), "the stale copy is gone");
    assert!(recent.exists(), "a copy that may still be running stays");

    // The directory is looked through at most once an hour.
    let later = stale("c.seg#0");
    let next = Tier::segment_key(0, 610, 1209, 2);
    let file2 = write_segment(dir.path(), 610, 600, 10 << 10);
    let len2 = file2.len();
    tier.upload_segment_paced(&next, &file2.file, len2, Pace::BytesPerSecond(64 << 20))
        .await
        .unwrap();
    assert!(later.exists(), "not looked for again within the hour");
    // Both uploads are listed; no unfinished copy is.
    let listed = tier.list_segments(0).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    // Read back through the tier like any other object.
    let segment = SegmentRef {
        key: &key,
        bytes: len,
        first_index: 10,
        last_index: 609,
    };
    let read = tier.read_entries::<T>(segment, 300, 302).await.unwrap();
    assert_eq!(read.len(), 3);
}

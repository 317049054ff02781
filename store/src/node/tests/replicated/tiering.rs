//! Tiering on a replicated shard (ADR 0023): every replica evicts its local copies of what the
//! leader tiered, and a new member copies from a peer only the log past the tier's end; it
//! reads the history, like the others, from the tier.

use vela_tier::{ReadLimits, Tier};

use super::members::{PLACED, change_members, drain_from, join, on_placed, place};
use super::*;
use crate::node::tier::TierSettings;

fn tiered_node(id: NodeId) -> StoreConfig {
    StoreConfig {
        segment_size: bytesize::ByteSize::kib(8),
        local_retention_time: Duration::ZERO,
        snapshot_every_entries: 10,
        ..node_config(id)
    }
}

fn placed_tier(store: &Store) -> vela_proto::cluster_status::ShardTier {
    store
        .tier_status()
        .into_iter()
        .find(|t| t.shard == PLACED)
        .expect("holds the placed shard")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_copies_only_the_untiered_log_and_reads_history_from_the_tier() {
    // Segment ages are file times: the stores run on the real clock.
    let clock: SharedClock = Arc::new(SystemClock);
    let cluster = Cluster::start_configured(&[1, 2, 3, 4], 43, clock, tiered_node).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket: Arc<dyn vela_tier::object_store::ObjectStore> =
        Arc::new(vela_tier::object_store::memory::InMemory::new());
    let limits = ReadLimits {
        cache_bytes: 4 << 20,
        block_bytes: 16 << 10,
        concurrent_reads: 4,
        part_bytes: 5 << 20,
    };
    let settings = TierSettings {
        interval: Duration::from_millis(50),
        orphan_grace: Duration::from_secs(3600),
    };
    let mut tiers = BTreeMap::new();
    for id in [1, 2, 3, 4] {
        let tier = Tier::with_store(
            bucket.clone(),
            "vela",
            "memory://",
            &dir.path().join(format!("cache-{id}")),
            limits,
        )
        .expect("tier");
        tiers.insert(id, tier.clone());
        cluster
            .node(id)
            .attach_tier(tier, settings)
            .await
            .expect("attaches");
    }
    cluster.leader().await;
    let leader = place(&cluster, &[1, 2, 3]).await;
    let pad = "x".repeat(1000);
    let sent: Vec<String> = (0..60).map(|i| format!("m{i:03}-{pad}")).collect();
    for body in &sent {
        append_serving(&cluster.node(leader), on_placed(std::slice::from_ref(body))).await;
    }
    // Every replica evicts what the leader tiered.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let states: Vec<_> = [1, 2, 3].map(|id| placed_tier(&cluster.node(id))).into();
        if states
            .iter()
            .all(|t| t.tiered_segments >= 3 && t.local_first.is_some_and(|f| f > 0))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{states:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let target = members_of(&cluster, &[2, 3, 4]);
    join(&cluster, 4, &target).await;
    change_members(&cluster, PLACED, &target).await;
    let joined = placed_tier(&cluster.node(4));
    let tiered_last = joined
        .tiered_last
        .expect("the manifest came with the snapshot");
    assert!(
        joined
            .local_first
            .is_some_and(|f| f > 0 && f <= tiered_last + 1),
        "node 4 copied the log past the tier only: {joined:?}"
    );
    let got = drain_from(&cluster, 4).await;
    let got: Vec<&str> = got.iter().map(|b| &b[..4]).collect();
    let want: Vec<&str> = sent.iter().map(|b| &b[..4]).collect();
    assert_eq!(
        got, want,
        "node 4 serves every message, the history from the tier"
    );
    assert!(vela_tier::TierStats::get(&tiers[&4].stats().get_requests) > 0);
    cluster.shutdown().await;
}

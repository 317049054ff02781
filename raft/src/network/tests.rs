//! The in-process network: a three-member group elects a leader, replicates, survives losing its
//! leader to a partition without committing anything on the minority side, and converges under
//! seeded loss and delay.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ServerState};

use super::*;
use crate::group::start_member;
use crate::single_node::default_config;
use crate::test_support::*;

type Hub = LocalHub<TestConfig, TestStateMachine>;

struct Member {
    raft: Raft<TestConfig, TestStateMachine>,
    sm: TestStateMachine,
    _dir: tempfile::TempDir,
}

async fn start(hub: &Arc<Hub>, ids: &[NodeId]) -> BTreeMap<NodeId, Member> {
    let voters: BTreeMap<_, _> = ids.iter().map(|&id| (id, BasicNode::default())).collect();
    let mut members = BTreeMap::new();
    for &id in ids {
        let dir = tempfile::tempdir().unwrap();
        let store = TestStore::open(config(dir.path(), 1 << 16, 1 << 20))
            .await
            .unwrap();
        let sm = TestStateMachine::default();
        let raft = start_member(
            id,
            voters.clone(),
            default_config("net-test"),
            hub.network(1, id),
            store,
            sm.clone(),
            true,
        )
        .await
        .unwrap();
        hub.register(1, id, raft.clone());
        members.insert(
            id,
            Member {
                raft,
                sm,
                _dir: dir,
            },
        );
    }
    members
}

/// The leader the members in `among` agree on, once they do.
async fn leader_among(members: &BTreeMap<NodeId, Member>, among: &[NodeId]) -> NodeId {
    for _ in 0..200 {
        let leaders: Vec<_> = among
            .iter()
            .map(|id| {
                let m = members[id].raft.metrics().borrow_watched().clone();
                (m.state, m.current_leader)
            })
            .collect();
        if let Some((_, Some(leader))) = leaders.first()
            && among.contains(leader)
            && leaders.iter().all(|(_, l)| *l == Some(*leader))
            && leaders
                .iter()
                .filter(|(s, _)| *s == ServerState::Leader)
                .count()
                == 1
        {
            return *leader;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader agreed among {among:?}");
}

async fn converge(members: &BTreeMap<NodeId, Member>, expect: &[String]) {
    for _ in 0..200 {
        if members.values().all(|m| m.sm.values() == expect) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got: Vec<_> = members.iter().map(|(id, m)| (*id, m.sm.values())).collect();
    panic!("members did not converge on {expect:?}: {got:?}");
}

async fn shutdown(members: BTreeMap<NodeId, Member>) {
    for m in members.values() {
        m.raft.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_commits_nothing_and_the_majority_goes_on() {
    let hub = Hub::new(NetFaults::new(1));
    let members = start(&hub, &[1, 2, 3]).await;
    let first = leader_among(&members, &[1, 2, 3]).await;
    write_leased(&members[&first].raft, "a").await.unwrap();
    converge(&members, &["a".to_string()]).await;

    let rest: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&n| n != first).collect();
    hub.faults().partition(&[first], &rest);
    // The old leader cannot reach a majority: its write is not acknowledged.
    let stale = members[&first].raft.clone();
    let stale_write =
        tokio::spawn(async move { stale.client_write("lost".to_string()).await.is_ok() });
    let second = leader_among(&members, &rest).await;
    assert_ne!(second, first);
    write_leased(&members[&second].raft, "b").await.unwrap();

    hub.faults().heal();
    let acknowledged = tokio::time::timeout(Duration::from_secs(30), stale_write)
        .await
        .expect("the stale leader's write never returned")
        .unwrap();
    assert!(
        !acknowledged,
        "a leader cut off from its majority acknowledged a write"
    );
    // Every member ends with what was acknowledged, and only that.
    converge(&members, &["a".to_string(), "b".to_string()]).await;
    shutdown(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_converge_under_seeded_loss_and_delay() {
    let seed = 0x5eed_0001;
    let faults = NetFaults::new(seed);
    let hub = Hub::new(faults.clone());
    let members = start(&hub, &[1, 2, 3]).await;
    faults.set_delay(Duration::ZERO, Duration::from_millis(3));
    faults.set_loss(0.1);
    let mut acknowledged = Vec::new();
    for i in 0..40 {
        let body = format!("m{i}");
        // A write may fail while leadership moves: retry it on whoever leads then. A failed
        // attempt may still have committed (its reply lost), so the oracle is "acknowledged
        // ones, in order, each at least once".
        for _attempt in 0..50 {
            let leader = leader_among(&members, &[1, 2, 3]).await;
            let write = members[&leader].raft.client_write(body.clone());
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), write).await {
                acknowledged.push(body.clone());
                break;
            }
        }
    }
    assert_eq!(
        acknowledged.len(),
        40,
        "seed {seed:#x}: writes kept failing"
    );
    faults.set_loss(0.0);
    let leader = leader_among(&members, &[1, 2, 3]).await;
    write_leased(&members[&leader].raft, "end").await.unwrap();
    for _ in 0..200 {
        let views: Vec<_> = members.values().map(|m| m.sm.values()).collect();
        if views.iter().all(|v| v == &views[0])
            && views[0].last().map(String::as_str) == Some("end")
        {
            let mut seen = views[0].iter();
            for body in &acknowledged {
                assert!(
                    seen.any(|v| v == body),
                    "seed {seed:#x}: acknowledged {body} missing or out of order in {:?}",
                    views[0]
                );
            }
            shutdown(members).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("seed {seed:#x}: members did not converge");
}

#[test]
fn the_same_seed_decides_the_same_fates() {
    let decide = |seed| {
        let f = NetFaults::new(seed);
        f.set_loss(0.3);
        f.set_delay(Duration::ZERO, Duration::from_millis(10));
        (0..100)
            .map(|i| f.fate(i % 3, (i + 1) % 3))
            .collect::<Vec<_>>()
    };
    assert_eq!(decide(7), decide(7));
    assert_ne!(decide(7), decide(8));
    let f = NetFaults::new(1);
    f.cut(1, 2);
    assert_eq!(f.fate(1, 2), Fate::Unreachable);
    assert_eq!(
        f.fate(2, 1),
        Fate::Unreachable,
        "a one-way cut breaks request/reply"
    );
    assert!(matches!(f.fate(1, 3), Fate::Deliver { .. }));
    f.heal();
    assert!(matches!(f.fate(1, 2), Fate::Deliver { .. }));
}

use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use vela_proto::cluster_status::{MemberStatus, ShardMember};
use vela_proto::receipt::ReceiptTicket;
use vela_proto::store_api::{
    AppendOutcome, AppendRequest, Delivery, PopRequest, TransactionResolution,
};
use vela_proto::{GroupName, QueueStats, TopicName};

use super::*;

/// Store nodes as the reconciler sees them: which shards each reports (`None`: down), the
/// group as its leader reports it, and what the reconciler asked for.
#[derive(Default)]
struct Nodes {
    held: BTreeMap<u64, Option<Vec<ShardId>>>,
    /// `(leader, voters, learners)`: the leader reports these; everyone else follows.
    group: Option<(u64, Vec<u64>, Vec<u64>)>,
    /// Nodes whose replicas report no voters (opened, never initialized or not yet added).
    uninitialized: BTreeSet<u64>,
    /// Nodes that answer a `Resume` open with `ReplicaLost`.
    lost: BTreeSet<u64>,
    /// The leader's membership is joint or not yet committed.
    unsettled: bool,
    /// Nodes that follow a newer leader in term 2 (which does not report).
    moved_on: BTreeSet<u64>,
    /// Nodes whose replica's Raft stopped on an error.
    stopped: BTreeSet<u64>,
    refuse: bool,
    /// Drops asked for: (name, drop id).
    drops: Mutex<Vec<(String, u64)>>,
    opens: Mutex<Vec<(ShardId, u64, OpenMode)>>,
    changes: Mutex<Vec<(ShardId, Vec<u64>)>>,
    removes: Mutex<Vec<(ShardId, u64)>>,
}

impl Nodes {
    fn member(&self, node: u64, shard: ShardId) -> ShardMember {
        let (role, voters, learners) = match &self.group {
            Some((leader, voters, learners)) if *leader == node => {
                (MemberRole::Leader, voters.clone(), learners.clone())
            }
            Some((_, voters, _)) => (MemberRole::Follower, voters.clone(), Vec::new()),
            None => (MemberRole::Follower, vec![1], Vec::new()),
        };
        let role = if self.stopped.contains(&node) {
            MemberRole::Stopped
        } else {
            role
        };
        let voters = if self.uninitialized.contains(&node) {
            Vec::new()
        } else {
            voters
        };
        let (term, leader) = if self.moved_on.contains(&node) {
            (2, Some(99))
        } else {
            (1, self.group.as_ref().map(|g| g.0))
        };
        ShardMember {
            shard,
            status: MemberStatus {
                role,
                term,
                leader,
                voters,
                last_log_index: None,
                applied_index: None,
                matched: BTreeMap::new(),
                learners,
                membership_settled: !self.unsettled,
            },
            retention: None,
        }
    }
}

fn unused() -> StoreError {
    StoreError::Internal("not used by the reconciler".into())
}

#[async_trait]
impl StoreApi for Nodes {
    async fn append(&self, _: AppendRequest) -> Result<Vec<AppendOutcome>, StoreError> {
        Err(unused())
    }
    async fn pop(&self, _: PopRequest) -> Result<Vec<Delivery>, StoreError> {
        Err(unused())
    }
    async fn ack(&self, _: &ReceiptTicket) -> Result<(), StoreError> {
        Err(unused())
    }
    async fn change_invisible(
        &self,
        _: &ReceiptTicket,
        _: Duration,
    ) -> Result<ReceiptTicket, StoreError> {
        Err(unused())
    }
    async fn renew_invisible(
        &self,
        _: &ReceiptTicket,
        _: Duration,
    ) -> Result<ReceiptTicket, StoreError> {
        Err(unused())
    }
    async fn dead_letter(&self, _: &ReceiptTicket) -> Result<(), StoreError> {
        Err(unused())
    }
    async fn recall(&self, _: &TopicName, _: &str) -> Result<(), StoreError> {
        Err(unused())
    }
    async fn pull(
        &self,
        _: vela_proto::store_api::PullRequest,
    ) -> Result<vela_proto::store_api::Pulled, StoreError> {
        Err(unused())
    }
    async fn lookup(
        &self,
        _: &vela_proto::lookup::LookupRequest,
    ) -> Result<Vec<vela_proto::lookup::FoundMessage>, StoreError> {
        Err(unused())
    }
    async fn end_transaction(
        &self,
        _: &TopicName,
        _: &str,
        _: TransactionResolution,
    ) -> Result<(), StoreError> {
        Err(unused())
    }
    async fn offset_at(
        &self,
        _: &TopicName,
        _: u32,
        _: ShardId,
        _: i64,
    ) -> Result<u64, StoreError> {
        Err(unused())
    }
    async fn reset_offset(
        &self,
        _: &vela_proto::GroupName,
        _: &TopicName,
        _: u32,
        _: ShardId,
        _: vela_proto::OffsetTarget,
    ) -> Result<u64, StoreError> {
        Err(unused())
    }
    async fn transaction_checks(
        &self,
        _: &vela_proto::store_api::TransactionCheckRequest,
    ) -> Result<Vec<vela_proto::store_api::TransactionCheck>, StoreError> {
        Err(unused())
    }
    async fn queue_stats(
        &self,
        _: &TopicName,
        _: Option<&GroupName>,
        _: &[ShardId],
    ) -> Result<Vec<QueueStats>, StoreError> {
        Err(unused())
    }
    async fn drop_topic(&self, name: &TopicName, id: u64, _: &[ShardId]) -> Result<(), StoreError> {
        self.drops.lock().push((name.to_string(), id));
        Ok(())
    }
    async fn drop_group(
        &self,
        name: &GroupName,
        drop: vela_proto::GroupDropId,
        _: &[ShardId],
    ) -> Result<(), StoreError> {
        self.drops.lock().push((name.to_string(), drop.id));
        Ok(())
    }
    async fn set_topic_retention(
        &self,
        _: &TopicName,
        _: Option<u64>,
        _: u64,
        _: &[ShardId],
    ) -> Result<(), StoreError> {
        Err(unused())
    }
    async fn open_shard(
        &self,
        node: u64,
        shard: ShardId,
        replicas: &BTreeMap<u64, String>,
        mode: OpenMode,
    ) -> Result<(), StoreError> {
        assert!(replicas.contains_key(&node), "a node is told its own shard");
        self.opens.lock().push((shard, node, mode));
        if self.refuse {
            return Err(StoreError::Invalid("refused".into()));
        }
        if mode == OpenMode::Resume && self.lost.contains(&node) {
            return Err(StoreError::ReplicaLost("no log".into()));
        }
        Ok(())
    }
    async fn change_members(
        &self,
        shard: ShardId,
        replicas: &BTreeMap<u64, String>,
    ) -> Result<(), StoreError> {
        self.changes
            .lock()
            .push((shard, replicas.keys().copied().collect()));
        Ok(())
    }
    async fn remove_shard(&self, node: u64, shard: ShardId) -> Result<(), StoreError> {
        self.removes.lock().push((shard, node));
        Ok(())
    }
    fn shard_replicas(&self) -> BTreeMap<ShardId, Vec<u64>> {
        BTreeMap::new()
    }
    async fn tier_status(&self) -> Vec<vela_proto::cluster_status::StoreTierReport> {
        Vec::new()
    }
    async fn node_status(&self) -> Vec<StoreNodeReport> {
        self.held
            .iter()
            .map(|(&node, held)| StoreNodeReport {
                node,
                addr: format!("s{node}"),
                report: held
                    .as_ref()
                    .map(|shards| shards.iter().map(|&s| self.member(node, s)).collect())
                    .ok_or_else(|| "down".to_owned()),
            })
            .collect()
    }
    async fn transfer_leader(&self, _: ShardId, _: u64) -> Result<(), StoreError> {
        Err(unused())
    }
}

fn addrs() -> BTreeMap<u64, String> {
    (1..=4).map(|n| (n, format!("s{n}"))).collect()
}

fn placed(shard: ShardId, replicas: &[u64], created: bool) -> BTreeMap<ShardId, PlacedShard> {
    BTreeMap::from([(
        shard,
        PlacedShard {
            replicas: replicas.to_vec(),
            created,
        },
    )])
}

fn nodes(held: &[(u64, Option<&[ShardId]>)]) -> Nodes {
    Nodes {
        held: held
            .iter()
            .map(|(n, h)| (*n, h.map(<[ShardId]>::to_vec)))
            .collect(),
        ..Nodes::default()
    }
}

use OpenMode::{Create, Join, Resume};

#[tokio::test]
async fn a_new_shard_is_created_on_every_member_that_is_up() {
    let store = nodes(&[(1, Some(&[])), (2, Some(&[0])), (3, None)]);
    let round = reconcile_once(&store, &addrs(), &placed(7, &[1, 2, 3], false)).await;
    assert_eq!(*store.opens.lock(), vec![(7, 1, Create), (7, 2, Create)]);
    assert!(round.created.is_empty());
    assert_eq!(round.opened.len(), 2);
}

#[tokio::test]
async fn once_a_member_holds_it_the_shard_is_recorded_created_and_nobody_else_creates_it() {
    let store = nodes(&[(1, Some(&[7])), (2, Some(&[])), (3, Some(&[]))]);
    let round = reconcile_once(&store, &addrs(), &placed(7, &[1, 2, 3], false)).await;
    assert!(store.opens.lock().is_empty());
    assert_eq!(round.created, vec![7]);
    // Recorded: the missing members are told to open, never to create.
    let round = reconcile_once(&store, &addrs(), &placed(7, &[1, 2, 3], true)).await;
    assert_eq!(*store.opens.lock(), vec![(7, 2, Resume), (7, 3, Resume)]);
    assert!(round.created.is_empty());
}

#[tokio::test]
async fn members_that_hold_it_or_are_down_or_have_no_address_are_left_alone() {
    let store = nodes(&[(1, Some(&[7])), (2, None), (3, Some(&[7]))]);
    reconcile_once(&store, &addrs(), &placed(7, &[1, 2, 3], true)).await;
    assert!(store.opens.lock().is_empty());
    let store = nodes(&[(1, Some(&[])), (9, Some(&[]))]);
    reconcile_once(&store, &addrs(), &placed(7, &[1, 9], false)).await;
    assert!(store.opens.lock().is_empty(), "member 9 has no address");
}

#[tokio::test]
async fn an_uninitialized_replica_does_not_count_as_holding_the_shard() {
    let store = Nodes {
        uninitialized: BTreeSet::from([1]),
        ..nodes(&[(1, Some(&[7]))])
    };
    let round = reconcile_once(&store, &addrs(), &placed(7, &[1], false)).await;
    assert!(round.created.is_empty());
    assert_eq!(
        *store.opens.lock(),
        vec![(7, 1, Create)],
        "it is told to create it"
    );
}

#[tokio::test]
async fn a_refused_open_is_reported_and_tried_again_next_round() {
    let store = Nodes {
        refuse: true,
        ..nodes(&[(1, Some(&[]))])
    };
    let round = reconcile_once(&store, &addrs(), &placed(4, &[1], false)).await;
    assert!(matches!(&round.opened[..], [(4, 1, Create, Err(_))]));
    reconcile_once(&store, &addrs(), &placed(4, &[1], false)).await;
    assert_eq!(store.opens.lock().len(), 2);
}

/// A replica whose Raft stopped on an error (an install whose copy failed) is told to open
/// again: as a member (`Resume`), whose store reopens it or reports it lost.
#[tokio::test]
async fn a_member_whose_raft_stopped_is_told_to_open_again() {
    let store = Nodes {
        group: Some((1, vec![1, 2, 3], vec![])),
        stopped: BTreeSet::from([3]),
        ..nodes(&[(1, Some(&[7])), (2, Some(&[7])), (3, Some(&[7]))])
    };
    reconcile_once(&store, &addrs(), &placed(7, &[1, 2, 3], true)).await;
    assert_eq!(*store.opens.lock(), vec![(7, 3, Resume)]);
    assert!(store.changes.lock().is_empty());
}

/// A replica whose Raft stopped, on a node that is neither placed there nor a member (a
/// finished move), is deleted like any other leftover, not left behind for good.
#[tokio::test]
async fn a_stopped_replica_that_is_no_longer_placed_is_removed() {
    let store = Nodes {
        group: Some((2, vec![2, 3, 4], vec![])),
        stopped: BTreeSet::from([1]),
        ..nodes(&[
            (1, Some(&[7])),
            (2, Some(&[7])),
            (3, Some(&[7])),
            (4, Some(&[7])),
        ])
    };
    let round = reconcile_once(&store, &addrs(), &placed(7, &[2, 3, 4], true)).await;
    assert!(store.opens.lock().is_empty(), "{round:?}");
    assert_eq!(*store.removes.lock(), vec![(7, 1)]);
}

/// A move from {1,2,3} to {2,3,4}, one round per observed step: node 4 joins, then the
/// leader changes the members (only once 4 opened), then node 1 deletes its replica.
#[tokio::test]
async fn a_moved_replica_joins_then_the_members_change_then_the_old_one_is_removed() {
    let target = placed(7, &[2, 3, 4], true);
    let mut store = Nodes {
        group: Some((1, vec![1, 2, 3], vec![])),
        ..nodes(&[
            (1, Some(&[7])),
            (2, Some(&[7])),
            (3, Some(&[7])),
            (4, Some(&[])),
        ])
    };
    let round = reconcile_once(&store, &addrs(), &target).await;
    assert_eq!(*store.opens.lock(), vec![(7, 4, Join)]);
    assert!(round.changed.is_empty(), "node 4 has not opened it yet");
    assert!(round.removed.is_empty(), "node 1 is still a member");

    store.held.insert(4, Some(vec![7]));
    store.uninitialized.insert(4);
    let round = reconcile_once(&store, &addrs(), &target).await;
    assert_eq!(
        store.opens.lock().len(),
        1,
        "an opened joiner is not told again"
    );
    assert_eq!(*store.changes.lock(), vec![(7, vec![2, 3, 4])]);
    assert!(round.progressed());
    assert!(store.removes.lock().is_empty());

    store.group = Some((2, vec![2, 3, 4], vec![]));
    store.uninitialized.clear();
    let round = reconcile_once(&store, &addrs(), &target).await;
    assert_eq!(
        store.changes.lock().len(),
        1,
        "the members match the placement"
    );
    assert_eq!(*store.removes.lock(), vec![(7, 1)]);
    assert_eq!(round.removed.len(), 1);
}

/// A member whose data is gone is taken out of the group before it joins again empty; a
/// placed node is never removed, and a learner the leader lists is never removed either.
#[tokio::test]
async fn a_member_that_lost_its_data_leaves_the_group_then_joins_as_a_learner() {
    let target = placed(7, &[1, 2, 3], true);
    let mut store = Nodes {
        group: Some((1, vec![1, 2, 3], vec![])),
        lost: BTreeSet::from([3]),
        ..nodes(&[(1, Some(&[7])), (2, Some(&[7])), (3, Some(&[]))])
    };
    reconcile_once(&store, &addrs(), &target).await;
    assert_eq!(*store.opens.lock(), vec![(7, 3, Resume)]);
    assert_eq!(*store.changes.lock(), vec![(7, vec![1, 2])]);

    store.group = Some((1, vec![1, 2], vec![]));
    reconcile_once(&store, &addrs(), &target).await;
    assert_eq!(store.opens.lock().last(), Some(&(7, 3, Join)));

    // Opened empty (a `Resume` of a replica a node holds answers at once).
    store.held.insert(3, Some(vec![7]));
    store.uninitialized.insert(3);
    store.lost.clear();
    store.group = Some((1, vec![1, 2], vec![3]));
    store.held.insert(4, Some(vec![7]));
    reconcile_once(&store, &addrs(), &target).await;
    assert_eq!(store.changes.lock().last(), Some(&(7, vec![1, 2, 3])));
    assert_eq!(
        *store.removes.lock(),
        vec![(7, 4)],
        "only the node that is neither placed nor a member"
    );
}

/// A leader that left a joint configuration (or an uncommitted one) behind: the members are
/// changed again although the voters match, and nobody is removed meanwhile.
#[tokio::test]
async fn an_unsettled_membership_is_finished_and_removes_nobody() {
    let target = placed(7, &[2, 3, 4], true);
    let mut store = Nodes {
        group: Some((2, vec![2, 3, 4], vec![])),
        unsettled: true,
        ..nodes(&[
            (1, Some(&[7])),
            (2, Some(&[7])),
            (3, Some(&[7])),
            (4, Some(&[7])),
        ])
    };
    let round = reconcile_once(&store, &addrs(), &target).await;
    assert_eq!(*store.changes.lock(), vec![(7, vec![2, 3, 4])]);
    assert!(round.removed.is_empty(), "{round:?}");
    store.unsettled = false;
    reconcile_once(&store, &addrs(), &target).await;
    assert_eq!(store.changes.lock().len(), 1, "settled and matching");
    assert_eq!(*store.removes.lock(), vec![(7, 1)]);
}

/// A learner whose data is gone is removed from the group like a voter would be.
#[tokio::test]
async fn a_learner_that_lost_its_data_is_removed_then_joins_again() {
    let target = placed(7, &[1, 2, 3], true);
    let store = Nodes {
        group: Some((1, vec![1, 2], vec![3])),
        lost: BTreeSet::from([3]),
        ..nodes(&[(1, Some(&[7])), (2, Some(&[7])), (3, Some(&[]))])
    };
    reconcile_once(&store, &addrs(), &target).await;
    assert_eq!(*store.opens.lock(), vec![(7, 3, Resume)]);
    assert_eq!(*store.changes.lock(), vec![(7, vec![1, 2])]);
}

/// A leader most voters no longer follow (they moved on to a newer term) is not trusted
/// with the members: no change, no removal.
#[tokio::test]
async fn a_stale_leader_changes_and_removes_nothing() {
    let target = placed(7, &[2, 3, 4], true);
    let store = Nodes {
        group: Some((1, vec![1, 2, 3], vec![])),
        moved_on: BTreeSet::from([2, 3]),
        ..nodes(&[
            (1, Some(&[7])),
            (2, Some(&[7])),
            (3, Some(&[7])),
            (4, Some(&[7])),
        ])
    };
    let round = reconcile_once(&store, &addrs(), &target).await;
    assert!(store.changes.lock().is_empty(), "{round:?}");
    assert!(store.removes.lock().is_empty(), "{round:?}");
}

#[tokio::test]
async fn a_deleted_names_drop_waits_until_each_of_its_shards_has_a_leader() {
    // Node 1 leads shards 3 and 4; node 2 (down) would hold shard 5.
    let nodes = Nodes {
        held: BTreeMap::from([(1, Some(vec![3, 4])), (2, None)]),
        group: Some((1, vec![1], Vec::new())),
        ..Nodes::default()
    };
    let reports = nodes.node_status().await;
    let pending = vec![("a", vec![3, 4]), ("b", vec![4, 5]), ("c", Vec::new())];
    let ready = ready_drops("consumer group", pending, |shards| shards, &reports);
    assert_eq!(
        ready.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        ["a", "c"],
        "b waits for shard 5; a drop without shards has nothing to wait for"
    );
}

/// Where no reconciler runs (standalone), a deletion left half done (its caller went away
/// between the halves) is finished by the drop finisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drop_finisher_finishes_deletions_left_half_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::config::ControllerConfig {
        data_dir: dir.path().join("controller"),
        node_id: 1,
        shards: vec![3],
        ..crate::config::ControllerConfig::default()
    };
    let c = Controller::open(config, Arc::new(vela_proto::clock::SystemClock))
        .await
        .expect("opens");
    let orders = TopicName::new("orders").expect("valid");
    let billing = GroupName::new("billing").expect("valid");
    c.create_topic(vela_proto::TopicSpec {
        name: orders.clone(),
        topic_type: vela_proto::TopicType::Normal,
        queue_count: 1,
        auto_created: false,
    })
    .await
    .expect("created");
    c.create_group(vela_proto::GroupSpec {
        name: billing.clone(),
        fifo: false,
        max_attempts: 16,
        auto_created: false,
        start: vela_proto::GroupStart::Auto,
        retry: vela_proto::retry::RetryBackoff::Standard,
        broadcast: false,
    })
    .await
    .expect("created");
    let group_drop = c.delete_group(&billing).await.expect("deleted");
    let topic_drop = c.delete_topic(&orders).await.expect("deleted");
    let nodes = Arc::new(Nodes {
        held: BTreeMap::from([(1, Some(vec![3]))]),
        group: Some((1, vec![1], Vec::new())),
        ..Nodes::default()
    });
    let finisher = spawn_drop_finisher(&c, nodes.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(c.pending_drops().is_empty() && c.pending_group_drops().is_empty()) {
        assert!(std::time::Instant::now() < deadline, "never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut drops = nodes.drops.lock().clone();
    drops.sort();
    assert_eq!(
        drops,
        [
            ("billing".to_owned(), group_drop.drop.id),
            ("orders".to_owned(), topic_drop.id)
        ]
    );
    finisher.abort();
    c.shutdown().await.expect("shuts down");
}

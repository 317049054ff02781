//! The shard reconciler (ADR 0013): while this controller node leads the controller group, it
//! makes the store nodes hold the shards placed on them. Every round it asks each store which
//! shards it holds (`NodeStatus`) and sends `OpenShard` to each member of a placed shard that
//! does not report it. A shard is created (`initialize`) only while no member has reported it;
//! once one has, the controller records it as created and a member without its log is never
//! told to create it empty (it lost its disk, or was down while the shard was made: it stays
//! out until it is replaced, see ADR 0013). Works from observed state only, like the balancer:
//! a reconciler that dies leaves nothing half done.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use vela_proto::{ShardId, StoreApi};

use crate::Controller;
use crate::metadata::PlacedShard;

/// How often the reconciler looks when nothing wakes it.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// What one round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// `(shard, node)` told to open (and whether to create it), with the outcome.
    pub opened: Vec<(ShardId, u64, bool, Result<(), String>)>,
    /// Shards recorded as created.
    pub created: Vec<ShardId>,
}

/// One round over `placed` (the controller's placed shards): opens what is missing on the
/// stores that answer, and lists the shards not yet recorded as created that a member already
/// holds (the caller records them).
pub async fn reconcile_once(
    store: &dyn StoreApi,
    stores: &BTreeMap<u64, String>,
    placed: &BTreeMap<ShardId, PlacedShard>,
) -> Round {
    let mut round = Round::default();
    if placed.is_empty() {
        return round;
    }
    let reports = store.node_status().await;
    let mut up = BTreeSet::new();
    let mut holders: BTreeMap<ShardId, BTreeSet<u64>> = BTreeMap::new();
    for r in &reports {
        if let Ok(members) = &r.report {
            up.insert(r.node);
            // A member with no voters is uninitialized: it has no group to join yet.
            for m in members.iter().filter(|m| !m.status.voters.is_empty()) {
                holders.entry(m.shard).or_default().insert(r.node);
            }
        }
    }
    for (&shard, p) in placed {
        let held_by = holders.get(&shard).cloned().unwrap_or_default();
        let create = !p.created && held_by.is_empty();
        let replicas: BTreeMap<u64, String> = p
            .replicas
            .iter()
            .filter_map(|id| stores.get(id).map(|addr| (*id, addr.clone())))
            .collect();
        if replicas.len() != p.replicas.len() {
            warn!(
                shard,
                members = ?p.replicas,
                "a member of a placed shard has no address in cluster.stores; not opening it"
            );
            continue;
        }
        for &node in &p.replicas {
            if held_by.contains(&node) || !up.contains(&node) {
                continue;
            }
            if !create && !p.created {
                // Another member already holds it: this one's first open may still be on its
                // way; the next round, after the shard is recorded as created, decides.
                continue;
            }
            let outcome = store
                .open_shard(node, shard, &replicas, create)
                .await
                .map_err(|e| e.to_string());
            match &outcome {
                Ok(()) => info!(shard, node, create, "opened a placed shard on its member"),
                Err(err) => warn!(shard, node, create, error = %err, "opening a placed shard"),
            }
            round.opened.push((shard, node, create, outcome));
        }
        if !p.created && !held_by.is_empty() {
            round.created.push(shard);
        }
    }
    round
}

/// Runs [`reconcile_once`] every [`RECONCILE_EVERY`] (and at once when a topic placed new
/// shards) while `controller` leads; records shards as created.
pub fn spawn_reconciler(controller: &Arc<Controller>, store: Arc<dyn StoreApi>) -> JoinHandle<()> {
    let controller = Arc::downgrade(controller);
    tokio::spawn(async move {
        loop {
            let Some(c) = controller.upgrade() else {
                return;
            };
            if c.is_stopped().await {
                return;
            }
            // A new leader first applies everything committed (a shard recorded as created
            // must never be created again).
            if c.group_leads() && c.read_barrier().await.is_ok() {
                let placed = c.placed_shards();
                let round = reconcile_once(store.as_ref(), c.stores(), &placed).await;
                for shard in &round.created {
                    if let Err(err) = c.mark_shard_created(*shard).await {
                        debug!(shard, error = %err, "recording a placed shard as created");
                    }
                }
                // Opened something: look again soon, to record it as created. (Failed opens
                // wait for the next round.)
                if round.opened.iter().any(|o| o.3.is_ok()) {
                    drop(c);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            c.placed_changed(RECONCILE_EVERY).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;
    use parking_lot::Mutex;
    use vela_proto::cluster_status::{MemberRole, MemberStatus, ShardMember, StoreNodeReport};
    use vela_proto::receipt::ReceiptTicket;
    use vela_proto::store_api::{
        AppendOutcome, AppendRequest, Delivery, PopRequest, StoreError, TransactionResolution,
    };
    use vela_proto::{GroupName, QueueStats, TopicName};

    use super::*;

    /// Store nodes as the reconciler sees them: which shards each reports (`None`: down), and
    /// the opens it was asked for.
    #[derive(Default)]
    struct Nodes {
        held: BTreeMap<u64, Option<Vec<ShardId>>>,
        opens: Mutex<Vec<(ShardId, u64, bool)>>,
        refuse: bool,
        /// Replicas report no voters (opened, never initialized).
        uninitialized: bool,
    }

    fn member(shard: ShardId) -> ShardMember {
        ShardMember {
            shard,
            status: MemberStatus {
                role: MemberRole::Follower,
                term: 1,
                leader: None,
                voters: vec![1],
                last_log_index: None,
                applied_index: None,
                matched: BTreeMap::new(),
            },
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
        async fn dead_letter(&self, _: &ReceiptTicket) -> Result<(), StoreError> {
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
        async fn queue_stats(
            &self,
            _: &TopicName,
            _: Option<&GroupName>,
            _: &[ShardId],
        ) -> Result<Vec<QueueStats>, StoreError> {
            Err(unused())
        }
        async fn drop_topic(&self, _: &TopicName, _: &[ShardId]) -> Result<(), StoreError> {
            Err(unused())
        }
        async fn drop_group(&self, _: &GroupName, _: &[ShardId]) -> Result<(), StoreError> {
            Err(unused())
        }
        async fn open_shard(
            &self,
            node: u64,
            shard: ShardId,
            replicas: &BTreeMap<u64, String>,
            initialize: bool,
        ) -> Result<(), StoreError> {
            assert!(replicas.contains_key(&node), "a node is told its own shard");
            self.opens.lock().push((shard, node, initialize));
            if self.refuse {
                return Err(StoreError::Invalid("refused".into()));
            }
            Ok(())
        }
        fn shard_replicas(&self) -> BTreeMap<ShardId, Vec<u64>> {
            BTreeMap::new()
        }
        async fn node_status(&self) -> Vec<StoreNodeReport> {
            self.held
                .iter()
                .map(|(&node, held)| StoreNodeReport {
                    node,
                    addr: format!("s{node}"),
                    report: held
                        .as_ref()
                        .map(|shards| {
                            shards
                                .iter()
                                .map(|&s| {
                                    let mut m = member(s);
                                    if self.uninitialized {
                                        m.status.voters.clear();
                                    }
                                    m
                                })
                                .collect()
                        })
                        .ok_or_else(|| "down".to_owned()),
                })
                .collect()
        }
        async fn transfer_leader(&self, _: ShardId, _: u64) -> Result<(), StoreError> {
            Err(unused())
        }
    }

    fn addrs() -> BTreeMap<u64, String> {
        (1..=3).map(|n| (n, format!("s{n}"))).collect()
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

    #[tokio::test]
    async fn a_new_shard_is_created_on_every_member_that_is_up() {
        let store = nodes(&[(1, Some(&[])), (2, Some(&[0])), (3, None)]);
        let round = reconcile_once(&store, &addrs(), &placed(7, &[1, 2, 3], false)).await;
        assert_eq!(*store.opens.lock(), vec![(7, 1, true), (7, 2, true)]);
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
        assert_eq!(*store.opens.lock(), vec![(7, 2, false), (7, 3, false)]);
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
            uninitialized: true,
            ..nodes(&[(1, Some(&[7]))])
        };
        let round = reconcile_once(&store, &addrs(), &placed(7, &[1], false)).await;
        assert!(round.created.is_empty());
        assert_eq!(
            *store.opens.lock(),
            vec![(7, 1, true)],
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
        assert!(matches!(&round.opened[..], [(4, 1, true, Err(_))]));
        reconcile_once(&store, &addrs(), &placed(4, &[1], false)).await;
        assert_eq!(store.opens.lock().len(), 2);
    }
}

//! The configured shards (`cluster.shards`) adopted as placed shards (ADR 0032): every
//! configured store node holds them from the cluster's first start; once adopted, the placement
//! names their members like any placed shard's, so a drain, a repair after a scale-down and the
//! replica balancer move them, and they reach store nodes that joined at runtime.

use vela_proto::ShardId;

use super::{Metadata, PlacedShard};
use crate::command::{Applied, Rejected};

impl Metadata {
    /// Makes each configured shard not yet placed a placed shard of `stores`, already created
    /// (its members hold it). Shard `i` of the set lists the stores rotated by `i`, so the
    /// members meant to lead are spread. Shards already placed are left alone: adopting twice
    /// changes nothing.
    pub(super) fn adopt_configured(&mut self, stores: Vec<u64>) -> Result<Applied, Rejected> {
        let mut stores = stores;
        stores.sort_unstable();
        stores.dedup();
        if stores.is_empty() {
            return Err(Rejected::StoreInvalid(
                "the configured shards are adopted on the configured store nodes; none given"
                    .to_owned(),
            ));
        }
        let mut adopted = Vec::new();
        for (i, &shard) in self.shards.iter().enumerate() {
            if self.placed.contains_key(&shard) {
                continue;
            }
            let mut replicas = stores.clone();
            replicas.rotate_left(i % stores.len());
            self.placed.insert(
                shard,
                PlacedShard {
                    replicas,
                    created: true,
                },
            );
            adopted.push(shard);
        }
        Ok(Applied::ShardsAdopted(adopted))
    }

    /// The configured shards whose replica is on `store` by the placement (adopted ones that
    /// list it; before adoption, all of them when `store` is a configured node).
    pub fn configured_on(&self, store: u64, configured_node: bool) -> Vec<ShardId> {
        self.shards
            .iter()
            .copied()
            .filter(|s| match self.placed.get(s) {
                Some(p) => p.replicas.contains(&store),
                None => configured_node,
            })
            .collect()
    }

    /// Whether every configured shard is placed (adopted, ADR 0032).
    pub fn configured_adopted(&self) -> bool {
        self.shards.iter().all(|s| self.placed.contains_key(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::ControllerCommand;

    fn with_shards(shards: &[u32]) -> Metadata {
        let mut md = Metadata::default();
        md.apply(ControllerCommand::SetShards {
            shards: shards.to_vec(),
        })
        .expect("records the shard set");
        md
    }

    fn adopt(stores: &[u64]) -> ControllerCommand {
        ControllerCommand::AdoptConfiguredShards {
            stores: stores.to_vec(),
        }
    }

    #[test]
    fn adopt_configured_shards_golden_bytes() {
        // Variant 30: stores (a length, then each id).
        super::super::assert_golden([(adopt(&[1, 2, 300]), "1e 03 01 02 ac02")]);
    }

    #[test]
    fn configured_shards_become_created_placed_shards_with_spread_first_members() {
        let mut md = with_shards(&[0, 1, 2]);
        assert!(!md.configured_adopted());
        assert_eq!(
            md.apply(adopt(&[3, 1, 2, 2])),
            Ok(Applied::ShardsAdopted(vec![0, 1, 2]))
        );
        assert!(md.configured_adopted());
        let members: Vec<Vec<u64>> = md.placed().values().map(|p| p.replicas.clone()).collect();
        assert_eq!(members, vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]]);
        assert!(md.placed().values().all(|p| p.created));
        // Again: nothing changes, even on other stores.
        let before = md.clone();
        assert_eq!(md.apply(adopt(&[7])), Ok(Applied::ShardsAdopted(vec![])));
        assert_eq!(md, before);
        assert!(matches!(
            md.apply(adopt(&[])),
            Err(Rejected::StoreInvalid(_))
        ));
        // The same shard set may be recorded again; a new configured id is adopted next time.
        md.apply(ControllerCommand::SetShards {
            shards: vec![0, 1, 2, 3],
        })
        .expect("a configured id that is placed may stay configured");
        assert!(!md.configured_adopted());
        assert_eq!(
            md.apply(adopt(&[1, 2, 3])),
            Ok(Applied::ShardsAdopted(vec![3]))
        );
        assert_eq!(md.placed()[&3].replicas, vec![1, 2, 3]);
        // A shard placed for a topic still cannot be taken as a configured one.
        md.placed.insert(
            9,
            PlacedShard {
                replicas: vec![1],
                created: true,
            },
        );
        assert_eq!(
            md.apply(ControllerCommand::SetShards { shards: vec![0, 9] }),
            Err(Rejected::ShardIdTaken(9))
        );
        let json = serde_json::to_string(&md).expect("encodes");
        assert_eq!(
            serde_json::from_str::<Metadata>(&json).expect("decodes"),
            md
        );
    }

    #[test]
    fn a_drain_moves_adopted_configured_replicas_where_it_can_and_leaves_the_rest() {
        // Three configured stores and one that joined: each configured shard has one free node.
        let mut md = with_shards(&[0, 1, 2]);
        md.apply(adopt(&[1, 2, 3])).expect("adopts");
        let stores = vec![1, 2, 3, 4];
        let drained = md.apply(ControllerCommand::DrainStore { store: 1, stores });
        assert_eq!(drained, Ok(Applied::Drained(vec![0, 1, 2])));
        assert!(md.placed().values().all(|p| !p.replicas.contains(&1)));
        assert!(md.placed().values().all(|p| p.replicas.contains(&4)));

        // Only the configured stores: nowhere to go, so they stay (the drain is not refused).
        let mut md = with_shards(&[0, 1, 2]);
        md.apply(adopt(&[1, 2, 3])).expect("adopts");
        let before = md.placed().clone();
        let drained = md.apply(ControllerCommand::DrainStore {
            store: 2,
            stores: vec![1, 2, 3],
        });
        assert_eq!(drained, Ok(Applied::Drained(vec![])));
        assert_eq!(md.placed(), &before);
        assert!(md.draining().contains(&2));
    }
}

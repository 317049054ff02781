//! Store nodes that joined at runtime (issue 11): a store node whose id is not in the
//! cluster's `[[cluster.stores]]` registers with the controller, which records its address
//! here, so placement may put replicas on it and every role learns where it is.

use serde::{Deserialize, Serialize};

use vela_proto::ShardId;

use super::Metadata;
use crate::command::{Applied, Rejected};

/// A registered store node as the metadata keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredStore {
    /// `host:port` of its gRPC port.
    pub addr: String,
    /// When it first registered (the proposer's clock).
    pub registered_ms: i64,
}

impl Metadata {
    /// Records store node `id` at `addr`. Registering again keeps the first time; another
    /// address replaces the old one (a pod that came back on another IP).
    pub(super) fn register_store(
        &mut self,
        id: u64,
        addr: String,
        now_ms: i64,
    ) -> Result<Applied, Rejected> {
        if id == 0 {
            return Err(Rejected::StoreInvalid(
                "store node id 0 is reserved".to_owned(),
            ));
        }
        let entry = self
            .registered_stores
            .entry(id)
            .or_insert_with(|| RegisteredStore {
                addr: addr.clone(),
                registered_ms: now_ms,
            });
        entry.addr = addr;
        Ok(Applied::StoreRegistered)
    }

    /// Moves the replica of placed `shard` on `from` to `to`, in place (the first member is
    /// still the one meant to lead).
    pub(super) fn move_replica(
        &mut self,
        shard: ShardId,
        from: u64,
        to: u64,
    ) -> Result<Applied, Rejected> {
        if self.draining.contains(&to) {
            return Err(Rejected::StoreInvalid(format!(
                "store node {to} is draining: no replica moves there"
            )));
        }
        let placed = self
            .placed
            .get_mut(&shard)
            .ok_or(Rejected::ShardNotPlaced(shard))?;
        if placed.replicas.contains(&to) {
            return Err(Rejected::StoreInvalid(format!(
                "store node {to} already holds a replica of shard {shard}"
            )));
        }
        let at = placed
            .replicas
            .iter()
            .position(|&m| m == from)
            .ok_or_else(|| {
                Rejected::StoreInvalid(format!(
                    "store node {from} holds no replica of shard {shard}"
                ))
            })?;
        placed.replicas[at] = to;
        Ok(Applied::ReplicaMoved)
    }

    /// Forgets registered store node `id` once it is drained and holds no placed replica.
    pub(super) fn unregister_store(&mut self, id: u64) -> Result<Applied, Rejected> {
        if !self.registered_stores.contains_key(&id) {
            return Err(Rejected::UnknownStore(id));
        }
        if !self.draining.contains(&id) {
            return Err(Rejected::StoreInvalid(format!(
                "store node {id} is not drained: drain it first (vela admin store drain {id} --wait)"
            )));
        }
        let held: Vec<ShardId> = self
            .placed
            .iter()
            .filter(|(_, p)| p.replicas.contains(&id))
            .map(|(&shard, _)| shard)
            .collect();
        if !held.is_empty() {
            return Err(Rejected::StoreInvalid(format!(
                "store node {id} is still a member of placed shards {held:?}"
            )));
        }
        self.registered_stores.remove(&id);
        self.draining.remove(&id);
        Ok(Applied::StoreUnregistered)
    }

    /// The store nodes registered at runtime, by id.
    pub fn registered_stores(&self) -> &std::collections::BTreeMap<u64, RegisteredStore> {
        &self.registered_stores
    }

    /// Ends the drain of `store`.
    pub(super) fn undrain(&mut self, store: u64) -> Result<Applied, Rejected> {
        if !self.draining.remove(&store) {
            return Err(Rejected::StoreInvalid(format!(
                "store node {store} is not draining"
            )));
        }
        Ok(Applied::StoreUndrained)
    }

    /// The replicas a store scale-in in progress lowers the store StatefulSet to.
    pub fn store_scale_in(&self) -> Option<u32> {
        self.store_scale_in
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::ControllerCommand;

    fn register(id: u64, addr: &str, now_ms: i64) -> ControllerCommand {
        ControllerCommand::RegisterStore {
            id,
            addr: addr.to_owned(),
            now_ms,
        }
    }

    #[test]
    fn stores_register_once_move_address_and_survive_snapshots() {
        let mut md = Metadata::default();
        assert!(md.registered_stores().is_empty());
        assert_eq!(
            md.apply(register(4, "s4:9000", 10)),
            Ok(Applied::StoreRegistered)
        );
        assert_eq!(
            md.apply(register(4, "s4:9000", 20)),
            Ok(Applied::StoreRegistered)
        );
        assert_eq!(
            md.apply(register(4, "10.0.0.9:9000", 30)),
            Ok(Applied::StoreRegistered)
        );
        assert_eq!(
            md.registered_stores().get(&4),
            Some(&RegisteredStore {
                addr: "10.0.0.9:9000".into(),
                registered_ms: 10
            })
        );
        assert!(matches!(
            md.apply(register(0, "s0:9000", 1)),
            Err(Rejected::StoreInvalid(_))
        ));
        let json = serde_json::to_string(&md).expect("encodes");
        assert_eq!(
            serde_json::from_str::<Metadata>(&json).expect("decodes"),
            md
        );
        // A snapshot from before registration reads as none registered.
        let old: Metadata = serde_json::from_str("{}").expect("decodes");
        assert!(old.registered_stores().is_empty());
    }

    #[test]
    fn register_store_golden_bytes() {
        // Variant 25, fields in order: id, addr, now_ms (zigzag); variant 26: shard, from, to.
        super::super::assert_golden([
            (register(4, "s4:1", 10), "19 04 04 73343a31 14"),
            (
                ControllerCommand::MoveReplica {
                    shard: 300,
                    from: 1,
                    to: 4,
                },
                "1a ac02 01 04",
            ),
            // Variant 27: id.
            (ControllerCommand::UnregisterStore { id: 4 }, "1b 04"),
            // Variant 28: replicas (an option: 00 none, 01 then the value).
            (
                ControllerCommand::SetStoreScaleIn { replicas: Some(3) },
                "1c 01 03",
            ),
            (
                ControllerCommand::SetStoreScaleIn { replicas: None },
                "1c 00",
            ),
            // Variant 29: store.
            (ControllerCommand::UndrainStore { store: 4 }, "1d 04"),
        ]);
    }

    #[test]
    fn only_a_draining_node_is_undrained_and_takes_replicas_again() {
        let mut md = Metadata::default();
        let undrain = ControllerCommand::UndrainStore { store: 4 };
        assert!(matches!(
            md.apply(undrain.clone()),
            Err(Rejected::StoreInvalid(reason)) if reason.contains("not draining")
        ));
        md.draining.insert(4);
        assert_eq!(md.apply(undrain.clone()), Ok(Applied::StoreUndrained));
        assert!(md.draining().is_empty());
        assert!(md.apply(undrain).is_err());
    }

    #[test]
    fn a_store_scale_in_target_is_set_cleared_and_survives_snapshots() {
        let mut md = Metadata::default();
        assert_eq!(md.store_scale_in(), None);
        let set = ControllerCommand::SetStoreScaleIn { replicas: Some(3) };
        assert_eq!(md.apply(set), Ok(Applied::StoreScaleInSet));
        assert_eq!(md.store_scale_in(), Some(3));
        let json = serde_json::to_string(&md).expect("encodes");
        let back: Metadata = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back.store_scale_in(), Some(3));
        let clear = ControllerCommand::SetStoreScaleIn { replicas: None };
        assert_eq!(md.apply(clear), Ok(Applied::StoreScaleInSet));
        assert_eq!(md.store_scale_in(), None);
    }

    #[test]
    fn only_a_drained_registered_node_without_replicas_is_forgotten() {
        let mut md = Metadata::default();
        md.apply(register(4, "s4:9000", 10)).expect("registers");
        let forget = ControllerCommand::UnregisterStore { id: 4 };
        assert!(matches!(
            md.apply(forget.clone()),
            Err(Rejected::StoreInvalid(reason)) if reason.contains("not drained")
        ));
        md.draining.insert(4);
        md.placed.insert(
            9,
            crate::metadata::PlacedShard {
                replicas: vec![1, 4],
                created: true,
            },
        );
        assert!(matches!(
            md.apply(forget.clone()),
            Err(Rejected::StoreInvalid(reason)) if reason.contains("[9]")
        ));
        md.placed.clear();
        assert_eq!(md.apply(forget.clone()), Ok(Applied::StoreUnregistered));
        assert!(md.registered_stores().is_empty());
        assert!(!md.draining().contains(&4));
        assert_eq!(md.apply(forget), Err(Rejected::UnknownStore(4)));
        // It may come back as a new node.
        assert_eq!(
            md.apply(register(4, "s4:9000", 50)),
            Ok(Applied::StoreRegistered)
        );
        assert_eq!(md.registered_stores()[&4].registered_ms, 50);
    }

    #[test]
    fn a_replica_moves_only_from_a_member_to_a_non_member_that_is_not_draining() {
        let mut md = Metadata::default();
        md.placed.insert(
            1_000,
            crate::metadata::PlacedShard {
                replicas: vec![1, 2, 3],
                created: true,
            },
        );
        md.draining.insert(5);
        let mv = |from, to| ControllerCommand::MoveReplica {
            shard: 1_000,
            from,
            to,
        };
        assert_eq!(md.apply(mv(2, 4)), Ok(Applied::ReplicaMoved));
        assert_eq!(md.placed()[&1_000].replicas, vec![1, 4, 3]);
        for (from, to) in [(2, 6), (1, 3), (1, 5)] {
            assert!(
                matches!(md.apply(mv(from, to)), Err(Rejected::StoreInvalid(_))),
                "{from} -> {to}"
            );
        }
        assert_eq!(
            md.apply(ControllerCommand::MoveReplica {
                shard: 7,
                from: 1,
                to: 6
            }),
            Err(Rejected::ShardNotPlaced(7))
        );
        assert_eq!(md.placed()[&1_000].replicas, vec![1, 4, 3]);
    }
}

//! What a shard remembers of consumer groups' deletions (apply version 18): the highest drop id
//! it applied per group name, so a copy of a drop delivered late (a retry, a request held up in
//! the network, a deposed controller's reconciler) after the name was created again leaves the
//! new group's positions alone; and the controller's *floor*, below which every group drop is
//! finished on every shard, so a drop at or below it is a late copy too and the ids at or below
//! it need not be kept. Each drop carries the floor as the controller knew it, so the ids kept
//! are about those of drops still in progress, not one per name ever deleted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vela_proto::domain::GroupName;

/// Saved in a snapshot after the topics' revisions (format 9).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupFence {
    /// Every group drop with an id at or below it is finished.
    floor: u64,
    /// The highest drop id applied per group, those above `floor` only.
    ids: BTreeMap<GroupName, u64>,
}

impl GroupFence {
    /// Raises the floor to `floor` (forgetting the ids at or below it), then records drop
    /// `drop_id` of `group` when it is above the floor and the group's recorded id (`false`:
    /// the drop was applied before, or is older than one that was, and changes nothing).
    pub fn pass(&mut self, group: &GroupName, drop_id: u64, floor: u64) -> bool {
        if floor > self.floor {
            self.floor = floor;
            self.ids.retain(|_, id| *id > floor);
        }
        if drop_id <= self.floor || self.ids.get(group).is_some_and(|&seen| seen >= drop_id) {
            return false;
        }
        self.ids.insert(group.clone(), drop_id);
        true
    }

    /// Every group drop with an id at or below it is finished.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// The highest drop id applied per group, above the floor.
    pub fn ids(&self) -> &BTreeMap<GroupName, u64> {
        &self.ids
    }

    pub fn is_empty(&self) -> bool {
        self.floor == 0 && self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str) -> GroupName {
        GroupName::new(name).expect("valid")
    }

    #[test]
    fn a_drop_passes_once_and_the_floor_forgets_finished_ones() {
        let mut fence = GroupFence::default();
        assert!(fence.pass(&group("a"), 4, 0));
        assert!(!fence.pass(&group("a"), 4, 0), "a copy of the same drop");
        assert!(!fence.pass(&group("a"), 3, 0), "an older drop");
        assert!(fence.pass(&group("b"), 3, 0), "ids are per group");
        assert!(fence.pass(&group("a"), 6, 3));
        assert_eq!(
            fence.ids().len(),
            1,
            "b's drop (3) is at or below the floor"
        );
        assert!(
            !fence.pass(&group("b"), 3, 0),
            "a late copy at or below the floor is fenced without its id"
        );
        assert!(!fence.pass(&group("c"), 2, 0));
        // A floor older than the one applied changes nothing.
        assert!(fence.pass(&group("c"), 7, 1));
        assert_eq!(fence.floor(), 3);
        assert!(fence.pass(&group("b"), 9, 8));
        assert_eq!(
            fence.ids().iter().collect::<Vec<_>>(),
            [(&group("b"), &9)],
            "only drops above the floor are kept"
        );
    }

    #[test]
    fn golden_bytes() {
        // Persisted in snapshot format 9: the floor (a varint), then the map (a length, then
        // per group its name and the id, varints).
        let mut fence = GroupFence::default();
        fence.pass(&group("g"), 300, 2);
        let bytes = postcard::to_stdvec(&fence).expect("encodes");
        assert_eq!(hex::encode(&bytes), "02010167ac02");
        let back: GroupFence = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, fence);
    }
}

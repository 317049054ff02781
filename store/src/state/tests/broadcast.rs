//! Broadcast groups' instances (ADR 0029, apply version 13): each instance is a group of its
//! own in the state, its dead letters go to its group's dead-letter topic, and dropping the
//! group drops its instances; before version 13 an instance's name is an ordinary group's.

use super::*;

fn instance(name: &str) -> GroupName {
    group("prices")
        .broadcast_instance(name)
        .expect("an instance name")
}

/// Delivers the one message to `who` until its attempts run out (max 2), then once more.
fn exhaust(h: &mut Harness, who: &GroupName) {
    for _ in 0..2 {
        let got = h.pop_with(|p| {
            p.group = who.clone();
            p.max_attempts = 2;
        });
        assert_eq!(got.len(), 1);
        h.advance(INVISIBLE as i64);
    }
    let last = h.pop_with(|p| {
        p.group = who.clone();
        p.max_attempts = 2;
    });
    assert!(last.is_empty(), "the third delivery is a dead letter");
}

#[test]
fn every_instance_gets_every_message_and_dead_letters_go_to_the_group() {
    let mut h = Harness::new();
    h.apply(StoreCommand::SetApplyVersion { version: 13 });
    h.append(vec![message(None, None)]);
    let (a, b) = (instance("a"), instance("b"));
    exhaust(&mut h, &a);
    // The other instance still gets the message, from its own position.
    let got = h.pop_with(|p| p.group = b.clone());
    assert_eq!(got.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![0]);
    let dlq = group("prices").dead_letter_topic();
    assert_eq!(h.state.queue(&dlq, 0).map(|q| q.max_offset()), Some(1));
    assert!(h.state.queue(&a.dead_letter_topic(), 0).is_none());
    assert_eq!(h.state.broadcast_instances(), vec![a.clone(), b.clone()]);
    // Dropping the group drops its instances, and no other group.
    let other = h.pop_with(|p| p.group = group("prices-audit"));
    assert_eq!(other.len(), 1);
    h.apply(StoreCommand::DropGroup {
        group: group("prices"),
    });
    assert!(h.state.broadcast_instances().is_empty());
    let stats = h.state.queue_stats(&topic("orders"), None);
    let left: Vec<&GroupName> = stats[0].groups.iter().map(|g| &g.group).collect();
    assert_eq!(left, vec![&group("prices-audit")]);
}

#[test]
fn before_version_13_an_instance_name_is_a_group_of_its_own() {
    let mut h = Harness::new();
    h.apply(StoreCommand::SetApplyVersion { version: 12 });
    h.append(vec![message(None, None)]);
    let a = instance("a");
    exhaust(&mut h, &a);
    assert_eq!(
        h.state
            .queue(&a.dead_letter_topic(), 0)
            .map(|q| q.max_offset()),
        Some(1)
    );
    assert!(
        h.state
            .queue(&group("prices").dead_letter_topic(), 0)
            .is_none()
    );
    h.apply(StoreCommand::DropGroup {
        group: group("prices"),
    });
    assert_eq!(h.state.broadcast_instances(), vec![a]);
}

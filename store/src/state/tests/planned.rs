//! Receives planned by the leader (apply version 4): the plan finds matches across slices of a
//! limited budget, remembers where non-matching scans got to, proposes nothing when nothing can
//! be delivered, and a re-created queue is not mistaken for the old one.

use super::*;
use crate::state::{PopPlan, ScanMemo};

fn probe<'a>(g: &'a GroupName, t: &'a TopicName, filter: &'a TagSubscription) -> PopProbe<'a> {
    PopProbe {
        group: g,
        topic: t,
        queues: QueueChoice::All,
        filter,
        fifo: false,
    }
}

fn apply_plan(h: &mut Harness, ranges: Vec<ScanRange>, filter: TagSubscription) -> Vec<u64> {
    let pop = PopCommand {
        group: group("billing"),
        topic: topic("orders"),
        queues: QueueChoice::All,
        max: 32,
        invisible_ms: INVISIBLE,
        filter,
        fifo: false,
        max_attempts: 3,
        now_ms: h.now_ms,
    };
    match h.apply(StoreCommand::PopRanges { pop, ranges }) {
        CommandResponse::Popped { messages, .. } => messages.iter().map(|m| m.offset).collect(),
        other => panic!("unexpected response {other:?}"),
    }
}

#[test]
fn a_plan_searches_in_slices_remembers_and_proposes_only_what_delivers() {
    let mut h = Harness::new();
    h.apply(StoreCommand::SetApplyVersion { version: 4 });
    for _ in 0..10 {
        h.append(vec![message(Some("B"), None); 100]);
    }
    h.append(vec![message(Some("A"), None)]); // offset 1000
    let (g, t) = (group("billing"), topic("orders"));
    let only_a = TagSubscription::Tags(vec!["A".into()]);
    let mut memo = ScanMemo::default();

    // A budget of 300 entries: four slices to reach offset 1000.
    let mut slices = 0;
    let ranges = loop {
        let mut budget = 300;
        match h
            .state
            .plan_pop(probe(&g, &t, &only_a), 32, h.now_ms, &mut memo, &mut budget)
        {
            PopPlan::Continue => slices += 1,
            PopPlan::Propose(ranges) => break ranges,
            other => panic!("unexpected plan {other:?}"),
        }
        assert!(slices < 10, "the search makes progress");
    };
    assert_eq!(slices, 3);
    assert_eq!(ranges.len(), 1);
    assert_eq!(ranges[0].skip_to, 1000, "skips what failed the filter");
    assert_eq!(ranges[0].scan_to, 1001, "looks no further than the match");
    assert_eq!(apply_plan(&mut h, ranges, only_a.clone()), vec![1000]);

    // Nothing left for A: the plan says so without proposing, from the memo, at no cost.
    let mut budget = 5;
    assert_eq!(
        h.state
            .plan_pop(probe(&g, &t, &only_a), 32, h.now_ms, &mut memo, &mut budget),
        PopPlan::NotBefore(h.now_ms + INVISIBLE as i64)
    );

    // Another group with a filter matching nothing searches the backlog once; the memo makes
    // its next search free.
    let audit = group("audit");
    let only_c = TagSubscription::Tags(vec!["C".into()]);
    let mut budget = 10_000;
    assert_eq!(
        h.state.plan_pop(
            probe(&audit, &t, &only_c),
            32,
            h.now_ms,
            &mut memo,
            &mut budget
        ),
        PopPlan::Nothing
    );
    assert_eq!(budget, 10_000 - 1001);
    let mut budget = 10;
    h.state.plan_pop(
        probe(&audit, &t, &only_c),
        32,
        h.now_ms,
        &mut memo,
        &mut budget,
    );
    assert_eq!(budget, 10, "the memo skips the searched backlog");
}

#[test]
fn a_recreated_queue_is_not_mistaken_for_the_old_one() {
    let mut h = Harness::new();
    h.apply(StoreCommand::SetApplyVersion { version: 4 });
    h.append(vec![message(Some("B"), None); 50]);
    let (g, t) = (group("billing"), topic("orders"));
    let only_a = TagSubscription::Tags(vec!["A".into()]);
    let mut memo = ScanMemo::default();
    let mut budget = 1000;
    assert_eq!(
        h.state
            .plan_pop(probe(&g, &t, &only_a), 32, h.now_ms, &mut memo, &mut budget),
        PopPlan::Nothing
    );
    // The topic is deleted and re-created: its new messages take the same offsets.
    h.apply(StoreCommand::DropTopic { topic: t.clone() });
    h.append(vec![message(Some("A"), None); 60]);
    let mut budget = 1000;
    match h
        .state
        .plan_pop(probe(&g, &t, &only_a), 32, h.now_ms, &mut memo, &mut budget)
    {
        PopPlan::Propose(ranges) => assert_eq!(ranges[0].skip_to, 0),
        other => panic!("the stale memo hid the new messages: {other:?}"),
    }
}

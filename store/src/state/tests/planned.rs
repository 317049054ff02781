//! Receives planned by the leader (apply version 4): the plan finds matches across slices of a
//! limited budget, remembers where non-matching scans got to, proposes nothing when nothing can
//! be delivered, and a re-created queue is not mistaken for the old one.

use super::*;
use crate::state::plan::{SCAN_COMMIT_MS, SCAN_COMMIT_OFFSETS};
use crate::state::{PopPlan, ScanMemo};

fn probe<'a>(g: &'a GroupName, t: &'a TopicName, filter: &'a TagSubscription) -> PopProbe<'a> {
    PopProbe {
        group: g,
        topic: t,
        queues: QueueChoice::All,
        filter,
        fifo: false,
        sql: None,
        highest_first: false,
    }
}

fn apply_plan(h: &mut Harness, ranges: Vec<ScanRange>, filter: TagSubscription) -> Vec<u64> {
    apply_plan_on_queues(h, ranges, filter)
        .into_iter()
        .map(|(_, offset)| offset)
        .collect()
}

/// What a plan delivers, as (queue, offset).
fn apply_plan_on_queues(
    h: &mut Harness,
    ranges: Vec<ScanRange>,
    filter: TagSubscription,
) -> Vec<(u32, u64)> {
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
        CommandResponse::Popped { messages, .. } => {
            messages.iter().map(|m| (m.queue_id, m.offset)).collect()
        }
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

/// The group's backlog on queue 0 of "orders", as lag is read.
fn backlog(h: &Harness, g: &GroupName) -> u64 {
    h.state.queue_stats(&topic("orders"), Some(g))[0].groups[0].backlog
}

#[test]
fn a_search_that_finds_nothing_moves_the_cursor_every_few_seconds() {
    let mut h = Harness::new();
    h.apply(StoreCommand::SetApplyVersion { version: 4 });
    h.append(vec![message(Some("A"), None)]);
    let (g, t) = (group("billing"), topic("orders"));
    let only_a = TagSubscription::Tags(vec!["A".into()]);
    let mut memo = ScanMemo::default();
    let plan = |h: &Harness, memo: &mut ScanMemo| {
        let mut budget = 100_000;
        h.state
            .plan_pop(probe(&g, &t, &only_a), 32, h.now_ms, memo, &mut budget)
    };
    let PopPlan::Propose(ranges) = plan(&h, &mut memo) else {
        panic!("the match is planned");
    };
    let delivery_id = h.last_index + 1;
    assert_eq!(apply_plan(&mut h, ranges, only_a.clone()), vec![0]);
    let first = DeliveryRef {
        group: g.clone(),
        topic: t.clone(),
        queue_id: 0,
        offset: 0,
        delivery_id,
    };
    h.ack(first).expect("acked");
    h.append(vec![message(Some("B"), None); 100]);
    assert_eq!(backlog(&h, &g), 100, "nothing searched yet");

    // A search that finds nothing proposes nothing at first: the memo holds the gap.
    assert_eq!(plan(&h, &mut memo), PopPlan::Nothing);
    assert_eq!(backlog(&h, &g), 100);
    h.advance(SCAN_COMMIT_MS - 1);
    assert_eq!(plan(&h, &mut memo), PopPlan::Nothing);

    // Once the gap has stood long enough, a receive moves the group past it, delivering
    // nothing: its backlog no longer counts what its filter skips.
    h.advance(1);
    let PopPlan::Propose(ranges) = plan(&h, &mut memo) else {
        panic!("the gap is proposed");
    };
    assert_eq!(
        ranges,
        vec![ScanRange {
            queue_id: 0,
            skip_to: 101,
            scan_to: 101,
            expiries: 0
        }]
    );
    assert!(apply_plan(&mut h, ranges, only_a.clone()).is_empty());
    assert_eq!(backlog(&h, &g), 0);
    assert_eq!(
        plan(&h, &mut memo),
        PopPlan::Nothing,
        "nothing more to move"
    );

    // New non-matching messages wait for the interval again; a long gap moves at once.
    h.append(vec![message(Some("B"), None); 10]);
    assert_eq!(plan(&h, &mut memo), PopPlan::Nothing);
    assert_eq!(backlog(&h, &g), 10);
    h.append(vec![message(Some("B"), None); SCAN_COMMIT_OFFSETS as usize]);
    let PopPlan::Propose(ranges) = plan(&h, &mut memo) else {
        panic!("a long gap is proposed at once");
    };
    assert_eq!(ranges[0].skip_to, 111 + SCAN_COMMIT_OFFSETS);
    assert!(apply_plan(&mut h, ranges, only_a.clone()).is_empty());
    assert_eq!(backlog(&h, &g), 0);

    // A match after the gap is still delivered.
    h.append(vec![message(Some("A"), None)]);
    let PopPlan::Propose(ranges) = plan(&h, &mut memo) else {
        panic!("the match is planned");
    };
    assert_eq!(
        apply_plan(&mut h, ranges, only_a),
        vec![111 + SCAN_COMMIT_OFFSETS]
    );
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

/// A tag filter jumps between tagged entries instead of walking the backlog: over random tags,
/// queues and search budgets, planned receives deliver every matching message exactly once, in
/// offset order per queue, and nothing else.
mod tag_jumps {
    use proptest::prelude::*;

    use super::*;

    fn tag_of(code: u8) -> Option<&'static str> {
        match code {
            0 => Some("A"),
            1 => Some("B"),
            2 => Some("C"),
            _ => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn every_match_is_delivered_once_and_in_order(
            batches in prop::collection::vec(
                (0u32..3, prop::collection::vec(0u8..6, 1..40)),
                1..30,
            ),
            budget in 1u64..200,
        ) {
            let mut h = Harness::new();
            h.apply(StoreCommand::SetApplyVersion { version: 4 });
            let mut expected = std::collections::BTreeSet::new();
            for (queue_id, tags) in &batches {
                let messages: Vec<MessageRecord> =
                    tags.iter().map(|t| message(tag_of(*t), None)).collect();
                let outcomes = h.append_to("orders", *queue_id, messages);
                for (tag, outcome) in tags.iter().zip(outcomes) {
                    if matches!(tag_of(*tag), Some("A" | "C")) {
                        expected.insert((*queue_id, outcome.offset.expect("indexed")));
                    }
                }
            }
            let (g, t) = (group("billing"), topic("orders"));
            let filter = TagSubscription::Tags(vec!["A".into(), "C".into()]);
            let mut memo = ScanMemo::default();
            let mut delivered = Vec::new();
            for _ in 0..10_000 {
                let mut left = budget;
                match h.state.plan_pop(probe(&g, &t, &filter), 8, h.now_ms, &mut memo, &mut left) {
                    PopPlan::Propose(ranges) => {
                        let pop = PopCommand {
                            group: g.clone(),
                            topic: t.clone(),
                            queues: QueueChoice::All,
                            max: 8,
                            invisible_ms: INVISIBLE,
                            filter: filter.clone(),
                            fifo: false,
                            max_attempts: 3,
                            now_ms: h.now_ms,
                        };
                        match h.apply(StoreCommand::PopRanges { pop, ranges }) {
                            CommandResponse::Popped { messages, .. } => {
                                prop_assert!(!messages.is_empty(), "a proposal delivers");
                                delivered.extend(messages.iter().map(|m| (m.queue_id, m.offset)));
                            }
                            other => panic!("unexpected response {other:?}"),
                        }
                    }
                    PopPlan::Continue => {}
                    PopPlan::Nothing | PopPlan::NotBefore(_) => break,
                }
            }
            let got: std::collections::BTreeSet<(u32, u64)> = delivered.iter().copied().collect();
            prop_assert_eq!(got.len(), delivered.len(), "delivered twice");
            prop_assert_eq!(&got, &expected);
            for q in 0..3 {
                let order: Vec<u64> =
                    delivered.iter().filter(|(dq, _)| *dq == q).map(|(_, o)| *o).collect();
                prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "queue {} out of order", q);
            }
        }
    }
}

/// A receive whose expired deliveries fill it stops short of the match its plan found; the next
/// receive must still find that match (a memo written past it would skip it for good).
#[test]
fn a_match_left_behind_by_a_full_receive_is_found_again() {
    let mut h = Harness::new();
    h.apply(StoreCommand::SetApplyVersion { version: 4 });
    h.append(vec![message(Some("A"), None); 2]); // offsets 0, 1
    let (g, t) = (group("billing"), topic("orders"));
    let only_a = TagSubscription::Tags(vec!["A".into()]);
    let mut memo = ScanMemo::default();
    let receive = |h: &mut Harness, memo: &mut ScanMemo| -> Option<Vec<u64>> {
        let mut budget = 1_000;
        let ranges = match h
            .state
            .plan_pop(probe(&g, &t, &only_a), 2, h.now_ms, memo, &mut budget)
        {
            PopPlan::Propose(ranges) => ranges,
            _ => return None,
        };
        let pop = PopCommand {
            group: g.clone(),
            topic: t.clone(),
            queues: QueueChoice::All,
            max: 2,
            invisible_ms: INVISIBLE,
            filter: only_a.clone(),
            fifo: false,
            max_attempts: 5,
            now_ms: h.now_ms,
        };
        match h.apply(StoreCommand::PopRanges { pop, ranges }) {
            CommandResponse::Popped { messages, .. } => {
                Some(messages.iter().map(|m| m.offset).collect())
            }
            other => panic!("unexpected response {other:?}"),
        }
    };
    assert_eq!(receive(&mut h, &mut memo), Some(vec![0, 1]));
    h.append(vec![message(Some("A"), None)]); // offset 2
    h.append(vec![message(Some("B"), None); 97]); // offsets 3..100
    h.advance(INVISIBLE as i64 + 1);
    // 0 and 1 expired: they fill the receive, offset 2 stays behind.
    assert_eq!(receive(&mut h, &mut memo), Some(vec![0, 1]));
    assert_eq!(
        receive(&mut h, &mut memo),
        Some(vec![2]),
        "the match behind the full receive is still found"
    );
}

#[test]
fn a_queue_with_too_many_in_flight_offers_only_its_expired_messages() {
    let mut h = Harness::new();
    h.apply(StoreCommand::SetApplyVersion { version: 4 });
    h.append(vec![message(None, None); 10]);
    let (g, t) = (group("billing"), topic("orders"));
    let all = TagSubscription::All;
    let mut memo = ScanMemo::default();
    let mut plan = |h: &Harness, max: u32| {
        let mut budget = 1_000;
        h.state.plan_pop_bounded(
            probe(&g, &t, &all),
            max,
            h.now_ms,
            &mut memo,
            &mut budget,
            4,
        )
    };
    let mut receive = |h: &mut Harness, max: u32| match plan(h, max) {
        PopPlan::Propose(ranges) => {
            let pop = PopCommand {
                group: group("billing"),
                topic: topic("orders"),
                queues: QueueChoice::All,
                max,
                invisible_ms: INVISIBLE,
                filter: TagSubscription::All,
                fifo: false,
                max_attempts: 3,
                now_ms: h.now_ms,
            };
            match h.apply(StoreCommand::PopRanges { pop, ranges }) {
                CommandResponse::Popped { messages, .. } => {
                    Some(messages.iter().map(|m| m.offset).collect::<Vec<_>>())
                }
                other => panic!("unexpected response {other:?}"),
            }
        }
        PopPlan::NotBefore(_) | PopPlan::Nothing => None,
        PopPlan::Continue => panic!("the budget covers the queue"),
    };
    // Under the bound a receive takes its whole batch: the bound is passed by less than one.
    assert_eq!(receive(&mut h, 3), Some(vec![0, 1, 2]));
    assert_eq!(receive(&mut h, 3), Some(vec![3, 4, 5]));
    assert_eq!(receive(&mut h, 3), None, "6 in flight: nothing new");
    h.advance(INVISIBLE as i64 + 1);
    assert_eq!(
        receive(&mut h, 3),
        Some(vec![0, 1, 2]),
        "expired messages still come back"
    );
}

#[test]
fn an_ack_that_brings_a_queue_under_the_in_flight_bound_wakes_receivers() {
    let mut h = Harness::new();
    for _ in 0..MAX_INFLIGHT / 8192 {
        h.append(vec![message(None, None); 8192]);
    }
    let mut held = Vec::new();
    while held.len() < MAX_INFLIGHT {
        let (id, popped) = popped_with_id(&mut h);
        assert!(!popped.is_empty());
        held.extend(popped.iter().map(|m| delivery(m, id)));
    }
    h.ack(held[0].clone()).expect("acks");
    assert!(
        h.fx.woken_topics.contains(&topic("orders")),
        "back under the bound: a receiver may plan again"
    );
    h.ack(held[1].clone()).expect("acks");
    assert!(h.fx.woken_topics.is_empty(), "no wake for an ordinary ack");
}

/// A priority topic's receive (`highest_first`): the plan reads the highest queue first, so a
/// backlog of low-priority messages enqueued before a few high-priority ones waits for them;
/// without it, queues take turns from where the group left off.
#[test]
fn a_highest_first_plan_reads_the_highest_queue_first() {
    let mut h = Harness::new();
    h.apply(StoreCommand::SetApplyVersion { version: 12 });
    h.append_to("orders", 0, vec![message(None, None); 6]);
    h.append_to("orders", 2, vec![message(None, None); 2]);
    h.append_to("orders", 1, vec![message(None, None); 2]);
    let (g, t) = (group("billing"), topic("orders"));
    let mut memo = ScanMemo::default();
    let mut receive = |h: &mut Harness, max: u32, highest_first: bool| {
        let mut budget = 10_000;
        let probe = PopProbe {
            highest_first,
            ..probe(&g, &t, &TagSubscription::All)
        };
        let ranges = match h
            .state
            .plan_pop(probe, max, h.now_ms, &mut memo, &mut budget)
        {
            PopPlan::Propose(ranges) => ranges,
            other => panic!("unexpected plan {other:?}"),
        };
        apply_plan_on_queues(h, ranges, TagSubscription::All)
    };
    assert_eq!(
        receive(&mut h, 3, true),
        vec![(2, 0), (2, 1), (1, 0)],
        "queue 2 first, then 1"
    );
    assert_eq!(receive(&mut h, 2, true), vec![(1, 1), (0, 0)]);
    // A plain receive of the same group starts from the queue after its last turn.
    let plain = receive(&mut h, 2, false);
    assert!(plain.iter().all(|(q, _)| *q == 0), "{plain:?}");
}

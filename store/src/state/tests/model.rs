//! Random command sequences against the state machine, checked against a model of what
//! each group was told: deliveries, acks and dead letters.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::command::QueueAppend;

const QUEUES: u32 = 2;
const MAX_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    Append {
        queue_id: u32,
        messages: Vec<SentMessage>,
    },
    /// Several appends coalesced into one entry.
    AppendBatch {
        appends: Vec<(u32, Vec<SentMessage>)>,
    },
    Pop {
        fifo_group: bool,
        max: u32,
    },
    Ack {
        fifo_group: bool,
        pick: usize,
    },
    Change {
        fifo_group: bool,
        pick: usize,
    },
    Advance {
        ms: u32,
    },
    Release,
}

/// A message as the model sends it: tag, message group, delay (ms).
type SentMessage = (Option<u8>, Option<u8>, Option<u16>);

fn messages() -> impl Strategy<Value = Vec<SentMessage>> {
    prop::collection::vec(
        (
            prop::option::of(0u8..3),
            prop::option::of(0u8..3),
            prop::option::weighted(0.2, 0u16..2000),
        ),
        1..4,
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..QUEUES, messages()).prop_map(|(queue_id, messages)| Op::Append { queue_id, messages }),
        2 => prop::collection::vec((0..QUEUES, messages()), 1..4)
            .prop_map(|appends| Op::AppendBatch { appends }),
        4 => (any::<bool>(), 1u32..5).prop_map(|(fifo_group, max)| Op::Pop { fifo_group, max }),
        3 => (any::<bool>(), any::<usize>()).prop_map(|(fifo_group, pick)| Op::Ack { fifo_group, pick }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(fifo_group, pick)| Op::Change { fifo_group, pick }),
        2 => (0u32..40_000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Release),
    ]
}

/// What one consumer group has been told.
#[derive(Default)]
struct GroupModel {
    /// record -> current delivery (ref) and deliveries so far.
    outstanding: BTreeMap<RecordRef, (DeliveryRef, u32)>,
    finished: BTreeSet<RecordRef>,
    delivered: BTreeSet<RecordRef>,
}

struct Model {
    /// record -> (tag, message group) as sent.
    sent: BTreeMap<RecordRef, (Option<u8>, Option<u8>)>,
    groups: [GroupModel; 2],
    dlq_seen: [u64; 2],
}

fn names(fifo_group: bool) -> (GroupName, usize) {
    if fifo_group {
        (group("ordered"), 1)
    } else {
        (group("tagged"), 0)
    }
}

/// The "tagged" group subscribes to tag 0 or 1; the "ordered" FIFO group to everything.
fn filter(fifo_group: bool) -> TagSubscription {
    if fifo_group {
        TagSubscription::All
    } else {
        TagSubscription::Tags(vec!["t0".into(), "t1".into()])
    }
}

fn matches(fifo_group: bool, tag: Option<u8>) -> bool {
    fifo_group || matches!(tag, Some(0 | 1))
}

fn record_dead_letters(h: &Harness, model: &mut Model) -> Result<(), TestCaseError> {
    for (fifo_group, slot) in [(false, 0usize), (true, 1usize)] {
        let (g, _) = names(fifo_group);
        let Some(dlq) = h.state.queue(&g.dead_letter_topic(), 0) else {
            continue;
        };
        for offset in model.dlq_seen[slot]..dlq.max_offset() {
            let record = h
                .state
                .entry_at(&g.dead_letter_topic(), 0, offset)
                .map(|e| e.record())
                .ok_or_else(|| TestCaseError::fail("dlq hole"))?;
            let gm = &mut model.groups[slot];
            let (_, attempts) = gm
                .outstanding
                .remove(&record)
                .ok_or_else(|| TestCaseError::fail("dlq of a message not in flight"))?;
            prop_assert_eq!(attempts, MAX_ATTEMPTS, "dead-lettered before max attempts");
            gm.finished.insert(record);
        }
        model.dlq_seen[slot] = dlq.max_offset();
    }
    Ok(())
}

fn check_pop(
    h: &Harness,
    model: &mut Model,
    fifo_group: bool,
    delivery_id: u64,
    got: &[PoppedMessage],
) -> Result<(), TestCaseError> {
    let (g, slot) = names(fifo_group);
    for m in got {
        let (tag, message_group) = *model
            .sent
            .get(&m.record)
            .ok_or_else(|| TestCaseError::fail("unknown record"))?;
        prop_assert!(matches(fifo_group, tag), "delivered a filtered-out message");
        let gm = &mut model.groups[slot];
        prop_assert!(
            !gm.finished.contains(&m.record),
            "acked or dead-lettered message delivered again"
        );
        let previous = gm.outstanding.get(&m.record).map(|(_, n)| *n).unwrap_or(0);
        prop_assert_eq!(m.attempt, previous + 1, "attempt numbers count deliveries");
        prop_assert!(m.attempt <= MAX_ATTEMPTS);
        if fifo_group && message_group.is_some() {
            // Nothing else of this message group on this queue may be unfinished, and
            // every earlier one must have been delivered.
            let index = h
                .state
                .queue(&topic("orders"), m.queue_id)
                .ok_or_else(|| TestCaseError::fail("queue"))?;
            for earlier in index.min_offset()..m.offset {
                let Some(e) = h.state.entry_at(&topic("orders"), m.queue_id, earlier) else {
                    continue;
                };
                if model.sent.get(&e.record()).map(|s| s.1) != Some(message_group) {
                    continue;
                }
                prop_assert!(
                    gm.delivered.contains(&e.record()),
                    "FIFO order broken: earlier message skipped"
                );
                prop_assert!(
                    !gm.outstanding.contains_key(&e.record()),
                    "FIFO: two messages of a group in flight"
                );
            }
        }
        let d = DeliveryRef {
            group: g.clone(),
            topic: m.topic.clone(),
            queue_id: m.queue_id,
            offset: m.offset,
            delivery_id,
        };
        gm.outstanding.insert(m.record, (d, m.attempt));
        gm.delivered.insert(m.record);
    }
    Ok(())
}

fn pop_cmd(h: &Harness, fifo_group: bool, max: u32) -> StoreCommand {
    StoreCommand::Pop(PopCommand {
        group: names(fifo_group).0,
        topic: topic("orders"),
        queues: QueueChoice::All,
        max,
        invisible_ms: INVISIBLE,
        filter: filter(fifo_group),
        fifo: fifo_group,
        max_attempts: MAX_ATTEMPTS,
        now_ms: h.now_ms,
    })
}

fn records(h: &Harness, messages: &[SentMessage]) -> Vec<MessageRecord> {
    messages
        .iter()
        .map(|(tag, mg, delay)| MessageRecord {
            delivery_timestamp_ms: delay.map(|d| h.now_ms + i64::from(d)),
            ..message(
                tag.map(|t| format!("t{t}")).as_deref(),
                mg.map(|g| format!("g{g}")).as_deref(),
            )
        })
        .collect()
}

/// Records what an entry at `log_index` sent; its records take slots in order.
fn sent(model: &mut Model, log_index: u64, messages: &[SentMessage]) {
    for (slot, (tag, mg, _)) in messages.iter().enumerate() {
        model.sent.insert(
            RecordRef {
                log_index,
                slot: slot as u32,
            },
            (*tag, *mg),
        );
    }
}

fn step(h: &mut Harness, model: &mut Model, op: Op) -> Result<(), TestCaseError> {
    match op {
        Op::Append { queue_id, messages } => {
            h.append_to("orders", queue_id, records(h, &messages));
            sent(model, h.last_index, &messages);
        }
        Op::AppendBatch { appends } => {
            let command = StoreCommand::AppendBatch {
                now_ms: h.now_ms,
                appends: appends
                    .iter()
                    .map(|(queue_id, messages)| QueueAppend {
                        topic: topic("orders"),
                        queue_id: *queue_id,
                        messages: records(h, messages),
                    })
                    .collect(),
            };
            let CommandResponse::AppendedBatch(outcomes) = h.apply(command) else {
                return Err(TestCaseError::fail("append batch answered something else"));
            };
            prop_assert_eq!(
                outcomes.iter().map(Vec::len).collect::<Vec<_>>(),
                appends.iter().map(|(_, m)| m.len()).collect::<Vec<_>>()
            );
            let all: Vec<SentMessage> = appends.into_iter().flat_map(|(_, m)| m).collect();
            sent(model, h.last_index, &all);
        }
        Op::Pop { fifo_group, max } => {
            let id = h.last_index + 1;
            let command = pop_cmd(h, fifo_group, max);
            let CommandResponse::Popped { messages, .. } = h.apply(command) else {
                return Err(TestCaseError::fail("pop answered something else"));
            };
            record_dead_letters(h, model)?;
            check_pop(h, model, fifo_group, id, &messages)?;
        }
        Op::Ack { fifo_group, pick } | Op::Change { fifo_group, pick } => {
            let slot = names(fifo_group).1;
            let gm = &model.groups[slot];
            if gm.outstanding.is_empty() {
                return Ok(());
            }
            let (record, (d, attempts)) = gm
                .outstanding
                .iter()
                .nth(pick % gm.outstanding.len())
                .map(|(r, v)| (*r, v.clone()))
                .ok_or_else(|| TestCaseError::fail("pick"))?;
            if matches!(op, Op::Ack { .. }) {
                prop_assert_eq!(
                    h.ack(d.clone()),
                    Ok(()),
                    "the current delivery must be ackable"
                );
                prop_assert!(h.ack(d).is_err(), "an ack is not accepted twice");
                let gm = &mut model.groups[slot];
                gm.outstanding.remove(&record);
                gm.finished.insert(record);
            } else {
                let id = h.last_index + 1;
                let response = h.apply(StoreCommand::ChangeInvisible {
                    delivery: d.clone(),
                    invisible_ms: INVISIBLE,
                    now_ms: h.now_ms,
                });
                prop_assert!(matches!(
                    response,
                    CommandResponse::InvisibilityChanged(Ok(_))
                ));
                prop_assert!(h.ack(d.clone()).is_err(), "the old handle died");
                let new = DeliveryRef {
                    delivery_id: id,
                    ..d
                };
                model.groups[slot]
                    .outstanding
                    .insert(record, (new, attempts));
            }
        }
        Op::Advance { ms } => h.advance(i64::from(ms)),
        Op::Release => {
            let due = h.state.due_timers(h.now_ms, 1000);
            let now_ms = h.now_ms;
            h.apply(StoreCommand::Release { due, now_ms });
        }
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    let mut model = Model {
        sent: BTreeMap::new(),
        groups: Default::default(),
        dlq_seen: [0, 0],
    };
    for op in ops {
        step(&mut h, &mut model, op)?;
    }
    // Drain: let everything become visible, receive and ack it all, until quiet.
    let mut quiet_rounds = 0;
    for _ in 0..500 {
        let before: usize = model
            .groups
            .iter()
            .map(|g| g.delivered.len() + g.finished.len())
            .sum();
        for op in [
            Op::Advance { ms: 40_000 },
            Op::Release,
            Op::Pop {
                fifo_group: false,
                max: 32,
            },
            Op::Pop {
                fifo_group: true,
                max: 32,
            },
        ] {
            step(&mut h, &mut model, op)?;
        }
        for fifo_group in [false, true] {
            while !model.groups[names(fifo_group).1].outstanding.is_empty() {
                step(
                    &mut h,
                    &mut model,
                    Op::Ack {
                        fifo_group,
                        pick: 0,
                    },
                )?;
            }
        }
        let after: usize = model
            .groups
            .iter()
            .map(|g| g.delivered.len() + g.finished.len())
            .sum();
        quiet_rounds = if after == before { quiet_rounds + 1 } else { 0 };
        if quiet_rounds == 2 {
            break;
        }
    }
    // Drained: every message was delivered to each group it matches, and finished.
    prop_assert_eq!(h.state.next_due_ms(), None);
    for (fifo_group, slot) in [(false, 0usize), (true, 1usize)] {
        let gm = &model.groups[slot];
        for (record, (tag, _)) in &model.sent {
            if matches(fifo_group, *tag) {
                prop_assert!(
                    gm.finished.contains(record),
                    "message {:?} lost for group {}",
                    record,
                    slot
                );
            } else {
                prop_assert!(!gm.delivered.contains(record));
            }
        }
        let (g, _) = names(fifo_group);
        for stats in h.state.queue_stats(&topic("orders"), Some(&g)) {
            for s in stats.groups {
                prop_assert_eq!(s.backlog, 0);
                prop_assert_eq!(s.inflight, 0);
            }
        }
    }
    let snapshot = h.state.restored(&h.state);
    prop_assert_eq!(&snapshot, &h.state);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn random_sequences_keep_the_delivery_invariants(ops in prop::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}

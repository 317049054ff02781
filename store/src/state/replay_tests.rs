//! Snapshot plus replay equals full replay: random command sequences (sends of every kind,
//! coalesced batches, receives, acks, changes of invisibility, dead letters, delay releases,
//! transaction ends, truncation, topic and group deletion, apply-version upgrades, and a clock
//! that sometimes runs backwards) are applied once straight through, and once with the state
//! serialized and restored at a random point, as a snapshot and a restart would. Both runs must
//! reach the same state and give the same answers.

use bytes::Bytes;
use proptest::prelude::*;
use vela_proto::domain::{GroupName, MessageKind, MessageRecord, TopicName};

use super::*;
use crate::command::{
    DeliveryRef, PopCommand, QueueAppend, QueueChoice, StoreCommand, TagSubscription,
    TransactionEnd,
};

/// An intent, resolved to a concrete command against the state when the sequence is built.
#[derive(Debug, Clone)]
enum Intent {
    Send {
        topic: u8,
        queue: u32,
        kind: u8,
        tag: u8,
        delay_ms: Option<u16>,
    },
    Batch(Vec<(u8, u32, u8)>),
    Pop {
        group: u8,
        topic: u8,
        fifo: bool,
        max: u32,
        tagged: bool,
    },
    /// A receive planned by the leader (`PopRanges`), with a small search budget.
    PlannedPop {
        group: u8,
        topic: u8,
        fifo: bool,
        max: u32,
        tagged: bool,
        budget: u8,
    },
    Ack(usize),
    Change(usize, u32),
    DeadLetter(usize),
    Release,
    EndTransaction(usize, bool),
    /// Recalls a delay message an earlier send parked (apply version 11).
    Recall(usize),
    Truncate(u8),
    DropTopic(u8),
    /// Drops a topic under a drop id (apply version 16); ids repeat, so some are fenced off.
    DropTopicOnce(u8, u8),
    /// Sets a topic's retention at a revision (apply version 17); revisions repeat and fall
    /// behind drops', so some are fenced off.
    RetentionAt(u8, Option<u32>, u8),
    DropGroup(u8),
    /// Drops a group under a drop id and a floor (apply version 18); ids repeat and floors
    /// pass them, so some are fenced off.
    DropGroupOnce(u8, u8, u8),
    Upgrade,
    /// Raises the apply version part of the way (a rolling upgrade's stops between the topic
    /// fences).
    UpgradeTo(u32),
    /// Gives a topic a retention of its own, or takes it back (apply version 15).
    Retention(u8, Option<u32>),
    /// Expires a topic's queues up to this per cent of their retained offsets (apply version
    /// 15), or as the leader's retention pass plans it when that cuts anything.
    Expire(u8, u8),
    /// Moves the leader clock by this many ms (negative: a new leader whose clock is behind).
    Clock(i32),
}

fn intent() -> impl Strategy<Value = Intent> {
    prop_oneof![
        6 => (0u8..2, 0u32..2, 0u8..4, 0u8..3, prop::option::weighted(0.2, 0u16..3000))
            .prop_map(|(topic, queue, kind, tag, delay_ms)| Intent::Send { topic, queue, kind, tag, delay_ms }),
        2 => prop::collection::vec((0u8..2, 0u32..2, 0u8..3), 1..4).prop_map(Intent::Batch),
        3 => (0u8..2, 0u8..2, any::<bool>(), 1u32..5, any::<bool>())
            .prop_map(|(group, topic, fifo, max, tagged)| Intent::Pop { group, topic, fifo, max, tagged }),
        3 => (0u8..2, 0u8..2, any::<bool>(), 1u32..5, any::<bool>(), 1u8..20)
            .prop_map(|(group, topic, fifo, max, tagged, budget)| Intent::PlannedPop { group, topic, fifo, max, tagged, budget }),
        4 => any::<usize>().prop_map(Intent::Ack),
        1 => (any::<usize>(), 0u32..60_000).prop_map(|(i, ms)| Intent::Change(i, ms)),
        1 => any::<usize>().prop_map(Intent::DeadLetter),
        1 => Just(Intent::Release),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(i, c)| Intent::EndTransaction(i, c)),
        1 => any::<usize>().prop_map(Intent::Recall),
        1 => (0u8..100).prop_map(Intent::Truncate),
        1 => (0u8..2).prop_map(Intent::DropTopic),
        1 => (0u8..2, 1u8..4).prop_map(|(t, id)| Intent::DropTopicOnce(t, id)),
        1 => (0u8..2, prop::option::of(1_000u32..60_000), 1u8..6)
            .prop_map(|(t, ms, rev)| Intent::RetentionAt(t, ms, rev)),
        1 => (0u8..2).prop_map(Intent::DropGroup),
        1 => (0u8..2, 1u8..6, 0u8..4).prop_map(|(g, id, floor)| Intent::DropGroupOnce(g, id, floor)),
        1 => Just(Intent::Upgrade),
        1 => prop_oneof![Just(15u32), Just(16u32), Just(17u32)].prop_map(Intent::UpgradeTo),
        1 => (0u8..2, prop::option::of(1_000u32..60_000)).prop_map(|(t, ms)| Intent::Retention(t, ms)),
        1 => (0u8..2, 0u8..100).prop_map(|(t, per_cent)| Intent::Expire(t, per_cent)),
        3 => (-20_000i32..40_000).prop_map(Intent::Clock),
    ]
}

fn topic(i: u8) -> TopicName {
    TopicName::new(format!("t{i}")).expect("valid topic")
}

fn group(i: u8) -> GroupName {
    GroupName::new(format!("g{i}")).expect("valid group")
}

fn record(topic_i: u8, kind: u8, tag: u8, delay_at: Option<i64>) -> MessageRecord {
    let kind = match kind {
        0 => MessageKind::Normal,
        1 => MessageKind::Fifo,
        2 => MessageKind::Transaction,
        _ => MessageKind::Delay,
    };
    MessageRecord {
        message_id: "m".into(),
        topic: topic(topic_i),
        kind,
        tag: Some(format!("tag{tag}")),
        keys: vec![],
        message_group: (kind == MessageKind::Fifo).then(|| format!("mg{tag}")),
        delivery_timestamp_ms: delay_at,
        born_timestamp_ms: 0,
        born_host: "replay".into(),
        trace_context: None,
        properties: vec![],
        body: Bytes::from_static(b"body"),
    }
}

/// Turns intents into the concrete log, applying as it goes so later commands can name the
/// deliveries and transactions earlier ones produced.
fn build_log(intents: &[Intent]) -> Vec<StoreCommand> {
    let mut state = ShardState::new(0);
    let mut now: i64 = 1_000_000;
    let mut deliveries: Vec<DeliveryRef> = Vec::new();
    let mut transactions: Vec<(TopicName, String)> = Vec::new();
    let mut recalls: Vec<(TopicName, String)> = Vec::new();
    let mut memo = super::ScanMemo::default();
    let mut log = Vec::new();
    for intent in intents {
        let command = match intent {
            Intent::Clock(ms) => {
                now = now.saturating_add(i64::from(*ms));
                continue;
            }
            Intent::Send {
                topic: t,
                queue,
                kind,
                tag,
                delay_ms,
            } => StoreCommand::Append {
                topic: topic(*t),
                queue_id: *queue,
                now_ms: now,
                messages: vec![record(
                    *t,
                    *kind,
                    *tag,
                    delay_ms.map(|d| now + i64::from(d)),
                )],
            },
            Intent::Batch(parts) => StoreCommand::AppendBatch {
                now_ms: now,
                appends: parts
                    .iter()
                    .map(|(t, q, tag)| QueueAppend {
                        topic: topic(*t),
                        queue_id: *q,
                        messages: vec![record(*t, 0, *tag, None)],
                    })
                    .collect(),
            },
            Intent::Pop {
                group: g,
                topic: t,
                fifo,
                max,
                tagged,
            } => StoreCommand::Pop(PopCommand {
                group: group(*g),
                topic: topic(*t),
                queues: QueueChoice::All,
                max: *max,
                invisible_ms: 10_000,
                filter: if *tagged {
                    TagSubscription::Tags(vec!["tag0".into(), "tag1".into()])
                } else {
                    TagSubscription::All
                },
                fifo: *fifo,
                max_attempts: 3,
                now_ms: now,
            }),
            Intent::PlannedPop {
                group: g,
                topic: t,
                fifo,
                max,
                tagged,
                budget,
            } => {
                let filter = if *tagged {
                    TagSubscription::Tags(vec!["tag0".into(), "tag1".into()])
                } else {
                    TagSubscription::All
                };
                let (group, topic) = (group(*g), topic(*t));
                let probe = PopProbe {
                    group: &group,
                    topic: &topic,
                    queues: QueueChoice::All,
                    filter: &filter,
                    fifo: *fifo,
                    sql: None,
                    highest_first: false,
                };
                let mut budget = u64::from(*budget);
                match state.plan_pop(probe, *max, now, &mut memo, &mut budget) {
                    super::PopPlan::Propose(ranges) => StoreCommand::PopRanges {
                        pop: PopCommand {
                            group: group.clone(),
                            topic: topic.clone(),
                            queues: QueueChoice::All,
                            max: *max,
                            invisible_ms: 10_000,
                            filter: filter.clone(),
                            fifo: *fifo,
                            max_attempts: 3,
                            now_ms: now,
                        },
                        ranges,
                    },
                    _ => continue,
                }
            }
            Intent::Ack(pick) if !deliveries.is_empty() => StoreCommand::Ack {
                deliveries: vec![deliveries[pick % deliveries.len()].clone()],
            },
            Intent::Change(pick, ms) if !deliveries.is_empty() => StoreCommand::ChangeInvisible {
                delivery: deliveries[pick % deliveries.len()].clone(),
                invisible_ms: u64::from(*ms),
                now_ms: now,
            },
            Intent::DeadLetter(pick) if !deliveries.is_empty() => StoreCommand::DeadLetter {
                delivery: deliveries[pick % deliveries.len()].clone(),
                now_ms: now,
            },
            Intent::Release => StoreCommand::Release {
                due: state.due_timers(now, 64),
                now_ms: now,
            },
            Intent::EndTransaction(pick, commit) if !transactions.is_empty() => {
                let (t, id) = transactions[pick % transactions.len()].clone();
                StoreCommand::EndTransaction {
                    topic: t,
                    transaction_id: id,
                    resolution: if *commit {
                        TransactionEnd::Commit
                    } else {
                        TransactionEnd::Rollback
                    },
                    now_ms: now,
                }
            }
            Intent::Recall(pick) if !recalls.is_empty() => {
                let (t, handle) = recalls[pick % recalls.len()].clone();
                let (_, timer) = super::parse_recall_handle(&handle).expect("a handle we made");
                StoreCommand::Recall { topic: t, timer }
            }
            Intent::Truncate(per_cent) => StoreCommand::Truncate {
                below_log_index: (log.len() as u64 * u64::from(*per_cent)) / 100,
            },
            Intent::DropTopic(t) => StoreCommand::DropTopic { topic: topic(*t) },
            Intent::DropTopicOnce(t, id) => StoreCommand::DropTopicOnce {
                topic: topic(*t),
                drop_id: u64::from(*id),
            },
            Intent::RetentionAt(t, ms, rev) => StoreCommand::TopicRetentionAt {
                topic: topic(*t),
                retention_ms: ms.map(u64::from),
                revision: u64::from(*rev),
            },
            Intent::DropGroup(g) => StoreCommand::DropGroup { group: group(*g) },
            Intent::DropGroupOnce(g, id, floor) => StoreCommand::DropGroupOnce {
                group: group(*g),
                drop_id: u64::from(*id),
                floor: u64::from(*floor),
            },
            Intent::Upgrade => StoreCommand::SetApplyVersion {
                version: APPLY_VERSION,
            },
            Intent::UpgradeTo(version) => StoreCommand::SetApplyVersion { version: *version },
            Intent::Retention(t, ms) => StoreCommand::TopicRetention {
                topic: topic(*t),
                retention_ms: ms.map(u64::from),
            },
            Intent::Expire(t, per_cent) => {
                let planned = state
                    .expiry_floors(120_000, now)
                    .into_iter()
                    .find(|(name, _)| *name == topic(*t));
                let floors = match planned {
                    Some((_, floors)) => floors,
                    None => state
                        .queue_ids(&topic(*t))
                        .into_iter()
                        .filter_map(|queue_id| {
                            let q = state.queue_index(&topic(*t), queue_id)?;
                            let span = q.max_offset() - q.min_offset();
                            Some(crate::command::ExpiryFloor {
                                queue_id,
                                key: q.key(),
                                offset: q.min_offset() + span * u64::from(*per_cent) / 100,
                            })
                        })
                        .collect(),
                };
                StoreCommand::Expire {
                    topic: topic(*t),
                    floors,
                }
            }
            Intent::Ack(_)
            | Intent::Change(..)
            | Intent::DeadLetter(_)
            | Intent::EndTransaction(..)
            | Intent::Recall(_) => continue,
        };
        let index = log.len() as u64 + 1;
        let mut fx = ApplyEffects::default();
        match state.apply(index, &command, &mut fx) {
            CommandResponse::Popped {
                delivery_id,
                messages,
                ..
            } => {
                let pop = match &command {
                    StoreCommand::Pop(pop) | StoreCommand::PopRanges { pop, .. } => Some(pop),
                    _ => None,
                };
                if let Some(pop) = pop {
                    deliveries.extend(messages.iter().map(|m| DeliveryRef {
                        group: pop.group.clone(),
                        topic: m.topic.clone(),
                        queue_id: m.queue_id,
                        offset: m.offset,
                        delivery_id,
                    }));
                }
            }
            CommandResponse::InvisibilityChanged(Ok(changed)) => {
                if let StoreCommand::ChangeInvisible { delivery, .. } = &command {
                    deliveries.push(DeliveryRef {
                        delivery_id: changed.delivery_id,
                        ..delivery.clone()
                    });
                }
            }
            CommandResponse::Appended(outcomes) => {
                if let StoreCommand::Append { topic, .. } = &command {
                    transactions.extend(
                        outcomes
                            .iter()
                            .filter_map(|o| o.transaction_id.clone())
                            .map(|id| (topic.clone(), id)),
                    );
                    recalls.extend(
                        outcomes
                            .iter()
                            .filter_map(|o| o.recall_handle.clone())
                            .map(|handle| (topic.clone(), handle)),
                    );
                }
            }
            _ => {}
        }
        log.push(command);
    }
    log
}

/// Applies `log`, restarting from a snapshot before command `restart_at`. The restarted state
/// reads the index as it was at the snapshot, or, with `index_ahead`, as a later point of the
/// same history left it (the index file is written ahead of snapshots; ADR 0008).
fn replay(
    log: &[StoreCommand],
    restart_at: Option<usize>,
    index_ahead: Option<&ShardState>,
) -> Result<(ShardState, Vec<CommandResponse>), TestCaseError> {
    let mut state = ShardState::new(0);
    let mut responses = Vec::new();
    for (i, command) in log.iter().enumerate() {
        if restart_at == Some(i) {
            state = state.restored(index_ahead.unwrap_or(&state));
        }
        let mut fx = ApplyEffects::default();
        responses.push(state.apply(i as u64 + 1, command, &mut fx));
    }
    Ok((state, responses))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn snapshot_and_replay_equals_full_replay(
        intents in prop::collection::vec(intent(), 1..120),
        cut in any::<prop::sample::Index>(),
        ahead in any::<prop::sample::Index>(),
        index_ahead in any::<bool>(),
    ) {
        let log = build_log(&intents);
        let (full, full_responses) = replay(&log, None, None)?;
        let at = cut.index(log.len() + 1);
        let later = if index_ahead {
            let until = at + ahead.index(log.len() + 1 - at);
            Some(replay(&log[..until], None, None)?.0)
        } else {
            None
        };
        let (restored, restored_responses) = replay(&log, Some(at), later.as_ref())?;
        prop_assert_eq!(&restored, &full);
        prop_assert_eq!(restored_responses, full_responses);
    }
}

#[test]
fn time_never_runs_backwards_from_apply_version_2() {
    let pop = |now_ms: i64| {
        StoreCommand::Pop(PopCommand {
            group: group(0),
            topic: topic(0),
            queues: QueueChoice::All,
            max: 1,
            invisible_ms: 10_000,
            filter: TagSubscription::All,
            fifo: false,
            max_attempts: 3,
            now_ms,
        })
    };
    let send = |now_ms: i64| StoreCommand::Append {
        topic: topic(0),
        queue_id: 0,
        now_ms,
        messages: vec![record(0, 0, 0, None)],
    };
    let visible_at = |response: CommandResponse| match response {
        CommandResponse::Popped { messages, .. } => messages[0].visible_at_ms,
        other => panic!("unexpected {other:?}"),
    };
    let mut fx = ApplyEffects::default();

    // Version 1 (as first released): a leader whose clock is behind gives earlier deadlines.
    let mut v1 = ShardState::new(0);
    v1.apply(1, &send(50_000), &mut fx);
    v1.apply(2, &send(50_000), &mut fx);
    assert_eq!(visible_at(v1.apply(3, &pop(100_000), &mut fx)), 110_000);
    assert_eq!(visible_at(v1.apply(4, &pop(40_000), &mut fx)), 50_000);

    // Version 2: the clock is raised to the highest seen.
    let mut v2 = ShardState::new(0);
    v2.apply(1, &StoreCommand::SetApplyVersion { version: 2 }, &mut fx);
    assert_eq!(v2.apply_version(), 2);
    v2.apply(2, &send(50_000), &mut fx);
    v2.apply(3, &send(50_000), &mut fx);
    assert_eq!(visible_at(v2.apply(4, &pop(100_000), &mut fx)), 110_000);
    assert_eq!(visible_at(v2.apply(5, &pop(40_000), &mut fx)), 110_000);
}

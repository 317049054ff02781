//! Golden bytes and round trips of the log commands.

use super::*;
use bytes::Bytes;
use vela_proto::domain::MessageKind;

#[test]
fn commands_round_trip_through_postcard() {
    let topic = TopicName::new("orders").expect("valid");
    let group = GroupName::new("billing").expect("valid");
    let record = MessageRecord {
        message_id: "m1".into(),
        topic: topic.clone(),
        kind: MessageKind::Normal,
        tag: Some("A".into()),
        keys: vec!["k".into()],
        message_group: None,
        delivery_timestamp_ms: None,
        born_timestamp_ms: 5,
        born_host: "h".into(),
        trace_context: None,
        properties: vec![("p".into(), "v".into())],
        body: Bytes::from_static(b"hello"),
    };
    let delivery = DeliveryRef {
        group: group.clone(),
        topic: topic.clone(),
        queue_id: 1,
        offset: 2,
        delivery_id: 3,
    };
    let commands = vec![
        StoreCommand::Append {
            topic: topic.clone(),
            queue_id: 0,
            now_ms: 1,
            messages: vec![record.clone()],
        },
        StoreCommand::AppendBatch {
            now_ms: 2,
            appends: vec![
                QueueAppend {
                    topic: topic.clone(),
                    queue_id: 0,
                    messages: vec![record.clone(), record.clone()],
                },
                QueueAppend {
                    topic: topic.clone(),
                    queue_id: 3,
                    messages: vec![record],
                },
            ],
        },
        StoreCommand::Pop(PopCommand {
            group: group.clone(),
            topic: topic.clone(),
            queues: QueueChoice::All,
            max: 32,
            invisible_ms: 30_000,
            filter: TagSubscription::Tags(vec!["A".into()]),
            fifo: true,
            max_attempts: 17,
            now_ms: 9,
        }),
        StoreCommand::Ack {
            deliveries: vec![delivery.clone()],
        },
        StoreCommand::ChangeInvisible {
            delivery: delivery.clone(),
            invisible_ms: 10,
            now_ms: 11,
        },
        StoreCommand::DeadLetter {
            delivery,
            now_ms: 12,
        },
        StoreCommand::Release {
            due: vec![TimerKey {
                due_ms: 1,
                log_index: 2,
                slot: 3,
            }],
            now_ms: 4,
        },
        StoreCommand::EndTransaction {
            topic: topic.clone(),
            transaction_id: "0-1-0".into(),
            resolution: TransactionEnd::Commit,
            now_ms: 1,
        },
        StoreCommand::Truncate {
            below_log_index: 100,
        },
        StoreCommand::DropTopic { topic },
        StoreCommand::DropGroup { group },
    ];
    for command in commands {
        let bytes = postcard::to_stdvec(&command).expect("encodes");
        let back: StoreCommand = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, command);
        assert!(
            !command.to_string().contains("hello"),
            "display must not leak bodies"
        );
    }
}

#[test]
fn variant_tags_are_frozen() {
    // The first byte of a postcard enum is its variant index: reordering variants would
    // silently reinterpret old logs.
    let drop = StoreCommand::DropGroup {
        group: GroupName::new("g").expect("valid"),
    };
    assert_eq!(postcard::to_stdvec(&drop).expect("encodes")[0], 9);
    let truncate = StoreCommand::Truncate { below_log_index: 1 };
    assert_eq!(postcard::to_stdvec(&truncate).expect("encodes")[0], 7);
    let batch = StoreCommand::AppendBatch {
        now_ms: 1,
        appends: vec![],
    };
    assert_eq!(postcard::to_stdvec(&batch).expect("encodes")[0], 10);
}

#[test]
fn pop_ranges_golden_bytes() {
    let command = StoreCommand::PopRanges {
        pop: PopCommand {
            group: GroupName::new("g").expect("valid"),
            topic: TopicName::new("t").expect("valid"),
            queues: QueueChoice::All,
            max: 32,
            invisible_ms: 30_000,
            filter: TagSubscription::All,
            fifo: false,
            max_attempts: 16,
            now_ms: 1_000,
        },
        ranges: vec![ScanRange {
            queue_id: 1,
            skip_to: 300,
            scan_to: 400,
            expiries: 64,
        }],
    };
    let bytes = postcard::to_stdvec(&command).expect("encodes");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "0c016701740020b0ea01000010d00f0101ac02900340");
}

#[test]
fn pop_picked_golden_bytes() {
    // Persisted from apply version 7: tag 14, the receive, then per queue its range and
    // the matching offsets as varints.
    let command = StoreCommand::PopPicked {
        pop: PopCommand {
            group: GroupName::new("g").expect("valid"),
            topic: TopicName::new("t").expect("valid"),
            queues: QueueChoice::One(1),
            max: 32,
            invisible_ms: 30_000,
            filter: TagSubscription::All,
            fifo: false,
            max_attempts: 16,
            now_ms: 1_000,
        },
        picks: vec![PickedRange {
            range: ScanRange {
                queue_id: 1,
                skip_to: 300,
                scan_to: 400,
                expiries: 0,
            },
            offsets: vec![300, 399],
        }],
    };
    let bytes = postcard::to_stdvec(&command).expect("encodes");
    assert_eq!(
        hex::encode(&bytes),
        "0e01670174010120b0ea01000010d00f0101ac0290030002ac028f03"
    );
    let back: StoreCommand = postcard::from_bytes(&bytes).expect("decodes");
    assert_eq!(back, command);
    assert_eq!(back.kind(), "pop");
}

#[test]
fn set_offsets_golden_bytes() {
    // Persisted from apply version 8: tag 15, group, topic, per queue (id, offset), then
    // whether it is a reset.
    let command = StoreCommand::SetOffsets {
        group: GroupName::new("g").expect("valid"),
        topic: TopicName::new("t").expect("valid"),
        offsets: vec![QueueOffset {
            queue_id: 2,
            offset: 300,
        }],
        replace: true,
    };
    let bytes = postcard::to_stdvec(&command).expect("encodes");
    assert_eq!(hex::encode(&bytes), "0f016701740102ac0201");
    let back: StoreCommand = postcard::from_bytes(&bytes).expect("decodes");
    assert_eq!(back, command);
    assert_eq!(back.kind(), "set_offsets");
}

#[test]
fn set_apply_version_golden_bytes() {
    // Persisted in every shard's log: tag 11, then the version as a varint.
    let command = StoreCommand::SetApplyVersion { version: 2 };
    assert_eq!(postcard::to_stdvec(&command).expect("encodes"), vec![11, 2]);
    let back: StoreCommand = postcard::from_bytes(&[11, 0x80, 0x01]).expect("decodes");
    assert_eq!(back, StoreCommand::SetApplyVersion { version: 128 });
}

#[test]
fn client_appends_golden_bytes() {
    // Persisted in every shard's log from apply version 5: tag 13, the time, then per
    // sub-append the client id (an option) and the queue append.
    let command = StoreCommand::ClientAppends {
        now_ms: 7,
        appends: vec![ClientAppend {
            client_id: Some("c@1".into()),
            append: QueueAppend {
                topic: TopicName::new("t").expect("valid"),
                queue_id: 2,
                messages: vec![],
            },
        }],
    };
    let bytes = postcard::to_stdvec(&command).expect("encodes");
    assert_eq!(hex::encode(&bytes), "0d0e01010363403101740200");
    let back: StoreCommand = postcard::from_bytes(&bytes).expect("decodes");
    assert_eq!(back, command);
    assert_eq!(back.kind(), "client_appends");
}

#[test]
fn tiered_golden_bytes() {
    // Persisted from apply version 9: tag 16, then the segment: key, first and last index,
    // bytes (varints), crc32c (varint), first and last append time (zigzag varints).
    let command = StoreCommand::Tiered {
        segment: TieredSegment {
            key: "k".into(),
            first_index: 1,
            last_index: 300,
            bytes: 4096,
            crc32c: 5,
            first_append_ms: 1,
            last_append_ms: -1,
        },
    };
    let bytes = postcard::to_stdvec(&command).expect("encodes");
    assert_eq!(hex::encode(&bytes), "10016b01ac028020050201");
    let back: StoreCommand = postcard::from_bytes(&bytes).expect("decodes");
    assert_eq!(back, command);
    assert_eq!(back.kind(), "tiered");
}

#[test]
fn renew_invisible_golden_bytes() {
    // Persisted from apply version 10: tag 17, the delivery (group, topic, queue, offset,
    // delivery id), the invisibility (varint) and the time (zigzag varint).
    let command = StoreCommand::RenewInvisible {
        delivery: DeliveryRef {
            group: GroupName::new("g").expect("valid"),
            topic: TopicName::new("t").expect("valid"),
            queue_id: 1,
            offset: 2,
            delivery_id: 3,
        },
        invisible_ms: 60_000,
        now_ms: 5,
    };
    let bytes = postcard::to_stdvec(&command).expect("encodes");
    assert_eq!(hex::encode(&bytes), "1101670174010203e0d4030a");
    let back: StoreCommand = postcard::from_bytes(&bytes).expect("decodes");
    assert_eq!(back, command);
    assert_eq!(back.kind(), "renew_invisible");
}

#[test]
fn recall_golden_bytes() {
    // Persisted from apply version 11: tag 18, the topic, then the timer: due time (zigzag
    // varint), log index and slot (varints).
    let command = StoreCommand::Recall {
        topic: TopicName::new("t").expect("valid"),
        timer: TimerKey {
            due_ms: 1_000,
            log_index: 300,
            slot: 2,
        },
    };
    let bytes = postcard::to_stdvec(&command).expect("encodes");
    assert_eq!(hex::encode(&bytes), "120174d00fac0202");
    let back: StoreCommand = postcard::from_bytes(&bytes).expect("decodes");
    assert_eq!(back, command);
    assert_eq!(back.kind(), "recall");
}

#[test]
fn priority_record_golden_bytes() {
    // Logged from apply version 12: a record's kind is variant 4 of `MessageKind`; its
    // priority is the record property `_SYS_MSG_PRIORITY_`.
    let mut record = record_with_id("m");
    record.kind = MessageKind::Priority;
    record.properties = vec![(vela_proto::domain::PRIORITY_PROPERTY.into(), "7".into())];
    let command = StoreCommand::Append {
        topic: TopicName::new("t").expect("valid"),
        queue_id: 3,
        now_ms: 1,
        messages: vec![record],
    };
    let bytes = postcard::to_stdvec(&command).expect("encodes");
    assert_eq!(
        hex::encode(&bytes),
        "000174030201016d066f726465727304000000000001680001125f5359535f4d53475f5052494f524954595f013700"
    );
    let back: StoreCommand = postcard::from_bytes(&bytes).expect("decodes");
    assert_eq!(back, command);
}

fn record_with_id(id: &str) -> MessageRecord {
    MessageRecord {
        message_id: id.into(),
        topic: TopicName::new("orders").expect("valid"),
        kind: MessageKind::Normal,
        tag: None,
        keys: vec![],
        message_group: None,
        delivery_timestamp_ms: None,
        born_timestamp_ms: 0,
        born_host: "h".into(),
        trace_context: None,
        properties: vec![],
        body: Bytes::new(),
    }
}

#[test]
fn batch_slots_run_on_across_sub_appends() {
    let topic = TopicName::new("orders").expect("valid");
    let sub = |queue_id, ids: &[&str]| QueueAppend {
        topic: topic.clone(),
        queue_id,
        messages: ids.iter().map(|id| record_with_id(id)).collect(),
    };
    let batch = StoreCommand::AppendBatch {
        now_ms: 0,
        appends: vec![
            sub(0, &["a", "b"]),
            sub(1, &[]),
            sub(0, &["c"]),
            sub(2, &["d", "e"]),
        ],
    };
    let ids: Vec<Option<&str>> = (0..6)
        .map(|slot| batch.record(slot).map(|r| r.message_id.as_str()))
        .collect();
    assert_eq!(
        ids,
        [Some("a"), Some("b"), Some("c"), Some("d"), Some("e"), None]
    );
    assert_eq!(batch.record(u32::MAX), None);

    let single = StoreCommand::Append {
        topic: topic.clone(),
        queue_id: 0,
        now_ms: 0,
        messages: vec![record_with_id("x")],
    };
    assert_eq!(single.record(0).map(|r| r.message_id.as_str()), Some("x"));
    assert_eq!(single.record(1), None);
    assert_eq!(StoreCommand::DropTopic { topic }.record(0), None);
}

#[test]
fn topic_retention_golden_bytes() {
    // Persisted from apply version 15: tag 19, the topic, then the retention (an option of a
    // varint of milliseconds; none: the store's retention time).
    let command = StoreCommand::TopicRetention {
        topic: TopicName::new("t").expect("valid"),
        retention_ms: Some(86_400_000),
    };
    let bytes = postcard::to_stdvec(&command).expect("encodes");
    assert_eq!(hex::encode(&bytes), "1301740180b89929");
    let back: StoreCommand = postcard::from_bytes(&bytes).expect("decodes");
    assert_eq!(back, command);
    assert_eq!(back.kind(), "topic_retention");
    let default = StoreCommand::TopicRetention {
        topic: TopicName::new("t").expect("valid"),
        retention_ms: None,
    };
    assert_eq!(
        hex::encode(postcard::to_stdvec(&default).expect("encodes")),
        "13017400"
    );
}

#[test]
fn expire_golden_bytes() {
    // Persisted from apply version 15: tag 20, the topic, then per queue (id, index key,
    // offset).
    let command = StoreCommand::Expire {
        topic: TopicName::new("t").expect("valid"),
        floors: vec![ExpiryFloor {
            queue_id: 2,
            key: 5,
            offset: 300,
        }],
    };
    let bytes = postcard::to_stdvec(&command).expect("encodes");
    assert_eq!(hex::encode(&bytes), "140174010205ac02");
    let back: StoreCommand = postcard::from_bytes(&bytes).expect("decodes");
    assert_eq!(back, command);
    assert_eq!(back.kind(), "expire");
}

#[test]
fn topic_retention_at_golden_bytes() {
    // Persisted from apply version 17: tag 22, the topic, the retention (an option of a varint
    // of milliseconds), then the revision (a varint).
    let command = StoreCommand::TopicRetentionAt {
        topic: TopicName::new("t").expect("valid"),
        retention_ms: Some(86_400_000),
        revision: 300,
    };
    let bytes = postcard::to_stdvec(&command).expect("encodes");
    assert_eq!(hex::encode(&bytes), "1601740180b89929ac02");
    let back: StoreCommand = postcard::from_bytes(&bytes).expect("decodes");
    assert_eq!(back, command);
    assert_eq!(back.kind(), "topic_retention");
    assert_eq!(
        back.to_string(),
        "topic_retention(t, 86400000 ms, revision 300)"
    );
}

#[test]
fn drop_group_once_golden_bytes() {
    // Persisted from apply version 18: tag 23, the group, the drop id, then the floor
    // (varints).
    let command = StoreCommand::DropGroupOnce {
        group: GroupName::new("g").expect("valid"),
        drop_id: 300,
        floor: 2,
    };
    let bytes = postcard::to_stdvec(&command).expect("encodes");
    assert_eq!(hex::encode(&bytes), "170167ac0202");
    let back: StoreCommand = postcard::from_bytes(&bytes).expect("decodes");
    assert_eq!(back, command);
    assert_eq!(back.kind(), "drop_group");
    assert_eq!(back.to_string(), "drop_group(g, drop 300 above 2)");
}

#[test]
fn drop_topic_once_golden_bytes() {
    // Persisted from apply version 16: tag 21, the topic, then the drop id (a varint).
    let command = StoreCommand::DropTopicOnce {
        topic: TopicName::new("t").expect("valid"),
        drop_id: 300,
    };
    let bytes = postcard::to_stdvec(&command).expect("encodes");
    assert_eq!(hex::encode(&bytes), "150174ac02");
    let back: StoreCommand = postcard::from_bytes(&bytes).expect("decodes");
    assert_eq!(back, command);
    assert_eq!(back.kind(), "drop_topic");
    assert_eq!(back.to_string(), "drop_topic(t, drop 300)");
}

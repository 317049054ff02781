use super::*;
use bytes::Bytes;
use vela_proto::receipt::ReceiptTicket;

const NOW: i64 = 1_800_000_000_000;

fn limits() -> MessageLimits {
    MessageLimits::from(&ProxyConfig::default())
}

fn wire(message_type: MessageType) -> pb::Message {
    pb::Message {
        topic: Some(pb::Resource {
            resource_namespace: String::new(),
            name: "orders".into(),
        }),
        user_properties: HashMap::from([("k".to_owned(), "v".to_owned())]),
        system_properties: Some(pb::SystemProperties {
            tag: Some("TagA".into()),
            keys: vec!["key1".into()],
            message_id: "01C6AF690D5CAD67206887C01800000001".into(),
            body_encoding: Encoding::Identity as i32,
            message_type: message_type as i32,
            born_timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5_000_000,
            }),
            born_host: "vm".into(),
            queue_id: 3,
            ..Default::default()
        }),
        body: Bytes::from_static(b"hello"),
    }
}

fn props(m: &mut pb::Message) -> &mut pb::SystemProperties {
    m.system_properties.get_or_insert_with(Default::default)
}

/// The first delivery, at offset 0 of `queue_id`, of `record` from `topic` to `group`.
fn first_delivery(
    topic: TopicName,
    queue_id: u32,
    group: GroupName,
    record: MessageRecord,
) -> Delivery {
    Delivery {
        topic: topic.clone(),
        queue_id,
        offset: 0,
        store_timestamp_ms: NOW,
        attempt: 1,
        invisible: Duration::from_secs(15),
        ticket: ReceiptTicket {
            shard: 0,
            group,
            topic,
            queue_id,
            offset: 0,
            delivery_id: 1,
            visible_at_ms: 0,
        },
        message: record,
        transaction_id: None,
    }
}

fn code_of(msg: &pb::Message) -> Code {
    produced_message(msg, "", &limits(), NOW)
        .expect_err("rejected")
        .code
}

#[test]
fn a_normal_message_converts() {
    let out = produced_message(&wire(MessageType::Normal), "", &limits(), NOW).expect("valid");
    let r = &out.record;
    assert_eq!(r.topic.as_str(), "orders");
    assert_eq!(r.kind, MessageKind::Normal);
    assert_eq!(r.tag.as_deref(), Some("TagA"));
    assert_eq!(r.keys, vec!["key1".to_owned()]);
    assert_eq!(r.message_id, "01C6AF690D5CAD67206887C01800000001");
    assert_eq!(r.born_timestamp_ms, 1_700_000_000_005);
    assert_eq!(r.properties, vec![("k".to_owned(), "v".to_owned())]);
    assert_eq!(r.delivery_timestamp_ms, None);
    assert_eq!(out.requested_queue, 3);
}

#[test]
fn the_header_namespace_applies_when_the_resource_has_none() {
    let out =
        produced_message(&wire(MessageType::Normal), "tenant", &limits(), NOW).expect("valid");
    assert_eq!(out.record.topic.as_str(), "tenant%orders");
    let mut own = wire(MessageType::Normal);
    if let Some(t) = own.topic.as_mut() {
        t.resource_namespace = "mine".into();
    }
    let out = produced_message(&own, "tenant", &limits(), NOW).expect("valid");
    assert_eq!(out.record.topic.as_str(), "mine%orders");
}

#[test]
fn bad_messages_get_their_codes() {
    let mut m = wire(MessageType::Normal);
    m.body = Bytes::new();
    assert_eq!(code_of(&m), Code::MessageBodyEmpty);

    m.body = Bytes::from(vec![0u8; 4 * 1024 * 1024 + 1]);
    assert_eq!(code_of(&m), Code::MessageBodyTooLarge);

    let mut m = wire(MessageType::Normal);
    m.topic = Some(pb::Resource {
        resource_namespace: String::new(),
        name: "bad topic".into(),
    });
    assert_eq!(code_of(&m), Code::IllegalTopic);
    m.topic = None;
    assert_eq!(code_of(&m), Code::IllegalTopic);

    let mut m = wire(MessageType::Normal);
    props(&mut m).tag = Some("a|b".into());
    assert_eq!(code_of(&m), Code::IllegalMessageTag);

    let mut m = wire(MessageType::Normal);
    props(&mut m).message_id.clear();
    assert_eq!(code_of(&m), Code::IllegalMessageId);

    let mut m = wire(MessageType::Normal);
    m.system_properties = None;
    assert_eq!(code_of(&m), Code::BadRequest);

    let mut m = wire(MessageType::Normal);
    m.topic = Some(pb::Resource {
        resource_namespace: String::new(),
        name: "%DLQ%billing".into(),
    });
    assert_eq!(
        code_of(&m),
        Code::Forbidden,
        "dead-letter topics are not sent to"
    );

    let mut m = wire(MessageType::Normal);
    props(&mut m).message_id = "1".repeat(129);
    assert_eq!(code_of(&m), Code::IllegalMessageId);

    let mut m = wire(MessageType::Normal);
    props(&mut m).keys = vec![" ".into()];
    assert_eq!(code_of(&m), Code::IllegalMessageKey);
    props(&mut m).keys = (0..65).map(|i| format!("k{i}")).collect();
    assert_eq!(code_of(&m), Code::IllegalMessageKey);
    props(&mut m).keys = vec!["k".repeat(256)];
    assert_eq!(code_of(&m), Code::IllegalMessageKey);
    props(&mut m).keys = (0..64).map(|i| format!("k{i}")).collect();
    assert!(produced_message(&m, "", &limits(), NOW).is_ok());

    assert_eq!(code_of(&wire(MessageType::Fifo)), Code::IllegalMessageGroup);
    let mut m = wire(MessageType::Fifo);
    props(&mut m).message_group = Some("g".repeat(65));
    assert_eq!(code_of(&m), Code::IllegalMessageGroup);

    assert_eq!(
        code_of(&wire(MessageType::Delay)),
        Code::IllegalDeliveryTime
    );
    let mut m = wire(MessageType::Delay);
    props(&mut m).delivery_timestamp = Some(ms_to_timestamp(NOW + 25 * 3600 * 1000));
    assert_eq!(code_of(&m), Code::IllegalDeliveryTime);

    assert_eq!(
        code_of(&wire(MessageType::Priority)),
        Code::MessagePropertyConflictWithType,
        "a priority message without its priority"
    );
    let mut m = wire(MessageType::Priority);
    props(&mut m).priority = Some(-1);
    assert_eq!(code_of(&m), Code::MessagePropertyConflictWithType);
    assert_eq!(code_of(&wire(MessageType::Lite)), Code::Unsupported);
    let mut m = wire(MessageType::Normal);
    props(&mut m).message_type = 77;
    assert_eq!(code_of(&m), Code::BadRequest);
}

#[test]
fn property_limits() {
    let mut m = wire(MessageType::Normal);
    m.user_properties = (0..129)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect();
    assert_eq!(code_of(&m), Code::MessagePropertiesTooLarge);
    m.user_properties = HashMap::from([("big".to_owned(), "x".repeat(16 * 1024))]);
    assert_eq!(code_of(&m), Code::MessagePropertiesTooLarge);
    m.user_properties = HashMap::from([(String::new(), "v".to_owned())]);
    assert_eq!(code_of(&m), Code::IllegalMessagePropertyKey);
    m.user_properties = (0..128)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect();
    assert!(produced_message(&m, "", &limits(), NOW).is_ok());
}

#[test]
fn kinds_and_delays() {
    let mut m = wire(MessageType::Delay);
    props(&mut m).delivery_timestamp = Some(prost_types::Timestamp {
        seconds: NOW / 1000 + 60,
        nanos: 0,
    });
    let out = produced_message(&m, "", &limits(), NOW).expect("valid");
    assert_eq!(out.record.kind, MessageKind::Delay);
    assert_eq!(out.record.delivery_timestamp_ms, Some(NOW + 60_000));

    let mut m = wire(MessageType::Unspecified);
    props(&mut m).message_group = Some("g1".into());
    let out = produced_message(&m, "", &limits(), NOW).expect("valid");
    assert_eq!(out.record.kind, MessageKind::Fifo);
    assert_eq!(out.record.message_group.as_deref(), Some("g1"));

    let t = TopicName::new("orders").expect("valid");
    assert!(check_topic_accepts(&t, TopicType::Mixed, MessageKind::Transaction).is_ok());
    let err = check_topic_accepts(&t, TopicType::Normal, MessageKind::Fifo).expect_err("conflict");
    assert_eq!(err.code, Code::MessagePropertyConflictWithType);
    assert_eq!(
        err.message,
        "topic orders is normal and does not accept fifo messages"
    );
}

fn receive_req() -> pb::ReceiveMessageRequest {
    pb::ReceiveMessageRequest {
        group: Some(pb::Resource {
            resource_namespace: String::new(),
            name: "billing".into(),
        }),
        message_queue: Some(pb::MessageQueue {
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: "orders".into(),
            }),
            ..Default::default()
        }),
        filter_expression: Some(pb::FilterExpression {
            r#type: FilterType::Tag as i32,
            expression: "A||B".into(),
        }),
        batch_size: 64,
        invisible_duration: Some(duration_to_pb(Duration::from_secs(15))),
        auto_renew: false,
        long_polling_timeout: Some(duration_to_pb(Duration::from_secs(40))),
        attempt_id: None,
    }
}

#[test]
fn receive_requests_validate() {
    let auto = Duration::from_secs(60);
    let p = receive_params(&receive_req(), "", auto).expect("valid");
    assert_eq!(p.group.as_str(), "billing");
    assert_eq!(p.topic.as_str(), "orders");
    assert_eq!(p.batch, 32, "clamped to 32");
    assert_eq!(p.invisible, Duration::from_secs(15));
    assert_eq!(
        p.filter,
        TagFilter::Tags(vec!["A".into(), "B".into()]).into()
    );
    assert_eq!(p.requested_poll, Some(Duration::from_secs(40)));

    let code =
        |r: pb::ReceiveMessageRequest| receive_params(&r, "", auto).expect_err("rejected").code;
    let mut r = receive_req();
    r.invisible_duration = Some(duration_to_pb(Duration::from_secs(9)));
    assert_eq!(code(r), Code::IllegalInvisibleTime);
    let mut r = receive_req();
    r.invisible_duration = Some(duration_to_pb(Duration::from_secs(12 * 3600 + 1)));
    assert_eq!(code(r), Code::IllegalInvisibleTime);
    let mut r = receive_req();
    r.invisible_duration = Some(prost_types::Duration {
        seconds: -5,
        nanos: 0,
    });
    assert_eq!(code(r), Code::IllegalInvisibleTime);
    let mut r = receive_req();
    r.invisible_duration = None;
    assert_eq!(code(r), Code::IllegalInvisibleTime);
    let mut r = receive_req();
    r.batch_size = 0;
    assert_eq!(code(r), Code::BadRequest);
    let mut r = receive_req();
    r.filter_expression = Some(pb::FilterExpression {
        r#type: FilterType::Sql as i32,
        expression: "a > ".into(),
    });
    assert_eq!(code(r), Code::IllegalFilterExpression);
    let mut r = receive_req();
    r.filter_expression = Some(pb::FilterExpression {
        r#type: FilterType::Sql as i32,
        expression: "a > 1 AND TAGS IN ('x')".into(),
    });
    let sql = receive_params(&r, "", Duration::from_secs(30))
        .expect("a valid SQL92 filter")
        .filter;
    assert!(
        matches!(sql, vela_proto::MessageFilter::Sql(f) if f.expression() == "a > 1 AND TAGS IN ('x')")
    );
    let mut r = receive_req();
    r.filter_expression = Some(pb::FilterExpression {
        r#type: FilterType::Tag as i32,
        expression: "A||".into(),
    });
    assert_eq!(code(r), Code::IllegalFilterExpression);
    let mut r = receive_req();
    r.group = None;
    assert_eq!(code(r), Code::IllegalConsumerGroup);
    let mut r = receive_req();
    r.message_queue = None;
    assert_eq!(code(r), Code::IllegalTopic);

    // Push consumers: auto_renew without invisibility gets the server default.
    let mut r = receive_req();
    r.invisible_duration = None;
    r.auto_renew = true;
    assert_eq!(receive_params(&r, "", auto).expect("valid").invisible, auto);
}

#[test]
fn change_invisible_allows_short_nacks() {
    assert_eq!(
        changed_invisible(Some(&duration_to_pb(Duration::from_secs(1)))),
        Ok(Duration::from_secs(1))
    );
    assert_eq!(
        changed_invisible(Some(&duration_to_pb(Duration::ZERO))),
        Ok(Duration::ZERO)
    );
    assert!(changed_invisible(None).is_err());
    assert!(changed_invisible(Some(&duration_to_pb(Duration::from_secs(13 * 3600)))).is_err());
}

#[test]
fn polling_time_is_clamped_to_the_deadline() {
    let (min, max) = (Duration::from_secs(5), Duration::from_secs(20));
    let s = Duration::from_secs;
    // Rust 5.0.0: asks 40 s with a 40 s deadline -> 20 s.
    assert_eq!(poll_time(Some(s(40)), Some(s(39)), min, max), s(20));
    // Python: asks 5 s with an 8 s deadline -> 5 s.
    assert_eq!(poll_time(Some(s(5)), Some(s(7)), min, max), s(5));
    // Asking for less than the minimum gets the minimum.
    assert_eq!(poll_time(Some(s(1)), None, min, max), s(5));
    assert_eq!(poll_time(None, None, min, max), s(5));
    // The deadline wins when it is shorter, even shorter than the minimum (Python's 2 s
    // await_duration: a 5 s deadline).
    assert_eq!(poll_time(Some(s(20)), Some(s(12)), min, max), s(12));
    assert_eq!(poll_time(Some(s(2)), Some(s(4)), min, max), s(4));
    assert_eq!(
        poll_time(Some(s(20)), Some(Duration::ZERO), min, max),
        Duration::ZERO
    );
}

#[test]
fn times_round_trip() {
    for ms in [0, 1, 999, 1_700_000_000_123, -1, -1001] {
        assert_eq!(timestamp_to_ms(&ms_to_timestamp(ms)), ms);
    }
    assert_eq!(
        duration_from_pb(&prost_types::Duration {
            seconds: 1,
            nanos: -1
        }),
        None
    );
    assert_eq!(
        duration_from_pb(&duration_to_pb(Duration::from_millis(1500))),
        Some(Duration::from_millis(1500))
    );
    let extreme = prost_types::Timestamp {
        seconds: i64::MAX,
        nanos: i32::MAX,
    };
    assert_eq!(timestamp_to_ms(&extreme), i64::MAX);
}

#[test]
fn deliveries_carry_what_clients_require() {
    let record = produced_message(&wire(MessageType::Normal), "tenant", &limits(), NOW)
        .expect("valid")
        .record;
    let topic = record.topic.clone();
    let delivery = Delivery {
        topic: topic.clone(),
        queue_id: 2,
        offset: 41,
        store_timestamp_ms: NOW,
        attempt: 1,
        invisible: Duration::from_secs(15),
        ticket: ReceiptTicket {
            shard: 0,
            group: GroupName::new("billing").expect("valid"),
            topic,
            queue_id: 2,
            offset: 41,
            delivery_id: 7,
            visible_at_ms: NOW + 15_000,
        },
        message: record,
        transaction_id: None,
    };
    let m = delivered_message(delivery, "handle-1".into(), "127.0.0.1:8081");
    let topic = m.topic.expect("topic set");
    assert_eq!(
        (topic.resource_namespace.as_str(), topic.name.as_str()),
        ("tenant", "orders")
    );
    let p = m.system_properties.expect("system properties set");
    assert_eq!(p.receipt_handle.as_deref(), Some("handle-1"));
    assert_eq!(p.body_encoding, Encoding::Identity as i32);
    let digest = p.body_digest.expect("digest set");
    assert_eq!(digest.r#type, DigestType::Md5 as i32);
    assert_eq!(
        digest.checksum, "5D41402ABC4B2A76B9719D911017C592",
        "md5(hello), upper hex"
    );
    assert_eq!(p.delivery_attempt, Some(1));
    assert_eq!((p.queue_id, p.queue_offset), (2, Some(41)));
    assert_eq!(p.store_timestamp, Some(ms_to_timestamp(NOW)));
    assert_eq!(p.store_host, "127.0.0.1:8081");
    assert_eq!(p.message_type, MessageType::Normal as i32);
    assert_eq!(
        p.invisible_duration,
        Some(duration_to_pb(Duration::from_secs(15)))
    );
    assert!(p.dead_letter_queue.is_none());
    assert_eq!(m.user_properties.get("k").map(String::as_str), Some("v"));
    assert_eq!(m.body, Bytes::from_static(b"hello"));
}

#[test]
fn dead_letters_name_their_origin() {
    let record = produced_message(&wire(MessageType::Normal), "", &limits(), NOW)
        .expect("valid")
        .record;
    let group = GroupName::new("billing").expect("valid");
    let delivery = first_delivery(group.dead_letter_topic(), 0, group, record);
    let m = delivered_message(delivery, "h".into(), "host:1");
    assert_eq!(m.topic.map(|t| t.name), Some("%DLQ%billing".to_owned()));
    let dlq = m
        .system_properties
        .and_then(|p| p.dead_letter_queue)
        .expect("dlq info");
    assert_eq!(dlq.topic, "orders");
    assert_eq!(dlq.message_id, "01C6AF690D5CAD67206887C01800000001");
}

#[test]
fn topic_match_is_lenient_on_namespaces_only() {
    let dlq = TopicName::new("%DLQ%ns%g").expect("valid");
    let requested = TopicName::from_resource("ns", "%DLQ%ns%g").expect("valid");
    assert!(same_topic(&dlq, &requested, "%DLQ%ns%g"));
    let other = TopicName::new("other").expect("valid");
    assert!(!same_topic(&dlq, &other, "other"));
}

mod proptests {
    use super::super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn any_message() -> impl Strategy<Value = pb::Message> {
        (
            (
                ".{0,12}",
                ".{0,12}",
                proptest::option::of(".{0,6}"),
                proptest::collection::vec(".{0,4}", 0..3),
            ),
            (
                -2i32..8,
                proptest::option::of(".{0,70}"),
                proptest::option::of(any::<i64>()),
            ),
            (
                proptest::collection::hash_map(".{0,5}", ".{0,5}", 0..4),
                proptest::collection::vec(any::<u8>(), 0..80),
            ),
            (".{0,40}", any::<i32>()),
        )
            .prop_map(
                |((ns, name, tag, keys), (kind, group, delivery), (props, body), (id, queue))| {
                    pb::Message {
                        topic: Some(pb::Resource {
                            resource_namespace: ns,
                            name,
                        }),
                        user_properties: props,
                        system_properties: Some(pb::SystemProperties {
                            tag,
                            keys,
                            message_id: id,
                            message_type: kind,
                            message_group: group,
                            delivery_timestamp: delivery.map(|s| prost_types::Timestamp {
                                seconds: s,
                                nanos: 0,
                            }),
                            queue_id: queue,
                            ..Default::default()
                        }),
                        body: Bytes::from(body),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn produced_messages_never_panic_and_keep_the_limits(msg in any_message(), now in any::<i64>()) {
            let limits = MessageLimits { max_body_bytes: 64, ..MessageLimits::from(&ProxyConfig::default()) };
            if let Ok(p) = produced_message(&msg, "", &limits, now) {
                let r = p.record;
                prop_assert!(!r.body.is_empty() && r.body.len() <= 64);
                prop_assert!(r.tag.as_deref().is_none_or(|t| !t.contains('|') && !t.trim().is_empty()));
                prop_assert!(!r.message_id.trim().is_empty());
                prop_assert!(r.kind != MessageKind::Fifo || r.message_group.is_some());
                prop_assert!(r.message_group.as_deref().is_none_or(|g| g.chars().count() <= 64));
                prop_assert_eq!(r.delivery_timestamp_ms.is_some(), r.kind == MessageKind::Delay);
            }
        }

        #[test]
        fn poll_time_stays_in_bounds(req in proptest::option::of(0u64..100_000), left in proptest::option::of(0u64..100_000)) {
            let (min, max) = (Duration::from_secs(5), Duration::from_secs(20));
            let wait = poll_time(req.map(Duration::from_millis), left.map(Duration::from_millis), min, max);
            prop_assert!(wait <= max);
            prop_assert!(left.is_none_or(|l| wait <= Duration::from_millis(l)));
            // Below the minimum only when the deadline leaves less.
            prop_assert!(wait >= min || left.is_some_and(|l| wait == Duration::from_millis(l)));
        }

        #[test]
        fn grpc_timeouts_never_panic(s in ".{0,12}") {
            let _ = crate::headers::parse_grpc_timeout(&s);
        }
    }
}

#[test]
fn a_transaction_keeps_its_delivery_time_and_its_own_check_time() {
    let mut m = wire(MessageType::Transaction);
    props(&mut m).delivery_timestamp = Some(prost_types::Timestamp {
        seconds: NOW / 1000 + 60,
        nanos: 0,
    });
    props(&mut m).orphaned_transaction_recovery_duration = Some(prost_types::Duration {
        seconds: 12,
        nanos: 500_000_000,
    });
    let record = produced_message(&m, "", &limits(), NOW)
        .expect("valid")
        .record;
    assert_eq!(record.kind, MessageKind::Transaction);
    assert_eq!(record.delivery_timestamp_ms, Some(NOW + 60_000));
    assert!(
        record
            .properties
            .contains(&(CHECK_AFTER_PROPERTY.to_owned(), "12".to_owned())),
        "whole seconds: {:?}",
        record.properties
    );

    // The check time comes back as the field it came from, not as a user property.
    let check = TransactionCheck {
        topic: record.topic.clone(),
        transaction_id: "0-5-0".into(),
        message: record,
        store_timestamp_ms: NOW,
        check: 1,
    };
    let wire_back = checked_message(check, "127.0.0.1:8081");
    assert!(!wire_back.user_properties.contains_key(CHECK_AFTER_PROPERTY));
    assert_eq!(
        wire_back.user_properties.get("k").map(String::as_str),
        Some("v")
    );
    let p = wire_back.system_properties.expect("system properties");
    assert_eq!(
        p.orphaned_transaction_recovery_duration,
        Some(duration_to_pb(Duration::from_secs(12)))
    );
    assert_eq!(p.message_type, MessageType::Transaction as i32);
    assert!(p.body_digest.is_some(), "clients verify the body");
    assert_eq!(p.receipt_handle, None);

    // At most an hour; a negative one is refused; a delay too far out is refused as for delays.
    props(&mut m).orphaned_transaction_recovery_duration = Some(prost_types::Duration {
        seconds: 86_400,
        nanos: 0,
    });
    let record = produced_message(&m, "", &limits(), NOW)
        .expect("valid")
        .record;
    assert!(
        record
            .properties
            .contains(&(CHECK_AFTER_PROPERTY.to_owned(), "3600".to_owned()))
    );
    props(&mut m).orphaned_transaction_recovery_duration = Some(prost_types::Duration {
        seconds: -1,
        nanos: 0,
    });
    assert_eq!(code_of(&m), Code::BadRequest);
    props(&mut m).orphaned_transaction_recovery_duration = None;
    props(&mut m).delivery_timestamp = Some(prost_types::Timestamp {
        seconds: NOW / 1000 + 3 * 24 * 3600,
        nanos: 0,
    });
    assert_eq!(code_of(&m), Code::IllegalDeliveryTime);

    // A normal message ignores both.
    let mut normal = wire(MessageType::Normal);
    props(&mut normal).orphaned_transaction_recovery_duration = Some(prost_types::Duration {
        seconds: 12,
        nanos: 0,
    });
    let record = produced_message(&normal, "", &limits(), NOW)
        .expect("valid")
        .record;
    assert_eq!(record.properties, vec![("k".to_owned(), "v".to_owned())]);
}

#[test]
fn the_system_property_key_is_reserved() {
    let mut m = wire(MessageType::Transaction);
    m.user_properties = HashMap::from([(CHECK_AFTER_PROPERTY.to_owned(), "1".to_owned())]);
    assert_eq!(code_of(&m), Code::IllegalMessagePropertyKey);
}

#[test]
fn deliveries_carry_the_properties_apache_adds() {
    let mut fifo = wire(MessageType::Fifo);
    props(&mut fifo).message_group = Some("g1".into());
    let record = produced_message(&fifo, "", &limits(), NOW)
        .expect("valid")
        .record;
    let topic = record.topic.clone();
    let ticket = ReceiptTicket {
        shard: 0,
        group: GroupName::new("billing").expect("valid"),
        topic: topic.clone(),
        queue_id: 0,
        offset: 0,
        delivery_id: 1,
        visible_at_ms: NOW,
    };
    let delivery = |message: MessageRecord, transaction_id: Option<&str>| Delivery {
        topic: topic.clone(),
        queue_id: 0,
        offset: 0,
        store_timestamp_ms: NOW,
        attempt: 1,
        invisible: Duration::from_secs(15),
        ticket: ticket.clone(),
        message,
        transaction_id: transaction_id.map(str::to_owned),
    };
    let m = delivered_message(delivery(record, None), "h".into(), "host:1");
    assert_eq!(
        m.user_properties
            .get(SHARDING_KEY_PROPERTY)
            .map(String::as_str),
        Some("g1")
    );
    assert!(!m.user_properties.contains_key(TRANSACTION_ID_PROPERTY));

    let record = produced_message(&wire(MessageType::Transaction), "", &limits(), NOW)
        .expect("valid")
        .record;
    let m = delivered_message(delivery(record, Some("0-9-1")), "h".into(), "host:1");
    assert_eq!(
        m.user_properties
            .get(TRANSACTION_ID_PROPERTY)
            .map(String::as_str),
        Some("0-9-1")
    );
    assert!(!m.user_properties.contains_key(SHARDING_KEY_PROPERTY));
    assert_eq!(m.user_properties.get("k").map(String::as_str), Some("v"));
}

#[test]
fn a_priority_message_keeps_its_priority_to_delivery() {
    let mut m = wire(MessageType::Priority);
    props(&mut m).priority = Some(7);
    let out = produced_message(&m, "", &limits(), NOW).expect("valid");
    assert_eq!(out.record.kind, MessageKind::Priority);
    assert_eq!(out.priority, Some(7));
    assert!(
        out.record
            .properties
            .contains(&(PRIORITY_PROPERTY.to_owned(), "7".to_owned()))
    );
    // Another kind drops a priority, as Apache's broker does.
    let mut normal = wire(MessageType::Normal);
    props(&mut normal).priority = Some(7);
    let plain = produced_message(&normal, "", &limits(), NOW).expect("valid");
    assert_eq!(plain.priority, None);
    assert!(
        plain
            .record
            .properties
            .iter()
            .all(|(k, _)| k != PRIORITY_PROPERTY)
    );
    // Nobody sets the reserved property by hand.
    let mut forged = wire(MessageType::Normal);
    forged
        .user_properties
        .insert(PRIORITY_PROPERTY.to_owned(), "9".to_owned());
    assert_eq!(code_of(&forged), Code::IllegalMessagePropertyKey);

    let group = GroupName::new("g").expect("valid");
    let delivery = first_delivery(out.record.topic.clone(), 3, group, out.record);
    let delivered = delivered_message(delivery, "h".into(), "host:1");
    assert!(!delivered.user_properties.contains_key(PRIORITY_PROPERTY));
    let props = delivered.system_properties.expect("system properties");
    assert_eq!(props.priority, Some(7));
    assert_eq!(props.message_type, MessageType::Priority as i32);
}

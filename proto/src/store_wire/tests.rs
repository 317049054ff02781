#![allow(clippy::unwrap_used)]
//! Domain values survive the wire unchanged; invalid wire input is refused; every `StoreError`
//! comes back from a status as it went in.

use bytes::Bytes;

use super::*;

fn record() -> MessageRecord {
    MessageRecord {
        message_id: "01ABC".into(),
        topic: TopicName::new("orders").unwrap(),
        kind: MessageKind::Fifo,
        tag: Some("A".into()),
        keys: vec!["k1".into(), "k2".into()],
        message_group: Some("g".into()),
        delivery_timestamp_ms: Some(7),
        born_timestamp_ms: 5,
        born_host: "host".into(),
        trace_context: Some("trace".into()),
        properties: vec![("a".into(), "b".into())],
        body: Bytes::from_static(b"body"),
    }
}

fn ticket() -> ReceiptTicket {
    ReceiptTicket {
        shard: 3,
        group: GroupName::new("billing").unwrap(),
        topic: TopicName::new("orders").unwrap(),
        queue_id: 2,
        offset: 9,
        delivery_id: 11,
        visible_at_ms: 13,
    }
}

#[test]
fn values_survive_the_wire() {
    let m = record();
    assert_eq!(message_from_wire(message_to_wire(&m)).unwrap(), m);
    let t = ticket();
    assert_eq!(ticket_from_wire(Some(ticket_to_wire(&t))).unwrap(), t);
    let d = Delivery {
        topic: m.topic.clone(),
        queue_id: 2,
        offset: 9,
        store_timestamp_ms: 4,
        attempt: 2,
        invisible: Duration::from_secs(30),
        ticket: t,
        message: m.clone(),
        transaction_id: Some("0-12-3".into()),
    };
    let back = delivery_from_wire(delivery_to_wire(&d)).unwrap();
    assert_eq!(
        (
            back.offset,
            back.attempt,
            back.invisible,
            back.message,
            back.ticket,
            back.transaction_id
        ),
        (
            d.offset,
            d.attempt,
            d.invisible,
            d.message,
            d.ticket,
            d.transaction_id
        )
    );
    for filter in [
        MessageFilter::Tag(TagFilter::All),
        MessageFilter::Tag(TagFilter::Tags(vec!["A".into(), "B".into()])),
        MessageFilter::Sql(crate::sql::SqlFilter::parse("a > 1 AND TAGS = 'x'").unwrap()),
    ] {
        for queues in [
            QueueSelector::All,
            QueueSelector::HighestFirst,
            QueueSelector::One(4),
        ] {
            let p = PopRequest {
                group: GroupName::new("billing").unwrap(),
                topic: TopicName::new("orders").unwrap(),
                queues: queues.clone(),
                max_messages: 32,
                invisible: Duration::from_millis(1500),
                filter: filter.clone(),
                fifo: true,
                max_attempts: 16,
                wait: Duration::from_secs(20),
                group_created_ms: Some(7),
                group_start: Default::default(),
                shards: vec![],
                client_id: None,
            };
            let back = pop_from_wire(pop_to_wire(&p)).unwrap();
            assert_eq!(
                (
                    back.queues,
                    back.filter,
                    back.invisible,
                    back.wait,
                    back.max_messages,
                    back.group_created_ms
                ),
                (
                    p.queues,
                    p.filter,
                    p.invisible,
                    p.wait,
                    p.max_messages,
                    p.group_created_ms
                )
            );
        }
    }
}

#[test]
fn invalid_wire_input_is_refused() {
    let mut m = message_to_wire(&record());
    m.kind = 99;
    assert!(message_from_wire(m).is_err());
    let mut m = message_to_wire(&record());
    m.topic = "bad topic!".into();
    assert!(message_from_wire(m).is_err());
    assert!(ticket_from_wire(None).is_err());
    let mut p = pb::PopRequest {
        group: "billing".into(),
        topic: "orders".into(),
        max_messages: 0,
        ..Default::default()
    };
    assert!(pop_from_wire(p.clone()).is_err(), "zero messages");
    p.max_messages = 33;
    assert!(pop_from_wire(p.clone()).is_err(), "too many");
    p.max_messages = 1;
    p.tags = vec![String::new()];
    assert!(pop_from_wire(p).is_err(), "empty tag");
    assert!(resolution_from_wire(0).is_err());
    let mut a = append_to_wire(&append_request(None));
    a.client_id = "a\u{7}b".into();
    assert!(
        append_from_wire(a).is_err(),
        "control character in a client id"
    );
}

fn append_request(client_id: Option<&str>) -> AppendRequest {
    AppendRequest {
        topic: TopicName::new("orders").unwrap(),
        queue_id: 1,
        shard: 2,
        messages: vec![record()],
        client_id: client_id.map(|c| crate::ClientId::new(c).unwrap()),
    }
}

#[test]
fn an_append_keeps_its_client_id_across_the_wire() {
    for client in [None, Some("host@42#7")] {
        let back = append_from_wire(append_to_wire(&append_request(client))).unwrap();
        assert_eq!(back.client_id.as_ref().map(|c| c.as_str()), client);
        assert_eq!((back.shard, back.messages), (2, vec![record()]));
    }
}

#[test]
fn errors_come_back_as_they_went() {
    let errors = [
        StoreError::StaleReceipt("3/orders/2/9@11".into()),
        StoreError::TransactionNotFound("0-17".into()),
        StoreError::QueueNotFound {
            topic: TopicName::new("orders").unwrap(),
            queue_id: 5,
        },
        StoreError::NotLeader {
            shard: 4,
            leader: Some(2),
        },
        StoreError::NotLeader {
            shard: 4,
            leader: None,
        },
        StoreError::Unavailable("shutting down".into()),
        StoreError::Invalid("bad".into()),
        StoreError::Internal("bug".into()),
    ];
    for err in errors {
        assert_eq!(status_to_error(&error_to_status(&err)), err);
    }
    // A status that never came from a store node.
    assert!(matches!(
        status_to_error(&Status::unavailable("connection refused")),
        StoreError::Unavailable(_)
    ));
    assert!(matches!(
        status_to_error(&Status::permission_denied("no")),
        StoreError::Internal(_)
    ));
}

#[test]
fn a_transaction_check_survives_the_wire_and_needs_its_message_and_id() {
    let check = TransactionCheck {
        topic: TopicName::new("orders").unwrap(),
        transaction_id: "2-40-1".into(),
        message: MessageRecord {
            kind: MessageKind::Transaction,
            message_group: None,
            ..record()
        },
        store_timestamp_ms: 1_700_000_000_000,
        check: 3,
    };
    assert_eq!(check_from_wire(check_to_wire(&check)).unwrap(), check);
    let mut no_message = check_to_wire(&check);
    no_message.message = None;
    assert!(check_from_wire(no_message).is_err());
    let mut no_id = check_to_wire(&check);
    no_id.transaction_id.clear();
    assert!(check_from_wire(no_id).is_err());
    let mut bad_topic = check_to_wire(&check);
    bad_topic.topic = String::new();
    assert!(check_from_wire(bad_topic).is_err());
}

#[test]
fn a_receive_with_a_bad_sql_filter_is_refused_at_the_wire() {
    let mut req = pb::PopRequest {
        group: "g".into(),
        topic: "t".into(),
        max_messages: 1,
        sql: "a >".into(),
        ..Default::default()
    };
    assert!(pop_from_wire(req.clone()).is_err());
    req.sql = "a > 1".into();
    req.tags = vec!["A".into()];
    assert!(pop_from_wire(req.clone()).is_err());
    req.tags.clear();
    assert!(matches!(
        pop_from_wire(req).unwrap().filter,
        MessageFilter::Sql(_)
    ));
}

#[test]
fn reset_targets_round_trip() {
    for to in [
        OffsetTarget::Earliest,
        OffsetTarget::Latest,
        OffsetTarget::AtTime(-5),
        OffsetTarget::Offset(42),
    ] {
        let (kind, at_ms, offset) = offset_target_to_wire(to);
        assert_eq!(offset_target_from_wire(kind, at_ms, offset).unwrap(), to);
    }
    assert!(offset_target_from_wire(0, 0, 0).is_err());
}

//! SendMessage, EndTransaction and ForwardMessageToDeadLetterQueue: a batch is one store append
//! with its entries in order; a committed transaction is delivered and can be dead-lettered.

use std::sync::atomic::Ordering;

use super::*;

#[tokio::test]
async fn a_batch_is_one_append_with_entries_in_order() {
    let h = Harness::start(test_config()).await;
    h.topic("orders", TopicType::Normal, 4).await;
    let mut client = h.client().await;
    let messages = vec![
        message("orders", "A", b"1"),
        message("orders", "B", b"2"),
        message("orders", "C", b"3"),
    ];
    let sent = client
        .send_message(rust_req(pb::SendMessageRequest { messages }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&sent.status), Code::Ok as i32);
    assert_eq!(
        sent.entries
            .iter()
            .map(|e| e.message_id.as_str())
            .collect::<Vec<_>>(),
        vec!["A", "B", "C"]
    );
    assert_eq!(
        sent.entries.iter().map(|e| e.offset).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(h.store.append_calls.load(Ordering::Relaxed), 1);

    // One bad message among good ones: MULTIPLE_RESULTS, good ones still stored.
    let messages = vec![
        message("orders", "D", b"4"),
        message("orders", "E", b""),
        message("orders", "F", b"6"),
    ];
    let mixed = client
        .send_message(req(pb::SendMessageRequest { messages }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&mixed.status), Code::MultipleResults as i32);
    let codes: Vec<i32> = mixed.entries.iter().map(|e| code(&e.status)).collect();
    assert_eq!(
        codes,
        vec![
            Code::Ok as i32,
            Code::MessageBodyEmpty as i32,
            Code::Ok as i32
        ]
    );
    assert_eq!(h.store.append_calls.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn transactions_and_dead_letters() {
    let h = Harness::start(test_config()).await;
    h.topic("txn", TopicType::Transaction, 1).await;
    h.topic("txn-plain", TopicType::Normal, 1).await;
    h.group("billing").await;
    let mut client = h.client().await;
    let mut half = message("txn", "T1", b"pay");
    if let Some(p) = half.system_properties.as_mut() {
        p.message_type = MessageType::Transaction as i32;
    }
    let sent = send_one(&mut client, half).await;
    assert_eq!(code(&sent.status), Code::Ok as i32);
    let txn = sent.entries[0].transaction_id.clone();
    assert!(!txn.is_empty());
    let txn_sent = txn.clone();
    let plain = send_one(&mut client, message("txn-plain", "P1", b"x")).await;
    assert_eq!(
        plain.entries[0].transaction_id, "P1",
        "a send that is not a transaction answers its message id, as Apache does"
    );

    let end = |transaction_id: String| pb::EndTransactionRequest {
        topic: resource("txn"),
        message_id: "T1".into(),
        transaction_id,
        resolution: pb::TransactionResolution::Commit as i32,
        source: pb::TransactionSource::SourceClient as i32,
        trace_context: String::new(),
    };
    let unknown = client
        .end_transaction(req(end("nope".into())))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&unknown.status), Code::InvalidTransactionId as i32);
    let committed = client
        .end_transaction(req(end(txn)))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&committed.status), Code::Ok as i32);

    let items = receive_all(&mut client, req(receive_request("txn", "billing", 15))).await;
    assert_eq!(
        items.len(),
        3,
        "the committed message is delivered: {items:?}"
    );
    let Content::Message(delivered) = &items[1] else {
        panic!("a message: {items:?}")
    };
    assert_eq!(
        delivered.user_properties.get("__transactionId__"),
        Some(&txn_sent),
        "delivered with the transaction id its send answered"
    );
    let forwarded = client
        .forward_message_to_dead_letter_queue(req(pb::ForwardMessageToDeadLetterQueueRequest {
            group: resource("billing"),
            topic: resource("txn"),
            receipt_handle: handle_of(&items[1]),
            message_id: "T1".into(),
            delivery_attempt: 1,
            max_delivery_attempts: 1,
            lite_topic: None,
        }))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&forwarded.status), Code::Ok as i32);
    assert_eq!(h.store.dead_lettered(), 1);
}

#[tokio::test]
async fn a_delay_message_answers_a_recall_handle_that_withdraws_it() {
    let h = Harness::start(test_config()).await;
    h.topic("later", TopicType::Delay, 1).await;
    h.topic("other", TopicType::Delay, 1).await;
    let mut client = h.client().await;
    let mut delayed = message("later", "D1", b"x");
    if let Some(p) = delayed.system_properties.as_mut() {
        p.message_type = MessageType::Delay as i32;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970");
        p.delivery_timestamp = Some(prost_types::Timestamp {
            seconds: i64::try_from(now.as_secs()).expect("fits") + 60,
            nanos: 0,
        });
    }
    let sent = send_one(&mut client, delayed).await;
    assert_eq!(code(&sent.status), Code::Ok as i32);
    let handle = sent.entries[0].recall_handle.clone();
    assert!(!handle.is_empty(), "a parked delay message can be recalled");
    let plain = send_one(&mut client, message("other", "P1", b"x")).await;
    assert_eq!(plain.entries[0].recall_handle, "", "nothing to recall");

    let recall = |topic: &str, recall_handle: &str| {
        req(pb::RecallMessageRequest {
            topic: resource(topic),
            recall_handle: recall_handle.into(),
        })
    };
    let garbage = client
        .recall_message(recall("later", "garbage!"))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&garbage.status), Code::BadRequest as i32);
    let wrong_topic = client
        .recall_message(recall("other", &handle))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&wrong_topic.status), Code::NotFound as i32);
    let recalled = client
        .recall_message(recall("later", &handle))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&recalled.status), Code::Ok as i32);
    assert_eq!(recalled.message_id, "D1");
    let again = client
        .recall_message(recall("later", &handle))
        .await
        .expect("call")
        .into_inner();
    assert_eq!(code(&again.status), Code::NotFound as i32);
    let message = again.status.as_ref().map_or("", |s| s.message.as_str());
    assert!(message.contains("D1"), "names the message: {message}");
}

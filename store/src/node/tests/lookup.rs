//! Message lookup and track (ADR 0028): found by id and by key, with where each message is and
//! what happened to it, before and after a restart (then from the index file).

use vela_proto::lookup::{FoundMessage, LookupBy, LookupRequest};

use super::*;

fn by_id(id: &str) -> LookupRequest {
    LookupRequest {
        by: LookupBy::MessageId(id.into()),
        topic: None,
        shards: Vec::new(),
        limit: 16,
    }
}

fn by_key(key: &str, topic: TopicName) -> LookupRequest {
    LookupRequest {
        by: LookupBy::Key(key.into()),
        topic: Some(topic),
        shards: Vec::new(),
        limit: 16,
    }
}

/// `(kind, group or topic)` of each track event.
fn track(found: &FoundMessage) -> Vec<(String, String)> {
    found
        .track
        .iter()
        .map(|e| {
            (
                e.kind.clone(),
                e.group.clone().or(e.topic.clone()).unwrap_or_default(),
            )
        })
        .collect()
}

async fn only(store: &Store, req: LookupRequest) -> FoundMessage {
    let mut found = store.lookup(&req).await.expect("looks up");
    assert_eq!(found.len(), 1, "{req:?} found {found:?}");
    found.remove(0)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn messages_are_found_by_id_and_key_with_their_track_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shared: SharedClock = Arc::new(SystemClock);
    let store = Store::open(config(dir.path()), shared.clone())
        .await
        .expect("opens");
    let keyed = |body: &str, keys: &[&str]| MessageRecord {
        keys: keys.iter().map(|k| k.to_string()).collect(),
        ..message(body)
    };
    let delayed = MessageRecord {
        kind: MessageKind::Delay,
        delivery_timestamp_ms: Some(shared.now_ms() + 300),
        ..keyed("later", &["order-2"])
    };
    let half = MessageRecord {
        kind: MessageKind::Transaction,
        ..keyed("tx", &["order-3"])
    };
    let sent = store
        .append(append(vec![
            keyed("acked", &["order-1", "shared"]),
            keyed("nacked", &["shared"]),
            keyed("dead", &[]),
            delayed,
            half,
        ]))
        .await
        .expect("appends");
    let transaction = sent[4].transaction_id.clone().expect("half message");

    let first_receive = PopRequest {
        client_id: Some(vela_proto::ClientId::new("app-1@host").expect("valid")),
        ..pop(32, Duration::ZERO)
    };
    let got = store.pop(first_receive).await.expect("pops");
    assert_eq!(bodies(&got), vec!["acked", "nacked", "dead"]);
    store.ack(&got[0].ticket).await.expect("acks");
    store
        .change_invisible(&got[1].ticket, Duration::from_secs(60))
        .await
        .expect("changes");
    store
        .dead_letter(&got[2].ticket)
        .await
        .expect("dead-letters");
    store
        .end_transaction(&topic(), &transaction, TransactionResolution::Commit)
        .await
        .expect("commits");
    let committed = store.pop(pop(32, Duration::ZERO)).await.expect("pops");
    assert_eq!(bodies(&committed), vec!["tx"]);
    let released = store
        .pop(pop(32, Duration::from_secs(5)))
        .await
        .expect("pops");
    assert_eq!(bodies(&released), vec!["later"]);

    let check = |store: Arc<Store>| async move {
        let acked = only(&store, by_id("id-acked")).await;
        assert_eq!(acked.message.body, "acked");
        assert_eq!(acked.positions.len(), 1);
        assert_eq!(
            (acked.positions[0].queue_id, acked.positions[0].offset),
            (0, 0)
        );
        assert_eq!(
            track(&acked),
            pairs(&[
                ("stored", "orders"),
                ("delivered", "billing"),
                ("acked", "billing")
            ])
        );
        assert_eq!(acked.track[1].attempt, Some(1));
        assert_eq!(acked.track[1].client.as_deref(), Some("app-1@host"));
        assert_eq!(acked.track[2].client, None, "an ack names no client");
        let nacked = only(&store, by_id("id-nacked")).await;
        assert_eq!(
            track(&nacked),
            pairs(&[
                ("stored", "orders"),
                ("delivered", "billing"),
                ("invisibility_changed", "billing"),
            ])
        );
        let dead = only(&store, by_id("id-dead")).await;
        assert_eq!(
            track(&dead),
            pairs(&[
                ("stored", "orders"),
                ("delivered", "billing"),
                ("dead_lettered", "billing"),
                ("stored", "%DLQ%billing"),
            ])
        );
        assert_eq!(
            dead.positions.len(),
            2,
            "its queue and the dead-letter topic"
        );
        let later = only(&store, by_key("order-2", topic())).await;
        assert_eq!(
            track(&later),
            pairs(&[
                ("delayed", ""),
                ("stored", "orders"),
                ("delivered", "billing")
            ])
        );
        let tx = only(&store, by_key("order-3", topic())).await;
        assert_eq!(
            track(&tx),
            pairs(&[
                ("prepared", ""),
                ("committed", ""),
                ("stored", "orders"),
                ("delivered", "billing"),
            ])
        );
        // A key several messages share finds each, oldest first; an id or key nobody sent,
        // or another topic, finds nothing.
        let shared_key = store
            .lookup(&by_key("shared", topic()))
            .await
            .expect("finds");
        assert_eq!(
            shared_key
                .iter()
                .map(|f| f.message.message_id.as_str())
                .collect::<Vec<_>>(),
            ["id-acked", "id-nacked"]
        );
        let one = LookupRequest {
            limit: 1,
            ..by_key("shared", topic())
        };
        assert_eq!(store.lookup(&one).await.expect("finds").len(), 1);
        assert!(
            store
                .lookup(&by_id("id-nobody"))
                .await
                .expect("looks")
                .is_empty()
        );
        let elsewhere = by_key("order-1", TopicName::new("other").expect("name"));
        assert!(store.lookup(&elsewhere).await.expect("looks").is_empty());
        store
    };
    let store = check(store).await;
    // After a snapshot and a restart the rows come from the index file.
    store.shards()[&0]
        .shard
        .snapshot_now()
        .await
        .expect("snapshot");
    store.shutdown().await.expect("shuts down");
    let store = Store::open(config(dir.path()), shared.clone())
        .await
        .expect("reopens");
    let store = check(store).await;
    store.shutdown().await.expect("shuts down");
}

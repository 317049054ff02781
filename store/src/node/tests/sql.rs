//! SQL92 filters on a store with real files: the leader reads and evaluates messages and the
//! receive carries the matches (`PopPicked`), so only matching messages are delivered, the
//! others are passed over for that group only, a deep non-matching backlog costs no log
//! entries, and the outcome survives a restart (replicas and replays never evaluate).

use vela_proto::domain::{MessageFilter, SqlFilter};

use super::*;

fn with_props(body: &str, tag: &str, props: &[(&str, String)]) -> MessageRecord {
    MessageRecord {
        tag: Some(tag.to_owned()),
        properties: props
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        ..message(body)
    }
}

fn sql_pop(expression: &str, wait: Duration) -> PopRequest {
    PopRequest {
        filter: MessageFilter::Sql(SqlFilter::parse(expression).expect("valid")),
        ..pop(32, wait)
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn an_sql_filter_delivers_exactly_the_matching_messages_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_clock, shared) = manual_clock();
    let store = Store::open(config(dir.path()), shared.clone())
        .await
        .expect("opens");
    let messages: Vec<MessageRecord> = (0..20)
        .map(|i| {
            let region = if i % 2 == 0 { "eu" } else { "us" };
            with_props(
                &format!("m{i:02}"),
                &format!("T{}", i % 3),
                &[("a", i.to_string()), ("region", region.to_owned())],
            )
        })
        .collect();
    store.append(append(messages)).await.expect("appends");

    let expression = "a >= 5 AND region = 'eu' AND TAGS <> 'T0'";
    let want: Vec<String> = (5..20)
        .filter(|i| i % 2 == 0 && i % 3 != 0)
        .map(|i| format!("m{i:02}"))
        .collect();
    let got = store
        .pop(sql_pop(expression, Duration::ZERO))
        .await
        .expect("pops");
    assert_eq!(sorted(bodies(&got)), want);
    assert!(
        store
            .pop(sql_pop(expression, Duration::ZERO))
            .await
            .expect("pops")
            .is_empty(),
        "the matches are in flight and the rest does not match"
    );
    // Another group's subscription is its own: it sees every message.
    let other = PopRequest {
        group: GroupName::new("audit").expect("valid"),
        ..pop(32, Duration::ZERO)
    };
    assert_eq!(store.pop(other.clone()).await.expect("pops").len(), 20);
    store.shutdown().await.expect("shuts down");

    // The receives replay as they were applied: nothing is delivered twice after a restart.
    let store = Store::open(config(dir.path()), shared)
        .await
        .expect("reopens");
    assert!(
        store
            .pop(sql_pop(expression, Duration::ZERO))
            .await
            .expect("pops")
            .is_empty()
    );
    assert!(store.pop(other).await.expect("pops").is_empty());
    // New messages are evaluated from where the group's search stands.
    store
        .append(append(vec![
            with_props(
                "late-match",
                "T1",
                &[("a", "7".into()), ("region", "eu".into())],
            ),
            with_props(
                "late-miss",
                "T1",
                &[("a", "x".into()), ("region", "eu".into())],
            ),
        ]))
        .await
        .expect("appends");
    let got = store
        .pop(sql_pop(expression, Duration::ZERO))
        .await
        .expect("pops");
    assert_eq!(bodies(&got), vec!["late-match".to_string()]);
    store.shutdown().await.expect("shuts down");
}

/// A selective SQL92 filter over a backlog many evaluation windows deep: one waiting receive
/// finds the match, and only the receive that delivers writes to the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selective_sql_filter_finds_its_match_deep_in_a_backlog_without_empty_receives() {
    let (_dir, _clock, _shared, store) = open_on_manual_clock().await;
    for batch in 0..5 {
        let misses = (0..1_000)
            .map(|i| {
                with_props(
                    &format!("miss-{batch}-{i}"),
                    "A",
                    &[("kind", "noise".into())],
                )
            })
            .collect();
        store.append(append(misses)).await.expect("appends");
    }
    store
        .append(append(vec![with_props(
            "hit",
            "A",
            &[("kind", "signal".into())],
        )]))
        .await
        .expect("appends");
    let shard = store.shards()[&0].shard.clone();
    let entries_before = shard.shared.last_applied_index();
    let got = store
        .pop(sql_pop("kind = 'signal'", Duration::from_secs(20)))
        .await
        .expect("pops");
    assert_eq!(bodies(&got), vec!["hit".to_string()]);
    assert_eq!(
        shard.shared.last_applied_index(),
        entries_before + 1,
        "one entry for the receive that delivered, none for the search"
    );
    let entries_before = shard.shared.last_applied_index();
    assert!(
        store
            .pop(sql_pop("kind = 'other'", Duration::ZERO))
            .await
            .expect("pops")
            .is_empty()
    );
    assert_eq!(
        shard.shared.last_applied_index(),
        entries_before,
        "a receive that matches nothing writes nothing"
    );
    store.shutdown().await.expect("shuts down");
}

/// A pull with an SQL92 filter returns the matching messages of the window it looked at and
/// goes on past the rest; nothing of any group changes.
#[tokio::test]
async fn a_pull_with_an_sql_filter_returns_what_matches() {
    let (_dir, _clock, _shared, store) = open_on_manual_clock().await;
    let messages: Vec<MessageRecord> = (0..10)
        .map(|i| with_props(&format!("m{i}"), "T", &[("a", i.to_string())]))
        .collect();
    store.append(append(messages)).await.expect("appends");
    let pull =
        |offset: u64, max_messages: u32, expression: &str| vela_proto::store_api::PullRequest {
            topic: topic(),
            queue_id: 0,
            shard: 0,
            offset,
            max_messages,
            filter: MessageFilter::Sql(SqlFilter::parse(expression).expect("valid")),
            wait: Duration::ZERO,
        };
    let got = store.pull(pull(0, 32, "a >= 7")).await.expect("pulls");
    let bodies: Vec<(u64, String)> = got
        .messages
        .iter()
        .map(|m| {
            (
                m.offset,
                String::from_utf8_lossy(&m.message.body).into_owned(),
            )
        })
        .collect();
    assert_eq!(
        bodies,
        [
            (7, "m7".to_owned()),
            (8, "m8".to_owned()),
            (9, "m9".to_owned())
        ]
    );
    assert_eq!(
        (got.next_offset, got.min_offset, got.max_offset),
        (10, 0, 10)
    );
    // A window of two with no match: nothing, but the next pull goes on past it.
    let none = store.pull(pull(0, 2, "a >= 7")).await.expect("pulls");
    assert!(none.messages.is_empty());
    assert_eq!(none.next_offset, 2);
    assert!(matches!(
        store.pull(pull(11, 2, "a >= 7")).await,
        Err(StoreError::Invalid(_))
    ));
    // The group never received: it still gets everything.
    assert_eq!(
        store
            .pop(pop(32, Duration::ZERO))
            .await
            .expect("pops")
            .len(),
        10
    );
}

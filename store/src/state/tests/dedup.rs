//! `ClientAppends` entries (apply version 5): a message a client already sent within the
//! window is answered with its first outcome and not appended again; anything else applies
//! exactly like an `AppendBatch`. From apply version 6 the window keeps its own clock, which a
//! leader's clock jumping ahead moves on by at most `MAX_STEP_MS`.

use super::*;
use crate::command::{ClientAppend, QueueAppend};
use crate::state::dedup::{MAX_STEP_MS, WINDOW_MS};

fn named(id: &str) -> MessageRecord {
    MessageRecord {
        message_id: id.into(),
        ..message(None, None)
    }
}

fn from(client: Option<&str>, queue_id: u32, messages: Vec<MessageRecord>) -> ClientAppend {
    ClientAppend {
        client_id: client.map(str::to_owned),
        append: QueueAppend {
            topic: topic("orders"),
            queue_id,
            messages,
        },
    }
}

/// A state applying this build's semantics (sends are deduplicated from version 5).
fn harness() -> Harness {
    at_version(crate::state::APPLY_VERSION)
}

fn at_version(version: u32) -> Harness {
    let mut h = Harness::new();
    h.apply(StoreCommand::SetApplyVersion { version });
    h
}

impl Harness {
    fn sends(&mut self, appends: Vec<ClientAppend>) -> Vec<Vec<AppendOutcome>> {
        let command = StoreCommand::ClientAppends {
            now_ms: self.now_ms,
            appends,
        };
        match self.apply(command) {
            CommandResponse::AppendedBatch(outcomes) => outcomes,
            other => panic!("unexpected response {other:?}"),
        }
    }

    fn send(&mut self, client: Option<&str>, ids: &[&str]) -> Vec<Option<u64>> {
        let messages = ids.iter().map(|id| named(id)).collect();
        self.sends(vec![from(client, 0, messages)])
            .remove(0)
            .into_iter()
            .map(|o| o.offset)
            .collect()
    }

    /// Lets `ms` pass as a busy shard sees it: a command at least every `MAX_STEP_MS` (one
    /// that changes nothing else).
    fn pass(&mut self, ms: i64) {
        let mut left = ms;
        while left > 0 {
            let step = left.min(MAX_STEP_MS);
            self.advance(step);
            left -= step;
            self.apply(StoreCommand::Release {
                due: Vec::new(),
                now_ms: self.now_ms,
            });
        }
    }

    fn queue_len(&self) -> u64 {
        self.state
            .queue_stats(&topic("orders"), None)
            .iter()
            .map(|q| q.max_offset - q.min_offset)
            .sum()
    }
}

#[test]
fn a_resent_message_gets_its_first_offset_and_is_not_appended_again() {
    let mut h = harness();
    assert_eq!(h.send(Some("c@1"), &["a", "b"]), vec![Some(0), Some(1)]);
    assert_eq!(h.send(Some("c@1"), &["b", "c"]), vec![Some(1), Some(2)]);
    assert_eq!(h.queue_len(), 3);
    assert_eq!(h.state.dedup().len(), 3);
    let delivered: Vec<String> = h.pop().iter().map(|m| m.offset.to_string()).collect();
    assert_eq!(delivered, ["0", "1", "2"], "b is delivered once");
}

#[test]
fn the_same_message_id_from_another_client_or_no_client_is_a_new_message() {
    let mut h = harness();
    assert_eq!(h.send(Some("c@1"), &["m"]), vec![Some(0)]);
    assert_eq!(h.send(Some("c@2"), &["m"]), vec![Some(1)]);
    assert_eq!(h.send(None, &["m"]), vec![Some(2)]);
    assert_eq!(h.send(None, &["m"]), vec![Some(3)]);
    assert_eq!(h.queue_len(), 4);
}

#[test]
fn duplicates_inside_one_entry_are_caught_across_sub_appends() {
    let mut h = harness();
    let outcomes = h.sends(vec![
        from(Some("c@1"), 0, vec![named("a"), named("a")]),
        from(Some("c@1"), 1, vec![named("a")]),
    ]);
    let offsets: Vec<Vec<Option<u64>>> = outcomes
        .iter()
        .map(|o| o.iter().map(|o| o.offset).collect())
        .collect();
    // The resend to queue 1 answers where the first landed (queue 0, offset 0).
    assert_eq!(offsets, vec![vec![Some(0), Some(0)], vec![Some(0)]]);
    assert_eq!(h.queue_len(), 1);
}

#[test]
fn a_resent_transaction_message_names_the_same_transaction() {
    let mut h = harness();
    let half = || MessageRecord {
        kind: MessageKind::Transaction,
        ..named("t")
    };
    let first = h.sends(vec![from(Some("c@1"), 0, vec![half()])]).remove(0);
    let again = h.sends(vec![from(Some("c@1"), 0, vec![half()])]).remove(0);
    assert!(first[0].transaction_id.is_some());
    assert_eq!(first, again);
    assert_eq!(h.state.half_messages.len(), 1);
}

#[test]
fn a_resent_delay_message_gets_the_same_recall_handle_from_version_14() {
    for (version, again_has_handle) in [(13, false), (14, true)] {
        let mut h = at_version(version);
        let delayed = |id: &str| MessageRecord {
            kind: MessageKind::Delay,
            delivery_timestamp_ms: Some(h.now_ms + 60_000),
            ..named(id)
        };
        let (a, b) = (delayed("d1"), delayed("d2"));
        let first = h.sends(vec![from(Some("c@1"), 0, vec![a.clone(), b.clone()])]);
        let again = h.sends(vec![from(Some("c@1"), 0, vec![b, a])]);
        assert!(first[0].iter().all(|o| o.recall_handle.is_some()));
        if again_has_handle {
            // Each resend names its own first record, whatever its place in the batch.
            assert_eq!(again[0][1], first[0][0], "version {version}");
            assert_eq!(again[0][0], first[0][1], "version {version}");
        } else {
            assert!(again[0].iter().all(|o| o.recall_handle.is_none()));
        }
        assert_eq!(h.state.timers.len(), 2, "stored once each");
        // The handle of the resend recalls the message.
        let handle = again[0][1]
            .recall_handle
            .clone()
            .or(first[0][0].recall_handle.clone())
            .expect("a handle");
        let (_, timer) = crate::state::parse_recall_handle(&handle).expect("parses");
        let recalled = h.apply(StoreCommand::Recall {
            topic: topic("orders"),
            timer,
        });
        assert!(
            matches!(recalled, CommandResponse::Recalled(Ok(_))),
            "{recalled:?}"
        );
    }
}

#[test]
fn the_window_forgets_after_its_time() {
    let mut h = harness();
    assert_eq!(h.send(Some("c@1"), &["m"]), vec![Some(0)]);
    h.pass(WINDOW_MS);
    assert_eq!(h.send(Some("c@1"), &["m"]), vec![Some(0)], "still inside");
    h.pass(1);
    assert_eq!(
        h.send(Some("c@1"), &["m"]),
        vec![Some(1)],
        "a new message now"
    );
}

#[test]
fn without_duplicates_client_appends_apply_like_an_append_batch() {
    let mut with_clients = harness();
    let mut batched = harness();
    let parts = || {
        vec![
            (Some("c@1"), 0, vec![named("a"), named("b")]),
            (None, 1, vec![named("c")]),
            (Some("c@2"), 0, vec![named("d")]),
        ]
    };
    let a = with_clients.sends(parts().into_iter().map(|(c, q, m)| from(c, q, m)).collect());
    let b = batched.apply(StoreCommand::AppendBatch {
        now_ms: batched.now_ms,
        appends: parts()
            .into_iter()
            .map(|(_, q, m)| from(None, q, m).append)
            .collect(),
    });
    assert_eq!(CommandResponse::AppendedBatch(a), b);
    assert_eq!(with_clients.pop(), batched.pop());
}

#[test]
fn the_window_survives_a_snapshot() {
    let mut h = harness();
    h.send(Some("c@1"), &["a"]);
    let saved = postcard::to_stdvec(h.state.dedup()).expect("encodes");
    let mut restored: ShardState =
        postcard::from_bytes(&postcard::to_stdvec(&h.state).expect("encodes")).expect("decodes");
    restored.set_dedup(postcard::from_bytes(&saved).expect("decodes"));
    restored.set_dedup_clock_ms(h.state.dedup_clock_ms());
    restored.take_entries_from(&mut h.state);
    h.state = restored;
    assert_eq!(h.send(Some("c@1"), &["a"]), vec![Some(0)]);
    assert_eq!(h.queue_len(), 1);
}

#[test]
fn before_version_5_client_appends_apply_without_deduplication() {
    let mut h = Harness::new();
    assert_eq!(h.send(Some("c@1"), &["m"]), vec![Some(0)]);
    assert_eq!(h.send(Some("c@1"), &["m"]), vec![Some(1)]);
    assert!(h.state.dedup().is_empty());
}

#[test]
fn a_leader_clock_jumping_an_hour_ahead_shortens_the_window_by_one_step_at_most() {
    let mut h = harness();
    assert_eq!(h.send(Some("c@1"), &["m"]), vec![Some(0)]);
    // The next leader's clock is an hour ahead; the client resends (its first answer was lost).
    h.advance(3_600_000);
    assert_eq!(
        h.send(Some("c@1"), &["m"]),
        vec![Some(0)],
        "a resend across the jump is caught"
    );
    // From there the window runs at the entries' pace again: m is forgotten once the window's
    // clock passes WINDOW_MS after it, of which the jump counted MAX_STEP_MS.
    let mut passed = MAX_STEP_MS;
    while h.send(Some("c@1"), &["m"]) == vec![Some(0)] {
        h.pass(1_000);
        passed += 1_000;
    }
    assert_eq!(passed, WINDOW_MS + 1_000);
    assert_eq!(
        h.queue_len(),
        2,
        "m twice, the second time only after the window"
    );
}

#[test]
fn a_clock_going_back_holds_the_window_until_time_catches_up() {
    let mut h = harness();
    h.send(Some("c@1"), &["m"]);
    h.advance(-3_600_000);
    h.pass(WINDOW_MS + 1_000);
    assert_eq!(
        h.send(Some("c@1"), &["m"]),
        vec![Some(0)],
        "the window's clock does not move while the entries' time is behind the highest seen"
    );
}

#[test]
fn at_version_5_a_clock_jump_forgot_the_window_at_once() {
    // What version 6 mends, kept because replaying an old log must reproduce it.
    let mut h = at_version(5);
    assert_eq!(h.send(Some("c@1"), &["m"]), vec![Some(0)]);
    h.advance(3_600_000);
    assert_eq!(h.send(Some("c@1"), &["m"]), vec![Some(1)], "stored twice");
}

#[test]
fn raising_the_version_starts_the_window_clock_at_the_entries_time() {
    let mut h = at_version(5);
    h.advance(5_000);
    assert_eq!(h.send(Some("c@1"), &["m"]), vec![Some(0)]);
    h.apply(StoreCommand::SetApplyVersion { version: 6 });
    assert_eq!(h.state.dedup_clock_ms(), h.now_ms);
    h.pass(WINDOW_MS);
    assert_eq!(h.send(Some("c@1"), &["m"]), vec![Some(0)], "still inside");
    h.pass(1);
    assert_eq!(h.send(Some("c@1"), &["m"]), vec![Some(1)]);
}

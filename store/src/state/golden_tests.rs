//! Golden bytes of the snapshot state: `ShardState` is persisted (inside every snapshot
//! generation) with postcard, which is not self-describing, so any change to its shape or to a
//! type inside it changes these bytes. When this test fails, the change needs a new
//! `SNAPSHOT_FORMAT`, not a new constant here. The same state as snapshot format 2 wrote it
//! (entries inside) must still be read.

use bytes::Bytes;
use vela_proto::domain::{GroupName, MessageKind, MessageRecord, TopicName};

use super::*;
use crate::command::{PopCommand, QueueChoice, StoreCommand, TagSubscription};

fn small_state() -> ShardState {
    let topic = TopicName::new("t").expect("valid");
    let mut state = ShardState::new(3);
    let mut fx = ApplyEffects::default();
    state.apply(1, &StoreCommand::SetApplyVersion { version: 2 }, &mut fx);
    let message = |kind, group: Option<&str>, delay: Option<i64>| MessageRecord {
        message_id: "m".into(),
        topic: topic.clone(),
        kind,
        tag: Some("a".into()),
        keys: vec![],
        message_group: group.map(str::to_owned),
        delivery_timestamp_ms: delay,
        born_timestamp_ms: 0,
        born_host: "h".into(),
        trace_context: None,
        properties: vec![],
        body: Bytes::from_static(b"x"),
    };
    state.apply(
        2,
        &StoreCommand::Append {
            topic: topic.clone(),
            queue_id: 1,
            now_ms: 1000,
            messages: vec![
                message(MessageKind::Fifo, Some("g"), None),
                message(MessageKind::Fifo, Some("g"), None),
                message(MessageKind::Delay, None, Some(5000)),
                message(MessageKind::Transaction, None, None),
            ],
        },
        &mut fx,
    );
    state.apply(
        3,
        &StoreCommand::Pop(PopCommand {
            group: GroupName::new("c").expect("valid"),
            topic,
            queues: QueueChoice::All,
            max: 4,
            invisible_ms: 100,
            filter: TagSubscription::All,
            fifo: true,
            max_attempts: 2,
            now_ms: 2000,
        }),
        &mut fx,
    );
    state
}

#[test]
fn snapshot_state_golden_bytes() {
    let state = small_state();
    let bytes = postcard::to_stdvec(&state).expect("encodes");
    assert_eq!(
        hex::encode(&bytes),
        GOLDEN,
        "the persisted shape of ShardState changed"
    );
    let mut back: ShardState = postcard::from_bytes(&bytes).expect("decodes");
    assert_eq!(
        postcard::to_stdvec(&back).expect("encodes"),
        bytes,
        "decodes to the same state"
    );
    // The entries are not in the snapshot: they come from the index file.
    assert!(back.live_entries().is_empty());
    assert_eq!(state.live_entries().len(), 2);
    for (key, entry) in state.entries().in_memory() {
        back.entries_mut().put(key.0, key.1, *entry);
    }
    assert_eq!(back, state);
}

#[test]
fn a_format_2_state_upgrades_to_the_same_state() {
    let legacy: LegacyState =
        postcard::from_bytes(&hex::decode(FORMAT2_GOLDEN).expect("hex")).expect("decodes");
    let (mut upgraded, entries) = legacy.upgrade();
    for ((queue, offset), entry) in entries {
        upgraded.entries_mut().put(queue, offset, entry);
    }
    // Format 2 did not record it (its restore writes every entry at the snapshot's index).
    assert_eq!(upgraded.last_indexing, 0);
    upgraded.last_indexing = small_state().last_indexing;
    assert_eq!(upgraded, small_state());
}

const GOLDEN: &str = "0301016101017401000002010163017401020100e8200103a6d287b0c8c9f6b1af0101e8200001a6d287b0c8c9f6b1af0101000101000101016301740101904e0202017401010001904e0102030174010100000002a01f0102";

/// [`small_state`] as snapshot format 2 laid it out.
const FORMAT2_GOLDEN: &str = "030101610101740100020200d00f01a6d287b0c8c9f6b1af010201d00f01a6d287b0c8c9f6b1af01010163017401020100e8200103a6d287b0c8c9f6b1af0101e8200001a6d287b0c8c9f6b1af0101000101000101016301740101904e0202017401010001904e0102030174010100000002a01f";

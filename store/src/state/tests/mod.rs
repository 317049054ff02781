//! Tests of the pure shard state machine: consumer-state transitions, one behaviour per test,
//! grouped by feature, and a property test that runs random command sequences against a model.
//! This module holds what they share: the `Harness` that applies commands at consecutive log
//! indexes, and helpers that build messages and name deliveries.
//!
//! - `pop_ack`: POP and ACK, redelivery, changes of invisibility, dead letters, tag filters,
//!   all-queue rotation and availability;
//! - `fifo`: message-group order;
//! - `delay_transactions`: delay timers and transactional half messages;
//! - `lifecycle`: truncation, dropped topics and groups, snapshots;
//! - `batches`: `AppendBatch` entries, each sub-append applied like its own append;
//! - `dedup`: `ClientAppends` entries, resent messages answered with their first outcome;
//! - `model`: random command sequences checked against a model (proptest).

mod batches;
mod broadcast;
mod dedup;
mod delay_transactions;
mod fifo;
mod lifecycle;
mod model;
mod planned;
mod pop_ack;
mod retention;

use bytes::Bytes;
use vela_proto::domain::{GroupName, MessageKind, MessageRecord, TopicName};
use vela_proto::store_api::AppendOutcome;

use super::*;
use crate::command::{
    ApplyError, CommandResponse, DeliveryRef, PopCommand, PoppedMessage, QueueChoice, ScanRange,
    StoreCommand, TagSubscription,
};

const INVISIBLE: u64 = 30_000;

fn topic(name: &str) -> TopicName {
    TopicName::new(name).expect("valid topic")
}

fn group(name: &str) -> GroupName {
    GroupName::new(name).expect("valid group")
}

fn message(tag: Option<&str>, message_group: Option<&str>) -> MessageRecord {
    MessageRecord {
        message_id: "id".into(),
        topic: topic("orders"),
        kind: if message_group.is_some() {
            MessageKind::Fifo
        } else {
            MessageKind::Normal
        },
        tag: tag.map(str::to_owned),
        keys: vec![],
        message_group: message_group.map(str::to_owned),
        delivery_timestamp_ms: None,
        born_timestamp_ms: 0,
        born_host: "test".into(),
        trace_context: None,
        properties: vec![],
        body: Bytes::from_static(b"body"),
    }
}

/// Applies commands at consecutive log indexes, like a Raft log would.
struct Harness {
    state: ShardState,
    last_index: u64,
    now_ms: i64,
    fx: ApplyEffects,
}

impl Harness {
    fn new() -> Self {
        Self {
            state: ShardState::new(0),
            last_index: 0,
            now_ms: 1_000_000,
            fx: ApplyEffects::default(),
        }
    }

    fn apply(&mut self, command: StoreCommand) -> CommandResponse {
        self.last_index += 1;
        self.fx = ApplyEffects::default();
        self.state.apply(self.last_index, &command, &mut self.fx)
    }

    fn append_to(
        &mut self,
        topic_name: &str,
        queue_id: u32,
        messages: Vec<MessageRecord>,
    ) -> Vec<AppendOutcome> {
        let command = StoreCommand::Append {
            topic: topic(topic_name),
            queue_id,
            now_ms: self.now_ms,
            messages,
        };
        match self.apply(command) {
            CommandResponse::Appended(outcomes) => outcomes,
            other => panic!("unexpected response {other:?}"),
        }
    }

    fn append(&mut self, messages: Vec<MessageRecord>) -> Vec<AppendOutcome> {
        self.append_to("orders", 0, messages)
    }

    fn pop_with(&mut self, f: impl FnOnce(&mut PopCommand)) -> Vec<PoppedMessage> {
        let mut pop = PopCommand {
            group: group("billing"),
            topic: topic("orders"),
            queues: QueueChoice::All,
            max: 32,
            invisible_ms: INVISIBLE,
            filter: TagSubscription::All,
            fifo: false,
            max_attempts: 3,
            now_ms: self.now_ms,
        };
        f(&mut pop);
        let index = self.last_index + 1;
        match self.apply(StoreCommand::Pop(pop)) {
            CommandResponse::Popped {
                delivery_id,
                messages,
                ..
            } => {
                assert_eq!(
                    delivery_id, index,
                    "a delivery is named by its POP's log index"
                );
                messages
            }
            other => panic!("unexpected response {other:?}"),
        }
    }

    fn pop(&mut self) -> Vec<PoppedMessage> {
        self.pop_with(|_| {})
    }

    fn pop_offsets(&mut self) -> Vec<u64> {
        self.pop().iter().map(|m| m.offset).collect()
    }

    fn ack(&mut self, d: DeliveryRef) -> Result<(), ApplyError> {
        match self.apply(StoreCommand::Ack {
            deliveries: vec![d],
        }) {
            CommandResponse::Acked(mut results) => results.remove(0),
            other => panic!("unexpected response {other:?}"),
        }
    }

    fn advance(&mut self, ms: i64) {
        self.now_ms += ms;
    }
}

/// The delivery a popped message names, for group "billing", issued at `delivery_id`.
fn delivery(m: &PoppedMessage, delivery_id: u64) -> DeliveryRef {
    DeliveryRef {
        group: group("billing"),
        topic: m.topic.clone(),
        queue_id: m.queue_id,
        offset: m.offset,
        delivery_id,
    }
}

fn popped_with_id(h: &mut Harness) -> (u64, Vec<PoppedMessage>) {
    let id = h.last_index + 1;
    (id, h.pop())
}

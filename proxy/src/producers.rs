//! Transaction check-back, the proxy's half: which producers are connected here (their
//! Telemetry streams and the topics their Settings publish to), and a task that asks the store
//! for half messages due to be checked and sends each as a RecoverOrphanedTransactionCommand
//! to a producer of its topic. The producer's checker answers with EndTransaction
//! (`SOURCE_SERVER_CHECK`), through this or any other proxy.
//!
//! The store hands each due check out once, to the first proxy that asks for that topic; a
//! check whose producer stream is full or gone is skipped (the next one follows an interval
//! later, and after the last the store rolls the message back).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tonic::Status;
use vela_proto::TopicName;
use vela_proto::pb::rocketmq::{self as pb, telemetry_command::Command};
use vela_proto::store_api::TransactionCheckRequest;

use crate::Shared;
use crate::convert;
use crate::status::ok_status;

/// How often the proxy asks the store for due checks (while it has producers).
const POLL: Duration = Duration::from_secs(1);
/// Most checks one poll takes.
const MAX_CHECKS: u32 = 256;

/// Where server commands to one Telemetry stream are written.
pub(crate) type CommandSender = mpsc::Sender<Result<pb::TelemetryCommand, Status>>;

struct ProducerStream {
    client_id: String,
    topics: Vec<TopicName>,
    commands: CommandSender,
}

/// The producers connected to this proxy, by Telemetry stream.
#[derive(Default)]
pub(crate) struct Producers {
    next_stream: AtomicU64,
    streams: Mutex<HashMap<u64, ProducerStream>>,
    /// Spreads checks of one topic over its producers.
    turn: AtomicU64,
}

impl Producers {
    /// An id for a new Telemetry stream.
    pub fn stream_id(&self) -> u64 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    /// The stream's client publishes to `topics` (its latest Settings; replaces earlier ones).
    pub fn register(
        &self,
        stream: u64,
        client_id: &str,
        topics: Vec<TopicName>,
        commands: CommandSender,
    ) {
        self.streams.lock().insert(
            stream,
            ProducerStream {
                client_id: client_id.to_owned(),
                topics,
                commands,
            },
        );
    }

    /// The stream closed.
    pub fn remove(&self, stream: u64) {
        self.streams.lock().remove(&stream);
    }

    /// Every topic some connected producer publishes to.
    fn topics(&self) -> Vec<TopicName> {
        let streams = self.streams.lock();
        let all: BTreeSet<&TopicName> = streams.values().flat_map(|s| &s.topics).collect();
        all.into_iter().cloned().collect()
    }

    /// A producer of `topic`, in turn: its client id and command stream.
    fn pick(&self, topic: &TopicName) -> Option<(String, CommandSender)> {
        let streams = self.streams.lock();
        let mut of_topic: Vec<(&u64, &ProducerStream)> = streams
            .iter()
            .filter(|(_, s)| s.topics.contains(topic) && !s.commands.is_closed())
            .collect();
        if of_topic.is_empty() {
            return None;
        }
        of_topic.sort_unstable_by_key(|(id, _)| **id);
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let index = usize::try_from(turn % of_topic.len() as u64).unwrap_or(0);
        let (_, stream) = of_topic[index];
        Some((stream.client_id.clone(), stream.commands.clone()))
    }
}

/// The topics a producer's Settings publish to, resolved in the client's namespace; names
/// that are not valid topics are left out (the sends themselves report them).
pub(crate) fn published_topics(settings: &pb::Settings, namespace: &str) -> Vec<TopicName> {
    match &settings.pub_sub {
        Some(pb::settings::PubSub::Publishing(publishing)) => publishing
            .topics
            .iter()
            .filter_map(|t| convert::topic_name(Some(t), namespace).ok())
            .collect(),
        _ => Vec::new(),
    }
}

/// Polls the store for due check-backs every [`POLL`] while producers are connected, until
/// the proxy shuts down.
pub(crate) async fn check_back(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        let topics = shared.producers.topics();
        if topics.is_empty() {
            continue;
        }
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = check_once(&shared, topics) => {}
        }
    }
}

/// One poll: takes the checks due for `topics` and sends each to a producer of its topic.
/// Returns how many were sent.
pub(crate) async fn check_once(shared: &Shared, topics: Vec<TopicName>) -> usize {
    let mut shards = BTreeSet::new();
    for topic in &topics {
        if let Some(config) = shared.metadata.existing_topic(topic).await {
            shards.extend(config.queue_shards.iter().copied());
        }
    }
    if shards.is_empty() {
        return 0;
    }
    let req = TransactionCheckRequest {
        topics,
        shards: shards.into_iter().collect(),
        max: MAX_CHECKS,
    };
    let checks = match shared.ctx.store.transaction_checks(&req).await {
        Ok(checks) => checks,
        Err(err) => {
            tracing::debug!(error = %err, "asking the store for transaction checks failed");
            return 0;
        }
    };
    let mut sent = 0;
    for check in checks {
        let Some((client_id, commands)) = shared.producers.pick(&check.topic) else {
            tracing::debug!(topic = %check.topic, "no producer left for a transaction check");
            continue;
        };
        let (topic, transaction_id, number) = (
            check.topic.clone(),
            check.transaction_id.clone(),
            check.check,
        );
        let command = pb::TelemetryCommand {
            status: Some(ok_status()),
            command: Some(Command::RecoverOrphanedTransactionCommand(
                pb::RecoverOrphanedTransactionCommand {
                    message: Some(convert::checked_message(check, &shared.store_host)),
                    transaction_id: transaction_id.clone(),
                },
            )),
        };
        match commands.try_send(Ok(command)) {
            Ok(()) => {
                sent += 1;
                shared.ctx.metrics.transaction_checked(topic.as_str());
                tracing::info!(%topic, %transaction_id, check = number, client_id, "asked a producer to resolve a transaction");
            }
            Err(err) => {
                tracing::debug!(%topic, %transaction_id, client_id, error = %err, "transaction check not sent");
            }
        }
    }
    sent
}

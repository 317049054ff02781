//! Transaction check-back, the proxy's half: a task that asks the store for half messages due
//! to be checked, for the topics the producers connected here publish to (`crate::clients`),
//! and sends each as a RecoverOrphanedTransactionCommand to a producer of its topic. The
//! producer's checker answers with EndTransaction (`SOURCE_SERVER_CHECK`), through this or any
//! other proxy.
//!
//! The store hands each due check out once, to the first proxy that asks for that topic; a
//! check whose producer stream is full or gone is skipped (the next one follows an interval
//! later, and after the last the store rolls the message back).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

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

/// Polls the store for due check-backs every [`POLL`] while producers are connected, until
/// the proxy shuts down.
pub(crate) async fn check_back(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        let topics = shared.clients.published_topics();
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
        let Some((client_id, commands)) = shared.clients.pick_producer(&check.topic) else {
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

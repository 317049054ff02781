//! Transactional messages: a [`Transaction`] sends one half message, which consumers do not see
//! until the transaction commits (or never, when it rolls back). A producer that sends them
//! must have a transaction checker ([`ProducerBuilder::transaction_checker`]): the server asks
//! it about a transaction left open (the producer crashed before ending it, or the end was
//! lost), and its answer commits or rolls the transaction back.
//!
//! [`ProducerBuilder::transaction_checker`]: crate::ProducerBuilder::transaction_checker

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tracing::{debug, warn};
use vela_proto::pb::rocketmq as pb;

use crate::client::{Rpc, request_with};
use crate::config::Endpoint;
use crate::error::{Error, Result, check_status};
use crate::message::{Message, MessageView, SendReceipt};
use crate::producer::ProducerInner;

const END_RPC: &str = "EndTransaction";

/// What a checker decides about a transaction the server asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransactionResolution {
    /// Deliver the message.
    Commit,
    /// Drop the message.
    Rollback,
    /// Not decided yet: the server asks again after its check interval (and rolls the message
    /// back after its last check).
    Unknown,
}

impl TransactionResolution {
    fn to_proto(self) -> Option<pb::TransactionResolution> {
        match self {
            TransactionResolution::Commit => Some(pb::TransactionResolution::Commit),
            TransactionResolution::Rollback => Some(pb::TransactionResolution::Rollback),
            TransactionResolution::Unknown => None,
        }
    }
}

/// A producer's transaction checker, boxed.
pub(crate) type Checker =
    Arc<dyn Fn(MessageView) -> BoxFuture<'static, TransactionResolution> + Send + Sync>;

/// Boxes a checker closure.
pub(crate) fn checker<F, Fut>(check: F) -> Checker
where
    F: Fn(MessageView) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TransactionResolution> + Send + 'static,
{
    Arc::new(move |message| Box::pin(check(message)))
}

/// One transaction: at most one half message (as the official clients allow), then
/// [`commit`](Self::commit) or [`rollback`](Self::rollback). A transaction dropped without
/// either is left to the server's check-back.
#[must_use = "a transaction is resolved by commit or rollback (or later by the checker)"]
pub struct Transaction {
    producer: Arc<ProducerInner>,
    sent: Option<(String, SendReceipt)>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("sent", &self.sent.as_ref().map(|(_, r)| &r.message_id))
            .finish_non_exhaustive()
    }
}

impl Transaction {
    pub(crate) fn new(producer: Arc<ProducerInner>) -> Self {
        Self {
            producer,
            sent: None,
        }
    }

    /// Sends the transaction's half message. FIFO messages cannot be transactional; a delivery
    /// time applies once the transaction commits.
    pub async fn send(&mut self, message: Message) -> Result<SendReceipt> {
        if self.sent.is_some() {
            return Err(Error::InvalidArgument(
                "a transaction carries one message".into(),
            ));
        }
        if message.message_group().is_some() {
            return Err(Error::InvalidArgument(
                "a transactional message cannot have a message group".into(),
            ));
        }
        let topic = message.topic().to_owned();
        let receipt = self.producer.send_transactional(message).await?;
        if receipt.transaction_id.is_none() {
            return Err(Error::invalid_response(
                "SendMessage",
                "the server answered a transactional send without a transaction id",
            ));
        }
        self.sent = Some((topic, receipt.clone()));
        Ok(receipt)
    }

    /// Delivers the half message.
    pub async fn commit(self) -> Result<()> {
        self.end(pb::TransactionResolution::Commit).await
    }

    /// Drops the half message.
    pub async fn rollback(self) -> Result<()> {
        self.end(pb::TransactionResolution::Rollback).await
    }

    async fn end(self, resolution: pb::TransactionResolution) -> Result<()> {
        let (topic, receipt) = self.sent.ok_or_else(|| {
            Error::InvalidArgument("the transaction has sent no message yet".into())
        })?;
        let shared = &self.producer.core.shared;
        shared.ensure_running()?;
        let request = pb::EndTransactionRequest {
            topic: Some(shared.resource(&topic)),
            message_id: receipt.message_id,
            transaction_id: receipt.transaction_id.unwrap_or_default(),
            resolution: resolution as i32,
            source: pb::TransactionSource::SourceClient as i32,
            trace_context: String::new(),
        };
        let endpoint = shared.config.endpoint.clone();
        let reply = shared
            .call(
                &endpoint,
                END_RPC,
                shared.config.request_timeout,
                |mut rpc, timeout| async move {
                    rpc.end_transaction(request_with(request, timeout)).await
                },
            )
            .await?;
        check_status(END_RPC, reply.into_inner().status.as_ref(), &[])
    }
}

/// Answers a server's check-back on the stream it came from: asks the checker, then ends the
/// transaction with its answer (`SOURCE_SERVER_CHECK`). Runs on its own task.
pub(crate) async fn answer_check(
    mut rpc: Rpc,
    endpoint: Endpoint,
    checker: Checker,
    command: pb::RecoverOrphanedTransactionCommand,
    timeout: Duration,
) {
    let transaction_id = command.transaction_id;
    let Some(message) = command.message else {
        warn!(%endpoint, %transaction_id, "check-back without its message");
        return;
    };
    let topic = message.topic.clone();
    let view = match crate::receive::checked_view(message, &endpoint) {
        Ok(view) => view,
        Err(e) => {
            warn!(%endpoint, %transaction_id, error = %e, "check-back with a malformed message");
            return;
        }
    };
    let message_id = view.message_id.clone();
    let Some(resolution) = checker(view).await.to_proto() else {
        debug!(%transaction_id, "checker left the transaction open");
        return;
    };
    let request = pb::EndTransactionRequest {
        topic,
        message_id,
        transaction_id: transaction_id.clone(),
        resolution: resolution as i32,
        source: pb::TransactionSource::SourceServerCheck as i32,
        trace_context: String::new(),
    };
    let outcome =
        match tokio::time::timeout(timeout, rpc.end_transaction(request_with(request, timeout)))
            .await
        {
            Ok(Ok(reply)) => check_status(END_RPC, reply.into_inner().status.as_ref(), &[]),
            Ok(Err(status)) => Err(Error::from_grpc(
                END_RPC,
                &endpoint.to_string(),
                timeout,
                status,
            )),
            Err(_) => Err(Error::Timeout {
                rpc: END_RPC,
                endpoint: endpoint.to_string(),
                timeout,
            }),
        };
    match outcome {
        Ok(()) => debug!(%transaction_id, ?resolution, "answered a check-back"),
        Err(e) => warn!(%transaction_id, error = %e, "answering a check-back failed"),
    }
}

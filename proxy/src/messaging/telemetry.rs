//! The Telemetry stream (protocol.md §4.2): returned at once (Rust's `start()` waits for the
//! response headers), answers every client Settings with the merged settings, stays open
//! until the client closes it or the server shuts down. Every stream whose client sent Settings
//! is registered (`crate::clients`), and carries the server's commands to that client:
//! transaction check-backs for the topics a producer publishes to (`crate::producers`), and the
//! verifications and thread dumps `vela admin` asks for, whose answers are handed back here.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::Instrument;
use vela_proto::pb::rocketmq::{self as pb, telemetry_command::Command};

use super::ResponseStream;
use crate::Shared;
use crate::auth::Creator;
use crate::clients::ClientStream;
use crate::convert;
use crate::headers::RequestMeta;
use crate::settings::{self, GroupPolicy, Role};
use crate::status::ok_status;

/// Replies waiting to be written; a client reads them promptly, so a few suffice.
const REPLY_BUFFER: usize = 8;

pub(super) fn open(
    shared: Arc<Shared>,
    meta: RequestMeta,
    user: Option<vela_proto::auth::UserName>,
    inbound: Streaming<pb::TelemetryCommand>,
) -> ResponseStream<pb::TelemetryCommand> {
    let (replies, rx) = mpsc::channel(REPLY_BUFFER);
    let span = tracing::debug_span!(
        "telemetry",
        client_id = meta.client_id.as_deref().unwrap_or("")
    );
    tokio::spawn(run(shared, meta, user, inbound, replies).instrument(span));
    Box::pin(ReceiverStream::new(rx))
}

async fn run(
    shared: Arc<Shared>,
    meta: RequestMeta,
    user: Option<vela_proto::auth::UserName>,
    mut inbound: Streaming<pb::TelemetryCommand>,
    replies: mpsc::Sender<Result<pb::TelemetryCommand, Status>>,
) {
    tracing::debug!("telemetry stream opened");
    let stream = shared.clients.stream_id();
    if let Some(client) = &meta.client_id {
        shared.held.stream_opened(client);
    }
    loop {
        let command = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            () = replies.closed() => break,
            next = inbound.message() => match next {
                Ok(Some(command)) => command,
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(code = ?status.code(), "telemetry stream failed");
                    break;
                }
            },
        };
        if let Some(Command::Settings(settings)) = &command.command
            && let Some(user) = &user
        {
            let needs = crate::auth::needs::settings_needs(settings, &meta.namespace);
            if let Err(denied) = shared.guard.check_user(user, &meta, &needs).await {
                let status = crate::status::RpcError::from(denied).to_status(meta.legacy_codes);
                tracing::debug!(code = status.code, error = %status.message, "telemetry settings refused");
                let refused = pb::TelemetryCommand {
                    status: Some(status),
                    command: None,
                };
                if replies.send(Ok(refused)).await.is_err() {
                    break;
                }
                continue;
            }
        }
        if let Some(Command::Settings(settings)) = &command.command {
            shared.ctx.metrics.settings_seen(stream, settings);
        }
        if let Some(Command::Settings(settings)) = &command.command
            && let Some(client_id) = &meta.client_id
        {
            let client = ClientStream::from_settings(
                client_id,
                settings,
                &meta.namespace,
                meta.peer,
                replies.clone(),
                shared.ctx.clock.now_ms(),
            );
            shared.clients.register(stream, client);
        }
        if shared.clients.answered(&command) {
            continue;
        }
        let Some(reply) = answer(&shared, &meta, command).await else {
            continue;
        };
        if replies.send(Ok(reply)).await.is_err() {
            break;
        }
    }
    // Dropping `replies` (and the registration's clone) ends the response stream.
    shared.clients.remove(stream);
    shared.ctx.metrics.stream_closed(stream);
    drop(replies);
    tracing::debug!("telemetry stream closed");
    if let Some(client) = meta.client_id
        && let Some(mark) = shared.held.stream_closed(&client)
        && !shared.shutdown.is_cancelled()
    {
        release_if_gone(shared, client, mark).await;
    }
}

/// After the client's last stream here ended: unless it opens another within the grace, it is
/// gone (crashed, or cut off), and the deliveries it held are given back.
async fn release_if_gone(shared: Arc<Shared>, client: String, mark: u64) {
    tokio::select! {
        () = shared.shutdown.cancelled() => return,
        () = tokio::time::sleep(shared.ctx.config.client_release_grace) => {}
    }
    if let Some(tickets) = shared.held.gone_since(&client, mark) {
        let released = super::consume::release(&shared, tickets, crate::held::RELEASE_AFTER).await;
        if released > 0 {
            tracing::info!(
                client,
                released,
                "gave back the deliveries of a client that went away"
            );
        }
    }
}

/// The reply to one client command, if it needs one.
async fn answer(
    shared: &Shared,
    meta: &RequestMeta,
    command: pb::TelemetryCommand,
) -> Option<pb::TelemetryCommand> {
    match command.command {
        Some(Command::Settings(client)) => {
            if let Err(e) = meta.require_client_id() {
                return Some(pb::TelemetryCommand {
                    status: Some(e.to_status(meta.legacy_codes)),
                    command: None,
                });
            }
            let group = group_policy(shared, meta, &client).await;
            let merged = settings::effective_settings(client, group, &shared.ctx.config);
            Some(pb::TelemetryCommand {
                status: Some(ok_status()),
                command: Some(Command::Settings(merged)),
            })
        }
        // Answers to server commands we never send, server-only commands, or nothing at all.
        Some(other) => {
            tracing::debug!(command = command_name(&other), "ignoring telemetry command");
            None
        }
        None => None,
    }
}

/// The consumer group's policy for a consumer's Settings. Defaults when the group cannot be
/// resolved: the reply must still go out (Node's start blocks on it), and receive reports
/// the group problem itself.
async fn group_policy(shared: &Shared, meta: &RequestMeta, client: &pb::Settings) -> GroupPolicy {
    if settings::role_of(client) != Role::Consumer {
        return GroupPolicy::default();
    }
    let Some(resource) = settings::subscription_group(client) else {
        return GroupPolicy::default();
    };
    let looked_up = match convert::group_name(Some(resource), &meta.namespace) {
        Ok(group) => {
            shared
                .metadata
                .group(&group, Creator::new(&shared.guard, meta))
                .await
        }
        Err(e) => Err(e),
    };
    match looked_up {
        Ok(group) => GroupPolicy::from(group.as_ref()),
        Err(e) => {
            tracing::debug!(group = %resource.name, error = %e.message, "settings for an unusable group");
            GroupPolicy::default()
        }
    }
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Settings(_) => "settings",
        Command::ThreadStackTrace(_) => "thread_stack_trace",
        Command::VerifyMessageResult(_) => "verify_message_result",
        Command::RecoverOrphanedTransactionCommand(_) => "recover_orphaned_transaction_command",
        Command::PrintThreadStackTraceCommand(_) => "print_thread_stack_trace_command",
        Command::VerifyMessageCommand(_) => "verify_message_command",
        Command::ReconnectEndpointsCommand(_) => "reconnect_endpoints_command",
        Command::NotifyUnsubscribeLiteCommand(_) => "notify_unsubscribe_lite_command",
    }
}

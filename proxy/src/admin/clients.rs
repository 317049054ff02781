//! The clients connected to this proxy (`ListClients`) and the commands `vela admin` sends one
//! of them through its Telemetry stream here: run a stored message through a consumer's
//! listener (`VerifyMessage`, RocketMQ's consumeMessageDirectly) and dump a client's threads
//! (`ClientStack`). A client connected to another proxy is `NOT_FOUND` here; `vela admin`
//! asks every proxy the controller lists.

use std::time::Duration;

use tonic::Status;
use vela_proto::lookup::{LookupBy, LookupRequest};
use vela_proto::pb::admin as api;
use vela_proto::pb::rocketmq::{self as pb, telemetry_command::Command};

use super::{AdminServer, topic_name};
use crate::clients::{AskError, ClientStream};
use crate::convert;
use crate::status::store_to_grpc;

/// How long a command waits for the client's answer unless told.
const DEFAULT_ANSWER_WAIT: Duration = Duration::from_secs(10);
/// Longest a command waits for the client's answer.
const MAX_ANSWER_WAIT: Duration = Duration::from_secs(60);
/// How long listing the other proxies waits for the controller.
const PEERS_WAIT: Duration = Duration::from_secs(3);
/// Longest client id accepted (clients' ids are far shorter).
const MAX_CLIENT_ID: usize = 256;
/// Longest message id accepted.
const MAX_MESSAGE_ID: usize = 128;

impl AdminServer {
    pub(super) async fn list_clients(
        &self,
        req: &api::ListClientsRequest,
    ) -> api::ListClientsResponse {
        let group = req.group.trim();
        let proxy = self.shared.store_host.clone();
        let (peers, peers_error) =
            match tokio::time::timeout(PEERS_WAIT, self.shared.ctx.controller.proxies()).await {
                Ok(Ok(proxies)) => (
                    proxies
                        .into_iter()
                        .filter(|p| p.addr != proxy)
                        .map(|p| p.admin_addr.unwrap_or(p.addr))
                        .collect(),
                    String::new(),
                ),
                Ok(Err(e)) => (Vec::new(), e.to_string()),
                Err(_) => (
                    Vec::new(),
                    format!("the controller did not list the proxies within {PEERS_WAIT:?}"),
                ),
            };
        let clients = self
            .shared
            .clients
            .list()
            .into_iter()
            .filter(|c| group.is_empty() || c.group.as_deref() == Some(group))
            .map(|c| client_info(c, &proxy))
            .collect();
        api::ListClientsResponse {
            clients,
            proxy,
            peers,
            peers_error,
        }
    }

    pub(super) async fn verify_message(
        &self,
        req: api::VerifyMessageRequest,
    ) -> Result<api::VerifyMessageResponse, Status> {
        let client_id = client_id(&req.client_id)?;
        let within = answer_wait(req.timeout_ms)?;
        let message_id = req.message_id.trim();
        if message_id.is_empty() || message_id.len() > MAX_MESSAGE_ID {
            return Err(Status::invalid_argument(format!(
                "a message id of 1..={MAX_MESSAGE_ID} bytes is needed"
            )));
        }
        let topic = topic_name(req.topic.trim())?;
        let config = self.existing_topic(&topic).await?;
        // Checked before the lookup, so asking the wrong proxy costs nothing.
        if !self.shared.clients.holds(client_id) {
            return Err(not_here(client_id));
        }
        let shards = self.shared.shards_of(&config).await;
        let found = self
            .shared
            .ctx
            .store
            .lookup(&LookupRequest {
                by: LookupBy::MessageId(message_id.to_owned()),
                topic: Some(topic.clone()),
                shards,
                limit: 1,
            })
            .await
            .map_err(store_to_grpc)?;
        let Some(found) = found.into_iter().next() else {
            return Err(Status::not_found(format!(
                "no message {message_id} in topic {topic}"
            )));
        };
        let message = convert::verified_message(found, &topic, &self.shared.store_host);
        let answer = self
            .shared
            .clients
            .ask(
                client_id,
                |nonce| {
                    Command::VerifyMessageCommand(pb::VerifyMessageCommand {
                        nonce,
                        message: Some(message),
                    })
                },
                within,
            )
            .await
            .map_err(ask_to_grpc)?;
        let (code, message) = answer_status(&answer);
        tracing::info!(client_id, %topic, message_id, code, "a client verified a message");
        Ok(api::VerifyMessageResponse {
            code,
            message,
            proxy: self.shared.store_host.clone(),
        })
    }

    pub(super) async fn client_stack(
        &self,
        req: api::ClientStackRequest,
    ) -> Result<api::ClientStackResponse, Status> {
        let client_id = client_id(&req.client_id)?;
        let within = answer_wait(req.timeout_ms)?;
        let answer = self
            .shared
            .clients
            .ask(
                client_id,
                |nonce| {
                    Command::PrintThreadStackTraceCommand(pb::PrintThreadStackTraceCommand {
                        nonce,
                    })
                },
                within,
            )
            .await
            .map_err(ask_to_grpc)?;
        let (code, message) = answer_status(&answer);
        let stack = match answer.command {
            Some(Command::ThreadStackTrace(t)) => t.thread_stack_trace.unwrap_or_default(),
            _ => String::new(),
        };
        Ok(api::ClientStackResponse {
            code,
            message,
            stack,
            proxy: self.shared.store_host.clone(),
        })
    }
}

fn client_id(text: &str) -> Result<&str, Status> {
    let id = text.trim();
    if id.is_empty() || id.len() > MAX_CLIENT_ID {
        return Err(Status::invalid_argument(format!(
            "a client id of 1..={MAX_CLIENT_ID} bytes is needed"
        )));
    }
    Ok(id)
}

fn answer_wait(timeout_ms: u32) -> Result<Duration, Status> {
    match Duration::from_millis(u64::from(timeout_ms)) {
        d if d.is_zero() => Ok(DEFAULT_ANSWER_WAIT),
        d if d <= MAX_ANSWER_WAIT => Ok(d),
        d => Err(Status::invalid_argument(format!(
            "a timeout of {d:?} is longer than {MAX_ANSWER_WAIT:?}"
        ))),
    }
}

fn not_here(client_id: &str) -> Status {
    Status::not_found(AskError::NotHere(client_id.to_owned()).to_string())
}

fn ask_to_grpc(e: AskError) -> Status {
    match e {
        AskError::NotHere(_) | AskError::Gone(_) => Status::not_found(e.to_string()),
        AskError::NoAnswer(..) => Status::deadline_exceeded(e.to_string()),
        AskError::Busy => Status::resource_exhausted(e.to_string()),
    }
}

/// The client's status on its answer (a missing status is OK, as the clients treat it).
fn answer_status(answer: &pb::TelemetryCommand) -> (i32, String) {
    answer.status.as_ref().map_or_else(
        || (pb::Code::Ok as i32, String::new()),
        |s| (s.code, s.message.clone()),
    )
}

fn client_info(c: ClientStream, proxy: &str) -> api::ClientInfo {
    let client_type = match c.client_type {
        Some(t) => t.as_str_name().to_ascii_lowercase(),
        None => match c.role {
            crate::settings::Role::Producer => "producer".to_owned(),
            crate::settings::Role::Consumer => "consumer".to_owned(),
            crate::settings::Role::Unknown => "unknown".to_owned(),
        },
    };
    let ua = c.user_agent.unwrap_or_default();
    api::ClientInfo {
        client_id: c.client_id,
        client_type,
        group: c.group.unwrap_or_default(),
        topics: c.topics.iter().map(|t| t.as_str().to_owned()).collect(),
        language: pb::Language::try_from(ua.language)
            .map(|l| l.as_str_name().to_owned())
            .unwrap_or_default(),
        version: ua.version,
        hostname: ua.hostname,
        peer: c.peer.map(|p| p.to_string()).unwrap_or_default(),
        connected_ms: c.connected_ms,
        proxy: proxy.to_owned(),
    }
}

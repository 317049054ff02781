//! The clients with a Telemetry stream open to this proxy: who each is (from its latest
//! Settings) and the stream's command channel. Server-to-client commands go through it:
//! transaction check-backs to a producer of the topic (`crate::producers`), and the commands
//! `vela admin` sends one client (message verification, thread dumps), whose answers come back
//! on the same stream and are matched to the waiting caller by nonce.
//!
//! Memory only: a client re-sends its Settings on every stream it opens, so a proxy restart
//! loses nothing here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use vela_proto::TopicName;
use vela_proto::pb::rocketmq::{self as pb, telemetry_command::Command};

use crate::convert;
use crate::settings::{self, Role};

/// Where server commands to one Telemetry stream are written.
pub(crate) type CommandSender = mpsc::Sender<Result<pb::TelemetryCommand, Status>>;

/// Answers awaited at once at most (each is one admin call waiting).
const MAX_PENDING: usize = 1024;

/// One Telemetry stream whose client sent Settings.
#[derive(Clone)]
pub(crate) struct ClientStream {
    pub client_id: String,
    pub role: Role,
    /// `ClientType` as the Settings name it.
    pub client_type: Option<pb::ClientType>,
    /// The consumer group (consumers), resolved in the client's namespace.
    pub group: Option<String>,
    /// Published (producers) or subscribed (consumers) topics, in the client's namespace.
    pub topics: Vec<TopicName>,
    pub user_agent: Option<pb::Ua>,
    pub peer: Option<IpAddr>,
    /// When the stream's first Settings arrived (Unix ms).
    pub connected_ms: i64,
    pub commands: CommandSender,
}

impl ClientStream {
    /// What the client's `settings` say about it, on a stream that writes to `commands`,
    /// received at `now_ms`.
    pub fn from_settings(
        client_id: &str,
        settings: &pb::Settings,
        namespace: &str,
        peer: Option<IpAddr>,
        commands: CommandSender,
        now_ms: i64,
    ) -> Self {
        let role = settings::role_of(settings);
        let (group, topics) = match &settings.pub_sub {
            Some(pb::settings::PubSub::Publishing(publishing)) => (
                None,
                publishing
                    .topics
                    .iter()
                    .filter_map(|t| convert::topic_name(Some(t), namespace).ok())
                    .collect(),
            ),
            Some(pb::settings::PubSub::Subscription(subscription)) => (
                settings::subscription_group(settings)
                    .and_then(|g| convert::group_name(Some(g), namespace).ok())
                    .map(|g| g.as_str().to_owned()),
                subscription
                    .subscriptions
                    .iter()
                    .filter_map(|s| convert::topic_name(s.topic.as_ref(), namespace).ok())
                    .collect(),
            ),
            None => (None, Vec::new()),
        };
        Self {
            client_id: client_id.to_owned(),
            role,
            client_type: settings
                .client_type
                .and_then(|t| pb::ClientType::try_from(t).ok()),
            group,
            topics,
            user_agent: settings.user_agent.clone(),
            peer,
            connected_ms: now_ms,
            commands,
        }
    }
}

/// Why a command to a client got no answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum AskError {
    #[error("client {0} holds no Telemetry stream on this proxy")]
    NotHere(String),
    #[error("client {0} did not answer within {1:?}")]
    NoAnswer(String, Duration),
    #[error("client {0} went away before it answered")]
    Gone(String),
    #[error("too many client commands waiting for answers ({MAX_PENDING}); try again")]
    Busy,
}

#[derive(Default)]
pub(crate) struct Clients {
    next_stream: AtomicU64,
    streams: Mutex<HashMap<u64, ClientStream>>,
    /// Spreads the check-backs of one topic over its producers.
    turn: AtomicU64,
    next_nonce: AtomicU64,
    /// Callers waiting for a client's answer, by the nonce of the command they sent.
    pending: Mutex<HashMap<String, oneshot::Sender<pb::TelemetryCommand>>>,
}

impl Clients {
    /// An id for a new Telemetry stream.
    pub fn stream_id(&self) -> u64 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    /// The stream's client sent Settings (its latest replaces earlier ones; the stream keeps
    /// the time it first registered).
    pub fn register(&self, stream: u64, mut client: ClientStream) {
        let mut streams = self.streams.lock();
        if let Some(earlier) = streams.get(&stream) {
            client.connected_ms = earlier.connected_ms;
        }
        streams.insert(stream, client);
    }

    /// The stream closed.
    pub fn remove(&self, stream: u64) {
        self.streams.lock().remove(&stream);
    }

    /// Every registered stream (clients with several streams here appear once per stream),
    /// oldest first.
    pub fn list(&self) -> Vec<ClientStream> {
        let streams = self.streams.lock();
        let mut all: Vec<(u64, ClientStream)> = streams
            .iter()
            .filter(|(_, s)| !s.commands.is_closed())
            .map(|(id, s)| (*id, s.clone()))
            .collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all.into_iter().map(|(_, s)| s).collect()
    }

    /// Every topic some connected producer publishes to.
    pub fn published_topics(&self) -> Vec<TopicName> {
        let streams = self.streams.lock();
        let all: std::collections::BTreeSet<&TopicName> = streams
            .values()
            .filter(|s| s.role == Role::Producer)
            .flat_map(|s| &s.topics)
            .collect();
        all.into_iter().cloned().collect()
    }

    /// A producer of `topic`, in turn: its client id and command stream.
    pub fn pick_producer(&self, topic: &TopicName) -> Option<(String, CommandSender)> {
        let streams = self.streams.lock();
        let mut of_topic: Vec<(&u64, &ClientStream)> = streams
            .iter()
            .filter(|(_, s)| {
                s.role == Role::Producer && s.topics.contains(topic) && !s.commands.is_closed()
            })
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

    /// The newest open stream of `client_id` here.
    fn stream_of(&self, client_id: &str) -> Option<CommandSender> {
        let streams = self.streams.lock();
        streams
            .iter()
            .filter(|(_, s)| s.client_id == client_id && !s.commands.is_closed())
            .max_by_key(|(id, _)| **id)
            .map(|(_, s)| s.commands.clone())
    }

    /// Whether `client_id` has an open stream here.
    pub fn holds(&self, client_id: &str) -> bool {
        self.stream_of(client_id).is_some()
    }

    /// Sends the command `make` builds (given a fresh nonce) to `client_id` and waits up to
    /// `within` for the client's answer carrying that nonce.
    pub async fn ask(
        &self,
        client_id: &str,
        make: impl FnOnce(String) -> Command,
        within: Duration,
    ) -> Result<pb::TelemetryCommand, AskError> {
        let commands = self
            .stream_of(client_id)
            .ok_or_else(|| AskError::NotHere(client_id.to_owned()))?;
        let nonce = format!(
            "vela-{}-{}",
            std::process::id(),
            self.next_nonce.fetch_add(1, Ordering::Relaxed)
        );
        let (answer_tx, answer_rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock();
            if pending.len() >= MAX_PENDING {
                return Err(AskError::Busy);
            }
            pending.insert(nonce.clone(), answer_tx);
        }
        let _forget = Forget {
            pending: &self.pending,
            nonce: nonce.clone(),
        };
        let command = pb::TelemetryCommand {
            status: Some(crate::status::ok_status()),
            command: Some(make(nonce)),
        };
        let answered = async {
            commands
                .send(Ok(command))
                .await
                .map_err(|_| AskError::Gone(client_id.to_owned()))?;
            answer_rx
                .await
                .map_err(|_| AskError::Gone(client_id.to_owned()))
        };
        tokio::time::timeout(within, answered)
            .await
            .map_err(|_| AskError::NoAnswer(client_id.to_owned(), within))?
    }

    /// Hands a client's command to the caller waiting for it, if it answers one (by nonce).
    /// Returns `false` for everything else.
    pub fn answered(&self, command: &pb::TelemetryCommand) -> bool {
        let nonce = match &command.command {
            Some(Command::VerifyMessageResult(r)) => &r.nonce,
            Some(Command::ThreadStackTrace(t)) => &t.nonce,
            // The Node client answers a verification with the command itself, echoed with
            // NOT_IMPLEMENTED.
            Some(Command::VerifyMessageCommand(c)) => &c.nonce,
            _ => return false,
        };
        let Some(waiting) = self.pending.lock().remove(nonce) else {
            return false;
        };
        // The caller may have given up meanwhile; nothing else wants the answer.
        let _ = waiting.send(command.clone());
        true
    }
}

/// Removes a nonce from the pending answers when its caller stops waiting.
struct Forget<'a> {
    pending: &'a Mutex<HashMap<String, oneshot::Sender<pb::TelemetryCommand>>>,
    nonce: String,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.pending.lock().remove(&self.nonce);
    }
}

#[cfg(test)]
mod tests;

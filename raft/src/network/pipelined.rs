//! Pipelined replication between the nodes of an in-process cluster, as over gRPC
//! (`crate::grpc`): a leader's requests reach the follower's Raft without waiting for the answers
//! before them, and each request meets the fault seam on the way. A cut link, a lost request or
//! a node that is not running ends the stream after the answers to the requests before it; a
//! delay holds the stream back (a link delivers in order); a lost reply ends it after the
//! follower has taken the request in.

use std::collections::VecDeque;
use std::future::ready;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::RaftTypeConfig;
use openraft::base::BoxStream;
use openraft::error::RPCError;
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use openraft::storage::RaftStateMachine;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Failed, Fate, LocalConnection, NodeId};
use crate::pipeline::append_pipelined;

/// Why the requests stopped before openraft's input ended.
enum Stopped {
    Refused(Failed),
    /// A request was lost at `sent`: nothing answers it within `ttl`.
    Lost {
        sent: Instant,
        ttl: Duration,
    },
}

type Answer<C> = Result<StreamAppendResult<C>, RPCError<C>>;

impl<C, SM> LocalConnection<C, SM>
where
    C: RaftTypeConfig<NodeId = NodeId>,
    SM: RaftStateMachine<C>,
{
    /// Opens a pipelined stream to the target for `input`; `ttl` is openraft's deadline for one
    /// request.
    pub(super) fn open_stream<S>(
        &self,
        input: S,
        ttl: Duration,
    ) -> Result<BoxStream<'static, Answer<C>>, Failed>
    where
        S: Stream<Item = AppendEntriesRequest<C>> + Send + Unpin + 'static,
    {
        let (from, to, group) = (self.from, self.to, self.group);
        let Some(raft) = self.hub.member(group, to) else {
            return Err(Failed::Unreachable(format!(
                "node {to} is not running (group {group})"
            )));
        };
        let stopped: Arc<Mutex<Option<Stopped>>> = Arc::default();
        let lost_replies: Arc<Mutex<VecDeque<bool>>> = Arc::default();
        let hub = self.hub.clone();
        let (why, lost) = (stopped.clone(), lost_replies.clone());
        let requests = futures::stream::unfold(input, move |mut input| {
            let (hub, why, lost) = (hub.clone(), why.clone(), lost.clone());
            async move {
                // Dropping the answers ends these requests (`append_pipelined`): openraft's
                // reader of `input` does not outlive the session it belongs to.
                let request = input.next().await?;
                let stop = |reason| {
                    why.lock().get_or_insert(reason);
                    None
                };
                match hub.faults.fate(from, to) {
                    Fate::Unreachable => {
                        let cut = format!("link {from} -> {to} is cut (group {group})");
                        return stop(Stopped::Refused(Failed::Unreachable(cut)));
                    }
                    Fate::Lost => {
                        let sent = Instant::now();
                        return stop(Stopped::Lost { sent, ttl });
                    }
                    Fate::Deliver { delay, lose_reply } => {
                        tokio::time::sleep(delay).await;
                        if hub.member(group, to).is_none() {
                            let down = format!("node {to} is not running (group {group})");
                            return stop(Stopped::Refused(Failed::Unreachable(down)));
                        }
                        lost.lock().push_back(lose_reply);
                    }
                }
                Some((request, input))
            }
        });
        let hub = self.hub.clone();
        let pass = move || {
            let hub = hub.clone();
            async move { hub.installs.pass((group, to)).await }
        };
        let answers = append_pipelined(&raft, Box::pin(requests), pass).map(move |answer| {
            let lose_reply = lost_replies.lock().pop_front().unwrap_or(false);
            match answer {
                Err(fatal) => {
                    Err(Failed::Unreachable(format!("node {to} (group {group}): {fatal}")).into())
                }
                Ok(_) if lose_reply => Err(Failed::Network(format!(
                    "reply {to} -> {from} lost (group {group})"
                ))
                .into()),
                Ok(answer) => Ok(answer),
            }
        });
        let reason = futures::stream::once(async move {
            let taken = stopped.lock().take();
            match taken? {
                Stopped::Refused(failed) => Some(Err(failed.into())),
                Stopped::Lost { sent, ttl } => {
                    tokio::time::sleep_until(sent + ttl).await;
                    Some(Err(Failed::Network(format!(
                        "request {from} -> {to} lost (group {group}); no reply within {ttl:?}"
                    ))
                    .into()))
                }
            }
        })
        .filter_map(ready);
        // Nothing after the first error.
        let stream = answers
            .chain(reason)
            .scan(false, |failed, answer: Answer<C>| {
                if *failed {
                    return ready(None);
                }
                *failed = answer.is_err();
                ready(Some(answer))
            });
        Ok(stream.boxed())
    }
}

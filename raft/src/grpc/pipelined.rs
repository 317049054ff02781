//! The leader's side of pipelined replication over gRPC: openraft's stream of `AppendEntries` to
//! one follower goes out on one `AppendStream` without waiting for answers, and the answers come
//! back in order (the follower's side is `crate::pipeline`). Requests in flight are bounded in
//! number and in bytes; each is split into runs of at most [`APPEND_BYTES`] of entries, as a
//! single `AppendEntries` is, and the answers to its runs are folded back into one.
//!
//! The fault seam decides each request's fate as it does for single RPCs: a cut link ends the
//! stream with the target unreachable, a lost request with a timeout once its deadline passes, a
//! delay holds the stream back (a link delivers in order), a lost reply ends the stream after
//! the follower has taken the request in.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::LogId;
use openraft::base::BoxStream;
use openraft::error::RPCError;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::network::RPCTypes;
use openraft::raft::{AppendEntriesRequest, StreamAppendError, StreamAppendResult};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::client::{
    APPEND_BYTES, Failure, GrpcConnection, PAYLOAD_DEADLINE, Passage, classify, encode_runs,
    passage, transfer_deadline,
};
use super::{log_id_from_wire, opt_log_id_to_wire, pb, vote_from_wire, vote_to_wire};
use crate::entry::LogTypes;
use crate::network::{NetFaults, NodeId};

/// Requests one stream keeps unanswered at most. Few: with two or more in flight the leader
/// never waits a round trip, and a request formed only once there is room for it carries every
/// entry that arrived meanwhile, so a busy follower takes fewer, larger appends (depths 1, 4
/// and 64 measured alike on the 2-core benchmark machine, docs/benchmarks.md).
const IN_FLIGHT: usize = 4;
/// Bytes of entries one stream keeps unanswered at most (a larger request goes alone).
const IN_FLIGHT_BYTES: usize = 16 * 1024 * 1024;
/// How long opening a stream may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);

type StoredLogId = LogId<LeaderId<u64, u64>>;
/// What the answer side yields: openraft's answer to one request, or why there is none.
type Answer<C> = Result<StreamAppendResult<C>, RPCError<C>>;

/// What the stream opened to: answers, or the peer does not know `AppendStream` (an older
/// version), and the requests, untouched, go one at a time instead.
pub(super) enum Opened<C: LogTypes, S> {
    Stream(BoxStream<'static, Answer<C>>),
    Unsupported(S),
}

/// Who a stream goes to, for requests and errors.
#[derive(Clone)]
struct Link {
    route: pb::Route,
    from: NodeId,
    target: NodeId,
    addr: String,
    faults: Option<Arc<NetFaults>>,
}

impl Link {
    fn error<C: LogTypes>(&self, failure: Failure) -> RPCError<C> {
        failure.rpc::<C>(RPCTypes::AppendEntries, self.from, self.target)
    }
}

/// What the answer side expects next, in request order.
enum Expect {
    /// The answers to the `runs` wire requests one request was split into.
    Answers {
        runs: usize,
        deadline: Instant,
        lose_reply: bool,
        /// The request's room in flight: its bytes, and its place among [`IN_FLIGHT`].
        _room: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    },
    /// The request was not sent.
    Refused(Failure),
    /// The request was lost on the way: nothing answers it within `ttl`, from `sent`.
    Lost { sent: Instant, ttl: Duration },
}

impl<SD> GrpcConnection<SD> {
    /// Opens an `AppendStream` for `input`; `ttl` is openraft's deadline for one request.
    pub(super) async fn open_stream<C, S>(
        &self,
        input: S,
        ttl: Duration,
    ) -> Result<Opened<C, S>, RPCError<C>>
    where
        C: LogTypes,
        S: Stream<Item = AppendEntriesRequest<C>> + Send + Unpin + 'static,
    {
        let link = Link {
            route: self.route(),
            from: self.from,
            target: self.target,
            addr: self.addr.clone(),
            faults: self.faults.clone(),
        };
        let mut client = self
            .client
            .clone()
            .map_err(|m| link.error::<C>(Failure::Unreachable(m)))?;
        let (wire, outgoing) = mpsc::channel(IN_FLIGHT * 2);
        let mut request = tonic::Request::new(ReceiverStream::new(outgoing));
        let metadata = request.metadata_mut();
        metadata.insert(super::STREAM_GROUP, link.route.group.into());
        metadata.insert(super::STREAM_TARGET, link.route.target.into());
        let opened = tokio::time::timeout(OPEN_TIMEOUT, client.append_stream(request)).await;
        let replies = match opened {
            Err(_) => return Err(link.error::<C>(Failure::Timeout(OPEN_TIMEOUT))),
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                return Ok(Opened::Unsupported(input));
            }
            Ok(Err(status)) => {
                return Err(link.error::<C>(match classify(&link.addr, &status) {
                    Failure::Timeout(_) => Failure::Timeout(OPEN_TIMEOUT),
                    other => other,
                }));
            }
            Ok(Ok(response)) => response.into_inner(),
        };
        let (expect, expected) = mpsc::channel(IN_FLIGHT + 1);
        let pump = tokio::spawn(pump::<C, S>(input, link.clone(), wire, expect, ttl));
        let answers = Answers {
            link,
            expected,
            replies,
            _pump: AbortOnDrop(pump),
        };
        let stream = futures::stream::unfold(Some(answers), |answers| async move {
            let mut answers = answers?;
            let (answer, go_on) = answers.next::<C>().await?;
            Some((answer, go_on.then_some(answers)))
        });
        Ok(Opened::Stream(stream.boxed()))
    }
}

/// Sends every request of `input` as it comes, telling the answer side what to expect first.
async fn pump<C, S>(
    mut input: S,
    link: Link,
    wire: mpsc::Sender<pb::AppendEntriesRequest>,
    expect: mpsc::Sender<Expect>,
    ttl: Duration,
) where
    C: LogTypes,
    S: Stream<Item = AppendEntriesRequest<C>> + Unpin,
{
    let budget = Arc::new(Semaphore::new(IN_FLIGHT_BYTES));
    let depth = Arc::new(Semaphore::new(IN_FLIGHT));
    let (from, target) = (link.from, link.target);
    loop {
        // A request is formed only once there is room for it: entries that arrive meanwhile
        // go out together in the next one.
        let Ok(slot) = depth.clone().acquire_owned().await else {
            return;
        };
        let Some(rpc) = input.next().await else {
            return;
        };
        let lose_reply = match passage(link.faults.as_deref(), from, target).await {
            Passage::Cut(failure) => {
                let _ = expect.send(Expect::Refused(failure)).await;
                return;
            }
            Passage::Lost => {
                let lost = Expect::Lost {
                    sent: Instant::now(),
                    ttl,
                };
                let _ = expect.send(lost).await;
                return;
            }
            Passage::Through { lose_reply } => lose_reply,
        };
        let runs = match encode_runs::<C>(&rpc.entries, APPEND_BYTES) {
            Ok(runs) => runs,
            Err(e) => {
                let failure = Failure::Network(format!("encoding entries: {e}"));
                let _ = expect.send(Expect::Refused(failure)).await;
                return;
            }
        };
        let bytes: usize = runs.iter().map(|(b, _)| b.len()).sum();
        let permits = u32::try_from(bytes.clamp(1, IN_FLIGHT_BYTES)).unwrap_or(u32::MAX);
        let Ok(permit) = budget.clone().acquire_many_owned(permits).await else {
            return;
        };
        let vote = vote_to_wire::<C>(&rpc.vote);
        let leader_commit = opt_log_id_to_wire(&rpc.leader_commit);
        let request = |prev: &Option<StoredLogId>, entries: Vec<u8>| pb::AppendEntriesRequest {
            route: Some(link.route),
            vote: Some(vote),
            prev_log_id: opt_log_id_to_wire(prev),
            leader_commit,
            entries: entries.into(),
        };
        let mut requests = Vec::with_capacity(runs.len().max(1));
        let mut prev = rpc.prev_log_id;
        if runs.is_empty() {
            requests.push(request(&prev, Vec::new()));
        }
        for (entries, last) in runs {
            requests.push(request(&prev, entries));
            prev = Some(last);
        }
        let expected = Expect::Answers {
            runs: requests.len(),
            deadline: Instant::now() + transfer_deadline(ttl.max(PAYLOAD_DEADLINE), bytes),
            lose_reply,
            _room: (permit, slot),
        };
        if expect.send(expected).await.is_err() {
            return;
        }
        for request in requests {
            if wire.send(request).await.is_err() {
                return;
            }
        }
    }
}

/// The answer side of one stream.
struct Answers {
    link: Link,
    expected: mpsc::Receiver<Expect>,
    replies: Streaming<pb::AppendStreamReply>,
    _pump: AbortOnDrop,
}

impl Answers {
    /// The answer to the next request, and whether the stream goes on after it; `None` once
    /// the input has ended and every request is answered.
    async fn next<C: LogTypes>(&mut self) -> Option<(Answer<C>, bool)> {
        let (runs, deadline, lose_reply) = match self.expected.recv().await? {
            Expect::Refused(failure) => return Some((Err(self.link.error::<C>(failure)), false)),
            Expect::Lost { sent, ttl } => {
                tokio::time::sleep_until(sent + ttl).await;
                return Some((Err(self.link.error::<C>(Failure::Timeout(ttl))), false));
            }
            Expect::Answers {
                runs,
                deadline,
                lose_reply,
                ..
            } => (runs, deadline, lose_reply),
        };
        // Runs go one after the other, each continuing where the previous one ended. A run
        // that is not accepted answers for the request, with the runs before it matched.
        let mut matched: Option<Option<StoredLogId>> = None;
        for _ in 0..runs {
            let answer = match tokio::time::timeout_at(deadline, self.replies.message()).await {
                Err(_) => Err(Failure::Timeout(PAYLOAD_DEADLINE)),
                Ok(Err(status)) => Err(classify(&self.link.addr, &status)),
                Ok(Ok(None)) => Err(Failure::Network(format!(
                    "{}: AppendStream ended with requests unanswered",
                    self.link.addr
                ))),
                Ok(Ok(Some(reply))) => answer_from_wire::<C>(&self.link.addr, reply),
            };
            match (answer, matched) {
                (Ok(Ok(matching)), _) => matched = Some(matching),
                // The earlier runs are stored (the follower answers after its flush).
                (Err(_), Some(earlier)) => return Some((Ok(Ok(earlier)), false)),
                // The follower just accepted the run before; a conflict right after means its
                // log went back in between (a lost unsynced tail): not a match.
                (Ok(Err(StreamAppendError::Conflict(_))), Some(_)) => {
                    let failure = Failure::Network(format!(
                        "{}: log of node {} went back during a split AppendEntries",
                        self.link.addr, self.link.target
                    ));
                    return Some((Err(self.link.error::<C>(failure)), false));
                }
                (Ok(Err(refused)), _) => return Some((Ok(Err(refused)), false)),
                (Err(failure), None) => return Some((Err(self.link.error::<C>(failure)), false)),
            }
        }
        if lose_reply {
            let lost = format!("reply {} -> {} lost", self.link.target, self.link.from);
            return Some((Err(self.link.error::<C>(Failure::Network(lost))), false));
        }
        // Every request has at least one run: `matched` is set.
        Some((Ok(Ok(matched.unwrap_or_default())), true))
    }
}

/// One answer off the wire.
fn answer_from_wire<C: LogTypes>(
    addr: &str,
    reply: pb::AppendStreamReply,
) -> Result<StreamAppendResult<C>, Failure> {
    use pb::append_stream_reply::Result as R;
    match reply.result {
        Some(R::Accepted(m)) => Ok(Ok(m.matching.as_ref().map(log_id_from_wire))),
        Some(R::Conflict(at)) => Ok(Err(StreamAppendError::Conflict(log_id_from_wire(&at)))),
        Some(R::HigherVote(v)) => Ok(Err(StreamAppendError::HigherVote(vote_from_wire::<C>(&v)))),
        None => Err(Failure::Network(format!(
            "{addr}: empty AppendStream reply"
        ))),
    }
}

/// Stops the pump when openraft drops the answers (its session ended).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

//! The follower's side of pipelined replication: a leader's stream of `AppendEntries` handed to
//! openraft's `Raft::stream_append`, which takes the next request in while the previous ones are
//! still being written, and answers each in order once its entries are flushed. Consecutive
//! requests then share one group commit of the follower's log instead of one fsync each, and
//! the leader never waits a round trip between them.
//!
//! Every request holds its passage through the member's install gate from the moment it is
//! taken in until its answer leaves, as a single `AppendEntries` does: no snapshot install
//! starts under entries in flight.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::async_runtime::WatchReceiver;
use openraft::error::Fatal;
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use openraft::storage::RaftStateMachine;
use openraft::{Raft, RaftTypeConfig};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::install_gate::Passage;

/// Hands `input` to `raft` pipelined; `pass` yields the passage each request holds until its
/// answer. The answers come in request order and end after the first error.
pub(crate) fn append_pipelined<C, SM, S, P, F>(
    raft: &Raft<C, SM>,
    input: S,
    pass: P,
) -> impl Stream<Item = Result<StreamAppendResult<C>, Fatal<C>>> + Send + 'static
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C>,
    S: Stream<Item = AppendEntriesRequest<C>> + Send + 'static,
    P: Fn() -> F + Send + 'static,
    F: Future<Output = Passage> + Send + 'static,
{
    let held: Arc<Mutex<VecDeque<Passage>>> = Arc::default();
    let holding = held.clone();
    // A stream outlives no Raft: once this one stops, the requests end (openraft's reader of
    // them would otherwise wait for the next one to learn it), the answers end after the
    // requests taken before, and a server shutting down is not held open by the stream.
    let mut server = raft.server_metrics();
    let stopped = async move { while server.changed().await.is_ok() {} };
    // Nor does it outlive its answers. After a conflict they end with requests still taken
    // in and their passages held; the next request, waiting for its passage behind an install
    // that waits for those, would never learn that nothing answers any more. Dropping the
    // answers ends the requests, even one waiting for its passage, and that releases them.
    let (answering, answers_gone) = oneshot::channel::<()>();
    let gone = async move {
        let _ = answers_gone.await;
    };
    let input = input
        .then(move |request| {
            let passage = pass();
            let holding = holding.clone();
            async move {
                let passage = passage.await;
                holding.lock().push_back(passage);
                request
            }
        })
        .take_until(futures::future::select(Box::pin(stopped), Box::pin(gone)));
    raft.stream_append(input).map(move |answer| {
        let _answering = &answering;
        // Answers come in request order: this one's passage is the oldest held.
        drop(held.lock().pop_front());
        answer
    })
}

//! Send batching: a proxy's concurrent appends to one shard share calls to its leader
//! (`AppendMany`, see [`super::batched`]). The store queues the appends of one call together,
//! so they share Raft entries.
//!
//! An append the store answered with a retryable error is retried alone, which is safe for the
//! same reason any retried send is: the shard deduplicates sends that name their client by
//! (client id, message id) (ADR 0012).

use super::RETRY_FOR;
use super::Routing;
use super::batched::{Batcher, Kind, ManyResults, older_as_empty, results_of};
use crate::domain::{MessageRecord, ShardId};
use crate::pb::store as pb;
use crate::store_api::{AppendOutcome, AppendRequest, StoreError};
use crate::store_wire::{append_result_from_wire, append_to_wire, outcome_from_wire};

/// Appends, batched as `AppendMany`.
pub(super) struct Appends;

impl Kind for Appends {
    type Req = AppendRequest;
    type Wire = pb::AppendRequest;
    type Out = Vec<AppendOutcome>;
    const MANY: &'static str = "AppendMany";
    const MAX_REQUESTS: usize = 256;
    const MAX_BYTES: usize = 4 << 20;

    fn bytes(req: &AppendRequest) -> usize {
        req.messages.iter().map(MessageRecord::approx_size).sum()
    }

    fn to_wire(req: &AppendRequest) -> pb::AppendRequest {
        append_to_wire(req)
    }

    fn batcher(routing: &Routing) -> &Batcher<Self> {
        &routing.appends
    }

    async fn call_one(
        routing: &Routing,
        shard: ShardId,
        wire: pb::AppendRequest,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let reply = routing
            .on_shard(shard, RETRY_FOR, std::time::Duration::ZERO, |mut c| {
                let wire = wire.clone();
                async move { c.append(wire).await }
            })
            .await?;
        Ok(reply.outcomes.into_iter().map(outcome_from_wire).collect())
    }

    async fn call_many(
        routing: &Routing,
        shard: ShardId,
        appends: Vec<pb::AppendRequest>,
    ) -> ManyResults<Self> {
        let wire = pb::AppendManyRequest { shard, appends };
        let reply = routing
            .on_shard(shard, RETRY_FOR, std::time::Duration::ZERO, |mut c| {
                let wire = wire.clone();
                async move { older_as_empty(c.append_many(wire).await) }
            })
            .await?;
        Ok(results_of::<_, Self>(
            reply.results,
            append_result_from_wire,
        ))
    }
}

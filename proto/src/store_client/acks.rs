//! Ack batching: a proxy's concurrent acks of deliveries of one shard share calls to its leader
//! (`AckMany`, see [`super::batched`]). The store queues the acks of one call together, so they
//! share Raft entries.
//!
//! An ack the store answered with a retryable error is retried alone: acking a delivery twice
//! is harmless (the second finds it acknowledged and answers as the store does for a stale
//! receipt).

use super::RETRY_FOR;
use super::Routing;
use super::batched::{Batcher, Kind, ManyResults, older_as_empty, results_of};
use crate::domain::ShardId;
use crate::pb::store as pb;
use crate::receipt::ReceiptTicket;
use crate::store_api::StoreError;
use crate::store_wire::{ack_result_from_wire, ticket_to_wire};

/// How often a lone ack lets the proxy's runtime run before its call goes, so the rest of its
/// burst (a consumer acks every message of a receive at once) queues behind it and the burst
/// is one call and one Raft entry. Against a lone first ack going at once, through a
/// three-store cluster (docs/benchmarks.md, "A burst of acks is one call", 2026-12-07): one
/// consumer draining 9.6–10.6 k msg/s against 8.3 k, 82–90 µs of broker CPU per message against
/// 105, ack p50 1.5–1.6 ms against 2.2; a few microseconds when no burst follows.
pub(super) const LONE_ACK_YIELDS: u32 = 4;

/// Acks, batched as `AckMany`.
pub(super) struct Acks;

impl Kind for Acks {
    type Req = ReceiptTicket;
    type Wire = pb::Ticket;
    type Out = ();
    const MANY: &'static str = "AckMany";
    const MAX_REQUESTS: usize = 256;
    /// A ticket is a few dozen bytes: the count bounds a call.
    const MAX_BYTES: usize = usize::MAX;

    fn bytes(_: &ReceiptTicket) -> usize {
        0
    }

    fn to_wire(ticket: &ReceiptTicket) -> pb::Ticket {
        ticket_to_wire(ticket)
    }

    fn batcher(routing: &Routing) -> &Batcher<Self> {
        &routing.acks
    }

    async fn call_one(
        routing: &Routing,
        shard: ShardId,
        ticket: pb::Ticket,
    ) -> Result<(), StoreError> {
        let wire = pb::TicketRequest {
            ticket: Some(ticket),
        };
        routing
            .on_shard(shard, RETRY_FOR, std::time::Duration::ZERO, |mut c| {
                let wire = wire.clone();
                async move { c.ack(wire).await }
            })
            .await
            .map(|_| ())
    }

    async fn call_many(
        routing: &Routing,
        shard: ShardId,
        tickets: Vec<pb::Ticket>,
    ) -> ManyResults<Self> {
        let wire = pb::AckManyRequest { shard, tickets };
        let reply = routing
            .on_shard(shard, RETRY_FOR, std::time::Duration::ZERO, |mut c| {
                let wire = wire.clone();
                async move { older_as_empty(c.ack_many(wire).await) }
            })
            .await?;
        Ok(results_of::<_, Self>(reply.results, ack_result_from_wire))
    }
}

//! The store node's gRPC service (`vela.store.v1.Store`): what proxies of a cluster call through
//! `vela_proto::store_client::RemoteStore`. Wire input is validated into domain types here;
//! every receive, statistic and drop addresses one shard, which this node must lead.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vela_proto::cluster_status::member_to_wire;
use vela_proto::pb::store as pb;
use vela_proto::pb::store::store_server::{Store as StoreRpc, StoreServer};
use vela_proto::store_api::{StoreApi, StoreError, answer_each};
use vela_proto::store_wire::*;

use crate::{ShardRaft, Store};
use vela_proto::domain::ShardId;

/// Largest request or reply (a send of many large messages, a receive of 32).
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Makes a shard opened at runtime reachable over the node's Raft transport (`Some`), or no
/// longer reachable before it is removed (`None`).
pub type ShardRegistrar = Arc<dyn Fn(ShardId, Option<ShardRaft>) + Send + Sync>;

/// [`Store`] as the `vela.store.v1.Store` gRPC service.
pub struct StoreService {
    store: Arc<Store>,
    registrar: Option<ShardRegistrar>,
}

impl StoreService {
    /// The tonic service to add to the store node's server. It cannot open shards at runtime.
    pub fn server(store: Arc<Store>) -> StoreServer<StoreService> {
        Self::server_with(store, None)
    }

    /// The service, with `registrar` called for every shard `OpenShard` opens (the node's Raft
    /// server must route to it).
    pub fn server_with(
        store: Arc<Store>,
        registrar: Option<ShardRegistrar>,
    ) -> StoreServer<StoreService> {
        StoreServer::new(StoreService { store, registrar })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES.max(crate::copy_wire::MAX_CHUNK_BYTES))
    }
}

impl StoreService {
    fn registrar(&self) -> Result<&ShardRegistrar, Status> {
        self.registrar.as_ref().ok_or_else(|| {
            Status::unimplemented("this store node does not open or remove shards at runtime")
        })
    }

    /// `ChangeInvisible`, or with `renew` `RenewInvisible` (the delivery keeps its id).
    async fn make_invisible(
        &self,
        req: pb::ChangeInvisibleRequest,
        renew: bool,
    ) -> Result<Response<pb::Ticket>, Status> {
        let ticket = ticket_from_wire(req.ticket)?;
        let invisible = std::time::Duration::from_millis(req.invisible_ms);
        let changed = if renew {
            self.store.renew_invisible(&ticket, invisible).await
        } else {
            self.store.change_invisible(&ticket, invisible).await
        };
        Ok(Response::new(ticket_to_wire(&changed.map_err(failed)?)))
    }
}

fn failed(err: vela_proto::store_api::StoreError) -> Status {
    error_to_status(&err)
}

#[tonic::async_trait]
impl StoreRpc for StoreService {
    async fn open_shard(
        &self,
        request: Request<pb::OpenShardRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let (shard, replicas, mode) = open_shard_from_wire(request.into_inner())?;
        let registrar = self.registrar()?;
        let raft = match self.store.open_shard(shard, replicas, mode).await {
            Ok(raft) => raft,
            Err(err) => {
                // A stopped replica that could not be reopened is no longer held: its old
                // Raft must not keep receiving the group's messages.
                if !self.store.shard_ids().contains(&shard) {
                    registrar(shard, None);
                }
                return Err(failed(err));
            }
        };
        registrar(shard, Some(raft));
        Ok(Response::new(pb::Empty {}))
    }

    type CopyShardStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::CopyShardChunk, Status>> + Send + 'static>,
    >;

    async fn copy_shard(
        &self,
        request: Request<pb::CopyShardRequest>,
    ) -> Result<Response<Self::CopyShardStream>, Status> {
        use futures::StreamExt;
        let request = crate::copy_wire::request_from_wire(request.into_inner());
        let chunks = self.store.copy_shard(request).map_err(failed)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(chunks).map(|chunk| {
            chunk
                .map_err(failed)
                .and_then(|c| crate::copy_wire::chunk_to_wire(&c).map_err(Status::internal))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn change_members(
        &self,
        request: Request<pb::ChangeMembersRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let (shard, replicas) = change_members_from_wire(request.into_inner())?;
        self.store
            .change_members(shard, &replicas)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn remove_shard(
        &self,
        request: Request<pb::RemoveShardRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let wire = request.into_inner();
        let shard = wire.shard;
        let registrar = self.registrar()?.clone();
        self.store.this_node(wire.node).map_err(failed)?;
        self.store.removable(shard).map_err(failed)?;
        // Runs to its end in a task of its own: a caller that goes away (a deadline) must not
        // leave a replica half removed.
        let store = self.store.clone();
        tokio::spawn(async move {
            // Peers stop reaching the replica before it stops.
            let held = store.shard_rafts().into_iter().find(|(s, _)| *s == shard);
            registrar(shard, None);
            let removed = store.remove_shard(shard).await;
            if removed.is_err()
                && let Some((_, raft)) = held
                && store.shard_ids().contains(&shard)
            {
                // Still held (refused): reachable again.
                registrar(shard, Some(raft));
            }
            removed
        })
        .await
        .map_err(|e| Status::internal(format!("removing shard {shard}: {e}")))?
        .map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendReply>, Status> {
        let req = append_from_wire(request.into_inner())?;
        let outcomes = self.store.append(req).await.map_err(failed)?;
        Ok(Response::new(pb::AppendReply {
            outcomes: outcomes.iter().map(outcome_to_wire).collect(),
        }))
    }

    async fn append_many(
        &self,
        request: Request<pb::AppendManyRequest>,
    ) -> Result<Response<pb::AppendManyReply>, Status> {
        let wire = request.into_inner();
        let shard = wire.shard;
        // Not the leader: the whole call says so, and the proxy follows the hint once.
        self.store.refuse_unless_leading(shard).map_err(failed)?;
        // An append that does not decode (or names another shard) fails alone.
        let checked = wire
            .appends
            .into_iter()
            .map(|append| {
                let req =
                    append_from_wire(append).map_err(|e| StoreError::Invalid(e.to_string()))?;
                same_shard(shard, req.shard, "an append")?;
                Ok(req)
            })
            .collect();
        let results = answer_each(checked, |valid| self.store.append_many(valid)).await;
        Ok(Response::new(pb::AppendManyReply {
            results: results.iter().map(append_result_to_wire).collect(),
        }))
    }

    async fn pop(
        &self,
        request: Request<pb::PopRequest>,
    ) -> Result<Response<pb::PopReply>, Status> {
        let wire = request.into_inner();
        let shard = wire.shard;
        let req = pop_from_wire(wire)?;
        let deliveries = self.store.pop_shard(shard, req).await.map_err(failed)?;
        Ok(Response::new(pb::PopReply {
            deliveries: deliveries.iter().map(delivery_to_wire).collect(),
        }))
    }

    async fn await_deliverable(
        &self,
        request: Request<pb::PopRequest>,
    ) -> Result<Response<pb::AwaitReply>, Status> {
        let wire = request.into_inner();
        let shard = wire.shard;
        let req = pop_from_wire(wire)?;
        let deliverable = self
            .store
            .await_deliverable(shard, &req)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::AwaitReply { deliverable }))
    }

    async fn ack(
        &self,
        request: Request<pb::TicketRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let ticket = ticket_from_wire(request.into_inner().ticket)?;
        self.store.ack(&ticket).await.map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn ack_many(
        &self,
        request: Request<pb::AckManyRequest>,
    ) -> Result<Response<pb::AckManyReply>, Status> {
        let wire = request.into_inner();
        let shard = wire.shard;
        // Not the leader: the whole call says so, and the proxy follows the hint once.
        self.store.refuse_unless_leading(shard).map_err(failed)?;
        // A ticket that does not decode (or names another shard) fails alone.
        let checked = wire
            .tickets
            .into_iter()
            .map(|t| {
                let ticket =
                    ticket_from_wire(Some(t)).map_err(|e| StoreError::Invalid(e.to_string()))?;
                same_shard(shard, ticket.shard, "a ticket")?;
                Ok(ticket)
            })
            .collect();
        let results = answer_each(checked, |valid| self.store.ack_many(valid)).await;
        Ok(Response::new(pb::AckManyReply {
            results: results.iter().map(ack_result_to_wire).collect(),
        }))
    }

    async fn change_invisible(
        &self,
        request: Request<pb::ChangeInvisibleRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        self.make_invisible(request.into_inner(), false).await
    }

    async fn renew_invisible(
        &self,
        request: Request<pb::ChangeInvisibleRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        self.make_invisible(request.into_inner(), true).await
    }

    async fn dead_letter(
        &self,
        request: Request<pb::TicketRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let ticket = ticket_from_wire(request.into_inner().ticket)?;
        self.store.dead_letter(&ticket).await.map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn pull(
        &self,
        request: Request<pb::PullRequest>,
    ) -> Result<Response<pb::PullReply>, Status> {
        let req = pull_from_wire(request.into_inner())?;
        let pulled = self.store.pull_shard(&req).await.map_err(failed)?;
        Ok(Response::new(pulled_to_wire(&pulled)))
    }

    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupReply>, Status> {
        let wire = request.into_inner();
        let shard = wire.shard;
        let req = vela_proto::lookup::lookup_from_wire(wire)?;
        let found = self.store.lookup_shard(shard, &req).await.map_err(failed)?;
        Ok(Response::new(vela_proto::lookup::found_to_wire(&found)))
    }

    async fn recall(
        &self,
        request: Request<pb::RecallRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let req = request.into_inner();
        let topic = topic_from_wire(&req.topic)?;
        self.store
            .recall(&topic, &req.handle)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn end_transaction(
        &self,
        request: Request<pb::EndTransactionRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let req = request.into_inner();
        let topic = topic_from_wire(&req.topic)?;
        let resolution = resolution_from_wire(req.resolution)?;
        self.store
            .end_transaction(&topic, &req.transaction_id, resolution)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn transaction_checks(
        &self,
        request: Request<pb::TransactionChecksRequest>,
    ) -> Result<Response<pb::TransactionChecksReply>, Status> {
        let req = request.into_inner();
        let topics = req
            .topics
            .iter()
            .map(|t| topic_from_wire(t))
            .collect::<Result<Vec<_>, _>>()?;
        let max = usize::try_from(req.max).unwrap_or(usize::MAX);
        let checks = self
            .store
            .transaction_checks_shard(req.shard, &topics, max)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::TransactionChecksReply {
            checks: checks.iter().map(check_to_wire).collect(),
        }))
    }

    async fn offset_at(
        &self,
        request: Request<pb::OffsetAtRequest>,
    ) -> Result<Response<pb::OffsetAtReply>, Status> {
        let req = request.into_inner();
        let topic = topic_from_wire(&req.topic)?;
        let offset = self
            .store
            .offset_at_shard(req.shard, &topic, req.queue_id, req.at_ms)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::OffsetAtReply { offset }))
    }

    async fn reset_offset(
        &self,
        request: Request<pb::ResetOffsetRequest>,
    ) -> Result<Response<pb::OffsetAtReply>, Status> {
        let req = request.into_inner();
        let topic = topic_from_wire(&req.topic)?;
        let group =
            group_from_wire(&req.group).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let to = offset_target_from_wire(req.to, req.at_ms, req.offset)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let offset = self
            .store
            .reset_offset_shard(req.shard, &group, &topic, req.queue_id, to)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::OffsetAtReply { offset }))
    }

    async fn queue_stats(
        &self,
        request: Request<pb::QueueStatsRequest>,
    ) -> Result<Response<pb::QueueStatsReply>, Status> {
        let req = request.into_inner();
        let topic = topic_from_wire(&req.topic)?;
        let group = req.group.as_deref().map(group_from_wire).transpose()?;
        let pending = match req.group_created_ms {
            Some(created_ms) => Some((
                group_start_from_wire(req.group_start, req.group_start_ms)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
                created_ms,
            )),
            None => None,
        };
        let stats = self
            .store
            .queue_stats_shard(req.shard, &topic, group.as_ref(), pending)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::QueueStatsReply {
            queues: stats.iter().map(stats_to_wire).collect(),
        }))
    }

    async fn drop_topic(
        &self,
        request: Request<pb::DropTopicRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let req = request.into_inner();
        let topic = topic_from_wire(&req.topic)?;
        self.store
            .drop_topic_shard(req.shard, &topic, req.drop_id)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn set_topic_retention(
        &self,
        request: Request<pb::SetTopicRetentionRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let req = request.into_inner();
        let topic = topic_from_wire(&req.topic)?;
        if req.retention_ms == Some(0) {
            return Err(Status::invalid_argument(
                "a topic's retention must be above zero",
            ));
        }
        self.store
            .set_topic_retention_shard(req.shard, &topic, req.retention_ms, req.revision)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn drop_group(
        &self,
        request: Request<pb::DropGroupRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let req = request.into_inner();
        let group = group_from_wire(&req.group)?;
        if req.drop_id > 0 && req.drop_floor >= req.drop_id {
            // The floor says which drops are finished: never this one.
            return Err(Status::invalid_argument(format!(
                "group drop {} cannot be at or below its floor {}",
                req.drop_id, req.drop_floor
            )));
        }
        self.store
            .drop_group_shard(req.shard, &group, req.drop_id, req.drop_floor)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn node_status(
        &self,
        _request: Request<pb::Empty>,
    ) -> Result<Response<pb::NodeStatusReply>, Status> {
        let shards = self
            .store
            .member_statuses()
            .iter()
            .map(|m| pb::ShardMember {
                shard: m.shard,
                status: Some(member_to_wire(&m.status)),
                retention: m.retention.as_ref().map(|r| pb::TopicRetentions {
                    topics: r
                        .iter()
                        .map(|(topic, &retention_ms)| pb::TopicRetention {
                            topic: topic.to_string(),
                            retention_ms,
                        })
                        .collect(),
                }),
            })
            .collect();
        Ok(Response::new(pb::NodeStatusReply {
            shards,
            max_apply_version: crate::state::APPLY_VERSION,
        }))
    }

    async fn tier_status(
        &self,
        _request: Request<pb::Empty>,
    ) -> Result<Response<pb::TierStatusReply>, Status> {
        Ok(Response::new(pb::TierStatusReply {
            shards: self
                .store
                .tier_status()
                .iter()
                .map(|t| t.to_wire())
                .collect(),
        }))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let req = request.into_inner();
        self.store
            .transfer_leader(req.shard, req.to)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::Empty {}))
    }
}

/// Refuses a request of a batch that names another shard than the batch.
fn same_shard(batch: ShardId, named: ShardId, what: &str) -> Result<(), StoreError> {
    if named == batch {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{what} of shard {named} in a request for shard {batch}"
        )))
    }
}

//! `apache.rocketmq.v2.MessagingService`: the RPCs the official clients call. This file is
//! the shell every unary call goes through (client-id check, span, latency, error to
//! response); the work lives in `produce`, `consume`, `offsets` and `telemetry`.

mod consume;
mod offsets;
mod produce;
mod pull;
mod recall;
mod telemetry;

pub(crate) use consume::auto_renew;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use vela_proto::pb::rocketmq::{self as pb, Code, messaging_service_server::MessagingService};

use crate::Shared;
use crate::auth::needs::Needs;
use crate::headers::RequestMeta;
use crate::status::RpcError;

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A unary request: how to answer it when it is rejected as a whole, and where its response
/// keeps the status (for the latency metric).
pub(crate) trait UnaryRpc: Needs {
    type Response;
    /// The response for a request rejected with `status`; responses that must carry one entry
    /// per request item (Send, Ack) still do.
    fn rejected(&self, status: pb::Status) -> Self::Response;
    fn code(response: &Self::Response) -> i32;
}

macro_rules! status_only_rpc {
    ($($req:ident => $resp:ident),* $(,)?) => {$(
        impl UnaryRpc for pb::$req {
            type Response = pb::$resp;
            #[allow(clippy::needless_update)]
            fn rejected(&self, status: pb::Status) -> pb::$resp {
                pb::$resp { status: Some(status), ..Default::default() }
            }
            fn code(response: &pb::$resp) -> i32 {
                response.status.as_ref().map_or(0, |s| s.code)
            }
        }
    )*};
}

status_only_rpc!(
    QueryRouteRequest => QueryRouteResponse,
    HeartbeatRequest => HeartbeatResponse,
    QueryAssignmentRequest => QueryAssignmentResponse,
    ForwardMessageToDeadLetterQueueRequest => ForwardMessageToDeadLetterQueueResponse,
    UpdateOffsetRequest => UpdateOffsetResponse,
    GetOffsetRequest => GetOffsetResponse,
    QueryOffsetRequest => QueryOffsetResponse,
    EndTransactionRequest => EndTransactionResponse,
    NotifyClientTerminationRequest => NotifyClientTerminationResponse,
    RecallMessageRequest => RecallMessageResponse,
    SyncLiteSubscriptionRequest => SyncLiteSubscriptionResponse,
);

impl UnaryRpc for pb::SendMessageRequest {
    type Response = pb::SendMessageResponse;
    fn rejected(&self, status: pb::Status) -> pb::SendMessageResponse {
        let mut entries: Vec<pb::SendResultEntry> = self
            .messages
            .iter()
            .map(|m| pb::SendResultEntry {
                status: Some(status.clone()),
                message_id: crate::convert::message_id_of(m).to_owned(),
                ..Default::default()
            })
            .collect();
        if entries.is_empty() {
            // Rust 5.0.0 indexes entries[0]: never answer with none.
            entries.push(pb::SendResultEntry {
                status: Some(status.clone()),
                ..Default::default()
            });
        }
        pb::SendMessageResponse {
            status: Some(status),
            entries,
        }
    }
    fn code(response: &pb::SendMessageResponse) -> i32 {
        response.status.as_ref().map_or(0, |s| s.code)
    }
}

impl UnaryRpc for pb::AckMessageRequest {
    type Response = pb::AckMessageResponse;
    fn rejected(&self, status: pb::Status) -> pb::AckMessageResponse {
        let mut entries: Vec<pb::AckMessageResultEntry> = self
            .entries
            .iter()
            .map(|e| pb::AckMessageResultEntry {
                message_id: e.message_id.clone(),
                receipt_handle: e.receipt_handle.clone(),
                status: Some(status.clone()),
            })
            .collect();
        if entries.is_empty() {
            // Rust 5.0.0 indexes entries[0]: never answer with none.
            entries.push(pb::AckMessageResultEntry {
                status: Some(status.clone()),
                ..Default::default()
            });
        }
        pb::AckMessageResponse {
            status: Some(status),
            entries,
        }
    }
    fn code(response: &pb::AckMessageResponse) -> i32 {
        response.status.as_ref().map_or(0, |s| s.code)
    }
}

impl UnaryRpc for pb::ChangeInvisibleDurationRequest {
    type Response = pb::ChangeInvisibleDurationResponse;
    fn rejected(&self, status: pb::Status) -> pb::ChangeInvisibleDurationResponse {
        // Python and Node overwrite their handle with ours even on failure: hand the old one
        // back so it stays usable.
        pb::ChangeInvisibleDurationResponse {
            status: Some(status),
            receipt_handle: self.receipt_handle.clone(),
        }
    }
    fn code(response: &pb::ChangeInvisibleDurationResponse) -> i32 {
        response.status.as_ref().map_or(0, |s| s.code)
    }
}

/// The MessagingService implementation.
pub(crate) struct MessagingServer {
    shared: Arc<Shared>,
}

impl MessagingServer {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Runs one unary call: checks the client id, runs `work` in a span, turns a failure into
    /// the request's rejection and records the latency under the response code.
    async fn unary<R: UnaryRpc>(
        &self,
        rpc: &'static str,
        meta: &RequestMeta,
        req: &R,
        work: impl Future<Output = Result<R::Response, RpcError>>,
    ) -> Response<R::Response> {
        let started = Instant::now();
        let span = tracing::debug_span!(
            "rpc",
            rpc,
            client_id = meta.client_id.as_deref().unwrap_or("")
        );
        let outcome = match meta.require_client_id() {
            Ok(_) => match self.allowed(meta, req).await {
                Ok(()) => work.instrument(span.clone()).await,
                Err(denied) => Err(denied),
            },
            Err(e) => Err(e),
        };
        let response = outcome.unwrap_or_else(|err| {
            span.in_scope(
                || tracing::debug!(code = ?err.code, error = %err.message, "rpc rejected"),
            );
            req.rejected(err.to_status(meta.legacy_codes))
        });
        self.shared
            .ctx
            .metrics
            .observe_rpc(rpc, R::code(&response), started.elapsed());
        Response::new(response)
    }

    /// Whether the request's user may do what it asks (always, with auth off: what a request
    /// needs is only worked out when it is checked).
    async fn allowed(&self, meta: &RequestMeta, req: &impl Needs) -> Result<(), RpcError> {
        let guard = &self.shared.guard;
        if !guard.enabled() {
            return Ok(());
        }
        guard.check(meta, &req.needs(&meta.namespace)).await?;
        Ok(())
    }

    /// Answers `NOT_IMPLEMENTED` for the RPCs no supported client needs.
    async fn not_implemented<R: UnaryRpc>(
        &self,
        rpc: &'static str,
        request: Request<R>,
    ) -> Response<R::Response> {
        let meta = RequestMeta::from_request(&request);
        let req = request.into_inner();
        let work = async {
            Err(RpcError::new(
                Code::NotImplemented,
                format!("{rpc} is not implemented"),
            ))
        };
        self.unary(rpc, &meta, &req, work).await
    }
}

fn split<T>(request: Request<T>) -> (RequestMeta, T) {
    (RequestMeta::from_request(&request), request.into_inner())
}

#[tonic::async_trait]
impl MessagingService for MessagingServer {
    async fn query_route(
        &self,
        request: Request<pb::QueryRouteRequest>,
    ) -> Result<Response<pb::QueryRouteResponse>, Status> {
        let (meta, req) = split(request);
        Ok(self
            .unary(
                "QueryRoute",
                &meta,
                &req,
                produce::query_route(&self.shared, &meta, &req),
            )
            .await)
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let (meta, req) = split(request);
        Ok(self
            .unary(
                "Heartbeat",
                &meta,
                &req,
                consume::heartbeat(&self.shared, &meta, &req),
            )
            .await)
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let (meta, req) = split(request);
        Ok(self
            .unary(
                "SendMessage",
                &meta,
                &req,
                produce::send_message(&self.shared, &meta, &req),
            )
            .await)
    }

    async fn query_assignment(
        &self,
        request: Request<pb::QueryAssignmentRequest>,
    ) -> Result<Response<pb::QueryAssignmentResponse>, Status> {
        let (meta, req) = split(request);
        let work = consume::query_assignment(&self.shared, &meta, &req);
        Ok(self.unary("QueryAssignment", &meta, &req, work).await)
    }

    type ReceiveMessageStream = ResponseStream<pb::ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        request: Request<pb::ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, Status> {
        let (meta, req) = split(request);
        Ok(Response::new(consume::receive_stream(
            self.shared.clone(),
            meta,
            req,
        )))
    }

    async fn ack_message(
        &self,
        request: Request<pb::AckMessageRequest>,
    ) -> Result<Response<pb::AckMessageResponse>, Status> {
        let (meta, req) = split(request);
        Ok(self
            .unary(
                "AckMessage",
                &meta,
                &req,
                consume::ack_message(&self.shared, &meta, &req),
            )
            .await)
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<pb::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<pb::ForwardMessageToDeadLetterQueueResponse>, Status> {
        let (meta, req) = split(request);
        let work = consume::forward_to_dead_letter_queue(&self.shared, &meta, &req);
        Ok(self
            .unary("ForwardMessageToDeadLetterQueue", &meta, &req, work)
            .await)
    }

    type PullMessageStream = ResponseStream<pb::PullMessageResponse>;

    async fn pull_message(
        &self,
        request: Request<pb::PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, Status> {
        let meta = RequestMeta::from_request(&request);
        let refused = match meta.require_client_id() {
            Ok(_) => self.allowed(&meta, request.get_ref()).await.err(),
            Err(e) => Some(e),
        };
        if let Some(err) = refused {
            let item = pb::PullMessageResponse {
                content: Some(pb::pull_message_response::Content::Status(
                    err.to_status(meta.legacy_codes),
                )),
            };
            return Ok(Response::new(Box::pin(futures::stream::iter([Ok(item)]))));
        }
        Ok(Response::new(pull::pull_stream(
            self.shared.clone(),
            meta,
            request.into_inner(),
        )))
    }

    async fn update_offset(
        &self,
        request: Request<pb::UpdateOffsetRequest>,
    ) -> Result<Response<pb::UpdateOffsetResponse>, Status> {
        let (meta, req) = split(request);
        let work = offsets::update_offset(&self.shared, &meta, &req);
        Ok(self.unary("UpdateOffset", &meta, &req, work).await)
    }

    async fn get_offset(
        &self,
        request: Request<pb::GetOffsetRequest>,
    ) -> Result<Response<pb::GetOffsetResponse>, Status> {
        let (meta, req) = split(request);
        let work = offsets::get_offset(&self.shared, &meta, &req);
        Ok(self.unary("GetOffset", &meta, &req, work).await)
    }

    async fn query_offset(
        &self,
        request: Request<pb::QueryOffsetRequest>,
    ) -> Result<Response<pb::QueryOffsetResponse>, Status> {
        let (meta, req) = split(request);
        let work = offsets::query_offset(&self.shared, &meta, &req);
        Ok(self.unary("QueryOffset", &meta, &req, work).await)
    }

    async fn end_transaction(
        &self,
        request: Request<pb::EndTransactionRequest>,
    ) -> Result<Response<pb::EndTransactionResponse>, Status> {
        let (meta, req) = split(request);
        let work = produce::end_transaction(&self.shared, &meta, &req);
        Ok(self.unary("EndTransaction", &meta, &req, work).await)
    }

    type TelemetryStream = ResponseStream<pb::TelemetryCommand>;

    async fn telemetry(
        &self,
        request: Request<Streaming<pb::TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, Status> {
        let (meta, inbound) = split(request);
        // A stream is authenticated when it opens; each Settings it carries is authorized for
        // that user (who must still exist and be enabled), however long the stream lives.
        let user = self.shared.guard.check(&meta, &[]).await?;
        Ok(Response::new(telemetry::open(
            self.shared.clone(),
            meta,
            user,
            inbound,
        )))
    }

    async fn notify_client_termination(
        &self,
        request: Request<pb::NotifyClientTerminationRequest>,
    ) -> Result<Response<pb::NotifyClientTerminationResponse>, Status> {
        let (meta, req) = split(request);
        let work = consume::notify_client_termination(&self.shared, &meta, &req);
        Ok(self
            .unary("NotifyClientTermination", &meta, &req, work)
            .await)
    }

    async fn change_invisible_duration(
        &self,
        request: Request<pb::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<pb::ChangeInvisibleDurationResponse>, Status> {
        let (meta, req) = split(request);
        let work = consume::change_invisible_duration(&self.shared, &meta, &req);
        Ok(self
            .unary("ChangeInvisibleDuration", &meta, &req, work)
            .await)
    }

    async fn recall_message(
        &self,
        request: Request<pb::RecallMessageRequest>,
    ) -> Result<Response<pb::RecallMessageResponse>, Status> {
        let (meta, req) = split(request);
        let work = recall::recall_message(&self.shared, &meta, &req);
        Ok(self.unary("RecallMessage", &meta, &req, work).await)
    }

    async fn sync_lite_subscription(
        &self,
        request: Request<pb::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<pb::SyncLiteSubscriptionResponse>, Status> {
        Ok(self.not_implemented("SyncLiteSubscription", request).await)
    }
}

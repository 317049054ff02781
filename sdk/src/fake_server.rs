//! Test-only: a small in-process `MessagingService` on 127.0.0.1:0 that records every request
//! with its headers and answers like the RocketMQ proxy, so tests can check the SDK's wire
//! behaviour (request shapes, headers, retries, the Telemetry exchange).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use vela_proto::pb::rocketmq::messaging_service_server::{
    MessagingService, MessagingServiceServer,
};
use vela_proto::pb::rocketmq::{self as pb, Code, receive_message_response::Content};

/// One recorded call.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) headers: MetadataMap,
    pub(crate) request: Recorded,
}

// Test-only records; boxing the big variants would only add noise to every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum Recorded {
    QueryRoute(pb::QueryRouteRequest),
    Heartbeat(pb::HeartbeatRequest),
    Send(pb::SendMessageRequest),
    Receive(pb::ReceiveMessageRequest),
    Ack(pb::AckMessageRequest),
    ChangeInvisible(pb::ChangeInvisibleDurationRequest),
    Notify(pb::NotifyClientTerminationRequest),
    /// A command the client wrote on a Telemetry stream.
    Telemetry(pb::TelemetryCommand),
}

/// Knobs a test turns to make the fake misbehave.
#[derive(Debug, Default)]
pub(crate) struct Behaviour {
    /// Codes returned by the next SendMessage calls, in order (then OK).
    pub(crate) send_failures: VecDeque<Code>,
    /// `max_body_size` in the Settings reply (proxy default when 0).
    pub(crate) max_body_size: i32,
    /// Messages the next ReceiveMessage returns (all of them); none → MESSAGE_NOT_FOUND.
    pub(crate) deliveries: Vec<pb::Message>,
    /// How long ReceiveMessage holds the call before answering.
    pub(crate) receive_delay: Duration,
}

#[derive(Default)]
pub(crate) struct FakeState {
    pub(crate) calls: Mutex<Vec<Call>>,
    pub(crate) behaviour: Mutex<Behaviour>,
    next_offset: Mutex<i64>,
}

impl FakeState {
    fn record(&self, headers: &MetadataMap, request: Recorded) {
        self.calls.lock().push(Call {
            headers: headers.clone(),
            request,
        });
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.lock().clone()
    }
}

/// A running fake; dropped → server stops.
pub(crate) struct FakeServer {
    pub(crate) addr: SocketAddr,
    pub(crate) state: Arc<FakeState>,
    _stop: oneshot::Sender<()>,
}

impl FakeServer {
    pub(crate) async fn start() -> FakeServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(FakeState::default());
        let service = FakeService {
            state: state.clone(),
            addr,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(MessagingServiceServer::new(service))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    stopped.await.ok();
                })
                .await
                .unwrap();
        });
        FakeServer {
            addr,
            state,
            _stop: stop,
        }
    }

    pub(crate) fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Polls until `predicate` holds over the recorded calls (2 s at most).
    pub(crate) async fn wait_for(&self, what: &str, predicate: impl Fn(&[Call]) -> bool) {
        for _ in 0..200 {
            if predicate(&self.state.calls()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "timed out waiting for {what}; calls: {:#?}",
            self.state.calls()
        );
    }
}

fn ok() -> Option<pb::Status> {
    Some(pb::Status {
        code: Code::Ok as i32,
        message: "OK".into(),
    })
}

fn status(code: Code) -> Option<pb::Status> {
    Some(pb::Status {
        code: code as i32,
        message: code.as_str_name().into(),
    })
}

fn proto_duration(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}

struct FakeService {
    state: Arc<FakeState>,
    addr: SocketAddr,
}

impl FakeService {
    fn queue(&self, topic: pb::Resource) -> pb::MessageQueue {
        pb::MessageQueue {
            topic: Some(topic),
            id: 0,
            permission: pb::Permission::ReadWrite as i32,
            broker: Some(pb::Broker {
                name: "fake".into(),
                id: 0,
                endpoints: Some(pb::Endpoints {
                    scheme: pb::AddressScheme::IPv4 as i32,
                    addresses: vec![pb::Address {
                        host: self.addr.ip().to_string(),
                        port: i32::from(self.addr.port()),
                    }],
                }),
            }),
            accept_message_types: vec![
                pb::MessageType::Normal as i32,
                pb::MessageType::Fifo as i32,
                pb::MessageType::Delay as i32,
            ],
        }
    }
}

/// The proxy-style merged Settings reply to a client's Settings.
fn settings_reply(client: &pb::Settings, max_body_size: i32) -> pb::TelemetryCommand {
    let mut reply = client.clone();
    match &mut reply.pub_sub {
        Some(pb::settings::PubSub::Publishing(p)) => {
            p.max_body_size = if max_body_size > 0 {
                max_body_size
            } else {
                4 * 1024 * 1024
            };
            p.validate_message_type = true;
            reply.backoff_policy = Some(pb::RetryPolicy {
                max_attempts: 3,
                strategy: Some(pb::retry_policy::Strategy::ExponentialBackoff(
                    pb::ExponentialBackoff {
                        initial: proto_duration(Duration::from_millis(10)),
                        max: proto_duration(Duration::from_secs(1)),
                        multiplier: 2.0,
                    },
                )),
            });
        }
        Some(pb::settings::PubSub::Subscription(s)) => {
            s.receive_batch_size = Some(32);
            s.long_polling_timeout = proto_duration(Duration::from_secs(20));
            s.fifo = Some(false);
        }
        None => {}
    }
    reply.metric = Some(pb::Metric {
        on: false,
        endpoints: None,
    });
    pb::TelemetryCommand {
        status: ok(),
        command: Some(pb::telemetry_command::Command::Settings(reply)),
    }
}

type BoxStream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl MessagingService for FakeService {
    async fn query_route(
        &self,
        request: Request<pb::QueryRouteRequest>,
    ) -> Result<Response<pb::QueryRouteResponse>, Status> {
        let (headers, _, body) = request.into_parts();
        self.state
            .record(&headers, Recorded::QueryRoute(body.clone()));
        let topic = body.topic.unwrap_or_default();
        Ok(Response::new(pb::QueryRouteResponse {
            status: ok(),
            message_queues: vec![self.queue(topic)],
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let (headers, _, body) = request.into_parts();
        self.state.record(&headers, Recorded::Heartbeat(body));
        Ok(Response::new(pb::HeartbeatResponse { status: ok() }))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let (headers, _, body) = request.into_parts();
        self.state.record(&headers, Recorded::Send(body.clone()));
        if let Some(code) = self.state.behaviour.lock().send_failures.pop_front() {
            return Ok(Response::new(pb::SendMessageResponse {
                status: status(code),
                entries: vec![],
            }));
        }
        let mut next = self.state.next_offset.lock();
        let entries = body
            .messages
            .iter()
            .map(|m| {
                let offset = *next;
                *next += 1;
                pb::SendResultEntry {
                    status: ok(),
                    message_id: m
                        .system_properties
                        .as_ref()
                        .map(|s| s.message_id.clone())
                        .unwrap_or_default(),
                    transaction_id: String::new(),
                    offset,
                    recall_handle: String::new(),
                }
            })
            .collect();
        Ok(Response::new(pb::SendMessageResponse {
            status: ok(),
            entries,
        }))
    }

    async fn query_assignment(
        &self,
        _: Request<pb::QueryAssignmentRequest>,
    ) -> Result<Response<pb::QueryAssignmentResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    type ReceiveMessageStream = BoxStream<pb::ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        request: Request<pb::ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, Status> {
        let (headers, _, body) = request.into_parts();
        self.state.record(&headers, Recorded::Receive(body));
        let (deliveries, delay) = {
            let mut b = self.state.behaviour.lock();
            (std::mem::take(&mut b.deliveries), b.receive_delay)
        };
        tokio::time::sleep(delay).await;
        let mut items = Vec::new();
        if deliveries.is_empty() {
            items.push(Content::Status(pb::Status {
                code: Code::MessageNotFound as i32,
                message: "no new message".into(),
            }));
        } else {
            items.push(Content::Status(pb::Status {
                code: Code::Ok as i32,
                message: "OK".into(),
            }));
            items.extend(deliveries.into_iter().map(Content::Message));
        }
        items.push(Content::DeliveryTimestamp(
            std::time::SystemTime::now().into(),
        ));
        let stream = futures::stream::iter(
            items
                .into_iter()
                .map(|c| Ok(pb::ReceiveMessageResponse { content: Some(c) })),
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn ack_message(
        &self,
        request: Request<pb::AckMessageRequest>,
    ) -> Result<Response<pb::AckMessageResponse>, Status> {
        let (headers, _, body) = request.into_parts();
        self.state.record(&headers, Recorded::Ack(body.clone()));
        let entries = body
            .entries
            .into_iter()
            .map(|e| pb::AckMessageResultEntry {
                message_id: e.message_id,
                receipt_handle: e.receipt_handle,
                status: ok(),
            })
            .collect();
        Ok(Response::new(pb::AckMessageResponse {
            status: ok(),
            entries,
        }))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        _: Request<pb::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<pb::ForwardMessageToDeadLetterQueueResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    type PullMessageStream = BoxStream<pb::PullMessageResponse>;

    async fn pull_message(
        &self,
        _: Request<pb::PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn update_offset(
        &self,
        _: Request<pb::UpdateOffsetRequest>,
    ) -> Result<Response<pb::UpdateOffsetResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn get_offset(
        &self,
        _: Request<pb::GetOffsetRequest>,
    ) -> Result<Response<pb::GetOffsetResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn query_offset(
        &self,
        _: Request<pb::QueryOffsetRequest>,
    ) -> Result<Response<pb::QueryOffsetResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn end_transaction(
        &self,
        _: Request<pb::EndTransactionRequest>,
    ) -> Result<Response<pb::EndTransactionResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    type TelemetryStream = ReceiverStream<Result<pb::TelemetryCommand, Status>>;

    async fn telemetry(
        &self,
        request: Request<Streaming<pb::TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, Status> {
        let (headers, _, mut inbound) = request.into_parts();
        let (replies, replies_rx) = mpsc::channel(8);
        let state = self.state.clone();
        tokio::spawn(async move {
            while let Ok(Some(command)) = inbound.message().await {
                state.record(&headers, Recorded::Telemetry(command.clone()));
                if let Some(pb::telemetry_command::Command::Settings(s)) = &command.command {
                    let max = state.behaviour.lock().max_body_size;
                    if replies.send(Ok(settings_reply(s, max))).await.is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(replies_rx)))
    }

    async fn notify_client_termination(
        &self,
        request: Request<pb::NotifyClientTerminationRequest>,
    ) -> Result<Response<pb::NotifyClientTerminationResponse>, Status> {
        let (headers, _, body) = request.into_parts();
        self.state.record(&headers, Recorded::Notify(body));
        Ok(Response::new(pb::NotifyClientTerminationResponse {
            status: ok(),
        }))
    }

    async fn change_invisible_duration(
        &self,
        request: Request<pb::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<pb::ChangeInvisibleDurationResponse>, Status> {
        let (headers, _, body) = request.into_parts();
        let new_handle = format!("{}-renewed", body.receipt_handle);
        self.state.record(&headers, Recorded::ChangeInvisible(body));
        Ok(Response::new(pb::ChangeInvisibleDurationResponse {
            status: ok(),
            receipt_handle: new_handle,
        }))
    }

    async fn recall_message(
        &self,
        _: Request<pb::RecallMessageRequest>,
    ) -> Result<Response<pb::RecallMessageResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn sync_lite_subscription(
        &self,
        _: Request<pb::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<pb::SyncLiteSubscriptionResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
}

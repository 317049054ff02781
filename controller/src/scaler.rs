//! KEDA's external-scaler interface (`externalscaler.ExternalScaler`), so a `ScaledObject`
//! scales a consumer Deployment on its group's backlog: the messages of a topic the group has
//! not acknowledged (ready + in flight), summed over the topic's queues, the same `backlog`
//! `vela admin queues` shows per queue.
//!
//! Trigger metadata: `topic` and `consumerGroup` (required), `lagThreshold` (backlog per
//! replica the HPA aims at, default 10) and `activationLagThreshold` (active above this
//! backlog, default 0). The topic's placement comes from this node's copy of the metadata,
//! without a leader round trip, so any controller answers (a follower's copy may be a moment
//! old, which a scaler polling every few seconds does not notice).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use vela_proto::pb::externalscaler as pb;
use vela_proto::pb::externalscaler::external_scaler_server::{
    ExternalScaler, ExternalScalerServer,
};
use vela_proto::{GroupName, StoreApi, StoreError, TopicName};

use crate::Controller;

/// Backlog per replica when the trigger gives no `lagThreshold` (KEDA's Kafka scaler's too).
pub const DEFAULT_LAG_THRESHOLD: f64 = 10.0;
/// How often `StreamIsActive` looks at the backlog.
pub const STREAM_INTERVAL: Duration = Duration::from_secs(5);

/// What a trigger asks about, validated from its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub topic: TopicName,
    pub group: GroupName,
    pub lag_threshold: f64,
    pub activation_threshold: f64,
}

impl Trigger {
    /// Reads a trigger's metadata; a missing or malformed key is `INVALID_ARGUMENT`.
    pub fn parse(metadata: &HashMap<String, String>) -> Result<Self, Status> {
        let required = |key: &str| {
            metadata
                .get(key)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Status::invalid_argument(format!("trigger metadata needs `{key}`")))
        };
        let number = |key: &str, default: f64, min_exclusive: Option<f64>| {
            let Some(raw) = metadata
                .get(key)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
            else {
                return Ok(default);
            };
            let value: f64 = raw.parse().map_err(|_| {
                Status::invalid_argument(format!(
                    "trigger metadata `{key}` is {raw:?}, not a number"
                ))
            })?;
            let floor_ok = match min_exclusive {
                Some(min) => value > min,
                None => value >= 0.0,
            };
            if !value.is_finite() || !floor_ok {
                return Err(Status::invalid_argument(format!(
                    "trigger metadata `{key}` is {raw}: it must be {}",
                    if min_exclusive.is_some() {
                        "above 0"
                    } else {
                        "0 or more"
                    }
                )));
            }
            Ok(value)
        };
        let topic = TopicName::new(required("topic")?)
            .map_err(|e| Status::invalid_argument(format!("trigger metadata `topic`: {e}")))?;
        let group = GroupName::new(required("consumerGroup")?).map_err(|e| {
            Status::invalid_argument(format!("trigger metadata `consumerGroup`: {e}"))
        })?;
        Ok(Self {
            topic,
            group,
            lag_threshold: number("lagThreshold", DEFAULT_LAG_THRESHOLD, Some(0.0))?,
            activation_threshold: number("activationLagThreshold", 0.0, None)?,
        })
    }

    /// The metric's name: stable per topic and group, in the characters metric names allow.
    pub fn metric_name(&self) -> String {
        let clean = |s: &str| {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
        };
        format!(
            "vela-backlog-{}-{}",
            clean(self.topic.as_str()),
            clean(self.group.as_str())
        )
    }
}

/// The scaler service: reads placement from the controller's metadata and backlog from the
/// store nodes.
#[derive(Clone)]
pub struct Scaler {
    controller: Arc<Controller>,
    store: Arc<dyn StoreApi>,
    shutdown: CancellationToken,
}

impl Scaler {
    /// `shutdown` ends the `StreamIsActive` streams, so a graceful stop does not wait on KEDA.
    pub fn new(
        controller: Arc<Controller>,
        store: Arc<dyn StoreApi>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            controller,
            store,
            shutdown,
        }
    }

    /// The service, to add to a gRPC server.
    pub fn server(
        controller: Arc<Controller>,
        store: Arc<dyn StoreApi>,
        shutdown: CancellationToken,
    ) -> ExternalScalerServer<Self> {
        ExternalScalerServer::new(Self::new(controller, store, shutdown))
    }

    /// The group's backlog on the topic: `NOT_FOUND` for an unknown topic or group.
    pub async fn backlog(&self, trigger: &Trigger) -> Result<u64, Status> {
        let (shards, group) = {
            let metadata = self.controller.metadata.read();
            let topic = metadata.topic(&trigger.topic).ok_or_else(|| {
                Status::not_found(format!("topic {} does not exist", trigger.topic))
            })?;
            let group = metadata.group(&trigger.group).cloned().ok_or_else(|| {
                Status::not_found(format!("consumer group {} does not exist", trigger.group))
            })?;
            (vela_proto::shards_of_topic(topic, metadata.topics()), group)
        };
        // Queues the group has not read yet count from where it would start: a Deployment
        // scaled to zero still sees the messages waiting for it.
        vela_proto::store_api::group_backlog(self.store.as_ref(), &trigger.topic, &group, &shards)
            .await
            .map_err(store_status)
    }

    async fn is_active(&self, trigger: &Trigger) -> Result<bool, Status> {
        let backlog = self.backlog(trigger).await?;
        Ok(backlog as f64 > trigger.activation_threshold)
    }
}

fn store_status(err: StoreError) -> Status {
    match err {
        StoreError::QueueNotFound { .. } => Status::not_found(err.to_string()),
        StoreError::Invalid(_) => Status::invalid_argument(err.to_string()),
        StoreError::Internal(_) => Status::internal(err.to_string()),
        _ => Status::unavailable(err.to_string()),
    }
}

fn trigger_of(reference: Option<&pb::ScaledObjectRef>) -> Result<Trigger, Status> {
    let reference =
        reference.ok_or_else(|| Status::invalid_argument("the request names no ScaledObject"))?;
    Trigger::parse(&reference.scaler_metadata)
}

type ActiveStream = Pin<Box<dyn Stream<Item = Result<pb::IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for Scaler {
    async fn is_active(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::IsActiveResponse>, Status> {
        let trigger = trigger_of(Some(request.get_ref()))?;
        let result = Scaler::is_active(self, &trigger).await?;
        Ok(Response::new(pb::IsActiveResponse { result }))
    }

    type StreamIsActiveStream = ActiveStream;

    async fn stream_is_active(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let trigger = trigger_of(Some(request.get_ref()))?;
        let scaler = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let mut last = None;
            let mut tick = tokio::time::interval(STREAM_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = scaler.shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match scaler.is_active(&trigger).await {
                    Ok(active) if last != Some(active) => {
                        last = Some(active);
                        if tx
                            .send(Ok(pb::IsActiveResponse { result: active }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // KEDA reopens the stream after an error; unknown topics end it.
                    Err(status) if status.code() == tonic::Code::NotFound => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                    Err(status) => {
                        tracing::debug!(error = %status, topic = %trigger.topic, "scaler backlog");
                    }
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_metric_spec(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::GetMetricSpecResponse>, Status> {
        let trigger = trigger_of(Some(request.get_ref()))?;
        Ok(Response::new(pb::GetMetricSpecResponse {
            metric_specs: vec![pb::MetricSpec {
                metric_name: trigger.metric_name(),
                target_size: trigger.lag_threshold.ceil() as i64,
                target_size_float: trigger.lag_threshold,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let request = request.into_inner();
        let trigger = trigger_of(request.scaled_object_ref.as_ref())?;
        let backlog = self.backlog(&trigger).await?;
        let metric_name = if request.metric_name.is_empty() {
            trigger.metric_name()
        } else {
            request.metric_name
        };
        Ok(Response::new(pb::GetMetricsResponse {
            metric_values: vec![pb::MetricValue {
                metric_name,
                metric_value: i64::try_from(backlog).unwrap_or(i64::MAX),
                metric_value_float: backlog as f64,
            }],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn trigger_defaults_and_metric_name() {
        let t = Trigger::parse(&meta(&[
            ("topic", "Orders_EU"),
            ("consumerGroup", "billing_1"),
        ]))
        .expect("valid");
        assert_eq!(t.lag_threshold, DEFAULT_LAG_THRESHOLD);
        assert_eq!(t.activation_threshold, 0.0);
        assert_eq!(t.metric_name(), "vela-backlog-orders-eu-billing-1");
        let t = Trigger::parse(&meta(&[
            ("topic", "t"),
            ("consumerGroup", "g"),
            ("lagThreshold", "2.5"),
            ("activationLagThreshold", "7"),
        ]))
        .expect("valid");
        assert_eq!((t.lag_threshold, t.activation_threshold), (2.5, 7.0));
    }

    #[test]
    fn trigger_errors_name_the_key() {
        let err = |pairs: &[(&str, &str)]| {
            let status = Trigger::parse(&meta(pairs)).expect_err("invalid");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            status.message().to_owned()
        };
        assert!(err(&[("consumerGroup", "g")]).contains("`topic`"));
        assert!(err(&[("topic", "t")]).contains("`consumerGroup`"));
        assert!(
            err(&[
                ("topic", "t"),
                ("consumerGroup", "g"),
                ("lagThreshold", "0")
            ])
            .contains("above 0")
        );
        assert!(
            err(&[
                ("topic", "t"),
                ("consumerGroup", "g"),
                ("lagThreshold", "ten")
            ])
            .contains("not a number")
        );
        assert!(
            err(&[
                ("topic", "t"),
                ("consumerGroup", "g"),
                ("activationLagThreshold", "-1")
            ])
            .contains("0 or more")
        );
        assert!(err(&[("topic", "bad topic!"), ("consumerGroup", "g")]).contains("`topic`"));
    }
}

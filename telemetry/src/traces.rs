//! Traces across SDK → proxy (issue 9): a message carries its producer's W3C `traceparent` in
//! RocketMQ's `trace_context` system property; the proxy continues that trace with a span of
//! its own while it stores the message, and exports its spans over OTLP with the metrics.
//! Sampling follows the producer: a message without a sampled context costs one check and
//! makes no span (`ParentBased(AlwaysOff)`).

use std::collections::HashMap;
use std::time::Duration;

pub use opentelemetry::global::BoxedSpan;
use opentelemetry::global::BoxedTracer;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span, SpanContext, SpanKind, Status, TraceContextExt, Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

use crate::otlp::{OtlpConfig, OtlpProtocol};

/// The span context a `trace_context` value (a W3C `traceparent`) names, if it is valid.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let carrier = HashMap::from([("traceparent".to_owned(), value.trim().to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let span = cx.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// The `traceparent` of `cx`'s span, for a message's `trace_context`; `None` when it has none.
pub fn traceparent(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes a role's spans; off (no spans, no cost but a check) unless traces are exported.
#[derive(Clone)]
pub struct MessageTracer {
    tracer: Option<std::sync::Arc<BoxedTracer>>,
}

impl std::fmt::Debug for MessageTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageTracer")
            .field("on", &self.tracer.is_some())
            .finish()
    }
}

impl MessageTracer {
    pub fn off() -> Self {
        Self { tracer: None }
    }

    pub fn is_on(&self) -> bool {
        self.tracer.is_some()
    }

    /// A server span continuing the trace `trace_context` names; `None` when tracing is off
    /// or the message carries no valid context.
    pub fn continue_trace(
        &self,
        name: String,
        trace_context: Option<&str>,
        attributes: Vec<KeyValue>,
    ) -> Option<BoxedSpan> {
        let tracer = self.tracer.as_ref()?;
        let parent = parse_traceparent(trace_context?)?;
        let cx = Context::new().with_remote_span_context(parent);
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(tracer.as_ref(), &cx);
        span.span_context().is_sampled().then_some(span)
    }
}

/// Ends `span` with an error status when `result` is an error.
pub fn end_span<T, E: std::fmt::Display>(span: Option<BoxedSpan>, result: &Result<T, E>) {
    if let Some(mut span) = span {
        if let Err(e) = result {
            span.set_status(Status::error(e.to_string()));
        }
        span.end();
    }
}

/// The process's span pipeline: batches spans on tokio and exports them to the OTLP
/// endpoint of `config`.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Starts exporting spans to `config.endpoint`, if set; call on the tokio runtime.
    pub fn start(config: &OtlpConfig, service: &str) -> Result<Option<Self>, String> {
        let Some(endpoint) = config.endpoint.clone().filter(|_| config.traces) else {
            return Ok(None);
        };
        config.validate()?;
        let built = match config.protocol {
            OtlpProtocol::Grpc => {
                let mut builder = SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint.clone())
                    .with_timeout(config.timeout)
                    .with_metadata(config.metadata()?);
                if endpoint.starts_with("https://") {
                    builder = builder.with_tls_config(config.grpc_tls()?);
                }
                builder.build()
            }
            OtlpProtocol::Http => {
                let builder = SpanExporter::builder()
                    .with_http()
                    .with_endpoint(OtlpConfig::http_url_for(&endpoint, "/v1/traces"))
                    .with_timeout(config.timeout)
                    .with_headers(config.headers.clone().into_iter().collect())
                    .with_http_client(config.http_client()?);
                builder.build()
            }
        };
        let exporter =
            built.map_err(|e| format!("telemetry.otlp: cannot build the span exporter: {e}"))?;
        let batch = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .with_batch_config(
            opentelemetry_sdk::trace::BatchConfigBuilder::default()
                .with_scheduled_delay(config.interval.min(Duration::from_secs(5)))
                .build(),
        )
        .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .build();
        Ok(Some(Self { provider }))
    }

    /// The tracer of one role (`vela-proxy`…).
    pub fn tracer(&self, scope: &'static str) -> MessageTracer {
        MessageTracer {
            tracer: Some(std::sync::Arc::new(BoxedTracer::new(Box::new(
                self.provider.tracer(scope),
            )))),
        }
    }

    /// Exports what is batched and stops (blocks: call off the async workers).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "span exporter shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip_and_bad_ones_are_ignored() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = parse_traceparent(value).expect("valid");
        assert!(parsed.is_sampled());
        let cx = Context::new().with_remote_span_context(parsed);
        assert_eq!(traceparent(&cx).as_deref(), Some(value));
        for bad in [
            "",
            "trace",
            "00-0000-00-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        assert!(traceparent(&Context::new()).is_none());
    }

    #[test]
    fn an_off_tracer_makes_no_spans() {
        let off = MessageTracer::off();
        assert!(
            off.continue_trace(
                "x".into(),
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                vec![]
            )
            .is_none()
        );
    }
}

//! Tracing with OpenTelemetry (issue 9). The SDK records on the process's global tracer
//! provider (`opentelemetry::global`): an application that installs one gets
//!
//! - a PRODUCER span `send <topic>` per send call, child of the caller's current span, whose
//!   context travels with each message as its `trace_context` (a W3C `traceparent`), where
//!   the proxy continues it and consumers find it ([`MessageView::trace_context`]);
//! - a CONSUMER span `receive <topic>` per receive that returned messages, linked to each
//!   message's producer span;
//! - a CONSUMER span `process <topic>` per call of a [`PushConsumer`](crate::PushConsumer)'s
//!   listener, linked to the message's producer span; the listener runs in its context, so
//!   the spans it makes are its children, and a failure marks it as an error.
//!
//! Without a provider installed the global one is a no-op: no spans, no `trace_context`.

use std::time::SystemTime;

use opentelemetry::global::{self, BoxedSpan};
use opentelemetry::trace::{Link, Span, SpanContext, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

use crate::MessageView;

const SCOPE: &str = "vela-sdk";

/// A send's span and the `traceparent` its messages carry (`None` when nothing traces).
pub(crate) struct SendSpan {
    span: BoxedSpan,
    pub traceparent: Option<String>,
}

/// Starts the span of one send call.
pub(crate) fn send_span(topic: &str, client_id: &str, messages: usize) -> SendSpan {
    let tracer = global::tracer(SCOPE);
    let span = tracer
        .span_builder(format!("send {topic}"))
        .with_kind(SpanKind::Producer)
        .with_attributes([
            KeyValue::new("messaging.system", "rocketmq"),
            KeyValue::new("messaging.operation.name", "send"),
            KeyValue::new("messaging.destination.name", topic.to_owned()),
            KeyValue::new("messaging.client.id", client_id.to_owned()),
            KeyValue::new("messaging.batch.message_count", messages as i64),
        ])
        .start(&tracer);
    let traceparent = traceparent(span.span_context());
    SendSpan { span, traceparent }
}

impl SendSpan {
    /// Ends the span with the send's outcome.
    pub fn end<T>(mut self, result: &crate::Result<T>) {
        if let Err(e) = result {
            self.span.set_status(Status::error(e.to_string()));
        }
        self.span.end();
    }
}

/// Records the span of a receive that returned `messages`, started at `started`, linked to
/// every message's producer span.
pub(crate) fn receive_span(
    topic: &str,
    group: &str,
    client_id: &str,
    started: SystemTime,
    messages: &[MessageView],
) {
    if messages.is_empty() {
        return;
    }
    let links: Vec<Link> = messages
        .iter()
        .filter_map(MessageView::trace_context)
        .map(Link::with_context)
        .collect();
    let tracer = global::tracer(SCOPE);
    let mut span = tracer
        .span_builder(format!("receive {topic}"))
        .with_kind(SpanKind::Consumer)
        .with_start_time(started)
        .with_links(links)
        .with_attributes([
            KeyValue::new("messaging.system", "rocketmq"),
            KeyValue::new("messaging.operation.name", "receive"),
            KeyValue::new("messaging.destination.name", topic.to_owned()),
            KeyValue::new("messaging.consumer.group.name", group.to_owned()),
            KeyValue::new("messaging.client.id", client_id.to_owned()),
            KeyValue::new("messaging.batch.message_count", messages.len() as i64),
        ])
        .start(&tracer);
    span.end();
}

/// Starts the span of a push listener's call on `message`; the listener runs in the context
/// returned, and [`end_process`] ends it.
pub(crate) fn process_span(message: &MessageView, group: &str, client_id: &str) -> Context {
    let tracer = global::tracer(SCOPE);
    let links: Vec<Link> = message
        .trace_context()
        .map(Link::with_context)
        .into_iter()
        .collect();
    let span = tracer
        .span_builder(format!("process {}", message.topic))
        .with_kind(SpanKind::Consumer)
        .with_links(links)
        .with_attributes([
            KeyValue::new("messaging.system", "rocketmq"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.destination.name", message.topic.clone()),
            KeyValue::new("messaging.consumer.group.name", group.to_owned()),
            KeyValue::new("messaging.client.id", client_id.to_owned()),
            KeyValue::new("messaging.message.id", message.message_id.clone()),
            KeyValue::new(
                "messaging.rocketmq.message.delivery_attempt",
                i64::from(message.delivery_attempt),
            ),
        ])
        .start(&tracer);
    Context::current_with_span(span)
}

/// Ends the span [`process_span`] started, as an error unless the listener succeeded.
pub(crate) fn end_process(cx: &Context, succeeded: bool) {
    let span = cx.span();
    if !succeeded {
        span.set_status(Status::error("the listener failed"));
    }
    span.end();
}

/// The `traceparent` of a span context, if it is valid.
fn traceparent(span: &SpanContext) -> Option<String> {
    vela_telemetry::traces::traceparent(&Context::new().with_remote_span_context(span.clone()))
}

/// The span context a `traceparent` names, if it is valid.
pub(crate) fn parse_traceparent(value: &str) -> Option<SpanContext> {
    vela_telemetry::traces::parse_traceparent(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_tracer_provider_nothing_is_traced() {
        let span = send_span("orders", "c1", 1);
        assert!(span.traceparent.is_none());
        span.end::<()>(&Ok(()));
    }

    #[test]
    fn traceparents_parse_only_when_valid() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse_traceparent(ok).expect("valid");
        assert_eq!(traceparent(&cx).as_deref(), Some(ok));
        assert!(parse_traceparent("junk").is_none());
    }
}

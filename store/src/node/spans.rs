//! The store's spans (issue 9): a message whose `trace_context` names a sampled producer span
//! gets a span of the store in that trace while it is made durable (from the append's arrival
//! to its commit by the shard's log), beside the proxy's. Off (one check) unless traces are
//! exported.

use vela_proto::domain::MessageRecord;
use vela_proto::store_api::{AppendRequest, StoreError};
use vela_telemetry::KeyValue;
use vela_telemetry::traces::{BoxedSpan, MessageTracer, end_span};

use super::Store;

impl Store {
    /// Makes this store's spans with `tracer` (set once; later calls change nothing).
    pub fn set_tracer(&self, tracer: MessageTracer) {
        let _ = self.tracer.set(tracer);
    }

    /// A span per message of `req` that carries a sampled trace.
    pub(super) fn append_spans(&self, req: &AppendRequest) -> Vec<BoxedSpan> {
        let Some(tracer) = self.tracer.get().filter(|t| t.is_on()) else {
            return Vec::new();
        };
        req.messages
            .iter()
            .filter_map(|m: &MessageRecord| {
                tracer.continue_trace(
                    format!("store {}", req.topic),
                    m.trace_context.as_deref(),
                    vec![
                        KeyValue::new("messaging.system", "rocketmq"),
                        KeyValue::new("messaging.destination.name", req.topic.as_str().to_owned()),
                        KeyValue::new("messaging.message.id", m.message_id.clone()),
                        KeyValue::new("vela.shard", i64::from(req.shard)),
                        KeyValue::new("vela.queue_id", i64::from(req.queue_id)),
                    ],
                )
            })
            .collect()
    }
}

/// Ends the spans of an append with its outcome.
pub(super) fn end_append_spans<T>(spans: Vec<BoxedSpan>, result: &Result<T, StoreError>) {
    for span in spans {
        end_span(Some(span), result);
    }
}

//! The labels every Vela metric carries, as RocketMQ's broker and proxy put them on theirs:
//! `cluster`, `node_type` and `node_id`.

use std::sync::Arc;

use opentelemetry::{KeyValue, StringValue, Value};

/// Which role recorded a metric (`node_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeType {
    Proxy,
    Store,
    Controller,
}

impl NodeType {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Proxy => "proxy",
            NodeType::Store => "store",
            NodeType::Controller => "controller",
        }
    }
}

/// The common labels of one role in one process; cheap to clone and to attach.
#[derive(Debug, Clone)]
pub struct NodeLabels {
    common: Arc<[KeyValue]>,
}

/// An attribute whose value is shared, not copied, by every data point that carries it.
pub fn shared(key: &'static str, value: &str) -> KeyValue {
    KeyValue::new(
        key,
        Value::String(StringValue::from(Arc::<str>::from(value))),
    )
}

impl NodeLabels {
    pub fn new(cluster: &str, node_type: NodeType, node_id: &str) -> Self {
        Self {
            common: Arc::from(vec![
                shared("cluster", cluster),
                KeyValue::new("node_type", node_type.as_str()),
                shared("node_id", node_id),
            ]),
        }
    }

    /// Labels for tests and for metrics recorded outside any node.
    pub fn unnamed(node_type: NodeType) -> Self {
        Self::new("vela", node_type, "0")
    }

    /// The common labels followed by `extra`.
    pub fn with<const N: usize>(&self, extra: [KeyValue; N]) -> Vec<KeyValue> {
        let mut all = Vec::with_capacity(self.common.len() + N);
        all.extend(self.common.iter().cloned());
        all.extend(extra);
        all
    }

    /// Only the common labels.
    pub fn common(&self) -> &[KeyValue] {
        &self.common
    }
}

/// `is_system`: RocketMQ's label for its own topics and groups (`rmq_sys_…`, `%RETRY%…`,
/// `%DLQ%…` and the like); Vela's system names start with `%` or `rmq_sys_`.
pub fn is_system(name: &str) -> bool {
    name.starts_with('%') || name.starts_with("rmq_sys_") || name.starts_with("RMQ_SYS_")
}

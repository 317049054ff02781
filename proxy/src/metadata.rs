//! Topic and group metadata as the proxy sees it: looked up at the controller, created on
//! first use when the auto-creation switches are on, and cached briefly so the hot paths
//! (send, receive) do not ask the controller on every call. Only hits are cached, so a topic
//! created elsewhere is usable at once; this proxy's admin calls drop entries they change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use vela_proto::pb::rocketmq::Code;
use vela_proto::{
    ControllerApi, ControllerError, DEFAULT_MAX_ATTEMPTS, DLQ_PREFIX, GroupConfig, GroupName,
    GroupSpec, TopicConfig, TopicName, TopicSpec, TopicType,
};

use crate::status::RpcError;

/// How long a looked-up topic or group is trusted. Short: a deletion through another proxy
/// is noticed within this time.
const CACHE_TTL: Duration = Duration::from_secs(3);

struct Cached<T> {
    value: Arc<T>,
    fetched_at: Instant,
}

/// Metadata lookups with auto-creation and a short-lived cache.
pub(crate) struct Metadata {
    controller: Arc<dyn ControllerApi>,
    auto_create_topics: bool,
    auto_create_groups: bool,
    default_queue_count: u32,
    topics: RwLock<HashMap<TopicName, Cached<TopicConfig>>>,
    groups: RwLock<HashMap<GroupName, Cached<GroupConfig>>>,
}

fn fresh<K: std::hash::Hash + Eq, T>(
    map: &RwLock<HashMap<K, Cached<T>>>,
    key: &K,
) -> Option<Arc<T>> {
    let guard = map.read();
    let entry = guard.get(key)?;
    (entry.fetched_at.elapsed() < CACHE_TTL).then(|| entry.value.clone())
}

fn remember<K: std::hash::Hash + Eq, T>(
    map: &RwLock<HashMap<K, Cached<T>>>,
    key: K,
    value: T,
) -> Arc<T> {
    let value = Arc::new(value);
    map.write().insert(
        key,
        Cached {
            value: value.clone(),
            fetched_at: Instant::now(),
        },
    );
    value
}

impl Metadata {
    pub fn new(
        controller: Arc<dyn ControllerApi>,
        auto_create_topics: bool,
        auto_create_groups: bool,
        default_queue_count: u32,
    ) -> Self {
        Self {
            controller,
            auto_create_topics,
            auto_create_groups,
            default_queue_count: default_queue_count.max(1),
            topics: RwLock::default(),
            groups: RwLock::default(),
        }
    }

    /// The topic's configuration; `TOPIC_NOT_FOUND` unless it exists or may be auto-created.
    /// Auto-created topics are `mixed`, so producers of every message type can use them.
    pub async fn topic(&self, name: &TopicName) -> Result<Arc<TopicConfig>, RpcError> {
        if let Some(hit) = fresh(&self.topics, name) {
            return Ok(hit);
        }
        if let Some(config) = self.controller.get_topic(name).await? {
            return Ok(remember(&self.topics, name.clone(), config));
        }
        // `%DLQ%<group>` exists implicitly once its group does, whatever the auto-creation
        // switches say: the store dead-letters into it.
        if let Some(group) = name.as_str().strip_prefix(DLQ_PREFIX)
            && let Ok(group) = GroupName::new(group)
        {
            return match self.controller.ensure_dead_letter_topic(&group).await {
                Ok(config) => Ok(remember(&self.topics, name.clone(), config)),
                Err(ControllerError::NotFound(_)) => Err(RpcError::new(
                    Code::TopicNotFound,
                    format!("topic {name} not found (no consumer group {group})"),
                )),
                Err(e) => Err(e.into()),
            };
        }
        if !self.auto_create_topics {
            return Err(RpcError::new(
                Code::TopicNotFound,
                format!("topic {name} not found"),
            ));
        }
        let spec = TopicSpec {
            name: name.clone(),
            topic_type: TopicType::Mixed,
            queue_count: self.default_queue_count,
            auto_created: true,
        };
        let config = match self.controller.create_topic(spec).await {
            Ok(config) => {
                tracing::info!(topic = %name, queues = config.queue_count, "auto-created topic");
                config
            }
            // Another proxy (or call) created it first.
            Err(ControllerError::AlreadyExists(_)) => {
                self.controller.get_topic(name).await?.ok_or_else(|| {
                    RpcError::new(Code::TopicNotFound, format!("topic {name} not found"))
                })?
            }
            Err(e) => return Err(e.into()),
        };
        Ok(remember(&self.topics, name.clone(), config))
    }

    /// The group's configuration; `CONSUMER_GROUP_NOT_FOUND` unless it exists or may be
    /// auto-created (not FIFO, default attempts).
    pub async fn group(&self, name: &GroupName) -> Result<Arc<GroupConfig>, RpcError> {
        if let Some(hit) = fresh(&self.groups, name) {
            return Ok(hit);
        }
        if let Some(config) = self.controller.get_group(name).await? {
            return Ok(remember(&self.groups, name.clone(), config));
        }
        let not_found = || {
            RpcError::new(
                Code::ConsumerGroupNotFound,
                format!("consumer group {name} not found"),
            )
        };
        if !self.auto_create_groups {
            return Err(not_found());
        }
        let spec = GroupSpec {
            name: name.clone(),
            fifo: false,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            auto_created: true,
        };
        let config = match self.controller.create_group(spec).await {
            Ok(config) => {
                tracing::info!(group = %name, "auto-created consumer group");
                config
            }
            Err(ControllerError::AlreadyExists(_)) => self
                .controller
                .get_group(name)
                .await?
                .ok_or_else(not_found)?,
            Err(e) => return Err(e.into()),
        };
        Ok(remember(&self.groups, name.clone(), config))
    }

    pub fn forget_topic(&self, name: &TopicName) {
        self.topics.write().remove(name);
    }

    pub fn forget_group(&self, name: &GroupName) {
        self.groups.write().remove(name);
    }
}

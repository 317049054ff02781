//! Topic and group metadata as the proxy sees it: looked up at the controller, created on
//! first use when the auto-creation switches are on, and cached so the hot paths (send,
//! receive) do not ask the controller on every call. Only hits are cached, so a topic created
//! elsewhere is usable at once; this proxy's admin calls drop entries they change. An entry
//! older than a few seconds is refreshed in the background while it is still served, so data
//! traffic on known topics never depends on the controller being up.

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
    /// A background refresh of this entry is running.
    refreshing: bool,
}

/// A cache shared with the background refreshes.
type Cache<K, T> = Arc<RwLock<HashMap<K, Cached<T>>>>;

/// Metadata lookups with auto-creation and a short-lived cache. An entry older than the TTL is
/// still served while one background lookup refreshes it: data traffic on a known topic never
/// waits for the controller, and carries on while no controller answers at all.
pub(crate) struct Metadata {
    controller: Arc<dyn ControllerApi>,
    auto_create_topics: bool,
    auto_create_groups: bool,
    default_queue_count: u32,
    ttl: Duration,
    topics: Cache<TopicName, TopicConfig>,
    groups: Cache<GroupName, GroupConfig>,
}

/// What the cache holds for a key.
enum Lookup<T> {
    Fresh(Arc<T>),
    /// Older than the TTL; `refresh`: this caller starts the background refresh.
    Stale {
        value: Arc<T>,
        refresh: bool,
    },
    Miss,
}

fn lookup<K: std::hash::Hash + Eq, T>(
    map: &RwLock<HashMap<K, Cached<T>>>,
    key: &K,
    ttl: Duration,
) -> Lookup<T> {
    {
        let guard = map.read();
        match guard.get(key) {
            None => return Lookup::Miss,
            Some(entry) if entry.fetched_at.elapsed() < ttl => {
                return Lookup::Fresh(entry.value.clone());
            }
            Some(entry) if entry.refreshing => {
                return Lookup::Stale {
                    value: entry.value.clone(),
                    refresh: false,
                };
            }
            Some(_) => {}
        }
    }
    let mut guard = map.write();
    match guard.get_mut(key) {
        None => Lookup::Miss,
        Some(entry) => {
            let refresh = !entry.refreshing;
            entry.refreshing = true;
            Lookup::Stale {
                value: entry.value.clone(),
                refresh,
            }
        }
    }
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
            refreshing: false,
        },
    );
    value
}

/// Refreshes one stale entry in the background: replaced when the controller answers, removed
/// when it says the name is gone (the next call looks it up again), kept as it is when the
/// controller cannot answer (the next call after that tries again).
fn refresh_in_background<K, T, F, Fut>(map: Cache<K, T>, key: K, fetch: F)
where
    K: std::hash::Hash + Eq + Clone + std::fmt::Display + Send + Sync + 'static,
    T: Send + Sync + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Option<T>, ControllerError>> + Send,
{
    tokio::spawn(async move {
        match fetch().await {
            Ok(Some(value)) => {
                remember(&map, key, value);
            }
            Ok(None) => {
                map.write().remove(&key);
            }
            Err(err) => {
                tracing::debug!(name = %key, error = %err, "metadata refresh failed; serving what is cached");
                if let Some(entry) = map.write().get_mut(&key) {
                    entry.refreshing = false;
                }
            }
        }
    });
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
            ttl: CACHE_TTL,
            topics: Cache::default(),
            groups: Cache::default(),
        }
    }

    /// The same with entries trusted for `ttl` (tests).
    #[cfg(test)]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The topic's configuration; `TOPIC_NOT_FOUND` unless it exists or may be auto-created.
    /// Auto-created topics are `mixed`, so producers of every message type can use them.
    pub async fn topic(&self, name: &TopicName) -> Result<Arc<TopicConfig>, RpcError> {
        match lookup(&self.topics, name, self.ttl) {
            Lookup::Fresh(hit) => return Ok(hit),
            Lookup::Stale { value, refresh } => {
                if refresh {
                    let (controller, key) = (self.controller.clone(), name.clone());
                    refresh_in_background(self.topics.clone(), name.clone(), move || async move {
                        controller.get_topic(&key).await
                    });
                }
                return Ok(value);
            }
            Lookup::Miss => {}
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

    /// The topic's configuration if it exists; never creates one (for background work that
    /// names topics clients only mentioned, such as a producer's Settings).
    pub async fn existing_topic(&self, name: &TopicName) -> Option<Arc<TopicConfig>> {
        match lookup(&self.topics, name, self.ttl) {
            Lookup::Fresh(hit) | Lookup::Stale { value: hit, .. } => Some(hit),
            Lookup::Miss => {
                let config = self.controller.get_topic(name).await.ok()??;
                Some(remember(&self.topics, name.clone(), config))
            }
        }
    }

    /// The group's configuration; `CONSUMER_GROUP_NOT_FOUND` unless it exists or may be
    /// auto-created (not FIFO, default attempts).
    pub async fn group(&self, name: &GroupName) -> Result<Arc<GroupConfig>, RpcError> {
        match lookup(&self.groups, name, self.ttl) {
            Lookup::Fresh(hit) => return Ok(hit),
            Lookup::Stale { value, refresh } => {
                if refresh {
                    let (controller, key) = (self.controller.clone(), name.clone());
                    refresh_in_background(self.groups.clone(), name.clone(), move || async move {
                        controller.get_group(&key).await
                    });
                }
                return Ok(value);
            }
            Lookup::Miss => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::fakes::FakeController;

    #[tokio::test]
    async fn known_names_are_served_while_the_controller_is_down_and_refreshed_after() {
        let controller = Arc::new(FakeController::default());
        let ttl = Duration::from_millis(20);
        let md = Metadata::new(controller.clone(), true, true, 4).with_ttl(ttl);
        let orders = TopicName::new("orders").expect("valid");
        let billing = GroupName::new("billing").expect("valid");
        let created = md.topic(&orders).await.expect("auto-created");
        md.group(&billing).await.expect("auto-created");

        controller.set_down(true);
        for _ in 0..5 {
            tokio::time::sleep(ttl * 2).await;
            let topic = md.topic(&orders).await.expect("served from the cache");
            assert_eq!(topic.queue_shards, created.queue_shards);
            md.group(&billing).await.expect("served from the cache");
        }
        // A name never seen needs the controller.
        let unseen = TopicName::new("unseen").expect("valid");
        assert!(md.topic(&unseen).await.is_err());

        // Back up: a topic deleted meanwhile is noticed by the refresh.
        controller.set_down(false);
        controller.delete_topic(&orders).await.expect("deleted");
        let mut gone = false;
        for _ in 0..50 {
            tokio::time::sleep(ttl).await;
            if md.topics.read().get(&orders).is_none() {
                gone = true;
                break;
            }
            md.topic(&orders).await.ok();
        }
        assert!(gone, "the refresh never noticed the deletion");
    }
}

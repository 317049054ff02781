//! Topic and group metadata as the proxy sees it: looked up at the controller, created on
//! first use when the auto-creation switches are on, and cached so the hot paths (send,
//! receive) do not ask the controller on every call. An entry older than a few seconds is
//! refreshed in the background while it is still served, so data traffic on known topics never
//! depends on the controller being up; this proxy's admin calls drop entries they change.
//!
//! Topics are auto-created only where clients declare them (QueryRoute, QueryAssignment:
//! [`Metadata::declare_topic`]), never by a send, a receive, a heartbeat or Telemetry; groups
//! on first use. Creation is rate-limited per proxy ([`CREATIONS_PER_MINUTE`], bursts of
//! [`CREATION_BURST`]), and a name the controller does not know is remembered as missing for
//! [`MISS_TTL`], so a client hammering unknown names costs the controller one lookup per name
//! per interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use vela_proto::pb::rocketmq::Code;
use vela_proto::{
    ControllerApi, ControllerError, DEFAULT_MAX_ATTEMPTS, DLQ_PREFIX, GroupConfig, GroupName,
    GroupSpec, GroupStart, TopicConfig, TopicName, TopicSpec, TopicType,
};

use crate::auth::Creator;
use crate::status::RpcError;
use vela_proto::auth::Resource;

/// How long a looked-up topic or group is trusted. Short: a deletion through another proxy
/// is noticed within this time.
const CACHE_TTL: Duration = Duration::from_secs(3);
/// How long a name the controller did not know answers "not found" without asking again: a
/// topic created through another proxy is usable here within this time.
const MISS_TTL: Duration = Duration::from_secs(2);
/// Names remembered as missing, at most (the memory is cleared when full).
const MAX_MISSES: usize = 10_000;
/// Auto-creations (topics and groups together) one proxy makes a minute, sustained...
pub(crate) const CREATIONS_PER_MINUTE: u32 = 60;
/// ...and at once.
pub(crate) const CREATION_BURST: u32 = 20;

/// Names the controller recently did not know.
struct Misses<K> {
    at: RwLock<HashMap<K, Instant>>,
}

impl<K: std::hash::Hash + Eq + Clone> Misses<K> {
    fn new() -> Self {
        Self {
            at: RwLock::new(HashMap::new()),
        }
    }

    fn recent(&self, key: &K) -> bool {
        self.at
            .read()
            .get(key)
            .is_some_and(|at| at.elapsed() < MISS_TTL)
    }

    fn remember(&self, key: &K) {
        let mut at = self.at.write();
        if at.len() >= MAX_MISSES {
            at.retain(|_, t| t.elapsed() < MISS_TTL);
            if at.len() >= MAX_MISSES {
                at.clear();
            }
        }
        at.insert(key.clone(), Instant::now());
    }

    fn forget(&self, key: &K) {
        self.at.write().remove(key);
    }
}

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
    missing_topics: Misses<TopicName>,
    missing_groups: Misses<GroupName>,
    /// Groups whose deletion is not finished: auto-creating them is refused, so it is not
    /// asked again within [`MISS_TTL`].
    reserved_groups: Misses<GroupName>,
    /// Topics the controller refused to create because their deletion is not finished (the
    /// same, for producers declaring them).
    reserved_topics: Misses<TopicName>,
    creations: governor::DefaultDirectRateLimiter,
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

fn creation_quota() -> governor::Quota {
    let burst = std::num::NonZeroU32::new(CREATION_BURST).unwrap_or(std::num::NonZeroU32::MIN);
    let per_minute =
        std::num::NonZeroU32::new(CREATIONS_PER_MINUTE).unwrap_or(std::num::NonZeroU32::MIN);
    governor::Quota::per_minute(per_minute).allow_burst(burst)
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
            missing_topics: Misses::new(),
            missing_groups: Misses::new(),
            reserved_groups: Misses::new(),
            reserved_topics: Misses::new(),
            creations: governor::RateLimiter::direct(creation_quota()),
        }
    }

    /// Takes one auto-creation from the rate limit, or says why not.
    fn may_create(&self, kind: &str, name: &str) -> Result<(), RpcError> {
        self.creations.check().map_err(|_| {
            tracing::warn!(kind, name, "auto-creation rate limit reached");
            RpcError::new(
                Code::TooManyRequests,
                format!(
                    "{kind} {name} not created: this proxy auto-creates at most \
                     {CREATIONS_PER_MINUTE} topics and groups a minute; create it with \
                     `vela admin {kind} create`"
                ),
            )
        })
    }

    /// The same with entries trusted for `ttl` (tests).
    #[cfg(test)]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The topic's configuration; `TOPIC_NOT_FOUND` unless it exists (a dead-letter topic
    /// exists once its group does).
    pub async fn topic(&self, name: &TopicName) -> Result<Arc<TopicConfig>, RpcError> {
        self.find_topic(name, None).await
    }

    /// [`topic`](Self::topic) for a client declaring the topic (QueryRoute, QueryAssignment):
    /// created when auto-creation is on and the rate limit allows. Auto-created topics are
    /// `mixed`, so producers of every message type can use them.
    /// `creator` must be allowed to create it (with auth on).
    pub async fn declare_topic(
        &self,
        name: &TopicName,
        creator: Creator<'_>,
    ) -> Result<Arc<TopicConfig>, RpcError> {
        let create = self.auto_create_topics.then_some(creator);
        self.find_topic(name, create).await
    }

    async fn find_topic(
        &self,
        name: &TopicName,
        create: Option<Creator<'_>>,
    ) -> Result<Arc<TopicConfig>, RpcError> {
        let not_found = || RpcError::new(Code::TopicNotFound, format!("topic {name} not found"));
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
        let is_dead_letter = name.as_str().starts_with(DLQ_PREFIX);
        if create.is_none() && !is_dead_letter && self.missing_topics.recent(name) {
            return Err(not_found());
        }
        if let Some(config) = self.controller.get_topic(name).await? {
            self.missing_topics.forget(name);
            return Ok(remember(&self.topics, name.clone(), config));
        }
        if let Some(found) = dead_letter_topic(self.controller.as_ref(), name).await {
            return match found {
                Ok(Some(config)) => Ok(remember(&self.topics, name.clone(), config)),
                Ok(None) => Err(RpcError::new(
                    Code::TopicNotFound,
                    format!("topic {name} not found (no consumer group of that name)"),
                )),
                Err(e) => Err(e.into()),
            };
        }
        let Some(creator) = create else {
            self.missing_topics.remember(name);
            return Err(not_found());
        };
        let being_deleted = |reason: String| RpcError::new(Code::TopicNotFound, reason);
        if self.reserved_topics.recent(name) {
            return Err(being_deleted(format!(
                "topic {name} is still being deleted"
            )));
        }
        creator.may_create(Resource::topic(name.as_str())).await?;
        self.may_create("topic", name.as_str())?;
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
            Err(ControllerError::AlreadyExists(_)) => self
                .controller
                .get_topic(name)
                .await?
                .ok_or_else(not_found)?,
            Err(ControllerError::BeingDeleted(reason)) => {
                self.reserved_topics.remember(name);
                return Err(being_deleted(reason));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(remember(&self.topics, name.clone(), config))
    }

    /// The topic's configuration if it exists; never creates one (for background work that
    /// names topics clients only mentioned, such as a producer's Settings).
    pub async fn existing_topic(&self, name: &TopicName) -> Option<Arc<TopicConfig>> {
        match lookup(&self.topics, name, self.ttl) {
            Lookup::Fresh(hit) => Some(hit),
            Lookup::Stale { value, refresh } => {
                // Served as known, and refreshed like any lookup, so a topic deleted or
                // changed since is noticed here too.
                if refresh {
                    let (controller, key) = (self.controller.clone(), name.clone());
                    refresh_in_background(self.topics.clone(), name.clone(), move || async move {
                        controller.get_topic(&key).await
                    });
                }
                Some(value)
            }
            Lookup::Miss if self.missing_topics.recent(name) => None,
            Lookup::Miss => match self.controller.get_topic(name).await {
                Ok(Some(config)) => Some(remember(&self.topics, name.clone(), config)),
                Ok(None) => {
                    self.missing_topics.remember(name);
                    None
                }
                Err(_) => None,
            },
        }
    }

    /// The group's configuration if it exists; never creates one (for pollers such as
    /// GetOffset, whose wrong names must not add groups).
    pub async fn existing_group(&self, name: &GroupName) -> Option<Arc<GroupConfig>> {
        match lookup(&self.groups, name, self.ttl) {
            Lookup::Fresh(hit) => Some(hit),
            Lookup::Stale { value, refresh } => {
                if refresh {
                    self.refresh_group(name);
                }
                Some(value)
            }
            Lookup::Miss if self.missing_groups.recent(name) => None,
            Lookup::Miss => match self.controller.get_group(name).await {
                Ok(Some(config)) => Some(remember(&self.groups, name.clone(), config)),
                Ok(None) => {
                    self.missing_groups.remember(name);
                    None
                }
                Err(_) => None,
            },
        }
    }

    /// The group's configuration; `CONSUMER_GROUP_NOT_FOUND` unless it exists or may be
    /// auto-created (not FIFO, default attempts).
    /// `creator` must be allowed to create it (with auth on).
    pub async fn group(
        &self,
        name: &GroupName,
        creator: Creator<'_>,
    ) -> Result<Arc<GroupConfig>, RpcError> {
        match lookup(&self.groups, name, self.ttl) {
            Lookup::Fresh(hit) => return Ok(hit),
            Lookup::Stale { value, refresh } => {
                if refresh {
                    self.refresh_group(name);
                }
                return Ok(value);
            }
            Lookup::Miss => {}
        }
        let not_found = || {
            RpcError::new(
                Code::ConsumerGroupNotFound,
                format!("consumer group {name} not found"),
            )
        };
        let being_deleted = |reason: String| RpcError::new(Code::ConsumerGroupNotFound, reason);
        if self.reserved_groups.recent(name) {
            return Err(being_deleted(format!(
                "consumer group {name} is still being deleted"
            )));
        }
        if !self.auto_create_groups && self.missing_groups.recent(name) {
            return Err(not_found());
        }
        if let Some(config) = self.controller.get_group(name).await? {
            self.missing_groups.forget(name);
            return Ok(remember(&self.groups, name.clone(), config));
        }
        if !self.auto_create_groups {
            self.missing_groups.remember(name);
            return Err(not_found());
        }
        creator.may_create(Resource::group(name.as_str())).await?;
        self.may_create("group", name.as_str())?;
        let spec = GroupSpec {
            name: name.clone(),
            fifo: false,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            auto_created: true,
            start: GroupStart::Auto,
            retry: vela_proto::retry::RetryBackoff::Standard,
            broadcast: false,
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
            Err(ControllerError::BeingDeleted(reason)) => {
                self.reserved_groups.remember(name);
                return Err(being_deleted(reason));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(remember(&self.groups, name.clone(), config))
    }

    /// Looks the group up again in the background (its cached entry went stale).
    fn refresh_group(&self, name: &GroupName) {
        let (controller, key) = (self.controller.clone(), name.clone());
        refresh_in_background(self.groups.clone(), name.clone(), move || async move {
            controller.get_group(&key).await
        });
    }

    pub fn forget_topic(&self, name: &TopicName) {
        self.topics.write().remove(name);
        self.missing_topics.forget(name);
        self.reserved_topics.forget(name);
    }

    pub fn forget_group(&self, name: &GroupName) {
        self.groups.write().remove(name);
        self.missing_groups.forget(name);
        self.reserved_groups.forget(name);
    }
}

/// `%DLQ%<group>` exists implicitly once its group does, whatever the auto-creation switches
/// say (the store dead-letters into it): the controller creates it when first asked. `None`
/// when `name` is no dead-letter topic's name; `Ok(None)` when its group does not exist.
pub(crate) async fn dead_letter_topic(
    controller: &dyn ControllerApi,
    name: &TopicName,
) -> Option<Result<Option<TopicConfig>, ControllerError>> {
    let group = GroupName::new(name.as_str().strip_prefix(DLQ_PREFIX)?).ok()?;
    Some(match controller.ensure_dead_letter_topic(&group).await {
        Ok(config) => Ok(Some(config)),
        Err(ControllerError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    })
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
        let created = md
            .declare_topic(&orders, Creator::internal())
            .await
            .expect("auto-created");
        md.group(&billing, Creator::internal())
            .await
            .expect("auto-created");

        controller.set_down(true);
        for _ in 0..5 {
            tokio::time::sleep(ttl * 2).await;
            let topic = md.topic(&orders).await.expect("served from the cache");
            assert_eq!(topic.queue_shards, created.queue_shards);
            md.group(&billing, Creator::internal())
                .await
                .expect("served from the cache");
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

    #[tokio::test]
    async fn existing_topic_refreshes_what_it_serves() {
        let controller = Arc::new(FakeController::default());
        let ttl = Duration::from_millis(20);
        let md = Metadata::new(controller.clone(), true, true, 4).with_ttl(ttl);
        let orders = TopicName::new("orders").expect("valid");
        md.declare_topic(&orders, Creator::internal())
            .await
            .expect("auto-created");
        assert!(md.existing_topic(&orders).await.is_some());
        controller.delete_topic(&orders).await.expect("deleted");
        let mut gone = false;
        for _ in 0..50 {
            tokio::time::sleep(ttl).await;
            if md.topics.read().get(&orders).is_none() {
                gone = true;
                break;
            }
            md.existing_topic(&orders).await;
        }
        assert!(gone, "existing_topic kept serving a deleted topic");
    }

    #[tokio::test]
    async fn existing_group_refreshes_what_it_serves() {
        let controller = Arc::new(FakeController::default());
        let ttl = Duration::from_millis(20);
        let md = Metadata::new(controller.clone(), true, true, 4).with_ttl(ttl);
        let billing = GroupName::new("billing").expect("valid");
        md.group(&billing, Creator::internal())
            .await
            .expect("auto-created");
        assert!(md.existing_group(&billing).await.is_some());
        controller.delete_group(&billing).await.expect("deleted");
        let mut gone = false;
        for _ in 0..50 {
            tokio::time::sleep(ttl).await;
            if md.groups.read().get(&billing).is_none() {
                gone = true;
                break;
            }
            md.existing_group(&billing).await;
        }
        assert!(gone, "existing_group kept serving a deleted group");
    }

    /// A group whose deletion is not finished is not auto-created again: its consumers get
    /// CONSUMER_GROUP_NOT_FOUND with the reason, and their calls do not each ask the
    /// controller (nor spend the proxy's creation budget).
    #[tokio::test]
    async fn a_group_still_being_deleted_is_not_found_and_not_asked_for_again() {
        let controller = Arc::new(FakeController::default());
        let md = Metadata::new(controller.clone(), true, true, 4);
        let billing = GroupName::new("billing").expect("valid");
        md.group(&billing, Creator::internal())
            .await
            .expect("auto-created");
        // Deleted, its drop not finished.
        controller.delete_group(&billing).await.expect("deleted");
        md.forget_group(&billing);
        for _ in 0..CREATION_BURST + 5 {
            let err = md
                .group(&billing, Creator::internal())
                .await
                .expect_err("reserved");
            assert_eq!(err.code, Code::ConsumerGroupNotFound);
            assert!(
                err.message.contains("still being deleted"),
                "{}",
                err.message
            );
        }
        // The creation budget is untouched.
        md.group(
            &GroupName::new("other").expect("valid"),
            Creator::internal(),
        )
        .await
        .expect("auto-created");
    }

    /// The same for a topic: producers declaring it get TOPIC_NOT_FOUND with the reason, once
    /// asked for, without spending the creation budget.
    #[tokio::test]
    async fn a_topic_still_being_deleted_is_not_found_and_not_asked_for_again() {
        let controller = Arc::new(FakeController::default());
        let md = Metadata::new(controller.clone(), true, true, 4);
        let orders = TopicName::new("orders").expect("valid");
        md.declare_topic(&orders, Creator::internal())
            .await
            .expect("auto-created");
        controller.delete_topic(&orders).await.expect("deleted");
        md.forget_topic(&orders);
        for _ in 0..CREATION_BURST + 5 {
            let err = md
                .declare_topic(&orders, Creator::internal())
                .await
                .expect_err("reserved");
            assert_eq!(err.code, Code::TopicNotFound);
            assert!(
                err.message.contains("still being deleted"),
                "{}",
                err.message
            );
        }
        md.declare_topic(
            &TopicName::new("other").expect("valid"),
            Creator::internal(),
        )
        .await
        .expect("the creation budget is untouched");
    }

    #[tokio::test]
    async fn only_declarations_create_topics_and_creations_are_rate_limited() {
        let controller = Arc::new(FakeController::default());
        let md = Metadata::new(controller.clone(), true, true, 4);
        let orders = TopicName::new("orders").expect("valid");
        let err = md.topic(&orders).await.expect_err("a send does not create");
        assert_eq!(err.code, Code::TopicNotFound);
        assert!(controller.get_topic(&orders).await.expect("get").is_none());
        // A declaration creates, even right after the miss.
        md.declare_topic(&orders, Creator::internal())
            .await
            .expect("declared");
        md.topic(&orders).await.expect("found now");

        // A burst of garbage declarations: CREATION_BURST are created, then TOO_MANY_REQUESTS.
        let mut limited = 0;
        for i in 0..CREATION_BURST + 5 {
            let name = TopicName::new(format!("junk-{i}")).expect("valid");
            if let Err(e) = md.declare_topic(&name, Creator::internal()).await {
                assert_eq!(e.code, Code::TooManyRequests);
                limited += 1;
            }
        }
        // `orders` used one of the burst.
        assert_eq!(limited, 6);
        let err = md
            .group(
                &GroupName::new("g-late").expect("valid"),
                Creator::internal(),
            )
            .await
            .expect_err("groups share the limit");
        assert_eq!(err.code, Code::TooManyRequests);
        // Existing names never spend the limit.
        md.declare_topic(&orders, Creator::internal())
            .await
            .expect("exists");
    }

    #[tokio::test]
    async fn a_missing_name_is_remembered_briefly() {
        let controller = Arc::new(FakeController::default());
        let md = Metadata::new(controller.clone(), false, false, 4);
        let orders = TopicName::new("orders").expect("valid");
        let billing = GroupName::new("billing").expect("valid");
        assert_eq!(
            md.declare_topic(&orders, Creator::internal())
                .await
                .expect_err("off")
                .code,
            Code::TopicNotFound
        );
        assert_eq!(
            md.group(&billing, Creator::internal())
                .await
                .expect_err("off")
                .code,
            Code::ConsumerGroupNotFound
        );
        // Created elsewhere (another proxy): unseen here for a moment, then found.
        controller
            .create_topic(TopicSpec {
                name: orders.clone(),
                topic_type: TopicType::Normal,
                queue_count: 1,
                auto_created: false,
            })
            .await
            .expect("created");
        controller.set_down(true);
        assert_eq!(
            md.topic(&orders)
                .await
                .expect_err("remembered missing")
                .code,
            Code::TopicNotFound,
            "answered without the controller"
        );
        controller.set_down(false);
        tokio::time::sleep(MISS_TTL + Duration::from_millis(50)).await;
        md.topic(&orders)
            .await
            .expect("found after the miss expired");
        // This proxy's own admin call clears the memory at once.
        md.forget_group(&billing);
        controller
            .create_group(GroupSpec {
                name: billing.clone(),
                fifo: false,
                max_attempts: 3,
                auto_created: false,
                start: GroupStart::Auto,
                retry: Default::default(),
                broadcast: false,
            })
            .await
            .expect("created");
        md.group(&billing, Creator::internal())
            .await
            .expect("found");
    }
}

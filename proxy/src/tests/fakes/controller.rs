//! The fake controller: metadata, users and ACLs, routes in maps.

use super::*;
use vela_proto::tier_credentials::ManagedTierCredentials;

#[derive(Default)]
pub struct FakeController {
    /// While set, lookups fail as they do when no controller node answers.
    down: std::sync::atomic::AtomicBool,
    proxies: Mutex<BTreeMap<String, String>>,
    topics: Mutex<BTreeMap<TopicName, TopicConfig>>,
    groups: Mutex<BTreeMap<GroupName, GroupConfig>>,
    auth: Mutex<vela_proto::auth::AuthData>,
    routes: Mutex<BTreeMap<vela_proto::RouteName, vela_proto::route::RouteConfig>>,
    receipt_keys: Mutex<Option<vela_proto::receipt_keys::ManagedKeys>>,
    tier_credentials: Mutex<Option<ManagedTierCredentials>>,
    /// Deleted topics whose drop is not finished, and the newest drop id (groups' too).
    dropping: Mutex<(BTreeMap<TopicName, vela_proto::TopicDrop>, u64)>,
    /// Deleted groups whose drop is not finished.
    group_drops: Mutex<BTreeMap<GroupName, vela_proto::GroupDrop>>,
}

impl FakeController {
    /// Makes lookups fail (`Unavailable`) or answer again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check_up(&self) -> Result<(), ControllerError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ControllerError::Unavailable(
                "no controller node answers".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl ControllerApi for FakeController {
    async fn create_topic(&self, spec: TopicSpec) -> Result<TopicConfig, ControllerError> {
        if self.dropping.lock().0.contains_key(&spec.name) {
            return Err(ControllerError::BeingDeleted(format!(
                "topic {} is still being deleted",
                spec.name
            )));
        }
        let mut topics = self.topics.lock();
        if topics.contains_key(&spec.name) {
            return Err(ControllerError::AlreadyExists(format!(
                "topic {}",
                spec.name
            )));
        }
        if spec.queue_count == 0 {
            return Err(ControllerError::Invalid(
                "queue count must be positive".into(),
            ));
        }
        let config = TopicConfig {
            name: spec.name.clone(),
            topic_type: spec.topic_type,
            queue_count: spec.queue_count,
            queue_shards: (0..spec.queue_count).map(|q| q % 2).collect(),
            created_at_ms: 1,
            auto_created: spec.auto_created,
            retention_ms: None,
            retention_revision: 0,
        };
        topics.insert(spec.name, config.clone());
        Ok(config)
    }

    /// Like a standalone node: one replica of each shard.
    async fn create_topic_replicated(
        &self,
        spec: TopicSpec,
        replicas: u32,
    ) -> Result<TopicConfig, ControllerError> {
        if replicas != 1 {
            return Err(ControllerError::Invalid(format!(
                "topic {}: one replica only, not {replicas}",
                spec.name
            )));
        }
        self.create_topic(spec).await
    }

    async fn delete_topic(
        &self,
        name: &TopicName,
    ) -> Result<vela_proto::TopicDrop, ControllerError> {
        let mut dropping = self.dropping.lock();
        if let Some(drop) = dropping.0.get(name) {
            return Ok(drop.clone());
        }
        let topic = self
            .topics
            .lock()
            .remove(name)
            .ok_or_else(|| ControllerError::NotFound(format!("topic {name}")))?;
        dropping.1 += 1;
        let drop = vela_proto::TopicDrop {
            id: dropping.1,
            shards: topic.queue_shards,
            finished: false,
        };
        dropping.0.insert(name.clone(), drop.clone());
        Ok(drop)
    }

    async fn finish_topic_drop(&self, name: &TopicName, id: u64) -> Result<(), ControllerError> {
        let mut dropping = self.dropping.lock();
        if dropping.0.get(name).is_some_and(|d| d.id == id) {
            dropping.0.remove(name);
        }
        Ok(())
    }

    async fn set_topic_retention(
        &self,
        name: &TopicName,
        retention_ms: Option<u64>,
    ) -> Result<TopicConfig, ControllerError> {
        let mut topics = self.topics.lock();
        let topic = topics
            .get_mut(name)
            .ok_or_else(|| ControllerError::NotFound(format!("topic {name}")))?;
        topic.retention_ms = retention_ms;
        Ok(topic.clone())
    }

    async fn get_topic(&self, name: &TopicName) -> Result<Option<TopicConfig>, ControllerError> {
        self.check_up()?;
        Ok(self.topics.lock().get(name).cloned())
    }

    async fn list_topics(&self) -> Result<Vec<TopicConfig>, ControllerError> {
        Ok(self.topics.lock().values().cloned().collect())
    }

    async fn update_group(
        &self,
        name: &GroupName,
        update: vela_proto::GroupUpdate,
    ) -> Result<GroupConfig, ControllerError> {
        let mut groups = self.groups.lock();
        let group = groups
            .get_mut(name)
            .ok_or_else(|| ControllerError::NotFound(format!("consumer group {name}")))?;
        if let Some(attempts) = update.max_attempts {
            group.max_attempts = attempts;
        }
        if let Some(retry) = update.retry {
            group.retry = retry;
        }
        Ok(group.clone())
    }

    async fn create_group(&self, spec: GroupSpec) -> Result<GroupConfig, ControllerError> {
        if self.group_drops.lock().contains_key(&spec.name) {
            return Err(ControllerError::BeingDeleted(format!(
                "consumer group {} is still being deleted",
                spec.name
            )));
        }
        let mut groups = self.groups.lock();
        if groups.contains_key(&spec.name) {
            return Err(ControllerError::AlreadyExists(format!(
                "consumer group {}",
                spec.name
            )));
        }
        let config = GroupConfig {
            name: spec.name.clone(),
            fifo: spec.fifo,
            max_attempts: spec.max_attempts,
            created_at_ms: 1,
            auto_created: spec.auto_created,
            start: spec.start,
            retry: spec.retry,
            broadcast: false,
        };
        groups.insert(spec.name, config.clone());
        Ok(config)
    }

    async fn delete_group(
        &self,
        name: &GroupName,
    ) -> Result<vela_proto::GroupDrop, ControllerError> {
        let mut dropping = self.dropping.lock();
        let mut group_drops = self.group_drops.lock();
        if let Some(drop) = group_drops.get(name) {
            return Ok(drop.clone());
        }
        self.groups
            .lock()
            .remove(name)
            .ok_or_else(|| ControllerError::NotFound(format!("consumer group {name}")))?;
        dropping.1 += 1;
        let drop = vela_proto::GroupDrop {
            drop: vela_proto::GroupDropId {
                id: dropping.1,
                floor: 0,
            },
            shards: vec![1],
            finished: false,
        };
        group_drops.insert(name.clone(), drop.clone());
        Ok(drop)
    }

    async fn pending_deletions(&self) -> Result<Vec<vela_proto::PendingDeletion>, ControllerError> {
        self.check_up()?;
        let topics = self.dropping.lock().0.clone().into_iter().map(|(name, d)| {
            vela_proto::PendingDeletion {
                kind: vela_proto::DeletionKind::Topic,
                name: name.to_string(),
                id: d.id,
                shards: d.shards,
            }
        });
        let groups = self
            .group_drops
            .lock()
            .clone()
            .into_iter()
            .map(|(name, d)| vela_proto::PendingDeletion {
                kind: vela_proto::DeletionKind::Group,
                name: name.to_string(),
                id: d.drop.id,
                shards: d.shards,
            });
        Ok(topics.chain(groups).collect())
    }

    async fn finish_group_drop(&self, name: &GroupName, id: u64) -> Result<(), ControllerError> {
        let mut group_drops = self.group_drops.lock();
        if group_drops.get(name).is_some_and(|d| d.drop.id == id) {
            group_drops.remove(name);
        }
        Ok(())
    }

    async fn get_group(&self, name: &GroupName) -> Result<Option<GroupConfig>, ControllerError> {
        self.check_up()?;
        Ok(self.groups.lock().get(name).cloned())
    }

    async fn list_groups(&self) -> Result<Vec<GroupConfig>, ControllerError> {
        Ok(self.groups.lock().values().cloned().collect())
    }

    async fn ensure_dead_letter_topic(
        &self,
        group: &GroupName,
    ) -> Result<TopicConfig, ControllerError> {
        if !self.groups.lock().contains_key(group) {
            return Err(ControllerError::NotFound(format!("consumer group {group}")));
        }
        let name = group.dead_letter_topic();
        let config = TopicConfig {
            name: name.clone(),
            topic_type: vela_proto::TopicType::Normal,
            queue_count: 1,
            queue_shards: vec![0],
            created_at_ms: 1,
            auto_created: true,
            retention_ms: None,
            retention_revision: 0,
        };
        Ok(self.topics.lock().entry(name).or_insert(config).clone())
    }

    async fn proxy_heartbeat(
        &self,
        beat: &vela_proto::controller_api::ProxyBeat,
    ) -> Result<(), ControllerError> {
        self.proxies
            .lock()
            .insert(beat.addr.clone(), beat.version.clone());
        Ok(())
    }

    async fn drain_store(
        &self,
        store: u64,
    ) -> Result<vela_proto::controller_api::StoreDrain, ControllerError> {
        Err(ControllerError::NotFound(format!(
            "store node {store} (the fake controller has no store nodes)"
        )))
    }

    /// Like a standalone node: no store nodes to join.
    async fn register_store(&self, _id: u64, _addr: &str) -> Result<(), ControllerError> {
        Err(ControllerError::Invalid(
            "a standalone node takes no store nodes".into(),
        ))
    }

    async fn store_nodes(
        &self,
    ) -> Result<Vec<vela_proto::controller_api::StoreNodeEntry>, ControllerError> {
        Ok(Vec::new())
    }

    async fn scale_stores(
        &self,
        _replicas: u32,
    ) -> Result<vela_proto::controller_api::StoreScale, ControllerError> {
        Err(ControllerError::Invalid(
            "a standalone node has no store StatefulSet".into(),
        ))
    }

    async fn remove_store(&self, id: u64) -> Result<(), ControllerError> {
        Err(ControllerError::NotFound(format!(
            "store node {id} (the fake controller has no store nodes)"
        )))
    }

    async fn undrain_store(&self, id: u64) -> Result<(), ControllerError> {
        self.remove_store(id).await
    }

    async fn create_user(&self, user: User) -> Result<UserInfo, ControllerError> {
        let mut auth = self.auth.lock();
        if auth.users.iter().any(|u| u.name == user.name) {
            return Err(ControllerError::AlreadyExists(format!(
                "user {}",
                user.name
            )));
        }
        auth.users.push(user.clone());
        Ok(user.info())
    }

    async fn update_user(
        &self,
        name: &UserName,
        update: UserUpdate,
    ) -> Result<UserInfo, ControllerError> {
        let mut auth = self.auth.lock();
        let user = auth
            .users
            .iter_mut()
            .find(|u| &u.name == name)
            .ok_or_else(|| ControllerError::NotFound(format!("user {name}")))?;
        if let Some(p) = update.password {
            user.password = p;
        }
        if let Some(t) = update.user_type {
            user.user_type = t;
        }
        if let Some(s) = update.status {
            user.status = s;
        }
        Ok(user.info())
    }

    async fn delete_user(&self, name: &UserName) -> Result<(), ControllerError> {
        let mut auth = self.auth.lock();
        let before = auth.users.len();
        auth.users.retain(|u| &u.name != name);
        auth.acls.retain(|a| &a.subject.0 != name);
        if auth.users.len() == before {
            return Err(ControllerError::NotFound(format!("user {name}")));
        }
        Ok(())
    }

    async fn put_acl(
        &self,
        subject: &Subject,
        entries: Vec<PolicyEntry>,
        create: bool,
    ) -> Result<Acl, ControllerError> {
        let mut auth = self.auth.lock();
        if !auth.users.iter().any(|u| u.name == subject.0) {
            return Err(ControllerError::NotFound(format!("user {}", subject.0)));
        }
        let acl = match auth.acls.iter_mut().find(|a| &a.subject == subject) {
            Some(acl) => acl,
            None if create => {
                auth.acls.push(Acl {
                    subject: subject.clone(),
                    entries: Vec::new(),
                });
                auth.acls
                    .last_mut()
                    .ok_or_else(|| ControllerError::Internal("pushed".into()))?
            }
            None => return Err(ControllerError::NotFound(format!("ACL of {subject}"))),
        };
        acl.merge(entries)
            .map_err(|e| ControllerError::Invalid(e.to_string()))?;
        Ok(acl.clone())
    }

    async fn delete_acl(
        &self,
        subject: &Subject,
        resources: &[ResourcePattern],
    ) -> Result<(), ControllerError> {
        let mut auth = self.auth.lock();
        let Some(at) = auth.acls.iter().position(|a| &a.subject == subject) else {
            return Err(ControllerError::NotFound(format!("ACL of {subject}")));
        };
        if resources.is_empty() {
            auth.acls.remove(at);
        } else {
            auth.acls[at]
                .entries
                .retain(|e| !resources.contains(&e.resource));
        }
        Ok(())
    }

    async fn auth_data(&self) -> Result<AuthData, ControllerError> {
        self.check_up()?;
        Ok(self.auth.lock().clone())
    }

    async fn create_route(
        &self,
        spec: vela_proto::route::RouteSpec,
    ) -> Result<vela_proto::route::RouteConfig, ControllerError> {
        self.check_up()?;
        let mut routes = self.routes.lock();
        if routes.contains_key(&spec.name) {
            return Err(ControllerError::AlreadyExists(format!(
                "route {}",
                spec.name
            )));
        }
        let route = vela_proto::route::RouteConfig {
            spec,
            paused: false,
            created_at_ms: 0,
        };
        routes.insert(route.spec.name.clone(), route.clone());
        Ok(route)
    }

    async fn delete_route(&self, name: &vela_proto::RouteName) -> Result<(), ControllerError> {
        self.check_up()?;
        self.routes
            .lock()
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| ControllerError::NotFound(format!("route {name}")))
    }

    async fn set_route_paused(
        &self,
        name: &vela_proto::RouteName,
        paused: bool,
    ) -> Result<vela_proto::route::RouteConfig, ControllerError> {
        self.check_up()?;
        let mut routes = self.routes.lock();
        let route = routes
            .get_mut(name)
            .ok_or_else(|| ControllerError::NotFound(format!("route {name}")))?;
        route.paused = paused;
        Ok(route.clone())
    }

    async fn routes(&self) -> Result<Vec<vela_proto::route::RouteConfig>, ControllerError> {
        self.check_up()?;
        Ok(self.routes.lock().values().cloned().collect())
    }

    async fn route_statuses(
        &self,
    ) -> Result<BTreeMap<vela_proto::RouteName, vela_proto::route::RouteStatus>, ControllerError>
    {
        self.check_up()?;
        Ok(BTreeMap::new())
    }

    async fn receipt_keys(&self) -> Result<vela_proto::receipt_keys::ManagedKeys, ControllerError> {
        self.check_up()?;
        let known = self.receipt_keys.lock().clone();
        match known {
            Some(keys) => Ok(keys),
            None => self.rotate_receipt_key().await,
        }
    }

    async fn rotate_receipt_key(
        &self,
    ) -> Result<vela_proto::receipt_keys::ManagedKeys, ControllerError> {
        use vela_proto::receipt_keys::{ManagedKey, ManagedKeys, next_managed_key_id};
        self.check_up()?;
        let mut keys = self.receipt_keys.lock();
        let ring = keys.get_or_insert_with(|| ManagedKeys {
            keys: BTreeMap::new(),
            signing: 0,
            signing_since_ms: 0,
        });
        let id = next_managed_key_id(ring.keys.keys().next_back().copied());
        ring.keys.insert(
            id,
            ManagedKey {
                secret: format!("fake-receipt-key-{id}").into_bytes(),
                created_ms: 1,
            },
        );
        ring.signing = id;
        Ok(ring.clone())
    }

    async fn retire_receipt_key(&self, id: u32, _force: bool) -> Result<(), ControllerError> {
        self.check_up()?;
        let mut keys = self.receipt_keys.lock();
        match keys.as_mut() {
            Some(ring) if ring.signing != id && ring.keys.contains_key(&id) => {
                ring.keys.remove(&id);
                Ok(())
            }
            _ => Err(ControllerError::NotFound(format!("receipt key {id}"))),
        }
    }

    async fn tier_credentials(&self) -> Result<Option<ManagedTierCredentials>, ControllerError> {
        self.check_up()?;
        Ok(self.tier_credentials.lock().clone())
    }

    async fn set_tier_credentials(
        &self,
        credentials: Option<vela_proto::tier_credentials::TierCredentials>,
    ) -> Result<Option<ManagedTierCredentials>, ControllerError> {
        self.check_up()?;
        let mut held = self.tier_credentials.lock();
        *held = credentials.map(|credentials| ManagedTierCredentials {
            credentials,
            updated_ms: 1,
        });
        Ok(held.clone())
    }

    async fn proxies(&self) -> Result<Vec<ProxySeen>, ControllerError> {
        Ok(self
            .proxies
            .lock()
            .iter()
            .map(|(addr, version)| ProxySeen {
                addr: addr.clone(),
                version: version.clone(),
                last_seen_ms: 0,
                admin_addr: None,
            })
            .collect())
    }

    async fn node_status(&self) -> Vec<ControllerNodeReport> {
        vec![NodeReport {
            node: 1,
            addr: "in-process".into(),
            report: Ok(single_leader()),
        }]
    }
}

//! The metadata itself (topics, groups, the shard set) and the pure, deterministic transition
//! `apply(command) -> response`. No I/O: the Raft state machine wraps it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use vela_proto::retry::RetryBackoff;
use vela_proto::{GroupConfig, GroupName, GroupStart, ShardId, TopicConfig, TopicName};

use crate::command::{Applied, ControllerCommand, ControllerResponse, LoggedGroup, Rejected};
use crate::placement::{drain_moves, place_queues, replica_sets};

mod auth;
mod configured;
mod receipt_keys;
mod routes;
mod stores;
mod tier_credentials;
pub use auth::StoredUser;
pub use receipt_keys::{ReceiptKeyring, StoredReceiptKey};
pub use routes::{
    LoggedRoute, StoredCredentials, StoredEndpoint, StoredHeader, StoredHttp, StoredRoute,
};
pub use stores::RegisteredStore;
pub use tier_credentials::StoredTierCredentials;

/// Everything the controller knows. Also the snapshot payload, so new fields need
/// `#[serde(default)]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metadata {
    shards: Vec<ShardId>,
    topics: BTreeMap<TopicName, TopicConfig>,
    groups: BTreeMap<GroupName, GroupConfig>,
    /// Shards placed on chosen store nodes, by id (ADR 0013).
    placed: BTreeMap<ShardId, PlacedShard>,
    /// Store nodes being drained: no placed shard keeps or gets a replica there (ADR 0014).
    draining: BTreeSet<u64>,
    /// Users, passwords sealed (ADR 0019).
    users: BTreeMap<vela_proto::auth::UserName, auth::StoredUser>,
    /// ACLs by the user they are about.
    acls: BTreeMap<vela_proto::auth::UserName, vela_proto::auth::Acl>,
    /// Routes (issue 12), secret keys sealed.
    routes: BTreeMap<vela_proto::RouteName, StoredRoute>,
    /// The managed receipt keys (ADR 0030), sealed.
    receipt_keys: ReceiptKeyring,
    /// The object-storage credentials store nodes use (issue 8), the secret sealed.
    tier_credentials: Option<StoredTierCredentials>,
    /// Store nodes that registered at runtime, not in `[[cluster.stores]]` (issue 11).
    registered_stores: BTreeMap<u64, RegisteredStore>,
    /// The replicas a store scale-in in progress lowers the store StatefulSet to.
    store_scale_in: Option<u32>,
    /// Deleted topics whose queues are not yet dropped from every shard (ADR 0008): the names
    /// cannot be created again until they are.
    dropping: BTreeMap<TopicName, PendingDrop>,
    /// The newest topic revision handed out (they ascend from 1, across all topics): the id
    /// of each topic drop and the revision of each retention set. A shard applies a topic's
    /// drop or retention only above the highest revision it applied for that topic. Groups'
    /// drop ids come from the same counter (a shard fences them per group name).
    last_topic_revision: u64,
    /// Deleted consumer groups whose state is not yet dropped from every shard: the names
    /// cannot be created again until it is.
    group_drops: BTreeMap<GroupName, PendingDrop>,
}

/// A deleted topic whose queues, or a deleted group whose state, are not yet dropped from every
/// shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDrop {
    /// The deletion's revision.
    pub id: u64,
    /// The shards to drop it from, as of its deletion, ascending, each once.
    pub shards: Vec<ShardId>,
}

/// A shard the controller placed on chosen store nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedShard {
    /// Its members; the first is the one placement meant to lead it.
    pub replicas: Vec<u64>,
    /// A member holds it: from now on no member is told to create it empty (ADR 0013).
    pub created: bool,
}

impl Metadata {
    /// Applies one command. Refusals (duplicates, absent names) are ordinary outcomes that leave
    /// the metadata unchanged.
    pub fn apply(&mut self, command: ControllerCommand) -> ControllerResponse {
        match command {
            ControllerCommand::CreateTopic { spec, now_ms } => {
                let shards = self.shards.clone();
                self.create_topic(spec, &shards, now_ms)
            }
            ControllerCommand::CreateTopicReplicated {
                spec,
                replicas,
                stores,
                now_ms,
            } => {
                self.name_free(&spec.name)?;
                let shards = self.shards_of_factor(&spec.name, replicas, &stores)?;
                self.create_topic(spec, &shards, now_ms)
            }
            ControllerCommand::MarkShardCreated { shard } => match self.placed.get_mut(&shard) {
                Some(placed) => {
                    placed.created = true;
                    Ok(Applied::ShardCreated)
                }
                None => Err(Rejected::ShardNotPlaced(shard)),
            },
            ControllerCommand::DrainStore { store, stores } => self.drain(store, &stores),
            ControllerCommand::DeleteTopic { name } => match self.topics.remove(&name) {
                Some(_) => Ok(Applied::Deleted),
                None => Err(Rejected::TopicNotFound(name)),
            },
            ControllerCommand::DeleteTopicDropping { name, now_ms } => {
                self.delete_topic_dropping(name, now_ms)
            }
            ControllerCommand::FinishTopicDrop { name, id } => {
                Ok(Applied::TopicDropFinished(match self.dropping.get(&name) {
                    Some(drop) if drop.id == id => self.dropping.remove(&name).is_some(),
                    _ => false,
                }))
            }
            ControllerCommand::CreateGroup { spec, now_ms } => self.create_group(
                spec,
                GroupStart::Auto,
                RetryBackoff::Standard,
                false,
                now_ms,
            ),
            ControllerCommand::CreateGroupStarting {
                spec,
                start,
                now_ms,
            } => self.create_group(spec, start, RetryBackoff::Standard, false, now_ms),
            ControllerCommand::CreateGroupWithRetry {
                spec,
                start,
                retry,
                now_ms,
            } => self.create_group(spec, start, retry, false, now_ms),
            ControllerCommand::CreateBroadcastGroup {
                spec,
                start,
                retry,
                now_ms,
            } => self.create_group(spec, start, retry, true, now_ms),
            ControllerCommand::UpdateGroup {
                name,
                max_attempts,
                retry,
            } => match self.groups.get_mut(&name) {
                Some(group) => {
                    if let Some(attempts) = max_attempts {
                        group.max_attempts = attempts;
                    }
                    if let Some(retry) = retry {
                        group.retry = retry;
                    }
                    Ok(Applied::Group(group.clone()))
                }
                None => Err(Rejected::GroupNotFound(name)),
            },
            ControllerCommand::DeleteGroup { name } => match self.groups.remove(&name) {
                Some(_) => Ok(Applied::Deleted),
                None => Err(Rejected::GroupNotFound(name)),
            },
            ControllerCommand::DeleteGroupDropping { name, now_ms } => {
                self.delete_group_dropping(name, now_ms)
            }
            ControllerCommand::FinishGroupDrop { name, id } => Ok(Applied::GroupDropFinished(
                match self.group_drops.get(&name) {
                    Some(drop) if drop.id == id => self.group_drops.remove(&name).is_some(),
                    _ => false,
                },
            )),
            ControllerCommand::CreateUser {
                name,
                password,
                user_type,
                status,
            } => self.create_user(name, password, user_type, status),
            ControllerCommand::UpdateUser {
                name,
                password,
                user_type,
                status,
            } => self.update_user(name, password, user_type, status),
            ControllerCommand::DeleteUser { name } => self.delete_user(name),
            ControllerCommand::PutAcl {
                subject,
                entries,
                create,
            } => self.put_acl(subject, entries, create),
            ControllerCommand::DeleteAcl { subject, resources } => {
                self.delete_acl(subject, &resources)
            }
            ControllerCommand::CreateRoute { route } => {
                self.create_route(StoredRoute::new(*route, None, Vec::new()))
            }
            ControllerCommand::CreateHttpRoute { route, http } => {
                self.create_route(StoredRoute::new(*route, Some(http), Vec::new()))
            }
            ControllerCommand::CreateHttpRouteWithHeaders {
                route,
                http,
                headers,
            } => self.create_route(StoredRoute::new(*route, Some(http), headers)),
            ControllerCommand::AddReceiptKey {
                id,
                key,
                created_ms,
                first,
            } => self.add_receipt_key(id, key, created_ms, first),
            ControllerCommand::RetireReceiptKey { id } => self.retire_receipt_key(id),
            ControllerCommand::SetTierCredentials { credentials } => {
                self.set_tier_credentials(credentials)
            }
            ControllerCommand::RegisterStore { id, addr, now_ms } => {
                self.register_store(id, addr, now_ms)
            }
            ControllerCommand::MoveReplica { shard, from, to } => {
                self.move_replica(shard, from, to)
            }
            ControllerCommand::UnregisterStore { id } => self.unregister_store(id),
            ControllerCommand::UndrainStore { store } => self.undrain(store),
            ControllerCommand::SetStoreScaleIn { replicas } => {
                self.store_scale_in = replicas;
                Ok(Applied::StoreScaleInSet)
            }
            ControllerCommand::DeleteRoute { name } => self.delete_route(name),
            ControllerCommand::SetRoutePaused { name, paused } => {
                self.set_route_paused(name, paused)
            }
            ControllerCommand::AdoptConfiguredShards { stores } => self.adopt_configured(stores),
            ControllerCommand::SetTopicRetention { name, retention_ms } => {
                match self.topics.get_mut(&name) {
                    Some(topic) => {
                        topic.retention_ms = retention_ms;
                        // Written without a revision: shards take it unfenced.
                        topic.retention_revision = 0;
                        Ok(Applied::Topic(topic.clone()))
                    }
                    None => Err(Rejected::TopicNotFound(name)),
                }
            }
            ControllerCommand::SetTopicRetentionRevised {
                name,
                retention_ms,
                now_ms,
            } => {
                if !self.topics.contains_key(&name) {
                    return Err(Rejected::TopicNotFound(name));
                }
                let revision = self.next_revision(now_ms);
                let topic = self.topics.get_mut(&name).expect("checked above");
                topic.retention_ms = retention_ms;
                topic.retention_revision = revision;
                Ok(Applied::Topic(topic.clone()))
            }
            ControllerCommand::SetShards { shards } => {
                // An adopted configured shard (ADR 0032) is placed and may stay configured.
                if let Some(&taken) = shards
                    .iter()
                    .find(|s| self.placed.contains_key(s) && !self.shards.contains(s))
                {
                    return Err(Rejected::ShardIdTaken(taken));
                }
                self.shards = shards.clone();
                Ok(Applied::Shards(shards))
            }
        }
    }

    /// Refuses a topic name that exists or whose deletion is still dropping its queues.
    fn name_free(&self, name: &TopicName) -> Result<(), Rejected> {
        if self.topics.contains_key(name) {
            return Err(Rejected::TopicExists(name.clone()));
        }
        if self.dropping.contains_key(name) {
            return Err(Rejected::TopicDropping(name.clone()));
        }
        Ok(())
    }

    /// The next topic revision: one above the newest, and never below the proposer's clock
    /// (`now_ms`, in thousandths of a ms), so revisions keep ascending even where the counter
    /// was lost (a snapshot written by an older build after a rollback, a controller restored
    /// from a backup) as long as the clock moved on since.
    fn next_revision(&mut self, now_ms: i64) -> u64 {
        // A clock past any sane date does not pin the counter at its end.
        let floor = u64::try_from(now_ms)
            .ok()
            .and_then(|ms| ms.checked_mul(1_000))
            .filter(|f| *f < u64::MAX / 2)
            .unwrap_or(0);
        self.last_topic_revision = self.last_topic_revision.saturating_add(1).max(floor);
        self.last_topic_revision
    }

    /// Deletes a topic and records where its queues are to be dropped, under a new revision;
    /// a topic deleted before whose drop is not finished answers that drop.
    fn delete_topic_dropping(&mut self, name: TopicName, now_ms: i64) -> ControllerResponse {
        if let Some(drop) = self.dropping.get(&name) {
            return Ok(Applied::TopicDropping(self.existing(drop)));
        }
        let Some(topic) = self.topics.remove(&name) else {
            return Err(Rejected::TopicNotFound(name));
        };
        // A dead-letter topic's messages sit beside the originals, on any shard (a deleted
        // topic's included): every shard there is.
        let mut shards: Vec<ShardId> = if name.is_dead_letter() {
            self.shards
                .iter()
                .chain(self.placed.keys())
                .copied()
                .collect()
        } else {
            topic.queue_shards
        };
        shards.sort_unstable();
        shards.dedup();
        let drop = PendingDrop {
            id: self.next_revision(now_ms),
            shards,
        };
        let answer = self.existing(&drop);
        self.dropping.insert(name, drop);
        Ok(Applied::TopicDropping(answer))
    }

    /// A pending drop with those of its shards that exist (a shard neither configured nor
    /// placed holds nothing): none when none does any more, and nothing is left to drop.
    fn existing(&self, drop: &PendingDrop) -> vela_proto::TopicDrop {
        vela_proto::TopicDrop {
            id: drop.id,
            shards: drop
                .shards
                .iter()
                .copied()
                .filter(|s| self.shards.contains(s) || self.placed.contains_key(s))
                .collect(),
            finished: false,
        }
    }

    /// Deleted topics whose queues are not yet dropped from every shard ([`Self::existing`]).
    pub fn pending_drops(&self) -> Vec<(TopicName, vela_proto::TopicDrop)> {
        self.dropping
            .iter()
            .map(|(name, drop)| (name.clone(), self.existing(drop)))
            .collect()
    }

    /// Deletes a group and records that its state is to be dropped from the shards where it
    /// can hold some, under a new revision; a group deleted before whose drop is not finished
    /// answers that drop.
    fn delete_group_dropping(&mut self, name: GroupName, now_ms: i64) -> ControllerResponse {
        if let Some(drop) = self.group_drops.get(&name) {
            return Ok(Applied::GroupDropping(self.existing_group_drop(drop)));
        }
        if self.groups.remove(&name).is_none() {
            return Err(Rejected::GroupNotFound(name));
        }
        // Where the group can hold state: on the queues of topics, and of deleted topics whose
        // own drop (which takes every group's state on them) is not done yet; and, while a
        // dead-letter topic exists (the group may read it), on every shard, as dead letters
        // sit beside their originals wherever those were (deleted topics' included). Not every
        // shard otherwise: one without a leader would hold the name up though it holds
        // nothing of the group.
        let of_topics = self
            .topics
            .values()
            .flat_map(|t| t.queue_shards.iter())
            .chain(self.dropping.values().flat_map(|d| d.shards.iter()));
        let mut shards: Vec<ShardId> = if self.topics.keys().any(TopicName::is_dead_letter) {
            of_topics
                .chain(self.shards.iter())
                .chain(self.placed.keys())
                .copied()
                .collect()
        } else {
            of_topics.copied().collect()
        };
        shards.sort_unstable();
        shards.dedup();
        let drop = PendingDrop {
            id: self.next_revision(now_ms),
            shards,
        };
        self.group_drops.insert(name, drop.clone());
        Ok(Applied::GroupDropping(self.existing_group_drop(&drop)))
    }

    /// A pending group drop as [`Self::existing`] answers a topic's, with the floor at or below
    /// which every group drop is finished: one below the oldest pending (`drop` included once
    /// recorded), or the newest revision when none is.
    fn existing_group_drop(&self, drop: &PendingDrop) -> vela_proto::GroupDrop {
        let floor = self
            .group_drops
            .values()
            .map(|d| d.id)
            .min()
            .map_or(self.last_topic_revision, |oldest| oldest.saturating_sub(1));
        let existing = self.existing(drop);
        vela_proto::GroupDrop {
            drop: vela_proto::GroupDropId {
                id: existing.id,
                floor,
            },
            shards: existing.shards,
            finished: false,
        }
    }

    /// Whether `name`'s deletion is not finished (it cannot be created again yet).
    pub fn topic_being_deleted(&self, name: &TopicName) -> bool {
        self.dropping.contains_key(name)
    }

    /// Whether a consumer group named `name` was deleted and its drop is not finished.
    pub fn group_being_deleted(&self, name: &GroupName) -> bool {
        self.group_drops.contains_key(name)
    }

    /// Deleted groups whose state is not yet dropped from every shard
    /// ([`Self::existing_group_drop`]).
    pub fn pending_group_drops(&self) -> Vec<(GroupName, vela_proto::GroupDrop)> {
        self.group_drops
            .iter()
            .map(|(name, drop)| (name.clone(), self.existing_group_drop(drop)))
            .collect()
    }

    fn create_group(
        &mut self,
        spec: LoggedGroup,
        start: GroupStart,
        retry: RetryBackoff,
        broadcast: bool,
        now_ms: i64,
    ) -> Result<Applied, Rejected> {
        if self.groups.contains_key(&spec.name) {
            return Err(Rejected::GroupExists(spec.name));
        }
        if self.group_drops.contains_key(&spec.name) {
            return Err(Rejected::GroupDropping(spec.name));
        }
        let config = GroupConfig {
            name: spec.name.clone(),
            fifo: spec.fifo,
            max_attempts: spec.max_attempts,
            created_at_ms: now_ms,
            auto_created: spec.auto_created,
            start,
            retry,
            broadcast,
        };
        self.groups.insert(spec.name, config.clone());
        Ok(Applied::Group(config))
    }

    fn create_topic(
        &mut self,
        spec: vela_proto::TopicSpec,
        shards: &[ShardId],
        now_ms: i64,
    ) -> ControllerResponse {
        self.name_free(&spec.name)?;
        let existing = self
            .topics
            .values()
            .flat_map(|t| t.queue_shards.iter().copied());
        let queue_shards = place_queues(shards, existing, spec.queue_count);
        if queue_shards.len() != spec.queue_count as usize {
            return Err(Rejected::NoShards(spec.name));
        }
        let config = TopicConfig {
            name: spec.name.clone(),
            topic_type: spec.topic_type,
            queue_count: spec.queue_count,
            queue_shards,
            created_at_ms: now_ms,
            auto_created: spec.auto_created,
            retention_ms: None,
            retention_revision: 0,
        };
        self.topics.insert(spec.name, config.clone());
        Ok(Applied::Topic(config))
    }

    /// The shards a topic of `replicas` members goes on: the configured set when every store
    /// holds it (`replicas` = store count; 1 in standalone, which has no store list), else the
    /// placed shards of that factor, placed now (one per store, `placement::replica_sets`) when
    /// there are none.
    fn shards_of_factor(
        &mut self,
        topic: &TopicName,
        replicas: u32,
        stores: &[u64],
    ) -> Result<Vec<ShardId>, Rejected> {
        let factor = replicas as usize;
        let every_store = if stores.is_empty() { 1 } else { stores.len() };
        if factor == every_store && !self.shards.is_empty() {
            return Ok(self.shards.clone());
        }
        if stores.is_empty() {
            return Err(Rejected::Replicas {
                topic: topic.clone(),
                reason: format!(
                    "a standalone node holds one replica of each shard; {replicas} replicas need a cluster"
                ),
            });
        }
        let of_factor: Vec<ShardId> = self
            .placed
            .iter()
            .filter(|(_, p)| p.replicas.len() == factor)
            .map(|(&id, _)| id)
            .collect();
        if !of_factor.is_empty() {
            return Ok(of_factor);
        }
        let next_id = self
            .shards
            .iter()
            .chain(self.placed.keys())
            .max()
            .map_or(0, |&m| m.saturating_add(1));
        let usable: Vec<u64> = stores
            .iter()
            .copied()
            .filter(|s| !self.draining.contains(s))
            .collect();
        let sets = replica_sets(&usable, factor, next_id).map_err(|e| Rejected::Replicas {
            topic: topic.clone(),
            reason: e.to_string(),
        })?;
        let ids = sets.keys().copied().collect();
        for (id, replicas) in sets {
            self.placed.insert(
                id,
                PlacedShard {
                    replicas,
                    created: false,
                },
            );
        }
        Ok(ids)
    }

    /// Marks `store` draining and moves every placed replica off it (see
    /// [`ControllerCommand::DrainStore`]).
    fn drain(&mut self, store: u64, stores: &[u64]) -> ControllerResponse {
        if !stores.contains(&store) {
            return Err(Rejected::UnknownStore(store));
        }
        let candidates: Vec<u64> = stores
            .iter()
            .copied()
            .filter(|s| !self.draining.contains(s))
            .collect();
        let members: BTreeMap<ShardId, Vec<u64>> = self
            .placed
            .iter()
            .map(|(&id, p)| (id, p.replicas.clone()))
            .collect();
        // An adopted configured shard with nowhere to go keeps its replica (ADR 0032).
        let may_stay: BTreeSet<ShardId> = self.shards.iter().copied().collect();
        let moves = drain_moves(&members, store, &candidates, &may_stay).map_err(|e| {
            Rejected::CannotDrain {
                store,
                reason: e.to_string(),
            }
        })?;
        let moved: Vec<ShardId> = moves.keys().copied().collect();
        for (shard, replicas) in moves {
            if let Some(p) = self.placed.get_mut(&shard) {
                p.replicas = replicas;
            }
        }
        self.draining.insert(store);
        Ok(Applied::Drained(moved))
    }

    /// The store nodes being drained.
    pub fn draining(&self) -> &BTreeSet<u64> {
        &self.draining
    }

    /// The placed shards, by id.
    pub fn placed(&self) -> &BTreeMap<ShardId, PlacedShard> {
        &self.placed
    }

    /// The shard set new queues are placed on.
    pub fn shards(&self) -> &[ShardId] {
        &self.shards
    }

    pub fn topic(&self, name: &TopicName) -> Option<&TopicConfig> {
        self.topics.get(name)
    }

    /// All topics, ordered by name.
    pub fn topics(&self) -> impl Iterator<Item = &TopicConfig> {
        self.topics.values()
    }

    pub fn group(&self, name: &GroupName) -> Option<&GroupConfig> {
        self.groups.get(name)
    }

    /// All groups, ordered by name.
    pub fn groups(&self) -> impl Iterator<Item = &GroupConfig> {
        self.groups.values()
    }
}

#[cfg(test)]
mod replicated_tests;

/// Pins log commands to their bytes: each encodes (postcard) to its hex (spaces ignored) and
/// decodes back to itself. Every replica's log holds these bytes, so they never change.
#[cfg(test)]
fn assert_golden(cases: impl IntoIterator<Item = (ControllerCommand, &'static str)>) {
    for (command, golden) in cases {
        let bytes = postcard::to_stdvec(&command).expect("encodes");
        assert_eq!(hex::encode(&bytes), golden.replace(' ', ""), "{command}");
        assert_eq!(
            postcard::from_bytes::<ControllerCommand>(&bytes).expect("decodes"),
            command
        );
    }
}

#[cfg(test)]
mod tests;

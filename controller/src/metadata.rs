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
    /// drop or retention only above the highest revision it applied for that topic.
    last_topic_revision: u64,
}

/// A deleted topic whose queues are not yet dropped from every shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDrop {
    /// The deletion's topic revision.
    pub id: u64,
    /// The shards that held its queues when it was deleted, ascending, each once.
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
mod tests {
    use vela_proto::{TopicSpec, TopicType};

    use super::*;

    fn topic_name(name: &str) -> TopicName {
        TopicName::new(name).expect("valid topic name")
    }

    fn group_name(name: &str) -> GroupName {
        GroupName::new(name).expect("valid group name")
    }

    fn create_topic(name: &str, queue_count: u32, now_ms: i64) -> ControllerCommand {
        ControllerCommand::CreateTopic {
            spec: TopicSpec {
                name: topic_name(name),
                topic_type: TopicType::Fifo,
                queue_count,
                auto_created: false,
            },
            now_ms,
        }
    }

    fn create_group(name: &str, now_ms: i64) -> ControllerCommand {
        ControllerCommand::CreateGroup {
            spec: LoggedGroup {
                name: group_name(name),
                fifo: true,
                max_attempts: 5,
                auto_created: true,
            },
            now_ms,
        }
    }

    fn with_shards(shards: &[ShardId]) -> Metadata {
        let mut md = Metadata::default();
        let applied = md.apply(ControllerCommand::SetShards {
            shards: shards.to_vec(),
        });
        assert_eq!(applied, Ok(Applied::Shards(shards.to_vec())));
        md
    }

    #[test]
    fn create_topic_places_queues_and_records_time() {
        let mut md = with_shards(&[0]);
        let Ok(Applied::Topic(config)) = md.apply(create_topic("orders", 4, 1_000)) else {
            panic!("create should succeed");
        };
        assert_eq!(config.queue_shards, vec![0, 0, 0, 0]);
        assert_eq!(config.created_at_ms, 1_000);
        assert_eq!(config.topic_type, TopicType::Fifo);
        assert_eq!(md.topic(&topic_name("orders")), Some(&config));
        assert_eq!(md.topics().count(), 1);
    }

    #[test]
    fn set_topic_retention_golden_bytes() {
        // Variant 31: the topic name, then the retention (an option of a varint of ms).
        super::assert_golden([
            (
                ControllerCommand::SetTopicRetention {
                    name: topic_name("t"),
                    retention_ms: Some(300),
                },
                "1f 0174 01 ac02",
            ),
            (
                ControllerCommand::SetTopicRetention {
                    name: topic_name("t"),
                    retention_ms: None,
                },
                "1f 0174 00",
            ),
        ]);
    }

    #[test]
    fn topic_drop_golden_bytes() {
        // Variant 32: the topic name, then the proposer's clock (a zigzag varint of ms);
        // variant 33: the name, then the drop id (a varint); variant 34: the name, the
        // retention (an option of a varint of ms), then the clock.
        super::assert_golden([
            (
                ControllerCommand::DeleteTopicDropping {
                    name: topic_name("t"),
                    now_ms: 300,
                },
                "20 0174 d804",
            ),
            (
                ControllerCommand::FinishTopicDrop {
                    name: topic_name("t"),
                    id: 300,
                },
                "21 0174 ac02",
            ),
            (
                ControllerCommand::SetTopicRetentionRevised {
                    name: topic_name("t"),
                    retention_ms: Some(300),
                    now_ms: 300,
                },
                "22 0174 01 ac02 d804",
            ),
        ]);
    }

    fn drop_topic(name: &str, now_ms: i64) -> ControllerCommand {
        ControllerCommand::DeleteTopicDropping {
            name: topic_name(name),
            now_ms,
        }
    }

    #[test]
    fn topic_revisions_ascend_across_drops_and_retentions() {
        let mut md = with_shards(&[0]);
        md.apply(create_topic("orders", 1, 1)).expect("created");
        md.apply(create_topic("audit", 1, 1)).expect("created");
        let set = |name: &str, ms, now_ms| ControllerCommand::SetTopicRetentionRevised {
            name: topic_name(name),
            retention_ms: ms,
            now_ms,
        };
        let revision = |md: &mut Metadata, command| match md.apply(command) {
            Ok(Applied::Topic(t)) => t.retention_revision,
            Ok(Applied::TopicDropping(d)) => d.id,
            other => panic!("{other:?}"),
        };
        assert_eq!(revision(&mut md, set("orders", Some(60_000), 0)), 1);
        assert_eq!(revision(&mut md, set("audit", None, 0)), 2);
        assert_eq!(revision(&mut md, drop_topic("orders", 0)), 3);
        assert_eq!(
            md.apply(set("orders", Some(1_000), 0)),
            Err(Rejected::TopicNotFound(topic_name("orders")))
        );
        // Never below the proposer's clock, in thousandths of a ms; then on from there, even
        // when a leader's clock is behind.
        assert_eq!(revision(&mut md, set("audit", Some(5_000), 7)), 7_000);
        assert_eq!(revision(&mut md, set("audit", Some(5_000), 2)), 7_001);
        // A retention written without a revision (an older controller's entry) is unfenced.
        let unrevised = ControllerCommand::SetTopicRetention {
            name: topic_name("audit"),
            retention_ms: Some(6_000),
        };
        assert_eq!(revision(&mut md, unrevised), 0);
        let json = serde_json::to_vec(&md).expect("encode");
        let back: Metadata = serde_json::from_slice(&json).expect("decode");
        assert_eq!(back, md, "the snapshot holds the revisions");
        // A counter lost with a snapshot of an older build starts again above the clock.
        let mut old = serde_json::to_value(&md).expect("encode");
        old.as_object_mut()
            .expect("an object")
            .remove("last_topic_revision");
        let mut rolled_back: Metadata = serde_json::from_value(old).expect("decode");
        assert_eq!(revision(&mut rolled_back, set("audit", None, 9)), 9_000);
    }

    #[test]
    fn a_dead_letter_topic_drop_covers_every_shard() {
        let mut md = with_shards(&[0, 1, 2]);
        md.apply(create_topic("orders", 1, 1)).expect("created");
        md.apply(create_topic("%DLQ%billing", 1, 1))
            .expect("created");
        let Ok(Applied::TopicDropping(drop)) = md.apply(drop_topic("%DLQ%billing", 0)) else {
            panic!("deleted");
        };
        assert_eq!(
            drop.shards,
            [0, 1, 2],
            "dead letters sit beside the originals, deleted topics' included"
        );
        let Ok(Applied::TopicDropping(orders)) = md.apply(drop_topic("orders", 0)) else {
            panic!("deleted");
        };
        assert_eq!(orders.id, drop.id + 1);
        assert_eq!(orders.shards.len(), 1, "each shard once");
        // A shard neither configured nor placed any more holds nothing to drop, and a second
        // delete answers the drop as it stands.
        md.apply(ControllerCommand::SetShards { shards: vec![7] })
            .expect("set");
        assert!(md.pending_drops().iter().all(|(_, d)| d.shards.is_empty()));
        let Ok(Applied::TopicDropping(again)) = md.apply(drop_topic("orders", 0)) else {
            panic!("answered");
        };
        assert_eq!((again.id, again.shards.len()), (orders.id, 0));
    }

    #[test]
    fn a_topic_keeps_the_retention_set_until_it_is_cleared_and_the_snapshot_holds_it() {
        let mut md = with_shards(&[0]);
        let set = |ms| ControllerCommand::SetTopicRetention {
            name: topic_name("orders"),
            retention_ms: ms,
        };
        assert_eq!(
            md.apply(set(Some(1_000))),
            Err(Rejected::TopicNotFound(topic_name("orders")))
        );
        assert!(md.apply(create_topic("orders", 2, 1_000)).is_ok());
        assert_eq!(
            md.topic(&topic_name("orders")).and_then(|t| t.retention_ms),
            None
        );
        let Ok(Applied::Topic(config)) = md.apply(set(Some(86_400_000))) else {
            panic!("set should succeed");
        };
        assert_eq!(config.retention_ms, Some(86_400_000));
        let json = serde_json::to_vec(&md).expect("encodes");
        let back: Metadata = serde_json::from_slice(&json).expect("decodes");
        assert_eq!(back, md, "the snapshot keeps the retention");
        assert!(md.apply(set(None)).is_ok());
        assert_eq!(
            md.topic(&topic_name("orders")).and_then(|t| t.retention_ms),
            None
        );
    }

    #[test]
    fn duplicate_topic_is_rejected_and_keeps_the_original() {
        let mut md = with_shards(&[0]);
        assert!(md.apply(create_topic("orders", 4, 1_000)).is_ok());
        assert_eq!(
            md.apply(create_topic("orders", 8, 2_000)),
            Err(Rejected::TopicExists(topic_name("orders")))
        );
        let kept = md.topic(&topic_name("orders")).expect("still there");
        assert_eq!((kept.queue_count, kept.created_at_ms), (4, 1_000));
    }

    #[test]
    fn delete_topic_then_recreate() {
        let mut md = with_shards(&[0]);
        assert!(md.apply(create_topic("orders", 4, 1_000)).is_ok());
        assert_eq!(
            md.apply(ControllerCommand::DeleteTopic {
                name: topic_name("orders")
            }),
            Ok(Applied::Deleted)
        );
        assert!(md.topic(&topic_name("orders")).is_none());
        assert_eq!(
            md.apply(ControllerCommand::DeleteTopic {
                name: topic_name("orders")
            }),
            Err(Rejected::TopicNotFound(topic_name("orders")))
        );
        let Ok(Applied::Topic(again)) = md.apply(create_topic("orders", 2, 3_000)) else {
            panic!("re-create should succeed");
        };
        assert_eq!((again.queue_count, again.created_at_ms), (2, 3_000));
    }

    #[test]
    fn groups_create_duplicate_delete() {
        let mut md = with_shards(&[0]);
        let Ok(Applied::Group(config)) = md.apply(create_group("billing", 7)) else {
            panic!("create should succeed");
        };
        assert_eq!(
            (config.fifo, config.max_attempts, config.created_at_ms),
            (true, 5, 7)
        );
        assert!(config.auto_created);
        assert_eq!(
            md.apply(create_group("billing", 8)),
            Err(Rejected::GroupExists(group_name("billing")))
        );
        assert_eq!(
            md.group(&group_name("billing")).map(|g| g.created_at_ms),
            Some(7)
        );
        assert_eq!(
            md.apply(ControllerCommand::DeleteGroup {
                name: group_name("billing")
            }),
            Ok(Applied::Deleted)
        );
        assert_eq!(
            md.apply(ControllerCommand::DeleteGroup {
                name: group_name("billing")
            }),
            Err(Rejected::GroupNotFound(group_name("billing")))
        );
        assert_eq!(md.groups().count(), 0);
    }

    #[test]
    fn topics_and_groups_are_separate_namespaces() {
        let mut md = with_shards(&[0]);
        assert!(md.apply(create_topic("same", 1, 1)).is_ok());
        assert!(md.apply(create_group("same", 1)).is_ok());
        assert_eq!(
            md.apply(ControllerCommand::DeleteGroup {
                name: group_name("other")
            }),
            Err(Rejected::GroupNotFound(group_name("other")))
        );
    }

    #[test]
    fn without_shards_topics_cannot_be_placed() {
        let mut md = Metadata::default();
        assert_eq!(
            md.apply(create_topic("orders", 1, 1)),
            Err(Rejected::NoShards(topic_name("orders")))
        );
        assert!(md.topic(&topic_name("orders")).is_none());
    }

    #[test]
    fn placement_balances_across_three_shards_and_frees_on_delete() {
        let mut md = with_shards(&[0, 1, 2]);
        let placed = |md: &mut Metadata, cmd| match md.apply(cmd) {
            Ok(Applied::Topic(t)) => t.queue_shards,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(placed(&mut md, create_topic("a", 4, 1)), vec![0, 1, 2, 0]);
        assert_eq!(placed(&mut md, create_topic("b", 2, 1)), vec![1, 2]);
        assert_eq!(placed(&mut md, create_topic("c", 3, 1)), vec![0, 1, 2]);
        // Load is now 3/3/3; deleting `a` leaves 1/2/2, so shard 0 catches up first.
        assert!(
            md.apply(ControllerCommand::DeleteTopic {
                name: topic_name("a")
            })
            .is_ok()
        );
        assert_eq!(placed(&mut md, create_topic("d", 3, 1)), vec![0, 0, 1]);
    }

    #[test]
    fn new_shard_set_applies_to_new_topics_only() {
        let mut md = with_shards(&[0]);
        assert!(md.apply(create_topic("old", 2, 1)).is_ok());
        assert!(
            md.apply(ControllerCommand::SetShards { shards: vec![0, 1] })
                .is_ok()
        );
        let Ok(Applied::Topic(new)) = md.apply(create_topic("new", 3, 2)) else {
            panic!("create should succeed");
        };
        assert_eq!(new.queue_shards, vec![1, 1, 0]);
        assert_eq!(
            md.topic(&topic_name("old")).map(|t| t.queue_shards.clone()),
            Some(vec![0, 0])
        );
    }

    #[test]
    fn replay_is_deterministic() {
        let commands = [
            ControllerCommand::SetShards {
                shards: vec![0, 1, 2],
            },
            create_topic("a", 5, 10),
            create_group("g", 11),
            create_topic("b", 3, 12),
            ControllerCommand::DeleteTopic {
                name: topic_name("a"),
            },
            create_topic("c", 4, 13),
        ];
        let run = || {
            let mut md = Metadata::default();
            let responses: Vec<_> = commands.iter().cloned().map(|c| md.apply(c)).collect();
            (md, responses)
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn snapshot_encoding_round_trips() {
        let mut md = with_shards(&[0, 1]);
        assert!(md.apply(create_topic("orders", 3, 5)).is_ok());
        assert!(md.apply(create_group("billing", 6)).is_ok());
        let json = serde_json::to_vec(&md).expect("encode");
        let back: Metadata = serde_json::from_slice(&json).expect("decode");
        assert_eq!(back, md);
    }

    #[test]
    fn commands_round_trip_through_postcard() {
        let cmd = create_topic("orders", 3, 5);
        let bytes = postcard::to_stdvec(&cmd).expect("encode");
        assert_eq!(
            postcard::from_bytes::<ControllerCommand>(&bytes).expect("decode"),
            cmd
        );
    }

    /// A command over a small name space, so creates and deletes collide often.
    /// A proposer's clock: mostly the start of time (revisions count from 1), sometimes a
    /// few ms later (revisions jump to it), never ahead of order.
    fn clock() -> impl proptest::strategy::Strategy<Value = i64> {
        use proptest::prelude::*;
        prop_oneof![3 => Just(0i64), 1 => 1i64..3]
    }

    fn arb_command() -> impl proptest::strategy::Strategy<Value = ControllerCommand> {
        use proptest::prelude::*;
        let name = prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")];
        prop_oneof![
            (name.clone(), 1u32..12, 0i64..1000).prop_map(|(n, q, t)| create_topic(n, q, t)),
            name.clone().prop_map(|n| ControllerCommand::DeleteTopic {
                name: topic_name(n)
            }),
            (name.clone(), clock()).prop_map(|(n, now_ms)| {
                ControllerCommand::DeleteTopicDropping {
                    name: topic_name(n),
                    now_ms,
                }
            }),
            (
                name.clone(),
                prop_oneof![1u64..8, 1_000u64..1_004, 2_000u64..2_004]
            )
                .prop_map(|(n, id)| ControllerCommand::FinishTopicDrop {
                    name: topic_name(n),
                    id,
                }),
            (name.clone(), proptest::option::of(1_000u64..9_000), clock()).prop_map(
                |(n, retention_ms, now_ms)| ControllerCommand::SetTopicRetentionRevised {
                    name: topic_name(n),
                    retention_ms,
                    now_ms,
                }
            ),
            (name.clone(), 0i64..1000).prop_map(|(n, t)| create_group(n, t)),
            (name.clone(), 0i64..1000).prop_map(|(n, t)| {
                let ControllerCommand::CreateGroup { spec, now_ms } = create_group(n, t) else {
                    unreachable!("create_group makes a CreateGroup")
                };
                ControllerCommand::CreateGroupStarting {
                    spec,
                    start: vela_proto::GroupStart::At(now_ms - 1),
                    now_ms,
                }
            }),
            name.prop_map(|n| ControllerCommand::DeleteGroup {
                name: group_name(n)
            }),
            proptest::collection::btree_set(0u32..4, 1..4).prop_map(|s| {
                ControllerCommand::SetShards {
                    shards: s.into_iter().collect(),
                }
            }),
        ]
    }

    proptest::proptest! {
        /// Against a model that only tracks which names exist: every outcome matches it, placed
        /// queues match the queue count, and the state survives the snapshot encoding.
        #[test]
        fn outcomes_match_a_name_model(commands in proptest::collection::vec(arb_command(), 0..60)) {
            use std::collections::BTreeSet;
            let mut md = with_shards(&[0, 1]);
            let (mut topics, mut groups) = (BTreeSet::new(), BTreeSet::new());
            // Deleted topics still dropping, by their drop ids; the newest topic revision.
            let (mut dropping, mut last_revision) = (BTreeMap::new(), 0u64);
            let mut next_revision = |now_ms: i64| {
                last_revision = (last_revision + 1).max(now_ms as u64 * 1_000);
                last_revision
            };
            for command in commands {
                let outcome = md.apply(command.clone());
                match command {
                    ControllerCommand::CreateTopic { spec, .. } if dropping.contains_key(&spec.name) && !topics.contains(&spec.name) => {
                        proptest::prop_assert_eq!(outcome, Err(Rejected::TopicDropping(spec.name)));
                    }
                    ControllerCommand::CreateTopic { spec, now_ms } => {
                        if topics.insert(spec.name.clone()) {
                            let Ok(Applied::Topic(t)) = outcome else {
                                return Err(proptest::test_runner::TestCaseError::fail(format!("{outcome:?}")));
                            };
                            proptest::prop_assert_eq!(t.queue_shards.len(), spec.queue_count as usize);
                            proptest::prop_assert!(t.queue_shards.iter().all(|s| md.shards().contains(s)));
                            proptest::prop_assert_eq!(t.created_at_ms, now_ms);
                        } else {
                            proptest::prop_assert_eq!(outcome, Err(Rejected::TopicExists(spec.name)));
                        }
                    }
                    ControllerCommand::DeleteTopic { name } => {
                        let expected = if topics.remove(&name) {
                            Ok(Applied::Deleted)
                        } else {
                            Err(Rejected::TopicNotFound(name))
                        };
                        proptest::prop_assert_eq!(outcome, expected);
                    }
                    ControllerCommand::DeleteTopicDropping { name, now_ms } => {
                        let id = if let Some(&id) = dropping.get(&name) {
                            id
                        } else if topics.remove(&name) {
                            let id = next_revision(now_ms);
                            dropping.insert(name.clone(), id);
                            id
                        } else {
                            proptest::prop_assert_eq!(outcome, Err(Rejected::TopicNotFound(name)));
                            continue;
                        };
                        let Ok(Applied::TopicDropping(drop)) = outcome else {
                            return Err(proptest::test_runner::TestCaseError::fail(format!("{outcome:?}")));
                        };
                        proptest::prop_assert_eq!(drop.id, id);
                        // Only shards that exist (here: configured) are named.
                        proptest::prop_assert!(drop.shards.iter().all(|s| md.shards().contains(s)));
                    }
                    ControllerCommand::FinishTopicDrop { name, id } => {
                        let finished = dropping.get(&name) == Some(&id);
                        if finished {
                            dropping.remove(&name);
                        }
                        proptest::prop_assert_eq!(outcome, Ok(Applied::TopicDropFinished(finished)));
                    }
                    ControllerCommand::SetTopicRetentionRevised { name, retention_ms, now_ms } => {
                        if topics.contains(&name) {
                            let Ok(Applied::Topic(t)) = outcome else {
                                return Err(proptest::test_runner::TestCaseError::fail(format!("{outcome:?}")));
                            };
                            proptest::prop_assert_eq!(t.retention_ms, retention_ms);
                            proptest::prop_assert_eq!(t.retention_revision, next_revision(now_ms));
                        } else {
                            proptest::prop_assert_eq!(outcome, Err(Rejected::TopicNotFound(name)));
                        }
                    }
                    // Not generated here (see `replicated_tests`).
                    ControllerCommand::UpdateGroup { .. } => {}
                    ControllerCommand::CreateGroup { spec, .. }
                    | ControllerCommand::CreateGroupStarting { spec, .. }
                    | ControllerCommand::CreateGroupWithRetry { spec, .. }
                    | ControllerCommand::CreateBroadcastGroup { spec, .. } => {
                        if groups.insert(spec.name.clone()) {
                            proptest::prop_assert!(matches!(outcome, Ok(Applied::Group(_))));
                        } else {
                            proptest::prop_assert_eq!(outcome, Err(Rejected::GroupExists(spec.name)));
                        }
                    }
                    ControllerCommand::DeleteGroup { name } => {
                        let expected = if groups.remove(&name) {
                            Ok(Applied::Deleted)
                        } else {
                            Err(Rejected::GroupNotFound(name))
                        };
                        proptest::prop_assert_eq!(outcome, expected);
                    }
                    ControllerCommand::SetShards { shards } => {
                        proptest::prop_assert_eq!(outcome, Ok(Applied::Shards(shards)));
                    }
                    // Not generated here (see `replicated_tests`).
                    ControllerCommand::CreateTopicReplicated { .. }
                    | ControllerCommand::MarkShardCreated { .. }
                    | ControllerCommand::DrainStore { .. } => {}
                    // Not generated here (see `metadata::auth`).
                    ControllerCommand::CreateUser { .. }
                    | ControllerCommand::UpdateUser { .. }
                    | ControllerCommand::DeleteUser { .. }
                    | ControllerCommand::PutAcl { .. }
                    | ControllerCommand::DeleteAcl { .. } => {}
                    // Not generated here (see `metadata::routes`).
                    ControllerCommand::CreateRoute { .. }
                    | ControllerCommand::CreateHttpRoute { .. }
                    | ControllerCommand::CreateHttpRouteWithHeaders { .. }
                    | ControllerCommand::AddReceiptKey { .. }
                    | ControllerCommand::RetireReceiptKey { .. }
                    | ControllerCommand::SetTierCredentials { .. }
                    | ControllerCommand::RegisterStore { .. }
                    | ControllerCommand::MoveReplica { .. }
                    | ControllerCommand::UnregisterStore { .. }
                    | ControllerCommand::SetStoreScaleIn { .. }
                    | ControllerCommand::UndrainStore { .. }
                    | ControllerCommand::AdoptConfiguredShards { .. }
                    | ControllerCommand::SetTopicRetention { .. }
                    | ControllerCommand::DeleteRoute { .. }
                    | ControllerCommand::SetRoutePaused { .. } => {}
                }
            }
            let names: BTreeSet<_> = md.topics().map(|t| t.name.clone()).collect();
            proptest::prop_assert_eq!(names, topics);
            let pending: BTreeMap<_, _> = md.pending_drops().into_iter().map(|(n, d)| (n, d.id)).collect();
            proptest::prop_assert_eq!(pending, dropping);
            let names: BTreeSet<_> = md.groups().map(|g| g.name.clone()).collect();
            proptest::prop_assert_eq!(names, groups);
            let json = serde_json::to_vec(&md).expect("encode");
            proptest::prop_assert_eq!(serde_json::from_slice::<Metadata>(&json).expect("decode"), md);
        }
    }
}

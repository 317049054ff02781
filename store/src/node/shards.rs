//! Adding shards to a running store: starting a shard's background work ([`Store::adopt`],
//! also used at start) and opening a replica the controller placed here ([`Store::open_shard`],
//! ADR 0013).

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use tokio::sync::mpsc;
use tracing::{error, info, warn};
use vela_proto::domain::ShardId;
use vela_proto::store_api::{OpenMode, StoreError};

use super::{LocalShard, MAX_QUEUED_ACKS, Store, batch_acks, upgrade};
use crate::shard::coalesce::AppendCoalescer;
use crate::shard::scrub::{self, ScrubPolicy};
use crate::shard::{DamageFound, Shard, ShardRaft};
use crate::shard::{tasks, transactions};

impl Store {
    /// Starts an open shard's background work and makes it served.
    pub(super) fn adopt(&self, shard: Arc<Shard>) {
        let id = shard.id;
        // Stopped with the store, or alone when the shard is removed from this node.
        let cancel = &self.cancel.child_token();
        // Tracked per shard too, so removing the shard can wait for them.
        let tracker = tokio_util::task::TaskTracker::new();
        let mut store_tasks = self.tasks.lock();
        let mut tasks = Spawner {
            set: &mut store_tasks,
            tracker: &tracker,
        };
        if let Some(replication) = &self.replication {
            tasks.spawn(upgrade::raise_when_leading(
                shard.clone(),
                self.config.node_id,
                replication.builds.clone(),
                cancel.clone(),
            ));
        }
        let (acks, ack_rx) = mpsc::channel(MAX_QUEUED_ACKS);
        tasks.spawn(batch_acks(shard.clone(), ack_rx, cancel.clone()));
        let appends = AppendCoalescer::new(shard.clone(), self.clock.clone());
        tasks.spawn(tasks::release_due_messages(
            shard.clone(),
            self.clock.clone(),
            cancel.clone(),
        ));
        tasks.spawn(transactions::roll_back_orphans(
            shard.clone(),
            self.clock.clone(),
            self.check_policy,
            self.metrics.clone(),
            cancel.clone(),
        ));
        tasks.spawn(crate::shard::broadcast::forget_idle_instances(
            shard.clone(),
            self.config.broadcast_instance_expiry,
            self.clock.clone(),
            cancel.clone(),
        ));
        tasks.spawn(tasks::retention_loop(
            shard.clone(),
            self.retention,
            self.config.retention_check_interval,
            self.clock.clone(),
            cancel.clone(),
        ));
        if let Some((tier, policy)) = self.tier.get() {
            let _ = shard.tier.set(tier.clone());
            tasks.spawn(crate::shard::tiering::tier_loop(
                shard.clone(),
                tier.clone(),
                *policy,
                self.clock.clone(),
                cancel.clone(),
            ));
        }
        tasks.spawn(crate::metrics::watch_leaders(
            shard.clone(),
            self.metrics.clone(),
            cancel.clone(),
        ));
        tasks.spawn(tasks::snapshot_by_bytes(
            shard.clone(),
            self.config.snapshot_every_bytes.as_u64(),
            cancel.clone(),
        ));
        // A replica of a placed shard is scrubbed soon after it opens: damage done while its
        // node was down is found, and the replica replaced from its peers, while they still
        // hold a good copy (see `set_aside_running`).
        let replaceable = self.replicated;
        tasks.spawn(scrub::scrub_loop(
            shard.clone(),
            ScrubPolicy {
                first_after: if replaceable {
                    scrub::FIRST_REPLICA_SCRUB_AFTER
                } else {
                    scrub::FIRST_SCRUB_AFTER
                },
                ..self.scrub_policy
            },
            self.metrics.clone(),
            replaceable.then(|| self.damaged.clone()),
            cancel.clone(),
        ));
        info!(
            shard = id,
            last_applied = shard.shared.last_applied_index(),
            "store shard ready"
        );
        self.metrics.attach_shard(&shard);
        shard.fairness.attach(self.saturation.clone());
        let mut shards = self.shards.write();
        let mut map = BTreeMap::clone(&shards);
        map.insert(
            id,
            Arc::new(LocalShard {
                shard,
                acks,
                appends,
                cancel: cancel.clone(),
                tasks: tracker,
            }),
        );
        *shards = Arc::new(map);
    }

    /// Opens this node's replica of `shard` while the store runs: the controller placed it
    /// here. `voters` are the shard's members (node id → Raft address). [`OpenMode::Create`]
    /// creates the group on an empty log, for a shard that is new; [`OpenMode::Join`] opens an
    /// empty replica that waits for the group's leader to add it as a learner (ADR 0014); a
    /// shard this node should already hold ([`OpenMode::Resume`]) but has no log of (a node
    /// that lost its disk) is refused with [`StoreError::ReplicaLost`], because an empty voter
    /// could grant its vote to one that misses committed entries (ADR 0010). The shard is
    /// remembered (`placed::FILE`) and reopened at every start. Idempotent: a shard already
    /// held answers its Raft handle.
    ///
    /// The open runs in a task of its own: a caller that goes away (a cancelled RPC) cannot cut
    /// it short between starting the shard's Raft and serving it.
    pub async fn open_shard(
        self: &Arc<Self>,
        shard: ShardId,
        voters: BTreeMap<u64, String>,
        mode: OpenMode,
    ) -> Result<ShardRaft, StoreError> {
        let this = self.clone();
        tokio::spawn(async move { this.open_shard_here(shard, voters, mode).await })
            .await
            .map_err(|e| StoreError::Internal(format!("opening shard {shard}: {e}")))?
    }

    /// [`Store::open_shard`] on the caller's task.
    pub(super) async fn open_shard_here(
        &self,
        shard: ShardId,
        voters: BTreeMap<u64, String>,
        mode: OpenMode,
    ) -> Result<ShardRaft, StoreError> {
        let initialize = mode == OpenMode::Create;
        let Some(replication) = &self.replication else {
            return Err(StoreError::Invalid(
                "a standalone store holds its configured shards only".into(),
            ));
        };
        if !voters.contains_key(&self.config.node_id) {
            return Err(StoreError::Invalid(format!(
                "shard {shard}: node {} is not one of its replicas {:?}",
                self.config.node_id,
                voters.keys().collect::<Vec<_>>()
            )));
        }
        let _one_at_a_time = self.opening.lock().await;
        if self.cancel.is_cancelled() {
            return Err(StoreError::Unavailable("store is shutting down".into()));
        }
        let stopped = self.shards().get(&shard).and_then(|local| {
            let metrics = local.shard.raft.metrics().borrow_watched().clone();
            metrics.running_state.err()
        });
        if let Some(openraft::error::Fatal::Stopped) = stopped {
            // Stopped on purpose (the replica is being removed or the store stopped), not
            // on an error: nothing to reopen.
            return Err(StoreError::Unavailable(format!(
                "shard {shard} is stopping on node {}",
                self.config.node_id
            )));
        }
        if let Some(fatal) = stopped {
            // Its Raft stopped on an error (a snapshot install whose copy failed, a disk
            // error): opened again from its files, as a restart would (a replica marked
            // restoring is deleted below and then replaced as lost). One that stopped on a
            // damaged record is set aside instead: opening trusts sealed footers and would
            // serve it again.
            let damage = self
                .shards()
                .get(&shard)
                .and_then(|local| local.shard.log.damage_seen());
            warn!(shard, error = %fatal, "reopening a replica whose Raft stopped");
            self.detach(shard).await;
            if let Some(damage) = damage
                && self.replaceable(shard, voters.len())
            {
                let why = crate::error::StoreOpenError::Log {
                    shard,
                    source: damage,
                };
                return Err(self.set_aside_damaged(shard, &why).await);
            }
        }
        self.index_closed(shard)?;
        if let Some(local) = self.shards().get(&shard) {
            let uninitialized = voter_count(&local.shard.raft) == 0;
            if initialize && uninitialized {
                // Held but never given its members (a crash right after its log was made).
                let members: BTreeMap<u64, openraft::BasicNode> = voters
                    .iter()
                    .map(|(&id, addr)| (id, openraft::BasicNode::new(addr.clone())))
                    .collect();
                if let Err(err) = local.shard.raft.initialize(members).await {
                    warn!(shard, error = %err, "initializing a held, uninitialized shard");
                }
            }
            return Ok(local.shard.raft.clone());
        }
        if self.cancel.is_cancelled() {
            return Err(StoreError::Unavailable("store is shutting down".into()));
        }
        let (vfs, dir) = (self.vfs.clone(), self.config.data_dir.clone());
        let configured = self.config.shards.contains(&shard);
        let has_log = {
            let (vfs, dir) = (vfs.clone(), dir.clone());
            tokio::task::spawn_blocking(move || {
                super::reopen::drop_incomplete(vfs.as_ref(), &dir, shard, configured)?;
                let log = dir.join("shards").join(shard.to_string()).join("log");
                Ok::<_, std::io::Error>(vfs.is_dir(&log))
            })
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .map_err(|e| StoreError::Internal(format!("shard {shard}: {e}")))?
        };
        if mode == OpenMode::Resume && !has_log {
            return Err(StoreError::ReplicaLost(format!(
                "shard {shard} has no log on node {} and is not new: a replica that lost its \
                 data must be replaced, not restarted empty",
                self.config.node_id
            )));
        }
        let members = voters.len();
        let opened = match (replication.open)(shard, voters, initialize).await {
            Ok(opened) => opened,
            Err(err) if err.is_damage() && self.replaceable(shard, members) => {
                return Err(self.set_aside_damaged(shard, &err).await);
            }
            Err(err) => {
                return Err(StoreError::Internal(format!(
                    "opening shard {shard}: {err}"
                )));
            }
        };
        // Remembered once its group exists (a crash before leaves a log the controller's next
        // open finds; nothing empty and uninitialized is ever reopened on its own).
        let recorded = if self.cancel.is_cancelled() {
            Err(StoreError::Unavailable("store is shutting down".into()))
        } else {
            tokio::task::spawn_blocking(move || {
                let mut held =
                    crate::placed::read(vfs.as_ref(), &dir).map_err(|e| e.to_string())?;
                held.push(shard);
                crate::placed::write(vfs.as_ref(), &dir, &held).map_err(|e| e.to_string())?;
                // A configured shard placed here again is held, not released (ADR 0032).
                crate::placed::unrelease(vfs.as_ref(), &dir, shard)
            })
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .map_err(|e| StoreError::Internal(format!("recording shard {shard}: {e}")))
        };
        if let Err(err) = recorded {
            if let Err(close) = opened.close().await {
                warn!(shard, error = %close, "closing a shard that could not be recorded");
            }
            return Err(err);
        }
        let raft = opened.raft.clone();
        self.adopt(opened);
        Ok(raft)
    }
}

impl Store {
    /// Sets aside this node's damaged replica of `shard` (see `damaged`): what the open
    /// answers.
    pub(super) async fn set_aside_damaged(
        &self,
        shard: ShardId,
        why: &(dyn std::fmt::Display + Sync),
    ) -> StoreError {
        let (vfs, dir, node) = (
            self.vfs.clone(),
            self.config.data_dir.clone(),
            self.config.node_id,
        );
        let now = u64::try_from(self.clock.now_ms()).unwrap_or(0);
        let why = why.to_string();
        let configured = self.config.shards.contains(&shard);
        tokio::task::spawn_blocking(move || {
            // A configured shard is recorded released first (ADR 0032): the next start must not
            // open an empty replica of it, which could vote without the entries it lost.
            if configured && let Err(err) = crate::placed::release(vfs.as_ref(), &dir, shard) {
                return StoreError::Internal(format!(
                    "shard {shard}'s replica on node {node} is damaged ({why}) and could not be \
                     recorded released ({err}); it is not opened"
                ));
            }
            super::damaged::replace(vfs.as_ref(), &dir, node, shard, now, &why)
        })
        .await
        .unwrap_or_else(|e| StoreError::Internal(format!("setting shard {shard} aside: {e}")))
    }
}

impl Store {
    /// Stops serving this node's replica of `shard`, whose scrub or a read found damaged
    /// records, and sets it aside (see `damaged`): the controller's next open is answered
    /// `ReplicaLost` and the replica is copied again from the other members. A standalone
    /// store's, and a single replica's, only report the damage.
    pub(super) async fn set_aside_running(&self, damaged: &Arc<Shard>, found: DamageFound) {
        let shard = damaged.id;
        let members = voter_count(&damaged.raft);
        if !self.replaceable(shard, members) {
            return;
        }
        let _one_at_a_time = self.opening.lock().await;
        // Still the replica the scrub read (not one reopened or joined since).
        let current = self
            .shards()
            .get(&shard)
            .is_some_and(|local| Arc::ptr_eq(&local.shard, damaged));
        if self.cancel.is_cancelled() || !current {
            return;
        }
        // Once more before it goes: a scrub or a read that raced a truncation of the log's end
        // (a follower overwriting entries its leader replaced) may have seen a segment change
        // under it.
        let why = match found {
            DamageFound::Scrub => {
                if let scrub::ScrubOutcome::Done(again) =
                    scrub::scrub_now(damaged, 0, &self.metrics, &self.cancel).await
                    && again.damaged.is_empty()
                {
                    info!(shard, "a second scrub found the replica intact; keeping it");
                    return;
                }
                "its scrub found damaged log records".to_string()
            }
            DamageFound::Read { log_index } => match damaged.reader.entry_shared(log_index) {
                Err(err) if err.is_damage() => {
                    format!("a read found log index {log_index} damaged: {err}")
                }
                _ => {
                    info!(
                        shard,
                        log_index, "a second read found the record intact; keeping the replica"
                    );
                    return;
                }
            },
        };
        self.detach(shard).await;
        let outcome = self.set_aside_damaged(shard, &why).await;
        info!(shard, outcome = %outcome, "stopped serving a damaged replica");
    }

    /// Whether this node's damaged replica of `shard`, a group of `members` voters, is set
    /// aside to be replaced: only when other members hold the shard (a single replica is the
    /// only copy: it stays where it is, not opened, for an operator to recover). A configured
    /// shard's is replaced like a placed one's once the controller adopted it (ADR 0032).
    fn replaceable(&self, shard: ShardId, members: usize) -> bool {
        let replaceable = self.replicated && members > 1;
        if !replaceable {
            error!(
                shard,
                members, "damaged replica is not replaced: it is the only copy"
            );
        }
        replaceable
    }
}

/// How many voters the replica's membership names (0: not initialized).
fn voter_count(raft: &ShardRaft) -> usize {
    raft.metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .voter_ids()
        .count()
}

/// Spawns a shard's background task on the store's set, tracked by the shard's tracker.
struct Spawner<'a> {
    set: &'a mut tokio::task::JoinSet<()>,
    tracker: &'a tokio_util::task::TaskTracker,
}

impl Spawner<'_> {
    fn spawn<F>(&mut self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.set.spawn(self.tracker.track_future(task));
    }
}

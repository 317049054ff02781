//! openraft's view of a shard's state: applies committed entries to [`ShardState`] behind a lock
//! the store reads through, and saves or restores it as snapshot generations
//! (`vela_raft::generations`). The queues' entries are not in a snapshot: apply collects them
//! in memory and a background task writes them to the shard's index file (`index_db`); a
//! snapshot build makes the file durable through the snapshot's index before it writes the
//! generation (ADR 0008). A restart installs the newest readable generation, checks the index
//! file covers it, and openraft replays the log after it.
//!
//! openraft runs a snapshot build in a task of its own while the state machine goes on, so an
//! install can overlap a build. Snapshot files are therefore only touched under one lock, which
//! a build holds from taking its copy of the state to writing it, and a build never writes a
//! generation older than one on disk.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StoredMembership};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use vela_raft::generations::{Generation, SnapshotKeeper};

use super::catch_up::{Fill, Restoring};
pub(crate) use super::snapshot_format::SnapshotState;
use super::snapshot_format::{SnapshotFile, decode_snapshot, encode_snapshot};
use super::{CatchUp, ShardShared, ShardTypes};
use crate::command::{CommandResponse, StoreCommand};
use crate::index_db::history::HistoryRows;
use crate::index_db::{IndexDb, IndexError, IndexView};
use crate::state::{APPLY_VERSION, ApplyEffects, Frozen, ShardState};

/// Applied entries kept in memory before a background write to the index file starts.
const FLUSH_ENTRIES: usize = 16_384;
/// Applied entries in memory past which apply waits for the write in progress (the writer
/// fell behind).
const MAX_UNFLUSHED: usize = 8 * FLUSH_ENTRIES;

/// What has been applied so far.
#[derive(Debug)]
pub(crate) struct Applied {
    pub last_applied: Option<LogIdOf<ShardTypes>>,
    pub membership: StoredMembershipOf<ShardTypes>,
    pub state: ShardState,
}

impl Applied {
    pub fn new(state: ShardState) -> Self {
        Self {
            last_applied: None,
            membership: StoredMembership::default(),
            state,
        }
    }
}

/// Held while snapshot files are read or written (see the module comment).
type SnapshotFileLock = Arc<Mutex<()>>;

/// Each queue's key and first offset in a snapshot generation: what a replay from it may read.
/// A generation's floors: per queue key its first retained offset, and the retention floor of
/// the log (records below it are gone).
type Floors = (HashMap<u32, u64>, u64);

pub struct ShardStateMachine {
    shared: Arc<ShardShared>,
    keeper: SnapshotKeeper<ShardTypes>,
    snapshot_file: SnapshotFileLock,
    /// The generation read at open, served once to openraft's start-up instead of reading the
    /// file again.
    opened_with: Option<(SnapshotMetaOf<ShardTypes>, Vec<u8>)>,
    /// The write of frozen entries to the index file in progress.
    flushing: Option<JoinHandle<Result<Arc<IndexView>, IndexError>>>,
    /// Floors of the newest generation this process built (the older kept one, once the next
    /// is built): garbage collection of the index file stays above them.
    floors: Arc<parking_lot::Mutex<Option<Floors>>>,
    /// A replica of a replicated shard: how it copies what a snapshot from another member
    /// needs (`None` for a single voter, which never installs one).
    catch_up: Option<CatchUp>,
}

impl ShardStateMachine {
    pub(crate) fn new(
        shared: Arc<ShardShared>,
        keeper: SnapshotKeeper<ShardTypes>,
        opened_with: Option<Generation<(SnapshotMetaOf<ShardTypes>, Vec<u8>)>>,
        catch_up: Option<CatchUp>,
    ) -> Self {
        Self {
            shared,
            keeper,
            snapshot_file: SnapshotFileLock::default(),
            opened_with: opened_with.map(|g| g.value),
            flushing: None,
            floors: Arc::default(),
            catch_up,
        }
    }

    /// Copies what the snapshot `file` from another member needs and this replica lacks: the
    /// retained log below it and the queue index entries (see `catch_up`). `true` when it
    /// copied: the replica is then marked `restoring` until the snapshot is durable.
    async fn copy_what_the_snapshot_needs(&self, file: &SnapshotFile) -> Result<bool, io::Error> {
        let (Some(catch_up), Some(snapshot)) = (&self.catch_up, file.meta.last_log_id) else {
            return Ok(false);
        };
        let index = match &file.state {
            SnapshotState::Current(state) => {
                let db = self.index().clone();
                let through = tokio::task::spawn_blocking(move || db.indexed_through())
                    .await
                    .map_err(io::Error::other)?
                    .map_err(io::Error::from)?;
                through.unwrap_or(0) < state.last_indexing()
            }
            // A format-2 snapshot carries its index entries.
            SnapshotState::Format2(_) => false,
        };
        // Every other member (the leader that sent the snapshot keeps that generation; a member
        // that does not answers at once).
        let members: Vec<(u64, String)> = file
            .meta
            .last_membership
            .membership()
            .nodes()
            .filter(|(id, _)| **id != catch_up.node_id)
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        let fill = Fill {
            shard: self.shared.shard,
            snapshot,
            floor: file.state.local_floor(),
            index,
            members,
            log: &catch_up.log,
            db: self.index(),
            restoring: Restoring {
                vfs: catch_up.vfs.clone(),
                dir: catch_up.dir.clone(),
                marked: AtomicBool::new(false),
            },
        };
        let Some(request) = fill.request() else {
            return Ok(false);
        };
        fill.run(catch_up.source.as_ref(), request).await?;
        Ok(true)
    }

    /// Removes the `restoring` mark once the installed snapshot is durable.
    async fn restored(&self) -> Result<(), io::Error> {
        let Some(catch_up) = &self.catch_up else {
            return Ok(());
        };
        let (vfs, dir) = (catch_up.vfs.clone(), catch_up.dir.clone());
        tokio::task::spawn_blocking(move || super::restoring::clear(vfs.as_ref(), &dir))
            .await
            .map_err(io::Error::other)?
    }

    fn index(&self) -> &Arc<IndexDb> {
        &self.shared.index
    }

    /// Takes in the finished write of frozen entries (waits for it if `wait`).
    async fn settle_flush(&mut self, wait: bool) -> Result<(), io::Error> {
        let Some(handle) = self.flushing.take_if(|h| wait || h.is_finished()) else {
            return Ok(());
        };
        let view = handle.await.map_err(io::Error::other)??;
        self.shared
            .applied
            .write()
            .state
            .entries_mut()
            .flushed(view);
        Ok(())
    }

    /// Starts writing the applied entries to the index file once enough have collected.
    fn start_flush(&mut self, frozen: Option<Arc<Frozen>>, through: u64) {
        let Some(frozen) = frozen else { return };
        let db = self.index().clone();
        self.flushing = Some(tokio::task::spawn_blocking(move || {
            db.write(&frozen.entries, &frozen.history, through)?;
            // Durable now, in this small step, rather than all at once when the next snapshot
            // needs it: one large flush of the index file at snapshot time held the disk for
            // ~20 ms, and every send's log fsync waited behind it.
            db.make_durable()?;
            db.view()
        }));
    }
}

fn invalid_data(err: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err.to_string())
}

impl RaftStateMachine<ShardTypes> for ShardStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = ShardSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<ShardTypes>>, StoredMembershipOf<ShardTypes>), io::Error> {
        let applied = self.shared.applied.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<S>(&mut self, entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<ShardTypes>, io::Error>> + Unpin + OptionalSend,
    {
        let entries: Vec<EntryResponder<ShardTypes>> = entries.try_collect().await?;
        let backlog = self.shared.applied.read().state.entries().tail_len();
        self.settle_flush(backlog >= MAX_UNFLUSHED).await?;
        let mut fx = ApplyEffects::default();
        let mut replies = Vec::new();
        let frozen;
        let through;
        let mut body_bytes = 0;
        {
            let mut applied = self.shared.applied.write();
            for (entry, responder) in entries {
                let response = match entry.payload {
                    EntryPayload::Blank => CommandResponse::Nothing,
                    EntryPayload::Normal(StoreCommand::SetApplyVersion { version })
                        if version > APPLY_VERSION =>
                    {
                        // Applying on with older semantics would make this replica diverge:
                        // stop the shard instead (openraft treats this as fatal).
                        tracing::error!(
                            shard = self.shared.shard,
                            log_index = entry.log_id.index,
                            version,
                            supported = APPLY_VERSION,
                            "the log asks for apply semantics this build does not have; upgrade \
                             this node before it can apply the shard"
                        );
                        return Err(invalid_data(format!(
                            "log index {} of shard {} needs apply version {version}, this build \
                             supports up to {APPLY_VERSION}",
                            entry.log_id.index, self.shared.shard
                        )));
                    }
                    EntryPayload::Normal(ref command) => {
                        body_bytes += command.body_bytes();
                        applied.state.apply(entry.log_id.index, command, &mut fx)
                    }
                    EntryPayload::Membership(ref membership) => {
                        applied.membership =
                            StoredMembership::new(Some(entry.log_id), membership.clone());
                        CommandResponse::Nothing
                    }
                };
                applied.last_applied = Some(entry.log_id);
                if let Some(responder) = responder {
                    replies.push((responder, response));
                }
            }
            if let Some(failure) = applied.state.entries().failure() {
                // A read of the index went wrong: what apply computed cannot be trusted, so
                // nothing is answered and the shard stops (openraft treats this as fatal).
                return Err(io::Error::other(format!(
                    "shard {}: the queue index file failed: {failure}",
                    self.shared.shard
                )));
            }
            through = applied.last_applied.map_or(0, |l| l.index);
            self.shared.apply_version.store(
                applied.state.apply_version(),
                std::sync::atomic::Ordering::Release,
            );
            frozen =
                if self.flushing.is_none() && applied.state.entries().tail_len() >= FLUSH_ENTRIES {
                    applied.state.entries_mut().freeze()
                } else {
                    None
                };
        }
        self.start_flush(frozen, through);
        self.shared
            .applied_bytes
            .fetch_add(body_bytes, std::sync::atomic::Ordering::Relaxed);
        // Answer and wake outside the lock: woken readers take it right away.
        for (responder, response) in replies {
            responder.send(response);
        }
        self.shared.after_apply(fx);
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<Self::SnapshotBuilder> {
        Some(self.get_snapshot_builder().await)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        ShardSnapshotBuilder {
            shared: self.shared.clone(),
            keeper: self.keeper.clone(),
            snapshot_file: self.snapshot_file.clone(),
            floors: self.floors.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<ShardTypes>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let file = decode_snapshot(index, &snapshot).map_err(invalid_data)?;
        if file.meta.last_log_id != meta.last_log_id {
            return Err(invalid_data(format!(
                "snapshot data covers {:?} but its meta says {:?}",
                file.meta.last_log_id, meta.last_log_id
            )));
        }
        if file.state.shard() != self.shared.shard {
            return Err(invalid_data(format!(
                "snapshot is of shard {} but this is shard {}",
                file.state.shard(),
                self.shared.shard
            )));
        }
        self.settle_flush(true).await?;
        let copied = self.copy_what_the_snapshot_needs(&file).await?;
        let db = self.index().clone();
        let shard = self.shared.shard;
        let (mut state, view) = tokio::task::spawn_blocking(move || {
            let state = restore_index(&db, shard, index, file.state)?;
            Ok::<_, io::Error>((state, db.view()?))
        })
        .await
        .map_err(io::Error::other)??;
        let on_disk = self.snapshot_file.lock().await;
        if !self
            .keeper
            .generations()
            .indexes()
            .map_err(io::Error::from)?
            .contains(&index)
        {
            self.keeper
                .persist_installed(index, Arc::new(snapshot))
                .await
                .map_err(io::Error::from)?;
        }
        if copied {
            self.restored().await?;
        }
        {
            let mut applied = self.shared.applied.write();
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
            state.take_entries_from(&mut applied.state);
            state.entries_mut().attach(view);
            self.shared
                .apply_version
                .store(state.apply_version(), std::sync::atomic::Ordering::Release);
            applied.state = state;
        }
        drop(on_disk);
        // Which generation a replay may start from is not known here: collect nothing until
        // two more are built.
        *self.floors.lock() = None;
        info!(shard = self.shared.shard, last_log_id = ?meta.last_log_id, "installed shard snapshot");
        self.shared.state_replaced();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<ShardTypes, Vec<u8>>>, io::Error> {
        if let Some((meta, snapshot)) = self.opened_with.take() {
            return Ok(Some(SnapshotOf::<ShardTypes, Vec<u8>> { meta, snapshot }));
        }
        let _on_disk = self.snapshot_file.lock().await;
        let generations = self.keeper.generations().clone();
        let newest = tokio::task::spawn_blocking(move || {
            generations.read_newest(|index, bytes| {
                decode_snapshot(index, bytes).map(|f| (f.meta, bytes.to_vec()))
            })
        })
        .await
        .map_err(io::Error::other)?
        .map_err(io::Error::from)?;
        Ok(newest.map(|g| SnapshotOf::<ShardTypes, Vec<u8>> {
            meta: g.value.0,
            snapshot: g.value.1,
        }))
    }
}

/// Checks the index file holds what a snapshot at `index` needs, or writes it there (a format-2
/// snapshot carries its entries), and returns the state to continue from.
fn restore_index(
    db: &IndexDb,
    shard: vela_proto::domain::ShardId,
    index: u64,
    state: SnapshotState,
) -> Result<ShardState, io::Error> {
    match state {
        SnapshotState::Current(state) => {
            let through = db.indexed_through()?.unwrap_or(0);
            let needed = state.last_indexing();
            if through < needed {
                return Err(invalid_data(format!(
                    "shard {shard}: the queue index file holds entries through log index \
                     {through} but the snapshot at {index} needs them through {needed}; the \
                     index file is missing or was replaced (restore the shard directory as a \
                     whole)"
                )));
            }
            // What the file holds may not be durable yet (written since the last snapshot);
            // the generation about to be persisted relies on it.
            db.make_durable()?;
            Ok(state)
        }
        SnapshotState::Format2(legacy) => {
            let (mut state, entries) = legacy.upgrade();
            info!(
                shard,
                entries = entries.len(),
                "moving queue index entries of a format-2 snapshot into the index file"
            );
            db.write(&entries, &HistoryRows::default(), index)?;
            db.make_durable()?;
            // Everything the snapshot needs is in the file now, and a later open checks that.
            state.set_last_indexing(index);
            Ok(state)
        }
    }
}

/// Persists the applied state as the shard's newest snapshot generation, after making the index
/// file durable through it.
pub struct ShardSnapshotBuilder {
    shared: Arc<ShardShared>,
    keeper: SnapshotKeeper<ShardTypes>,
    snapshot_file: SnapshotFileLock,
    floors: Arc<parking_lot::Mutex<Option<Floors>>>,
}

impl RaftSnapshotBuilder<ShardTypes> for ShardSnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<ShardTypes, Vec<u8>>, io::Error> {
        let started = std::time::Instant::now();
        let built = self.build_snapshot_now().await;
        if built.is_ok() {
            self.shared
                .record_timing(|t| &t.snapshot_seconds, started.elapsed());
        }
        built
    }
}

impl ShardSnapshotBuilder {
    async fn build_snapshot_now(&mut self) -> Result<SnapshotOf<ShardTypes, Vec<u8>>, io::Error> {
        // Taken before the copy: an install that overlaps this build then lands entirely before
        // the copy or entirely after the write.
        let on_disk = self.snapshot_file.lock().await;
        // Under the lock only a copy of the small state and of the entries not yet in the file.
        let (meta, state, unflushed) = {
            let mut applied = self.shared.applied.write();
            let meta = SnapshotMetaOf::<ShardTypes> {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
            };
            let unflushed = applied.state.entries().unflushed();
            self.shared.snapshot_bytes.store(
                self.shared
                    .applied_bytes
                    .load(std::sync::atomic::Ordering::Relaxed),
                std::sync::atomic::Ordering::Relaxed,
            );
            (meta, applied.state.snapshot_copy(), unflushed)
        };
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let db = self.shared.index.clone();
        let (bytes, floors) = {
            let meta = meta.clone();
            tokio::task::spawn_blocking(move || -> Result<_, io::Error> {
                // Written again if a background write has them too: same keys, same entries.
                for part in &unflushed {
                    db.write(&part.entries, &part.history, index)?;
                }
                db.make_durable()?;
                let bytes = encode_snapshot(&meta, &state).map_err(invalid_data)?;
                Ok((
                    bytes,
                    (
                        (state.index_floors(), state.truncated_below()),
                        state.next_queue_key(),
                    ),
                ))
            })
            .await
            .map_err(io::Error::other)??
        };
        let bytes = Arc::new(bytes);
        let written = self
            .keeper
            .persist(index, bytes.clone())
            .await
            .map_err(io::Error::from)?;
        drop(on_disk);
        debug!(shard = self.shared.shard, last_log_id = ?meta.last_log_id, bytes = bytes.len(), written, "built shard snapshot");
        if written {
            self.collect_garbage(floors).await;
        }
        let bytes = Arc::try_unwrap(bytes).unwrap_or_else(|shared| (*shared).clone());
        Ok(SnapshotOf::<ShardTypes, Vec<u8>> {
            meta,
            snapshot: bytes,
        })
    }
}

impl ShardSnapshotBuilder {
    /// Deletes index entries neither kept generation can read: below the older one's floors
    /// (or the newer one's, for queues made since), and queues neither has.
    async fn collect_garbage(&self, (newest, key_limit): (Floors, u32)) {
        let Some(older) = self.floors.lock().replace(newest.clone()) else {
            return;
        };
        let (mut floors, newest_log_floor) = newest;
        let (older_floors, older_log_floor) = older;
        floors.extend(older_floors);
        let log_floor = newest_log_floor.min(older_log_floor);
        let db = self.shared.index.clone();
        let shard = self.shared.shard;
        match tokio::task::spawn_blocking(move || db.collect_garbage(&floors, key_limit, log_floor))
            .await
        {
            Ok(Ok(collected)) if collected.entries > 0 => {
                debug!(
                    shard,
                    entries = collected.entries,
                    "index garbage collected"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(err)) => warn!(shard, error = %err, "index garbage collection failed"),
            Err(err) => warn!(shard, error = %err, "index garbage collection failed"),
        }
    }
}

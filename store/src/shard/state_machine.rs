//! openraft's view of a shard's state: applies committed entries to [`ShardState`] behind a lock
//! the store reads through, and saves or restores the whole state as snapshot generations
//! (`vela_raft::generations`). The state is in memory only; a restart installs the newest
//! readable generation and openraft replays the log after it.
//!
//! openraft runs a snapshot build in a task of its own while the state machine goes on, so an
//! install can overlap a build. Snapshot files are therefore only touched under one lock, which
//! a build holds from taking its copy of the state to writing it, and a build never writes a
//! generation older than one on disk.

use std::io;
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StoredMembership};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{debug, info};
use vela_raft::generations::{Generation, SnapshotKeeper};

use super::{ShardShared, ShardTypes};
use crate::command::{CommandResponse, StoreCommand};
use crate::state::{APPLY_VERSION, ApplyEffects, ShardState};

/// The snapshot file's payload (inside `vela_raft::snapshot_file` framing). Also what a
/// snapshot transfer carries.
#[derive(Serialize)]
struct SnapshotFileRef<'a> {
    format: u32,
    meta: &'a SnapshotMetaOf<ShardTypes>,
    state: &'a ShardState,
}

#[derive(Deserialize)]
pub(crate) struct SnapshotFile {
    /// Checked before the rest is decoded (see [`decode_snapshot`]).
    _format: u32,
    pub meta: SnapshotMetaOf<ShardTypes>,
    state: ShardState,
}

/// The layout of a shard snapshot's payload: `format` (this number, a varint) first, so a
/// reader can refuse a layout it does not know before decoding the rest. Bumped with any change
/// of [`ShardState`]'s persisted shape.
pub(crate) const SNAPSHOT_FORMAT: u32 = 2;

/// Decodes a snapshot generation and checks it is what its name says.
pub(crate) fn decode_snapshot(index: u64, bytes: &[u8]) -> Result<SnapshotFile, String> {
    let (format, _) = postcard::take_from_bytes::<u32>(bytes).map_err(|e| e.to_string())?;
    if format != SNAPSHOT_FORMAT {
        return Err(format!(
            "snapshot format {format} is not supported (this build reads {SNAPSHOT_FORMAT})"
        ));
    }
    let file: SnapshotFile = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
    let covers = file.meta.last_log_id.map_or(0, |l| l.index);
    if covers != index {
        return Err(format!(
            "snapshot named for index {index} covers index {covers}"
        ));
    }
    Ok(file)
}

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

pub struct ShardStateMachine {
    shared: Arc<ShardShared>,
    keeper: SnapshotKeeper<ShardTypes>,
    snapshot_file: SnapshotFileLock,
    /// The generation read at open, served once to openraft's start-up instead of reading the
    /// file again.
    opened_with: Option<(SnapshotMetaOf<ShardTypes>, Vec<u8>)>,
}

impl ShardStateMachine {
    pub(crate) fn new(
        shared: Arc<ShardShared>,
        keeper: SnapshotKeeper<ShardTypes>,
        opened_with: Option<Generation<(SnapshotMetaOf<ShardTypes>, Vec<u8>)>>,
    ) -> Self {
        Self {
            shared,
            keeper,
            snapshot_file: SnapshotFileLock::default(),
            opened_with: opened_with.map(|g| g.value),
        }
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
        let mut fx = ApplyEffects::default();
        let mut replies = Vec::new();
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
        }
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
        {
            let mut applied = self.shared.applied.write();
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
            applied.state = file.state;
        }
        drop(on_disk);
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

/// Serializes the applied state and persists it as the shard's newest snapshot generation.
pub struct ShardSnapshotBuilder {
    shared: Arc<ShardShared>,
    keeper: SnapshotKeeper<ShardTypes>,
    snapshot_file: SnapshotFileLock,
}

impl RaftSnapshotBuilder<ShardTypes> for ShardSnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<ShardTypes, Vec<u8>>, io::Error> {
        // Taken before the copy: an install that overlaps this build then lands entirely before
        // the copy or entirely after the write.
        let on_disk = self.snapshot_file.lock().await;
        // Serializing under the read lock holds apply back briefly but needs no copy of the
        // state; postcard writes hundreds of MB/s.
        let (meta, bytes) = {
            let applied = self.shared.applied.read();
            let meta = SnapshotMetaOf::<ShardTypes> {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
            };
            let bytes = postcard::to_stdvec(&SnapshotFileRef {
                format: SNAPSHOT_FORMAT,
                meta: &meta,
                state: &applied.state,
            })
            .map_err(invalid_data)?;
            (meta, bytes)
        };
        let bytes = Arc::new(bytes);
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let written = self
            .keeper
            .persist(index, bytes.clone())
            .await
            .map_err(io::Error::from)?;
        drop(on_disk);
        debug!(shard = self.shared.shard, last_log_id = ?meta.last_log_id, bytes = bytes.len(), written, "built shard snapshot");
        let bytes = Arc::try_unwrap(bytes).unwrap_or_else(|shared| (*shared).clone());
        Ok(SnapshotOf::<ShardTypes, Vec<u8>> {
            meta,
            snapshot: bytes,
        })
    }
}

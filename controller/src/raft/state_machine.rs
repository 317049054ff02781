//! The controller's openraft state machine: applies commands to the shared [`Metadata`] and keeps
//! the whole metadata as snapshot generations (`vela_raft::generations`). The state itself lives
//! in memory; after a restart openraft installs the newest readable generation and re-applies
//! the committed log after it.
//!
//! openraft runs a snapshot build in a task of its own while the state machine goes on, so a
//! snapshot from the leader may be installed after a builder copied the state and before it
//! writes. Snapshot files are therefore only touched under one lock, and a builder never writes
//! a generation older than one already on disk.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, StoredMembership};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use vela_raft::LogError;
use vela_raft::generations::{self, Generation, Generations, SnapshotKeeper};
use vela_raft::snapshot_file;
use vela_raft::vfs::Vfs;

use super::ControllerTypeConfig as C;
use crate::command::Applied;
use crate::metadata::Metadata;

/// The bytes openraft moves around for a snapshot: the JSON of [`Metadata`].
pub(crate) type SnapshotData = Cursor<Vec<u8>>;

/// What a snapshot generation holds (JSON inside vela-raft's checksummed framing, so an operator
/// can read it after stripping the 24-byte header).
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotFile {
    pub meta: SnapshotMetaOf<C>,
    metadata: Metadata,
}

fn decode_file(index: u64, bytes: &[u8]) -> Result<SnapshotFile, String> {
    let file: SnapshotFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let covers = file.meta.last_log_id.map_or(0, |l| l.index);
    if covers != index {
        return Err(format!(
            "snapshot named for index {index} covers index {covers}"
        ));
    }
    Ok(file)
}

/// The controller's snapshot generations in `dir` and the newest readable one. A single
/// snapshot file at `legacy` left by an older version becomes the first generation.
pub(crate) fn read_snapshots(
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    legacy: &Path,
) -> Result<(Generations, Option<Generation<SnapshotFile>>), LogError> {
    let generations = Generations::open(vfs.clone(), dir)?;
    if let Some(bytes) = snapshot_file::read(vfs.as_ref(), legacy)? {
        let file: SnapshotFile =
            serde_json::from_slice(&bytes).map_err(|e| LogError::corrupt(legacy, 0, e))?;
        let index = file.meta.last_log_id.map_or(0, |l| l.index);
        generations::adopt_legacy(&generations, legacy, index, &bytes)?;
    }
    let newest = generations.read_newest(decode_file)?;
    Ok((generations, newest))
}

/// Held while snapshot files are read or written (see the module comment).
type SnapshotFileLock = Arc<Mutex<()>>;

pub struct MetadataStateMachine {
    /// Shared with the controller, which serves reads from it.
    metadata: Arc<RwLock<Metadata>>,
    last_applied: Option<LogIdOf<C>>,
    last_membership: StoredMembershipOf<C>,
    keeper: SnapshotKeeper<C>,
    snapshot_lock: SnapshotFileLock,
    /// The generation read at open, served once to openraft's start-up.
    opened_with: Option<SnapshotFile>,
}

impl MetadataStateMachine {
    /// The last entry applied (or restored from a snapshot).
    pub(crate) fn last_applied(&self) -> Option<LogIdOf<C>> {
        self.last_applied
    }

    /// An empty state machine; openraft restores it from the newest generation and the log.
    pub(crate) fn new(
        metadata: Arc<RwLock<Metadata>>,
        keeper: SnapshotKeeper<C>,
        opened_with: Option<Generation<SnapshotFile>>,
    ) -> Self {
        Self {
            metadata,
            last_applied: None,
            last_membership: StoredMembership::default(),
            keeper,
            snapshot_lock: SnapshotFileLock::default(),
            opened_with: opened_with.map(|g| g.value),
        }
    }
}

fn decode_metadata(bytes: &[u8]) -> io::Result<Metadata> {
    serde_json::from_slice(bytes).map_err(|err| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("controller snapshot data does not decode: {err}"),
        )
    })
}

fn file_bytes(meta: &SnapshotMetaOf<C>, metadata: &Metadata) -> io::Result<Vec<u8>> {
    #[derive(Serialize)]
    struct FileRef<'a> {
        meta: &'a SnapshotMetaOf<C>,
        metadata: &'a Metadata,
    }
    serde_json::to_vec(&FileRef { meta, metadata }).map_err(io::Error::other)
}

fn to_snapshot(file: SnapshotFile) -> io::Result<SnapshotOf<C, SnapshotData>> {
    let bytes = serde_json::to_vec(&file.metadata).map_err(io::Error::other)?;
    Ok(SnapshotOf::<C, SnapshotData> {
        meta: file.meta,
        snapshot: Cursor::new(bytes),
    })
}

impl RaftStateMachine<C> for MetadataStateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = MetadataSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + Send,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let response = match entry.payload {
                EntryPayload::Normal(command) => self.metadata.write().apply(command),
                EntryPayload::Membership(membership) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    Ok(Applied::Nothing)
                }
                EntryPayload::Blank => Ok(Applied::Nothing),
            };
            self.last_applied = Some(entry.log_id);
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        MetadataSnapshotBuilder {
            metadata: self.metadata.read().clone(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            keeper: self.keeper.clone(),
            snapshot_lock: self.snapshot_lock.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<C>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let bytes = snapshot.into_inner();
        let metadata = decode_metadata(&bytes)?;
        let _file = self.snapshot_lock.lock().await;
        // Persist first: once this returns, get_current_snapshot must serve this snapshot.
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let bytes = file_bytes(meta, &metadata)?;
        self.keeper
            .persist_installed(index, Arc::new(bytes))
            .await
            .map_err(io::Error::from)?;
        *self.metadata.write() = metadata;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        tracing::info!(last_log_id = ?meta.last_log_id, "controller snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, Self::SnapshotData>>, io::Error> {
        if let Some(file) = self.opened_with.take() {
            return Ok(Some(to_snapshot(file)?));
        }
        let _file = self.snapshot_lock.lock().await;
        let generations = self.keeper.generations().clone();
        let newest = tokio::task::spawn_blocking(move || generations.read_newest(decode_file))
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::from)?;
        newest.map(|g| to_snapshot(g.value)).transpose()
    }
}

/// A point-in-time copy of the metadata, written out as the new snapshot.
pub struct MetadataSnapshotBuilder {
    metadata: Metadata,
    last_applied: Option<LogIdOf<C>>,
    last_membership: StoredMembershipOf<C>,
    keeper: SnapshotKeeper<C>,
    snapshot_lock: SnapshotFileLock,
}

impl RaftSnapshotBuilder<C> for MetadataSnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Self::SnapshotData>, io::Error> {
        let bytes = serde_json::to_vec(&self.metadata).map_err(io::Error::other)?;
        let meta = SnapshotMetaOf::<C> {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
        };
        let _file = self.snapshot_lock.lock().await;
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let written = self
            .keeper
            .persist(index, Arc::new(file_bytes(&meta, &self.metadata)?))
            .await
            .map_err(io::Error::from)?;
        tracing::info!(last_log_id = ?meta.last_log_id, written, "controller snapshot built");
        Ok(SnapshotOf::<C, SnapshotData> {
            meta,
            snapshot: Cursor::new(bytes),
        })
    }
}

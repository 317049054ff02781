//! The controller's openraft state machine: applies commands to the shared [`Metadata`] and keeps
//! the whole metadata as one snapshot file. The state itself lives in memory; after a restart
//! openraft installs the snapshot and re-applies the committed log after it.
//!
//! openraft runs a snapshot build in a task of its own while the state machine goes on, so a
//! snapshot from the leader may be installed after a builder copied the state and before it
//! writes. The file is therefore only touched under one lock, and a builder leaves a file that
//! already covers its copy alone: replacing the installed snapshot with an older one would, after
//! openraft purged the log up to the installed one, lose the entries in between at a restart.

use std::io::{self, Cursor};
use std::path::PathBuf;
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, StoredMembership};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use vela_raft::snapshot_file;

use super::ControllerTypeConfig as C;
use crate::command::Applied;
use crate::metadata::Metadata;

/// The bytes openraft moves around for a snapshot: the JSON of [`Metadata`].
pub(crate) type SnapshotData = Cursor<Vec<u8>>;

/// What the snapshot file holds (JSON inside vela-raft's checksummed framing, so an operator can
/// read it after stripping the 24-byte header).
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMetaOf<C>,
    metadata: Metadata,
}

/// The head of a [`SnapshotFile`], read without building the metadata.
#[derive(Deserialize)]
struct SnapshotFileHead {
    meta: SnapshotMetaOf<C>,
}

/// Held while the snapshot file is read or written (see the module comment).
type SnapshotFileLock = Arc<Mutex<()>>;

pub(crate) struct MetadataStateMachine {
    /// Shared with the controller, which serves reads from it.
    metadata: Arc<RwLock<Metadata>>,
    last_applied: Option<LogIdOf<C>>,
    last_membership: StoredMembershipOf<C>,
    snapshot_path: PathBuf,
    snapshot_lock: SnapshotFileLock,
}

impl MetadataStateMachine {
    /// An empty state machine; openraft restores it from `snapshot_path` and the log at start.
    pub(crate) fn new(metadata: Arc<RwLock<Metadata>>, snapshot_path: PathBuf) -> Self {
        Self {
            metadata,
            last_applied: None,
            last_membership: StoredMembership::default(),
            snapshot_path,
            snapshot_lock: SnapshotFileLock::default(),
        }
    }
}

/// Reads and decodes the snapshot file at `path` as `T` (the whole file or its head).
fn read_snapshot_file<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> io::Result<Option<T>> {
    let Some(bytes) = snapshot_file::read(path)? else {
        return Ok(None);
    };
    let file = serde_json::from_slice(&bytes).map_err(|err| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "controller snapshot {} does not decode: {err}",
                path.display()
            ),
        )
    })?;
    Ok(Some(file))
}

fn write_snapshot_file(
    path: &std::path::Path,
    meta: &SnapshotMetaOf<C>,
    metadata: &Metadata,
) -> io::Result<()> {
    let file = SnapshotFile {
        meta: meta.clone(),
        metadata: metadata.clone(),
    };
    let bytes = serde_json::to_vec(&file).map_err(io::Error::other)?;
    snapshot_file::write_atomic(path, &bytes)
}

fn decode_metadata(bytes: &[u8]) -> io::Result<Metadata> {
    serde_json::from_slice(bytes).map_err(|err| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("controller snapshot data does not decode: {err}"),
        )
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
            snapshot_path: self.snapshot_path.clone(),
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
        let (path, file_meta) = (self.snapshot_path.clone(), meta.clone());
        let metadata = tokio::task::spawn_blocking(move || {
            write_snapshot_file(&path, &file_meta, &metadata).map(|()| metadata)
        })
        .await
        .map_err(io::Error::other)??;
        *self.metadata.write() = metadata;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        tracing::info!(last_log_id = ?meta.last_log_id, "controller snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, Self::SnapshotData>>, io::Error> {
        let _file = self.snapshot_lock.lock().await;
        let path = self.snapshot_path.clone();
        let file = tokio::task::spawn_blocking(move || read_snapshot_file::<SnapshotFile>(&path))
            .await
            .map_err(io::Error::other)??;
        let Some(file) = file else {
            return Ok(None);
        };
        let bytes = serde_json::to_vec(&file.metadata).map_err(io::Error::other)?;
        Ok(Some(SnapshotOf::<C, SnapshotData> {
            meta: file.meta,
            snapshot: Cursor::new(bytes),
        }))
    }
}

/// A point-in-time copy of the metadata, written out as the new snapshot.
pub(crate) struct MetadataSnapshotBuilder {
    metadata: Metadata,
    last_applied: Option<LogIdOf<C>>,
    last_membership: StoredMembershipOf<C>,
    snapshot_path: PathBuf,
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
        let (path, metadata) = (self.snapshot_path.clone(), self.metadata.clone());
        let (meta, already_covered) = tokio::task::spawn_blocking(move || {
            let on_disk = match read_snapshot_file::<SnapshotFileHead>(&path) {
                Ok(head) => head.and_then(|head| head.meta.last_log_id),
                Err(err) => {
                    // Replacing a file that cannot be read is the best that can happen to it.
                    tracing::warn!(error = %err, "replacing an unreadable controller snapshot");
                    None
                }
            };
            let already_covered = on_disk.is_some() && on_disk >= meta.last_log_id;
            if !already_covered {
                write_snapshot_file(&path, &meta, &metadata)?;
            }
            Ok::<_, io::Error>((meta, already_covered))
        })
        .await
        .map_err(io::Error::other)??;
        tracing::info!(last_log_id = ?meta.last_log_id, already_covered, "controller snapshot built");
        Ok(SnapshotOf::<C, SnapshotData> {
            meta,
            snapshot: Cursor::new(bytes),
        })
    }
}

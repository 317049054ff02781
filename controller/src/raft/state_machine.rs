//! The controller's openraft state machine: applies commands to the shared [`Metadata`] and keeps
//! the whole metadata as one snapshot file. The state itself lives in memory; after a restart
//! openraft installs the snapshot and re-applies the committed log after it.

use std::io::{self, Cursor};
use std::path::PathBuf;
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, StoredMembership};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
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

pub(crate) struct MetadataStateMachine {
    /// Shared with the controller, which serves reads from it.
    metadata: Arc<RwLock<Metadata>>,
    last_applied: Option<LogIdOf<C>>,
    last_membership: StoredMembershipOf<C>,
    snapshot_path: PathBuf,
}

impl MetadataStateMachine {
    /// An empty state machine; openraft restores it from `snapshot_path` and the log at start.
    pub(crate) fn new(metadata: Arc<RwLock<Metadata>>, snapshot_path: PathBuf) -> Self {
        Self {
            metadata,
            last_applied: None,
            last_membership: StoredMembership::default(),
            snapshot_path,
        }
    }

    fn read_snapshot_file(&self) -> io::Result<Option<SnapshotFile>> {
        let Some(bytes) = snapshot_file::read(&self.snapshot_path)? else {
            return Ok(None);
        };
        let file = serde_json::from_slice(&bytes).map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "controller snapshot {} does not decode: {err}",
                    self.snapshot_path.display()
                ),
            )
        })?;
        Ok(Some(file))
    }
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
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<C>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let bytes = snapshot.into_inner();
        let metadata = decode_metadata(&bytes)?;
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
        let Some(file) = self.read_snapshot_file()? else {
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
}

impl RaftSnapshotBuilder<C> for MetadataSnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Self::SnapshotData>, io::Error> {
        let bytes = serde_json::to_vec(&self.metadata).map_err(io::Error::other)?;
        let meta = SnapshotMetaOf::<C> {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
        };
        let (path, metadata) = (self.snapshot_path.clone(), self.metadata.clone());
        let meta = tokio::task::spawn_blocking(move || {
            write_snapshot_file(&path, &meta, &metadata).map(|()| meta)
        })
        .await
        .map_err(io::Error::other)??;
        tracing::info!(last_log_id = ?meta.last_log_id, "controller snapshot built");
        Ok(SnapshotOf::<C, SnapshotData> {
            meta,
            snapshot: Cursor::new(bytes),
        })
    }
}

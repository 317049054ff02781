//! The store's data-directory format marker: `<data_dir>/FORMAT`, written when a store directory
//! is first used, checked at every open. A directory written by a build with another store
//! format is refused with an explanation instead of being misread (README, "Upgrading").
//!
//! Format history:
//! - 1: no marker; one `snapshot` file per shard (before ADR 0006).
//! - 2: snapshot generations with a versioned payload, apply versions in the log (ADR 0006).

use std::path::{Path, PathBuf};

use vela_proto::domain::ShardId;
use vela_raft::LogError;
use vela_raft::vfs::{self, Vfs};

/// The format this build reads and writes.
pub const STORE_FORMAT: u32 = 2;
/// The marker's file name inside the store's data directory.
pub const MARKER: &str = "FORMAT";
const PREFIX: &str = "vela-store-format ";

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(
        "{dir} holds store data in format {found}, but this build of Vela reads only format \
         {STORE_FORMAT}. Keep running the version that wrote it until its messages are consumed, \
         then move the directory away (or point data_dir elsewhere) and start this version on an \
         empty one"
    )]
    Unsupported { dir: PathBuf, found: u32 },
    #[error("store format marker {path} is unreadable: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error(transparent)]
    Io(#[from] LogError),
}

/// Checks the marker of `data_dir`, writing it (durably) for a directory without data. A
/// directory with shard data but no marker was written by format 1.
pub fn check_or_init(
    vfs: &dyn Vfs,
    data_dir: &Path,
    shards: &[ShardId],
) -> Result<(), FormatError> {
    vfs::create_dir_all(vfs, data_dir)
        .map_err(|e| LogError::io("creating store directory", data_dir, e))?;
    let path = data_dir.join(MARKER);
    if let Some(bytes) = vela_raft::snapshot_file::read(vfs, &path)? {
        let found = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.trim().strip_prefix(PREFIX))
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| FormatError::Unreadable {
                path: path.clone(),
                reason: format!("unexpected content {:?}", String::from_utf8_lossy(&bytes)),
            })?;
        if found != STORE_FORMAT {
            return Err(FormatError::Unsupported {
                dir: data_dir.to_path_buf(),
                found,
            });
        }
        return Ok(());
    }
    let has_data = shards
        .iter()
        .any(|id| vfs.is_dir(&data_dir.join("shards").join(id.to_string()).join("log")));
    if has_data {
        return Err(FormatError::Unsupported {
            dir: data_dir.to_path_buf(),
            found: 1,
        });
    }
    vela_raft::snapshot_file::write_atomic(
        vfs,
        &path,
        format!("{PREFIX}{STORE_FORMAT}\n").as_bytes(),
    )
    .map_err(|e| LogError::io("writing the store format marker", &path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vela_raft::vfs::sim::{CrashMode, SimVfs};

    use super::*;

    #[test]
    fn a_new_directory_is_marked_and_an_old_one_refused() {
        let sim = SimVfs::new();
        let dir = Path::new("/data/store");
        check_or_init(&sim, dir, &[0]).expect("new directory");
        let after = sim.crash(CrashMode::DropAllUnsynced);
        check_or_init(&after, dir, &[0]).expect("the marker is durable");
        assert!(after.read(&dir.join(MARKER)).is_ok());

        let old = SimVfs::new();
        vfs::create_dir_all(&old, &dir.join("shards/0/log")).expect("dirs");
        let err = check_or_init(&old, dir, &[0]).expect_err("format 1 is refused");
        assert!(err.to_string().contains("format 1"), "{err}");

        let future = SimVfs::new();
        vfs::create_dir_all(&future, dir).expect("dirs");
        vela_raft::snapshot_file::write_atomic(
            &future,
            &dir.join(MARKER),
            b"vela-store-format 9\n",
        )
        .expect("marker");
        let err = check_or_init(&future, dir, &[0]).expect_err("format 9 is refused");
        assert!(err.to_string().contains("format 9"), "{err}");
        let _: Arc<dyn Vfs> = Arc::new(future);
    }
}

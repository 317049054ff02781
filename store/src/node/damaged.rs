//! Damaged replicas of placed shards (ADR 0014). A replica whose files fail their checks when
//! it opens (a segment whose footer or records fail their checksums, a truncated segment, a
//! log that ends below what it had committed or below its own snapshot) has lost entries it
//! may have acknowledged to its leader. Opened anyway it could vote for, or become, a leader
//! that misses committed entries. It is set aside instead: its directory is renamed to
//! `shards/<id>.damaged-<unix ms>` (kept for an operator to inspect and delete; nothing reads
//! it again), and the open answers `ReplicaLost`, so the controller takes the node out of the
//! shard's group and adds it back as an empty learner that copies the shard from its peers. A
//! replica that is not running neither votes nor counts toward a quorum, so until it is
//! repaired the group runs on its other members.
//!
//! A configured shard's replica (`cluster.shards`) is replaced the same way, the controller
//! having adopted those shards as placed ones (ADR 0032); it is first recorded released
//! (`placed::RELEASED_FILE`), so a restart does not reopen it empty as a configured shard.

use std::io;
use std::path::{Path, PathBuf};

use tracing::error;
use vela_proto::domain::ShardId;
use vela_proto::store_api::StoreError;
use vela_raft::vfs::Vfs;

/// Renames the replica directory of `shard` under `data_dir` out of the way (see the module
/// comment) and makes the rename durable; returns where it went.
pub(crate) fn set_aside(
    vfs: &dyn Vfs,
    data_dir: &Path,
    shard: ShardId,
    now_ms: u64,
) -> io::Result<PathBuf> {
    let shards = data_dir.join("shards");
    let from = shards.join(shard.to_string());
    let mut to = shards.join(format!("{shard}.damaged-{now_ms}"));
    let mut n = 1;
    while vfs.is_dir(&to) {
        to = shards.join(format!("{shard}.damaged-{now_ms}-{n}"));
        n += 1;
    }
    vfs.rename_dir(&from, &to)?;
    vfs.sync_dir(&shards)?;
    Ok(to)
}

/// Sets aside this node's damaged replica of `shard` (`why` it failed to open) and answers
/// what the controller replaces it on: [`StoreError::ReplicaLost`]. When even the rename
/// fails, the replica stays where it is and the error says so (it is not opened either way).
pub(crate) fn replace(
    vfs: &dyn Vfs,
    data_dir: &Path,
    node: u64,
    shard: ShardId,
    now_ms: u64,
    why: &str,
) -> StoreError {
    match set_aside(vfs, data_dir, shard, now_ms) {
        Ok(to) => {
            error!(
                shard,
                error = %why,
                set_aside = %to.display(),
                "damaged replica set aside; it is replaced from the shard's other members"
            );
            StoreError::ReplicaLost(format!(
                "shard {shard}'s replica on node {node} is damaged ({why}); set aside in {} \
                 and to be copied again from the shard's other members",
                to.display()
            ))
        }
        Err(err) => {
            error!(shard, error = %why, rename_error = %err, "damaged replica could not be set aside");
            StoreError::Internal(format!(
                "shard {shard}'s replica on node {node} is damaged ({why}) and could not be set \
                 aside ({err}); it is not opened"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use vela_raft::vfs::sim::SimVfs;
    use vela_raft::vfs::{Vfs, create_dir_all};

    use super::*;

    /// The replica moves whole, under a name that never replaces an earlier one; a replica
    /// that is not there is an error, not a silent success.
    #[test]
    fn a_damaged_replica_is_moved_aside_whole_and_never_over_an_earlier_one() {
        let vfs = SimVfs::new();
        let data = Path::new("/data");
        for _ in 0..2 {
            create_dir_all(&vfs, &data.join("shards/7/log")).expect("makes the replica");
            vfs.create_new(&data.join("shards/7/log/seg"))
                .expect("a segment");
            set_aside(&vfs, data, 7, 1000).expect("sets aside");
        }
        let mut aside = vfs.list_dirs(&data.join("shards")).expect("lists");
        aside.sort();
        assert_eq!(aside, ["7.damaged-1000", "7.damaged-1000-1"]);
        assert!(vfs.is_dir(&data.join("shards/7.damaged-1000-1/log")));
        assert!(!vfs.is_dir(&data.join("shards/7")));
        let err = replace(&vfs, data, 3, 7, 2000, "bad footer");
        assert!(
            matches!(&err, StoreError::Internal(why) if why.contains("could not be set aside")),
            "{err:?}"
        );
    }
}

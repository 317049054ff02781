//! Which shards a store node opens at start, read from its data directory: the configured
//! shards (`cluster.shards`) but those moved off it (`RELEASED`, ADR 0032), then those placed
//! on it at runtime (`PLACED`, reopened from their logs). No replica is ever reopened empty:
//! a placed one whose log is gone stays out until the controller replaces it (ADR 0013), and a
//! replica whose log was being replaced when the node stopped (`RESTORING`) is incomplete: a
//! placed one is deleted, a configured one recorded released and then deleted, and either is
//! replaced like a lost replica (ADR 0014).

use std::path::Path;

use tracing::warn;
use vela_proto::domain::ShardId;
use vela_raft::vfs::Vfs;

use crate::format::FormatError;
use crate::shard::restoring;

/// Deletes this node's replica of `shard` if its log was being replaced when the node stopped
/// (`RESTORING`); a configured one (`configured`) is recorded released first, so it never
/// reopens empty. Returns whether the replica was incomplete and is gone.
pub(super) fn drop_incomplete(
    vfs: &dyn Vfs,
    dir: &Path,
    shard: ShardId,
    configured: bool,
) -> std::io::Result<bool> {
    let shard_dir = dir.join("shards").join(shard.to_string());
    if !restoring::is_marked(vfs, &shard_dir)? {
        return Ok(false);
    }
    if configured {
        crate::placed::release(vfs, dir, shard).map_err(std::io::Error::other)?;
        warn!(
            shard,
            "this configured replica's log was being replaced when the node stopped: recorded \
             released (the controller replaces it)"
        );
    }
    restoring::drop_if_marked(vfs, dir, shard);
    Ok(true)
}

/// The shards to open, in order (see the module comment). Also deletes what a crash left of a
/// released replica and incomplete replicas.
pub(super) fn shards_to_open(
    vfs: &dyn Vfs,
    dir: &Path,
    configured: &[ShardId],
) -> Result<Vec<ShardId>, FormatError> {
    let shard_dir = |id: ShardId| dir.join("shards").join(id.to_string());
    let placed = crate::placed::read(vfs, dir)?;
    let mut released: Vec<ShardId> = crate::placed::read_released(vfs, dir)?
        .into_iter()
        .filter(|id| !placed.contains(id))
        .collect();
    // Recorded released before its files go: it must never reopen empty.
    let candidates: Vec<ShardId> = configured
        .iter()
        .copied()
        .filter(|id| !released.contains(id) && !placed.contains(id))
        .collect();
    for id in candidates {
        match drop_incomplete(vfs, dir, id, true) {
            Ok(true) => released.push(id),
            Ok(false) => {}
            // Not released, it stays marked, and opening it stops the start with the reason.
            Err(err) => warn!(shard = id, error = %err, "recording an incomplete replica released"),
        }
    }
    // What a crash during a removal (or the loop above) left of a released replica.
    for &id in &released {
        if vfs.is_dir(&shard_dir(id))
            && let Err(err) = vela_raft::vfs::remove_dir_all(vfs, &shard_dir(id))
        {
            warn!(shard = id, error = %err, "deleting a released replica's files");
        }
    }
    let held: Vec<ShardId> = placed
        .iter()
        .copied()
        .filter(|&id| {
            restoring::drop_if_marked(vfs, dir, id);
            let kept = vfs.is_dir(&shard_dir(id).join("log"));
            if !kept {
                warn!(shard = id, "placed shard has no log here; not reopening it");
            }
            kept
        })
        .collect();
    // A configured shard placed here again is held like any placed one: without its log it is
    // not reopened as a configured shard either.
    let mut ids: Vec<ShardId> = configured
        .iter()
        .copied()
        .filter(|id| !released.contains(id) && (!placed.contains(id) || held.contains(id)))
        .collect();
    ids.extend(held.into_iter().filter(|id| !configured.contains(id)));
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vela_raft::vfs::sim::SimVfs;

    fn with_log(vfs: &SimVfs, dir: &Path, id: ShardId) {
        vela_raft::vfs::create_dir_all(vfs, &dir.join("shards").join(id.to_string()).join("log"))
            .expect("log dir");
    }

    /// Configured 0..=3 and placed 7, 8 (8 without its log); 1 released (its directory a
    /// leftover), 2 marked restoring, 3 placed here again but its log gone.
    #[test]
    fn released_incomplete_and_logless_replicas_are_not_reopened() {
        let vfs = SimVfs::new();
        let dir = Path::new("/data");
        for id in [0, 1, 2, 7] {
            with_log(&vfs, dir, id);
        }
        vela_raft::vfs::create_dir_all(&vfs, &dir.join("shards/3")).expect("dir");
        restoring::mark(&vfs, &dir.join("shards/2")).expect("marks");
        crate::placed::write(&vfs, dir, &[3, 7, 8]).expect("placed");
        crate::placed::write_released(&vfs, dir, &[1]).expect("released");

        let ids = shards_to_open(&vfs, dir, &[0, 1, 2, 3]).expect("reads");
        assert_eq!(ids, vec![0, 7]);
        assert_eq!(
            crate::placed::read_released(&vfs, dir).expect("reads"),
            vec![1, 2]
        );
        for gone in [1, 2] {
            assert!(
                !vfs.is_dir(&dir.join("shards").join(gone.to_string())),
                "{gone}"
            );
        }
        // Nothing changes on a second start.
        assert_eq!(
            shards_to_open(&vfs, dir, &[0, 1, 2, 3]).expect("reads"),
            vec![0, 7]
        );
    }
}

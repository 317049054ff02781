//! The mark of a replica whose log is being replaced (`shards/<id>/RESTORING`, ADR 0014).
//!
//! A replica that installs a snapshot from another member below the retention floor replaces
//! its log with the member's retained history. From the moment the old log is cut until the new
//! snapshot generation is durable, neither the old generation nor the new one matches the log:
//! a node that stops in between cannot reopen the replica as it is. So the mark is made durable
//! before the log is touched and removed only once the new generation is durable. A node that
//! starts and finds the mark does not open the replica: it is deleted (it is then a lost
//! replica, which the controller takes out of the group and adds back as an empty learner: ADR
//! 0014), a configured one after it is recorded released (`node::reopen`, ADR 0032), so it
//! never reopens empty.

use std::io;
use std::path::Path;

use vela_raft::vfs::Vfs;

/// The mark's file name inside the shard's directory.
pub const FILE: &str = "RESTORING";
const CONTENT: &[u8] = b"vela: this replica's log is being replaced by a copy from another \
member; it is incomplete until the copy's snapshot is installed\n";

/// Makes the mark durable in `shard_dir`. The mark is the file's name ([`is_marked`] looks
/// for nothing else): the text is for people, so only the directory entry is synced (a power
/// cut may leave the file empty, still a mark).
pub fn mark(vfs: &dyn Vfs, shard_dir: &Path) -> io::Result<()> {
    let file = vfs.create_truncate(&shard_dir.join(FILE))?;
    file.write_all_at(CONTENT, 0)?;
    vfs.sync_dir(shard_dir)
}

/// Removes the mark from `shard_dir` (nothing to do when there is none), durably.
pub fn clear(vfs: &dyn Vfs, shard_dir: &Path) -> io::Result<()> {
    match vfs.remove_file(&shard_dir.join(FILE)) {
        Ok(()) => vfs.sync_dir(shard_dir),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// Whether `shard_dir` holds the mark.
pub fn is_marked(vfs: &dyn Vfs, shard_dir: &Path) -> io::Result<bool> {
    if !vfs.is_dir(shard_dir) {
        return Ok(false);
    }
    Ok(vfs.list_files(shard_dir)?.iter().any(|f| f == FILE))
}

/// For a shard the controller placed on this node: deletes the replica in
/// `<data_dir>/shards/<shard>` if it holds the mark (it is then a lost replica, which the
/// controller replaces). Failures are logged: the replica then stays marked and unopened.
pub fn drop_if_marked(vfs: &dyn Vfs, data_dir: &Path, shard: vela_proto::domain::ShardId) {
    let dir = data_dir.join("shards").join(shard.to_string());
    match is_marked(vfs, &dir) {
        Ok(false) => {}
        Ok(true) => {
            tracing::warn!(
                shard,
                "this replica's log was being replaced when the node stopped: deleting the \
                 incomplete replica (the controller replaces it)"
            );
            // The log first: a stop midway leaves a marked directory without a log, which is
            // never reopened and is deleted here next time.
            let log = dir.join("log");
            let removed = if vfs.is_dir(&log) {
                vela_raft::vfs::remove_dir_all(vfs, &log)
            } else {
                Ok(())
            };
            if let Err(err) = removed.and_then(|()| vela_raft::vfs::remove_dir_all(vfs, &dir)) {
                tracing::error!(shard, error = %err, "deleting an incomplete replica");
            }
        }
        Err(err) => tracing::error!(shard, error = %err, "reading a shard's directory"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vela_raft::vfs::sim::{CrashMode, SimVfs};

    #[test]
    fn a_mark_survives_a_power_cut_and_its_removal_too() {
        let vfs = SimVfs::new();
        let dir = Path::new("/data/shards/3");
        vela_raft::vfs::create_dir_all(&vfs, dir).expect("dir");
        assert!(!is_marked(&vfs, dir).expect("reads"));
        mark(&vfs, dir).expect("marks");
        let vfs = vfs.crash(CrashMode::DropAllUnsynced);
        assert!(is_marked(&vfs, dir).expect("reads"), "durable once made");
        clear(&vfs, dir).expect("clears");
        let vfs = vfs.crash(CrashMode::DropAllUnsynced);
        assert!(!is_marked(&vfs, dir).expect("reads"), "gone for good");
        clear(&vfs, dir).expect("clearing twice is fine");
    }

    #[test]
    fn a_marked_placed_replica_is_deleted_and_an_unmarked_one_is_kept() {
        let vfs = SimVfs::new();
        let data = Path::new("/data");
        for shard in [3, 4] {
            let log = data.join("shards").join(shard.to_string()).join("log");
            vela_raft::vfs::create_dir_all(&vfs, &log).expect("dir");
            vfs.create_truncate(&log.join("seg")).expect("file");
        }
        mark(&vfs, &data.join("shards/3")).expect("marks");
        drop_if_marked(&vfs, data, 3);
        drop_if_marked(&vfs, data, 4);
        assert!(
            !vfs.is_dir(&data.join("shards/3")),
            "the marked replica is gone"
        );
        assert!(
            vfs.is_dir(&data.join("shards/4/log")),
            "the other one stays"
        );
    }
}

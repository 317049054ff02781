//! The shards placed on a store node while it ran (beyond the configured ones):
//! `<data_dir>/PLACED`, rewritten atomically (`vela_raft::snapshot_file`, checksummed) before a
//! placed shard's log is created, read at every start so the node reopens them without asking
//! the controller. The content is text: a version line, then one shard id per line.
//!
//! Beside it, `<data_dir>/RELEASED` (same layout, its own version line) names the configured
//! shards (`cluster.shards`) whose replica the controller moved off this node (ADR 0032):
//! written before the replica's files are deleted, so the node never reopens them as the
//! configured shards it otherwise holds. A shard in both files is held (it was placed here
//! again).

use std::path::Path;

use vela_proto::domain::ShardId;
use vela_raft::vfs::Vfs;

use crate::format::FormatError;

/// The file's name inside the store's data directory.
pub const FILE: &str = "PLACED";
const HEADER: &str = "vela-placed-shards 1";
/// The name of the file of released configured shards.
pub const RELEASED_FILE: &str = "RELEASED";
const RELEASED_HEADER: &str = "vela-released-shards 1";

/// The shards recorded in `data_dir`, in order; none when the file does not exist.
pub fn read(vfs: &dyn Vfs, data_dir: &Path) -> Result<Vec<ShardId>, FormatError> {
    read_list(vfs, data_dir, FILE, HEADER)
}

/// Records `shards` (replacing what was recorded), durably.
pub fn write(vfs: &dyn Vfs, data_dir: &Path, shards: &[ShardId]) -> std::io::Result<()> {
    vela_raft::snapshot_file::write_atomic(vfs, &data_dir.join(FILE), &encode(HEADER, shards))
}

/// The configured shards released from this node, in order; none when the file does not
/// exist.
pub fn read_released(vfs: &dyn Vfs, data_dir: &Path) -> Result<Vec<ShardId>, FormatError> {
    read_list(vfs, data_dir, RELEASED_FILE, RELEASED_HEADER)
}

/// Records the released configured shards (replacing what was recorded), durably.
pub fn write_released(vfs: &dyn Vfs, data_dir: &Path, shards: &[ShardId]) -> std::io::Result<()> {
    vela_raft::snapshot_file::write_atomic(
        vfs,
        &data_dir.join(RELEASED_FILE),
        &encode(RELEASED_HEADER, shards),
    )
}

/// Adds `shard` to the released configured shards (durably; a no-op when it is there).
pub fn release(vfs: &dyn Vfs, data_dir: &Path, shard: ShardId) -> Result<(), String> {
    let mut released = read_released(vfs, data_dir).map_err(|e| e.to_string())?;
    if !released.contains(&shard) {
        released.push(shard);
        write_released(vfs, data_dir, &released).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Takes `shard` out of the released configured shards (durably; a no-op when it is not there).
pub fn unrelease(vfs: &dyn Vfs, data_dir: &Path, shard: ShardId) -> Result<(), String> {
    let mut released = read_released(vfs, data_dir).map_err(|e| e.to_string())?;
    if released.contains(&shard) {
        released.retain(|s| *s != shard);
        write_released(vfs, data_dir, &released).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn read_list(
    vfs: &dyn Vfs,
    data_dir: &Path,
    file: &str,
    header: &str,
) -> Result<Vec<ShardId>, FormatError> {
    let path = data_dir.join(file);
    let Some(bytes) = vela_raft::snapshot_file::read(vfs, &path)? else {
        return Ok(Vec::new());
    };
    let corrupt = |reason: String| FormatError::Unreadable {
        path: path.clone(),
        reason,
    };
    let text = std::str::from_utf8(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut lines = text.lines();
    if lines.next() != Some(header) {
        return Err(corrupt(format!(
            "expected {header:?} first (a newer build wrote it?)"
        )));
    }
    lines
        .map(|l| {
            l.parse::<ShardId>()
                .map_err(|e| corrupt(format!("shard id {l:?}: {e}")))
        })
        .collect()
}

fn encode(header: &str, shards: &[ShardId]) -> Vec<u8> {
    let mut sorted = shards.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut text = String::from(header);
    for id in sorted {
        text.push('\n');
        text.push_str(&id.to_string());
    }
    text.push('\n');
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vela_raft::vfs::sim::SimVfs;

    #[test]
    fn content_is_pinned() {
        assert_eq!(
            encode(HEADER, &[7, 3, 7]),
            b"vela-placed-shards 1\n3\n7\n".to_vec()
        );
        assert_eq!(encode(HEADER, &[]), b"vela-placed-shards 1\n".to_vec());
        assert_eq!(
            encode(RELEASED_HEADER, &[2, 0]),
            b"vela-released-shards 1\n0\n2\n".to_vec()
        );
    }

    #[test]
    fn round_trips_and_refuses_what_it_cannot_read() {
        let vfs = SimVfs::new();
        let dir = Path::new("/data");
        vela_raft::vfs::create_dir_all(&vfs, dir).expect("dir");
        assert_eq!(read(&vfs, dir).expect("no file"), Vec::<ShardId>::new());
        write(&vfs, dir, &[9, 4]).expect("writes");
        assert_eq!(read(&vfs, dir).expect("reads"), vec![4, 9]);
        vela_raft::snapshot_file::write_atomic(&vfs, &dir.join(FILE), b"vela-placed-shards 2\n1\n")
            .expect("writes");
        assert!(read(&vfs, dir).is_err(), "a newer version is refused");
        vela_raft::snapshot_file::write_atomic(&vfs, &dir.join(FILE), b"vela-placed-shards 1\nx\n")
            .expect("writes");
        assert!(read(&vfs, dir).is_err(), "garbage is refused");
        // The released list is a file of its own; one file is never read as the other.
        assert_eq!(
            read_released(&vfs, dir).expect("no file"),
            Vec::<ShardId>::new()
        );
        write_released(&vfs, dir, &[1, 0]).expect("writes");
        assert_eq!(read_released(&vfs, dir).expect("reads"), vec![0, 1]);
        vela_raft::snapshot_file::write_atomic(
            &vfs,
            &dir.join(RELEASED_FILE),
            b"vela-placed-shards 1\n1\n",
        )
        .expect("writes");
        assert!(read_released(&vfs, dir).is_err());
    }
}

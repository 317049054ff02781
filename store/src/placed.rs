//! The shards placed on a store node while it ran (beyond the configured ones):
//! `<data_dir>/PLACED`, rewritten atomically (`vela_raft::snapshot_file`, checksummed) before a
//! placed shard's log is created, read at every start so the node reopens them without asking
//! the controller. The content is text: a version line, then one shard id per line.

use std::path::Path;

use vela_proto::domain::ShardId;
use vela_raft::vfs::Vfs;

use crate::format::FormatError;

/// The file's name inside the store's data directory.
pub const FILE: &str = "PLACED";
const HEADER: &str = "vela-placed-shards 1";

/// The shards recorded in `data_dir`, in order; none when the file does not exist.
pub fn read(vfs: &dyn Vfs, data_dir: &Path) -> Result<Vec<ShardId>, FormatError> {
    let path = data_dir.join(FILE);
    let Some(bytes) = vela_raft::snapshot_file::read(vfs, &path)? else {
        return Ok(Vec::new());
    };
    let corrupt = |reason: String| FormatError::Unreadable {
        path: path.clone(),
        reason,
    };
    let text = std::str::from_utf8(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(corrupt(format!(
            "expected {HEADER:?} first (a newer build wrote it?)"
        )));
    }
    lines
        .map(|l| {
            l.parse::<ShardId>()
                .map_err(|e| corrupt(format!("shard id {l:?}: {e}")))
        })
        .collect()
}

/// Records `shards` (replacing what was recorded), durably.
pub fn write(vfs: &dyn Vfs, data_dir: &Path, shards: &[ShardId]) -> std::io::Result<()> {
    vela_raft::snapshot_file::write_atomic(vfs, &data_dir.join(FILE), &encode(shards))
}

fn encode(shards: &[ShardId]) -> Vec<u8> {
    let mut sorted = shards.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut text = String::from(HEADER);
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
        assert_eq!(encode(&[7, 3, 7]), b"vela-placed-shards 1\n3\n7\n".to_vec());
        assert_eq!(encode(&[]), b"vela-placed-shards 1\n".to_vec());
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
    }
}

//! Small files that must be replaced atomically and verified on read: the log store's vote,
//! committed and purged ids, and state machine snapshots of the crates above.
//! Layout: `magic "VELASNAP" | version u32 | len u64 | crc32c u32 | payload`, little endian.

use std::io;
use std::path::{Path, PathBuf};

use crate::LogError;
use crate::vfs::{Vfs, parent_dir};

const MAGIC: [u8; 8] = *b"VELASNAP";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 4;

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content: write
/// `path.tmp`, fsync it, rename it over `path`, fsync the directory.
pub fn write_atomic(vfs: &dyn Vfs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_replacing(vfs, path, bytes, true)
}

/// Like [`write_atomic`] without the two fsyncs: the rename is still atomic against process
/// crashes, but a power loss may leave the old content (or, on file systems without rename
/// ordering, a file that fails its checksum). For values that are safe to lose, such as a
/// committed log id that Raft can re-learn.
pub(crate) fn write_relaxed(vfs: &dyn Vfs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_replacing(vfs, path, bytes, false)
}

fn write_replacing(vfs: &dyn Vfs, path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let tmp = tmp_path(path);
    let file = vfs.create_truncate(&tmp)?;
    let mut framed = Vec::with_capacity(HEADER_LEN + bytes.len());
    framed.extend_from_slice(&MAGIC);
    framed.extend_from_slice(&VERSION.to_le_bytes());
    framed.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    framed.extend_from_slice(&crc32c::crc32c(bytes).to_le_bytes());
    framed.extend_from_slice(bytes);
    file.write_all_at(&framed, 0)?;
    if durable {
        file.sync_data()?;
    }
    drop(file);
    vfs.rename(&tmp, path)?;
    if durable {
        vfs.sync_dir(&parent_dir(path))?;
    }
    Ok(())
}

/// Reads a file written by [`write_atomic`]. `Ok(None)` when it does not exist; `Corrupt` when the
/// framing or the checksum does not match.
pub fn read(vfs: &dyn Vfs, path: &Path) -> Result<Option<Vec<u8>>, LogError> {
    let data = match vfs.read(path) {
        Ok(data) => data,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(LogError::io("reading", path, err)),
    };
    if data.len() < HEADER_LEN {
        return Err(LogError::corrupt(
            path,
            0,
            format!("file is {} bytes, shorter than its header", data.len()),
        ));
    }
    if data[0..8] != MAGIC {
        return Err(LogError::corrupt(path, 0, "magic does not match"));
    }
    let version = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if version != VERSION {
        return Err(LogError::corrupt(
            path,
            8,
            format!("unsupported version {version}"),
        ));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&data[12..20]);
    let len = u64::from_le_bytes(len_bytes);
    let payload = &data[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(LogError::corrupt(
            path,
            12,
            format!(
                "header says {len} payload bytes, file holds {}",
                payload.len()
            ),
        ));
    }
    let stored = u32::from_le_bytes([data[20], data[21], data[22], data[23]]);
    let computed = crc32c::crc32c(payload);
    if stored != computed {
        return Err(LogError::corrupt(
            path,
            20,
            format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"),
        ));
    }
    Ok(Some(payload.to_vec()))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::vfs::StdVfs;

    #[test]
    fn round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.bin");
        let vfs = StdVfs;
        assert_eq!(read(&vfs, &path).unwrap(), None);
        write_atomic(&vfs, &path, b"first").unwrap();
        assert_eq!(read(&vfs, &path).unwrap().as_deref(), Some(&b"first"[..]));
        write_atomic(&vfs, &path, b"").unwrap();
        assert_eq!(read(&vfs, &path).unwrap().as_deref(), Some(&b""[..]));
        write_relaxed(&vfs, &path, b"third").unwrap();
        assert_eq!(read(&vfs, &path).unwrap().as_deref(), Some(&b"third"[..]));
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn detects_flipped_byte_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.bin");
        let vfs = StdVfs;
        write_atomic(&vfs, &path, b"payload bytes").unwrap();
        let good = fs::read(&path).unwrap();

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        fs::write(&path, &flipped).unwrap();
        assert!(matches!(read(&vfs, &path), Err(LogError::Corrupt { .. })));

        fs::write(&path, &good[..good.len() - 3]).unwrap();
        assert!(matches!(read(&vfs, &path), Err(LogError::Corrupt { .. })));

        fs::write(&path, &good[..5]).unwrap();
        assert!(matches!(read(&vfs, &path), Err(LogError::Corrupt { .. })));
    }
}

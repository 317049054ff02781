//! Secret files: random key material created once, readable by the owner only (the receipt
//! keyring's `cluster.secret`, the controller's `metadata.key`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

/// Shortest secret accepted from a file.
pub const MIN_SECRET_BYTES: usize = 16;
/// How many random bytes a new secret file holds.
pub const NEW_SECRET_BYTES: usize = 32;

/// Reads the secret in `path`, creating it (32 random bytes, mode 0600, written to a temporary
/// file, synced and renamed into place) when there is none.
pub fn load_or_create(path: &Path) -> io::Result<Vec<u8>> {
    match load(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let mut secret = vec![0u8; NEW_SECRET_BYTES];
    rand::fill(&mut secret[..]);
    write_private(path, &secret)?;
    Ok(secret)
}

/// Writes `bytes` to `path` readable by the owner only (mode 0600 from the first byte on),
/// through a temporary file that is synced and renamed into place: a crash leaves the old file
/// or the new one, never a torn one.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut options = File::options();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp).map_err(|e| context(&tmp, "create", e))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).map_err(|e| context(path, "create", e))?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all())?;
    }
    Ok(())
}

/// Reads the secret in `path`; `InvalidData` when it is shorter than [`MIN_SECRET_BYTES`].
pub fn load(path: &Path) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buf))
        .map_err(|e| context(path, "read", e))?;
    if buf.len() < MIN_SECRET_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is too short to be a secret", path.display()),
        ));
    }
    Ok(buf)
}

fn context(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_created_once_then_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.secret");
        assert_eq!(
            load(&path).map_err(|e| e.kind()),
            Err(io::ErrorKind::NotFound)
        );
        let first = load_or_create(&path).expect("create");
        assert_eq!(first.len(), NEW_SECRET_BYTES);
        assert_eq!(load_or_create(&path).expect("read"), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").expect("write");
        assert_eq!(
            load_or_create(&path).map_err(|e| e.kind()),
            Err(io::ErrorKind::InvalidData)
        );
    }
}

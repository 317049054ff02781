//! Open files and directory locks of the simulated disk.

use super::*;

#[derive(Debug)]
struct SimHandle {
    vfs: SimVfs,
    inode: Inode,
}

impl SimHandle {
    fn with_file<T>(&self, f: impl FnOnce(&mut SimFile) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.vfs.state.lock();
        st.check()?;
        let file = st
            .files
            .get_mut(&self.inode)
            .ok_or_else(|| io::Error::other("file of this handle is gone"))?;
        f(file)
    }

    /// [`with_file`](Self::with_file) for a changing call: counts against an armed crash.
    fn change_file<T>(&self, f: impl FnOnce(&mut SimFile) -> io::Result<T>) -> io::Result<T> {
        let out = self.with_file(f)?;
        self.vfs.state.lock().tick_armed(true);
        Ok(out)
    }
}

impl VfsFile for SimHandle {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with_file(|f| {
            let start = to_usize(offset);
            let end = start.saturating_add(buf.len());
            match f.cached.get(start..end) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    Ok(())
                }
                None => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the file",
                )),
            }
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.change_file(|f| {
            write_into(&mut f.cached, offset, buf);
            f.unsynced.push(FileChange::Write {
                offset,
                bytes: buf.to_vec(),
            });
            f.modified = Some(SystemTime::now());
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with_file(|f| Ok(f.cached.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.change_file(|f| {
            f.cached.resize(to_usize(len), 0);
            f.unsynced.push(FileChange::SetLen(len));
            f.modified = Some(SystemTime::now());
            Ok(())
        })
    }

    #[track_caller]
    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.vfs.state.lock();
        st.check()?;
        if st.skips(Location::caller()) {
            return Ok(());
        }
        let file = st
            .files
            .get_mut(&self.inode)
            .ok_or_else(|| io::Error::other("file of this handle is gone"))?;
        file.durable = file.cached.clone();
        file.unsynced.clear();
        st.tick_armed(true);
        Ok(())
    }

    fn modified(&self) -> io::Result<SystemTime> {
        self.with_file(|f| Ok(f.modified.unwrap_or(SystemTime::UNIX_EPOCH)))
    }
}

/// A directory lock held: released when dropped.
pub(super) struct SimLockGuard {
    pub(super) vfs: SimVfs,
    pub(super) path: PathBuf,
}

impl Drop for SimLockGuard {
    fn drop(&mut self) {
        self.vfs.state.lock().locks.remove(&self.path);
    }
}

impl SimVfs {
    pub(super) fn handle(&self, inode: Inode) -> Arc<dyn VfsFile> {
        Arc::new(SimHandle {
            vfs: self.clone(),
            inode,
        })
    }
}

//! The storage seam. Every byte vela-raft reads or writes, and every file the crates above keep
//! beside the log (snapshots, index files), goes through a [`Vfs`]: production runs on
//! [`StdVfs`] (the operating system), the power-loss tests on [`sim::SimVfs`], an in-memory disk
//! that at a simulated crash drops every write and every directory change no fsync covered,
//! tears writes at sector granularity, and can flip bits (ADR 0006).
//!
//! The interface is the small set of calls the storage code needs, with the durability
//! semantics of a POSIX file system spelled out, because the simulated disk enforces them:
//! - file data is durable once [`VfsFile::sync_data`] returns;
//! - a created, renamed or removed name (file or directory) is durable once
//!   [`Vfs::sync_dir`] of its parent directory returns;
//! - [`create_dir_all`] makes every directory it creates durable before it returns.
//!
//! `sync_data` and `sync_dir` are `#[track_caller]`, and so is every helper that wraps them, so
//! the simulated disk knows which line of the storage code asked for each sync: the fsync
//! mutation check (`scripts/fsync-mutations.sh`) skips one such line at a time and expects the
//! power-loss tests to fail.

pub mod sim;

use std::any::Any;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// An open file, shared by readers and the writer. Positional I/O only: no cursor to share.
pub trait VfsFile: Send + Sync + fmt::Debug {
    /// Fills `buf` from `offset`; a short file is `UnexpectedEof`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file as needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Cuts or extends the file (extension reads as zeros). Not durable until synced.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes every write and length change so far durable (`fdatasync`).
    #[track_caller]
    fn sync_data(&self) -> io::Result<()>;
    /// Last modification time.
    fn modified(&self) -> io::Result<SystemTime>;
}

/// Held while a directory lock is taken; dropping it releases the lock.
pub struct VfsLock(#[allow(dead_code)] Box<dyn Any + Send + Sync>);

impl fmt::Debug for VfsLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VfsLock")
    }
}

/// A file system as the storage code uses it (see the module comment for durability).
pub trait Vfs: Send + Sync + fmt::Debug + 'static {
    /// Creates one directory (its parent must exist); `AlreadyExists` if the name is taken. Not
    /// durable until its parent is synced: see [`create_dir_all`].
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    /// Whether `path` names an existing directory.
    fn is_dir(&self, path: &Path) -> bool;
    /// Names of the regular files directly in `dir`, in no particular order.
    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Names of the directories directly in `dir`, in no particular order.
    fn list_dirs(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Removes an empty directory. Not durable until its parent is synced.
    fn remove_dir(&self, dir: &Path) -> io::Result<()>;
    /// Opens an existing file for reading and writing; `NotFound` if there is none.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>>;
    /// Creates a new, empty file; `AlreadyExists` if the name is taken.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>>;
    /// Creates the file or empties an existing one.
    fn create_truncate(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Atomically replaces `to` with `from` (same directory).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Moves directory `from`, with everything in it, to `to` (same parent; `to` must not
    /// exist). Durable once the parent is synced.
    fn rename_dir(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the creations, renames and removals of names in `dir` durable.
    #[track_caller]
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive advisory lock on `path` (created if missing); `Ok(None)` when someone
    /// else holds it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<VfsLock>>;

    /// The whole content of a file; `NotFound` if there is none.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.open(path)?;
        let len = usize::try_from(file.len()?).map_err(io::Error::other)?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// Creates `dir` and its missing parents, each made durable in its parent before the next level
/// is created, so a directory that survives a crash always has its parents.
pub fn create_dir_all(vfs: &dyn Vfs, dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || vfs.is_dir(dir) {
        return Ok(());
    }
    let parent = parent_dir(dir);
    if parent != dir {
        create_dir_all(vfs, &parent)?;
    }
    match vfs.create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && vfs.is_dir(dir) => return Ok(()),
        Err(e) => return Err(e),
    }
    vfs.sync_dir(&parent)
}

/// Deletes `dir` with everything in it, then makes the deletion durable in its parent. A crash
/// midway leaves part of the tree: callers make sure nothing reads a tree they delete.
pub fn remove_dir_all(vfs: &dyn Vfs, dir: &Path) -> io::Result<()> {
    remove_tree(vfs, dir)?;
    vfs.sync_dir(&parent_dir(dir))
}

fn remove_tree(vfs: &dyn Vfs, dir: &Path) -> io::Result<()> {
    for sub in vfs.list_dirs(dir)? {
        remove_tree(vfs, &dir.join(sub))?;
    }
    for file in vfs.list_files(dir)? {
        vfs.remove_file(&dir.join(file))?;
    }
    // The directory's own removals are durable before it goes, as a journaling file system
    // orders them.
    vfs.sync_dir(dir)?;
    vfs.remove_dir(dir)
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The operating system's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdVfs;

impl StdVfs {
    /// The shared instance configs default to.
    pub fn shared() -> Arc<dyn Vfs> {
        Arc::new(StdVfs)
    }
}

#[derive(Debug)]
struct StdFile(File);

impl VfsFile for StdFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    #[track_caller]
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn modified(&self) -> io::Result<SystemTime> {
        self.0.metadata()?.modified()
    }
}

/// Names in `dir` whose type `keep` accepts.
fn std_list(dir: &Path, keep: fn(&fs::FileType) -> bool) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for dirent in fs::read_dir(dir)? {
        let dirent = dirent?;
        if keep(&dirent.file_type()?)
            && let Some(name) = dirent.file_name().to_str()
        {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn std_open(path: &Path, options: &OpenOptions) -> io::Result<Arc<dyn VfsFile>> {
    Ok(Arc::new(StdFile(options.open(path)?)))
}

impl Vfs for StdVfs {
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir(dir)
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>> {
        std_list(dir, |t| t.is_file())
    }

    fn list_dirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        std_list(dir, |t| t.is_dir())
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir(dir)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>> {
        std_open(path, OpenOptions::new().read(true).write(true))
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>> {
        std_open(
            path,
            OpenOptions::new().read(true).write(true).create_new(true),
        )
    }

    fn create_truncate(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>> {
        std_open(
            path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true),
        )
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn rename_dir(&self, from: &Path, to: &Path) -> io::Result<()> {
        if !from.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", from.display()),
            ));
        }
        if fs::symlink_metadata(to).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", to.display()),
            ));
        }
        fs::rename(from, to)
    }

    #[track_caller]
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<VfsLock>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(VfsLock(Box::new(file)))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_vfs_round_trips_files_and_locks() {
        let dir = tempfile::tempdir().unwrap();
        let vfs = StdVfs;
        let nested = dir.path().join("a/b/c");
        create_dir_all(&vfs, &nested).unwrap();
        assert!(nested.is_dir());
        let path = nested.join("f");
        let f = vfs.create_new(&path).unwrap();
        assert_eq!(
            vfs.create_new(&path).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        f.write_all_at(b"hello", 3).unwrap();
        assert_eq!(f.len().unwrap(), 8);
        f.sync_data().unwrap();
        assert_eq!(vfs.read(&path).unwrap(), b"\0\0\0hello");
        vfs.rename(&path, &nested.join("g")).unwrap();
        assert_eq!(vfs.list_files(&nested).unwrap(), vec!["g".to_string()]);
        vfs.sync_dir(&nested).unwrap();
        let lock = vfs.try_lock(&nested.join("LOCK")).unwrap();
        assert!(lock.is_some());
        assert!(vfs.try_lock(&nested.join("LOCK")).unwrap().is_none());
        drop(lock);
        assert!(vfs.try_lock(&nested.join("LOCK")).unwrap().is_some());
        assert_eq!(
            vfs.list_dirs(&dir.path().join("a")).unwrap(),
            vec!["b".to_string()]
        );
        remove_dir_all(&vfs, &dir.path().join("a")).unwrap();
        assert!(!dir.path().join("a").exists());
    }
}

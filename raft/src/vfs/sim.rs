//! A simulated disk for power-loss tests: an in-memory [`Vfs`] that tracks, for every file and
//! directory, what is durable and what is only in the "page cache", and can produce the state a
//! power cut would leave behind.
//!
//! Model (the adversary is allowed everything a POSIX file system may do):
//! - **File data**: each file keeps its durable bytes and the writes and length changes made
//!   since its last `sync_data`. At a crash either a random prefix of those changes reaches the
//!   disk and the change after it is torn (a random subset of its 512-byte sectors lands), or
//!   write-back happened in any order: the file has one of the lengths it had since the sync,
//!   and each changed 512-byte sector holds its old or its newest content, independently.
//! - **Names**: creations, renames and removals of names (files and directories) are durable once
//!   their parent directory is synced. At a crash a random prefix, in order, of the unsynced name
//!   changes survives (a journaling file system commits metadata in order); a file whose last
//!   name is lost is gone with its data.
//! - **Bit rot**: [`SimVfs::flip_bit`] flips a bit in durable and cached content alike.
//!
//! [`SimVfs::crash`] freezes the disk (every later call fails as an I/O error, as on a machine
//! that lost power) and returns a new disk holding only what survived, chosen by a seed so a
//! failing run replays exactly.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::panic::Location;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

#[cfg(test)]
use super::create_dir_all;
use super::{Vfs, VfsFile, VfsLock, parent_dir};

mod crash;
mod handle;

pub use crash::CrashMode;
use crash::crash_image;
use handle::SimLockGuard;

/// Granularity of torn writes.
pub const SECTOR: u64 = 512;

type Inode = u64;

#[derive(Debug, Clone)]
enum FileChange {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

impl FileChange {
    fn apply(&self, data: &mut Vec<u8>) {
        match self {
            FileChange::Write { offset, bytes } => write_into(data, *offset, bytes),
            FileChange::SetLen(len) => data.resize(to_usize(*len), 0),
        }
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn write_into(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let start = to_usize(offset);
    let end = start + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[start..end].copy_from_slice(bytes);
}

#[derive(Debug, Clone, Default)]
struct SimFile {
    /// What the disk holds for sure.
    durable: Vec<u8>,
    /// What readers see.
    cached: Vec<u8>,
    /// Changes since the last sync, oldest first.
    unsynced: Vec<FileChange>,
    modified: Option<SystemTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File(Inode),
    Dir,
}

/// One change of a name, not yet made durable by a sync of its directory.
#[derive(Debug, Clone)]
struct NameChange {
    dir: PathBuf,
    path: PathBuf,
    /// `None`: the name was removed.
    node: Option<Node>,
    /// For a rename: the source name, removed in the same atomic step.
    from: Option<PathBuf>,
    /// A directory rename: everything under `from` moves under `path` too.
    tree: bool,
}

#[derive(Debug, Default)]
struct SimState {
    files: HashMap<Inode, SimFile>,
    /// The namespace as callers see it.
    names: BTreeMap<PathBuf, Node>,
    /// The namespace as the disk holds it for sure.
    durable_names: BTreeMap<PathBuf, Node>,
    unsynced_names: Vec<NameChange>,
    locks: HashSet<PathBuf>,
    next_inode: Inode,
    crashed: bool,
    /// Changing calls so far (what an armed crash counts).
    changes: u64,
    /// `file:line` of a sync call to ignore (it returns success and persists nothing): the
    /// fsync mutation check. Taken from `VELA_SIM_SKIP_SYNC` when the disk is made.
    skip_sync_at: Option<String>,
    /// An armed crash: changing calls left before it, and how it tears.
    armed: Option<(u64, CrashMode)>,
    /// What the armed crash left, once it happened.
    image: Option<Box<SimState>>,
}

impl SimState {
    /// A machine's disk holding `files` after a restart: no locks, counters reset, the same
    /// inode numbering and sync-skipping setting, no names yet (the caller sets them).
    fn after_restart(&self, files: HashMap<Inode, SimFile>) -> SimState {
        SimState {
            files,
            next_inode: self.next_inode,
            skip_sync_at: self.skip_sync_at.clone(),
            ..SimState::default()
        }
    }

    /// Counts one changing call (`counted`) against an armed crash and cuts the power when it is
    /// due.
    fn tick_armed(&mut self, counted: bool) {
        if counted {
            self.changes += 1;
        }
        let Some((left, mode)) = self.armed else {
            return;
        };
        let left = if counted {
            left.saturating_sub(1)
        } else {
            left
        };
        if left > 0 {
            self.armed = Some((left, mode));
            return;
        }
        self.armed = None;
        self.image = Some(Box::new(crash_image(self, mode)));
        self.crashed = true;
    }

    fn skips(&self, caller: &Location<'_>) -> bool {
        self.skip_sync_at
            .as_deref()
            .is_some_and(|site| site == format!("{}:{}", caller.file(), caller.line()))
    }

    fn check(&self) -> io::Result<()> {
        if self.crashed {
            Err(io::Error::other("simulated power loss: the disk is gone"))
        } else {
            Ok(())
        }
    }

    fn require_dir(&self, dir: &Path) -> io::Result<()> {
        match self.names.get(dir) {
            Some(Node::Dir) => Ok(()),
            Some(Node::File(_)) => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is a file", dir.display()),
            )),
            None if is_root(dir) => Ok(()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("directory {} does not exist", dir.display()),
            )),
        }
    }

    fn file_inode(&self, path: &Path) -> io::Result<Inode> {
        match self.names.get(path) {
            Some(Node::File(inode)) => Ok(*inode),
            Some(Node::Dir) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            )),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} does not exist", path.display()),
            )),
        }
    }

    fn link(&mut self, path: &Path, node: Node) {
        self.names.insert(path.to_path_buf(), node);
        self.unsynced_names.push(NameChange {
            dir: parent_dir(path),
            path: path.to_path_buf(),
            node: Some(node),
            from: None,
            tree: false,
        });
    }

    fn new_file(&mut self, path: &Path) -> Inode {
        self.next_inode += 1;
        let inode = self.next_inode;
        self.files.insert(
            inode,
            SimFile {
                modified: Some(SystemTime::now()),
                ..SimFile::default()
            },
        );
        self.link(path, Node::File(inode));
        inode
    }
}

fn is_root(dir: &Path) -> bool {
    dir.as_os_str().is_empty() || dir == Path::new("/") || dir == Path::new(".")
}

fn apply_name_change(names: &mut BTreeMap<PathBuf, Node>, change: &NameChange) {
    if let (true, Some(from)) = (change.tree, &change.from) {
        move_tree(names, from, &change.path);
        return;
    }
    if let Some(from) = &change.from {
        names.remove(from);
    }
    match change.node {
        Some(node) => {
            names.insert(change.path.clone(), node);
        }
        None => {
            names.remove(&change.path);
        }
    }
}

/// The simulated disk renames within one directory only.
fn within_one_dir(from: &Path, to: &Path) -> io::Result<()> {
    if parent_dir(from) == parent_dir(to) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the simulated disk renames within one directory only",
        ))
    }
}

/// Moves `from` and every name under it to `to`.
fn move_tree(names: &mut BTreeMap<PathBuf, Node>, from: &Path, to: &Path) {
    let moved: Vec<PathBuf> = names
        .keys()
        .filter(|p| p.starts_with(from))
        .cloned()
        .collect();
    for old in moved {
        if let (Some(node), Ok(rest)) = (names.remove(&old), old.strip_prefix(from)) {
            let new = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            names.insert(new, node);
        }
    }
}

/// The simulated disk. Clones share one disk.
#[derive(Debug, Clone)]
pub struct SimVfs {
    state: Arc<Mutex<SimState>>,
}

impl Default for SimVfs {
    fn default() -> Self {
        SimVfs {
            state: Arc::new(Mutex::new(SimState {
                skip_sync_at: std::env::var("VELA_SIM_SKIP_SYNC").ok(),
                ..SimState::default()
            })),
        }
    }
}

impl Vfs for SimVfs {
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check()?;
        st.require_dir(&parent_dir(dir))?;
        if st.names.contains_key(dir) || is_root(dir) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", dir.display()),
            ));
        }
        st.link(dir, Node::Dir);
        st.tick_armed(true);
        Ok(())
    }

    fn is_dir(&self, path: &Path) -> bool {
        let st = self.state.lock();
        is_root(path) || matches!(st.names.get(path), Some(Node::Dir))
    }

    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock();
        st.check()?;
        st.require_dir(dir)?;
        Ok(st
            .names
            .iter()
            .filter(|(p, n)| matches!(n, Node::File(_)) && parent_dir(p) == dir)
            .filter_map(|(p, _)| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn list_dirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock();
        st.check()?;
        st.require_dir(dir)?;
        Ok(st
            .names
            .iter()
            .filter(|(p, n)| matches!(n, Node::Dir) && parent_dir(p) == dir)
            .filter_map(|(p, _)| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check()?;
        st.require_dir(dir)?;
        if st.names.keys().any(|p| parent_dir(p) == dir) {
            return Err(io::Error::new(
                io::ErrorKind::DirectoryNotEmpty,
                format!("{} is not empty", dir.display()),
            ));
        }
        st.names.remove(dir);
        st.unsynced_names.push(NameChange {
            dir: parent_dir(dir),
            path: dir.to_path_buf(),
            node: None,
            from: None,
            tree: false,
        });
        st.tick_armed(true);
        Ok(())
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>> {
        let st = self.state.lock();
        st.check()?;
        let inode = st.file_inode(path)?;
        drop(st);
        Ok(self.handle(inode))
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>> {
        let mut st = self.state.lock();
        st.check()?;
        st.require_dir(&parent_dir(path))?;
        if st.names.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        let inode = st.new_file(path);
        st.tick_armed(true);
        drop(st);
        Ok(self.handle(inode))
    }

    fn create_truncate(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>> {
        let mut st = self.state.lock();
        st.check()?;
        st.require_dir(&parent_dir(path))?;
        let inode = match st.names.get(path) {
            Some(Node::File(inode)) => {
                let inode = *inode;
                if let Some(f) = st.files.get_mut(&inode) {
                    f.cached.clear();
                    f.unsynced.push(FileChange::SetLen(0));
                    f.modified = Some(SystemTime::now());
                }
                inode
            }
            Some(Node::Dir) => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    format!("{} is a directory", path.display()),
                ));
            }
            None => st.new_file(path),
        };
        st.tick_armed(true);
        drop(st);
        Ok(self.handle(inode))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check()?;
        st.file_inode(path)?;
        st.names.remove(path);
        st.unsynced_names.push(NameChange {
            dir: parent_dir(path),
            path: path.to_path_buf(),
            node: None,
            from: None,
            tree: false,
        });
        st.tick_armed(true);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check()?;
        let inode = st.file_inode(from)?;
        within_one_dir(from, to)?;
        if matches!(st.names.get(to), Some(Node::Dir)) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", to.display()),
            ));
        }
        st.names.remove(from);
        st.names.insert(to.to_path_buf(), Node::File(inode));
        st.unsynced_names.push(NameChange {
            dir: parent_dir(to),
            path: to.to_path_buf(),
            node: Some(Node::File(inode)),
            from: Some(from.to_path_buf()),
            tree: false,
        });
        st.tick_armed(true);
        Ok(())
    }

    /// The move itself is one change of the parent; name changes under `from` not yet synced
    /// move with the tree (they become durable when their directory, now under `to`, is).
    fn rename_dir(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check()?;
        st.require_dir(from)?;
        within_one_dir(from, to)?;
        if st.names.contains_key(to) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", to.display()),
            ));
        }
        if st.locks.iter().any(|l| l.starts_with(from)) {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!("{} holds a locked file", from.display()),
            ));
        }
        move_tree(&mut st.names, from, to);
        let moved = |p: &Path| match p.strip_prefix(from) {
            Ok(rest) if rest.as_os_str().is_empty() => Some(to.to_path_buf()),
            Ok(rest) => Some(to.join(rest)),
            Err(_) => None,
        };
        for change in &mut st.unsynced_names {
            if let Some(dir) = moved(&change.dir) {
                change.dir = dir;
            }
            if let Some(path) = moved(&change.path) {
                change.path = path;
            }
            if let Some(source) = change.from.as_deref().and_then(moved) {
                change.from = Some(source);
            }
        }
        st.unsynced_names.push(NameChange {
            dir: parent_dir(to),
            path: to.to_path_buf(),
            node: Some(Node::Dir),
            from: Some(from.to_path_buf()),
            tree: true,
        });
        st.tick_armed(true);
        Ok(())
    }

    #[track_caller]
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check()?;
        st.require_dir(dir)?;
        if st.skips(Location::caller()) {
            return Ok(());
        }
        sync_names(&mut st, dir);
        st.tick_armed(true);
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<VfsLock>> {
        let mut st = self.state.lock();
        st.check()?;
        if !st.names.contains_key(path) {
            st.require_dir(&parent_dir(path))?;
            st.new_file(path);
        }
        if !st.locks.insert(path.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(VfsLock(Box::new(SimLockGuard {
            vfs: self.clone(),
            path: path.to_path_buf(),
        }))))
    }
}

/// Makes the name changes in `dir` durable, in order.
fn sync_names(st: &mut SimState, dir: &Path) {
    let (done, rest): (Vec<NameChange>, Vec<NameChange>) = std::mem::take(&mut st.unsynced_names)
        .into_iter()
        .partition(|c| c.dir == dir);
    for change in &done {
        apply_name_change(&mut st.durable_names, change);
    }
    st.unsynced_names = rest;
}

/// Runs `case` for many seeds, as the power-loss tests do, and names the seed that fails.
///
/// Seeds are `base..base + count`: `count` is `VELA_SIM_SEEDS` if set (the soak runs use it),
/// else `default_count`; `base` is `VELA_SIM_SEED_BASE` or 0. `VELA_SIM_SEED=<n>` runs that one
/// seed only, which replays a failure exactly.
pub fn seed_sweep(name: &str, default_count: u64, case: impl Fn(u64) + std::panic::RefUnwindSafe) {
    let env = |key: &str| std::env::var(key).ok().and_then(|v| v.parse::<u64>().ok());
    let seeds: Vec<u64> = match env("VELA_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let base = env("VELA_SIM_SEED_BASE").unwrap_or(0);
            let count = env("VELA_SIM_SEEDS").unwrap_or(default_count);
            (base..base.saturating_add(count)).collect()
        }
    };
    for seed in seeds {
        if std::panic::catch_unwind(|| case(seed)).is_err() {
            panic!("{name} failed for seed {seed}; replay it with VELA_SIM_SEED={seed}");
        }
    }
}

#[cfg(test)]
mod tests;

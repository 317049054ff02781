//! Power cuts and process kills of the simulated disk: what survives of unsynced changes (see
//! the model in the parent module), chosen by a seed so a failing run replays exactly.

use super::*;

/// What [`SimVfs::crash`] does to unsynced changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced change is lost: the strictest reading of the rules.
    DropAllUnsynced,
    /// A power cut as the module comment describes, its choices drawn from `seed`.
    Random { seed: u64 },
    /// The process dies, the machine does not: everything written stays, unsynced.
    ProcessKill,
}

impl SimVfs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loses power: this disk fails every later call, and the returned disk holds what survived.
    pub fn crash(&self, mode: CrashMode) -> SimVfs {
        let mut st = self.state.lock();
        if let Some(image) = st.image.take() {
            // An armed crash already happened: that is the power cut.
            return SimVfs {
                state: Arc::new(Mutex::new(*image)),
            };
        }
        st.crashed = true;
        SimVfs {
            state: Arc::new(Mutex::new(crash_image(&st, mode))),
        }
    }

    /// Arms a power cut that happens right after the next `after_ops` changing calls (writes,
    /// length changes, syncs, creations, renames, removals), wherever in the storage code they
    /// come from; [`crash`](Self::crash) then returns what it left, or cuts the power itself if
    /// fewer calls came.
    pub fn arm_crash(&self, after_ops: u64, mode: CrashMode) {
        let mut st = self.state.lock();
        st.armed = Some((after_ops, mode));
        st.tick_armed(false);
    }

    /// Whether an armed crash has happened.
    pub fn has_crashed(&self) -> bool {
        self.state.lock().crashed
    }
}

/// The disk a power cut leaves (see the module comment).
pub(super) fn crash_image(st: &SimState, mode: CrashMode) -> SimState {
    let mut rng = match mode {
        CrashMode::Random { seed } => Some(Xoshiro256PlusPlus::seed_from_u64(seed)),
        CrashMode::DropAllUnsynced => None,
        CrashMode::ProcessKill => {
            return SimState {
                names: st.names.clone(),
                durable_names: st.durable_names.clone(),
                unsynced_names: st.unsynced_names.clone(),
                ..st.after_restart(st.files.clone())
            };
        }
    };

    let mut names = st.durable_names.clone();
    let keep_names = rng
        .as_mut()
        .map_or(0, |r| r.random_range(0..=st.unsynced_names.len()));
    for change in &st.unsynced_names[..keep_names] {
        apply_name_change(&mut names, change);
    }
    // A name whose directory did not survive is gone too.
    let dirs: HashSet<PathBuf> = names
        .iter()
        .filter(|(_, n)| **n == Node::Dir)
        .map(|(p, _)| p.clone())
        .collect();
    names.retain(|path, _| {
        path.ancestors()
            .skip(1)
            .all(|a| is_root(a) || dirs.contains(a))
    });

    let mut files = HashMap::new();
    for node in names.values() {
        let Node::File(inode) = node else { continue };
        if files.contains_key(inode) {
            continue;
        }
        let Some(file) = st.files.get(inode) else {
            continue;
        };
        let mut data = file.durable.clone();
        if let Some(rng) = rng.as_mut() {
            if rng.random_bool(0.5) {
                let keep = rng.random_range(0..=file.unsynced.len());
                for change in &file.unsynced[..keep] {
                    change.apply(&mut data);
                }
                if let Some(torn) = file.unsynced.get(keep) {
                    tear(torn, &mut data, rng);
                }
            } else {
                data = scatter(file, rng);
            }
        }
        files.insert(
            *inode,
            SimFile {
                durable: data.clone(),
                cached: data,
                unsynced: Vec::new(),
                modified: file.modified,
            },
        );
    }
    SimState {
        durable_names: names.clone(),
        names,
        ..st.after_restart(files)
    }
}

impl SimVfs {
    /// Kills the process but not the machine: this disk fails every later call (the dead
    /// process's handles), and the returned disk keeps everything, durable or not. Unsynced
    /// changes stay unsynced, so a later [`crash`](Self::crash) can still lose them.
    pub fn kill_process(&self) -> SimVfs {
        self.crash(CrashMode::ProcessKill)
    }

    /// Flips bit `bit` (0 = least significant of byte 0) of the file at `path`, on disk and in
    /// the cache.
    pub fn flip_bit(&self, path: &Path, bit: u64) -> io::Result<()> {
        let byte = to_usize(bit / 8);
        let mask = 1u8 << (bit % 8);
        self.damage(path, |data| {
            if let Some(b) = data.get_mut(byte) {
                *b ^= mask;
            }
        })
    }

    /// Cuts the file at `path` to `len` bytes, on disk and in the cache (damage, not a write:
    /// a file shortened while its node was down).
    pub fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.damage(path, |data| data.truncate(to_usize(len)))
    }

    /// Changes the file at `path` by `change`, on disk and in the cache alike (damage done
    /// behind the file system's back, not a write).
    fn damage(&self, path: &Path, change: impl Fn(&mut Vec<u8>)) -> io::Result<()> {
        let mut st = self.state.lock();
        let inode = st.file_inode(path)?;
        let file = st
            .files
            .get_mut(&inode)
            .ok_or_else(|| io::Error::other("dangling inode"))?;
        change(&mut file.durable);
        change(&mut file.cached);
        Ok(())
    }

    /// Length of the file at `path` as readers see it.
    pub fn file_len(&self, path: &Path) -> io::Result<u64> {
        let st = self.state.lock();
        let inode = st.file_inode(path)?;
        Ok(st.files.get(&inode).map_or(0, |f| f.cached.len() as u64))
    }

    /// Every file path, sorted.
    pub fn file_paths(&self) -> Vec<PathBuf> {
        let st = self.state.lock();
        st.names
            .iter()
            .filter(|(_, n)| matches!(n, Node::File(_)))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// How many changing calls (the ones an armed crash counts) ran on this disk.
    pub fn change_count(&self) -> u64 {
        self.state.lock().changes
    }
}

/// Write-back in any order: the file gets one of the lengths it had since its last sync, and
/// every sector whose cached content differs from the durable one lands or not, independently.
fn scatter(file: &SimFile, rng: &mut Xoshiro256PlusPlus) -> Vec<u8> {
    let mut lengths = vec![file.durable.len()];
    let mut replay = file.durable.clone();
    for change in &file.unsynced {
        change.apply(&mut replay);
        lengths.push(replay.len());
    }
    let len = lengths[rng.random_range(0..lengths.len())];
    let mut data = file.durable.clone();
    data.resize(len, 0);
    let sector = to_usize(SECTOR);
    for start in (0..len).step_by(sector) {
        let end = (start + sector).min(len);
        let cached = file.cached.get(start..end.min(file.cached.len()));
        if cached != data.get(start..end) && rng.random_bool(0.5) {
            let piece = &mut data[start..end];
            piece.fill(0);
            if let Some(cached) = cached {
                piece[..cached.len()].copy_from_slice(cached);
            }
        }
    }
    data
}

/// Applies a random subset of the sectors `change` touches.
fn tear(change: &FileChange, data: &mut Vec<u8>, rng: &mut Xoshiro256PlusPlus) {
    match change {
        FileChange::Write { offset, bytes } => {
            let end = offset + bytes.len() as u64;
            let mut at = *offset;
            while at < end {
                let sector_end = ((at / SECTOR) + 1) * SECTOR;
                let piece_end = sector_end.min(end);
                if rng.random_bool(0.5) {
                    let from = to_usize(at - offset);
                    let to = to_usize(piece_end - offset);
                    write_into(data, at, &bytes[from..to]);
                }
                at = piece_end;
            }
        }
        // A length change is one metadata update: it happens or not.
        FileChange::SetLen(_) => {
            if rng.random_bool(0.5) {
                change.apply(data);
            }
        }
    }
}

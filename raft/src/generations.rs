//! Snapshot generations: a state machine's snapshots kept as a directory of checksummed files,
//! `snap-<last log index, 20 digits>.bin`, the newest [`KEEP`] of them. A damaged newest
//! generation never makes a shard unopenable: reading falls back to the one before, and the log
//! keeps what that one needs to be replayed (see [`Generations::replay_floor`], ADR 0006).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::entry::LogTypes;
use crate::snapshot_file;
use crate::vfs::Vfs;
use crate::{LogError, SegmentLogStore, vfs};

/// Generations kept: the newest and one to fall back to.
pub const KEEP: usize = 2;
const PREFIX: &str = "snap-";
const SUFFIX: &str = ".bin";

fn file_name(index: u64) -> String {
    format!("{PREFIX}{index:020}{SUFFIX}")
}

fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A readable generation.
#[derive(Debug)]
pub struct Generation<T> {
    /// Last log index the snapshot covers (from the file name, checked against the content by
    /// the caller's decoder).
    pub index: u64,
    pub path: PathBuf,
    pub value: T,
}

/// The snapshot directory of one state machine.
#[derive(Debug, Clone)]
pub struct Generations {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
}

impl Generations {
    /// Creates the directory if needed.
    pub fn open(vfs: Arc<dyn Vfs>, dir: PathBuf) -> Result<Self, LogError> {
        vfs::create_dir_all(vfs.as_ref(), &dir)
            .map_err(|e| LogError::io("creating snapshot directory", &dir, e))?;
        Ok(Generations { vfs, dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Indexes of the generations on disk, newest first.
    pub fn indexes(&self) -> Result<Vec<u64>, LogError> {
        let mut found: Vec<u64> = self
            .vfs
            .list_files(&self.dir)
            .map_err(|e| LogError::io("listing snapshots in", &self.dir, e))?
            .iter()
            .filter_map(|n| parse_file_name(n))
            .collect();
        found.sort_unstable_by(|a, b| b.cmp(a));
        Ok(found)
    }

    /// The lowest log index the log must still hold so that every kept generation can be
    /// replayed: one past the oldest kept generation. `None` without generations (the log must
    /// then be kept from its start).
    pub fn replay_floor(&self) -> Result<Option<u64>, LogError> {
        let indexes = self.indexes()?;
        Ok(indexes
            .get(..KEEP.min(indexes.len()))
            .and_then(|kept| kept.last())
            .map(|i| i.saturating_add(1)))
    }

    /// Writes the generation covering up to `index` durably, then deletes generations beyond
    /// the newest [`KEEP`].
    pub fn write(&self, index: u64, bytes: &[u8]) -> Result<(), LogError> {
        let path = self.dir.join(file_name(index));
        snapshot_file::write_atomic(self.vfs.as_ref(), &path, bytes)
            .map_err(|e| LogError::io("writing snapshot", &path, e))?;
        let stale: Vec<u64> = self.indexes()?.into_iter().skip(KEEP).collect();
        if stale.is_empty() {
            return Ok(());
        }
        for old in stale {
            let old_path = self.dir.join(file_name(old));
            self.vfs
                .remove_file(&old_path)
                .map_err(|e| LogError::io("deleting old snapshot", &old_path, e))?;
        }
        self.vfs
            .sync_dir(&self.dir)
            .map_err(|e| LogError::io("syncing", &self.dir, e))
    }

    /// The newest generation that reads (checksum) and decodes, trying older ones when it does
    /// not; each one skipped is logged. `Ok(None)` without any generation; an error when
    /// generations exist but none is readable.
    pub fn read_newest<T>(
        &self,
        decode: impl Fn(u64, &[u8]) -> Result<T, String>,
    ) -> Result<Option<Generation<T>>, LogError> {
        let indexes = self.indexes()?;
        let mut failures = Vec::new();
        for index in indexes.iter().copied() {
            let path = self.dir.join(file_name(index));
            let outcome = snapshot_file::read(self.vfs.as_ref(), &path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| bytes.ok_or_else(|| "vanished while reading".to_string()))
                .and_then(|bytes| decode(index, &bytes));
            match outcome {
                Ok(value) => {
                    if !failures.is_empty() {
                        tracing::error!(
                            dir = %self.dir.display(),
                            using = index,
                            skipped = ?failures,
                            "newest snapshot generation is damaged; falling back to an older one"
                        );
                    }
                    return Ok(Some(Generation { index, path, value }));
                }
                Err(reason) => failures.push(format!("{}: {reason}", path.display())),
            }
        }
        if failures.is_empty() {
            return Ok(None);
        }
        Err(LogError::corrupt(
            &self.dir,
            0,
            format!(
                "no snapshot generation is readable: {}",
                failures.join("; ")
            ),
        ))
    }

    /// Where the generation covering up to `index` lives.
    pub fn path_of(&self, index: u64) -> PathBuf {
        self.dir.join(file_name(index))
    }

    /// The storage seam the generations live on.
    pub fn vfs(&self) -> &Arc<dyn Vfs> {
        &self.vfs
    }
}

/// How a state machine persists its snapshots: as [`Generations`], each written only after the
/// log it continues is durable up to where it ends, and followed by telling the log which
/// entries the kept generations still need (its replay floor). The order is the snapshot
/// contract of ADR 0006: a snapshot never covers log entries a power cut could take away, and
/// compaction never deletes an entry a kept generation would replay.
pub struct SnapshotKeeper<C: LogTypes> {
    generations: Generations,
    /// `None` only for state machines tested without a log.
    log: Option<SegmentLogStore<C>>,
}

impl<C: LogTypes> Clone for SnapshotKeeper<C> {
    fn clone(&self) -> Self {
        SnapshotKeeper {
            generations: self.generations.clone(),
            log: self.log.clone(),
        }
    }
}

impl<C> SnapshotKeeper<C>
where
    C: LogTypes,
{
    /// Keeps `generations` for the state machine continuing `log`, and sets the log's replay
    /// floor from the generations on disk.
    pub fn new(
        generations: Generations,
        log: Option<SegmentLogStore<C>>,
    ) -> Result<Self, LogError> {
        let keeper = SnapshotKeeper { generations, log };
        keeper.update_floor()?;
        Ok(keeper)
    }

    pub fn generations(&self) -> &Generations {
        &self.generations
    }

    /// Persists the snapshot covering up to `index`: syncs the log, writes the generation, then
    /// raises the log's replay floor. Skips the write when a generation at or past `index`
    /// exists already (an install may have overtaken this build).
    pub async fn persist(&self, index: u64, bytes: Arc<Vec<u8>>) -> Result<bool, LogError> {
        if self
            .generations
            .indexes()?
            .first()
            .is_some_and(|newest| *newest >= index)
        {
            return Ok(false);
        }
        if let Some(log) = &self.log {
            log.sync().await?;
        }
        let generations = self.generations.clone();
        let dir = generations.dir().to_path_buf();
        tokio::task::spawn_blocking(move || generations.write(index, &bytes))
            .await
            .map_err(|e| {
                LogError::io(
                    "joining the snapshot write in",
                    dir,
                    std::io::Error::other(e),
                )
            })??;
        self.update_floor()?;
        Ok(true)
    }

    /// Persists a snapshot received from elsewhere (a leader), replacing newer local ones is
    /// not needed: openraft installs only snapshots ahead of the applied state.
    pub async fn persist_installed(&self, index: u64, bytes: Arc<Vec<u8>>) -> Result<(), LogError> {
        let generations = self.generations.clone();
        let dir = generations.dir().to_path_buf();
        tokio::task::spawn_blocking(move || generations.write(index, &bytes))
            .await
            .map_err(|e| {
                LogError::io(
                    "joining the snapshot write in",
                    dir,
                    std::io::Error::other(e),
                )
            })??;
        self.update_floor()
    }

    fn update_floor(&self) -> Result<(), LogError> {
        if let Some(log) = &self.log {
            log.set_replay_floor(self.generations.replay_floor()?);
        }
        Ok(())
    }
}

/// Moves a legacy single snapshot file (`<dir>/../snapshot`, before generations existed) into
/// the generation directory under `index`. Used once at open by the crates above.
pub fn adopt_legacy(
    generations: &Generations,
    legacy: &Path,
    index: u64,
    bytes: &[u8],
) -> Result<(), LogError> {
    generations.write(index, bytes)?;
    let vfs = generations.vfs();
    vfs.remove_file(legacy)
        .map_err(|e| LogError::io("removing legacy snapshot", legacy, e))?;
    vfs.sync_dir(&vfs::parent_dir(legacy))
        .map_err(|e| LogError::io("syncing", legacy, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::sim::{CrashMode, SimVfs};

    fn decode(_index: u64, bytes: &[u8]) -> Result<Vec<u8>, String> {
        Ok(bytes.to_vec())
    }

    #[test]
    fn keeps_two_and_falls_back_past_a_damaged_newest() {
        let sim = SimVfs::new();
        let vfs: Arc<dyn Vfs> = Arc::new(sim.clone());
        let g = Generations::open(vfs, PathBuf::from("/s/snapshots")).unwrap();
        assert!(g.read_newest(decode).unwrap().is_none());
        assert_eq!(g.replay_floor().unwrap(), None);
        g.write(10, b"ten").unwrap();
        assert_eq!(g.replay_floor().unwrap(), Some(11));
        g.write(20, b"twenty").unwrap();
        g.write(30, b"thirty").unwrap();
        assert_eq!(g.indexes().unwrap(), vec![30, 20]);
        assert_eq!(g.replay_floor().unwrap(), Some(21));

        let newest = g.read_newest(decode).unwrap().unwrap();
        assert_eq!(
            (newest.index, newest.value.as_slice()),
            (30, &b"thirty"[..])
        );

        // Rot in the newest: the older one is used.
        sim.flip_bit(&g.path_of(30), 8 * 26).unwrap();
        let fallback = g.read_newest(decode).unwrap().unwrap();
        assert_eq!(fallback.index, 20);

        // Everything written survives a strict power cut.
        let after = sim.crash(CrashMode::DropAllUnsynced);
        let g2 = Generations::open(Arc::new(after), PathBuf::from("/s/snapshots")).unwrap();
        assert_eq!(g2.indexes().unwrap(), vec![30, 20]);

        sim_rot_all(&g2);
        assert!(matches!(
            g2.read_newest(decode),
            Err(LogError::Corrupt { .. })
        ));
    }

    fn sim_rot_all(g: &Generations) {
        for i in g.indexes().unwrap() {
            let path = g.path_of(i);
            let bytes = g.vfs().read(&path).unwrap();
            let f = g.vfs().open(&path).unwrap();
            let mut bad = bytes.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            f.write_all_at(&bad, 0).unwrap();
        }
    }

    #[test]
    fn an_adopted_legacy_snapshot_stays_adopted_after_a_power_cut() {
        let sim = SimVfs::new();
        let vfs: Arc<dyn Vfs> = Arc::new(sim.clone());
        vfs::create_dir_all(vfs.as_ref(), Path::new("/c")).unwrap();
        let legacy = PathBuf::from("/c/metadata.snapshot");
        snapshot_file::write_atomic(vfs.as_ref(), &legacy, b"old").unwrap();
        let g = Generations::open(vfs, PathBuf::from("/c/snapshots")).unwrap();
        adopt_legacy(&g, &legacy, 7, b"old").unwrap();

        let after: Arc<dyn Vfs> = Arc::new(sim.crash(CrashMode::DropAllUnsynced));
        assert!(
            after.read(&legacy).is_err(),
            "the legacy file is gone for good"
        );
        let g = Generations::open(after, PathBuf::from("/c/snapshots")).unwrap();
        assert_eq!(g.indexes().unwrap(), vec![7]);
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert_eq!(parse_file_name("snap-42.bin"), None);
        assert_eq!(parse_file_name("snapshot"), None);
    }
}

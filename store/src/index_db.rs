//! The shard's queue index file, `<shard>/index.redb` (ADR 0008): index entries keyed by
//! `(queue key, offset)` in a redb B-tree that reads and writes through the storage seam
//! (`vela_raft::vfs`), so the power-loss tests and the fsync mutation check cover it.
//!
//! The index is derived state. Apply writes entries to an in-memory tail
//! ([`crate::state::Entries`]) that is written here in batches, without fsync; a snapshot build
//! makes the file durable before it writes its generation, so after any crash the file holds at
//! least what the newest snapshot covers (`indexed_through` ≥ its index). Replaying the log
//! after the snapshot writes the same entries again (a key always gets the same entry from the
//! same history), so a file that is ahead of the snapshot is harmless. Garbage (entries below a
//! queue's minimum, queues dropped) is deleted only below what the oldest kept snapshot
//! generation may still read.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, StorageBackend,
    TableDefinition,
};
use vela_raft::vfs::{Vfs, VfsFile};

use crate::state::IndexEntry;

pub mod history;
use history::{
    EVENT_KEY_LEN, HistoryRows, LOOKUP_KEY_LEN, LOOKUP_VALUE_LEN, create_history_tables,
    write_history,
};

/// The index file of a shard directory.
pub const INDEX_FILE: &str = "index.redb";
/// The layout of keys, entries and metadata in the file.
pub const INDEX_FORMAT: u64 = 1;
/// Version byte of an encoded entry.
const ENTRY_VERSION: u8 = 1;
/// Bytes of an encoded key and entry.
pub const KEY_LEN: usize = 12;
pub const ENTRY_LEN: usize = 44;

const ENTRIES: TableDefinition<[u8; KEY_LEN], [u8; ENTRY_LEN]> = TableDefinition::new("entries");
/// Tagged entries by `(queue key, tag id, offset)`: where a tag filter's next match is, without
/// reading the entries in between.
const TAGS: TableDefinition<[u8; TAG_KEY_LEN], ()> = TableDefinition::new("tags");
pub const TAG_KEY_LEN: usize = 16;
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Message ids and keys by hash ([`history`]).
const LOOKUPS: TableDefinition<[u8; LOOKUP_KEY_LEN], [u8; LOOKUP_VALUE_LEN]> =
    TableDefinition::new("lookups");
/// What happened to a record ([`history`]).
const RECORD_EVENTS: TableDefinition<[u8; EVENT_KEY_LEN], &[u8]> =
    TableDefinition::new("record_events");
/// What consumer groups did with a queue position ([`history`]).
const QUEUE_EVENTS: TableDefinition<[u8; EVENT_KEY_LEN], &[u8]> =
    TableDefinition::new("queue_events");
const META_FORMAT: &str = "format";
const META_INDEXED_THROUGH: &str = "indexed_through";

/// Why the index file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("queue index {path}: {message}")]
pub struct IndexError {
    path: PathBuf,
    message: String,
}

impl From<IndexError> for io::Error {
    fn from(err: IndexError) -> Self {
        io::Error::other(err.to_string())
    }
}

/// `(queue key, offset)` big-endian, so keys sort by queue, then offset.
pub fn encode_key(queue: u32, offset: u64) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    key[..4].copy_from_slice(&queue.to_be_bytes());
    key[4..].copy_from_slice(&offset.to_be_bytes());
    key
}

/// `(queue key, tag id, offset)` big-endian.
pub fn encode_tag_key(queue: u32, tag: u32, offset: u64) -> [u8; TAG_KEY_LEN] {
    let mut key = [0u8; TAG_KEY_LEN];
    key[..4].copy_from_slice(&queue.to_be_bytes());
    key[4..8].copy_from_slice(&tag.to_be_bytes());
    key[8..].copy_from_slice(&offset.to_be_bytes());
    key
}

fn decode_tag_key(key: &[u8; TAG_KEY_LEN]) -> (u32, u32, u64) {
    let mut queue = [0u8; 4];
    let mut tag = [0u8; 4];
    let mut offset = [0u8; 8];
    queue.copy_from_slice(&key[..4]);
    tag.copy_from_slice(&key[4..8]);
    offset.copy_from_slice(&key[8..]);
    (
        u32::from_be_bytes(queue),
        u32::from_be_bytes(tag),
        u64::from_be_bytes(offset),
    )
}

fn decode_key(key: &[u8; KEY_LEN]) -> (u32, u64) {
    let mut queue = [0u8; 4];
    let mut offset = [0u8; 8];
    queue.copy_from_slice(&key[..4]);
    offset.copy_from_slice(&key[4..]);
    (u32::from_be_bytes(queue), u64::from_be_bytes(offset))
}

/// An entry's 44 bytes (big-endian): version u8, reserved u8, flags u16 (0; bits for priority,
/// recall, dedup and key lookup later), slot u32, log index u64, store time i64 (Unix ms),
/// message-group hash u64, tag id u32, body size u32 (0 = not recorded), then a crc32c of the
/// key and those 40 bytes: redb checks its pages only when asked to, and a damaged entry must
/// never be served.
pub fn encode_entry(queue: u32, offset: u64, entry: &IndexEntry) -> [u8; ENTRY_LEN] {
    let mut out = [0u8; ENTRY_LEN];
    out[0] = ENTRY_VERSION;
    out[4..8].copy_from_slice(&entry.slot.to_be_bytes());
    out[8..16].copy_from_slice(&entry.log_index.to_be_bytes());
    out[16..24].copy_from_slice(&entry.store_ts_ms.to_be_bytes());
    out[24..32].copy_from_slice(&entry.message_group.to_be_bytes());
    out[32..36].copy_from_slice(&entry.tag.to_be_bytes());
    let crc = entry_crc(&encode_key(queue, offset), &out[..40]);
    out[40..].copy_from_slice(&crc.to_be_bytes());
    out
}

fn entry_crc(key: &[u8; KEY_LEN], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(key), body)
}

/// Decodes the entry stored under `(queue, offset)`, checking it belongs there.
pub fn decode_entry(
    queue: u32,
    offset: u64,
    bytes: &[u8; ENTRY_LEN],
) -> Result<IndexEntry, String> {
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&bytes[40..]);
    if u32::from_be_bytes(stored) != entry_crc(&encode_key(queue, offset), &bytes[..40]) {
        return Err(format!(
            "index entry ({queue}, {offset}) is damaged (checksum mismatch)"
        ));
    }
    if bytes[0] != ENTRY_VERSION {
        return Err(format!("index entry version {} is not supported", bytes[0]));
    }
    let u32_at = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[at..at + 4]);
        u32::from_be_bytes(b)
    };
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(b)
    };
    Ok(IndexEntry {
        slot: u32_at(4),
        log_index: u64_at(8),
        store_ts_ms: u64_at(16) as i64,
        message_group: u64_at(24),
        tag: u32_at(32),
    })
}

/// Runs a redb call. redb trusts its pages on a plain open and read (checking every page would
/// read the whole file at each start), so a damaged file can make it panic; that becomes an
/// error here, and a damaged index stops its shard with a message instead of a crash.
fn guarded<T>(
    path: &Path,
    what: &str,
    f: impl FnOnce() -> Result<T, IndexError>,
) -> Result<T, IndexError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(IndexError {
            path: path.to_path_buf(),
            message: format!("{what}: the file is damaged (its B-tree could not be read)"),
        })
    })
}

/// redb's file layer over a [`VfsFile`].
#[derive(Debug)]
struct VfsBackend {
    file: Arc<dyn VfsFile>,
}

impl StorageBackend for VfsBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.file.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.file.write_all_at(data, offset)
    }
}

/// A shard's open index file.
pub struct IndexDb {
    /// Taken only by `Drop`.
    db: Option<Database>,
    path: PathBuf,
    /// A write panicked inside redb: redb does not promise the database is usable after that, so
    /// every later write fails (and apply stops the shard) instead of going on.
    poisoned: std::sync::atomic::AtomicBool,
}

impl IndexDb {
    fn db(&self) -> &Database {
        self.db
            .as_ref()
            .expect("the database is taken only when this is dropped")
    }

    /// The size of the index file on disk, if it can be read.
    pub fn file_bytes(&self) -> Option<u64> {
        std::fs::metadata(&self.path).ok().map(|m| m.len())
    }
}

impl Drop for IndexDb {
    /// redb commits when a database closes; on a damaged file that can panic (as opening and
    /// reading can, see [`guarded`]). A shard closing on a damaged index must not take the
    /// process down: the panic is caught and logged, the file is left as it is (derived state,
    /// checked again when the shard next opens it).
    fn drop(&mut self) {
        let Some(db) = self.db.take() else { return };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db))).is_err() {
            tracing::error!(
                path = %self.path.display(),
                "closing the queue index file failed: the file is damaged"
            );
        }
    }
}

impl std::fmt::Debug for IndexDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexDb").field("path", &self.path).finish()
    }
}

/// Raw rows of a shard's index file, as one replica copies them to another (ADR 0014): entries,
/// tag keys and the message lookups and tracks (ADR 0028), each in key order within a batch.
#[derive(Debug, Clone, Default)]
pub struct IndexRows {
    pub entries: Vec<([u8; KEY_LEN], [u8; ENTRY_LEN])>,
    pub tags: Vec<[u8; TAG_KEY_LEN]>,
    pub history: HistoryRows,
}

impl PartialEq for IndexRows {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
            && self.tags == other.tags
            && self.history.lookups == other.history.lookups
            && self.history.record_events == other.history.record_events
            && self.history.queue_events == other.history.queue_events
    }
}

impl IndexRows {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows in the batch (entries, tags and history rows).
    pub fn len(&self) -> usize {
        self.entries.len() + self.tags.len() + self.history.len()
    }
}

/// A consistent read view of the file as of one write.
pub struct IndexView {
    table: ReadOnlyTable<[u8; KEY_LEN], [u8; ENTRY_LEN]>,
    tags: ReadOnlyTable<[u8; TAG_KEY_LEN], ()>,
    lookups: ReadOnlyTable<[u8; LOOKUP_KEY_LEN], [u8; LOOKUP_VALUE_LEN]>,
    record_events: ReadOnlyTable<[u8; EVENT_KEY_LEN], &'static [u8]>,
    queue_events: ReadOnlyTable<[u8; EVENT_KEY_LEN], &'static [u8]>,
    db: Arc<IndexDb>,
}

impl IndexView {
    pub fn db(&self) -> &Arc<IndexDb> {
        &self.db
    }

    pub fn get(&self, queue: u32, offset: u64) -> Result<Option<IndexEntry>, IndexError> {
        guarded(&self.db().path, "read", || {
            self.get_unguarded(queue, offset)
        })
    }

    /// The lowest offset in `from..to` of `queue` whose entry has one of `tags`. A hint: the
    /// caller reads the entry itself before it relies on it.
    pub fn first_tagged(
        &self,
        queue: u32,
        tags: &[u32],
        from: u64,
        to: u64,
    ) -> Result<Option<u64>, IndexError> {
        guarded(&self.db().path, "read", || {
            let mut first: Option<u64> = None;
            for tag in tags {
                let upper = first.unwrap_or(to);
                if from >= upper {
                    break;
                }
                let found = self
                    .tags
                    .range(encode_tag_key(queue, *tag, from)..encode_tag_key(queue, *tag, upper))
                    .map_err(|e| self.db().error("read", e))?
                    .next()
                    .transpose()
                    .map_err(|e| self.db().error("read", e))?;
                if let Some((key, _)) = found {
                    first = Some(decode_tag_key(&key.value()).2);
                }
            }
            Ok(first)
        })
    }

    fn get_unguarded(&self, queue: u32, offset: u64) -> Result<Option<IndexEntry>, IndexError> {
        let found = self
            .table
            .get(encode_key(queue, offset))
            .map_err(|e| self.db().error("read", e))?;
        found
            .map(|v| {
                decode_entry(queue, offset, &v.value()).map_err(|e| self.db().error("read", e))
            })
            .transpose()
    }

    /// Entries of `queue` with offsets in `from..to`, ascending.
    pub fn range(
        &self,
        queue: u32,
        from: u64,
        to: u64,
    ) -> Result<impl Iterator<Item = Result<(u64, IndexEntry), IndexError>> + '_, IndexError> {
        let path = &self.db().path;
        let mut range = guarded(path, "read", || {
            self.table
                .range(encode_key(queue, from)..encode_key(queue, to))
                .map_err(|e| self.db().error("read", e))
        })?;
        let mut failed = false;
        let items = std::iter::from_fn(move || {
            if failed {
                return None;
            }
            let item = guarded(path, "read", || Ok(range.next()));
            failed = item.is_err();
            item.transpose()
        });
        Ok(items.map(move |item| {
            let item = item?;
            let (k, v) = item.map_err(|e| self.db().error("read", e))?;
            let (key_queue, offset) = decode_key(&k.value());
            if key_queue != queue {
                return Err(self
                    .db
                    .error("read", "a range returned another queue's key"));
            }
            let entry =
                decode_entry(queue, offset, &v.value()).map_err(|e| self.db().error("read", e))?;
            Ok((offset, entry))
        }))
    }

    /// Every row of the view (all entries, then all tags, then the history rows), in batches of
    /// at most `batch` rows, in key order. Reads through the view, so a file written meanwhile
    /// does not change it. Each entry's and event's checksum is checked, so a damaged file is
    /// reported here, not copied.
    pub fn export(&self, batch: usize) -> impl Iterator<Item = Result<IndexRows, IndexError>> + '_ {
        self.export_queue_rows(batch)
            .chain(self.export_history(batch))
    }

    fn export_queue_rows(
        &self,
        batch: usize,
    ) -> impl Iterator<Item = Result<IndexRows, IndexError>> + '_ {
        let batch = batch.max(1);
        let path = &self.db().path;
        let mut entries = None;
        let mut tags = None;
        let mut entries_done = false;
        let mut tags_done = false;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed || tags_done {
                return None;
            }
            let next = guarded(path, "export", || {
                let mut rows = IndexRows::default();
                if !entries_done {
                    let range = match &mut entries {
                        Some(range) => range,
                        None => entries.insert(
                            self.table
                                .range::<[u8; KEY_LEN]>(..)
                                .map_err(|e| self.db().error("export", e))?,
                        ),
                    };
                    while rows.len() < batch {
                        let Some(item) = range.next() else {
                            entries_done = true;
                            break;
                        };
                        let (k, v) = item.map_err(|e| self.db().error("export", e))?;
                        let (key, value) = (k.value(), v.value());
                        let (queue, offset) = decode_key(&key);
                        decode_entry(queue, offset, &value)
                            .map_err(|e| self.db().error("export", e))?;
                        rows.entries.push((key, value));
                    }
                }
                if entries_done {
                    let range = match &mut tags {
                        Some(range) => range,
                        None => tags.insert(
                            self.tags
                                .range::<[u8; TAG_KEY_LEN]>(..)
                                .map_err(|e| self.db().error("export", e))?,
                        ),
                    };
                    while rows.len() < batch {
                        let Some(item) = range.next() else {
                            tags_done = true;
                            break;
                        };
                        let (k, _) = item.map_err(|e| self.db().error("export", e))?;
                        rows.tags.push(k.value());
                    }
                }
                Ok((!rows.is_empty()).then_some(rows))
            });
            failed = next.is_err();
            next.transpose()
        })
    }
}

/// How a table's keys split into a group (entries: the queue; tags: queue and tag as one
/// number, queue in the high half) and an offset, for garbage collection.
struct KeyLayout<const N: usize> {
    encode: fn(u64, u64) -> [u8; N],
    decode: fn(&[u8; N]) -> (u64, u64),
    queue: fn(u64) -> u32,
}

const ENTRY_KEYS: KeyLayout<KEY_LEN> = KeyLayout {
    encode: |group, offset| encode_key(group as u32, offset),
    decode: |key| {
        let (queue, offset) = decode_key(key);
        (u64::from(queue), offset)
    },
    queue: |group| u32::try_from(group).unwrap_or(u32::MAX),
};

const TAG_KEYS: KeyLayout<TAG_KEY_LEN> = KeyLayout {
    encode: |group, offset| encode_tag_key((group >> 32) as u32, group as u32, offset),
    decode: |key| {
        let (queue, tag, offset) = decode_tag_key(key);
        ((u64::from(queue) << 32) | u64::from(tag), offset)
    },
    queue: |group| (group >> 32) as u32,
};

const QUEUE_EVENT_KEYS: KeyLayout<EVENT_KEY_LEN> = KeyLayout {
    encode: |group, offset| history::queue_event_start(group as u32, offset),
    decode: |key| {
        let (queue, offset) = history::queue_event_position(key);
        (u64::from(queue), offset)
    },
    queue: |group| u32::try_from(group).unwrap_or(u32::MAX),
};

/// What a garbage collection pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    pub entries: u64,
}

/// Most keys one collection transaction deletes, so apply's writes wait at most that long.
const COLLECT_BATCH: u64 = 16_384;

impl IndexDb {
    /// Opens `<dir>/index.redb`, creating it (durably, through a temporary name) if missing.
    pub fn open(
        vfs: &Arc<dyn Vfs>,
        dir: &Path,
        cache_bytes: usize,
    ) -> Result<Arc<Self>, IndexError> {
        guarded(&dir.join(INDEX_FILE), "opening", || {
            Self::open_unguarded(vfs, dir, cache_bytes)
        })
    }

    fn open_unguarded(
        vfs: &Arc<dyn Vfs>,
        dir: &Path,
        cache_bytes: usize,
    ) -> Result<Arc<Self>, IndexError> {
        let path = dir.join(INDEX_FILE);
        let err = |what: &str, e: &dyn std::fmt::Display| IndexError {
            path: path.clone(),
            message: format!("{what}: {e}"),
        };
        let mut builder = Database::builder();
        builder.set_cache_size(cache_bytes);
        let file = match vfs.open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Built under a temporary name and renamed: a crash never leaves a half-made
                // file under the real name.
                let tmp = dir.join(format!("{INDEX_FILE}.tmp"));
                let file = vfs.create_truncate(&tmp).map_err(|e| err("creating", &e))?;
                {
                    let db = builder
                        .create_with_backend(VfsBackend { file })
                        .map_err(|e| err("creating", &e))?;
                    let mut tx = db.begin_write().map_err(|e| err("creating", &e))?;
                    tx.set_durability(Durability::Immediate)
                        .map_err(|e| err("creating", &e))?;
                    {
                        let mut meta = tx.open_table(META).map_err(|e| err("creating", &e))?;
                        meta.insert(META_FORMAT, INDEX_FORMAT)
                            .map_err(|e| err("creating", &e))?;
                        tx.open_table(ENTRIES).map_err(|e| err("creating", &e))?;
                        tx.open_table(TAGS).map_err(|e| err("creating", &e))?;
                        create_history_tables(&tx).map_err(|e| err("creating", &e))?;
                    }
                    tx.commit().map_err(|e| err("creating", &e))?;
                }
                vfs.rename(&tmp, &path).map_err(|e| err("creating", &e))?;
                vfs.sync_dir(dir).map_err(|e| err("creating", &e))?;
                vfs.open(&path).map_err(|e| err("opening", &e))?
            }
            Err(e) => return Err(err("opening", &e)),
        };
        let db = builder
            .create_with_backend(VfsBackend { file })
            .map_err(|e| {
                err(
                    "opening (the file is damaged; see the README on rebuilding a shard)",
                    &e,
                )
            })?;
        let this = Arc::new(Self {
            db: Some(db),
            path,
            poisoned: Default::default(),
        });
        let format = this.meta(META_FORMAT)?;
        if format != Some(INDEX_FORMAT) {
            return Err(this.error(
                "opening",
                format!(
                    "index format {format:?} is not supported (this build reads {INDEX_FORMAT})"
                ),
            ));
        }
        this.add_history_tables()?;
        Ok(this)
    }

    /// A write through [`guarded`] that poisons this database if it panics.
    fn guarded_write<T>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        use std::sync::atomic::Ordering;
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.error(
                what,
                "an earlier write failed inside redb; reopen the shard",
            ));
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        result.unwrap_or_else(|_| {
            self.poisoned.store(true, Ordering::Release);
            Err(self.error(
                what,
                "the file is damaged (its B-tree could not be written)",
            ))
        })
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> IndexError {
        IndexError {
            path: self.path.clone(),
            message: format!("{what}: {e}"),
        }
    }

    fn meta(&self, name: &str) -> Result<Option<u64>, IndexError> {
        guarded(&self.path, "meta", || self.meta_unguarded(name))
    }

    fn meta_unguarded(&self, name: &str) -> Result<Option<u64>, IndexError> {
        let tx = self.db().begin_read().map_err(|e| self.error("read", e))?;
        let meta = tx.open_table(META).map_err(|e| self.error("read", e))?;
        Ok(meta
            .get(name)
            .map_err(|e| self.error("read", e))?
            .map(|v| v.value()))
    }

    /// The highest log index whose entries the file holds (as written; durable only up to the
    /// last [`IndexDb::make_durable`]).
    pub fn indexed_through(&self) -> Result<Option<u64>, IndexError> {
        self.meta(META_INDEXED_THROUGH)
    }

    /// A read view of what is written now.
    pub fn view(self: &Arc<Self>) -> Result<Arc<IndexView>, IndexError> {
        guarded(&self.path, "view", || self.view_unguarded())
    }

    fn view_unguarded(self: &Arc<Self>) -> Result<Arc<IndexView>, IndexError> {
        let tx = self.db().begin_read().map_err(|e| self.error("read", e))?;
        let table = tx.open_table(ENTRIES).map_err(|e| self.error("read", e))?;
        let tags = tx.open_table(TAGS).map_err(|e| self.error("read", e))?;
        let lookups = tx.open_table(LOOKUPS).map_err(|e| self.error("read", e))?;
        let record_events = tx
            .open_table(RECORD_EVENTS)
            .map_err(|e| self.error("read", e))?;
        let queue_events = tx
            .open_table(QUEUE_EVENTS)
            .map_err(|e| self.error("read", e))?;
        Ok(Arc::new(IndexView {
            table,
            tags,
            lookups,
            record_events,
            queue_events,
            db: self.clone(),
        }))
    }

    /// Writes `entries` and records that everything through log index `through` is indexed.
    /// Not durable until [`IndexDb::make_durable`].
    pub fn write(
        &self,
        entries: &BTreeMap<(u32, u64), IndexEntry>,
        history: &HistoryRows,
        through: u64,
    ) -> Result<(), IndexError> {
        self.guarded_write("write", || self.write_unguarded(entries, history, through))
    }

    fn write_unguarded(
        &self,
        entries: &BTreeMap<(u32, u64), IndexEntry>,
        history: &HistoryRows,
        through: u64,
    ) -> Result<(), IndexError> {
        let err = |e: &dyn std::fmt::Display| self.error("write", e);
        let mut tx = self.db().begin_write().map_err(|e| err(&e))?;
        tx.set_durability(Durability::None).map_err(|e| err(&e))?;
        {
            let mut table = tx.open_table(ENTRIES).map_err(|e| err(&e))?;
            let mut tags = tx.open_table(TAGS).map_err(|e| err(&e))?;
            for ((queue, offset), entry) in entries {
                table
                    .insert(
                        encode_key(*queue, *offset),
                        encode_entry(*queue, *offset, entry),
                    )
                    .map_err(|e| err(&e))?;
                if entry.tag != 0 {
                    tags.insert(encode_tag_key(*queue, entry.tag, *offset), ())
                        .map_err(|e| err(&e))?;
                }
            }
            write_history(&tx, history).map_err(|e| err(&e))?;
            let mut meta = tx.open_table(META).map_err(|e| err(&e))?;
            let before = meta
                .get(META_INDEXED_THROUGH)
                .map_err(|e| err(&e))?
                .map_or(0, |v| v.value());
            meta.insert(META_INDEXED_THROUGH, before.max(through))
                .map_err(|e| err(&e))?;
        }
        tx.commit().map_err(|e| err(&e))
    }

    /// Makes every write so far durable.
    pub fn make_durable(&self) -> Result<(), IndexError> {
        self.guarded_write("make durable", || self.make_durable_unguarded())
    }

    fn make_durable_unguarded(&self) -> Result<(), IndexError> {
        let err = |e: &dyn std::fmt::Display| self.error("sync", e);
        let mut tx = self.db().begin_write().map_err(|e| err(&e))?;
        tx.set_durability(Durability::Immediate)
            .map_err(|e| err(&e))?;
        tx.commit().map_err(|e| err(&e))
    }

    /// Writes `rows` (overwriting the same keys). Not durable until
    /// [`IndexDb::finish_import`]. Each entry's checksum is checked against its key first, so a
    /// row damaged on the way is refused instead of written.
    pub fn import(&self, rows: &IndexRows) -> Result<(), IndexError> {
        self.guarded_write("import", || self.import_unguarded(rows))
    }

    fn import_unguarded(&self, rows: &IndexRows) -> Result<(), IndexError> {
        let err = |e: &dyn std::fmt::Display| self.error("import", e);
        for (key, value) in &rows.entries {
            let (queue, offset) = decode_key(key);
            decode_entry(queue, offset, value).map_err(|e| err(&e))?;
        }
        for (key, value) in rows
            .history
            .record_events
            .iter()
            .chain(&rows.history.queue_events)
        {
            history::decode_event(key, value).map_err(|e| err(&e))?;
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.db().begin_write().map_err(|e| err(&e))?;
        tx.set_durability(Durability::None).map_err(|e| err(&e))?;
        {
            let mut table = tx.open_table(ENTRIES).map_err(|e| err(&e))?;
            for (key, value) in &rows.entries {
                table.insert(key, value).map_err(|e| err(&e))?;
            }
            let mut tags = tx.open_table(TAGS).map_err(|e| err(&e))?;
            for key in &rows.tags {
                tags.insert(key, ()).map_err(|e| err(&e))?;
            }
        }
        write_history(&tx, &rows.history).map_err(|e| err(&e))?;
        tx.commit().map_err(|e| err(&e))
    }

    /// Ends an import: records that the file holds every entry through log index `through`
    /// (exactly `through`, replacing what it said before) and makes the file durable.
    pub fn finish_import(&self, through: u64) -> Result<(), IndexError> {
        self.guarded_write("finish import", || self.finish_import_unguarded(through))
    }

    fn finish_import_unguarded(&self, through: u64) -> Result<(), IndexError> {
        let err = |e: &dyn std::fmt::Display| self.error("finish import", e);
        let mut tx = self.db().begin_write().map_err(|e| err(&e))?;
        tx.set_durability(Durability::Immediate)
            .map_err(|e| err(&e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| err(&e))?;
            meta.insert(META_INDEXED_THROUGH, through)
                .map_err(|e| err(&e))?;
        }
        tx.commit().map_err(|e| err(&e))
    }

    /// Deletes entries no kept snapshot generation can read: for each queue key below
    /// `key_limit` (keys from it on belong to queues made after the newest generation), those
    /// below `floors[key]`, or all of them when the key has no floor (a queue neither generation
    /// has); likewise the queue positions' events; and the lookups and record events of records
    /// below `log_floor` (whole lookup buckets). Runs in bounded transactions so apply's writes
    /// are not held up long.
    pub fn collect_garbage(
        &self,
        floors: &HashMap<u32, u64>,
        key_limit: u32,
        log_floor: u64,
    ) -> Result<Collected, IndexError> {
        self.guarded_write("collect garbage", || {
            self.collect_garbage_unguarded(floors, key_limit, log_floor)
        })
    }

    fn collect_garbage_unguarded(
        &self,
        floors: &HashMap<u32, u64>,
        key_limit: u32,
        log_floor: u64,
    ) -> Result<Collected, IndexError> {
        let entries = self.collect_table(ENTRIES, &ENTRY_KEYS, floors, key_limit)?;
        self.collect_table(TAGS, &TAG_KEYS, floors, key_limit)?;
        self.collect_table(QUEUE_EVENTS, &QUEUE_EVENT_KEYS, floors, key_limit)?;
        self.collect_history_below(log_floor)?;
        Ok(Collected { entries })
    }

    /// Deletes, in one table, the keys of each group (a queue, or a queue's tag) below its
    /// queue's floor, group by group in bounded transactions; returns how many went.
    fn collect_table<const N: usize, V: redb::Value + 'static>(
        &self,
        definition: TableDefinition<[u8; N], V>,
        keys: &KeyLayout<N>,
        floors: &HashMap<u32, u64>,
        key_limit: u32,
    ) -> Result<u64, IndexError> {
        let err = |e: &dyn std::fmt::Display| self.error("garbage collection", e);
        let mut removed_total = 0u64;
        let mut next_group: u64 = 0;
        loop {
            let mut tx = self.db().begin_write().map_err(|e| err(&e))?;
            tx.set_durability(Durability::None).map_err(|e| err(&e))?;
            let mut work = 0u64;
            let mut done = false;
            {
                let mut table = tx.open_table(definition).map_err(|e| err(&e))?;
                while work < COLLECT_BATCH {
                    let first = table
                        .range((keys.encode)(next_group, 0)..)
                        .map_err(|e| err(&e))?
                        .next()
                        .transpose()
                        .map_err(|e| err(&e))?
                        .map(|(k, _)| (keys.decode)(&k.value()));
                    let Some((group, first_offset)) =
                        first.filter(|(g, _)| (keys.queue)(*g) < key_limit)
                    else {
                        done = true;
                        break;
                    };
                    let floor = floors
                        .get(&(keys.queue)(group))
                        .copied()
                        .unwrap_or(u64::MAX);
                    if first_offset < floor {
                        let end = floor.min(first_offset + COLLECT_BATCH);
                        let mut removed = 0u64;
                        table
                            .retain_in(
                                (keys.encode)(group, first_offset)..(keys.encode)(group, end),
                                |_, _| {
                                    removed += 1;
                                    false
                                },
                            )
                            .map_err(|e| err(&e))?;
                        work += removed.max(1);
                        removed_total += removed;
                        if end < floor {
                            continue; // more of this group
                        }
                    }
                    next_group = group + 1;
                    work += 1;
                }
            }
            tx.commit().map_err(|e| err(&e))?;
            if done || (keys.queue)(next_group) >= key_limit {
                return Ok(removed_total);
            }
        }
    }

    /// Entries in the file (tests).
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        use redb::ReadableTableMetadata;
        let tx = self.db().begin_read().expect("read");
        let table = tx.open_table(ENTRIES).expect("table");
        table.len().expect("len")
    }

    /// Tag keys in the file (tests).
    #[cfg(test)]
    pub fn tag_count(&self) -> u64 {
        use redb::ReadableTableMetadata;
        let tx = self.db().begin_read().expect("read");
        let table = tx.open_table(TAGS).expect("table");
        table.len().expect("len")
    }
}

#[cfg(test)]
mod tests;

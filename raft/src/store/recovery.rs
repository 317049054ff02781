//! Opening a log: the small state files, then the segments. A sealed segment costs two small
//! reads (its header and its footer's trailer); only the last, active segment is scanned
//! record by record, and a torn tail there is cut off. Corruption anywhere else is an error.

use std::path::Path;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;

use super::{
    Inner, LOCK_FILE, LogIndex, LogStoreConfig, SegmentLogStore, SegmentMeta, read, validate,
};
use crate::cache::EntryCache;
use crate::codec::{SEGMENT_HEADER_LEN, decode_record};
use crate::entry::{LogTypes, StoredLogId, StoredVote, decode_entry};
use crate::segment::{
    Preallocation, SegmentFile, open_segment, parse_segment_file_name, scan_records,
};
use crate::vfs::{Vfs, VfsLock};
use crate::writer::{LogWriter, StateFiles, Writer, WriterStatus};
use crate::{FlushMode, LogError, snapshot_file};
use openraft::alias::{LogIdOf, VoteOf};

pub(super) fn open_blocking<C: LogTypes>(
    cfg: LogStoreConfig,
    snapshot: Option<LogIdOf<C>>,
    writer: Option<LogWriter<C>>,
) -> Result<SegmentLogStore<C>, LogError> {
    validate(&cfg)?;
    let dir = cfg.dir.clone();
    let vfs = cfg.vfs.clone();
    crate::vfs::create_dir_all(vfs.as_ref(), &dir)
        .map_err(|e| LogError::io("creating", &dir, e))?;
    let dir_lock = lock_dir(vfs.as_ref(), &dir)?;
    let files = StateFiles::new(vfs.clone(), dir.clone());

    let vote: Option<VoteOf<C>> =
        read_state::<StoredVote>(vfs.as_ref(), &files.vote)?.map(StoredVote::to_vote::<C>);
    // The committed id is written without fsync (losing it only makes Raft re-learn it), so
    // after a power loss the file may fail its checksum: treat that as absent.
    let mut committed: Option<LogIdOf<C>> =
        match read_state::<StoredLogId>(vfs.as_ref(), &files.committed) {
            Ok(c) => c.map(StoredLogId::to_log_id),
            Err(err @ LogError::Corrupt { .. }) => {
                tracing::warn!(error = %err, "ignoring an unreadable committed log id");
                None
            }
            Err(err) => return Err(err),
        };
    let mut last_purged: Option<LogIdOf<C>> =
        read_state::<StoredLogId>(vfs.as_ref(), &files.purged)?.map(StoredLogId::to_log_id);

    let (segments, last_log_id) = recover_segments::<C>(vfs.as_ref(), &dir)?;

    let last_index = last_log_id
        .as_ref()
        .or(last_purged.as_ref())
        .map(|id| id.index);
    if let Some(c) = &committed
        && last_index.is_none_or(|last| c.index > last)
    {
        // In `Sync` mode the committed id is only written after the fsync that made those
        // entries durable, so recovering less than it means durable records were lost to
        // corruption, which recovery must not paper over.
        if cfg.flush == FlushMode::Sync {
            return Err(LogError::CommittedLost {
                dir: dir.clone(),
                committed: c.index,
                recovered: last_index,
            });
        }
        // In `Async` mode a power loss can legitimately lose the unsynced tail; Raft
        // re-learns the commit point.
        tracing::warn!(
            committed = c.index,
            last_index,
            "saved committed log id is beyond the recovered log; ignoring it"
        );
        committed = None;
    }

    if let Some(snap) = &snapshot {
        if last_index.is_none_or(|last| last < snap.index) {
            return Err(LogError::BehindSnapshot {
                dir: dir.clone(),
                snapshot: snap.index,
                recovered: last_index,
            });
        }
        let first_physical = segments.first().map(SegmentMeta::first_index);
        if let Some(first) = first_physical
            && first > snap.index + 1
        {
            return Err(LogError::SnapshotGap {
                dir: dir.clone(),
                snapshot: snap.index,
                first,
            });
        }
        if last_purged.as_ref().is_some_and(|p| p.index > snap.index) {
            if first_physical.is_none() {
                return Err(LogError::SnapshotGap {
                    dir: dir.clone(),
                    snapshot: snap.index,
                    first: last_index.map_or(0, |l| l + 1),
                });
            }
            tracing::warn!(
                dir = %dir.display(),
                purged = ?last_purged.as_ref().map(|p| p.index),
                snapshot = snap.index,
                "lowering the purge point to the snapshot in use (an older generation)"
            );
            let state = postcard::to_allocvec(&Some(StoredLogId::of(snap)))?;
            snapshot_file::write_atomic(vfs.as_ref(), &files.purged, &state)
                .map_err(|e| LogError::io("saving purged log id", &files.purged, e))?;
            last_purged = Some(*snap);
        }
        // A replica that installed a snapshot from another member restored the history below
        // it (ADR 0014) and may have stopped before openraft saved the purge point up to the
        // snapshot: the log then starts past the purge point, and openraft would look for the
        // entries in between. The snapshot covers them; the purge point comes up to it.
        if let Some(first) = first_physical
            && last_purged.as_ref().map_or(0, |p| p.index + 1) < first
        {
            tracing::info!(
                dir = %dir.display(),
                purged = ?last_purged.as_ref().map(|p| p.index),
                first,
                snapshot = snap.index,
                "raising the purge point to the snapshot: the log starts past it"
            );
            let state = postcard::to_allocvec(&Some(StoredLogId::of(snap)))?;
            snapshot_file::write_atomic(vfs.as_ref(), &files.purged, &state)
                .map_err(|e| LogError::io("saving purged log id", &files.purged, e))?;
            last_purged = Some(*snap);
        }
        if committed.as_ref().is_some_and(|c| c.index < snap.index) {
            committed = Some(*snap);
        }
    }

    let status = Arc::new(WriterStatus::default());
    let preallocation = Preallocation {
        chunk: cfg.preallocate_bytes,
        segment_bytes: cfg.segment_bytes,
    };
    let writer = match writer {
        Some(shared) => shared,
        None => LogWriter::spawn("vela-raft-writer")?,
    };
    let tx = writer.attach(Writer::<C>::new(
        files.clone(),
        cfg.flush,
        preallocation,
        status.clone(),
    ))?;

    tracing::info!(
        dir = %dir.display(),
        segments = segments.len(),
        first_index = segments.first().map(SegmentMeta::first_index),
        last_index = last_log_id.as_ref().map(|id| id.index),
        "opened raft log"
    );
    let state = LogIndex {
        segments,
        last_log_id,
        last_purged,
        vote,
        committed,
        replay_floor: None,
        read_pins: Default::default(),
        next_pin: 0,
        truncations: 0,
        pinned: 0,
        cache: EntryCache::new(cfg.cache_bytes),
        next_seq: 1,
        tx: Some(tx),
    };
    Ok(SegmentLogStore {
        inner: Arc::new(Inner {
            footers: read::FooterCache::new(read::FOOTER_CACHE_OFFSETS),
            cold: read::ColdEntries::new(read::COLD_ENTRY_BYTES),
            cfg,
            state: RwLock::new(state),
            status,
            writer: Mutex::new(Some(writer)),
            dir_lock: Mutex::new(Some(dir_lock)),
            damage_seen: Mutex::new(None),
        }),
    })
}

/// Takes the advisory lock that keeps two stores off one directory.
fn lock_dir(vfs: &dyn Vfs, dir: &Path) -> Result<VfsLock, LogError> {
    let path = dir.join(LOCK_FILE);
    vfs.try_lock(&path)
        .map_err(|e| LogError::io("locking", &path, e))?
        .ok_or_else(|| LogError::Locked {
            dir: dir.to_path_buf(),
        })
}

fn read_state<T: DeserializeOwned>(vfs: &dyn Vfs, path: &Path) -> Result<Option<T>, LogError> {
    match snapshot_file::read(vfs, path)? {
        None => Ok(None),
        Some(bytes) => {
            let (value, rest) = postcard::take_from_bytes::<Option<T>>(&bytes)
                .map_err(|e| LogError::corrupt(path, 0, e))?;
            if !rest.is_empty() {
                return Err(LogError::corrupt(
                    path,
                    0,
                    format!("{} trailing bytes", rest.len()),
                ));
            }
            Ok(value)
        }
    }
}

/// Opens every segment in `dir`, oldest first, and checks they form one run of indexes.
fn recover_segments<C: LogTypes>(
    vfs: &dyn Vfs,
    dir: &Path,
) -> Result<(Vec<SegmentMeta>, Option<LogIdOf<C>>), LogError> {
    let mut listing = Vec::new();
    for name in vfs
        .list_files(dir)
        .map_err(|e| LogError::io("listing", dir, e))?
    {
        if let Some(first) = parse_segment_file_name(&name) {
            listing.push((first, dir.join(name)));
        }
    }
    listing.sort();

    let decode = |head, payload: &[u8]| decode_entry::<C>(head, payload).map(|_| ());
    let mut segments: Vec<SegmentMeta> = Vec::with_capacity(listing.len());
    // Head of the last record of the newest segment scanned, by that segment's first index.
    let mut scanned_head = None;
    let count = listing.len();
    for (i, (first, path)) in listing.into_iter().enumerate() {
        let is_last = i + 1 == count;
        let opened = open_segment(vfs, &path)?;
        let header = match opened.header {
            Ok(header) => header,
            // The writer makes a new segment's header durable before its name, so a header
            // that does not verify is either a crash during creation (the file holds no more
            // than a header: nothing to lose) or damage.
            Err(_) if is_last && opened.len <= SEGMENT_HEADER_LEN as u64 => {
                tracing::warn!(segment = %path.display(), bytes = opened.len, "removing last log segment with a torn header");
                remove_leftover(vfs, &path, "removing torn segment")?;
                continue;
            }
            Err(reason) => return Err(LogError::corrupt(&path, 0, reason)),
        };
        if header.first_index != first {
            return Err(LogError::corrupt(
                &path,
                16,
                format!(
                    "header declares first index {}, file name says {first}",
                    header.first_index
                ),
            ));
        }
        let file = Arc::new(SegmentFile::existing(
            path.clone(),
            first,
            opened.file.clone(),
        ));
        // The newest segment's footer may have reached the disk before the records it indexes
        // (write-back order is arbitrary until the seal's fsync). Older segments were sealed and
        // synced before the next one was created, so their footers vouch for their records.
        let trusted_footer = match opened.footer {
            Some(trailer) if is_last => {
                let scanned = scan_records(
                    opened.file.as_ref(),
                    &path,
                    first,
                    trailer.records_end,
                    &decode,
                )?;
                let table = SegmentFile::existing(path.clone(), first, opened.file.clone())
                    .read_footer_offsets(&trailer);
                let whole = scanned.stopped.is_none()
                    && scanned.end == trailer.records_end
                    && table.is_ok_and(|t| t == scanned.offsets);
                if whole {
                    scanned_head = scanned.last.map(|h| (first, h));
                }
                if !whole {
                    tracing::warn!(segment = %path.display(), "newest segment's footer is ahead of its records; treating it as unsealed");
                }
                whole.then_some(trailer)
            }
            other => other,
        };
        let meta = if let Some(trailer) = trusted_footer {
            // Sealed: the verified trailer says how many records and where they end; their
            // offsets stay in the footer until a read needs them.
            SegmentMeta {
                file,
                count: u64::from(trailer.count),
                records_end: trailer.records_end,
                offsets: None,
                pinned_until: None,
                footer: Some(trailer),
                sealed: true,
                damage: None,
                first_append_ms: trailer.first_append_ms,
                last_append_ms: trailer.last_append_ms,
            }
        } else {
            let scanned = scan_records(opened.file.as_ref(), &path, first, opened.len, &decode)?;
            if let Some(reason) = &scanned.stopped {
                if is_last {
                    // A torn tail, or the zeros written ahead of the records (ADR 0015): cut
                    // it, so what follows the records is always written afresh. Not synced
                    // here: the last segment is synced below, and until then a power cut only
                    // brings back the same tail.
                    if scanned.zeroed_tail {
                        tracing::debug!(
                            segment = %path.display(),
                            zeroed_bytes = opened.len - scanned.end,
                            "cut the zeros written ahead of the last log segment's records"
                        );
                    } else {
                        tracing::warn!(
                            segment = %path.display(),
                            dropped_bytes = opened.len - scanned.end,
                            kept_records = scanned.offsets.len(),
                            reason = reason.as_str(),
                            "truncated torn tail of the last log segment"
                        );
                    }
                    opened
                        .file
                        .set_len(scanned.end)
                        .map_err(|e| LogError::io("truncating torn segment tail", &path, e))?;
                } else {
                    // A sealed segment without a readable footer. Its records may still be
                    // whole: the next segment must continue right after them (checked below).
                    tracing::error!(
                        segment = %path.display(),
                        records = scanned.offsets.len(),
                        reason = reason.as_str(),
                        "sealed log segment has no valid footer; serving the records a scan verified"
                    );
                }
            }
            if scanned.offsets.is_empty() {
                if is_last {
                    tracing::info!(segment = %path.display(), "removing last log segment without records");
                    remove_leftover(vfs, &path, "removing empty segment")?;
                    continue;
                }
                return Err(LogError::corrupt(
                    &path,
                    SEGMENT_HEADER_LEN as u64,
                    "sealed segment holds no records",
                ));
            }
            scanned_head = scanned.last.map(|h| (first, h));
            let modified = opened
                .file
                .modified()
                .ok()
                .and_then(|m| m.duration_since(std::time::SystemTime::UNIX_EPOCH).ok())
                .map_or(header.created_ms, |d| {
                    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
                });
            SegmentMeta {
                file,
                count: scanned.offsets.len() as u64,
                records_end: scanned.end,
                offsets: Some(scanned.offsets),
                pinned_until: None,
                footer: None,
                sealed: !is_last,
                damage: (!is_last)
                    .then(|| scanned.stopped.clone())
                    .flatten()
                    .map(|reason| format!("no valid footer ({reason})")),
                first_append_ms: header.created_ms,
                last_append_ms: modified,
            }
        };
        if let Some(prev) = segments.last() {
            let expected = prev.last_index().map_or(prev.first_index(), |l| l + 1);
            if first != expected {
                return Err(LogError::Gap {
                    path: path.clone(),
                    expected,
                    found: first,
                });
            }
        }
        segments.push(meta);
    }
    let mut last_head = None;
    if let Some(last) = segments.last() {
        // A process crash leaves written-but-unsynced bytes in the page cache; make what was
        // recovered (and the cut of a torn tail) durable before serving it.
        last.file
            .sync_data()
            .map_err(|e| LogError::io("syncing recovered segment", &last.file.path, e))?;
        last_head = match (scanned_head, last.footer) {
            (Some((first, head)), _) if first == last.first_index() => Some(head),
            (_, Some(trailer)) => Some(read_last_head(&last.file, &trailer)?),
            _ => None,
        };
    }
    let last_log_id = last_head.map(|h| {
        StoredLogId {
            term: h.term,
            node: h.node,
            index: h.index,
        }
        .to_log_id()
    });
    Ok((segments, last_log_id))
}

/// The head of a sealed segment's last record, found through its footer.
fn read_last_head(
    file: &SegmentFile,
    trailer: &crate::codec::FooterTrailer,
) -> Result<crate::codec::RecordHead, LogError> {
    let offsets = file.read_footer_offsets(trailer)?;
    let last = u64::from(*offsets.last().ok_or_else(|| {
        LogError::corrupt(&file.path, trailer.records_end, "footer lists no records")
    })?);
    let bytes = file
        .read_at((trailer.records_end - last) as usize, last)
        .map_err(|e| LogError::io("reading segment", &file.path, e))?;
    let (head, _, used) =
        decode_record(&bytes).map_err(|e| LogError::corrupt(&file.path, last, e))?;
    let expected = file.first_index + u64::from(trailer.count) - 1;
    if used as u64 != trailer.records_end - last || head.index != expected {
        return Err(LogError::corrupt(
            &file.path,
            last,
            format!(
                "last record holds index {} in {used} bytes, the footer says index {expected}",
                head.index
            ),
        ));
    }
    Ok(head)
}

/// Removes a last segment that holds nothing (a crash during its creation). The removal is not
/// synced on its own: if a power cut undoes it, the next open finds the same leftover and
/// removes it again, and the next segment the writer creates syncs the directory anyway.
fn remove_leftover(vfs: &dyn Vfs, path: &Path, op: &'static str) -> Result<(), LogError> {
    vfs.remove_file(path).map_err(|e| LogError::io(op, path, e))
}

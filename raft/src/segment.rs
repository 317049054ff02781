//! One segment file: its name, its open handle for positional reads and writes, and the recovery
//! scan that rebuilds the in-memory offset index from the file alone.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;

use crate::LogError;
use crate::codec::{
    SEGMENT_HEADER_LEN, decode_payload, decode_record, decode_segment_header, encode_segment_header,
};
use crate::vfs::{Vfs, VfsFile};

const SEGMENT_SUFFIX: &str = ".seg";
const INDEX_DIGITS: usize = 20;

/// `00000000000000000042.seg` for a segment whose first record has index 42.
pub(crate) fn segment_file_name(first_index: u64) -> String {
    format!(
        "{first_index:0width$}{SEGMENT_SUFFIX}",
        width = INDEX_DIGITS
    )
}

/// Inverse of [`segment_file_name`]; `None` for any other file name.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != INDEX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A segment file shared by the planner, the readers and the writer thread.
///
/// The writer creates new files, so the handle is filled in once the file exists; readers only
/// touch files whose records were already written, so they always find it set.
pub(crate) struct SegmentFile {
    pub(crate) path: PathBuf,
    pub(crate) first_index: u64,
    file: OnceLock<Arc<dyn VfsFile>>,
}

impl SegmentFile {
    /// A segment the writer has yet to create.
    pub(crate) fn planned(dir: &Path, first_index: u64) -> Self {
        SegmentFile {
            path: dir.join(segment_file_name(first_index)),
            first_index,
            file: OnceLock::new(),
        }
    }

    /// A segment found on disk at open.
    pub(crate) fn existing(path: PathBuf, first_index: u64, file: Arc<dyn VfsFile>) -> Self {
        SegmentFile {
            path,
            first_index,
            file: OnceLock::from(file),
        }
    }

    /// Creates the file and writes its header (writer thread only). Fails if the file exists: a
    /// leftover with the same name would mean the in-memory index and the disk disagree.
    pub(crate) fn create_on_disk(&self, vfs: &dyn Vfs) -> io::Result<()> {
        let file = vfs.create_new(&self.path)?;
        file.write_all_at(&encode_segment_header(self.first_index), 0)?;
        self.file
            .set(file)
            .map_err(|_| io::Error::other("segment file was already created"))
    }

    pub(crate) fn handle(&self) -> io::Result<&Arc<dyn VfsFile>> {
        self.file.get().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("segment {} is not created yet", self.path.display()),
            )
        })
    }

    pub(crate) fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.handle()?.write_all_at(bytes, offset)
    }

    pub(crate) fn read_at(&self, len: usize, offset: u64) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.handle()?.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    #[track_caller]
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        self.handle()?.sync_data()
    }

    pub(crate) fn truncate(&self, len: u64) -> io::Result<()> {
        let file = self.handle()?;
        file.set_len(len)?;
        file.sync_data()
    }
}

/// What the recovery scan learned about one segment.
pub(crate) struct ScannedSegment<E> {
    /// Byte offset of each record; record `i` holds index `first_index + i`.
    pub(crate) offsets: Vec<u64>,
    /// Length of the valid prefix of the file.
    pub(crate) end: u64,
    pub(crate) last_entry: Option<E>,
    /// Bytes beyond `end` that were dropped from a torn tail (last segment only).
    pub(crate) dropped_bytes: u64,
    /// Why the tail was dropped.
    pub(crate) tail_reason: Option<String>,
}

/// Outcome of scanning a segment file.
pub(crate) enum Scan<E> {
    Segment(SegmentFile, ScannedSegment<E>),
    /// The last segment's header itself was torn (crash right after creation): nothing to keep.
    TornHeader {
        path: PathBuf,
        len: u64,
    },
}

/// Scans one segment: verifies the header, every record's framing and checksum, that every payload
/// decodes, and that indexes run `first_index, first_index + 1, ...`. In the last segment a bad
/// record ends the scan and the file is cut back to the last good record; in a sealed segment it is
/// an error.
pub(crate) fn scan_segment<E, F>(
    vfs: &dyn Vfs,
    path: PathBuf,
    first_index: u64,
    is_last: bool,
    index_of: F,
) -> Result<Scan<E>, LogError>
where
    E: DeserializeOwned,
    F: Fn(&E) -> u64,
{
    let file = vfs
        .open(&path)
        .map_err(|e| LogError::io("opening segment", &path, e))?;
    let len = file
        .len()
        .map_err(|e| LogError::io("inspecting segment", &path, e))?;
    let mut data = vec![
        0u8;
        usize::try_from(len).map_err(|e| LogError::io(
            "reading segment",
            &path,
            std::io::Error::other(e)
        ))?
    ];
    file.read_exact_at(&mut data, 0)
        .map_err(|e| LogError::io("reading segment", &path, e))?;

    let declared = match decode_segment_header(&data) {
        Ok(declared) => declared,
        // Creation writes the header and nothing else; a last segment that holds no more than a
        // bad header died during creation and has no records to lose.
        Err(_) if is_last && data.len() <= SEGMENT_HEADER_LEN => {
            return Ok(Scan::TornHeader { path, len });
        }
        Err(e) => return Err(LogError::corrupt(&path, 0, e)),
    };
    if declared != first_index {
        return Err(LogError::corrupt(
            &path,
            16,
            format!("header declares first index {declared}, file name says {first_index}"),
        ));
    }

    let mut offsets = Vec::new();
    let mut last_entry = None;
    let mut pos = SEGMENT_HEADER_LEN;
    let mut tail_reason = None;
    while pos < data.len() {
        let decoded = decode_record(&data[pos..])
            .map_err(|e| e.to_string())
            .and_then(|(payload, used)| {
                decode_payload::<E>(payload)
                    .map(|entry| (entry, used))
                    .map_err(|e| e.to_string())
            });
        match decoded {
            Ok((entry, used)) => {
                let expected = first_index + offsets.len() as u64;
                let found = index_of(&entry);
                if found != expected {
                    // A checksummed record with the wrong index is not a torn write: never guess.
                    return Err(LogError::corrupt(
                        &path,
                        pos as u64,
                        format!("record holds index {found}, expected {expected}"),
                    ));
                }
                offsets.push(pos as u64);
                last_entry = Some(entry);
                pos += used;
            }
            Err(reason) if is_last => {
                tail_reason = Some(reason);
                break;
            }
            Err(reason) => return Err(LogError::corrupt(&path, pos as u64, reason)),
        }
    }

    let end = pos as u64;
    let dropped_bytes = len - end;
    if dropped_bytes > 0 {
        // Not synced here: recovery syncs the last segment once it is done with it, and until
        // then a power cut only brings back the same torn tail, which is cut again.
        file.set_len(end)
            .map_err(|e| LogError::io("truncating torn segment tail", &path, e))?;
    }
    Ok(Scan::Segment(
        SegmentFile::existing(path, first_index, file),
        ScannedSegment {
            offsets,
            end,
            last_entry,
            dropped_bytes,
            tail_reason,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_reject_strangers() {
        assert_eq!(segment_file_name(1), "00000000000000000001.seg");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(
            parse_segment_file_name("00000000000000000001.seg.tmp"),
            None
        );
        assert_eq!(parse_segment_file_name("1.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000x.seg"), None);
        assert_eq!(parse_segment_file_name("vote.bin"), None);
    }
}

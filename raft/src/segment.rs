//! One segment file: its name, its open handle for positional reads and writes, the scan that
//! verifies records and finds where each one starts, and the reading of a sealed segment's
//! footer (ADR 0007).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::LogError;
use crate::codec::{
    FOOTER_TRAILER_LEN, FooterTrailer, RecordHead, SEGMENT_HEADER_LEN, SegmentHeader,
    decode_footer_offsets, decode_footer_trailer, decode_record, decode_segment_header,
    encode_segment_header,
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
    /// Where the zeros the writer wrote ahead of the records end (writer thread only; 0 until
    /// its first append: see [`SegmentFile::write_preallocated`]).
    allocated: AtomicU64,
}

impl SegmentFile {
    /// A segment the writer has yet to create.
    pub(crate) fn planned(dir: &Path, first_index: u64) -> Self {
        SegmentFile {
            path: dir.join(segment_file_name(first_index)),
            first_index,
            file: OnceLock::new(),
            allocated: AtomicU64::new(0),
        }
    }

    /// A segment found on disk at open.
    pub(crate) fn existing(path: PathBuf, first_index: u64, file: Arc<dyn VfsFile>) -> Self {
        SegmentFile {
            path,
            first_index,
            file: OnceLock::from(file),
            allocated: AtomicU64::new(0),
        }
    }

    /// Creates the file and writes its header (writer thread only). Fails if the file exists: a
    /// leftover with the same name would mean the in-memory index and the disk disagree.
    pub(crate) fn create_on_disk(&self, vfs: &dyn Vfs, created_ms: i64) -> io::Result<()> {
        let file = vfs.create_new(&self.path)?;
        file.write_all_at(&encode_segment_header(self.first_index, created_ms), 0)?;
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

    pub(crate) fn read_at(&self, len: usize, offset: u64) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.handle()?.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    #[track_caller]
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        self.handle()?.sync_data()
    }

    /// Writes `bytes` at `offset` and, when they reach past the zeros written ahead, writes
    /// zeros from their end to the next multiple of `plan.chunk` (never past
    /// `plan.segment_bytes`). An fdatasync then flushes only data while appends fill the
    /// zeroed space: the file's size and block map do not change (ADR 0015). The zeros are
    /// never written over a record: they start where this write ends, and records are written
    /// in order.
    pub(crate) fn write_preallocated(
        &self,
        bytes: &[u8],
        offset: u64,
        plan: Preallocation,
    ) -> io::Result<()> {
        let file = self.handle()?;
        file.write_all_at(bytes, offset)?;
        let end = offset + bytes.len() as u64;
        if plan.chunk == 0 || end <= self.allocated.load(Ordering::Relaxed) {
            return Ok(());
        }
        let target = end
            .div_ceil(plan.chunk)
            .saturating_mul(plan.chunk)
            .min(plan.segment_bytes.max(end));
        if target > end {
            let zeros = vec![0u8; usize::try_from(target - end).unwrap_or(0)];
            file.write_all_at(&zeros, end)?;
        }
        self.allocated.store(target, Ordering::Relaxed);
        Ok(())
    }

    /// Writes a sealed segment's footer at `at` and cuts the zeros written ahead after it, so
    /// the file ends with its footer trailer, as an open expects.
    pub(crate) fn write_footer(&self, footer: &[u8], at: u64) -> io::Result<()> {
        let file = self.handle()?;
        file.write_all_at(footer, at)?;
        let end = at + footer.len() as u64;
        if self.allocated.load(Ordering::Relaxed) > end {
            file.set_len(end)?;
            self.allocated.store(end, Ordering::Relaxed);
        }
        Ok(())
    }

    pub(crate) fn truncate(&self, len: u64) -> io::Result<()> {
        let file = self.handle()?;
        file.set_len(len)?;
        self.allocated.store(len, Ordering::Relaxed);
        file.sync_data()
    }

    /// The record offsets of a sealed segment, from its footer (verified).
    pub(crate) fn read_footer_offsets(
        &self,
        trailer: &FooterTrailer,
    ) -> Result<Vec<u32>, LogError> {
        let table = self
            .read_at((u64::from(trailer.count) * 4) as usize, trailer.records_end)
            .map_err(|e| LogError::io("reading segment footer", &self.path, e))?;
        decode_footer_offsets(&table, trailer)
            .map_err(|e| LogError::corrupt(&self.path, trailer.records_end, e))
    }
}

/// What the start of a segment file says about it.
pub(crate) struct Opened {
    pub(crate) file: Arc<dyn VfsFile>,
    pub(crate) len: u64,
    /// `Err` when the header does not verify (its bytes may be torn or damaged).
    pub(crate) header: Result<SegmentHeader, String>,
    /// The footer trailer, if the file ends with a valid one (a sealed segment).
    pub(crate) footer: Option<FooterTrailer>,
}

/// Opens a segment file and reads its header and, if there is one, its footer trailer: two
/// small positioned reads, whatever the segment's size.
pub(crate) fn open_segment(vfs: &dyn Vfs, path: &Path) -> Result<Opened, LogError> {
    let file = vfs
        .open(path)
        .map_err(|e| LogError::io("opening segment", path, e))?;
    let len = file
        .len()
        .map_err(|e| LogError::io("inspecting segment", path, e))?;
    let head_len = usize::try_from(len.min(SEGMENT_HEADER_LEN as u64)).unwrap_or(0);
    let mut head = vec![0u8; head_len];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| LogError::io("reading segment header", path, e))?;
    let header = decode_segment_header(&head).map_err(|e| e.to_string());
    let mut footer = None;
    if len >= (SEGMENT_HEADER_LEN + FOOTER_TRAILER_LEN) as u64 {
        let mut tail = vec![0u8; FOOTER_TRAILER_LEN];
        file.read_exact_at(&mut tail, len - FOOTER_TRAILER_LEN as u64)
            .map_err(|e| LogError::io("reading segment footer", path, e))?;
        footer = decode_footer_trailer(&tail, len).ok();
    }
    Ok(Opened {
        file,
        len,
        header,
        footer,
    })
}

/// Checks that a record's payload decodes as what its kind says.
pub(crate) type DecodeCheck<'a> = &'a dyn Fn(RecordHead, &[u8]) -> Result<(), String>;

/// How far ahead of its records the writer zeroes a segment (ADR 0015).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Preallocation {
    /// Zeros are written up to the next multiple of this; 0 writes none.
    pub(crate) chunk: u64,
    /// Nor past the size at which a segment is sealed.
    pub(crate) segment_bytes: u64,
}

/// What a scan of a segment's records found.
pub(crate) struct Scanned {
    /// Byte offset of each valid record, in order.
    pub(crate) offsets: Vec<u32>,
    /// Head of the last valid record.
    pub(crate) last: Option<RecordHead>,
    /// Where the valid records end.
    pub(crate) end: u64,
    /// Why the scan stopped before `limit`, if it did.
    pub(crate) stopped: Option<String>,
    /// It stopped at zeros the writer wrote ahead of its records: the tail was never written.
    pub(crate) zeroed_tail: bool,
}

/// Verifies the records of a segment from just after its header up to `limit` (file length, or
/// where a footer begins): framing, checksum, kind, and that indexes run `first_index,
/// first_index + 1, ...`. Stops at the first record that fails. `decode` checks that the
/// payload decodes as what its kind says. Reads in chunks, so memory stays bounded however
/// large the segment.
pub(crate) fn scan_records(
    file: &dyn VfsFile,
    path: &Path,
    first_index: u64,
    limit: u64,
    decode: DecodeCheck<'_>,
) -> Result<Scanned, LogError> {
    const CHUNK: u64 = 4 * 1024 * 1024;
    let mut scanned = Scanned {
        offsets: Vec::new(),
        last: None,
        end: SEGMENT_HEADER_LEN as u64,
        stopped: None,
        zeroed_tail: false,
    };
    let mut buf: Vec<u8> = Vec::new();
    // File offset of buf[0].
    let mut buf_at = SEGMENT_HEADER_LEN as u64;
    let mut read_to = buf_at;
    loop {
        let pos = (scanned.end - buf_at) as usize;
        let outcome = decode_record(&buf[pos..]);
        match outcome {
            Ok((head, payload, used)) => {
                let expected = first_index + scanned.offsets.len() as u64;
                if head.index != expected {
                    scanned.stopped = Some(format!(
                        "record holds index {}, expected {expected}",
                        head.index
                    ));
                    return Ok(scanned);
                }
                if let Err(reason) = decode(head, payload) {
                    scanned.stopped = Some(reason);
                    return Ok(scanned);
                }
                scanned
                    .offsets
                    .push(u32::try_from(scanned.end).unwrap_or(u32::MAX));
                scanned.last = Some(head);
                scanned.end += used as u64;
            }
            Err(crate::codec::RecordError::Truncated { needed, .. }) if read_to < limit => {
                // Keep the unread part of the buffer and read on.
                buf.drain(..pos);
                buf_at = scanned.end;
                let want = (needed as u64).max(CHUNK).min(limit - read_to);
                let mut more = vec![0u8; usize::try_from(want).unwrap_or(usize::MAX)];
                file.read_exact_at(&mut more, read_to)
                    .map_err(|e| LogError::io("reading segment", path, e))?;
                buf.extend_from_slice(&more);
                read_to += want;
            }
            Err(err) => {
                if scanned.end < limit {
                    scanned.zeroed_tail = buf[pos..]
                        .iter()
                        .take(crate::codec::RECORD_FRAME_LEN)
                        .all(|&b| b == 0);
                    scanned.stopped = Some(err.to_string());
                }
                return Ok(scanned);
            }
        }
    }
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

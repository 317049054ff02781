//! Reading a sealed segment that lives somewhere else (object storage) by ranges: its header,
//! its footer (trailer and offsets table) and then just the records a reader wants (ADR 0007:
//! a sealed segment is self-describing). Every piece is verified as it is decoded: a damaged
//! or mismatched byte range is an error, never an entry.

use std::ops::Range;

use crate::codec::{
    FOOTER_TRAILER_LEN, FooterTrailer, SEGMENT_HEADER_LEN, decode_footer_offsets,
    decode_footer_trailer, decode_record, decode_segment_header,
};
use crate::entry::{LogTypes, decode_entry};

/// Where a sealed segment's records are, from its header and footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedIndex {
    /// Index of the first record.
    pub first_index: u64,
    /// The footer's trailer (record count, where the records end, append times).
    pub trailer: FooterTrailer,
    /// Byte offset of each record.
    offsets: Vec<u32>,
}

/// The byte range of the header of a segment.
pub fn header_range() -> Range<u64> {
    0..SEGMENT_HEADER_LEN as u64
}

/// The byte range of the trailer of a sealed segment of `len` bytes (`None`: too short to be
/// one).
pub fn trailer_range(len: u64) -> Option<Range<u64>> {
    let start = len.checked_sub(FOOTER_TRAILER_LEN as u64)?;
    (start >= SEGMENT_HEADER_LEN as u64).then_some(start..len)
}

/// Checks the trailer of a sealed segment of `len` bytes and returns it with the byte range of
/// its offsets table.
pub fn decode_trailer(bytes: &[u8], len: u64) -> Result<(FooterTrailer, Range<u64>), String> {
    let trailer = decode_footer_trailer(bytes, len).map_err(|e| format!("footer trailer: {e}"))?;
    let table = trailer.records_end..trailer.records_end + u64::from(trailer.count) * 4;
    Ok((trailer, table))
}

impl SealedIndex {
    /// Builds the index from a segment's header bytes, its checked trailer and its offsets
    /// table bytes.
    pub fn new(header: &[u8], trailer: FooterTrailer, table: &[u8]) -> Result<Self, String> {
        let header = decode_segment_header(header).map_err(|e| format!("header: {e}"))?;
        let offsets =
            decode_footer_offsets(table, &trailer).map_err(|e| format!("offsets table: {e}"))?;
        Ok(Self {
            first_index: header.first_index,
            trailer,
            offsets,
        })
    }

    /// Index of the last record.
    pub fn last_index(&self) -> u64 {
        self.first_index + self.offsets.len() as u64 - 1
    }

    /// Bytes of memory the index holds.
    pub fn memory_size(&self) -> usize {
        self.offsets.len() * 4 + std::mem::size_of::<Self>()
    }

    /// The byte range that holds the records `from..=to` (clamped to the segment; `None` when
    /// the segment holds none of them).
    pub fn byte_range(&self, from: u64, to: u64) -> Option<Range<u64>> {
        let from = from.max(self.first_index);
        let to = to.min(self.last_index());
        if from > to {
            return None;
        }
        let start = u64::from(self.offsets[(from - self.first_index) as usize]);
        let end = match self.offsets.get((to - self.first_index) as usize + 1) {
            Some(next) => u64::from(*next),
            None => self.trailer.records_end,
        };
        Some(start..end)
    }

    /// Decodes the records in `bytes`, which are the segment's bytes starting at byte offset
    /// `at` (a range [`byte_range`](Self::byte_range) returned). Each record is checked
    /// (checksum, kind, and that it is the index its place in the footer says).
    pub fn decode<C: LogTypes>(&self, bytes: &[u8], at: u64) -> Result<Vec<C::Entry>, String> {
        let mut out = Vec::new();
        let first = self
            .offsets
            .binary_search(&u32::try_from(at).map_err(|_| format!("offset {at} is too large"))?)
            .map_err(|_| format!("byte offset {at} is not where a record starts"))?;
        let mut pos = 0usize;
        let mut expected = self.first_index + first as u64;
        while pos < bytes.len() {
            let (head, payload, used) = decode_record(&bytes[pos..])
                .map_err(|e| format!("record at byte {}: {e}", at + pos as u64))?;
            if head.index != expected {
                return Err(format!(
                    "record at byte {} is index {}, the footer says {expected}",
                    at + pos as u64,
                    head.index
                ));
            }
            out.push(decode_entry::<C>(head, payload)?);
            pos += used;
            expected += 1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_footer, encode_segment_header};
    use crate::entry::encode_entry;
    use crate::test_support::{TestConfig as TC, entry};

    /// A sealed segment of `count` records from index `first`, as bytes.
    fn segment(first: u64, count: u64) -> Vec<u8> {
        let mut out = encode_segment_header(first, 7).to_vec();
        let mut offsets = Vec::new();
        for i in first..first + count {
            offsets.push(out.len() as u32);
            encode_entry::<TC>(&entry(3, i, &format!("body {i}")), &mut out).unwrap();
        }
        let end = out.len() as u64;
        encode_footer(&offsets, end, 10, 20, &mut out);
        out
    }

    fn index_of(bytes: &[u8]) -> SealedIndex {
        let len = bytes.len() as u64;
        let t = trailer_range(len).unwrap();
        let (trailer, table) =
            decode_trailer(&bytes[t.start as usize..t.end as usize], len).unwrap();
        SealedIndex::new(
            &bytes[..SEGMENT_HEADER_LEN],
            trailer,
            &bytes[table.start as usize..table.end as usize],
        )
        .unwrap()
    }

    #[test]
    fn ranges_of_records_decode_to_their_entries() {
        let bytes = segment(100, 10);
        let index = index_of(&bytes);
        assert_eq!((index.first_index, index.last_index()), (100, 109));
        assert_eq!(index.trailer.last_append_ms, 20);
        let range = index.byte_range(103, 105).unwrap();
        let entries = index
            .decode::<TC>(
                &bytes[range.start as usize..range.end as usize],
                range.start,
            )
            .unwrap();
        let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, vec![103, 104, 105]);
        let all = index.byte_range(0, u64::MAX).unwrap();
        assert_eq!(all.end, index.trailer.records_end);
        assert_eq!(index.byte_range(110, 120), None);
    }

    #[test]
    fn damaged_or_misplaced_bytes_are_errors() {
        let mut bytes = segment(1, 4);
        let index = index_of(&bytes);
        let range = index.byte_range(2, 2).unwrap();
        let (s, e) = (range.start as usize, range.end as usize);
        // A range that does not start at a record.
        assert!(
            index
                .decode::<TC>(&bytes[s + 1..e], range.start + 1)
                .is_err()
        );
        // A record's bytes served for another index.
        let other = index.byte_range(3, 3).unwrap();
        assert!(
            index
                .decode::<TC>(
                    &bytes[other.start as usize..other.end as usize],
                    range.start
                )
                .is_err()
        );
        bytes[s + 20] ^= 1;
        assert!(index.decode::<TC>(&bytes[s..e], range.start).is_err());
        // A damaged trailer.
        let len = bytes.len() as u64;
        let t = trailer_range(len).unwrap();
        bytes[t.start as usize + 9] ^= 1;
        assert!(decode_trailer(&bytes[t.start as usize..], len).is_err());
    }
}

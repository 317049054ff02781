//! The byte layout of segment files (format version 2, ADR 0007), as pure functions: the segment
//! header, the record frame with its fixed head (kind and log id), and the footer index a
//! segment gets when it is sealed. No I/O and no openraft types here (see `entry` for those).
//! Every layout is pinned by golden-bytes tests at the bottom.
//!
//! ```text
//! header  (64 B): magic "VELASEG\0" | version u32 = 2 | flags u32 = 0 | first_index u64
//!                 | created_ms i64 | reserved 28 B = 0 | crc32c u32 of bytes 0..60
//! record        : len u32 | crc32c u32 of the `len` bytes that follow
//!                 | kind u8 | reserved 3 B = 0 | term u64 | node u64 | index u64 | payload
//! footer        : offset u32 of every record, in order
//!                 | magic "VELAFOOT" | count u32 | records_end u64 | first_append_ms i64
//!                 | last_append_ms i64 | crc32c u32 of the offsets | crc32c u32 of the trailer
//!                   before it
//! ```
//! The trailer has a checksum of its own so an open can trust it without reading the offsets
//! table, which is read (and verified) only when a record of the segment is.
//! All integers are little endian.

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"VELASEG\0";
/// The segment layout this build writes and reads. Version 1 (records holding
/// `postcard(openraft::Entry)`) is refused with an explanation.
pub const SEGMENT_FORMAT_VERSION: u32 = 2;
pub const SEGMENT_HEADER_LEN: usize = 64;
/// `len u32 | crc32c u32` in front of every record body.
pub const RECORD_FRAME_LEN: usize = 8;
/// `kind u8 | reserved 3 | term u64 | node u64 | index u64` at the start of every record body.
pub const RECORD_HEAD_LEN: usize = 28;
/// Upper bound of one record body. Anything larger is treated as a corrupt length field, so a
/// flipped bit in a length can never make recovery allocate or skip gigabytes.
pub const MAX_RECORD_BODY: usize = 256 * 1024 * 1024;
pub const FOOTER_MAGIC: [u8; 8] = *b"VELAFOOT";
/// The fixed trailer at the very end of a sealed segment.
pub const FOOTER_TRAILER_LEN: usize = 44;
/// Largest segment the footer's 32-bit offsets can index.
pub const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// openraft's blank entry (a new leader's first).
    Blank = 1,
    /// A membership change, payload in `entry::MembershipRecord` form.
    Membership = 2,
    /// Application data, payload as the application encodes it.
    Normal = 3,
}

impl RecordKind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(RecordKind::Blank),
            2 => Some(RecordKind::Membership),
            3 => Some(RecordKind::Normal),
            _ => None,
        }
    }
}

/// The fixed head of a record: its kind and its Raft log id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHead {
    pub kind: RecordKind,
    pub term: u64,
    pub node: u64,
    pub index: u64,
}

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub first_index: u64,
    pub created_ms: i64,
}

/// The trailer of a sealed segment's footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FooterTrailer {
    pub count: u32,
    /// Where the records end and the offsets table begins.
    pub records_end: u64,
    pub first_append_ms: i64,
    pub last_append_ms: i64,
    /// Checksum of the offsets table.
    pub table_crc: u32,
}

impl FooterTrailer {
    /// Bytes of the whole footer (offsets table and trailer).
    pub fn footer_len(&self) -> u64 {
        u64::from(self.count) * 4 + FOOTER_TRAILER_LEN as u64
    }
}

/// Why a segment header was rejected.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    #[error("segment header is short: {len} of {SEGMENT_HEADER_LEN} bytes")]
    Short { len: usize },
    #[error("segment header magic does not match")]
    BadMagic,
    #[error("segment header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error(
        "segment format version {0} is not supported (this build reads version \
         {SEGMENT_FORMAT_VERSION}; see README, Upgrading)"
    )]
    UnsupportedVersion(u32),
}

/// Why a record could not be framed. `Truncated` is what a torn write looks like.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    #[error("record is truncated: needs {needed} bytes, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("record length {0} is shorter than a record head")]
    TooShort(u32),
    #[error("record length {0} exceeds the limit of {MAX_RECORD_BODY} bytes")]
    TooLong(u32),
    #[error("record checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("record kind {0} is unknown")]
    UnknownKind(u8),
}

/// Why a footer was rejected.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum FooterError {
    #[error("segment has no footer (magic does not match)")]
    Missing,
    #[error("footer is inconsistent: {0}")]
    Inconsistent(String),
    #[error("footer checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
}

/// Encodes the header of a segment whose first record has log index `first_index`.
pub fn encode_segment_header(first_index: u64, created_ms: i64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    // [12..16] flags stay zero.
    header[16..24].copy_from_slice(&first_index.to_le_bytes());
    header[24..32].copy_from_slice(&created_ms.to_le_bytes());
    // [32..60] reserved stays zero.
    let crc = crc32c::crc32c(&header[0..60]);
    header[60..64].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Validates a segment header.
pub fn decode_segment_header(buf: &[u8]) -> Result<SegmentHeader, HeaderError> {
    // Version 1 headers were 32 bytes; recognise them before asking for 64.
    if buf.len() >= 12 && buf[0..8] == SEGMENT_MAGIC {
        let version = read_u32(buf, 8);
        if version != SEGMENT_FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
    }
    let Some(header) = buf.get(..SEGMENT_HEADER_LEN) else {
        return Err(HeaderError::Short { len: buf.len() });
    };
    if header[0..8] != SEGMENT_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let stored = read_u32(header, 60);
    let computed = crc32c::crc32c(&header[0..60]);
    if stored != computed {
        return Err(HeaderError::Checksum { stored, computed });
    }
    Ok(SegmentHeader {
        first_index: read_u64(header, 16),
        created_ms: read_i64(header, 24),
    })
}

/// Appends one record to `out`: the frame, the head, then whatever `payload` writes. Returns
/// the record's length (frame included). On error `out` is left as it was.
pub fn encode_record<E>(
    head: RecordHead,
    out: &mut Vec<u8>,
    payload: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<usize, EncodeError<E>> {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_FRAME_LEN]);
    out.push(head.kind as u8);
    out.extend_from_slice(&[0u8; 3]);
    out.extend_from_slice(&head.term.to_le_bytes());
    out.extend_from_slice(&head.node.to_le_bytes());
    out.extend_from_slice(&head.index.to_le_bytes());
    if let Err(e) = payload(out) {
        out.truncate(start);
        return Err(EncodeError::Payload(e));
    }
    let body_len = out.len() - start - RECORD_FRAME_LEN;
    if body_len > MAX_RECORD_BODY {
        out.truncate(start);
        return Err(EncodeError::TooLarge(body_len));
    }
    let crc = crc32c::crc32c(&out[start + RECORD_FRAME_LEN..]);
    // body_len <= MAX_RECORD_BODY < u32::MAX, checked above.
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(out.len() - start)
}

/// Why a record could not be encoded.
#[derive(thiserror::Error, Debug)]
pub enum EncodeError<E> {
    #[error("payload encoding failed: {0}")]
    Payload(E),
    #[error("record body of {0} bytes exceeds {MAX_RECORD_BODY} bytes")]
    TooLarge(usize),
}

/// Frames the record at the start of `buf`: checks length, checksum and kind, and returns the
/// head, the payload and the number of bytes the whole record occupies.
pub fn decode_record(buf: &[u8]) -> Result<(RecordHead, &[u8], usize), RecordError> {
    if buf.len() < RECORD_FRAME_LEN {
        return Err(RecordError::Truncated {
            needed: RECORD_FRAME_LEN,
            available: buf.len(),
        });
    }
    let len = read_u32(buf, 0);
    if (len as usize) < RECORD_HEAD_LEN {
        return Err(RecordError::TooShort(len));
    }
    if len as usize > MAX_RECORD_BODY {
        return Err(RecordError::TooLong(len));
    }
    let total = RECORD_FRAME_LEN + len as usize;
    let Some(body) = buf.get(RECORD_FRAME_LEN..total) else {
        return Err(RecordError::Truncated {
            needed: total,
            available: buf.len(),
        });
    };
    let stored = read_u32(buf, 4);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    let kind = RecordKind::from_byte(body[0]).ok_or(RecordError::UnknownKind(body[0]))?;
    let head = RecordHead {
        kind,
        term: read_u64(body, 4),
        node: read_u64(body, 12),
        index: read_u64(body, 20),
    };
    Ok((head, &body[RECORD_HEAD_LEN..], total))
}

/// Appends the footer of a sealed segment: the record offsets, then the trailer.
pub fn encode_footer(
    offsets: &[u32],
    records_end: u64,
    first_append_ms: i64,
    last_append_ms: i64,
    out: &mut Vec<u8>,
) {
    let table_start = out.len();
    for offset in offsets {
        out.extend_from_slice(&offset.to_le_bytes());
    }
    let table_crc = crc32c::crc32c(&out[table_start..]);
    let trailer_start = out.len();
    out.extend_from_slice(&FOOTER_MAGIC);
    // A segment holds fewer than u32::MAX records: each takes at least RECORD_HEAD_LEN bytes of
    // a file below MAX_SEGMENT_BYTES.
    out.extend_from_slice(&(offsets.len() as u32).to_le_bytes());
    out.extend_from_slice(&records_end.to_le_bytes());
    out.extend_from_slice(&first_append_ms.to_le_bytes());
    out.extend_from_slice(&last_append_ms.to_le_bytes());
    out.extend_from_slice(&table_crc.to_le_bytes());
    let trailer_crc = crc32c::crc32c(&out[trailer_start..]);
    out.extend_from_slice(&trailer_crc.to_le_bytes());
}

/// Reads the trailer at the end of a sealed segment (exactly its last [`FOOTER_TRAILER_LEN`]
/// bytes) and checks it, and its place in a file of `file_len` bytes.
pub fn decode_footer_trailer(t: &[u8], file_len: u64) -> Result<FooterTrailer, FooterError> {
    if t.len() != FOOTER_TRAILER_LEN || t[0..8] != FOOTER_MAGIC {
        return Err(FooterError::Missing);
    }
    let stored = read_u32(t, 40);
    let computed = crc32c::crc32c(&t[..40]);
    if stored != computed {
        return Err(FooterError::Checksum { stored, computed });
    }
    let trailer = FooterTrailer {
        count: read_u32(t, 8),
        records_end: read_u64(t, 12),
        first_append_ms: read_i64(t, 20),
        last_append_ms: read_i64(t, 28),
        table_crc: read_u32(t, 36),
    };
    if trailer.count == 0 {
        return Err(FooterError::Inconsistent("a footer for no records".into()));
    }
    if trailer.records_end < SEGMENT_HEADER_LEN as u64
        || trailer.records_end.checked_add(trailer.footer_len()) != Some(file_len)
    {
        return Err(FooterError::Inconsistent(format!(
            "records end at {} and {} offsets do not add up to the file length {file_len}",
            trailer.records_end, trailer.count
        )));
    }
    Ok(trailer)
}

/// Verifies the offsets table of a footer (`table`: exactly `4 * count` bytes) and returns the
/// record offsets, which must start right after the header, rise, and stay below
/// `records_end`.
pub fn decode_footer_offsets(
    table: &[u8],
    trailer: &FooterTrailer,
) -> Result<Vec<u32>, FooterError> {
    if table.len() as u64 != u64::from(trailer.count) * 4 {
        return Err(FooterError::Inconsistent(
            "offsets table has the wrong size".into(),
        ));
    }
    let computed = crc32c::crc32c(table);
    if computed != trailer.table_crc {
        return Err(FooterError::Checksum {
            stored: trailer.table_crc,
            computed,
        });
    }
    let mut offsets = Vec::with_capacity(trailer.count as usize);
    for chunk in table.chunks_exact(4) {
        let offset = read_u32(chunk, 0);
        let expected_first = offsets.is_empty() && offset as usize != SEGMENT_HEADER_LEN;
        let rising = offsets.last().is_none_or(|p| offset > *p);
        if expected_first || !rising || u64::from(offset) >= trailer.records_end {
            return Err(FooterError::Inconsistent(format!(
                "record offset {offset} is out of order or out of range"
            )));
        }
        offsets.push(offset);
    }
    Ok(offsets)
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(bytes)
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(bytes)
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    i64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn record(head: RecordHead, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record::<()>(head, &mut out, |o| {
            o.extend_from_slice(payload);
            Ok(())
        })
        .unwrap();
        out
    }

    fn head() -> impl Strategy<Value = RecordHead> {
        (0u8..3, any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(k, term, node, index)| {
            RecordHead {
                kind: [
                    RecordKind::Blank,
                    RecordKind::Membership,
                    RecordKind::Normal,
                ][k as usize],
                term,
                node,
                index,
            }
        })
    }

    proptest! {
        #[test]
        fn records_round_trip_back_to_back(
            records in proptest::collection::vec((head(), proptest::collection::vec(any::<u8>(), 0..512)), 1..16)
        ) {
            let mut buf = Vec::new();
            for (h, p) in &records {
                buf.extend(record(*h, p));
            }
            let mut pos = 0;
            for (h, p) in &records {
                let (got, payload, used) = decode_record(&buf[pos..]).unwrap();
                prop_assert_eq!(got, *h);
                prop_assert_eq!(payload, p.as_slice());
                pos += used;
            }
            prop_assert_eq!(pos, buf.len());
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_segment_header(&bytes);
            let _ = decode_record(&bytes);
            if bytes.len() >= FOOTER_TRAILER_LEN {
                let tail = &bytes[bytes.len() - FOOTER_TRAILER_LEN..];
                if let Ok(t) = decode_footer_trailer(tail, bytes.len() as u64) {
                    let _ = decode_footer_offsets(&bytes[..bytes.len() - FOOTER_TRAILER_LEN], &t);
                }
            }
        }

        #[test]
        fn any_single_bit_flip_is_detected(h in head(), payload in proptest::collection::vec(any::<u8>(), 0..256), bit in any::<prop::sample::Index>()) {
            let mut buf = record(h, &payload);
            let bit = bit.index(buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_record(&buf).is_err());
        }

        #[test]
        fn every_truncation_reports_truncated(h in head(), payload in proptest::collection::vec(any::<u8>(), 0..256), cut in any::<prop::sample::Index>()) {
            let buf = record(h, &payload);
            let cut = cut.index(buf.len());
            let truncated = matches!(decode_record(&buf[..cut]), Err(RecordError::Truncated { .. }));
            prop_assert!(truncated);
        }

        #[test]
        fn footers_round_trip_and_detect_flips(
            gaps in proptest::collection::vec(1u64..5000, 1..64),
            bit in any::<prop::sample::Index>(),
        ) {
            let mut offsets = Vec::new();
            let mut at = SEGMENT_HEADER_LEN as u64;
            for g in &gaps {
                offsets.push(at as u32);
                at += g;
            }
            let mut file = vec![0u8; at as usize];
            encode_footer(&offsets, at, 5, 9, &mut file);
            let len = file.len() as u64;
            let trailer = decode_footer_trailer(&file[file.len() - FOOTER_TRAILER_LEN..], len).unwrap();
            let table = &file[at as usize..file.len() - FOOTER_TRAILER_LEN];
            prop_assert_eq!(decode_footer_offsets(table, &trailer).unwrap(), offsets.clone());

            let footer_start = at as usize;
            let bit = bit.index((file.len() - footer_start) * 8);
            file[footer_start + bit / 8] ^= 1 << (bit % 8);
            let outcome = decode_footer_trailer(&file[file.len() - FOOTER_TRAILER_LEN..], len)
                .and_then(|t| decode_footer_offsets(&file[at as usize..file.len() - FOOTER_TRAILER_LEN], &t))
                .map(|o| o != offsets);
            let outcome = match outcome { Ok(false) => Ok(()), Ok(true) => Err(()), Err(_) => Err(()) };
            prop_assert!(outcome.is_err());
        }
    }

    #[test]
    fn header_golden_bytes_and_rejections() {
        let header = encode_segment_header(42, 1_700_000_000_123);
        assert_eq!(
            hex::encode(header),
            "56454c41534547000200000000000000\
             2a000000000000007b68e5cf8b010000\
             00000000000000000000000000000000\
             000000000000000000000000cd71eacf"
        );
        assert_eq!(
            decode_segment_header(&header),
            Ok(SegmentHeader {
                first_index: 42,
                created_ms: 1_700_000_000_123
            })
        );
        let mut v1 = header;
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(
            decode_segment_header(&v1[..32]),
            Err(HeaderError::UnsupportedVersion(1))
        );
        let mut bad = header;
        bad[17] ^= 1;
        assert!(matches!(
            decode_segment_header(&bad),
            Err(HeaderError::Checksum { .. })
        ));
        assert_eq!(
            decode_segment_header(&header[..40]),
            Err(HeaderError::Short { len: 40 })
        );
        let mut magic = header;
        magic[0] = b'X';
        assert_eq!(decode_segment_header(&magic), Err(HeaderError::BadMagic));
    }

    #[test]
    fn record_golden_bytes() {
        let bytes = record(
            RecordHead {
                kind: RecordKind::Normal,
                term: 3,
                node: 1,
                index: 258,
            },
            b"hi",
        );
        assert_eq!(
            hex::encode(&bytes),
            "1e0000003f08d9cc0300000003000000\
             00000000010000000000000002010000\
             000000006869"
        );
        assert!(matches!(
            decode_record(&bytes[..5]),
            Err(RecordError::Truncated { .. })
        ));
        let mut unknown = bytes.clone();
        unknown[8] = 9;
        let crc = crc32c::crc32c(&unknown[8..]);
        unknown[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_record(&unknown), Err(RecordError::UnknownKind(9)));
        let mut short = vec![0u8; 16];
        short[0] = 4;
        assert_eq!(decode_record(&short), Err(RecordError::TooShort(4)));
        let mut huge = vec![0u8; 16];
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_record(&huge), Err(RecordError::TooLong(u32::MAX)));
    }

    #[test]
    fn footer_golden_bytes() {
        let mut footer = Vec::new();
        encode_footer(&[64, 100], 130, 1000, 2000, &mut footer);
        assert_eq!(
            hex::encode(&footer),
            "400000006400000056454c41464f4f54\
             020000008200000000000000e8030000\
             00000000d0070000000000002703899162fd354a"
        );
    }
}

//! The byte layout of segment files, as pure functions: the fixed segment header and the
//! length-prefixed, crc32c-checksummed records. No I/O here; the format is specified in
//! `docs/adr/0001-segment-format.md`.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"VELASEG\0";
/// Bumped on any incompatible change of the header or record layout.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// `magic[8] | version u32 | flags u32 | first_index u64 | reserved u32 | header_crc u32`.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// `len u32 | crc32c u32`, both little endian, in front of every payload.
pub const RECORD_HEADER_LEN: usize = 8;
/// Upper bound of one record payload. Anything larger is treated as a corrupt length field, so a
/// flipped bit in a length can never make recovery allocate or skip gigabytes.
pub const MAX_RECORD_PAYLOAD: usize = 256 * 1024 * 1024;

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
        "segment format version {0} is not supported (this build reads {SEGMENT_FORMAT_VERSION})"
    )]
    UnsupportedVersion(u32),
}

/// Why a record could not be framed. `Truncated` is what a torn write looks like.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    #[error("record is truncated: needs {needed} bytes, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("record has zero length")]
    ZeroLength,
    #[error("record length {0} exceeds the limit of {MAX_RECORD_PAYLOAD} bytes")]
    TooLong(u32),
    #[error("record checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
}

/// Encodes the header of a segment whose first record has log index `first_index`.
pub fn encode_segment_header(first_index: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    // [12..16] flags and [24..28] reserved stay zero in version 1.
    header[16..24].copy_from_slice(&first_index.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Validates a segment header and returns the first log index it declares.
pub fn decode_segment_header(buf: &[u8]) -> Result<u64, HeaderError> {
    let Some(header) = buf.get(..SEGMENT_HEADER_LEN) else {
        return Err(HeaderError::Short { len: buf.len() });
    };
    if header[0..8] != SEGMENT_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let stored = read_u32(header, 28);
    let computed = crc32c::crc32c(&header[0..28]);
    if stored != computed {
        return Err(HeaderError::Checksum { stored, computed });
    }
    let version = read_u32(header, 8);
    if version != SEGMENT_FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    Ok(read_u64(header, 16))
}

/// Appends one framed record holding `postcard(value)` to `out` and returns the record's length
/// (header included). On error `out` is left as it was.
pub fn encode_record<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    if let Err(err) = postcard::to_io(value, &mut *out) {
        out.truncate(start);
        return Err(EncodeError::Codec(err));
    }
    let payload_len = out.len() - start - RECORD_HEADER_LEN;
    if payload_len == 0 || payload_len > MAX_RECORD_PAYLOAD {
        out.truncate(start);
        return Err(EncodeError::BadLength(payload_len));
    }
    let crc = crc32c::crc32c(&out[start + RECORD_HEADER_LEN..]);
    // payload_len <= MAX_RECORD_PAYLOAD < u32::MAX, checked above.
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(out.len() - start)
}

/// Why a value could not be framed as a record.
#[derive(thiserror::Error, Debug)]
pub enum EncodeError {
    #[error("postcard encoding failed: {0}")]
    Codec(postcard::Error),
    #[error("encoded payload of {0} bytes is empty or exceeds {MAX_RECORD_PAYLOAD} bytes")]
    BadLength(usize),
}

/// Frames the record at the start of `buf`: checks length and checksum and returns the payload and
/// the number of bytes the whole record occupies.
pub fn decode_record(buf: &[u8]) -> Result<(&[u8], usize), RecordError> {
    if buf.len() < RECORD_HEADER_LEN {
        return Err(RecordError::Truncated {
            needed: RECORD_HEADER_LEN,
            available: buf.len(),
        });
    }
    let len = read_u32(buf, 0);
    if len == 0 {
        return Err(RecordError::ZeroLength);
    }
    if len as usize > MAX_RECORD_PAYLOAD {
        return Err(RecordError::TooLong(len));
    }
    let total = RECORD_HEADER_LEN + len as usize;
    let Some(payload) = buf.get(RECORD_HEADER_LEN..total) else {
        return Err(RecordError::Truncated {
            needed: total,
            available: buf.len(),
        });
    };
    let stored = read_u32(buf, 4);
    let computed = crc32c::crc32c(payload);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    Ok((payload, total))
}

/// Decodes a payload that must be exactly one postcard value (trailing bytes are an error: a
/// payload that decodes with leftovers is not what the writer wrote).
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, PayloadError> {
    let (value, rest) = postcard::take_from_bytes(payload).map_err(PayloadError::Codec)?;
    if !rest.is_empty() {
        return Err(PayloadError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// Why a checksummed payload still did not decode.
#[derive(thiserror::Error, Debug)]
pub enum PayloadError {
    #[error("payload does not decode: {0}")]
    Codec(postcard::Error),
    #[error("payload has {0} trailing bytes")]
    TrailingBytes(usize),
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    struct Sample {
        index: u64,
        term: u64,
        body: Vec<u8>,
        tag: Option<String>,
    }

    fn sample() -> impl Strategy<Value = Sample> {
        (
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..2048),
            proptest::option::of(".{0,16}"),
        )
            .prop_map(|(index, term, body, tag)| Sample {
                index,
                term,
                body,
                tag,
            })
    }

    proptest! {
        #[test]
        fn records_round_trip_back_to_back(values in proptest::collection::vec(sample(), 1..16)) {
            let mut buf = Vec::new();
            let mut lens = Vec::new();
            for v in &values {
                lens.push(encode_record(v, &mut buf).unwrap());
            }
            prop_assert_eq!(lens.iter().sum::<usize>(), buf.len());
            let mut pos = 0;
            for (v, len) in values.iter().zip(&lens) {
                let (payload, used) = decode_record(&buf[pos..]).unwrap();
                prop_assert_eq!(used, *len);
                let back: Sample = decode_payload(payload).unwrap();
                prop_assert_eq!(&back, v);
                pos += used;
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_segment_header(&bytes);
            if let Ok((payload, used)) = decode_record(&bytes) {
                prop_assert!(used <= bytes.len());
                let _ = decode_payload::<Sample>(payload);
            }
            let _ = decode_payload::<Sample>(&bytes);
        }

        #[test]
        fn any_single_bit_flip_is_detected(value in sample(), bit in any::<prop::sample::Index>()) {
            let mut buf = Vec::new();
            encode_record(&value, &mut buf).unwrap();
            let bit = bit.index(buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            // crc32c detects every single-bit error in the payload; a flip in the crc field is a
            // mismatch; a flip in the length makes the record truncated, oversized or framed over
            // different bytes whose checksum does not match.
            prop_assert!(decode_record(&buf).is_err());
        }

        #[test]
        fn every_truncation_reports_truncated(value in sample(), cut in any::<prop::sample::Index>()) {
            let mut buf = Vec::new();
            let len = encode_record(&value, &mut buf).unwrap();
            let cut = cut.index(len);
            let is_truncated = matches!(decode_record(&buf[..cut]), Err(RecordError::Truncated { .. }));
            prop_assert!(is_truncated);
        }

        #[test]
        fn header_round_trips(first in any::<u64>()) {
            prop_assert_eq!(decode_segment_header(&encode_segment_header(first)), Ok(first));
        }
    }

    #[test]
    fn header_rejects_bad_magic_version_and_checksum() {
        let good = encode_segment_header(7);
        let mut bad_magic = good;
        bad_magic[0] = b'X';
        assert_eq!(
            decode_segment_header(&bad_magic),
            Err(HeaderError::BadMagic)
        );

        let mut bad_crc = good;
        bad_crc[17] ^= 1;
        assert!(matches!(
            decode_segment_header(&bad_crc),
            Err(HeaderError::Checksum { .. })
        ));

        let mut future = good;
        future[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c::crc32c(&future[0..28]);
        future[28..32].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_segment_header(&future),
            Err(HeaderError::UnsupportedVersion(2))
        );

        assert_eq!(
            decode_segment_header(&good[..10]),
            Err(HeaderError::Short { len: 10 })
        );
    }

    #[test]
    fn zero_and_oversized_lengths_are_rejected() {
        assert_eq!(decode_record(&[0u8; 16]), Err(RecordError::ZeroLength));
        let mut huge = vec![0u8; 16];
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_record(&huge), Err(RecordError::TooLong(u32::MAX)));
    }

    #[test]
    fn trailing_payload_bytes_are_rejected() {
        let mut payload = postcard::to_allocvec(&7u64).unwrap();
        payload.push(0);
        assert!(matches!(
            decode_payload::<u64>(&payload),
            Err(PayloadError::TrailingBytes(1))
        ));
    }
}

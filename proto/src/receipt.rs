//! Receipt handles: self-describing (they name the shard, queue, offset and delivery) and
//! tamper-evident (HMAC-SHA256), so any proxy can route and verify an ack without holding
//! state. The store decides whether the delivery they name is still current (ADR 0004).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::{GroupName, ShardId, TopicName};

const VERSION: u8 = 1;
const MAC_LEN: usize = 16;

/// The decoded content of a receipt handle: one delivery of one message to one group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReceiptTicket {
    pub shard: ShardId,
    pub group: GroupName,
    /// The topic the message was delivered from.
    pub topic: TopicName,
    pub queue_id: u32,
    pub offset: u64,
    /// Identifies the delivery (the log index of the command that made it); a newer delivery
    /// or a change of invisibility gets a new id, which kills older handles.
    pub delivery_id: u64,
    /// When the message becomes visible again (Unix ms), informational.
    pub visible_at_ms: i64,
}

/// Why a handle was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt handle is not valid base64")]
    Encoding,
    #[error("receipt handle is truncated or malformed")]
    Malformed,
    #[error("receipt handle version {0} is not supported")]
    Version(u8),
    #[error("receipt handle signature does not match (forged or from another cluster)")]
    Signature,
}

/// Signs and verifies receipt handles with the cluster's secret.
#[derive(Clone)]
pub struct ReceiptCodec {
    key: Vec<u8>,
}

impl std::fmt::Debug for ReceiptCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiptCodec { key: <redacted> }")
    }
}

impl ReceiptCodec {
    /// A codec keyed by `secret` (at least 16 bytes recommended).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: secret.to_vec(),
        }
    }

    fn mac(&self, data: &[u8]) -> [u8; MAC_LEN] {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("hmac accepts any key length"));
        mac.update(data);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// Encodes and signs a ticket into the opaque string clients carry.
    pub fn encode(&self, t: &ReceiptTicket) -> String {
        let mut buf = Vec::with_capacity(64);
        buf.push(VERSION);
        put_varint(&mut buf, u64::from(t.shard));
        put_str(&mut buf, t.group.as_str());
        put_str(&mut buf, t.topic.as_str());
        put_varint(&mut buf, u64::from(t.queue_id));
        put_varint(&mut buf, t.offset);
        put_varint(&mut buf, t.delivery_id);
        put_varint(&mut buf, zigzag(t.visible_at_ms));
        let mac = self.mac(&buf);
        buf.extend_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(buf)
    }

    /// Verifies and decodes a handle.
    pub fn decode(&self, handle: &str) -> Result<ReceiptTicket, ReceiptError> {
        let raw = URL_SAFE_NO_PAD
            .decode(handle.trim())
            .map_err(|_| ReceiptError::Encoding)?;
        if raw.len() < 1 + MAC_LEN {
            return Err(ReceiptError::Malformed);
        }
        let (body, tag) = raw.split_at(raw.len() - MAC_LEN);
        let expected = self.mac(body);
        if !constant_time_eq(&expected, tag) {
            // Check the version only after the signature so forged handles learn nothing.
            return Err(ReceiptError::Signature);
        }
        let mut r = Reader { buf: body, pos: 0 };
        let version = r.byte()?;
        if version != VERSION {
            return Err(ReceiptError::Version(version));
        }
        let shard = u32::try_from(r.varint()?).map_err(|_| ReceiptError::Malformed)?;
        let group = GroupName::new(r.str()?).map_err(|_| ReceiptError::Malformed)?;
        let topic = TopicName::new(r.str()?).map_err(|_| ReceiptError::Malformed)?;
        let queue_id = u32::try_from(r.varint()?).map_err(|_| ReceiptError::Malformed)?;
        let offset = r.varint()?;
        let delivery_id = r.varint()?;
        let visible_at_ms = unzigzag(r.varint()?);
        if r.pos != body.len() {
            return Err(ReceiptError::Malformed);
        }
        Ok(ReceiptTicket {
            shard,
            group,
            topic,
            queue_id,
            offset,
            delivery_id,
            visible_at_ms,
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_varint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, ReceiptError> {
        let b = *self.buf.get(self.pos).ok_or(ReceiptError::Malformed)?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, ReceiptError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ReceiptError::Malformed)
    }

    fn str(&mut self) -> Result<&str, ReceiptError> {
        let len = usize::try_from(self.varint()?).map_err(|_| ReceiptError::Malformed)?;
        let end = self.pos.checked_add(len).ok_or(ReceiptError::Malformed)?;
        let s = self.buf.get(self.pos..end).ok_or(ReceiptError::Malformed)?;
        self.pos = end;
        std::str::from_utf8(s).map_err(|_| ReceiptError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ticket() -> ReceiptTicket {
        ReceiptTicket {
            shard: 3,
            group: GroupName::new("billing").expect("valid"),
            topic: TopicName::new("orders").expect("valid"),
            queue_id: 7,
            offset: 123_456,
            delivery_id: 99,
            visible_at_ms: 1_790_000_000_000,
        }
    }

    #[test]
    fn round_trip() {
        let codec = ReceiptCodec::new(b"0123456789abcdef");
        let h = codec.encode(&ticket());
        assert_eq!(codec.decode(&h), Ok(ticket()));
    }

    #[test]
    fn other_key_is_rejected() {
        let h = ReceiptCodec::new(b"key-one-key-one!").encode(&ticket());
        assert_eq!(
            ReceiptCodec::new(b"key-two-key-two!").decode(&h),
            Err(ReceiptError::Signature)
        );
    }

    #[test]
    fn garbage_is_rejected() {
        let codec = ReceiptCodec::new(b"k");
        assert_eq!(codec.decode("not base64 !!"), Err(ReceiptError::Encoding));
        assert_eq!(codec.decode(""), Err(ReceiptError::Malformed));
        assert_eq!(codec.decode("AAAA"), Err(ReceiptError::Malformed));
    }

    proptest! {
        #[test]
        fn any_bit_flip_is_detected(pos in 0usize..60, bit in 0u8..8) {
            let codec = ReceiptCodec::new(b"0123456789abcdef");
            let h = codec.encode(&ticket());
            let mut raw = URL_SAFE_NO_PAD.decode(&h).expect("valid");
            let pos = pos % raw.len();
            raw[pos] ^= 1 << bit;
            let forged = URL_SAFE_NO_PAD.encode(raw);
            prop_assert!(codec.decode(&forged).is_err());
        }

        #[test]
        fn arbitrary_input_never_panics(s in ".{0,200}") {
            let codec = ReceiptCodec::new(b"0123456789abcdef");
            let _ = codec.decode(&s);
        }

        #[test]
        fn tickets_round_trip(shard in any::<u32>(), q in any::<u32>(), off in any::<u64>(),
                              id in any::<u64>(), at in any::<i64>()) {
            let codec = ReceiptCodec::new(b"secret");
            let t = ReceiptTicket { shard, queue_id: q, offset: off, delivery_id: id,
                                    visible_at_ms: at, ..ticket() };
            prop_assert_eq!(codec.decode(&codec.encode(&t)), Ok(t));
        }
    }
}

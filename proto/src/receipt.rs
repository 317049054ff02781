//! Receipt handles: self-describing (they name the shard, queue, offset and delivery) and
//! tamper-evident (HMAC-SHA256), so any proxy can route and verify an ack without holding
//! state. The store decides whether the delivery they name is still current (ADR 0004).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::{GroupName, ShardId, TopicName};

/// A handle signed with key 0 (the cluster's original secret): no key id in it, as every
/// release before keyrings wrote, so older proxies in a rolling restart still verify it.
const VERSION_1: u8 = 1;
/// A handle that names the id of the key that signed it (keys can rotate).
const VERSION_2: u8 = 2;
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
    #[error("receipt handle was signed with key {0}, which this proxy does not have")]
    UnknownKey(u32),
}

/// Signs and verifies receipt handles with the cluster's keyring: every key a proxy verifies
/// with, by id, and the one it signs with. Rotating a key: give every proxy the new key, then
/// make it the signing key everywhere, then (after the longest invisibility, 12 h) drop the old.
#[derive(Clone)]
pub struct ReceiptCodec {
    keys: std::collections::BTreeMap<u32, Vec<u8>>,
    signing: u32,
}

impl std::fmt::Debug for ReceiptCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptCodec")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("signing", &self.signing)
            .finish_non_exhaustive()
    }
}

impl ReceiptCodec {
    /// A codec with one key, id 0 (at least 16 bytes recommended).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            keys: std::collections::BTreeMap::from([(0, secret.to_vec())]),
            signing: 0,
        }
    }

    /// A codec that verifies with every key of `keys` (id → secret) and signs with `signing`.
    pub fn with_keys(
        keys: std::collections::BTreeMap<u32, Vec<u8>>,
        signing: u32,
    ) -> Result<Self, String> {
        if !keys.contains_key(&signing) {
            return Err(format!(
                "the signing key {signing} is not in the keyring (key ids: {:?})",
                keys.keys().collect::<Vec<_>>()
            ));
        }
        Ok(Self { keys, signing })
    }

    fn mac(key: &[u8], data: &[u8]) -> [u8; MAC_LEN] {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
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
        if self.signing == 0 {
            buf.push(VERSION_1);
        } else {
            buf.push(VERSION_2);
            put_varint(&mut buf, u64::from(self.signing));
        }
        put_varint(&mut buf, u64::from(t.shard));
        put_str(&mut buf, t.group.as_str());
        put_str(&mut buf, t.topic.as_str());
        put_varint(&mut buf, u64::from(t.queue_id));
        put_varint(&mut buf, t.offset);
        put_varint(&mut buf, t.delivery_id);
        put_varint(&mut buf, zigzag(t.visible_at_ms));
        let key = self.keys.get(&self.signing).map_or(&[][..], Vec::as_slice);
        let mac = Self::mac(key, &buf);
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
        let mut r = Reader { buf: body, pos: 0 };
        let key_id = match r.byte()? {
            VERSION_1 => 0,
            VERSION_2 => u32::try_from(r.varint()?).map_err(|_| ReceiptError::Malformed)?,
            other => return Err(ReceiptError::Version(other)),
        };
        let key = self
            .keys
            .get(&key_id)
            .ok_or(ReceiptError::UnknownKey(key_id))?;
        if !constant_time_eq(&Self::mac(key, body), tag) {
            return Err(ReceiptError::Signature);
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
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

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
    fn keys_rotate_without_breaking_handles_in_flight() {
        let (k0, k1) = (b"original-secret!".to_vec(), b"rotated-secret-1".to_vec());
        let old = ReceiptCodec::new(&k0);
        let both = |signing| {
            ReceiptCodec::with_keys(BTreeMap::from([(0, k0.clone()), (1, k1.clone())]), signing)
                .expect("valid keyring")
        };
        let only_new = ReceiptCodec::with_keys(BTreeMap::from([(1, k1.clone())]), 1).unwrap();
        // Step 1: every proxy gets key 1 but still signs with 0: old and new verify each other.
        assert_eq!(both(0).decode(&old.encode(&ticket())), Ok(ticket()));
        assert_eq!(old.decode(&both(0).encode(&ticket())), Ok(ticket()));
        // Step 2: sign with 1; handles from step 1 still verify.
        let signed_1 = both(1).encode(&ticket());
        assert_eq!(both(1).decode(&signed_1), Ok(ticket()));
        assert_eq!(both(1).decode(&old.encode(&ticket())), Ok(ticket()));
        assert_eq!(old.decode(&signed_1), Err(ReceiptError::UnknownKey(1)));
        // Step 3: key 0 dropped; its handles are refused by name.
        assert_eq!(only_new.decode(&signed_1), Ok(ticket()));
        assert_eq!(
            only_new.decode(&old.encode(&ticket())),
            Err(ReceiptError::UnknownKey(0))
        );
        assert!(ReceiptCodec::with_keys(BTreeMap::from([(1, k1)]), 2).is_err());
    }

    #[test]
    fn golden_bytes() {
        // Handles live in clients for up to 12 h: a release must decode what the last one wrote.
        let t = ReceiptTicket {
            shard: 1,
            group: GroupName::new("g").unwrap(),
            topic: TopicName::new("t").unwrap(),
            queue_id: 2,
            offset: 3,
            delivery_id: 4,
            visible_at_ms: 5,
        };
        let keys = BTreeMap::from([(0, b"k0".to_vec()), (7, b"k7".to_vec())]);
        let v1 = ReceiptCodec::with_keys(keys.clone(), 0).unwrap().encode(&t);
        let v2 = ReceiptCodec::with_keys(keys, 7).unwrap().encode(&t);
        let body = |h: &str| {
            let raw = URL_SAFE_NO_PAD.decode(h).unwrap();
            hex::encode(&raw[..raw.len() - MAC_LEN])
        };
        // version 1, shard, "g", "t", queue, offset, delivery, zigzag(5)
        assert_eq!(body(&v1), "0101016701740203040a");
        // version 2, key id 7, then the same fields
        assert_eq!(body(&v2), "020701016701740203040a");
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

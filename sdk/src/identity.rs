//! Process identity: the host name, client ids (`<host>@<pid>#<n>@<start>`) and message ids
//! in the official clients' V1 layout.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the Unix epoch to 2021-01-01T00:00:00Z, the epoch of V1 message ids.
const MESSAGE_ID_EPOCH_SECS: u64 = 1_609_459_200;
/// Version byte of the V1 message id layout.
const MESSAGE_ID_V1: u8 = 0x01;

/// The local host name (the kernel's, else `$HOSTNAME`, else `localhost`).
pub(crate) fn hostname() -> &'static str {
    static HOSTNAME: OnceLock<String> = OnceLock::new();
    HOSTNAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(|| "localhost".to_owned())
    })
}

/// A fresh client id, unique per client instance in this process. The start-time suffix keeps
/// ids apart across restarts that reuse a pid (pid 1 in containers), as Python/Node do.
pub(crate) fn next_client_id() -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    static STARTED: OnceLock<u128> = OnceLock::new();
    let started = *STARTED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
    });
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("{}@{}#{n}@{started:x}", hostname(), std::process::id())
}

/// The client id of a consumer given an instance name: the name itself, checked so the server
/// keeps it as the instance of a broadcast group unchanged (ADR 0029); none without a name.
pub(crate) fn instance_client_id(name: Option<&str>) -> crate::error::Result<Option<String>> {
    let Some(name) = name else {
        return Ok(None);
    };
    let max = vela_proto::MAX_BROADCAST_INSTANCE_LEN;
    if name.is_empty()
        || name.len() > max
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(crate::error::Error::InvalidArgument(format!(
            "instance name {name:?} must be 1 to {max} characters of [a-zA-Z0-9_-]"
        )));
    }
    Ok(Some(name.to_owned()))
}

/// Generates message ids: `01` + 6 random bytes (in place of the MAC) + pid (2 bytes) +
/// seconds since 2021-01-01 (4 bytes) + a sequence number (4 bytes), as 34 upper-hex chars.
#[derive(Debug)]
pub(crate) struct MessageIdGenerator {
    prefix: [u8; 9],
    sequence: AtomicU32,
}

impl MessageIdGenerator {
    pub(crate) fn new(host_bytes: [u8; 6], pid: u32) -> Self {
        let mut prefix = [0u8; 9];
        prefix[0] = MESSAGE_ID_V1;
        prefix[1..7].copy_from_slice(&host_bytes);
        // The layout keeps the low 16 bits of the pid.
        prefix[7..9].copy_from_slice(&(pid as u16).to_be_bytes());
        MessageIdGenerator {
            prefix,
            sequence: AtomicU32::new(0),
        }
    }

    /// The process-wide generator.
    pub(crate) fn global() -> &'static MessageIdGenerator {
        static GLOBAL: OnceLock<MessageIdGenerator> = OnceLock::new();
        GLOBAL.get_or_init(|| MessageIdGenerator::new(rand::random(), std::process::id()))
    }

    pub(crate) fn next_id(&self) -> String {
        self.next_id_at(SystemTime::now())
    }

    pub(crate) fn next_id_at(&self, now: SystemTime) -> String {
        let since_epoch = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        // Wraps after 136 years, like the official layout's 32-bit field.
        let seconds = since_epoch.saturating_sub(MESSAGE_ID_EPOCH_SECS) as u32;
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let mut bytes = [0u8; 17];
        bytes[..9].copy_from_slice(&self.prefix);
        bytes[9..13].copy_from_slice(&seconds.to_be_bytes());
        bytes[13..].copy_from_slice(&sequence.to_be_bytes());
        hex::encode_upper(bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn message_id_has_the_v1_layout() {
        let g = MessageIdGenerator::new([0xAB, 0xCD, 0xEF, 0x01, 0x23, 0x45], 0x1_2345);
        // 2021-01-01T00:01:40Z: 100 seconds after the id epoch.
        let at = UNIX_EPOCH + Duration::from_secs(MESSAGE_ID_EPOCH_SECS + 100);
        let first = g.next_id_at(at);
        assert_eq!(
            first,
            concat!("01", "ABCDEF012345", "2345", "00000064", "00000000")
        );
        assert_eq!(first.len(), 34);
        assert_eq!(
            g.next_id_at(at),
            concat!("01", "ABCDEF012345", "2345", "00000064", "00000001")
        );
    }

    #[test]
    fn message_ids_are_unique_and_upper_hex() {
        let g = MessageIdGenerator::global();
        let ids: HashSet<String> = (0..10_000).map(|_| g.next_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in &ids {
            assert_eq!(id.len(), 34);
            assert!(id.starts_with("01"));
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
            );
        }
    }

    #[test]
    fn client_ids_differ_per_instance() {
        let a = next_client_id();
        let b = next_client_id();
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("{}@{}#", hostname(), std::process::id())));
    }
}

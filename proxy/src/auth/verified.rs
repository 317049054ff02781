//! Signatures already verified (ADR 0019): the official clients sign `x-mq-date-time` to the
//! second, so a busy client sends the very same `authorization` header many times a second.
//! A request whose header, signed date and user's secret are those of one verified before
//! passes without a second HMAC; anything else is verified in full. The signature's
//! freshness and the user's status and rights are checked on every request regardless.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::signature::{Signed, signature_matches};

/// Entries kept at most; the cache is emptied when it is full (headers change every second,
/// so what it held is about to be useless anyway).
const MAX_ENTRIES: usize = 4096;

/// What a verified header was checked against.
struct Verified {
    date: String,
    secret: String,
}

#[derive(Default)]
pub(crate) struct VerifiedSignatures {
    by_header: Mutex<HashMap<String, Verified>>,
    /// HMACs computed (the misses), for tests and benchmarks.
    computed: AtomicU64,
}

impl VerifiedSignatures {
    /// Whether `signed` (sent as `header`) is the signature of its date under `secret`.
    pub fn matches(&self, header: &str, signed: &Signed, secret: &str) -> bool {
        if let Some(seen) = self.by_header.lock().get(header)
            && seen.date == signed.date
            && seen.secret == secret
        {
            return true;
        }
        self.computed.fetch_add(1, Ordering::Relaxed);
        if !signature_matches(secret, &signed.date, &signed.signature) {
            return false;
        }
        let mut by_header = self.by_header.lock();
        if by_header.len() >= MAX_ENTRIES {
            by_header.clear();
        }
        by_header.insert(
            header.to_owned(),
            Verified {
                date: signed.date.clone(),
                secret: secret.to_owned(),
            },
        );
        true
    }

    /// HMACs computed so far.
    #[cfg(test)]
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }
}

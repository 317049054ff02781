//! The shard's tier manifest (apply version 9, ADR 0023): which sealed segments are in object
//! storage, under which keys. It changes only by applying log entries, so every replica agrees
//! on it: an upload becomes the visible copy when its `Tiered` entry commits, and a deposed
//! leader's upload (another key: the key carries the uploader's term) never does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One sealed segment in the tier. Persisted in `Tiered` log entries and in snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TieredSegment {
    /// Object key under the tier's prefix.
    pub key: String,
    pub first_index: u64,
    pub last_index: u64,
    /// Object length.
    pub bytes: u64,
    /// CRC-32C of the whole object, as uploaded.
    pub crc32c: u32,
    /// When its first and last records were appended (Unix ms; from the segment's footer).
    pub first_append_ms: i64,
    pub last_append_ms: i64,
}

/// Why a `Tiered` entry was not taken into the manifest (all deterministic: every replica
/// decides the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TierRefusal {
    /// The shard's apply version is below 9.
    NotYet,
    /// The manifest already covers everything it holds.
    Covered,
    /// It starts past the manifest's end: the log between would be in no segment.
    Gap,
    /// All of it is below the retention floor.
    Truncated,
    /// Its range is empty or inverted.
    Invalid,
}

/// The tiered segments of a shard, in log order, contiguous: each starts at or before the
/// index after the previous one's last (a later leader's segments may overlap an earlier
/// leader's: both hold the same committed entries).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierManifest {
    /// By last index.
    segments: BTreeMap<u64, TieredSegment>,
}

impl TierManifest {
    /// Takes `segment` into the manifest, or says why not.
    pub fn add(
        &mut self,
        segment: &TieredSegment,
        truncated_below: u64,
    ) -> Result<(), TierRefusal> {
        if segment.last_index < segment.first_index || segment.key.is_empty() {
            return Err(TierRefusal::Invalid);
        }
        if segment.last_index < truncated_below {
            return Err(TierRefusal::Truncated);
        }
        if let Some(through) = self.through() {
            if segment.last_index <= through {
                return Err(TierRefusal::Covered);
            }
            if segment.first_index > through + 1 {
                return Err(TierRefusal::Gap);
            }
        }
        self.segments.insert(segment.last_index, segment.clone());
        Ok(())
    }

    /// Forgets segments wholly below `truncated_below` (retention); returns them.
    pub fn truncate(&mut self, truncated_below: u64) -> Vec<TieredSegment> {
        let kept = self.segments.split_off(&truncated_below);
        std::mem::replace(&mut self.segments, kept)
            .into_values()
            .collect()
    }

    /// Last log index the tier holds.
    pub fn through(&self) -> Option<u64> {
        self.segments.keys().next_back().copied()
    }

    /// First log index the tier holds.
    pub fn start(&self) -> Option<u64> {
        self.segments.values().map(|s| s.first_index).min()
    }

    /// The segment holding `index`.
    pub fn segment_for(&self, index: u64) -> Option<&TieredSegment> {
        self.segments
            .range(index..)
            .next()
            .map(|(_, s)| s)
            .filter(|s| s.first_index <= index)
    }

    /// Whether every index of `first..=last` is in the tier.
    pub fn covers(&self, first: u64, last: u64) -> bool {
        self.start().is_some_and(|start| start <= first)
            && self.through().is_some_and(|t| t >= last)
    }

    pub fn segments(&self) -> impl Iterator<Item = &TieredSegment> {
        self.segments.values()
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.segments.values().any(|s| s.key == key)
    }

    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.segments.values().map(|s| s.bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(first: u64, last: u64, term: u64) -> TieredSegment {
        TieredSegment {
            key: format!("{first}-{last}-t{term}"),
            first_index: first,
            last_index: last,
            bytes: 100,
            crc32c: 7,
            first_append_ms: 1,
            last_append_ms: 2,
        }
    }

    #[test]
    fn segments_join_contiguously_and_first_commit_wins() {
        let mut m = TierManifest::default();
        assert_eq!(m.add(&seg(5, 4, 1), 0), Err(TierRefusal::Invalid));
        m.add(&seg(10, 19, 1), 0).expect("accepted");
        assert_eq!((m.start(), m.through()), (Some(10), Some(19)));
        // A deposed leader's copy of the same range: already covered.
        assert_eq!(m.add(&seg(10, 19, 2), 0), Err(TierRefusal::Covered));
        assert_eq!(m.add(&seg(21, 30, 2), 0), Err(TierRefusal::Gap));
        // A new leader's segments may overlap.
        m.add(&seg(15, 30, 2), 0).expect("accepted");
        m.add(&seg(31, 40, 2), 0).expect("accepted");
        assert_eq!(m.segment_for(12).expect("held").key, "10-19-t1");
        assert_eq!(m.segment_for(20).expect("held").key, "15-30-t2");
        assert_eq!(m.segment_for(40).expect("held").key, "31-40-t2");
        assert!(m.segment_for(9).is_none() && m.segment_for(41).is_none());
        assert!(m.covers(10, 40) && !m.covers(9, 20) && !m.covers(30, 41));
        // Retention forgets whole segments below the floor only.
        let gone = m.truncate(25);
        assert_eq!(gone.len(), 1);
        assert_eq!(m.start(), Some(15));
        assert_eq!(m.add(&seg(1, 24, 3), 25), Err(TierRefusal::Truncated));
        assert_eq!(m.len(), 2);
        assert_eq!(m.bytes(), 200);
    }
}

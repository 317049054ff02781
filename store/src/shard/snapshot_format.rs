//! The payload of a shard snapshot generation (inside `vela_raft::snapshot_file` framing; also
//! what a snapshot transfer carries): the format number (a varint), the snapshot's metadata,
//! the state, then the parts saved beside the state, each format appending one to the one
//! before (postcard is positional: a format's bytes are the previous format's followed by its
//! own part). Bumped with any change of [`ShardState`]'s persisted shape:
//!
//! | format | appended after the previous one | written from apply version |
//! |---|---|---|
//! | 2 | (the state held every queue's entries: [`LegacyState`]) | read only |
//! | 3 | the state without entries (they are in the index file, ADR 0008) | 1 |
//! | 4 | the send deduplication window | 5 |
//! | 5 | the window's clock | 6 |
//! | 6 | the tier manifest | 9 |
//! | 7 | the topics' own retentions | 15 |
//! | 8 | the topics' controller revisions | 16 |
//! | 9 | the consumer groups' drop fence (floor, ids) | 18 |
//!
//! A shard keeps writing the format its apply version calls for, so a node rolled back to a
//! build that reads no newer format still opens what was written during an upgrade.

use openraft::alias::SnapshotMetaOf;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::ShardTypes;
use crate::state::{
    DROP_FENCE_APPLY_VERSION, GROUP_DROP_FENCE_APPLY_VERSION, LegacyState, ShardState,
    TOPIC_RETENTION_APPLY_VERSION,
};

/// The newest format this build writes and reads.
pub(crate) const SNAPSHOT_FORMAT: u32 = 9;

/// The oldest format this build reads.
const OLDEST_FORMAT: u32 = 2;

/// The format a shard at `apply_version` writes.
pub(crate) fn format_for(apply_version: u32) -> u32 {
    match apply_version {
        v if v < 5 => 3,
        v if v < 6 => 4,
        v if v < 9 => 5,
        v if v < TOPIC_RETENTION_APPLY_VERSION => 6,
        v if v < DROP_FENCE_APPLY_VERSION => 7,
        v if v < GROUP_DROP_FENCE_APPLY_VERSION => 8,
        _ => SNAPSHOT_FORMAT,
    }
}

/// The state a snapshot holds. One exists per snapshot decoded, briefly: its size does not
/// matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum SnapshotState {
    Current(ShardState),
    /// Format 2, upgraded on install (its entries go to the index file).
    Format2(LegacyState),
}

impl SnapshotState {
    pub(super) fn shard(&self) -> vela_proto::domain::ShardId {
        match self {
            SnapshotState::Current(s) => s.shard(),
            SnapshotState::Format2(s) => s.shard(),
        }
    }

    /// Where the log the state reads message bodies from must be held locally (below it they
    /// are gone, or in the tier).
    pub(super) fn local_floor(&self) -> u64 {
        match self {
            SnapshotState::Current(s) => s.local_floor(),
            SnapshotState::Format2(s) => s.truncated_below(),
        }
    }
}

pub(crate) struct SnapshotFile {
    pub meta: SnapshotMetaOf<ShardTypes>,
    pub state: SnapshotState,
}

/// Encodes `state` as of `meta` in the format its apply version calls for.
pub(crate) fn encode_snapshot(
    meta: &SnapshotMetaOf<ShardTypes>,
    state: &ShardState,
) -> Result<Vec<u8>, postcard::Error> {
    let format = format_for(state.apply_version());
    let mut out = postcard::to_stdvec(&format)?;
    out = postcard::to_extend(meta, out)?;
    out = postcard::to_extend(state, out)?;
    if format >= 4 {
        out = postcard::to_extend(state.dedup(), out)?;
    }
    if format >= 5 {
        out = postcard::to_extend(&state.dedup_clock_ms(), out)?;
    }
    if format >= 6 {
        out = postcard::to_extend(state.tier(), out)?;
    }
    if format >= 7 {
        out = postcard::to_extend(state.topic_retention(), out)?;
    }
    if format >= 8 {
        out = postcard::to_extend(state.topic_revisions(), out)?;
    }
    if format >= 9 {
        out = postcard::to_extend(state.group_fence(), out)?;
    }
    Ok(out)
}

/// The next part of a snapshot's bytes.
fn take<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), String> {
    postcard::take_from_bytes(bytes).map_err(|e| e.to_string())
}

/// Snapshot format 2: the state held every queue's entries.
#[derive(Deserialize)]
struct Format2File {
    _format: u32,
    meta: SnapshotMetaOf<ShardTypes>,
    state: LegacyState,
}

/// Decodes a snapshot generation and checks it is what its name says. What a format older
/// than the current one did not save is left as a state at the apply version that format was
/// written below has it (empty).
pub(crate) fn decode_snapshot(index: u64, bytes: &[u8]) -> Result<SnapshotFile, String> {
    let (format, rest) = take::<u32>(bytes)?;
    if !(OLDEST_FORMAT..=SNAPSHOT_FORMAT).contains(&format) {
        return Err(format!(
            "snapshot format {format} is not supported (this build reads {OLDEST_FORMAT} to \
             {SNAPSHOT_FORMAT})"
        ));
    }
    let file = if format == 2 {
        let f: Format2File = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
        SnapshotFile {
            meta: f.meta,
            state: SnapshotState::Format2(f.state),
        }
    } else {
        let (meta, rest) = take(rest)?;
        let (mut state, mut rest) = take::<ShardState>(rest)?;
        if format >= 4 {
            let (dedup, r) = take(rest)?;
            state.set_dedup(dedup);
            rest = r;
        }
        if format >= 5 {
            let (clock, r) = take(rest)?;
            state.set_dedup_clock_ms(clock);
            rest = r;
        }
        if format >= 6 {
            let (tier, r) = take(rest)?;
            state.set_tier(tier);
            rest = r;
        }
        if format >= 7 {
            let (retentions, r) = take(rest)?;
            state.set_topic_retentions(retentions);
            rest = r;
        }
        if format >= 8 {
            let (revisions, r) = take(rest)?;
            state.set_topic_revisions(revisions);
            rest = r;
        }
        if format >= 9 {
            let (fence, _) = take(rest)?;
            state.set_group_fence(fence);
        }
        SnapshotFile {
            meta,
            state: SnapshotState::Current(state),
        }
    };
    let covers = file.meta.last_log_id.map_or(0, |l| l.index);
    if covers != index {
        return Err(format!(
            "snapshot named for index {index} covers index {covers}"
        ));
    }
    Ok(file)
}

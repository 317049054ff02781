//! Reads of log entries this replica's log no longer holds: sealed segments that went to the
//! tier and were then evicted locally (ADR 0023). The shard's tier manifest says which object
//! holds an index; `vela_tier` reads just the records wanted, through its block cache.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use openraft::alias::EntryOf;
use vela_tier::SegmentRef;

use super::{ReadSource, RecordReadError, Shard, ShardTypes};
use crate::command::RecordRef;
use crate::state::TieredSegment;

/// Wanted indexes closer than this are read in one range (the records between come along).
const RUN_GAP: u64 = 16;

type Entries = HashMap<u64, Arc<EntryOf<ShardTypes>>>;

impl Shard {
    /// The entries `records` point at, each once: from the local log, else from the tier.
    /// Entries neither holds (retention removed them) are absent.
    pub(crate) async fn entries_for(
        &self,
        records: &[RecordRef],
    ) -> Result<Entries, RecordReadError> {
        let (mut found, missing) = self.local_entries(records)?;
        if !missing.is_empty() {
            self.tiered_entries(&missing, &mut found).await?;
        }
        Ok(found)
    }

    /// [`entries_for`](Self::entries_for) from a blocking thread.
    pub(crate) fn entries_blocking(
        &self,
        records: &[RecordRef],
    ) -> Result<Entries, RecordReadError> {
        let (mut found, missing) = self.local_entries(records)?;
        if !missing.is_empty() {
            tokio::runtime::Handle::current()
                .block_on(self.tiered_entries(&missing, &mut found))?;
        }
        Ok(found)
    }

    fn local_entries(&self, records: &[RecordRef]) -> Result<(Entries, Vec<u64>), RecordReadError> {
        let wanted: BTreeSet<u64> = records.iter().map(|r| r.log_index).collect();
        let mut found = HashMap::with_capacity(wanted.len());
        let mut missing = Vec::new();
        for index in wanted {
            match self.reader.entry_shared(index) {
                Ok(Some(entry)) => {
                    found.insert(index, entry);
                }
                Ok(None) => missing.push(index),
                Err(e) => {
                    return Err(RecordReadError {
                        shard: self.id,
                        log_index: index,
                        source: ReadSource::Log(e),
                    });
                }
            }
        }
        Ok((found, missing))
    }

    /// Reads `missing` (ascending) from the tiered segments that hold them.
    async fn tiered_entries(
        &self,
        missing: &[u64],
        found: &mut Entries,
    ) -> Result<(), RecordReadError> {
        let plan: Vec<(TieredSegment, Vec<u64>)> = {
            let applied = self.shared.applied.read();
            let floor = applied.state.truncated_below();
            let tier = applied.state.tier();
            let mut plan: Vec<(TieredSegment, Vec<u64>)> = Vec::new();
            for &index in missing.iter().filter(|i| **i >= floor) {
                let Some(segment) = tier.segment_for(index) else {
                    continue;
                };
                match plan.last_mut() {
                    Some((s, indexes)) if s.key == segment.key => indexes.push(index),
                    _ => plan.push((segment.clone(), vec![index])),
                }
            }
            plan
        };
        let Some(first) = plan.first().map(|(_, i)| i[0]) else {
            return Ok(());
        };
        let Some(tier) = self.tier.get() else {
            return Err(RecordReadError {
                shard: self.id,
                log_index: first,
                source: ReadSource::NoTier,
            });
        };
        for (segment, indexes) in plan {
            let object = SegmentRef {
                key: &segment.key,
                bytes: segment.bytes,
                first_index: segment.first_index,
                last_index: segment.last_index,
            };
            for (from, to) in runs(&indexes) {
                let entries = tier
                    .read_entries::<ShardTypes>(object, from, to)
                    .await
                    .map_err(|e| RecordReadError {
                        shard: self.id,
                        log_index: from,
                        source: ReadSource::Tier(Box::new(e)),
                    })?;
                for entry in entries {
                    let index = entry.log_id.index;
                    if indexes.binary_search(&index).is_ok() {
                        found.insert(index, Arc::new(entry));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Ascending indexes as ranges `(from, to)`, joined where they are less than [`RUN_GAP`] apart.
fn runs(indexes: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &i in indexes {
        match out.last_mut() {
            Some((_, to)) if i <= *to + RUN_GAP => *to = i,
            _ => out.push((i, i)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn close_indexes_read_as_one_range() {
        assert_eq!(
            super::runs(&[1, 2, 5, 40, 41, 100]),
            vec![(1, 5), (40, 41), (100, 100)]
        );
        assert!(super::runs(&[]).is_empty());
    }
}

//! Reading entries of a tiered segment: its footer (cached, verified) says where each record
//! is; the records come through the block cache and are verified as they are decoded.

use std::sync::Arc;

use vela_raft::entry::LogTypes;
use vela_raft::sealed::{self, SealedIndex};

use crate::{Tier, TierError};

/// A tiered segment as the manifest records it.
#[derive(Debug, Clone, Copy)]
pub struct SegmentRef<'a> {
    pub key: &'a str,
    pub bytes: u64,
    pub first_index: u64,
    pub last_index: u64,
}

impl Tier {
    /// The entries `from..=to` (clamped to the segment) of the tiered segment `segment`.
    pub async fn read_entries<C: LogTypes>(
        &self,
        segment: SegmentRef<'_>,
        from: u64,
        to: u64,
    ) -> Result<Vec<C::Entry>, TierError> {
        let index = self.sealed_index(segment).await?;
        let Some(range) = index.byte_range(from, to) else {
            return Ok(Vec::new());
        };
        let path = self.path(segment.key);
        let bytes = self.cache.read(&path, segment.bytes, range.clone()).await?;
        index
            .decode::<C>(&bytes, range.start)
            .map_err(|reason| TierError::Corrupt {
                key: segment.key.to_owned(),
                reason,
            })
    }

    /// The segment's footer, read once and kept in a bounded cache.
    async fn sealed_index(&self, segment: SegmentRef<'_>) -> Result<Arc<SealedIndex>, TierError> {
        let key: Arc<str> = Arc::from(segment.key);
        if let Some(index) = self.indexes.get(&key).await {
            return Ok(index);
        }
        let load = async {
            let corrupt = |reason: String| TierError::Corrupt {
                key: segment.key.to_owned(),
                reason,
            };
            let path = self.path(segment.key);
            let len = segment.bytes;
            let header = self.cache.read(&path, len, sealed::header_range()).await?;
            let trailer_at = sealed::trailer_range(len)
                .ok_or_else(|| corrupt(format!("{len} bytes is too short for a segment")))?;
            let trailer = self.cache.read(&path, len, trailer_at).await?;
            let (trailer, table_at) = sealed::decode_trailer(&trailer, len).map_err(corrupt)?;
            let table = self.cache.read(&path, len, table_at).await?;
            let index = SealedIndex::new(&header, trailer, &table).map_err(corrupt)?;
            if (index.first_index, index.last_index()) != (segment.first_index, segment.last_index)
            {
                return Err(corrupt(format!(
                    "it holds {}..={}, the manifest says {}..={}",
                    index.first_index,
                    index.last_index(),
                    segment.first_index,
                    segment.last_index
                )));
            }
            Ok(Arc::new(index))
        };
        self.indexes
            .try_get_with(key, load)
            .await
            .map_err(TierError::Shared)
    }
}

//! The read cache: fixed-size blocks of tiered objects, fetched by range reads and kept as
//! files on local disk, bounded in bytes (least recently used go first). A reader asking for
//! one record fetches the block around it, and the next block is fetched ahead in the
//! background while reads are not queueing, so a consumer replaying history reads mostly from
//! local disk. Objects never change under a key, so a cached block is never stale.

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::sync::Semaphore;
use tracing::debug;

use crate::{ReadLimits, TierError, TierStats};

/// A cached block's file; removed when the cache evicts it and no reader holds it.
struct BlockFile {
    path: PathBuf,
    len: u32,
}

impl Drop for BlockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

type BlockKey = (Arc<str>, u64);

struct Inner {
    store: Arc<dyn ObjectStore>,
    dir: PathBuf,
    blocks: moka::future::Cache<BlockKey, Arc<BlockFile>>,
    block_bytes: u64,
    reads: Semaphore,
    concurrent_reads: usize,
    next_file: AtomicU64,
    stats: Arc<TierStats>,
}

#[derive(Clone)]
pub(crate) struct BlockCache {
    inner: Arc<Inner>,
}

impl BlockCache {
    /// A cache in `dir`, which is emptied (blocks of an earlier process are not known).
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        dir: &FsPath,
        limits: ReadLimits,
        stats: Arc<TierStats>,
    ) -> Result<Self, TierError> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| TierError::io(format!("emptying {}", dir.display()), e))?;
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| TierError::io(format!("creating {}", dir.display()), e))?;
        // Least recently used first. Not moka's default (TinyLFU), whose admission refuses a
        // block seen once when the cache is full: readers scanning history each fetched it
        // again (four consumers of a group read the tier four times over).
        let blocks = moka::future::Cache::builder()
            .max_capacity(limits.cache_bytes)
            .weigher(|_: &BlockKey, block: &Arc<BlockFile>| block.len)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                dir: dir.to_owned(),
                blocks,
                block_bytes: limits.block_bytes,
                reads: Semaphore::new(limits.concurrent_reads),
                concurrent_reads: limits.concurrent_reads,
                next_file: AtomicU64::new(0),
                stats,
            }),
        })
    }

    /// The bytes `range` of the object at `path`, `len` bytes long.
    pub(crate) async fn read(
        &self,
        path: &Path,
        len: u64,
        range: Range<u64>,
    ) -> Result<Bytes, TierError> {
        if range.end > len || range.start >= range.end {
            return Err(TierError::Corrupt {
                key: path.to_string(),
                reason: format!("range {range:?} is outside its {len} bytes"),
            });
        }
        let bs = self.inner.block_bytes;
        let (first, last) = (range.start / bs, (range.end - 1) / bs);
        let name: Arc<str> = Arc::from(path.as_ref());
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        for block in first..=last {
            let start = range.start.max(block * bs) - block * bs;
            let end = range.end.min((block + 1) * bs) - block * bs;
            out.extend_from_slice(
                &self
                    .block_range(&name, path, len, block, start..end)
                    .await?,
            );
        }
        if (last + 1) * bs < len {
            self.read_ahead(name, path.clone(), len, last + 1);
        }
        Ok(out.freeze())
    }

    /// Bytes `within` of `block` (offsets inside the block), from its cached file.
    async fn block_range(
        &self,
        name: &Arc<str>,
        path: &Path,
        len: u64,
        block: u64,
        within: Range<u64>,
    ) -> Result<Vec<u8>, TierError> {
        let key = (name.clone(), block);
        let file = match self.inner.blocks.get(&key).await {
            Some(file) => {
                TierStats::add(&self.inner.stats.cache_hits, 1);
                file
            }
            None => {
                TierStats::add(&self.inner.stats.cache_misses, 1);
                let inner = self.inner.clone();
                let path = path.clone();
                self.inner
                    .blocks
                    .try_get_with(key, async move { inner.fetch(&path, len, block).await })
                    .await
                    .map_err(TierError::Shared)?
            }
        };
        if within.end > u64::from(file.len) {
            return Err(TierError::Corrupt {
                key: path.to_string(),
                reason: format!("block {block} is {} bytes", file.len),
            });
        }
        // Only the bytes wanted, not the whole block (the file holds it for the next reads).
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; (within.end - within.start) as usize];
            std::fs::File::open(&file.path)?.read_exact_at(&mut buf, within.start)?;
            Ok::<_, std::io::Error>(buf)
        })
        .await
        .map_err(|e| TierError::io("reading the tier cache", std::io::Error::other(e)))?
        .map_err(|e| TierError::io("reading the tier cache", e))
    }

    /// Fetches `block` in the background if it is not cached and reads are not queueing.
    fn read_ahead(&self, name: Arc<str>, path: Path, len: u64, block: u64) {
        let inner = self.inner.clone();
        let key = (name, block);
        if inner.blocks.contains_key(&key)
            || inner.reads.available_permits() * 2 < inner.concurrent_reads
        {
            return;
        }
        tokio::spawn(async move {
            let fetching = inner.clone();
            let result = inner
                .blocks
                .try_get_with(key, async move { fetching.fetch(&path, len, block).await })
                .await;
            if let Err(err) = result {
                debug!(error = %err, "tier read-ahead failed (the read will retry)");
            }
        });
    }
}

impl Inner {
    async fn fetch(&self, path: &Path, len: u64, block: u64) -> Result<Arc<BlockFile>, TierError> {
        let start = block * self.block_bytes;
        let end = (start + self.block_bytes).min(len);
        let bytes = {
            let _permit = self
                .reads
                .acquire()
                .await
                .map_err(|_| TierError::Config("the tier is closed".into()))?;
            self.store
                .get_range(path, start..end)
                .await
                .map_err(|e| TierError::store("read", path, e))?
        };
        TierStats::add(&self.stats.get_requests, 1);
        TierStats::add(&self.stats.get_bytes, bytes.len() as u64);
        if bytes.len() as u64 != end - start {
            return Err(TierError::Corrupt {
                key: path.to_string(),
                reason: format!("a read of {start}..{end} returned {} bytes", bytes.len()),
            });
        }
        let file = self.dir.join(format!(
            "{}.blk",
            self.next_file.fetch_add(1, Ordering::Relaxed)
        ));
        tokio::fs::write(&file, &bytes)
            .await
            .map_err(|e| TierError::io(format!("writing {}", file.display()), e))?;
        Ok(Arc::new(BlockFile {
            path: file,
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        }))
    }
}

#[cfg(test)]
mod tests {
    use object_store::PutPayload;
    use object_store::memory::InMemory;

    use super::*;

    /// Four readers scan an object of 256 blocks through a cache of 32, each a block behind
    /// the one before (as the consumers of one group replaying history do): each block is
    /// fetched once. (With moka's default admission policy: 1,132 fetches.)
    #[tokio::test]
    async fn readers_scanning_more_than_the_cache_holds_fetch_each_block_once() {
        const BLOCK: u64 = 1024;
        const BLOCKS: u64 = 256;
        let store = Arc::new(InMemory::new());
        let path = Path::from("shard-0/segment");
        let object: Vec<u8> = (0..BLOCK * BLOCKS).map(|i| (i % 251) as u8).collect();
        store
            .put(&path, PutPayload::from(object.clone()))
            .await
            .expect("put");
        let dir = tempfile::tempdir().expect("tempdir");
        let stats = Arc::new(TierStats::default());
        let limits = ReadLimits {
            cache_bytes: 32 * BLOCK,
            block_bytes: BLOCK,
            concurrent_reads: 4,
            part_bytes: 5 << 20,
        };
        let cache = BlockCache::new(store, &dir.path().join("cache"), limits, stats.clone())
            .expect("cache");
        let len = BLOCK * BLOCKS;
        for block in 0..BLOCKS {
            // The reader ahead reads this block, the one behind the block before it.
            for b in (0..4).filter_map(|behind| block.checked_sub(behind)) {
                cache.inner.blocks.run_pending_tasks().await;
                let range = b * BLOCK + 7..(b + 1) * BLOCK - 7;
                let got = cache.read(&path, len, range.clone()).await.expect("reads");
                assert_eq!(&got[..], &object[range.start as usize..range.end as usize]);
            }
        }
        let got = cache
            .read(&path, len, (BLOCKS - 1) * BLOCK..len)
            .await
            .expect("reads the last block again");
        assert_eq!(got.len() as u64, BLOCK);
        assert_eq!(
            stats.get_requests.load(Ordering::Relaxed),
            BLOCKS,
            "every block fetched once"
        );
    }
}

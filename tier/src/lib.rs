//! vela-tier: the object-storage tier of the store (ADR 0023). Sealed log segments (format 2,
//! ADR 0007) are uploaded unchanged to S3, Alibaba OSS (through its S3 API), any S3-compatible
//! server or a local directory, through the `object_store` crate, and read back by byte
//! ranges (header, footer, then records) through a bounded block cache on local disk.
//!
//! This crate moves bytes and names objects; which segments go, when they are recorded (the
//! shard's manifest, committed through its Raft log) and when local copies go is the store's.
//!
//! Object layout under the configured prefix:
//! `shards/<shard:05>/<first index:020>-<last index:020>-t<term>.seg`, where the term is the
//! uploading leader's: two leaders never write the same key, so a deposed leader's upload can
//! never replace the one the manifest names.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cache;
mod config;
mod credentials;
pub mod faults;
mod read;
pub mod signed_by;
mod upload;

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

pub use config::TierConfig;
pub use object_store;
pub use read::SegmentRef;
pub use upload::{Pace, Uploaded};

use cache::BlockCache;

/// What can go wrong talking to the tier.
#[derive(thiserror::Error, Debug)]
pub enum TierError {
    #[error("tier configuration: {0}")]
    Config(String),
    #[error("tier {op} {key}: {source}")]
    Store {
        op: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("tier {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// An upload did not read back as written; nothing was recorded.
    #[error("tier upload of {key} did not verify: {reason}")]
    Verify { key: String, reason: String },
    /// A failure shared by every reader that waited for the same block.
    #[error(transparent)]
    Shared(Arc<TierError>),
    /// Bytes read from the tier are not what the manifest says the object holds.
    #[error("tiered segment {key} is damaged: {reason}")]
    Corrupt { key: String, reason: String },
}

impl TierError {
    fn store(op: &'static str, key: &Path, source: object_store::Error) -> Self {
        TierError::Store {
            op,
            key: key.to_string(),
            source,
        }
    }

    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        TierError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Where the tier is, parsed from `tier.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    S3 {
        bucket: String,
        prefix: String,
    },
    File(PathBuf),
    /// In memory (tests only; gone with the process).
    Memory,
}

impl Location {
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!(
                    "tier.url {url:?} names no bucket (s3://bucket/prefix)"
                ));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "tier.url {url:?} must be an absolute path (file:///var/lib/vela/tier)"
                ));
            }
            return Ok(Location::File(PathBuf::from(path)));
        }
        if url == "memory://" {
            return Ok(Location::Memory);
        }
        Err(format!(
            "tier.url {url:?} is not s3://bucket/prefix or file:///path"
        ))
    }
}

/// Limits of the read path.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub cache_bytes: u64,
    pub block_bytes: u64,
    pub concurrent_reads: usize,
    pub part_bytes: usize,
}

impl ReadLimits {
    pub fn of(cfg: &TierConfig) -> Self {
        Self {
            cache_bytes: cfg.cache_size.as_u64(),
            block_bytes: cfg.read_block.as_u64(),
            concurrent_reads: cfg.max_concurrent_reads,
            part_bytes: usize::try_from(cfg.part_size.as_u64()).unwrap_or(usize::MAX),
        }
    }
}

/// Counters of what the tier did (for metrics and `tier status`).
#[derive(Debug, Default)]
pub struct TierStats {
    pub uploads: AtomicU64,
    pub upload_bytes: AtomicU64,
    pub upload_failures: AtomicU64,
    pub deletes: AtomicU64,
    /// Range reads sent to the object store.
    pub get_requests: AtomicU64,
    pub get_bytes: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
}

impl TierStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// One object under a shard's prefix, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSegment {
    pub key: String,
    pub first_index: u64,
    pub last_index: u64,
    pub term: u64,
    pub bytes: u64,
    pub modified: SystemTime,
}

/// A connected tier.
pub struct Tier {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The URL without credentials, for messages.
    describe: String,
    cache: BlockCache,
    /// Footers of tiered segments, bounded by their size in memory.
    indexes: moka::future::Cache<Arc<str>, Arc<vela_raft::sealed::SealedIndex>>,
    stats: Arc<TierStats>,
    part_bytes: usize,
    /// What an S3 tier signs requests with (`None` for other tiers).
    credentials: Option<Arc<credentials::SwitchCredentials>>,
    /// The directory of a `file://` tier: uploads are fsynced there (object_store's local
    /// store does not), so a power cut cannot lose a copy whose local original is gone.
    fs_root: Option<PathBuf>,
    /// When each directory of a `file://` tier was last looked through for unfinished copies.
    stale_scans: parking_lot::Mutex<std::collections::HashMap<PathBuf, std::time::Instant>>,
}

/// Memory for cached footers (4 bytes per record).
const FOOTER_CACHE_BYTES: u64 = 64 << 20;

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier").field("at", &self.describe).finish()
    }
}

impl Tier {
    /// Connects to the tier `cfg.url` names (which must be set), with its read cache in
    /// `cache_dir` (emptied first). Nothing is sent to the store yet.
    pub fn open(cfg: &TierConfig, cache_dir: &FsPath) -> Result<Arc<Tier>, TierError> {
        cfg.validate().map_err(TierError::Config)?;
        let url = cfg
            .enabled_url()
            .ok_or_else(|| TierError::Config("tier.url is not set".into()))?;
        let location = Location::parse(url).map_err(TierError::Config)?;
        let mut credentials = None;
        let (store, prefix, fs_root): (Arc<dyn ObjectStore>, String, _) = match location {
            Location::S3 { bucket, prefix } => {
                let (store, switch) = s3(cfg, &bucket)?;
                credentials = Some(switch);
                (Arc::new(store), prefix, None)
            }
            Location::File(dir) => {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| TierError::io(format!("creating {}", dir.display()), e))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| TierError::Config(format!("tier directory {dir:?}: {e}")))?
                    .with_automatic_cleanup(true);
                (Arc::new(fs), String::new(), Some(dir))
            }
            Location::Memory => (
                Arc::new(object_store::memory::InMemory::new()),
                String::new(),
                None,
            ),
        };
        let limits = ReadLimits::of(cfg);
        Self::build(store, &prefix, url, cache_dir, limits, fs_root, credentials)
    }

    /// A tier over `store` (tests wrap one in [`faults::FaultyStore`]).
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        describe: &str,
        cache_dir: &FsPath,
        limits: ReadLimits,
    ) -> Result<Arc<Tier>, TierError> {
        Self::build(store, prefix, describe, cache_dir, limits, None, None)
    }

    fn build(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        describe: &str,
        cache_dir: &FsPath,
        limits: ReadLimits,
        fs_root: Option<PathBuf>,
        credentials: Option<Arc<credentials::SwitchCredentials>>,
    ) -> Result<Arc<Tier>, TierError> {
        let stats = Arc::new(TierStats::default());
        let cache = BlockCache::new(store.clone(), cache_dir, limits, stats.clone())?;
        Ok(Arc::new(Tier {
            store,
            prefix: Path::from(prefix),
            describe: describe.to_owned(),
            cache,
            indexes: moka::future::Cache::builder()
                .max_capacity(FOOTER_CACHE_BYTES)
                .weigher(|_, index: &Arc<vela_raft::sealed::SealedIndex>| {
                    u32::try_from(index.memory_size()).unwrap_or(u32::MAX)
                })
                .build(),
            stats,
            part_bytes: limits.part_bytes.max(5 << 20),
            credentials,
            fs_root,
            stale_scans: Default::default(),
        }))
    }

    /// The tier's URL (no credentials).
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Signs requests with `pair` (access key id, secret access key) from the next one on, or
    /// (`None`) with the configured credentials again. Answers whether that changed anything;
    /// always `false` for a tier that is not S3 (it has no credentials).
    pub fn use_credentials(&self, pair: Option<(&str, &str)>) -> bool {
        self.credentials.as_ref().is_some_and(|c| c.set(pair))
    }

    /// The access key id of the controller's pair, while the tier signs with it.
    pub fn managed_key_id(&self) -> Option<String> {
        self.credentials.as_ref().and_then(|c| c.managed_key_id())
    }

    /// Whether the tier signs requests at all (S3), so credentials matter.
    pub fn signs_requests(&self) -> bool {
        self.credentials.is_some()
    }

    pub fn stats(&self) -> &Arc<TierStats> {
        &self.stats
    }

    /// The key of a segment of `shard` holding `first..=last`, uploaded by the leader of `term`.
    pub fn segment_key(shard: u32, first: u64, last: u64, term: u64) -> String {
        format!("shards/{shard:05}/{first:020}-{last:020}-t{term}.seg")
    }

    /// The first index, last index and term a segment key names.
    pub fn parse_segment_key(key: &str) -> Option<(u64, u64, u64)> {
        let name = key.rsplit('/').next()?.strip_suffix(".seg")?;
        let mut parts = name.split('-');
        let first = parts.next()?.parse().ok()?;
        let last = parts.next()?.parse().ok()?;
        let term = parts.next()?.strip_prefix('t')?.parse().ok()?;
        parts.next().is_none().then_some((first, last, term))
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.as_ref().is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    /// Deletes an object (a missing one is not an error).
    pub async fn delete(&self, key: &str) -> Result<(), TierError> {
        let path = self.path(key);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                TierStats::add(&self.stats.deletes, 1);
                Ok(())
            }
            Err(e) => Err(TierError::store("delete", &path, e)),
        }
    }

    /// The segment objects under `shard`'s prefix (keys that are not segment keys are skipped).
    pub async fn list_segments(&self, shard: u32) -> Result<Vec<ListedSegment>, TierError> {
        let dir = self.path(&format!("shards/{shard:05}"));
        let metas: Vec<_> = self
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| TierError::store("list", &dir, e))?;
        let skip = if self.prefix.as_ref().is_empty() {
            0
        } else {
            self.prefix.as_ref().len() + 1
        };
        let mut out: Vec<ListedSegment> = metas
            .into_iter()
            .filter_map(|m| {
                let key = m.location.as_ref().get(skip..)?.to_owned();
                let (first_index, last_index, term) = Self::parse_segment_key(&key)?;
                Some(ListedSegment {
                    key,
                    first_index,
                    last_index,
                    term,
                    bytes: m.size,
                    modified: SystemTime::from(m.last_modified),
                })
            })
            .collect();
        out.sort_by_key(|a| (a.first_index, a.term));
        Ok(out)
    }
}

/// Delays between attempts after consecutive failures talking to the tier: from one second,
/// doubling with jitter, capped at five minutes, never giving up (local data is kept meanwhile).
pub fn failure_backoff() -> impl Iterator<Item = std::time::Duration> + Send {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_secs(1))
        .with_max_delay(std::time::Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
        .build()
}

/// An S3 (or S3-compatible) store from the config, the usual `AWS_…` variables filling in
/// what it leaves out, signing with what the returned switch says (the configured
/// credentials until it is given others).
fn s3(
    cfg: &TierConfig,
    bucket: &str,
) -> Result<
    (
        object_store::aws::AmazonS3,
        Arc<credentials::SwitchCredentials>,
    ),
    TierError,
> {
    let builder = s3_builder(cfg, bucket);
    let configured = builder
        .clone()
        .build()
        .map_err(|e| TierError::Config(format!("S3 tier: {e}")))?
        .credentials()
        .clone();
    let switch = Arc::new(credentials::SwitchCredentials::new(configured));
    let store = builder
        .with_credentials(switch.clone())
        .build()
        .map_err(|e| TierError::Config(format!("S3 tier: {e}")))?;
    Ok((store, switch))
}

/// The builder of the configured S3 store.
fn s3_builder(cfg: &TierConfig, bucket: &str) -> object_store::aws::AmazonS3Builder {
    // reqwest's rustls runs on the process's default provider: ring, as everywhere in Vela.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_allow_http(cfg.allow_http)
        .with_virtual_hosted_style_request(cfg.virtual_hosted_style);
    if let Some(endpoint) = &cfg.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let region = cfg
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "us-east-1".to_owned());
    builder = builder.with_region(region);
    if let Some(key) = &cfg.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &cfg.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    builder
}

#[cfg(test)]
mod tests;

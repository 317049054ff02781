//! Uploading a sealed segment: unchanged, in one request or in parts, then verified by reading
//! its size and its footer back before anyone records it.

use std::sync::Arc;

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use tracing::debug;
use vela_raft::vfs::VfsFile;

use crate::{Tier, TierError, TierStats};

/// An upload that read back as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub key: String,
    pub bytes: u64,
    /// CRC-32C of the whole object.
    pub crc32c: u32,
}

/// Bytes compared when an upload is verified: the end of the object, where the footer is.
const VERIFY_TAIL: u64 = 4096;
/// Parts in flight during a multipart upload.
const PARTS_IN_FLIGHT: usize = 2;
/// Bytes read from the local file at a time.
const READ_CHUNK: u64 = 1 << 20;

/// Bytes a paced copy into a `file://` tier writes between two syncs of the new file.
const DIR_SYNC_EVERY: u64 = 4 << 20;
/// A copy into a `file://` tier left unfinished this long ago (a crash mid-copy) is removed by
/// a later copy into the same directory, which looks at most this often (a shard's directory
/// holds every tiered segment: a month of them is many thousands of names).
const STALE_COPY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes the unfinished copies (`*#0`) in `dir` older than [`STALE_COPY`].
fn remove_stale_copies(dir: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().ends_with("#0") {
            continue;
        }
        let stale = entry
            .metadata()?
            .modified()?
            .elapsed()
            .is_ok_and(|age| age > STALE_COPY);
        if stale {
            tracing::warn!(path = %entry.path().display(), "removing an unfinished copy into the tier");
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Runs `f` (file I/O) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

/// A paced upload into a `file://` tier (`root`), written here rather than through
/// `object_store`: the copy is synced every [`DIR_SYNC_EVERY`] as it goes, so its last sync is
/// small (the second a 64 MiB copy was flushed in, sends' p99 rose to 16–22 ms at 5,000 msg/s),
/// then renamed into place and its directory synced. The new file is `<key>#0` until then (a
/// name `object_store`'s listing skips, as it skips its own staged uploads); one a crash left
/// behind goes with a later copy into its directory. Returns the CRC-32C.
async fn write_to_dir(
    tier: &Tier,
    root: &std::path::Path,
    key: &str,
    file: &Arc<dyn VfsFile>,
    len: u64,
    pace: Pace,
) -> Result<u32, TierError> {
    let dest = root.join(key);
    let mut staging = dest.clone().into_os_string();
    staging.push("#0");
    let staging = std::path::PathBuf::from(staging);
    let failed = |what: &str, e| TierError::io(format!("{what} {}", dest.display()), e);
    let scan = dest.parent().is_some_and(|dir| {
        let mut scans = tier.stale_scans.lock();
        let due = scans.get(dir).is_none_or(|at| at.elapsed() >= STALE_COPY);
        if due {
            scans.insert(dir.to_owned(), std::time::Instant::now());
        }
        due
    });
    let out = {
        let (dest, staging) = (dest.clone(), staging.clone());
        blocking(move || {
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir)?;
                if scan {
                    remove_stale_copies(dir)?;
                }
            }
            std::fs::File::create(&staging)
        })
        .await
        .map_err(|e| failed("creating", e))?
    };
    let out = Arc::new(out);
    let copied: Result<u32, TierError> = async {
        let started = tokio::time::Instant::now();
        let (mut crc, mut sent, mut unsynced) = (0u32, 0u64, 0u64);
        while sent < len {
            tokio::time::sleep_until(started + pace.due(sent)).await;
            let n = READ_CHUNK.min(len - sent);
            let buf = read_at(file, sent, n)
                .await
                .map_err(|e| TierError::io(format!("reading the segment for {key}"), e))?;
            crc = crc32c::crc32c_append(crc, &buf);
            unsynced += n;
            let sync = unsynced >= DIR_SYNC_EVERY;
            if sync {
                unsynced = 0;
            }
            let (out, at) = (out.clone(), sent);
            blocking(move || {
                use std::os::unix::fs::FileExt as _;
                out.write_all_at(&buf, at)?;
                if sync {
                    out.sync_data()?;
                }
                Ok(())
            })
            .await
            .map_err(|e| failed("writing", e))?;
            sent += n;
        }
        let (out, staging, dest) = (out.clone(), staging.clone(), dest.clone());
        blocking(move || {
            out.sync_all()?;
            std::fs::rename(&staging, &dest)?;
            if let Some(dir) = dest.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| failed("publishing", e))?;
        Ok(crc)
    }
    .await;
    if copied.is_err() {
        let _ = blocking(move || std::fs::remove_file(&staging)).await;
    }
    copied
}

/// Reads `len` bytes at `offset` of `file` off the async workers.
async fn read_at(file: &Arc<dyn VfsFile>, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let file = file.clone();
    blocking(move || {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    })
    .await
}

/// How fast an upload reads its segment and hands it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// As fast as the object store takes it.
    Unpaced,
    /// At most this many bytes per second, a chunk at a time, so that a segment does not take
    /// a core and the disk in one burst beside the traffic it was written by.
    BytesPerSecond(u64),
}

impl Pace {
    /// The pace that spreads `pending` bytes over `spread`, never slower than `floor` bytes per
    /// second. Unpaced when `spread` is zero.
    pub fn spreading(pending: u64, spread: std::time::Duration, floor: u64) -> Pace {
        let millis = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX);
        if millis == 0 {
            return Pace::Unpaced;
        }
        Pace::BytesPerSecond((pending.saturating_mul(1000) / millis).max(floor).max(1))
    }

    /// How long after the start `sent` bytes may have gone.
    pub(crate) fn due(self, sent: u64) -> std::time::Duration {
        match self {
            Pace::Unpaced => std::time::Duration::ZERO,
            Pace::BytesPerSecond(rate) => {
                std::time::Duration::from_secs_f64(sent as f64 / rate as f64)
            }
        }
    }
}

impl Tier {
    /// Uploads the first `len` bytes of `file` (a sealed segment, read through the storage
    /// seam) as `key`. On any failure nothing is recorded and a partial multipart upload is
    /// aborted; the caller retries later.
    pub async fn upload_segment(
        &self,
        key: &str,
        file: &Arc<dyn VfsFile>,
        len: u64,
    ) -> Result<Uploaded, TierError> {
        self.upload_segment_paced(key, file, len, Pace::Unpaced)
            .await
    }

    /// [`Tier::upload_segment`] at `pace`: read in chunks of 1 MiB, each no earlier than the
    /// pace allows. A `file://` tier is then written chunk by chunk and synced as it goes.
    pub async fn upload_segment_paced(
        &self,
        key: &str,
        file: &Arc<dyn VfsFile>,
        len: u64,
        pace: Pace,
    ) -> Result<Uploaded, TierError> {
        let result = self.upload_once(key, file, len, pace).await;
        match &result {
            Ok(up) => {
                TierStats::add(&self.stats.uploads, 1);
                TierStats::add(&self.stats.upload_bytes, up.bytes);
            }
            Err(_) => TierStats::add(&self.stats.upload_failures, 1),
        }
        result
    }

    async fn upload_once(
        &self,
        key: &str,
        file: &Arc<dyn VfsFile>,
        len: u64,
        pace: Pace,
    ) -> Result<Uploaded, TierError> {
        let path = self.path(key);
        let reading = |e| TierError::io(format!("reading the segment for {key}"), e);
        let mut crc = 0u32;
        let direct = matches!(pace, Pace::BytesPerSecond(_)) && self.fs_root.is_some();
        if let (true, Some(root)) = (direct, &self.fs_root) {
            crc = write_to_dir(self, root, key, file, len, pace).await?;
        } else if len <= self.part_bytes as u64 {
            let buf = read_at(file, 0, len).await.map_err(reading)?;
            crc = crc32c::crc32c(&buf);
            self.store
                .put(&path, PutPayload::from(Bytes::from(buf)))
                .await
                .map_err(|e| TierError::store("put", &path, e))?;
        } else {
            let upload = self
                .store
                .put_multipart(&path)
                .await
                .map_err(|e| TierError::store("start multipart upload of", &path, e))?;
            let mut parts = WriteMultipart::new_with_chunk_size(upload, self.part_bytes);
            let started = tokio::time::Instant::now();
            let streamed: Result<(), TierError> = async {
                let mut sent = 0u64;
                while sent < len {
                    tokio::time::sleep_until(started + pace.due(sent)).await;
                    let n = READ_CHUNK.min(len - sent);
                    let buf = read_at(file, sent, n).await.map_err(reading)?;
                    crc = crc32c::crc32c_append(crc, &buf);
                    parts
                        .wait_for_capacity(PARTS_IN_FLIGHT)
                        .await
                        .map_err(|e| TierError::store("upload a part of", &path, e))?;
                    parts.write(&buf);
                    sent += n;
                }
                Ok(())
            }
            .await;
            if let Err(err) = streamed {
                let _ = parts.abort().await;
                return Err(err);
            }
            parts
                .finish()
                .await
                .map_err(|e| TierError::store("complete multipart upload of", &path, e))?;
        }
        self.verify(key, file, len).await?;
        if !direct {
            // `write_to_dir` synced its copy and directory already.
            self.sync_local_copy(key).await?;
        }
        debug!(key, bytes = len, "uploaded a segment to the tier");
        Ok(Uploaded {
            key: key.to_owned(),
            bytes: len,
            crc32c: crc,
        })
    }

    /// In a `file://` tier: makes the object's file and its directory entry durable.
    async fn sync_local_copy(&self, key: &str) -> Result<(), TierError> {
        let Some(root) = &self.fs_root else {
            return Ok(());
        };
        let path = root.join(key);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::File::open(&path)?.sync_all()?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| TierError::io(format!("syncing {key}"), std::io::Error::other(e)))?
        .map_err(|e| TierError::io(format!("syncing {key}"), e))
    }

    /// The object must have the file's length and end with the file's last bytes.
    async fn verify(&self, key: &str, file: &Arc<dyn VfsFile>, len: u64) -> Result<(), TierError> {
        let path = self.path(key);
        let failed = |reason: String| TierError::Verify {
            key: key.to_owned(),
            reason,
        };
        let meta = self
            .store
            .head(&path)
            .await
            .map_err(|e| TierError::store("head", &path, e))?;
        if meta.size != len {
            return Err(failed(format!(
                "the object has {} bytes, the file {len}",
                meta.size
            )));
        }
        let tail = len.saturating_sub(VERIFY_TAIL)..len;
        let remote = self
            .store
            .get_range(&path, tail.clone())
            .await
            .map_err(|e| TierError::store("read back", &path, e))?;
        let local = read_at(file, tail.start, tail.end - tail.start)
            .await
            .map_err(|e| TierError::io(format!("reading the segment for {key}"), e))?;
        if remote.as_ref() != local.as_slice() {
            return Err(failed("its last bytes differ from the file's".into()));
        }
        Ok(())
    }
}

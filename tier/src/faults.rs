//! An object store that fails on demand, for tests of what the tier's users do when the store
//! is unreachable, slow or returns errors: failed puts, failed parts of a multipart upload,
//! failed reads, added latency. It also counts the requests it passes on.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};
use parking_lot::Mutex;

/// What to break.
#[derive(Debug, Default)]
pub struct Faults {
    /// Every write (put, multipart start, part, completion) fails.
    pub fail_writes: AtomicBool,
    /// Parts of multipart uploads fail after this many succeeded (0: none fail).
    pub fail_parts_after: AtomicU64,
    /// Every read fails.
    pub fail_reads: AtomicBool,
    /// Every list and delete fails.
    pub fail_metadata: AtomicBool,
    /// Added to every request.
    pub latency: Mutex<Duration>,
}

/// Requests passed on to the wrapped store.
#[derive(Debug, Default)]
pub struct Requests {
    pub puts: AtomicU64,
    pub parts: AtomicU64,
    pub gets: AtomicU64,
    pub lists: AtomicU64,
    pub deletes: AtomicU64,
}

/// An [`ObjectStore`] that breaks as its [`Faults`] say.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    pub faults: Arc<Faults>,
    pub requests: Arc<Requests>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            faults: Arc::default(),
            requests: Arc::default(),
        }
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: format!("injected failure: {what}").into(),
    }
}

async fn delay(faults: &Faults) {
    let latency = *faults.latency.lock();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        delay(&self.faults).await;
        if self.faults.fail_writes.load(Ordering::SeqCst) {
            return Err(injected("put"));
        }
        self.requests.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        delay(&self.faults).await;
        if self.faults.fail_writes.load(Ordering::SeqCst) {
            return Err(injected("multipart start"));
        }
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultyUpload {
            inner,
            faults: self.faults.clone(),
            requests: self.requests.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        delay(&self.faults).await;
        if self.faults.fail_reads.load(Ordering::SeqCst) {
            return Err(injected("get"));
        }
        self.requests.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        delay(&self.faults).await;
        if self.faults.fail_reads.load(Ordering::SeqCst) {
            return Err(injected("get ranges"));
        }
        self.requests.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        if self.faults.fail_metadata.load(Ordering::SeqCst) {
            return Box::pin(futures::stream::once(async { Err(injected("delete")) }));
        }
        self.requests.deletes.fetch_add(1, Ordering::SeqCst);
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        if self.faults.fail_metadata.load(Ordering::SeqCst) {
            return Box::pin(futures::stream::once(async { Err(injected("list")) }));
        }
        self.requests.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        if self.faults.fail_metadata.load(Ordering::SeqCst) {
            return Err(injected("list"));
        }
        self.requests.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        if self.faults.fail_writes.load(Ordering::SeqCst) {
            return Err(injected("copy"));
        }
        self.inner.copy_opts(from, to, options).await
    }
}

#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    faults: Arc<Faults>,
    requests: Arc<Requests>,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let n = self.requests.parts.fetch_add(1, Ordering::SeqCst) + 1;
        let after = self.faults.fail_parts_after.load(Ordering::SeqCst);
        if self.faults.fail_writes.load(Ordering::SeqCst) || (after > 0 && n > after) {
            return Box::pin(async { Err(injected("upload part")) });
        }
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        if self.faults.fail_writes.load(Ordering::SeqCst) {
            return Err(injected("complete multipart"));
        }
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}

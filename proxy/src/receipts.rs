//! Receipt handles whose keys can change (ADR 0030): the keys of the proxy's config, if any,
//! and the keys the controller manages, fetched at start, every minute, and at once when a
//! handle names a managed key this proxy has not seen yet (another proxy rotated first).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;
use vela_proto::ControllerApi;
use vela_proto::receipt::ReceiptCodec;
use vela_proto::receipt::{ReceiptError, ReceiptTicket};
use vela_proto::receipt_keys::{ConfiguredKeys, MANAGED_KEY_BASE};

use vela_proto::pb::rocketmq::Code;

use crate::status::RpcError;

/// How often the managed keys are fetched again.
const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// How soon a failed first fetch is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// At most one fetch for unknown keys in this long (a forged handle cannot make every request
/// a controller call).
const MIN_FETCH_GAP: Duration = Duration::from_secs(1);

pub(crate) struct Receipts {
    configured: ConfiguredKeys,
    /// The codec in use (`None` until the first keys are known), replaced when keys change.
    current: RwLock<Option<Arc<ReceiptCodec>>>,
    /// When the last fetch for an unknown key started (and serializes fetches).
    fetched: tokio::sync::Mutex<Option<Instant>>,
}

impl Receipts {
    /// Starts with the configured keys when they are enough to sign (a signing key pinned to
    /// a managed id waits for the first fetch).
    pub(crate) fn new(configured: ConfiguredKeys) -> Self {
        let current = configured.codec(None).ok().flatten().map(Arc::new);
        Self {
            configured,
            current: RwLock::new(current),
            fetched: tokio::sync::Mutex::new(None),
        }
    }

    /// Fetches the keys now if none are known yet (a receive right after the proxy started);
    /// UNAVAILABLE if there are still none, before anything is delivered.
    pub(crate) async fn ensure_loaded(
        &self,
        controller: &dyn ControllerApi,
    ) -> Result<(), RpcError> {
        if self.current.read().is_none()
            && let Err(err) = self.fetch(controller, false).await
        {
            tracing::warn!(error = %err, "cannot load receipt keys");
        }
        if self.current.read().is_some() {
            Ok(())
        } else {
            Err(not_loaded())
        }
    }

    /// Signs `ticket`; UNAVAILABLE until the first keys are known.
    pub(crate) fn encode(&self, ticket: &ReceiptTicket) -> Result<String, RpcError> {
        match self.current.read().clone() {
            Some(codec) => Ok(codec.encode(ticket)),
            None => Err(not_loaded()),
        }
    }

    /// Verifies `handle`; a managed key not known yet is fetched once before giving up (as are
    /// the keys, when an ack arrives before the proxy's first fetch finished).
    pub(crate) async fn decode(
        &self,
        controller: &dyn ControllerApi,
        handle: &str,
    ) -> Result<ReceiptTicket, RpcError> {
        self.ensure_loaded(controller).await?;
        let codec = self.current.read().clone().ok_or_else(not_loaded)?;
        match codec.decode(handle) {
            Err(ReceiptError::UnknownKey(id)) if id >= MANAGED_KEY_BASE => {
                if let Err(err) = self.fetch(controller, true).await {
                    tracing::warn!(key = id, error = %err, "cannot fetch receipt keys");
                }
                let codec = self.current.read().clone().ok_or_else(not_loaded)?;
                Ok(codec.decode(handle)?)
            }
            other => Ok(other?),
        }
    }

    /// Fetches the managed keys and puts them to use. `eager` (for a handle naming an unknown
    /// key): skipped when another such fetch started within the last second.
    pub(crate) async fn fetch(
        &self,
        controller: &dyn ControllerApi,
        eager: bool,
    ) -> Result<(), String> {
        let mut last = self.fetched.lock().await;
        if eager {
            if last.is_some_and(|at| at.elapsed() < MIN_FETCH_GAP) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let managed = controller.receipt_keys().await.map_err(|e| e.to_string())?;
        if let Some(codec) = self.configured.codec(Some(&managed))? {
            *self.current.write() = Some(Arc::new(codec));
        }
        Ok(())
    }
}

impl Receipts {
    #[cfg(test)]
    pub(crate) fn current_codec(&self) -> Arc<ReceiptCodec> {
        self.current.read().clone().expect("keys loaded")
    }
}

fn not_loaded() -> RpcError {
    RpcError::new(
        Code::HaNotAvailable,
        "receipt keys are not loaded from the controller yet; retry",
    )
}

/// Keeps the managed keys fresh until `shutdown`: at once (again every 2 s until it works),
/// then every minute.
pub(crate) async fn keep_fresh(
    receipts: Arc<Receipts>,
    controller: Arc<dyn ControllerApi>,
    shutdown: CancellationToken,
) {
    let mut loaded = false;
    loop {
        match receipts.fetch(controller.as_ref(), false).await {
            Ok(()) => {
                if !loaded {
                    tracing::debug!("receipt keys loaded from the controller");
                }
                loaded = true;
            }
            Err(err) if loaded => {
                tracing::warn!(error = %err, "cannot refresh receipt keys; using the ones known");
            }
            Err(err) => tracing::warn!(error = %err, "cannot load receipt keys yet"),
        }
        let wait = if loaded { REFRESH_EVERY } else { RETRY_EVERY };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

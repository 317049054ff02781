//! Connecting a store to its object-storage tier from `[tier]` (ADR 0023).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use vela_proto::ControllerApi;
use vela_tier::{Tier, TierConfig};

use crate::config::VelaConfig;

/// How long the start-up check of the tier may take before the node starts anyway.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a store node asks the controller for the tier credentials it keeps.
const CREDENTIALS_EVERY: Duration = Duration::from_secs(10);

/// The tier settings this node uses: `[tier]`, with `url` defaulting to
/// `file://<data_dir>/tier` in standalone (so tiering works with no S3 at all). `None`: no tier.
pub fn effective(config: &VelaConfig, standalone: bool) -> anyhow::Result<Option<TierConfig>> {
    let mut tier = config.tier.clone();
    match tier.url.as_deref() {
        Some("") => return Ok(None),
        Some(_) => {}
        None if standalone => {
            let dir = std::path::absolute(config.data_dir.join("tier"))
                .context("resolving the standalone tier directory")?;
            tier.url = Some(format!("file://{}", dir.display()));
        }
        None => return Ok(None),
    }
    if tier.cache_dir.is_none() {
        tier.cache_dir = Some(config.data_dir.join("tier-cache"));
    }
    Ok(Some(tier))
}

/// Opens the tier `config` names (if any) and attaches it to `store`. An unreachable object
/// store does not stop the node (sends go on; local data is kept until uploads succeed): it
/// is logged here and reported by every tiering pass.
pub async fn attach(
    config: &VelaConfig,
    store: &vela_store::Store,
    standalone: bool,
) -> anyhow::Result<Option<Arc<Tier>>> {
    let Some(cfg) = effective(config, standalone)? else {
        return Ok(None);
    };
    let cache = cfg
        .cache_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("tier-cache"));
    let tier = Tier::open(&cfg, &cache).context("tier failed to open")?;
    match reachable(&tier).await {
        Ok(()) => info!(
            tier = tier.describe(),
            "tiering sealed segments to object storage"
        ),
        Err(err) => {
            warn!(tier = tier.describe(), error = %err, "the tier is not reachable now; segments stay local until it is")
        }
    }
    store
        .attach_tier(
            tier.clone(),
            vela_store::TierSettings {
                interval: cfg.interval,
                orphan_grace: cfg.orphan_grace,
            },
        )
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(Some(tier))
}

/// Keeps an S3 `tier` signing with the credentials the controller keeps (`vela admin tier
/// credentials set`), or with its own `[tier]` settings while none are set: asks every 10 s,
/// logs each change and checks the new credentials with one listing. While the controller
/// cannot be reached the tier keeps what it has. `None` for a tier that signs nothing.
pub fn follow_credentials(
    tier: Arc<Tier>,
    controller: Arc<dyn ControllerApi>,
    shutdown: CancellationToken,
) -> Option<JoinHandle<()>> {
    if !tier.signs_requests() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut unreachable = false;
        loop {
            match controller.tier_credentials().await {
                Ok(held) => {
                    unreachable = false;
                    let pair = held
                        .as_ref()
                        .map(|c| (c.credentials.access_key_id(), c.credentials.expose_secret()));
                    if tier.use_credentials(pair) {
                        match pair {
                            Some((id, _)) => info!(
                                access_key_id = id,
                                "the tier signs with the credentials the controller keeps"
                            ),
                            None => info!("the tier signs with its configured credentials again"),
                        }
                        // One listing, so a bad pair shows in the log now rather than
                        // at the next upload.
                        match reachable(&tier).await {
                            Ok(()) => info!("the tier accepts the new credentials"),
                            Err(err) => {
                                warn!(tier = tier.describe(), error = %err, "the tier refused a request with the new credentials")
                            }
                        }
                    }
                }
                Err(err) if !unreachable => {
                    unreachable = true;
                    warn!(error = %err, "cannot ask the controller for the tier credentials; the tier keeps the ones it has");
                }
                Err(err) => debug!(error = %err, "tier credentials: controller still unreachable"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(CREDENTIALS_EVERY) => {}
            }
        }
    }))
}

/// One listing of the tier, answered within 10 s.
async fn reachable(tier: &Tier) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, tier.list_segments(0)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("no answer within 10 s".to_owned()),
    }
}

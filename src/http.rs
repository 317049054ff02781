//! The HTTP side door: `/health` (the process is up), `/ready` (every role started and the
//! gRPC listener accepts), `/metrics` (Prometheus text exposition).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub hub: vela_telemetry::MetricsHub,
    pub ready: Arc<AtomicBool>,
}

/// The router, separate from serving so tests can call it directly.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn ready(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// OpenMetrics for scrapers that ask for it (Prometheus does), the Prometheus text format
/// (0.0.4) for everyone else (`curl`, `promtool check metrics`).
async fn metrics(
    State(state): State<HttpState>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    // Collection runs the gauges' callbacks, which read shard state and the data directory:
    // off the async workers.
    let hub = state.hub.clone();
    let encoded = tokio::task::spawn_blocking(move || hub.prometheus_text())
        .await
        .unwrap_or_else(|e| Err(format!("metrics task failed: {e}")));
    match encoded {
        Ok(body) if openmetrics => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            vela_telemetry::prometheus::classic_text(&body),
        ),
        Err(error) => {
            tracing::warn!(%error, "/metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "metrics encoding failed\n".to_owned(),
            )
        }
    }
}

/// Serves until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

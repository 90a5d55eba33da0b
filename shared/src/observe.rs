//! Prometheus metrics and a health check, served over HTTP by every service.
//!
//! `GET /metrics` renders every metric the process recorded (the `metrics`
//! facade with the `metrics-exporter-prometheus` recorder, installed once
//! per process); `GET /healthz` answers `200 ok` while the service's NATS
//! connection is up and `503` otherwise, for orchestrators' liveness probes.
//! Metric names are constants in each service crate's `metrics` module, and
//! the series are listed in `docs/metrics.md`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Histogram buckets for latencies, in seconds: 1 ms to 10 min.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 120.0, 600.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's metrics recorder, installed on first use.
pub fn recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&LATENCY_BUCKETS)
                .expect("latency buckets are not empty");
            match builder.install_recorder() {
                Ok(handle) => handle,
                Err(e) => {
                    // Another recorder is installed (a host program's): keep
                    // a private one so /metrics still answers.
                    tracing::warn!(error = %e, "metrics recorder already installed; /metrics shows only its own view");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// Errors while starting the endpoint.
#[derive(Debug, thiserror::Error)]
#[error("could not listen for /metrics on {addr}: {source}")]
pub struct ServeError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Cause.
    pub source: std::io::Error,
}

/// Serves `/metrics` and `/healthz` on `addr` until `stop`; returns the
/// address it listens on (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    healthy: impl Fn() -> bool + Send + Sync + 'static,
    stop: CancellationToken,
) -> Result<SocketAddr, ServeError> {
    let handle = recorder();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError { addr, source })?;
    let healthy = Arc::new(healthy);
    let render = handle.clone();
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(render.render())))
        .route(
            "/healthz",
            get(move || {
                let ok = healthy();
                std::future::ready(if ok {
                    (StatusCode::OK, "ok\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "NATS unreachable\n")
                })
            }),
        );
    let shutdown = stop.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    // Histograms are summarised lazily; keep their memory bounded.
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => handle.run_upkeep(),
                _ = stop.cancelled() => return,
            }
        }
    });
    tracing::info!(%bound, "serving /metrics and /healthz");
    Ok(bound)
}

/// `healthy` for a service whose health is its NATS connection.
pub fn nats_connected(client: async_nats::Client) -> impl Fn() -> bool + Send + Sync + 'static {
    move || client.connection_state() == async_nats::connection::State::Connected
}

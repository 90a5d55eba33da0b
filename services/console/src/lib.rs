//! The clawfleet console: the fleet's HTTP API, over the same contract as
//! the NATS API (`clawfleet.api.*`), with API tokens and roles, tenant
//! scoping and an audit log of every mutating call.
//!
//! The console holds no state of its own: every answer comes from the
//! services over NATS, and the audit log lives in `CLAWFLEET_EVENTS`, so any
//! number of consoles can run side by side.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clawfleet_shared::config::ConfigError;
use clawfleet_shared::nats::{self, ConnectError};
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Errors that stop the console from starting.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// NATS unreachable.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The listen address could not be bound.
    #[error("while listening on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
}

/// A started console.
pub struct Running {
    addr: SocketAddr,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Where the HTTP API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the console has stopped (after its shutdown token fires).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Runs the console until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ConsoleError> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}

/// Starts the console; returns once it listens.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, ConsoleError> {
    config.validate()?;
    if config.tokens.is_empty() {
        tracing::warn!("no API tokens are configured: every call will be refused (401)");
    }
    let client = nats::connect(
        &config.nats_url,
        "clawfleet-console",
        config.connect_timeout,
        &shutdown,
    )
    .await?;
    clawfleet_shared::logship::attach(&client, "console", None);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ConsoleError::Listen(config.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ConsoleError::Listen(config.listen, e))?;
    let shared = Arc::new(api::Shared {
        tokens: auth::Tokens::new(&config.tokens, config.auth_failures_per_minute),
        audit: audit::Audit {
            js: nats::jetstream(client.clone()),
        },
        client,
        config,
    });
    let app = api::router(shared.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let stop = shutdown.clone();
    let housekeeping = shared.clone();
    let done = tokio::spawn(async move {
        let sweep = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tokio::select! {
                        _ = tick.tick() => housekeeping.tokens.retain_recent(),
                        _ = stop.cancelled() => return,
                    }
                }
            }
        });
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "the HTTP server failed");
        }
        let _ = sweep.await;
    });
    tracing::info!(%addr, "console listening");
    Ok(Running { addr, done })
}

//! Connecting to NATS the same way in every service.

use std::time::Duration;

use async_nats::jetstream;
use tokio_util::sync::CancellationToken;

/// Errors while connecting.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Gave up before a connection was made.
    #[error("could not connect to NATS at {url} within {waited:?}: {last}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// How long it tried.
        waited: Duration,
        /// The last error seen.
        last: String,
    },
    /// Shutdown was requested while connecting.
    #[error("shutdown requested while connecting to NATS")]
    Cancelled,
}

/// Connects to `url`, naming the connection `name` (visible in the server's
/// `connz`), retrying for up to `wait` so services may start before the
/// server. Once connected, the client reconnects by itself forever.
pub async fn connect(
    url: &str,
    name: &str,
    wait: Duration,
    cancel: &CancellationToken,
) -> Result<async_nats::Client, ConnectError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut delay = Duration::from_millis(50);
    loop {
        let attempt = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .connect(url);
        let result = tokio::select! {
            r = attempt => r,
            _ = cancel.cancelled() => return Err(ConnectError::Cancelled),
        };
        match result {
            Ok(client) => return Ok(client),
            Err(e) if tokio::time::Instant::now() + delay >= deadline => {
                return Err(ConnectError::Unreachable {
                    url: url.to_string(),
                    waited: wait,
                    last: e.to_string(),
                })
            }
            Err(e) => {
                tracing::debug!(url, error = %e, "NATS not reachable yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => return Err(ConnectError::Cancelled),
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// A JetStream context tuned for pipelined publishing: many publishes may
/// wait for their stream acks at once.
pub fn jetstream(client: async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_ack_inflight(4096)
        .build(client)
}

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
/// server. Once connected, the client reconnects by itself forever. A user
/// and password in the URL (`nats://user:pass@host:4222`) authenticate the
/// connection, as with other NATS tools.
pub async fn connect(
    url: &str,
    name: &str,
    wait: Duration,
    cancel: &CancellationToken,
) -> Result<async_nats::Client, ConnectError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut delay = Duration::from_millis(50);
    loop {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5));
        if let Some((user, password)) = credentials(url) {
            options = options.user_and_password(user, password);
        }
        let attempt = options.connect(url);
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

/// The user and password of the first server URL in `url` (a comma-separated
/// list) that has them.
fn credentials(url: &str) -> Option<(String, String)> {
    url.split(',')
        .filter_map(|u| u.trim().parse::<async_nats::ServerAddr>().ok())
        .find(|a| a.has_user_pass())
        .map(|a| {
            (
                a.username().unwrap_or_default().to_string(),
                a.password().unwrap_or_default().to_string(),
            )
        })
}

/// A JetStream context tuned for pipelined publishing: many publishes may
/// wait for their stream acks at once.
pub fn jetstream(client: async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_ack_inflight(4096)
        .build(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_and_password_in_the_url_are_the_credentials() {
        assert_eq!(credentials("nats://127.0.0.1:4222"), None);
        assert_eq!(
            credentials("nats://a:4222,nats://bob:s3cret@b:4222"),
            Some(("bob".to_string(), "s3cret".to_string()))
        );
    }
}

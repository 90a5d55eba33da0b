//! Plumbing every phase shares: connections, pipelined JetStream publishing,
//! and rates.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;

/// Publish acks awaited at most this far behind the newest publish. The
/// client holds one permit per unawaited ack (4096 at most with
/// [`clawfleet_shared::nats::jetstream`]); publishing everything and awaiting
/// the acks at the end would run out of permits and stall.
pub const ACK_WINDOW: usize = 1000;

/// A phase that sees no progress for this long has failed.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A new connection named `name` (visible in the server's `connz`).
pub async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("while connecting to NATS at {url}"))
}

/// A request answered by the server itself. The server handles a
/// connection's operations in order, so once this returns, everything sent
/// before it (a subscription, say) is in effect.
pub async fn round_trip(client: &async_nats::Client) -> anyhow::Result<()> {
    jetstream::new(client.clone())
        .query_account()
        .await
        .context("while waiting for the server to catch up")?;
    Ok(())
}

/// Pipelined JetStream publishing: at most [`ACK_WINDOW`] acks outstanding.
pub struct Publisher {
    js: jetstream::Context,
    in_flight: VecDeque<PublishAckFuture>,
}

impl Publisher {
    /// A publisher on its own connection.
    pub async fn connect(url: &str, name: &str) -> anyhow::Result<Publisher> {
        let client = connect(url, name).await?;
        Ok(Publisher {
            js: clawfleet_shared::nats::jetstream(client),
            in_flight: VecDeque::with_capacity(ACK_WINDOW),
        })
    }

    /// The JetStream context, for stream management.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Sends one message; waits for the oldest ack first when the window is full.
    pub async fn send(&mut self, subject: &str, body: Bytes) -> anyhow::Result<()> {
        if self.in_flight.len() >= ACK_WINDOW {
            self.await_oldest().await?;
        }
        let ack = self
            .js
            .publish(subject.to_string(), body)
            .await
            .with_context(|| format!("while publishing to {subject}"))?;
        self.in_flight.push_back(ack);
        Ok(())
    }

    /// Waits until every message sent so far is acknowledged by its stream.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        while !self.in_flight.is_empty() {
            self.await_oldest().await?;
        }
        Ok(())
    }

    async fn await_oldest(&mut self) -> anyhow::Result<()> {
        if let Some(ack) = self.in_flight.pop_front() {
            ack.await.context("a publish was not acknowledged")?;
        }
        Ok(())
    }
}

/// `count` events in `elapsed`, per second.
pub fn per_sec(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

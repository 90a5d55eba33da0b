//! The log aggregator: the fleet's logs in one searchable place.
//!
//! It reads every line that services and agents ship to `clawfleet.logs.>`
//! (stream `CLAWFLEET_LOGS`, durable pull consumer `log-aggregator` by
//! default), indexes it into an embedded SQLite database with an FTS5
//! full-text index, answers `clawfleet.api.logs.search` and
//! `clawfleet.api.logs.stats` (queue group `clawfleet-log-aggregator`), and
//! enforces the retention policy on an interval. It acks lines only once
//! they are committed to the index.
//!
//! It also keeps the fleet's attempt history for analytics and cost: see
//! [`analytics`]; `clawfleet.api.analytics.*` is served in the same queue
//! group.
//!
//! It never writes to NATS beyond API replies and its own log lines, and it
//! does not create the logs stream: the dispatcher owns the topology, and
//! the aggregator waits for it.
//!
//! # Why SQLite FTS5 rather than tantivy
//!
//! A log search is mostly *filters and order*: this task's lines, that
//! agent's warnings, the last hour, newest first, one page after another;
//! full text is one filter among them. Retention is *deletes by range*:
//! every DEBUG line older than a day, the oldest lines of a tenant over its
//! quota. Both are what a relational engine with B-tree indexes does well,
//! and in SQLite they are plain SQL; FTS5 adds the full-text part in the
//! same query and the same transaction. The whole index is one file (plus
//! its write-ahead log) that can be copied or inspected with the `sqlite3`
//! shell, it is linked in (`rusqlite` with `bundled`), and a batch commit
//! makes lines and their text index durable together, which is what lets
//! the aggregator ack only what is committed. tantivy ranks text faster and
//! scales further, but filters, time order, pagination, per-tenant
//! accounting and deletes by range would be ours to build on top of it.
//!
//! See [`store`] for the layout of the index, [`writer`] for the single
//! writer, [`search`] for queries and [`retention`] for the policy.

pub mod analytics;
pub mod api;
pub mod config;
pub mod ingest;
pub mod metrics;
pub mod retention;
pub mod search;
pub mod store;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use clawfleet_shared::config::ConfigError;
use clawfleet_shared::nats::{self, ConnectError};
use clawfleet_shared::topology::TopologyError;
use clawfleet_shared::{logship, subjects, timefmt};
use deadpool_sqlite::{Hook, HookError, Runtime};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

use crate::retention::{Policy, Removed};
use crate::store::StoreError;
use crate::writer::Writer;

/// The service name in log lines and subjects.
pub const SERVICE: &str = "log-aggregator";

/// Why the aggregator could not start.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The index could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// NATS unreachable.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// No dispatcher has created the logs stream.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The durable consumer could not be created.
    #[error("while creating the log consumer: {0}")]
    Consumer(String),
    /// The read pool could not be built.
    #[error("while opening the log index for reading: {0}")]
    Pool(String),
    /// The writer thread could not be started.
    #[error("while starting the log index writer: {0}")]
    Thread(#[from] std::io::Error),
    /// The API subscriptions could not be made.
    #[error("while subscribing to the API: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// The metrics endpoint could not be started.
    #[error(transparent)]
    Metrics(#[from] clawfleet_shared::observe::ServeError),
}

/// A started aggregator.
pub struct Running {
    tracker: TaskTracker,
    client: async_nats::Client,
    writer: std::thread::JoinHandle<()>,
    metrics_addr: Option<std::net::SocketAddr>,
}

impl Running {
    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// Waits until the aggregator has stopped (after its shutdown token
    /// fires): the API has answered what it took, the last batches are
    /// committed and acked, and the index is closed.
    pub async fn wait(self) {
        self.tracker.wait().await;
        let writer = self.writer;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        let _ = self.client.flush().await;
    }
}

/// Runs an aggregator until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AggregatorError> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}

/// Starts an aggregator; returns once it serves the API and consumes lines.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<Running, AggregatorError> {
    config.validate()?;
    let path = config.db_path();
    let conn = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || store::open_writer(&path))
            .await
            .map_err(|e| AggregatorError::Thread(std::io::Error::other(e)))??
    };
    let client = nats::connect(
        &config.nats_url,
        "clawfleet-log-aggregator",
        config.connect_timeout,
        &shutdown,
    )
    .await?;
    logship::attach(&client, SERVICE, None);
    let js = nats::jetstream(client.clone());
    let stream = wait_for_stream(&js, config.topology_wait, &shutdown).await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(config.consumer.clone()),
            description: Some("clawfleet log aggregator".to_string()),
            ack_policy: consumer::AckPolicy::All,
            ack_wait: Duration::from_secs(60),
            max_deliver: -1,
            max_ack_pending: (config.batch_lines as i64 * 8).max(20_000),
            ..Default::default()
        })
        .await
        .map_err(|e| AggregatorError::Consumer(e.to_string()))?;

    let readers = deadpool_sqlite::Config::new(&path)
        .builder(Runtime::Tokio1)
        .map_err(|e| AggregatorError::Pool(e.to_string()))?
        .max_size(config.readers)
        .post_create(Hook::async_fn(|conn, _| {
            Box::pin(async move {
                conn.interact(|c| c.execute_batch(store::READER_PRAGMAS))
                    .await
                    .map_err(|e| HookError::message(e.to_string()))?
                    .map_err(HookError::Backend)
            })
        }))
        .build()
        .map_err(|e| AggregatorError::Pool(e.to_string()))?;

    // Fleet analytics: attempt reports from the events stream into their own database.
    let attempts_path = config.analytics_db_path();
    let attempts_conn = tokio::task::spawn_blocking(move || analytics::store::open(&attempts_path))
        .await
        .map_err(|e| AggregatorError::Thread(std::io::Error::other(e)))??;
    let attempts_conn = Arc::new(std::sync::Mutex::new(attempts_conn));
    let events = js
        .get_stream(subjects::STREAM_EVENTS)
        .await
        .map_err(|e| AggregatorError::Consumer(e.to_string()))?;
    let attempts_consumer = events
        .create_consumer(consumer::pull::Config {
            durable_name: Some(config.analytics.consumer.clone()),
            description: Some("clawfleet attempt reports for analytics and cost".to_string()),
            filter_subjects: subjects::ATTEMPT_REPORTS.map(String::from).to_vec(),
            ack_policy: consumer::AckPolicy::All,
            ack_wait: Duration::from_secs(60),
            max_deliver: -1,
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await
        .map_err(|e| AggregatorError::Consumer(e.to_string()))?;
    let analytics_readers = deadpool_sqlite::Config::new(config.analytics_db_path())
        .builder(Runtime::Tokio1)
        .map_err(|e| AggregatorError::Pool(e.to_string()))?
        .max_size(config.readers.min(4))
        .build()
        .map_err(|e| AggregatorError::Pool(e.to_string()))?;

    let (writer, writer_thread) =
        Writer::spawn(conn, Policy::new(&config.retention), shutdown.child_token())?;
    let tracker = TaskTracker::new();
    let api = Arc::new(api::Api {
        client: client.clone(),
        js: js.clone(),
        readers,
        search_timeout: config.search_timeout,
        analytics: analytics_readers,
        pricing: analytics::reports::Pricing::of(&config.analytics.prices),
    });
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tracker.spawn(api.serve(shutdown.clone(), ready_tx));
    ready_rx
        .await
        .map_err(|_| AggregatorError::Consumer("API failed to start".into()))??;
    tracker.spawn(ingest::run(
        consumer,
        writer.clone(),
        config.batch_lines,
        config.batch_wait,
        shutdown.clone(),
    ));
    tracker.spawn(retain(writer, config.retention.interval, shutdown.clone()));
    tracker.spawn(analytics::ingest(
        attempts_consumer,
        attempts_conn.clone(),
        config.analytics.prices.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(analytics::retain(
        attempts_conn,
        config.analytics.retention,
        config.retention.interval,
        shutdown.clone(),
    ));
    let metrics_addr = match config.metrics_addr {
        Some(addr) => Some(
            clawfleet_shared::observe::serve(
                addr,
                clawfleet_shared::observe::nats_connected(client.clone()),
                shutdown.clone(),
            )
            .await?,
        ),
        None => None,
    };
    tracker.close();
    tracing::info!(index = %path.display(), nats = %config.nats_url, "log aggregator ready");
    Ok(Running {
        tracker,
        client,
        writer: writer_thread,
        metrics_addr,
    })
}

/// The dispatcher creates `CLAWFLEET_LOGS`; wait for it like agents wait
/// for the rest of the topology.
async fn wait_for_stream(
    js: &jetstream::Context,
    wait: Duration,
    cancel: &CancellationToken,
) -> Result<jetstream::stream::Stream, AggregatorError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match js.get_stream(subjects::STREAM_LOGS).await {
            Ok(stream) => return Ok(stream),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(error = %e, "the logs stream does not exist");
                return Err(TopologyError::NotReady(wait).into());
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = cancel.cancelled() => return Err(ConnectError::Cancelled.into()),
        }
    }
}

/// Enforces the retention policy every `interval`, in passes small enough
/// to let batches in between, and logs what each round removed.
async fn retain(writer: Writer, interval: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let now = timefmt::now();
        let mut round = Removed::default();
        loop {
            match writer.retain(now).await {
                Ok(Ok(pass)) => {
                    for i in 0..5 {
                        round.by_age[i] += pass.by_age[i];
                        round.by_size[i] += pass.by_size[i];
                    }
                    round.bytes += pass.bytes;
                    if !pass.more || cancel.is_cancelled() {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "retention pass failed; trying again next interval");
                    break;
                }
                Err(_) => return,
            }
        }
        ::metrics::counter!(crate::metrics::LOG_LINES_REMOVED, "reason" => "age")
            .increment(round.by_age.iter().sum::<u64>());
        ::metrics::counter!(crate::metrics::LOG_LINES_REMOVED, "reason" => "size")
            .increment(round.by_size.iter().sum::<u64>());
        if round.total() > 0 {
            tracing::info!(
                removed = round.total(),
                by_age = round.by_age.iter().sum::<u64>(),
                by_size = round.by_size.iter().sum::<u64>(),
                bytes = round.bytes,
                "retention removed {} log lines",
                round.total()
            );
        }
    }
}

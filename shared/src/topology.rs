//! The JetStream streams and KV buckets of the pipeline, with their limits.
//!
//! The dispatcher owns them and creates (or updates) them at start-up with
//! [`ensure`]; agents and clients only look them up with [`open`], waiting
//! for a dispatcher if none has run yet. Every limit is set on purpose:
//! nothing grows without bound.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use serde::{Deserialize, Serialize};

use crate::subjects;

/// Limits of the pipeline's streams and buckets (part of the dispatcher config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest message any pipeline stream accepts.
    pub max_msg_bytes: i32,
    /// Window in which a repeated `Nats-Msg-Id` on intake is dropped as a duplicate.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// Most consumers on any one stream or bucket. nats-server 2.15 limits a
    /// stream to 1,000 consumers unless the stream says otherwise, and a
    /// fleet needs more: every agent follows the queue registry, and every
    /// queue (tenant × priority × region × capability set) has a consumer.
    pub max_consumers: i32,
    /// How long unrouted intake is kept; also bounded by `intake_max_bytes`.
    #[serde(with = "humantime_serde")]
    pub intake_max_age: Duration,
    /// Intake size bound; when full, new submissions are refused (never dropped silently).
    pub intake_max_bytes: i64,
    /// Queued work size bound; when full, routing waits (intake holds the rest).
    pub queue_max_bytes: i64,
    /// How long results stay readable.
    #[serde(with = "humantime_serde")]
    pub results_max_age: Duration,
    /// Results size bound (oldest go first).
    pub results_max_bytes: i64,
    /// How long events are kept.
    #[serde(with = "humantime_serde")]
    pub events_max_age: Duration,
    /// Events size bound (oldest go first).
    pub events_max_bytes: i64,
    /// How long dead letters are kept.
    #[serde(with = "humantime_serde")]
    pub dlq_max_age: Duration,
    /// Dead-letter size bound (oldest go first).
    pub dlq_max_bytes: i64,
    /// How long shipped log lines wait in the logs stream for the log
    /// aggregator. The aggregator keeps what it has indexed for as long as
    /// its own retention says; this only bounds how long it may be down
    /// without losing lines.
    #[serde(with = "humantime_serde")]
    pub logs_max_age: Duration,
    /// Logs stream size bound (oldest go first).
    pub logs_max_bytes: i64,
    /// How long task records are kept after their last change.
    #[serde(with = "humantime_serde")]
    pub records_max_age: Duration,
    /// Task-record size bound.
    pub records_max_bytes: i64,
    /// An agent registration expires this long after its last heartbeat.
    #[serde(with = "humantime_serde")]
    pub agent_ttl: Duration,
    /// A capability profile is forgotten this long after the last agent offering it.
    #[serde(with = "humantime_serde")]
    pub profile_ttl: Duration,
    /// An agent's health entry is forgotten this long after the monitor last wrote it.
    #[serde(with = "humantime_serde")]
    pub health_ttl: Duration,
}

const MIB: i64 = 1024 * 1024;
const GIB: i64 = 1024 * MIB;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_msg_bytes: 1024 * 1024,
            duplicate_window: Duration::from_secs(120),
            max_consumers: 100_000,
            intake_max_age: Duration::from_secs(7 * DAY),
            intake_max_bytes: 256 * MIB,
            queue_max_bytes: GIB,
            results_max_age: Duration::from_secs(7 * DAY),
            results_max_bytes: 512 * MIB,
            events_max_age: Duration::from_secs(DAY),
            events_max_bytes: 256 * MIB,
            dlq_max_age: Duration::from_secs(30 * DAY),
            dlq_max_bytes: 256 * MIB,
            logs_max_age: Duration::from_secs(DAY),
            logs_max_bytes: 256 * MIB,
            records_max_age: Duration::from_secs(7 * DAY),
            records_max_bytes: GIB,
            agent_ttl: Duration::from_secs(30),
            profile_ttl: Duration::from_secs(DAY),
            health_ttl: Duration::from_secs(DAY),
        }
    }
}

/// Handles to every stream and bucket of the pipeline.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Task records.
    pub tasks: kv::Store,
    /// Live agents.
    pub agents: kv::Store,
    /// Capability profiles.
    pub profiles: kv::Store,
    /// Queue registry.
    pub queues: kv::Store,
    /// Agent health as the health monitor judges it.
    pub health: kv::Store,
    /// Running tasks of tenants with a `max_running` quota.
    pub running: kv::Store,
    /// Tenants over a hard cost budget, as the alerter finds them: the
    /// dispatcher refuses their new tasks.
    pub budgets: kv::Store,
}

/// Errors while creating or opening the topology.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A stream could not be created or updated.
    #[error("while creating stream {name}: {source}")]
    Stream {
        /// Stream name.
        name: &'static str,
        /// Cause.
        source: jetstream::context::CreateStreamError,
    },
    /// A bucket could not be created or updated.
    #[error("while creating bucket {name}: {source}")]
    Bucket {
        /// Bucket name.
        name: &'static str,
        /// Cause.
        source: jetstream::context::CreateKeyValueError,
    },
    /// A bucket could not be opened.
    #[error("while opening bucket {name}: {source}")]
    Open {
        /// Bucket name.
        name: &'static str,
        /// Cause.
        source: jetstream::context::KeyValueError,
    },
    /// A bucket's consumer limit could not be set.
    #[error("while setting the consumer limit of bucket {name}: {message}")]
    Limit {
        /// Which bucket.
        name: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The dispatcher has not created the topology in time.
    #[error("no dispatcher has created the clawfleet streams yet (waited {0:?})")]
    NotReady(Duration),
}

fn stream_config(name: &'static str, subject: &str, limits: &Limits) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        subjects: vec![subject.to_string()],
        storage: stream::StorageType::File,
        max_message_size: limits.max_msg_bytes,
        duplicate_window: limits.duplicate_window,
        max_consumers: limits.max_consumers,
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates or updates every stream and bucket. Idempotent; safe to call from
/// several dispatchers at once.
pub async fn ensure(js: &jetstream::Context, limits: &Limits) -> Result<Topology, TopologyError> {
    let streams = [
        (
            subjects::STREAM_INTAKE,
            stream::Config {
                retention: stream::RetentionPolicy::WorkQueue,
                discard: stream::DiscardPolicy::New,
                max_age: limits.intake_max_age,
                max_bytes: limits.intake_max_bytes,
                ..stream_config(subjects::STREAM_INTAKE, subjects::INTAKE_ALL, limits)
            },
        ),
        (
            subjects::STREAM_QUEUE,
            stream::Config {
                retention: stream::RetentionPolicy::WorkQueue,
                discard: stream::DiscardPolicy::New,
                max_bytes: limits.queue_max_bytes,
                ..stream_config(subjects::STREAM_QUEUE, subjects::QUEUE_ALL, limits)
            },
        ),
        (
            subjects::STREAM_RESULTS,
            stream::Config {
                max_age: limits.results_max_age,
                max_bytes: limits.results_max_bytes,
                max_messages_per_subject: 1,
                ..stream_config(subjects::STREAM_RESULTS, subjects::RESULTS_ALL, limits)
            },
        ),
        (
            subjects::STREAM_EVENTS,
            stream::Config {
                max_age: limits.events_max_age,
                max_bytes: limits.events_max_bytes,
                ..stream_config(subjects::STREAM_EVENTS, subjects::EVENTS_ALL, limits)
            },
        ),
        (
            subjects::STREAM_DLQ,
            stream::Config {
                max_age: limits.dlq_max_age,
                max_bytes: limits.dlq_max_bytes,
                ..stream_config(subjects::STREAM_DLQ, subjects::DLQ_ALL, limits)
            },
        ),
        (
            subjects::STREAM_LOGS,
            stream::Config {
                max_age: limits.logs_max_age,
                max_bytes: limits.logs_max_bytes,
                ..stream_config(subjects::STREAM_LOGS, subjects::LOGS_ALL, limits)
            },
        ),
    ];
    for (name, config) in streams {
        js.create_or_update_stream(config)
            .await
            .map_err(|source| TopologyError::Stream { name, source })?;
    }

    let bucket = |name: &'static str, max_age: Duration, max_bytes: i64| kv::Config {
        bucket: name.to_string(),
        history: 1,
        max_age,
        max_bytes,
        max_value_size: limits.max_msg_bytes,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let mut stores = Vec::with_capacity(7);
    for (name, config) in [
        (
            subjects::BUCKET_TASKS,
            bucket(
                subjects::BUCKET_TASKS,
                limits.records_max_age,
                limits.records_max_bytes,
            ),
        ),
        (
            subjects::BUCKET_AGENTS,
            bucket(subjects::BUCKET_AGENTS, limits.agent_ttl, 64 * MIB),
        ),
        (
            subjects::BUCKET_PROFILES,
            bucket(subjects::BUCKET_PROFILES, limits.profile_ttl, 64 * MIB),
        ),
        (
            subjects::BUCKET_HEALTH,
            bucket(subjects::BUCKET_HEALTH, limits.health_ttl, 64 * MIB),
        ),
        (
            subjects::BUCKET_RUNNING,
            bucket(subjects::BUCKET_RUNNING, Duration::ZERO, 64 * MIB),
        ),
        (
            subjects::BUCKET_BUDGETS,
            bucket(subjects::BUCKET_BUDGETS, Duration::ZERO, 16 * MIB),
        ),
        // Last: `open` takes the queue registry as the sign that the rest exists.
        (
            subjects::BUCKET_QUEUES,
            bucket(subjects::BUCKET_QUEUES, Duration::ZERO, 64 * MIB),
        ),
    ] {
        let store = js
            .create_or_update_key_value(config)
            .await
            .map_err(|source| TopologyError::Bucket { name, source })?;
        // A bucket's stream has no consumer limit of its own unless given one.
        let mut stream =
            js.get_stream(format!("KV_{name}"))
                .await
                .map_err(|e| TopologyError::Limit {
                    name,
                    message: e.to_string(),
                })?;
        let mut stream_config = stream
            .info()
            .await
            .map_err(|e| TopologyError::Limit {
                name,
                message: e.to_string(),
            })?
            .config
            .clone();
        if stream_config.max_consumers != limits.max_consumers {
            stream_config.max_consumers = limits.max_consumers;
            js.update_stream(stream_config)
                .await
                .map_err(|e| TopologyError::Limit {
                    name,
                    message: e.to_string(),
                })?;
        }
        stores.push(store);
    }
    let queues = stores.pop().expect("seven buckets");
    let budgets = stores.pop().expect("seven buckets");
    let running = stores.pop().expect("seven buckets");
    let health = stores.pop().expect("seven buckets");
    let profiles = stores.pop().expect("seven buckets");
    let agents = stores.pop().expect("seven buckets");
    let tasks = stores.pop().expect("seven buckets");
    Ok(Topology {
        tasks,
        agents,
        profiles,
        queues,
        health,
        running,
        budgets,
    })
}

/// Opens the topology a dispatcher created, waiting up to `wait` for one to do so.
pub async fn open(js: &jetstream::Context, wait: Duration) -> Result<Topology, TopologyError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match try_open(js).await {
            Ok(t) => return Ok(t),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(error = %e, "clawfleet topology not available");
                return Err(TopologyError::NotReady(wait));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn try_open(js: &jetstream::Context) -> Result<Topology, TopologyError> {
    // The queue registry is created last by `ensure`, so once it exists the rest does.
    let open = |name: &'static str| async move {
        js.get_key_value(name)
            .await
            .map_err(|source| TopologyError::Open { name, source })
    };
    let queues = open(subjects::BUCKET_QUEUES).await?;
    Ok(Topology {
        tasks: open(subjects::BUCKET_TASKS).await?,
        agents: open(subjects::BUCKET_AGENTS).await?,
        profiles: open(subjects::BUCKET_PROFILES).await?,
        health: open(subjects::BUCKET_HEALTH).await?,
        running: open(subjects::BUCKET_RUNNING).await?,
        budgets: open(subjects::BUCKET_BUDGETS).await?,
        queues,
    })
}

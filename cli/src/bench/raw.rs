//! The baselines: what the same server does with plain JetStream.
//!
//! Both use their own temporary streams (`BENCH_RAW`, `BENCH_JOBS`,
//! `BENCH_RESULTS`, on `bench.*` subjects), file storage like the clawfleet
//! streams, and delete them at the end, also when the phase fails.

use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::counters::Counters;
use super::load::{self, Publisher, STALL_TIMEOUT};

const RAW_STREAM: &str = "BENCH_RAW";
const RAW_SUBJECT: &str = "bench.raw.msg";
const JOB_STREAM: &str = "BENCH_JOBS";
const JOB_SUBJECT: &str = "bench.jobs.run";
const RESULT_STREAM: &str = "BENCH_RESULTS";
const RESULT_SUBJECT: &str = "bench.results.done";

/// Messages a consumer asks for per pull request.
const FETCH_BATCH: usize = 500;

/// Baseline (a): one publisher, one pull consumer, one work-queue stream.
#[derive(Debug, Clone, Serialize)]
pub struct RawReport {
    /// Messages sent and acknowledged.
    pub messages: usize,
    /// Size of each message.
    pub message_bytes: usize,
    /// First publish to last publish ack.
    pub publish_per_sec: f64,
    /// First publish to last consumer ack: the rate that counts.
    pub round_trip_per_sec: f64,
    /// Milliseconds from first publish to last consumer ack.
    pub elapsed_ms: u64,
}

/// Baseline (a2): job → worker → result stream → collector, no clawfleet.
#[derive(Debug, Clone, Serialize)]
pub struct JobsReport {
    /// Jobs run.
    pub jobs: usize,
    /// Workers (one connection each), sharing one durable consumer.
    pub workers: usize,
    /// Jobs each worker has in flight at most.
    pub concurrency: usize,
    /// First job publish to last result received.
    pub per_sec: f64,
    /// Milliseconds from first job publish to last result received.
    pub elapsed_ms: u64,
    /// Messages per job, from the server's counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<super::counters::CostReport>,
}

/// Publishes `n` copies of `body` while a pull consumer fetches and acks them.
pub async fn throughput(url: &str, n: usize, body: Bytes) -> anyhow::Result<RawReport> {
    let mut publisher = Publisher::connect(url, "clawfleet-bench-raw-publisher").await?;
    let js = publisher.jetstream().clone();
    recreate(&js, work_queue(RAW_STREAM, "bench.raw.>")).await?;
    let outcome = async {
        let client = load::connect(url, "clawfleet-bench-raw-consumer").await?;
        let consumer = durable(
            &jetstream::new(client.clone()),
            RAW_STREAM,
            "bench-consumer",
        )
        .await?;
        let consuming = AbortOnDropHandle::new(tokio::spawn(consume_and_ack(client, consumer, n)));

        let start = Instant::now();
        for _ in 0..n {
            publisher.send(RAW_SUBJECT, body.clone()).await?;
        }
        publisher.flush().await?;
        let published = start.elapsed();
        let last_ack = consuming.await.context("the raw consumer panicked")??;
        let elapsed = last_ack - start;
        Ok(RawReport {
            messages: n,
            message_bytes: body.len(),
            publish_per_sec: load::per_sec(n, published),
            round_trip_per_sec: load::per_sec(n, elapsed),
            elapsed_ms: elapsed.as_millis() as u64,
        })
    }
    .await;
    delete(&js, RAW_STREAM).await;
    outcome
}

/// Runs `n` jobs of `body` through `workers` workers, each with up to
/// `concurrency` jobs in flight: a worker publishes a result to the result
/// stream, waits for its ack, then acks the job; the collector counts
/// results on a core subscription.
pub async fn job_round_trip(
    url: &str,
    n: usize,
    workers: usize,
    concurrency: usize,
    body: Bytes,
    counters: &Counters,
) -> anyhow::Result<JobsReport> {
    let mut publisher = Publisher::connect(url, "clawfleet-bench-job-publisher").await?;
    let js = publisher.jetstream().clone();
    let outcome = async {
        recreate(&js, work_queue(JOB_STREAM, "bench.jobs.>")).await?;
        let results = stream::Config {
            name: RESULT_STREAM.to_string(),
            subjects: vec!["bench.results.>".to_string()],
            storage: stream::StorageType::File,
            ..Default::default()
        };
        recreate(&js, results).await?;

        let collector_client = load::connect(url, "clawfleet-bench-job-collector").await?;
        let results = collector_client
            .subscribe(RESULT_SUBJECT)
            .await
            .context("while subscribing to the job results")?;
        load::round_trip(&collector_client).await?;
        let collecting = AbortOnDropHandle::new(tokio::spawn(count(results, n)));
        let mut running = Vec::with_capacity(workers);
        for w in 0..workers {
            let client = load::connect(url, &format!("clawfleet-bench-job-worker-{w}")).await?;
            let js = clawfleet_shared::nats::jetstream(client);
            let consumer = durable(&js, JOB_STREAM, "bench-workers").await?;
            running.push(AbortOnDropHandle::new(tokio::spawn(work(
                consumer,
                js,
                concurrency,
            ))));
        }

        let before = counters.snapshot().await?;
        let start = Instant::now();
        for _ in 0..n {
            publisher.send(JOB_SUBJECT, body.clone()).await?;
        }
        publisher.flush().await?;
        let last = collecting
            .await
            .context("the job collector panicked")?
            .context("while collecting job results")?;
        drop(running);
        let elapsed = last - start;
        let cost = before.cost_until(&counters.snapshot().await?, n);
        Ok(JobsReport {
            jobs: n,
            workers,
            concurrency,
            per_sec: load::per_sec(n, elapsed),
            elapsed_ms: elapsed.as_millis() as u64,
            cost: Some(cost),
        })
    }
    .await;
    delete(&js, JOB_STREAM).await;
    delete(&js, RESULT_STREAM).await;
    outcome
}

fn work_queue(name: &str, subjects: &str) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        subjects: vec![subjects.to_string()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// Creates the stream, deleting a leftover of an interrupted run first.
async fn recreate(js: &jetstream::Context, config: stream::Config) -> anyhow::Result<()> {
    let name = config.name.clone();
    let _ = js.delete_stream(&name).await;
    js.create_stream(config)
        .await
        .with_context(|| format!("while creating stream {name}"))?;
    Ok(())
}

async fn delete(js: &jetstream::Context, name: &str) {
    if let Err(e) = js.delete_stream(name).await {
        tracing::warn!(stream = name, error = %e, "could not delete a benchmark stream");
    }
}

/// Creates (or binds to) a durable pull consumer with explicit acks.
async fn durable(
    js: &jetstream::Context,
    stream: &str,
    name: &str,
) -> anyhow::Result<consumer::PullConsumer> {
    js.get_stream_no_info(stream)
        .await
        .with_context(|| format!("while opening stream {stream}"))?
        .get_or_create_consumer(
            name,
            consumer::pull::Config {
                durable_name: Some(name.to_string()),
                ack_policy: consumer::AckPolicy::Explicit,
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("while creating consumer {name} on {stream}"))
}

/// Fetches and acks `n` messages; returns when the last ack has been sent.
async fn consume_and_ack(
    client: async_nats::Client,
    consumer: consumer::PullConsumer,
    n: usize,
) -> anyhow::Result<Instant> {
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(FETCH_BATCH)
        .messages()
        .await
        .context("while starting to pull")?;
    for _ in 0..n {
        let msg = tokio::time::timeout(STALL_TIMEOUT, messages.next())
            .await
            .context("no message for a while")?
            .context("the pull stream ended")?
            .map_err(|e| anyhow::anyhow!("while pulling: {e}"))?;
        msg.ack()
            .await
            .map_err(|e| anyhow::anyhow!("while acking: {e}"))?;
    }
    // Acks are fire-and-forget publishes: make sure the last ones have left
    // the client before the clock stops.
    client
        .flush()
        .await
        .context("while flushing the consumer's acks")?;
    Ok(Instant::now())
}

/// A job worker: runs until the phase ends (its task is aborted).
async fn work(
    consumer: consumer::PullConsumer,
    js: jetstream::Context,
    concurrency: usize,
) -> anyhow::Result<()> {
    let messages = consumer
        .stream()
        .max_messages_per_batch(concurrency.min(FETCH_BATCH))
        .messages()
        .await
        .context("while starting to pull jobs")?;
    let outcome = messages
        .map_err(|e| anyhow::anyhow!("while pulling a job: {e}"))
        .map_ok(|job| {
            let js = js.clone();
            async move {
                js.publish(RESULT_SUBJECT, job.payload.clone())
                    .await?
                    .await
                    .context("while publishing a job result")?;
                job.ack()
                    .await
                    .map_err(|e| anyhow::anyhow!("while acking a job: {e}"))
            }
        })
        .try_buffer_unordered(concurrency)
        .try_for_each(|()| async { Ok(()) })
        .await;
    if let Err(e) = &outcome {
        tracing::warn!(error = %e, "a job worker stopped");
    }
    outcome
}

/// Counts `n` messages; returns when the last arrived.
async fn count(mut results: async_nats::Subscriber, n: usize) -> anyhow::Result<Instant> {
    for received in 0..n {
        tokio::time::timeout(STALL_TIMEOUT, results.next())
            .await
            .with_context(|| {
                format!("only {received} of {n} job results arrived (none for {STALL_TIMEOUT:?})")
            })?
            .context("the result subscription ended")?;
    }
    Ok(Instant::now())
}

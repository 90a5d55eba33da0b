//! clawfleet end to end: tasks in on `clawfleet.intake.bench`, results out
//! on `clawfleet.results.bench.<id>`.
//!
//! Tasks are published the way a high-volume producer would (JetStream
//! publish to intake, acks pipelined) and results are read the way a client
//! waiting for them would (a core subscription made before the first
//! submit). Every task has an explicit id, `<run>-<phase><n>`, so a result
//! is matched to its task by its subject alone.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clawfleet_shared::{subjects, TaskStatus};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::load::{self, Publisher, STALL_TIMEOUT};

/// The tenant every benchmark task belongs to.
pub const TENANT: &str = "bench";

/// Throughput of clawfleet end to end.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    /// Tasks submitted (and finished).
    pub tasks: usize,
    /// Size of each submitted task body.
    pub task_bytes: usize,
    /// Results with status `succeeded`.
    pub succeeded: usize,
    /// Results with any other status.
    pub failed: usize,
    /// First submit to last intake ack.
    pub submit_per_sec: f64,
    /// First submit to last result: the rate that counts.
    pub per_sec: f64,
    /// Milliseconds from first submit to last result.
    pub elapsed_ms: u64,
    /// Messages per task, from the server's counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<super::counters::CostReport>,
}

/// Submit-to-result latency at a steady, paced rate.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    /// Tasks submitted (and finished).
    pub tasks: usize,
    /// Rate the submissions were paced at.
    pub target_per_sec: f64,
    /// Rate actually achieved (tasks / time from first to last submit).
    pub submitted_per_sec: f64,
    /// Results with a status other than `succeeded`.
    pub failed: usize,
    /// Latest a submission went out behind its schedule, in ms (large
    /// values mean the load generator could not keep the pace).
    pub max_pacing_lag_ms: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest task, ms.
    pub max_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
}

/// Builds the task bodies of one phase, all of the same size.
#[derive(Clone)]
pub struct Tasks {
    prefix: String,
    padding: String,
    mix: Option<Mix>,
}

/// The policy mix: task `n` belongs to tenant `bench-t<n % tenants>`, needs
/// capability `p<n % profiles>` and runs in region `regions[n % regions]`.
#[derive(Clone, Debug)]
pub struct Mix {
    /// Tenants.
    pub tenants: usize,
    /// Capability profiles.
    pub profiles: usize,
    /// Regions.
    pub regions: Vec<String>,
}

impl Mix {
    /// Tenant of task `n`.
    pub fn tenant(&self, n: usize) -> String {
        format!("{TENANT}-t{}", n % self.tenants)
    }
}

/// Digits of the task number in ids, so every body has the same length.
const NUMBER_WIDTH: usize = 8;

impl Tasks {
    /// Tasks with ids `<run>-<phase><n>` whose bodies are `bytes` long (or
    /// as short as the envelope allows).
    pub fn new(run: &str, phase: char, bytes: usize) -> Tasks {
        Tasks::with_mix(run, phase, bytes, None)
    }

    /// Like [`Tasks::new`], spread over the tenants, profiles and regions of `mix`.
    pub fn with_mix(run: &str, phase: char, bytes: usize, mix: Option<Mix>) -> Tasks {
        let mut tasks = Tasks {
            prefix: format!("{run}-{phase}"),
            padding: String::new(),
            mix,
        };
        let envelope = tasks.body(0).len();
        tasks.padding = "x".repeat(bytes.saturating_sub(envelope));
        tasks
    }

    /// The body of task `n`.
    pub fn body(&self, n: usize) -> Bytes {
        let (tenant, routing) = match &self.mix {
            None => (TENANT.to_string(), String::new()),
            Some(m) => (
                m.tenant(n),
                format!(
                    r#","requires":["p{}"],"region":"{}""#,
                    n % m.profiles,
                    m.regions[n % m.regions.len()]
                ),
            ),
        };
        format!(
            r#"{{"tenant":"{tenant}","id":"{}{n:0NUMBER_WIDTH$}"{routing},"payload":{{"op":"echo","data":"{}"}}}}"#,
            self.prefix, self.padding
        )
        .into()
    }

    /// The intake subject of task `n`.
    pub fn intake(&self, n: usize) -> String {
        match &self.mix {
            None => subjects::intake(TENANT),
            Some(m) => subjects::intake(&m.tenant(n)),
        }
    }

    /// The task number in a result subject of this phase.
    fn number(&self, subject: &str) -> Option<usize> {
        let id = subject.rsplit('.').next()?;
        id.strip_prefix(&self.prefix)?.parse().ok()
    }
}

/// Runs `n` tasks as fast as they can be submitted and waits for every result.
pub async fn throughput(url: &str, tasks: &Tasks, n: usize) -> anyhow::Result<ThroughputReport> {
    let mut publisher = Publisher::connect(url, "clawfleet-bench-submitter").await?;
    let collector = Collector::start(url, tasks, n).await?;
    let start = Instant::now();
    for i in 0..n {
        publisher.send(&tasks.intake(i), tasks.body(i)).await?;
    }
    publisher.flush().await?;
    let submitted = start.elapsed();
    let results = collector.finish().await?;
    let elapsed = results.last.unwrap_or_else(Instant::now) - start;
    Ok(ThroughputReport {
        tasks: n,
        task_bytes: tasks.body(0).len(),
        succeeded: results.succeeded,
        failed: results.failed,
        submit_per_sec: load::per_sec(n, submitted),
        per_sec: load::per_sec(n, elapsed),
        elapsed_ms: elapsed.as_millis() as u64,
        cost: None,
    })
}

/// Submits `n` tasks at `rate` per second on a fixed schedule (open loop: a
/// slow result never delays the next submission) and measures, per task,
/// the time from its submission to its result.
pub async fn latency(
    url: &str,
    tasks: &Tasks,
    n: usize,
    rate: f64,
) -> anyhow::Result<LatencyReport> {
    let mut publisher = Publisher::connect(url, "clawfleet-bench-paced-submitter").await?;
    let collector = Collector::start(url, tasks, n).await?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut sent = Vec::with_capacity(n);
    let mut max_lag = Duration::ZERO;
    let start = Instant::now();
    for i in 0..n {
        let due = start + interval.mul_f64(i as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let now = Instant::now();
        max_lag = max_lag.max(now - due);
        sent.push(now);
        publisher.send(&tasks.intake(i), tasks.body(i)).await?;
    }
    let submitting = sent.last().map_or(Duration::ZERO, |last| *last - start);
    publisher.flush().await?;
    let results = collector.finish().await?;

    let histogram = latencies(&sent, &results.received)?;
    let ms = |micros: u64| micros as f64 / 1000.0;
    Ok(LatencyReport {
        tasks: n,
        target_per_sec: rate,
        submitted_per_sec: load::per_sec(n.saturating_sub(1), submitting),
        failed: results.failed,
        max_pacing_lag_ms: max_lag.as_secs_f64() * 1000.0,
        p50_ms: ms(histogram.value_at_quantile(0.50)),
        p90_ms: ms(histogram.value_at_quantile(0.90)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
        mean_ms: histogram.mean() / 1000.0,
    })
}

/// Submit-to-result times in microseconds.
fn latencies(sent: &[Instant], received: &[Option<Instant>]) -> anyhow::Result<Histogram<u64>> {
    // 1 µs to 1 h, three significant digits.
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .context("while creating the latency histogram")?;
    for (sent, received) in sent.iter().zip(received) {
        let received = received.context("a result is missing")?;
        let micros = (received - *sent).as_micros().max(1) as u64;
        histogram.saturating_record(micros);
    }
    Ok(histogram)
}

/// What a result says, as far as the benchmark cares.
#[derive(Deserialize)]
struct ResultStatus {
    status: TaskStatus,
}

/// Results of one phase, as received.
struct Results {
    /// When the result of task `n` arrived.
    received: Vec<Option<Instant>>,
    succeeded: usize,
    failed: usize,
    /// When the last one arrived.
    last: Option<Instant>,
}

/// Collects the results of one phase on its own connection and task.
struct Collector {
    handle: AbortOnDropHandle<anyhow::Result<Results>>,
}

impl Collector {
    /// Subscribes (before returning, so no result is missed) and starts collecting.
    async fn start(url: &str, tasks: &Tasks, n: usize) -> anyhow::Result<Collector> {
        let client = load::connect(url, "clawfleet-bench-collector").await?;
        // Every tenant's results: the bench's own tasks are told apart by id.
        let subscription = client
            .subscribe(subjects::RESULTS_ALL)
            .await
            .context("while subscribing to results")?;
        load::round_trip(&client).await?;
        let handle = tokio::spawn(collect(subscription, tasks.clone(), n));
        Ok(Collector {
            handle: AbortOnDropHandle::new(handle),
        })
    }

    /// Waits until every result has arrived.
    async fn finish(self) -> anyhow::Result<Results> {
        self.handle
            .await
            .context("the result collector panicked")?
            .context("while collecting results")
    }
}

async fn collect(
    mut subscription: async_nats::Subscriber,
    tasks: Tasks,
    n: usize,
) -> anyhow::Result<Results> {
    let mut results = Results {
        received: vec![None; n],
        succeeded: 0,
        failed: 0,
        last: None,
    };
    let mut count = 0;
    while count < n {
        let msg = tokio::time::timeout(STALL_TIMEOUT, subscription.next())
            .await
            .with_context(|| {
                format!("only {count} of {n} results arrived (none for {STALL_TIMEOUT:?})")
            })?
            .context("the result subscription ended")?;
        let now = Instant::now();
        let Some(slot) = tasks
            .number(&msg.subject)
            .and_then(|i| results.received.get_mut(i))
        else {
            continue; // another phase's or another client's task
        };
        if slot.is_some() {
            continue; // a redelivered result
        }
        *slot = Some(now);
        count += 1;
        results.last = Some(now);
        match serde_json::from_slice::<ResultStatus>(&msg.payload) {
            Ok(r) if r.status == TaskStatus::Succeeded => results.succeeded += 1,
            _ => results.failed += 1,
        }
    }
    Ok(results)
}

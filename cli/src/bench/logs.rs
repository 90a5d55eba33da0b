//! `clawfleet bench logs`: the log pipeline's ingest rate and search latency.
//!
//! 1. **Publish**: N synthetic log lines (a realistic mix of services,
//!    100 agents, 50 tenants, levels, tasks of about ten lines each, and
//!    messages drawn from a few hundred words) are published to
//!    `clawfleet.logs.*` into `CLAWFLEET_LOGS`, with stream acks (services
//!    ship with core publishes; a burst of millions of those outruns the
//!    stream's ingest queue and the server drops some). Their times spread
//!    over the last hour.
//! 2. **Ingest**: a log aggregator starts in this process on an empty index
//!    and works through the backlog. Reported: lines indexed per second
//!    from its start until its stats count all N, and the index size.
//! 3. **Search**: requests on `clawfleet.api.logs.search`, one at a time,
//!    of six kinds (a common word, a rare word, one task's lines, one
//!    agent's warnings, one tenant's lines with a word, one service's last
//!    minute of lines), each kind with varying values. Reported: latency
//!    percentiles per kind and over all, measured at the client (so they
//!    include the NATS round trip).
//!
//! The logs stream is created with limits sized for N lines. Against a
//! shared server (`--nats-url`), the run's lines stay in its logs stream.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use clawfleet_shared::logs::{Level, LogLine, LogSearchReply, LogSearchRequest, LogStatsReply};
use clawfleet_shared::topology::{self, Limits};
use clawfleet_shared::{subjects, timefmt};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::load::Publisher;
use super::server::TempServer;
use crate::client::Api;
use crate::output;

/// Options of `clawfleet bench logs`.
#[derive(Debug, clap::Args)]
pub struct LogsBenchArgs {
    /// Log lines to publish and index.
    #[arg(long, default_value_t = 200_000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1_000..=50_000_000))]
    lines: u64,
    /// Searches of each of the six kinds.
    #[arg(long, default_value_t = 50, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    searches: u32,
    /// Directory for the index [default: a temporary directory, removed afterwards].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct LogsReport {
    /// The server measured against.
    pub nats_url: String,
    /// Lines published and indexed.
    pub lines: u64,
    /// Their average size as published.
    pub line_bytes: u64,
    /// Publish rate into the stream, lines/s.
    pub publish_per_sec: f64,
    /// Aggregator ingest rate, lines/s (start to all indexed).
    pub ingest_per_sec: f64,
    /// Seconds the aggregator took.
    pub ingest_seconds: f64,
    /// Size of the index on disk (database and write-ahead log).
    pub index_bytes: u64,
    /// Latency per search kind.
    pub search: BTreeMap<String, Percentiles>,
    /// Latency over every search.
    pub search_all: Percentiles,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    /// Searches run.
    pub count: u64,
    /// Lines the searches returned, on average.
    pub avg_lines: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>, lines: u64) -> Percentiles {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            avg_lines: if h.is_empty() {
                0.0
            } else {
                lines as f64 / h.len() as f64
            },
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// Builds one search of a kind, with values drawn from the generator.
type MakeSearch<'a> = dyn Fn(&mut StdRng) -> LogSearchRequest + 'a;

const AGENTS: u64 = 100;
const TENANTS: u64 = 50;
const LINES_PER_TASK: u64 = 10;
const WORDS: &[&str] = &[
    "fetched",
    "repository",
    "cloned",
    "branch",
    "commit",
    "build",
    "compiled",
    "linked",
    "test",
    "passed",
    "failed",
    "retrying",
    "timeout",
    "connection",
    "reset",
    "upstream",
    "request",
    "response",
    "parsed",
    "payload",
    "tokens",
    "model",
    "prompt",
    "completion",
    "cache",
    "hit",
    "miss",
    "wrote",
    "read",
    "file",
    "bytes",
    "chunk",
    "uploaded",
    "download",
    "browser",
    "page",
    "loaded",
    "clicked",
    "selector",
    "screenshot",
    "render",
    "layout",
    "queue",
    "worker",
    "slot",
    "progress",
    "heartbeat",
    "checkpoint",
    "snapshot",
    "restore",
    "database",
    "query",
    "rows",
    "index",
    "migration",
    "schema",
    "lock",
    "released",
    "held",
    "memory",
    "cpu",
    "disk",
    "network",
    "latency",
    "throughput",
    "budget",
    "quota",
    "limit",
];

/// The `i`-th synthetic line, deterministic for a seed.
fn synthetic(rng: &mut StdRng, i: u64, n: u64, start: timefmt::Timestamp) -> LogLine {
    let span = Duration::from_secs(3600);
    let time = start + span.mul_f64(i as f64 / n as f64);
    let task = i / LINES_PER_TASK;
    let roll: u32 = rng.random_range(0..100);
    let level = match roll {
        0..=1 => Level::Error,
        2..=9 => Level::Warn,
        10..=49 => Level::Info,
        _ => Level::Debug,
    };
    let dispatcher = rng.random_range(0..5) == 0;
    let mut line = LogLine::new(level, if dispatcher { "dispatcher" } else { "agent" }, "");
    line.time = time;
    // Zero-padded, so ids sort in time order like the ULIDs clawfleet generates.
    line.task_id = Some(format!("task-{task:010}"));
    line.tenant = Some(format!("tenant-{}", task % TENANTS));
    if !dispatcher {
        line.agent_id = Some(format!("agent-{}", task % AGENTS));
    }
    let mut message = String::new();
    for _ in 0..rng.random_range(4..12) {
        if !message.is_empty() {
            message.push(' ');
        }
        message.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    // A rare word: about one line in ten thousand.
    if rng.random_range(0..10_000) == 0 {
        message.push_str(" kraken");
    }
    line.message = message;
    line.fields.insert("attempt".into(), (1 + task % 3).into());
    if level >= Level::Warn {
        line.fields.insert(
            "code".into(),
            format!("E{}", rng.random_range(100..200)).into(),
        );
    }
    line
}

/// Runs the benchmark.
pub async fn run(nats_url: Option<String>, args: LogsBenchArgs) -> anyhow::Result<()> {
    let (server, url) = match nats_url {
        Some(url) => (None, url),
        None => {
            let server = TempServer::start().await?;
            let url = server.url.clone();
            (Some(server), url)
        }
    };
    let report = measure(&url, &args).await;
    if let Some(server) = server {
        server.stop().await;
    }
    let report = report?;
    if args.json {
        output::print_json(&report)
    } else {
        print!("{}", render(&report));
        Ok(())
    }
}

async fn measure(url: &str, args: &LogsBenchArgs) -> anyhow::Result<LogsReport> {
    let api = Api::connect(url).await?;
    let js = api.jetstream();
    let limits = Limits {
        // Room for every line (about 230 bytes, plus what the server
        // stores with each), however large the run.
        logs_max_bytes: (args.lines as i64 * 400).max(Limits::default().logs_max_bytes),
        ..Limits::default()
    };
    topology::ensure(&js, &limits)
        .await
        .context("while creating the logs stream")?;
    let stream = js.get_stream(subjects::STREAM_LOGS).await?;
    let before = stream.get_info().await?.state.messages;

    // 1. Publish. With stream acks: a burst of core publishes this large
    // outruns the stream's ingest queue and the server drops some.
    eprintln!("publishing {} log lines", args.lines);
    let mut publisher = Publisher::connect(url, "clawfleet-bench-logs").await?;
    let mut rng = StdRng::seed_from_u64(7);
    let start_time = timefmt::now() - Duration::from_secs(3600);
    let started = Instant::now();
    let mut bytes = 0u64;
    for i in 0..args.lines {
        let line = synthetic(&mut rng, i, args.lines, start_time);
        let body = serde_json::to_vec(&line)?;
        bytes += body.len() as u64;
        publisher.send(&line.subject(), body.into()).await?;
    }
    publisher.flush().await?;
    let expected = before + args.lines;
    wait_until(
        "the logs stream to hold every line",
        Duration::from_secs(600),
        || {
            let stream = stream.clone();
            async move {
                let info = stream.get_info().await.ok()?;
                (info.state.messages >= expected).then_some(())
            }
        },
    )
    .await?;
    let publish_secs = started.elapsed().as_secs_f64();

    // 2. Ingest.
    let dir = match &args.data_dir {
        Some(d) => Dir::Given(d.clone()),
        None => Dir::Temp(
            tempfile::Builder::new()
                .prefix("clawfleet-bench-logs-")
                .tempdir()?,
        ),
    };
    let config = clawfleet_log_aggregator::Config {
        nats_url: url.to_string(),
        data_dir: dir.path().to_path_buf(),
        consumer: format!("bench-{}", std::process::id()),
        metrics_addr: None,
        ..Default::default()
    };
    eprintln!("indexing them");
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let aggregator = clawfleet_log_aggregator::start(config, shutdown.clone()).await?;
    wait_until(
        "the aggregator to index every line",
        Duration::from_secs(3600),
        || async {
            let stats: LogStatsReply = api
                .request(subjects::API_LOGS_STATS, Vec::new().into())
                .await
                .ok()?;
            (stats.ingested >= args.lines).then_some(())
        },
    )
    .await?;
    let ingest_secs = started.elapsed().as_secs_f64();
    let index_bytes = dir_size(dir.path());

    // 3. Search.
    eprintln!("searching");
    let tasks = (args.lines / LINES_PER_TASK).max(1);
    // The last line was logged an hour after the first.
    let newest = start_time + Duration::from_secs(3600);
    let mut all = Histogram::<u64>::new(3)?;
    let mut all_lines = 0;
    let mut search = BTreeMap::new();
    let kinds: [(&str, &MakeSearch<'_>); 6] = [
        ("common word", &|rng| LogSearchRequest {
            text: Some(WORDS[rng.random_range(0..WORDS.len())].to_string()),
            ..Default::default()
        }),
        ("rare word", &|_| LogSearchRequest {
            text: Some("kraken".into()),
            ..Default::default()
        }),
        ("one task", &|rng| LogSearchRequest {
            task_id: Some(format!("task-{:010}", rng.random_range(0..tasks))),
            ..Default::default()
        }),
        ("agent warnings", &|rng| LogSearchRequest {
            agent_id: Some(format!("agent-{}", rng.random_range(0..AGENTS))),
            level: Some(Level::Warn),
            ..Default::default()
        }),
        ("tenant + word", &|rng| LogSearchRequest {
            tenant: Some(format!("tenant-{}", rng.random_range(0..TENANTS))),
            text: Some(WORDS[rng.random_range(0..WORDS.len())].to_string()),
            ..Default::default()
        }),
        ("service, last minute", &move |_| LogSearchRequest {
            service: Some("dispatcher".into()),
            since: Some(newest - Duration::from_secs(60)),
            ..Default::default()
        }),
    ];
    let mut rng = StdRng::seed_from_u64(11);
    for (name, make) in kinds {
        let mut h = Histogram::<u64>::new(3)?;
        let mut lines = 0;
        for _ in 0..args.searches {
            let req = make(&mut rng);
            let t = Instant::now();
            let reply: LogSearchReply = api
                .request_json(subjects::API_LOGS_SEARCH, &req)
                .await
                .with_context(|| format!("during a {name} search"))?;
            let us = t.elapsed().as_micros() as u64;
            h.record(us.max(1))?;
            all.record(us.max(1))?;
            lines += reply.lines.len() as u64;
        }
        all_lines += lines;
        search.insert(name.to_string(), Percentiles::of(&h, lines));
    }
    shutdown.cancel();
    aggregator.wait().await;
    drop(dir);

    Ok(LogsReport {
        nats_url: url.to_string(),
        lines: args.lines,
        line_bytes: bytes / args.lines,
        publish_per_sec: args.lines as f64 / publish_secs,
        ingest_per_sec: args.lines as f64 / ingest_secs,
        ingest_seconds: ingest_secs,
        index_bytes,
        search,
        search_all: Percentiles::of(&all, all_lines),
    })
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout`.
async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await.is_some() {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The index directory: kept when given, removed when temporary.
enum Dir {
    Given(std::path::PathBuf),
    Temp(tempfile::TempDir),
}

impl Dir {
    fn path(&self) -> &std::path::Path {
        match self {
            Dir::Given(p) => p,
            Dir::Temp(t) => t.path(),
        }
    }
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn render(r: &LogsReport) -> String {
    let mut out = format!(
        "clawfleet bench logs against {}: {} lines of {} bytes on average\n\n",
        r.nats_url, r.lines, r.line_bytes
    );
    out.push_str(&format!(
        "  publish into CLAWFLEET_LOGS        {:>10.0} lines/s\n\
         \x20 aggregator ingest (backlog)       {:>10.0} lines/s  ({:.1} s)\n\
         \x20 index on disk                     {:>10.1} MiB  ({:.0} bytes/line)\n\n",
        r.publish_per_sec,
        r.ingest_per_sec,
        r.ingest_seconds,
        r.index_bytes as f64 / (1024.0 * 1024.0),
        r.index_bytes as f64 / r.lines as f64,
    ));
    out.push_str("  search latency, one request at a time (ms)\n");
    out.push_str(&format!(
        "  {:<22} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8}\n",
        "kind", "count", "avg lines", "p50", "p95", "p99", "max"
    ));
    let row = |name: &str, p: &Percentiles| {
        format!(
            "  {:<22} {:>7} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2}\n",
            name, p.count, p.avg_lines, p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms
        )
    };
    for (name, p) in &r.search {
        out.push_str(&row(name, p));
    }
    out.push_str(&row("all", &r.search_all));
    out
}

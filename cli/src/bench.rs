//! `clawfleet bench`: clawfleet's throughput and latency, next to what the
//! same nats-server does with plain JetStream.
//!
//! One run, one server (a temporary one of its own unless `--nats-url` or
//! `NATS_URL` names one), in this order:
//!
//! 1. **Raw JetStream** (the ceiling): N messages of the task size are
//!    published to a temporary work-queue stream, acks pipelined, while one
//!    pull consumer fetches them in batches and acks each. Reported: publish
//!    rate, and the round-trip rate from the first publish to the last ack.
//! 2. **Raw job round trip** (the floor any durable job system pays): jobs
//!    on a work-queue stream, workers that publish a result to a second
//!    stream, wait for its ack and ack the job, a collector reading results
//!    on a core subscription. Same shape as clawfleet (one connection per
//!    worker, the same in-flight limit) without records, routing or events.
//! 3. **clawfleet end to end**: a dispatcher and agents (simulator executor)
//!    start in this process; N echo tasks with explicit ids are published to
//!    `clawfleet.intake.bench` and their results read from
//!    `clawfleet.results.bench.>`. Reported: tasks/s from the first submit to
//!    the last result, and the ratio to (1). A short warm-up runs first, so
//!    the one-off creation of the queue is not timed.
//! 4. **Latency**: tasks submitted on a fixed schedule (open loop) at half
//!    the rate (3) reached, submit → result time per task, as percentiles.
//! 5. **Policy layer**: the same number of tasks and agents, but spread
//!    over 3 tenants (weights 1, 2, 3, with quotas that do not bind), 4
//!    capability profiles and 2 regions (one agent per profile and region),
//!    through a new dispatcher with those policies: throughput, and latency
//!    at the same paced rate as (4). Reported next to the plain path.
//! 6. **Failover**: agent processes SIGKILLed while holding a burst of
//!    tasks, with a health monitor running; kill → each held task running
//!    on another agent, as percentiles (see [`failover`]).
//!
//! Each throughput phase keeps the server busy for the whole run: the
//! producer never waits for a result before sending more, only for publish
//! acks, at most [`load::ACK_WINDOW`] behind.
//!
//! `clawfleet bench logs` measures the log pipeline instead: see [`logs`].
//!
//! The in-process dispatcher creates or updates the clawfleet streams with
//! its default limits, and the tasks, records, results and events of the
//! run stay in them: against a shared server, prefer a dedicated one.

mod alerts;
mod counters;
mod e2e;
mod failover;
mod fleet;
mod idle;
mod load;
mod logs;
mod production;
mod raw;
mod report;
mod server;

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use std::collections::BTreeMap;

use clawfleet_dispatcher::validate::TenantConfig;

use self::counters::Counters;
use self::e2e::{Mix, Tasks};
use self::fleet::{AgentSpec, Fleet};
use self::report::{PolicyReport, Report};
use self::server::TempServer;
use crate::output;

/// The latency phase is cut to this many seconds' worth of tasks at its rate.
const LATENCY_MAX_SECONDS: f64 = 20.0;

/// Options of `clawfleet bench`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Measures plain JetStream, a minimal job round trip on JetStream, then \
                        clawfleet end to end, on one server: its own temporary nats-server \
                        unless --nats-url or NATS_URL names one. The dispatcher and agents run \
                        in this process. On a shared server the dispatcher re-applies its \
                        default stream limits and the run's tasks stay in the clawfleet \
                        streams: prefer a dedicated server."
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// What else to measure instead of the task pipeline.
    #[command(subcommand)]
    what: Option<BenchWhat>,
    /// Tasks in the throughput phase (also the raw messages and raw jobs).
    #[arg(long, default_value_t = 20_000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    tasks: u32,
    /// Size of each submitted task body in bytes (the echo payload is padded
    /// to reach it); raw messages have the same size.
    #[arg(long, default_value_t = 256, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(128..=200_000))]
    payload_bytes: u32,
    /// Agents to start.
    #[arg(long, default_value_t = 8, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=256))]
    agents: u32,
    /// Tasks each agent runs at once (also the raw workers' in-flight jobs).
    #[arg(long, default_value_t = 64, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// Tasks in the latency phase (fewer if they would take more than 20 s at its rate).
    #[arg(long, default_value_t = 5_000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    latency_tasks: u32,
    /// Submission rate of the latency phase, tasks/s [default: half the measured throughput].
    #[arg(long, value_name = "PER_SEC", value_parser = parse_rate)]
    latency_rate: Option<f64>,
    /// Tasks run, untimed, before the throughput phase.
    #[arg(long, default_value_t = 200, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    warmup: u32,
    /// Agent processes to SIGKILL in the failover phase (0 skips it).
    #[arg(long, default_value_t = 20, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    failover_kills: u32,
    /// Skip the policy-layer phase.
    #[arg(long)]
    no_policy: bool,
    /// Give the policy phase's tenants this `max_running` quota, which
    /// agents keep across each tenant's queues (by default they have none).
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    policy_max_running: Option<u32>,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
}

/// Benchmarks other than the task pipeline.
#[derive(Debug, clap::Subcommand)]
pub enum BenchWhat {
    /// The log pipeline: lines/s a log aggregator indexes, and search latency over them.
    Logs(logs::LogsBenchArgs),
    /// What an idle fleet costs (CPU of the services and nats-server), and how fast it wakes.
    Idle(idle::IdleBenchArgs),
    /// What an evaluation of the alert rules costs on a large fleet, and how fast a
    /// condition reaches a webhook.
    Alerts(alerts::AlertsBenchArgs),
}

/// The options as sizes.
struct Plan {
    tasks: usize,
    payload_bytes: usize,
    agents: usize,
    concurrency: usize,
    latency_tasks: usize,
    latency_rate: Option<f64>,
    warmup: usize,
    failover_kills: usize,
    policy: bool,
    policy_max_running: Option<u32>,
}

impl From<&BenchArgs> for Plan {
    fn from(a: &BenchArgs) -> Plan {
        Plan {
            tasks: a.tasks as usize,
            payload_bytes: a.payload_bytes as usize,
            agents: a.agents as usize,
            concurrency: a.concurrency as usize,
            latency_tasks: a.latency_tasks as usize,
            latency_rate: a.latency_rate,
            warmup: a.warmup as usize,
            failover_kills: a.failover_kills as usize,
            policy: !a.no_policy,
            policy_max_running: a.policy_max_running,
        }
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a positive number of tasks per second"
        )),
    }
}

/// Runs the benchmark against the fleet at `nats_url` (the default URL when `None`).
pub async fn run(nats_url: Option<String>, args: BenchArgs) -> anyhow::Result<()> {
    init_logging();
    match args.what {
        Some(BenchWhat::Logs(logs)) => return logs::run(nats_url, logs).await,
        Some(BenchWhat::Idle(idle)) => return idle::run(idle).await,
        Some(BenchWhat::Alerts(a)) => return alerts::run(a).await,
        None => {}
    }
    let plan = Plan::from(&args);
    let mut interrupt = signal(SignalKind::interrupt()).context("while handling SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("while handling SIGTERM")?;
    // Interrupted, the measurement is dropped: its server is killed and its
    // services' tasks end with the runtime.
    let report = tokio::select! {
        report = measure(nats_url, &plan) => report?,
        _ = interrupt.recv() => anyhow::bail!("interrupted"),
        _ = terminate.recv() => anyhow::bail!("terminated"),
    };
    if args.json {
        output::print_json(&report)
    } else {
        print!("{}", report.render());
        Ok(())
    }
}

/// Logs go to stderr, warnings and errors only unless `RUST_LOG` says otherwise.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,clawfleet_health_monitor=error")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn measure(nats_url: Option<String>, plan: &Plan) -> anyhow::Result<Report> {
    let (server, url) = match nats_url {
        Some(url) => (None, url),
        None => {
            let server = TempServer::start().await?;
            let url = server.url.clone();
            (Some(server), url)
        }
    };
    let monitoring = server.as_ref().and_then(|s| s.monitoring.clone());
    let report = phases(&url, plan, server.is_some(), monitoring).await;
    if let Some(server) = server {
        server.stop().await;
    }
    report
}

async fn phases(
    url: &str,
    plan: &Plan,
    own_server: bool,
    monitoring: Option<String>,
) -> anyhow::Result<Report> {
    let probe = load::connect(url, "clawfleet-bench").await?;
    let version = probe.server_info().version;
    let counters = Counters::new(probe.clone(), monitoring);
    let run = run_id();
    let raw_body = Tasks::new(&run, 'r', plan.payload_bytes).body(0);

    let raw = raw::throughput(url, plan.tasks, raw_body.clone()).await?;
    let raw_jobs = raw::job_round_trip(
        url,
        plan.tasks,
        plan.agents,
        plan.concurrency,
        raw_body,
        &counters,
    )
    .await?;

    let plain = vec![AgentSpec::default(); plan.agents];
    let fleet = Fleet::start(url, &plain, plan.concurrency, BTreeMap::new()).await?;
    let measured = clawfleet(url, plan, &run, &fleet, &counters, None).await;
    let failover = match (&measured, plan.failover_kills) {
        (Ok(_), kills) if kills > 0 => Some(failover::measure(url, &run, kills).await),
        _ => None,
    };
    fleet.stop().await;
    let (clawfleet, latency) = measured?;
    let failover = failover.transpose().context("during the failover phase")?;

    let policy = if plan.policy {
        let mix = Mix {
            tenants: 3,
            profiles: 4,
            regions: vec!["eu".into(), "us".into()],
        };
        let tenants = (0..mix.tenants)
            .map(|t| {
                let mut policy = TenantConfig {
                    weight: t as u32 + 1,
                    ..Default::default()
                };
                policy.quota.max_queued = Some(10_000_000);
                policy.quota.submit_rate = Some(1_000_000.0);
                policy.quota.max_running = plan.policy_max_running;
                (mix.tenant(t), policy)
            })
            .collect();
        let agents: Vec<AgentSpec> = (0..plan.agents)
            .map(|i| AgentSpec {
                capabilities: vec![format!("p{}", i % mix.profiles)],
                region: Some(mix.regions[(i / mix.profiles) % mix.regions.len()].clone()),
            })
            .collect();
        let fleet = Fleet::start(url, &agents, plan.concurrency, tenants).await?;
        let rate = Some(latency.target_per_sec);
        let measured = self::clawfleet(url, plan, &run, &fleet, &counters, Some((mix, rate))).await;
        fleet.stop().await;
        let (throughput, latency) = measured.context("during the policy phase")?;
        Some(PolicyReport {
            ratio_to_plain: throughput.per_sec / clawfleet.per_sec,
            max_running: plan.policy_max_running,
            throughput,
            latency,
        })
    } else {
        None
    };

    Ok(Report {
        nats_url: url.to_string(),
        nats_server_version: version,
        own_server,
        agents: plan.agents,
        concurrency: plan.concurrency,
        ratio: clawfleet.per_sec / raw.round_trip_per_sec,
        ratio_to_raw_jobs: clawfleet.per_sec / raw_jobs.per_sec,
        raw,
        raw_jobs,
        clawfleet,
        latency,
        policy,
        failover,
    })
}

/// Warm-up, throughput, then latency at half the throughput (or at the
/// rate given with a mix, to compare the policy layer at the same load).
async fn clawfleet(
    url: &str,
    plan: &Plan,
    run: &str,
    fleet: &Fleet,
    counters: &Counters,
    mix: Option<(Mix, Option<f64>)>,
) -> anyhow::Result<(e2e::ThroughputReport, e2e::LatencyReport)> {
    fleet.wait_registered(url).await?;
    let (mix, fixed_rate) = match mix {
        Some((m, r)) => (Some(m), r),
        None => (None, None),
    };
    // Phase letters keep the ids of the two paths apart.
    let (w, t, l) = if mix.is_some() {
        ('W', 'T', 'L')
    } else {
        ('w', 't', 'l')
    };
    if plan.warmup > 0 {
        let warmup = Tasks::with_mix(run, w, plan.payload_bytes, mix.clone());
        e2e::throughput(url, &warmup, plan.warmup)
            .await
            .context("during the warm-up")?;
    }
    let tasks = Tasks::with_mix(run, t, plan.payload_bytes, mix.clone());
    let before = counters.snapshot().await?;
    let mut throughput = e2e::throughput(url, &tasks, plan.tasks)
        .await
        .context("during the throughput phase")?;
    throughput.cost = Some(before.cost_until(&counters.snapshot().await?, plan.tasks));
    let rate = fixed_rate
        .or(plan.latency_rate)
        .unwrap_or(throughput.per_sec / 2.0);
    let n = plan
        .latency_tasks
        .min((rate * LATENCY_MAX_SECONDS).ceil() as usize)
        .max(1);
    let tasks = Tasks::with_mix(run, l, plan.payload_bytes, mix);
    let latency = e2e::latency(url, &tasks, n, rate)
        .await
        .context("during the latency phase")?;
    Ok((throughput, latency))
}

/// A token unique to this run, so its task ids never collide with an
/// earlier run's on the same server (ids are idempotency keys).
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("b{:x}", nanos & 0xffff_ffff_ffff_ffff)
}

//! `clawfleet bench idle`: what a fleet with nothing to do costs, and how
//! fast it starts a task once one arrives.
//!
//! On its own temporary nats-server, with production defaults (2 s
//! heartbeats, idle polls backing off from 250 ms to 5 s, a health monitor
//! pinging every agent every 2 s), it starts a dispatcher, a health monitor
//! and `--agents` agents in this process, lets them settle, then reads the
//! CPU time this process and the server used over `--seconds` of idleness
//! (from `/proc`). Then it submits tasks one at a time, each after a pause
//! long enough for the agents to have backed off, and times submit →
//! result: the cost of waking an idle fleet.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::production::ProductionFleet;
use super::server::TempServer;
use crate::client::Api;
use clawfleet_shared::subjects;

/// Clock ticks per second in `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;
/// How long the fleet settles after every agent registered.
const SETTLE: Duration = Duration::from_secs(5);
/// Pause before each timed task: longer than the agents' longest idle wait.
const PAUSE: Duration = Duration::from_millis(5500);
/// How long one timed task may take.
const TASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of `clawfleet bench idle`.
#[derive(Debug, clap::Args)]
pub struct IdleBenchArgs {
    /// Idle agents to run (each with two slots).
    #[arg(long, default_value_t = 1000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=5000))]
    agents: u32,
    /// Seconds of idleness measured.
    #[arg(long, default_value_t = 10, value_name = "S",
          value_parser = clap::value_parser!(u32).range(1..=600))]
    seconds: u32,
    /// Tasks submitted one at a time to an idle fleet afterwards.
    #[arg(long, default_value_t = 10, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    tasks: u32,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct IdleReport {
    /// Agents.
    pub agents: u32,
    /// Seconds measured.
    pub seconds: f64,
    /// Cores used by the fleet's services (this process) and nats-server together.
    pub cores: f64,
    /// Of those, nats-server's.
    pub server_cores: f64,
    /// Submit → result of a task given to the idle fleet, milliseconds, sorted.
    pub wake_ms: Vec<f64>,
}

/// Runs the idle benchmark.
pub async fn run(args: IdleBenchArgs) -> anyhow::Result<()> {
    let server = TempServer::start().await?;
    let outcome = measure(&server, &args).await;
    server.stop().await;
    let report = outcome?;
    if args.json {
        return crate::output::print_json(&report);
    }
    println!(
        "idle fleet: {} agents × 2 slots, a dispatcher and a health monitor, production defaults, {:.0} s\n\
         \x20 CPU, nats-server and services together   {:.3} cores ({:.3} nats-server), {:.2} ms of CPU per agent per second",
        report.agents,
        report.seconds,
        report.cores,
        report.server_cores,
        report.cores * 1000.0 / report.agents as f64,
    );
    if !report.wake_ms.is_empty() {
        let w = &report.wake_ms;
        println!(
            "  {} tasks given to the idle fleet one at a time, submit → result: median {:.1} ms, max {:.1} ms",
            w.len(),
            w[w.len() / 2],
            w[w.len() - 1]
        );
    }
    Ok(())
}

async fn measure(server: &TempServer, args: &IdleBenchArgs) -> anyhow::Result<IdleReport> {
    let stop = CancellationToken::new();
    let fleet = ProductionFleet::start(&server.url, args.agents, "idle", &stop).await?;
    let measured = idle(server, &server.url, args).await;
    stop.cancel();
    fleet.wait().await;
    measured
}

async fn idle(server: &TempServer, url: &str, args: &IdleBenchArgs) -> anyhow::Result<IdleReport> {
    let api = Api::connect(url).await?;
    let agents = api
        .jetstream()
        .get_key_value(subjects::BUCKET_AGENTS)
        .await
        .context("while opening the agents bucket")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let registered = agents.keys().await?.count().await;
        if registered >= args.agents as usize {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {registered} agents registered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(SETTLE).await;

    let server_pid = server.pid().context("nats-server has exited")?;
    let before = (cpu_seconds(std::process::id())?, cpu_seconds(server_pid)?);
    let began = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds as u64)).await;
    let after = (cpu_seconds(std::process::id())?, cpu_seconds(server_pid)?);
    let seconds = began.elapsed().as_secs_f64();
    let services = (after.0 - before.0) / seconds;
    let server_cores = (after.1 - before.1) / seconds;

    let mut wake_ms = Vec::with_capacity(args.tasks as usize);
    for i in 0..args.tasks {
        tokio::time::sleep(PAUSE).await;
        let id = format!("idle-{}-{i}", std::process::id());
        let mut result = api
            .client()
            .subscribe(subjects::result("bench", &id))
            .await?;
        let body = json!({"id": id, "tenant": "bench", "payload": {"op": "echo"}});
        let sent = Instant::now();
        if let Err(e) = api
            .call::<serde_json::Value>(
                subjects::API_SUBMIT,
                Bytes::from(serde_json::to_vec(&body)?),
            )
            .await?
        {
            anyhow::bail!("task {id} was refused: {e}");
        }
        tokio::time::timeout(TASK_TIMEOUT, result.next())
            .await
            .with_context(|| format!("task {id} had no result within {TASK_TIMEOUT:?}"))?;
        wake_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    wake_ms.sort_by(f64::total_cmp);
    Ok(IdleReport {
        agents: args.agents,
        seconds,
        cores: services + server_cores,
        server_cores,
        wake_ms,
    })
}

/// CPU time (user + system) of process `pid` so far, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("while reading {path}"))?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 counted after the name.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("unexpected /proc stat format")?
            .parse::<u64>()? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / TICKS_PER_SEC)
}

//! Failover: how long after an agent process is SIGKILLed its task runs on
//! another agent.
//!
//! Each round starts a victim agent as a child process of this executable
//! (the hidden `agent` subcommand, 500 ms heartbeats) offering a capability
//! no other running agent has, gives it a task, starts a survivor agent
//! with the same capability, SIGKILLs the victim and times kill → the
//! survivor's attempt start, read from the task's record. A health monitor
//! in this process (1.5 s heartbeat timeout, pings every 250 ms) does the
//! failover; the dispatcher's ack wait stays at its 30 s default, so the
//! figure is the monitor's, not JetStream's redelivery.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use clawfleet_shared::api::TaskGetRequest;
use clawfleet_shared::{subjects, TaskRecord, TaskStatus};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::client::Api;

/// Heartbeat interval of the agents in this phase.
const HEARTBEAT: &str = "500ms";
/// How long one round may take before the phase gives up.
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// What the failover phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    /// Agents killed.
    pub kills: usize,
    /// The monitor's heartbeat timeout.
    pub heartbeat_timeout_ms: u64,
    /// The JetStream ack wait the monitor beats.
    pub ack_wait_ms: u64,
    /// Kill → running elsewhere, percentiles.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// The monitor settings of the phase.
fn monitor_config(url: &str) -> clawfleet_health_monitor::Config {
    clawfleet_health_monitor::Config {
        nats_url: url.to_string(),
        heartbeat_timeout: Duration::from_millis(1500),
        check_interval: Duration::from_millis(50),
        ping_interval: Duration::from_millis(250),
        ping_timeout: Duration::from_millis(200),
        ping_failures: 2,
        metrics_addr: None,
        ..Default::default()
    }
}

/// Runs `kills` rounds against the fleet at `url` (a dispatcher must run).
pub async fn measure(url: &str, run: &str, kills: usize) -> anyhow::Result<FailoverReport> {
    let config = monitor_config(url);
    let heartbeat_timeout_ms = config.heartbeat_timeout.as_millis() as u64;
    let stop_monitor = CancellationToken::new();
    let monitor = clawfleet_health_monitor::start(config, stop_monitor.clone())
        .await
        .context("while starting the health monitor")?;
    let api = Api::connect(url).await?;
    let mut times = Vec::with_capacity(kills);
    let mut outcome = Ok(());
    for round in 0..kills {
        match tokio::time::timeout(ROUND_TIMEOUT, one_round(url, &api, run, round)).await {
            Ok(Ok(ms)) => times.push(ms),
            Ok(Err(e)) => {
                outcome = Err(e.context(format!("in failover round {round}")));
                break;
            }
            Err(_) => {
                outcome = Err(anyhow::anyhow!(
                    "failover round {round} took more than {ROUND_TIMEOUT:?}"
                ));
                break;
            }
        }
    }
    stop_monitor.cancel();
    monitor.wait().await;
    outcome?;
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    Ok(FailoverReport {
        kills,
        heartbeat_timeout_ms,
        ack_wait_ms: clawfleet_dispatcher::Config::default()
            .task_ack_wait
            .as_millis() as u64,
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
        max_ms: *times.last().unwrap_or(&0.0),
    })
}

/// One kill; returns kill → running elsewhere, in milliseconds.
async fn one_round(url: &str, api: &Api, run: &str, round: usize) -> anyhow::Result<f64> {
    let capability = format!("fo{}", round);
    let victim_id = format!("{run}-victim-{round}");
    let survivor_id = format!("{run}-survivor-{round}");
    let exe = std::env::current_exe().context("while locating this executable")?;
    let mut victim = tokio::process::Command::new(exe)
        .args(["--nats-url", url, "agent", "--agent-id", &victim_id])
        .args(["--capabilities", &capability, "--max-concurrency", "1"])
        .env("CLAWFLEET_HEARTBEAT_INTERVAL", HEARTBEAT)
        .env("CLAWFLEET_IDLE_POLL_INTERVAL", "20ms")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("while starting a victim agent")?;

    // The task can only go to the victim until the survivor starts.
    let task_id = format!("{run}-fo-{round}");
    let body = json!({"id": task_id, "tenant": "bench", "requires": [capability],
                      "payload": {"op": "sleep", "ms": 1000}});
    // Refused as an unknown capability until the victim has registered.
    while api
        .call::<serde_json::Value>(subjects::API_SUBMIT, serde_json::to_vec(&body)?.into())
        .await?
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_record(api, &task_id, |r| {
        r.status == TaskStatus::Running && r.attempts.last().is_some_and(|a| a.agent == victim_id)
    })
    .await?;
    let stop_survivor = CancellationToken::new();
    let survivor = clawfleet_agent::start(
        clawfleet_agent::Config {
            nats_url: url.to_string(),
            agent_id: survivor_id.clone(),
            capabilities: vec![capability.clone()],
            heartbeat_interval: Duration::from_millis(500),
            idle_poll_interval: Duration::from_millis(20),
            drain_timeout: Duration::from_secs(5),
            ..Default::default()
        },
        stop_survivor.clone(),
    )
    .await
    .context("while starting a survivor agent")?;

    let killed_at = time::OffsetDateTime::now_utc();
    victim.kill().await.context("while killing the victim")?;
    let moved = wait_record(api, &task_id, |r| {
        r.attempts.last().is_some_and(|a| a.agent == survivor_id)
    })
    .await?;
    let started = moved.attempts.last().expect("an attempt").started_at;
    let ms = (started - killed_at).as_seconds_f64() * 1000.0;
    wait_record(api, &task_id, |r| r.status.is_final()).await?;
    stop_survivor.cancel();
    survivor.wait().await;
    Ok(ms.max(0.0))
}

async fn wait_record(
    api: &Api,
    id: &str,
    done: impl Fn(&TaskRecord) -> bool,
) -> anyhow::Result<TaskRecord> {
    let request = TaskGetRequest {
        id: id.to_string(),
        tenant: None,
    };
    loop {
        if let Ok(Ok(r)) = api
            .call::<TaskRecord>(subjects::API_TASK_GET, serde_json::to_vec(&request)?.into())
            .await
        {
            if done(&r) {
                return Ok(r);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

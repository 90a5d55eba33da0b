//! Failover: how long after an agent process is SIGKILLed its task runs on
//! another agent.
//!
//! Each round starts a victim agent as a child process of this executable
//! (the hidden `agent` subcommand, 500 ms heartbeats) offering a capability
//! no other running agent has, submits a burst of [`BURST`] tasks for it,
//! and SIGKILLs the victim while it holds them. Both things a crash leaves
//! behind are measured:
//! - even rounds kill the victim the moment it announces its first lease,
//!   so it holds tasks it has fetched but not yet recorded running; the
//!   survivor agent (same capability) starts right after the kill, which
//!   adds its start-up, a few milliseconds, to these figures;
//! - odd rounds start the survivor first and kill the victim once one task
//!   is recorded running on it.
//!
//! A task counts as held if the victim announced it or recorded an attempt
//! of it; every held task is timed, kill → its attempt start on the
//! survivor, read from the task's record.
//!
//! A health monitor in this process (1.5 s heartbeat timeout, pings every
//! 250 ms) does the failover; the dispatcher's ack wait stays at its 30 s
//! default, so the figure is the monitor's, not JetStream's redelivery.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use clawfleet_shared::api::TaskGetRequest;
use clawfleet_shared::{subjects, TaskRecord};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::client::Api;

/// Heartbeat interval of the agents in this phase.
const HEARTBEAT: &str = "500ms";
/// Tasks given to each victim at once (also its concurrency, so it holds all).
const BURST: usize = 8;
/// How long one round may take before the phase gives up.
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// What the failover phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    /// Agents killed.
    pub kills: usize,
    /// Tasks the victims held when killed, each timed.
    pub held: usize,
    /// Of those, tasks the victim had fetched but not yet recorded running.
    pub held_unrecorded: usize,
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
    let mut times = Vec::with_capacity(kills * BURST);
    let mut held_unrecorded = 0;
    let mut outcome = Ok(());
    for round in 0..kills {
        match tokio::time::timeout(ROUND_TIMEOUT, one_round(url, &api, run, round)).await {
            Ok(Ok(round)) => {
                times.extend(round.times_ms);
                held_unrecorded += round.unrecorded;
            }
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
    anyhow::ensure!(
        !times.is_empty(),
        "no victim held a task when it was killed"
    );
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    Ok(FailoverReport {
        kills,
        held: times.len(),
        held_unrecorded,
        heartbeat_timeout_ms,
        ack_wait_ms: clawfleet_dispatcher::Config::default()
            .task_ack_wait
            .as_millis() as u64,
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
        max_ms: *times.last().unwrap_or(&0.0),
    })
}

/// What one kill left behind and how fast it was taken over.
struct Round {
    /// Kill → running on the survivor, per held task, in milliseconds.
    times_ms: Vec<f64>,
    /// Held tasks that had no attempt on the victim in their record.
    unrecorded: usize,
}

/// One kill of a victim holding a burst of tasks.
async fn one_round(url: &str, api: &Api, run: &str, round: usize) -> anyhow::Result<Round> {
    let capability = format!("fo{}", round);
    let victim_id = format!("{run}-victim-{round}");
    let survivor_id = format!("{run}-survivor-{round}");
    let kill_on_lease = round.is_multiple_of(2);
    let exe = std::env::current_exe().context("while locating this executable")?;
    let mut victim = tokio::process::Command::new(exe)
        .args(["--nats-url", url, "agent", "--agent-id", &victim_id])
        .args(["--capabilities", &capability])
        .args(["--max-concurrency", &BURST.to_string()])
        .env("CLAWFLEET_HEARTBEAT_INTERVAL", HEARTBEAT)
        .env("CLAWFLEET_IDLE_POLL_INTERVAL", "20ms")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("while starting a victim agent")?;
    // Leases are announced at fetch time, before any record is written.
    let mut leases = api
        .client()
        .subscribe(subjects::agent_lease(&victim_id))
        .await
        .context("while watching the victim's leases")?;
    let survivor_config = clawfleet_agent::Config {
        nats_url: url.to_string(),
        agent_id: survivor_id.clone(),
        capabilities: vec![capability.clone()],
        max_concurrency: BURST as u32,
        heartbeat_interval: Duration::from_millis(500),
        idle_poll_interval: Duration::from_millis(20),
        drain_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let stop_survivor = CancellationToken::new();

    // Refused as an unknown capability until the victim has registered.
    let ids: Vec<String> = (0..BURST)
        .map(|i| format!("{run}-fo-{round}-{i}"))
        .collect();
    let body = |id: &str| {
        serde_json::to_vec(
            &json!({"id": id, "tenant": "bench", "requires": [capability],
                                   "payload": {"op": "sleep", "ms": 1000}}),
        )
    };
    while api
        .call::<serde_json::Value>(subjects::API_SUBMIT, body(&ids[0])?.into())
        .await?
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let submit_rest = || async {
        let submits = ids[1..].iter().map(|id| async move {
            match api
                .call::<serde_json::Value>(subjects::API_SUBMIT, body(id)?.into())
                .await?
            {
                Ok(_) => Ok(()),
                Err(e) => Err(anyhow::anyhow!(
                    "task {id} was refused after the victim registered: {e}"
                )),
            }
        });
        futures::future::try_join_all(submits).await.map(drop)
    };
    let mut announced = std::collections::HashSet::new();
    let on_victim = |r: &TaskRecord| r.attempts.iter().any(|a| a.agent == victim_id);
    let mut survivor = None;
    let killed_at;
    if kill_on_lease {
        // The first task's lease is old news: kill on the next one, which
        // may come while the rest of the burst is still being submitted.
        let first = leases.next().await.context("the lease watch ended")?;
        note_leases(&first.payload, &mut announced);
        let submitted = submit_rest();
        tokio::pin!(submitted);
        let mut submitted_done = false;
        loop {
            tokio::select! {
                m = leases.next() => {
                    note_leases(&m.context("the lease watch ended")?.payload, &mut announced);
                    break;
                }
                r = &mut submitted, if !submitted_done => {
                    r?;
                    submitted_done = true;
                }
            }
        }
        killed_at = time::OffsetDateTime::now_utc();
        victim.start_kill().context("while killing the victim")?;
        if !submitted_done {
            submitted.await?;
        }
    } else {
        submit_rest().await?;
        survivor = Some(
            clawfleet_agent::start(survivor_config.clone(), stop_survivor.clone())
                .await
                .context("while starting a survivor agent")?,
        );
        'watch: loop {
            for id in &ids {
                if let Ok(Ok(r)) = get(api, id).await {
                    anyhow::ensure!(
                        !r.status.is_final(),
                        "task {id} ended before its agent was killed"
                    );
                    if on_victim(&r) {
                        break 'watch;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        killed_at = time::OffsetDateTime::now_utc();
        victim.start_kill().context("while killing the victim")?;
    }
    victim
        .wait()
        .await
        .context("while waiting for the victim to die")?;
    // Whatever it announced before it died was held.
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), leases.next()).await {
        note_leases(&m.payload, &mut announced);
    }
    if kill_on_lease {
        survivor = Some(
            clawfleet_agent::start(survivor_config, stop_survivor.clone())
                .await
                .context("while starting a survivor agent")?,
        );
    }
    let mut out = Round {
        times_ms: Vec::with_capacity(BURST),
        unrecorded: 0,
    };
    for id in &ids {
        let done = wait_record(api, id, |r| r.status.is_final()).await?;
        let recorded = on_victim(&done);
        if !recorded && !announced.contains(id) {
            continue;
        }
        let Some(moved) = done.attempts.iter().find(|a| a.agent == survivor_id) else {
            anyhow::bail!("task {id} ended without running on the survivor");
        };
        if !recorded {
            out.unrecorded += 1;
        }
        out.times_ms
            .push((moved.started_at - killed_at).as_seconds_f64() * 1000.0);
    }
    stop_survivor.cancel();
    if let Some(survivor) = survivor {
        survivor.wait().await;
    }
    Ok(out)
}

/// Adds the task ids of one lease announcement to `into`.
fn note_leases(payload: &[u8], into: &mut std::collections::HashSet<String>) {
    if let Ok(update) = serde_json::from_slice::<clawfleet_shared::agent::LeaseUpdate>(payload) {
        into.extend(update.held.into_iter().map(|l| l.task_id));
    }
}

/// One `task.get`.
async fn get(
    api: &Api,
    id: &str,
) -> anyhow::Result<Result<TaskRecord, clawfleet_shared::ErrorBody>> {
    let request = TaskGetRequest {
        id: id.to_string(),
        tenant: None,
    };
    api.call::<TaskRecord>(subjects::API_TASK_GET, serde_json::to_vec(&request)?.into())
        .await
}

async fn wait_record(
    api: &Api,
    id: &str,
    done: impl Fn(&TaskRecord) -> bool,
) -> anyhow::Result<TaskRecord> {
    loop {
        if let Ok(Ok(r)) = get(api, id).await {
            if done(&r) {
                return Ok(r);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

//! `clawfleet bench alerts`: what one evaluation of the alert rules costs on
//! a large fleet, and how long a condition takes to reach a receiver.
//!
//! On its own temporary nats-server it starts a dispatcher, a health
//! monitor, a log aggregator and `--agents` agents in this process (two
//! slots each, production defaults), runs a few tasks for each of
//! `--tenants` tenants (so the analytics history has every tenant), leaves
//! one task per tenant waiting in a paused queue (so every tenant has a
//! queue with depth and age), then starts an alerter with the default
//! rules plus per-tenant cost and queue rules, evaluating every second.
//!
//! It reports the wall time of an evaluation of every rule, averaged over
//! `--cycles` evaluations, and for `--rounds` rounds the delay from an
//! agent's quarantine (the condition becoming true) to the webhook
//! receiving the notification, and from its release to the resolved one.
//! The delay is bounded by the evaluation interval (1 s here), plus
//! `group_wait` (0 here) for a new group or `group_interval` (1 s) for a
//! change.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clawfleet_shared::subjects;
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::production::ProductionFleet;
use super::server::TempServer;
use crate::client::Api;

/// Longest wait for one notification.
const NOTIFIED: Duration = Duration::from_secs(30);

/// Options of `clawfleet bench alerts`.
#[derive(Debug, clap::Args)]
pub struct AlertsBenchArgs {
    /// Agents in the fleet (each with two slots).
    #[arg(long, default_value_t = 1000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=5000))]
    agents: u32,
    /// Tenants with work and history.
    #[arg(long, default_value_t = 100, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    tenants: u32,
    /// Evaluations measured.
    #[arg(long, default_value_t = 20, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    cycles: u32,
    /// Quarantine → notification rounds timed.
    #[arg(long, default_value_t = 5, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=100))]
    rounds: u32,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct AlertsReport {
    /// Agents.
    pub agents: u32,
    /// Tenants.
    pub tenants: u32,
    /// Rules evaluated per cycle.
    pub rules: usize,
    /// Groups (values) the rules read per cycle.
    pub values: usize,
    /// Evaluations measured.
    pub cycles: u64,
    /// Mean wall time of one evaluation, milliseconds.
    pub mean_ms: f64,
    /// Longest one, milliseconds.
    pub max_ms: f64,
    /// Quarantine → firing notification received, milliseconds, sorted.
    pub firing_ms: Vec<f64>,
    /// Release → resolved notification received, milliseconds, sorted.
    pub resolved_ms: Vec<f64>,
}

/// Runs the alerting benchmark.
pub async fn run(args: AlertsBenchArgs) -> anyhow::Result<()> {
    let server = TempServer::start().await?;
    let outcome = measure(&server, &args).await;
    server.stop().await;
    let r = outcome?;
    if args.json {
        return crate::output::print_json(&r);
    }
    println!(
        "alerting: {} agents, {} tenants, {} rules reading {} groups per evaluation (every 1 s)\n\
         \x20 evaluation of every rule        mean {:.1} ms, max {:.1} ms over {} evaluations",
        r.agents, r.tenants, r.rules, r.values, r.mean_ms, r.max_ms, r.cycles
    );
    let show = |what: &str, v: &[f64]| {
        if !v.is_empty() {
            println!(
                "  {what:<31} median {:.0} ms, max {:.0} ms over {} rounds",
                v[v.len() / 2],
                v[v.len() - 1],
                v.len()
            );
        }
    };
    show("quarantine → firing received", &r.firing_ms);
    show("release → resolved received", &r.resolved_ms);
    Ok(())
}

async fn measure(server: &TempServer, args: &AlertsBenchArgs) -> anyhow::Result<AlertsReport> {
    let url = server.url.clone();
    let stop = CancellationToken::new();
    let logs_dir = tempfile::tempdir().context("while making the log index directory")?;
    let fleet = ProductionFleet::start(&url, args.agents, "fleet", &stop).await?;
    let logs = clawfleet_log_aggregator::start(
        clawfleet_log_aggregator::Config {
            nats_url: url.clone(),
            data_dir: logs_dir.path().to_path_buf(),
            metrics_addr: None,
            ..Default::default()
        },
        stop.clone(),
    )
    .await
    .context("while starting the log aggregator");
    let logs = match logs {
        Ok(logs) => logs,
        Err(e) => {
            stop.cancel();
            fleet.wait().await;
            return Err(e);
        }
    };
    let measured = alerting(&url, args, &stop).await;
    stop.cancel();
    logs.wait().await;
    fleet.wait().await;
    measured
}

async fn alerting(
    url: &str,
    args: &AlertsBenchArgs,
    stop: &CancellationToken,
) -> anyhow::Result<AlertsReport> {
    let api = Api::connect(url).await?;
    // History for every tenant, then one waiting task each.
    let mut results = api
        .client()
        .subscribe(subjects::RESULTS_ALL.to_string())
        .await?;
    let per_tenant = 3;
    for t in 0..args.tenants {
        for i in 0..per_tenant {
            let body = json!({"tenant": format!("t{t}"),
                "payload": {"op": "echo", "data": i, "usage": {"tokens_in": 100, "tokens_out": 10, "model": "m"}}});
            submit(&api, &body).await?;
        }
    }
    for _ in 0..args.tenants * per_tenant {
        tokio::time::timeout(NOTIFIED, results.next())
            .await
            .context("tasks took too long")?;
    }
    let _: Value = api
        .request_json(subjects::API_QUEUES_PAUSE, &json!({"all": true}))
        .await?;
    for t in 0..args.tenants {
        submit(
            &api,
            &json!({"tenant": format!("t{t}"), "payload": {"op": "echo"}}),
        )
        .await?;
    }

    let hook = Hook::start().await?;
    let mut config = clawfleet_alerter::Config {
        nats_url: url.to_string(),
        evaluation_interval: Duration::from_secs(1),
        lease: Duration::from_secs(5),
        metrics_addr: None,
        ..Default::default()
    };
    let extra: Vec<clawfleet_alerter::config::RuleConfig> = serde_json::from_value(json!([
        {"name": "tenant_cost", "signal": {"kind": "cost", "window": "1h", "by": "tenant"},
         "op": ">", "threshold": 1000.0},
        {"name": "tenant_queue_deep", "signal": {"kind": "queue_depth"}, "op": ">", "threshold": 1000.0},
        {"name": "agent_error_rate", "signal": {"kind": "error_rate", "window": "10m", "by": "agent"},
         "op": ">", "threshold": 0.5},
    ]))?;
    config.rules.extend(extra);
    config.route = serde_json::from_value(json!({
        "receiver": "hook", "group_by": ["alertname"],
        "group_wait": "0s", "group_interval": "1s", "repeat_interval": "1h",
    }))?;
    config.receivers = serde_json::from_value(json!([{
        "name": "hook", "webhooks": [{"url": hook.url(), "send_resolved": true}],
    }]))?;
    config.validate()?;
    let rules = config.rules.len();
    let alerter = clawfleet_alerter::start(config, None, stop.clone())
        .await
        .context("while starting the alerter")?;
    let stats = alerter.stats();
    // Warm-up: the first evaluations fill caches and open consumers.
    wait_cycles(&stats, 3).await?;
    let (c0, t0) = (
        stats.cycles.load(Ordering::Relaxed),
        stats.total_micros.load(Ordering::Relaxed),
    );
    stats.max_micros.store(0, Ordering::Relaxed);
    wait_cycles(&stats, c0 + args.cycles as u64).await?;
    let cycles = stats.cycles.load(Ordering::Relaxed) - c0;
    let total = stats.total_micros.load(Ordering::Relaxed) - t0;
    let max_ms = stats.max_micros.load(Ordering::Relaxed) as f64 / 1000.0;
    let rules_reply: clawfleet_shared::alerts::RulesReply = api
        .request(subjects::API_ALERTS_RULES, Bytes::new())
        .await?;
    let values = rules_reply.rules.iter().map(|r| r.values.len()).sum();

    let mut firing_ms = Vec::new();
    let mut resolved_ms = Vec::new();
    for round in 0..args.rounds {
        let agent = format!("fleet-{}-{round}", std::process::id());
        let seen = hook.count();
        let began = Instant::now();
        let _: Value = api
            .request_json(subjects::API_AGENT_QUARANTINE, &json!({"agent_id": agent}))
            .await?;
        hook.wait_for(seen, |b| b["status"] == "firing" && mentions(b, &agent))
            .await?;
        firing_ms.push(began.elapsed().as_secs_f64() * 1000.0);
        let seen = hook.count();
        let began = Instant::now();
        let _: Value = api
            .request_json(subjects::API_AGENT_RELEASE, &json!({"agent_id": agent}))
            .await?;
        hook.wait_for(seen, |b| resolves(b, &agent)).await?;
        resolved_ms.push(began.elapsed().as_secs_f64() * 1000.0);
    }
    firing_ms.sort_by(f64::total_cmp);
    resolved_ms.sort_by(f64::total_cmp);
    drop(alerter);
    Ok(AlertsReport {
        agents: args.agents,
        tenants: args.tenants,
        rules,
        values,
        cycles,
        mean_ms: total as f64 / cycles.max(1) as f64 / 1000.0,
        max_ms,
        firing_ms,
        resolved_ms,
    })
}

async fn submit(api: &Api, body: &Value) -> anyhow::Result<()> {
    if let Err(e) = api
        .call::<Value>(subjects::API_SUBMIT, Bytes::from(serde_json::to_vec(body)?))
        .await?
    {
        anyhow::bail!("a task was refused: {e}");
    }
    Ok(())
}

async fn wait_cycles(stats: &clawfleet_alerter::EvalStats, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30) + Duration::from_secs(2 * n);
    while stats.cycles.load(Ordering::Relaxed) < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the alerter evaluated too few times"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn mentions(body: &Value, agent: &str) -> bool {
    body["alerts"].as_array().is_some_and(|a| {
        a.iter()
            .any(|a| a["labels"]["agent"] == agent && a["status"] == "firing")
    })
}

fn resolves(body: &Value, agent: &str) -> bool {
    body["alerts"].as_array().is_some_and(|a| {
        a.iter()
            .any(|a| a["labels"]["agent"] == agent && a["status"] == "resolved")
    })
}

/// A webhook receiver on loopback keeping the bodies it gets.
struct Hook {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Hook {
    async fn start() -> anyhow::Result<Hook> {
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let kept = bodies.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let kept = kept.clone();
                async move {
                    kept.lock().expect("hook lock").push(body);
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Hook {
            url,
            bodies,
            server,
        })
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    fn count(&self) -> usize {
        self.bodies.lock().expect("hook lock").len()
    }

    /// Waits for a body after the first `seen` that `accept` likes.
    async fn wait_for(&self, seen: usize, accept: impl Fn(&Value) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + NOTIFIED;
        loop {
            if self.bodies.lock().expect("hook lock")[seen..]
                .iter()
                .any(&accept)
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no notification within {NOTIFIED:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.server.abort();
    }
}

//! `clawfleet up`: a whole fleet on this machine, in one process tree.
//!
//! `up` starts a `nats-server` (unless `NATS_URL` or `--nats-url` names one),
//! then a dispatcher, a health monitor and the agents as child processes of
//! this same executable (the hidden `dispatcher`, `health-monitor` and
//! `agent` subcommands). Each agent is its own process so an operator can
//! `kill -9` one and watch the health monitor hand its task to another agent
//! within seconds; the supervisor brings the killed agent back a second later.
//!
//! A log aggregator runs too (the hidden `log-aggregator` subcommand), with
//! its index in `<data-dir>/logs`.
//!
//! Ctrl-C stops the fleet in dependency order: agents first (they drain and
//! hand back what they hold), then the health monitor, then the dispatcher,
//! then the log aggregator (so it indexes their last lines), then the
//! server. A second Ctrl-C kills everything at once.

mod child;
pub(crate) mod nats_server;
mod profile;
mod supervisor;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clawfleet_shared::api::AgentsReply;
use clawfleet_shared::subjects;
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use self::nats_server::NatsServer;
use self::profile::{AgentSpec, Profile};
use self::supervisor::Supervised;
use super::Global;
use crate::client::Api;

/// How long agents may drain on Ctrl-C (their own drain timeout is 30 s).
const AGENT_GRACE: Duration = Duration::from_secs(35);
/// How long the dispatcher may take to finish what it holds.
const DISPATCHER_GRACE: Duration = Duration::from_secs(15);
/// How long the log aggregator may take to commit what it holds.
const LOG_AGGREGATOR_GRACE: Duration = Duration::from_secs(15);
/// How long nats-server may take to flush its store.
const SERVER_GRACE: Duration = Duration::from_secs(10);
/// How long to wait for every agent to register before printing the banner.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of `clawfleet up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Run this many agents, all offering `general` [default: 4, from the default profiles].
    #[arg(long, value_name = "N", conflicts_with = "profiles",
          value_parser = clap::value_parser!(u32).range(1..=256))]
    agents: Option<u32>,
    /// An agent profile, repeatable: name=cap1+cap2[@region][*count], e.g. coder=code+git*2
    /// [default: general=general*2, coder=general+code, browser=general+web].
    #[arg(long = "profile", value_name = "SPEC")]
    profiles: Vec<Profile>,
    /// Tasks each agent runs at once.
    #[arg(long, default_value_t = 4, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_concurrency: u32,
    /// Where the fleet keeps its state (the nats-server store and log, the log index).
    #[arg(long, default_value = ".clawfleet", value_name = "DIR")]
    data_dir: PathBuf,
    /// Port of the fleet's own nats-server.
    #[arg(long, default_value_t = 4222)]
    port: u16,
}

/// Runs the fleet until Ctrl-C.
pub async fn run(global: &Global, args: UpArgs) -> anyhow::Result<ExitCode> {
    let profiles = match (args.agents, args.profiles.is_empty()) {
        (_, false) => args.profiles.clone(),
        (Some(n), true) => Profile::general(n),
        (None, true) => Profile::defaults(),
    };
    let agents = profile::agents(&profiles).map_err(anyhow::Error::msg)?;
    let exe = std::env::current_exe().context("while locating the clawfleet executable")?;
    clawfleet_shared::telemetry::init("up");
    let (stop, kill) = on_signals()?;

    let mut server = match &global.nats_url {
        Some(_) => None,
        None => {
            let start = NatsServer::start(&args.data_dir, args.port);
            tokio::select! {
                s = start => Some(s?),
                _ = stop.cancelled() => return Ok(ExitCode::SUCCESS),
            }
        }
    };
    let url = server
        .as_ref()
        .map_or_else(|| global.url().to_string(), |s| s.url.clone());

    let service_args = |rest: &[&str]| -> Vec<OsString> {
        ["--nats-url", url.as_str()]
            .iter()
            .chain(rest)
            .map(OsString::from)
            .collect()
    };
    let dispatcher = Supervised::start(
        "dispatcher".into(),
        exe.clone(),
        service_args(&["dispatcher"]),
        DISPATCHER_GRACE,
        kill.clone(),
    );
    let monitor = Supervised::start(
        "health-monitor".into(),
        exe.clone(),
        service_args(&["health-monitor"]),
        DISPATCHER_GRACE,
        kill.clone(),
    );
    let logs_dir = args.data_dir.join("logs");
    let logs_dir_arg = logs_dir.to_string_lossy().into_owned();
    let log_aggregator = Supervised::start(
        "log-aggregator".into(),
        exe.clone(),
        service_args(&["log-aggregator", "--data-dir", &logs_dir_arg]),
        LOG_AGGREGATOR_GRACE,
        kill.clone(),
    );
    let max_concurrency = args.max_concurrency.to_string();
    let fleet: Vec<Supervised> = agents
        .iter()
        .map(|a| {
            let mut rest = vec![
                "agent",
                "--agent-id",
                &a.id,
                "--max-concurrency",
                &max_concurrency,
            ];
            let caps = a.capabilities.join(",");
            if !caps.is_empty() {
                rest.extend(["--capabilities", &caps]);
            }
            if let Some(region) = &a.region {
                rest.extend(["--region", region]);
            }
            Supervised::start(
                a.id.clone(),
                exe.clone(),
                service_args(&rest),
                AGENT_GRACE,
                kill.clone(),
            )
        })
        .collect();

    // Kept until the end: dropping it early would log a stray "closed" line.
    let api = tokio::select! {
        api = wait_ready(&url, &agents) => api,
        _ = stop.cancelled() => None,
    };
    if !stop.is_cancelled() {
        banner(
            global,
            &url,
            server.as_ref(),
            Services {
                dispatcher: &dispatcher,
                monitor: &monitor,
                log_aggregator: &log_aggregator,
                logs_dir: &logs_dir,
            },
            &agents,
            &fleet,
        );
    }

    let outcome = tokio::select! {
        _ = stop.cancelled() => Ok(()),
        status = async {
            match server.as_mut() {
                Some(s) => s.exited().await,
                None => std::future::pending().await,
            }
        } => Err(anyhow::anyhow!(
            "nats-server exited unexpectedly ({}); stopping the fleet",
            status.map_or_else(|e| e.to_string(), |s| s.to_string())
        )),
    };
    if let Err(e) = &outcome {
        tracing::error!("{e:#}");
    }

    tracing::info!("stopping agents");
    futures::future::join_all(fleet.into_iter().map(Supervised::stop)).await;
    tracing::info!("stopping the health monitor");
    monitor.stop().await;
    tracing::info!("stopping the dispatcher");
    dispatcher.stop().await;
    tracing::info!("stopping the log aggregator");
    log_aggregator.stop().await;
    drop(api);
    if let Some(server) = server {
        tracing::info!("stopping nats-server");
        server.stop(SERVER_GRACE, &kill).await;
    }
    outcome?;
    if kill.is_cancelled() {
        return Ok(ExitCode::from(130));
    }
    tracing::info!("fleet stopped");
    Ok(ExitCode::SUCCESS)
}

/// `stop` fires on the first SIGINT or SIGTERM, `kill` on the second.
fn on_signals() -> anyhow::Result<(CancellationToken, CancellationToken)> {
    // Installed before anything starts, so an early Ctrl-C is ours to handle.
    let mut int = signal(SignalKind::interrupt()).context("while installing the SIGINT handler")?;
    let mut term =
        signal(SignalKind::terminate()).context("while installing the SIGTERM handler")?;
    let (stop, kill) = (CancellationToken::new(), CancellationToken::new());
    let (s, k) = (stop.clone(), kill.clone());
    tokio::spawn(async move {
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        tracing::info!("stopping the fleet: agents, the health monitor, the dispatcher, the log aggregator, then nats-server (again to kill at once)");
        s.cancel();
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        tracing::warn!("killing every fleet process");
        k.cancel();
    });
    Ok((stop, kill))
}

/// Waits until every agent has registered (or [`READY_TIMEOUT`] passed);
/// returns the connection it used.
async fn wait_ready(url: &str, agents: &[AgentSpec]) -> Option<Api> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let mut api = None;
    loop {
        if api.is_none() {
            api = Api::connect(url).await.ok();
        }
        if let Some(api) = &api {
            if let Ok(reply) = api
                .request::<AgentsReply>(subjects::API_AGENTS_LIST, Bytes::new())
                .await
            {
                if agents
                    .iter()
                    .all(|a| reply.agents.iter().any(|r| r.agent_id == a.id))
                {
                    return Some(api.clone());
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                "not every agent registered within {READY_TIMEOUT:?}; check the log lines above"
            );
            return api;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fleet's services other than the agents, for the banner.
struct Services<'a> {
    dispatcher: &'a Supervised,
    monitor: &'a Supervised,
    log_aggregator: &'a Supervised,
    logs_dir: &'a std::path::Path,
}

fn banner(
    global: &Global,
    url: &str,
    server: Option<&NatsServer>,
    services: Services<'_>,
    agents: &[AgentSpec],
    fleet: &[Supervised],
) {
    if global.json {
        let agents: Vec<_> = agents
            .iter()
            .zip(fleet)
            .map(|(a, s)| json!({"id": a.id, "pid": s.pid(), "capabilities": a.capabilities, "region": a.region}))
            .collect();
        let banner = json!({
            "nats_url": url,
            "nats_server_pid": server.map(|s| s.pid),
            "dispatcher_pid": services.dispatcher.pid(),
            "health_monitor_pid": services.monitor.pid(),
            "log_aggregator_pid": services.log_aggregator.pid(),
            "agents": agents,
        });
        println!("{banner}");
        return;
    }
    let mut out = String::from("\nclawfleet is up\n\n");
    match server {
        Some(s) => out.push_str(&format!(
            "  NATS        {url}  (nats-server pid {}, store {}, log {})\n",
            s.pid,
            s.store.display(),
            s.log.display()
        )),
        None => out.push_str(&format!("  NATS        {url}\n")),
    }
    out.push_str(&format!(
        "  dispatcher  pid {}\n",
        services.dispatcher.pid()
    ));
    out.push_str(&format!("  monitor     pid {}\n", services.monitor.pid()));
    out.push_str(&format!(
        "  logs        pid {}  (log aggregator, index {})\n",
        services.log_aggregator.pid(),
        services.logs_dir.display()
    ));
    let width = agents.iter().map(|a| a.id.len()).max().unwrap_or(0);
    for (a, s) in agents.iter().zip(fleet) {
        let pid = if s.is_finished() {
            "not running".to_string()
        } else {
            format!("pid {:<7}", s.pid())
        };
        let region = a
            .region
            .as_deref()
            .map(|r| format!("  region {r}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  agent       {:<width$}  {pid}  {}{region}\n",
            a.id,
            crate::output::list(&a.capabilities)
        ));
    }
    out.push_str(&format!(
        "\ntry, in another terminal:\n\
         \x20 export NATS_URL={url}\n\
         \x20 clawfleet submit --tenant demo --payload '{{\"op\":\"echo\",\"data\":\"hi\"}}' --wait\n\
         \x20 clawfleet submit --tenant demo --requires code --payload '{{\"op\":\"sleep\",\"ms\":20000}}'\n\
         \x20 clawfleet agents; clawfleet queues; clawfleet watch\n\
         \x20 kill -9 <an agent's pid>   (its task moves to another agent within seconds; the agent restarts)\n\
         \x20 clawfleet logs --level debug; clawfleet logs --follow\n\
         \nCtrl-C stops the fleet (twice: at once).\n"
    ));
    print!("{out}");
}

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
//! its index in `<data-dir>/logs`, and an alerter (the hidden `alerter`
//! subcommand) with the default rule set or `--alerts <FILE>`.
//!
//! One fleet per data directory: `up` locks it first ([`lock`]). The
//! dispatcher, health monitor and log aggregator serve `/metrics` on their
//! usual ports, or on free ones when another fleet has those ([`ports`]);
//! the banner names them. If one of these three exits while the fleet
//! starts, or keeps exiting later until its supervisor gives up on it, `up`
//! stops the whole fleet and exits with an error: it never runs half a fleet.
//!
//! Ctrl-C stops the fleet in dependency order: agents first (they drain and
//! hand back what they hold), then the health monitor, then the dispatcher,
//! then the log aggregator (so it indexes their last lines), then the
//! server. A second Ctrl-C kills everything at once.

mod child;
mod lock;
pub(crate) mod nats_server;
mod ports;
mod profile;
mod supervisor;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clawfleet_shared::api::AgentsReply;
use clawfleet_shared::health::FleetState;
use clawfleet_shared::logs::LogStatsReply;
use clawfleet_shared::subjects;
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use self::lock::DataDirLock;
use self::nats_server::NatsServer;
use self::ports::Wanted;
use self::profile::{AgentSpec, Profile};
use self::supervisor::{Spec, Supervised};
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
/// How long to wait for the services to answer and every agent to register
/// before printing the banner.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The usual metrics ports (the services' `metrics_addr` defaults).
const DISPATCHER_METRICS_PORT: u16 = 9180;
const MONITOR_METRICS_PORT: u16 = 9182;
const LOGS_METRICS_PORT: u16 = 9183;
const ALERTER_METRICS_PORT: u16 = 9184;
const CONSOLE_PORT: u16 = 9190;

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
    /// A price table for the log aggregator, which `clawfleet cost` reports with: a TOML file
    /// of `currency`, `per_agent_hour`, `[models.<model>]` and `[default_model]` (see
    /// docs/configuration.md). Without one every cost is 0.
    #[arg(long, value_name = "FILE")]
    prices: Option<PathBuf>,
    /// Port of the dispatcher's /metrics and /healthz on 127.0.0.1 [default: 9180, or a free
    /// port when another fleet has it; 0: any free port].
    #[arg(long, value_name = "PORT")]
    dispatcher_metrics_port: Option<u16>,
    /// Port of the health monitor's /metrics and /healthz [default: 9182, or a free port].
    #[arg(long, value_name = "PORT")]
    monitor_metrics_port: Option<u16>,
    /// Port of the log aggregator's /metrics and /healthz [default: 9183, or a free port].
    #[arg(long, value_name = "PORT")]
    logs_metrics_port: Option<u16>,
    /// The alerter's configuration: a TOML file of `rules`, `route`, `receivers` and
    /// `inhibit_rules` (see docs/alerting.md) [default: the default rule set, logged only].
    #[arg(long, value_name = "FILE")]
    alerts: Option<PathBuf>,
    /// Port of the alerter's /metrics and /healthz [default: 9184, or a free port].
    #[arg(long, value_name = "PORT")]
    alerter_metrics_port: Option<u16>,
    /// Port of the console's HTTP API on 127.0.0.1 [default: 9190, or a free port].
    #[arg(long, value_name = "PORT")]
    console_port: Option<u16>,
}

/// Runs the fleet until Ctrl-C.
pub async fn run(global: &Global, args: UpArgs) -> anyhow::Result<ExitCode> {
    let profiles = match (args.agents, args.profiles.is_empty()) {
        (_, false) => args.profiles.clone(),
        (Some(n), true) => Profile::general(n),
        (None, true) => Profile::defaults(),
    };
    let agents = profile::agents(&profiles).map_err(anyhow::Error::msg)?;
    let prices = match &args.prices {
        Some(path) => {
            super::log_aggregator::read_prices(path)?;
            Some(std::path::absolute(path).context("while locating the price table")?)
        }
        None => None,
    };
    // Checked now, so a bad rule stops `up` before anything starts.
    let alerts = match &args.alerts {
        Some(path) => {
            let config: clawfleet_alerter::Config =
                clawfleet_shared::config::load(Some(path), &serde_json::json!({}))?;
            config.validate()?;
            Some(std::path::absolute(path).context("while locating the alerter configuration")?)
        }
        None => None,
    };
    let metrics = ports::choose(&[
        Wanted {
            flag: "--dispatcher-metrics-port",
            given: args.dispatcher_metrics_port,
            usual: DISPATCHER_METRICS_PORT,
        },
        Wanted {
            flag: "--monitor-metrics-port",
            given: args.monitor_metrics_port,
            usual: MONITOR_METRICS_PORT,
        },
        Wanted {
            flag: "--logs-metrics-port",
            given: args.logs_metrics_port,
            usual: LOGS_METRICS_PORT,
        },
        Wanted {
            flag: "--alerter-metrics-port",
            given: args.alerter_metrics_port,
            usual: ALERTER_METRICS_PORT,
        },
        Wanted {
            flag: "--console-port",
            given: args.console_port,
            usual: CONSOLE_PORT,
        },
    ])?;
    let exe = std::env::current_exe().context("while locating the clawfleet executable")?;
    clawfleet_shared::telemetry::init("up");
    let (stop, kill) = on_signals()?;

    let lock = tokio::select! {
        lock = DataDirLock::acquire(&args.data_dir) => lock?,
        _ = stop.cancelled() => return Ok(ExitCode::SUCCESS),
    };
    let mut server = match &global.nats_url {
        Some(_) => None,
        None => {
            let start = NatsServer::start(&args.data_dir, args.port, lock.fd());
            tokio::select! {
                s = start => Some(s?),
                _ = stop.cancelled() => return Ok(ExitCode::SUCCESS),
            }
        }
    };
    let url = server
        .as_ref()
        .map_or_else(|| global.url().to_string(), |s| s.url.clone());

    let service = |name: &str, rest: &[&str], grace: Duration, inherit: Option<RawFd>| Spec {
        name: name.to_string(),
        program: exe.clone(),
        args: ["--nats-url", url.as_str()]
            .iter()
            .chain(rest)
            .map(OsString::from)
            .collect(),
        grace,
        inherit,
    };
    let [dispatcher_metrics, monitor_metrics, logs_metrics, alerter_metrics] =
        [metrics[0], metrics[1], metrics[2], metrics[3]].map(|a| a.to_string());
    let dispatcher = Supervised::start(
        service(
            "dispatcher",
            &["dispatcher", "--metrics-addr", &dispatcher_metrics],
            DISPATCHER_GRACE,
            None,
        ),
        kill.clone(),
    );
    let monitor = Supervised::start(
        service(
            "health-monitor",
            &["health-monitor", "--metrics-addr", &monitor_metrics],
            DISPATCHER_GRACE,
            None,
        ),
        kill.clone(),
    );
    let logs_dir = args.data_dir.join("logs");
    let logs_dir_arg = logs_dir.to_string_lossy().into_owned();
    let mut log_aggregator_args = vec![
        "log-aggregator",
        "--data-dir",
        &logs_dir_arg,
        "--metrics-addr",
        &logs_metrics,
    ];
    let prices_arg = prices.as_ref().map(|p| p.to_string_lossy().into_owned());
    if let Some(p) = &prices_arg {
        log_aggregator_args.extend(["--prices", p]);
    }
    // It writes into the data directory, so it holds the lock too.
    let log_aggregator = Supervised::start(
        service(
            "log-aggregator",
            &log_aggregator_args,
            LOG_AGGREGATOR_GRACE,
            Some(lock.fd()),
        ),
        kill.clone(),
    );
    let alerts_arg = alerts.as_ref().map(|p| p.to_string_lossy().into_owned());
    let mut alerter_args = vec!["alerter", "--metrics-addr", &alerter_metrics];
    if let Some(p) = &alerts_arg {
        alerter_args.extend(["--config", p]);
    }
    let alerter = Supervised::start(
        service("alerter", &alerter_args, DISPATCHER_GRACE, None),
        kill.clone(),
    );
    // The console, with an admin token made for this run (its hash in a
    // config file only this user can read; the token in the banner).
    let console_token = new_token();
    let console_config = write_console_config(&args.data_dir, metrics[4], &console_token)?;
    let console_config_arg = console_config.to_string_lossy().into_owned();
    let console = Supervised::start(
        service(
            "console",
            &["console", "--config", &console_config_arg],
            DISPATCHER_GRACE,
            None,
        ),
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
            Supervised::start(service(&a.id, &rest, AGENT_GRACE, None), kill.clone())
        })
        .collect();

    let needed = [
        ("the dispatcher", &dispatcher),
        ("the health monitor", &monitor),
        ("the log aggregator", &log_aggregator),
        ("the alerter", &alerter),
        ("the console", &console),
    ];
    let started = tokio::select! {
        api = wait_ready(&url, &agents) => api.map(Some),
        (name, status) = first_to_exit(&needed, false) => Err(anyhow::anyhow!(
            "{name} exited as the fleet started ({status}); its error is above"
        )),
        _ = stop.cancelled() => Ok(None),
    };
    // Kept until the end: dropping it early would log a stray "closed" line.
    let (api, outcome) = match started {
        Err(e) => (None, Err(e)),
        Ok(None) => (None, Ok(())),
        Ok(Some(api)) => {
            banner(
                global,
                &url,
                server.as_ref(),
                Services {
                    dispatcher: &dispatcher,
                    monitor: &monitor,
                    log_aggregator: &log_aggregator,
                    alerter: &alerter,
                    console: &console,
                    console_token: &console_token,
                    metrics: &metrics,
                    data_dir: &args.data_dir,
                    logs_dir: &logs_dir,
                    prices: args.prices.as_deref(),
                },
                &agents,
                &fleet,
            );
            let outcome = tokio::select! {
                _ = stop.cancelled() => Ok(()),
                status = async {
                    match server.as_mut() {
                        Some(s) => s.exited().await,
                        None => std::future::pending().await,
                    }
                } => Err(anyhow::anyhow!(
                    "nats-server exited unexpectedly ({})",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string())
                )),
                (name, status) = first_to_exit(&needed, true) => Err(anyhow::anyhow!(
                    "{name} kept exiting ({status}) and was given up on"
                )),
            };
            (Some(api), outcome)
        }
    };
    if let Err(e) = &outcome {
        tracing::error!("{e:#}; stopping the fleet");
    }

    tracing::info!("stopping agents");
    futures::future::join_all(fleet.into_iter().map(Supervised::stop)).await;
    tracing::info!("stopping the console");
    console.stop().await;
    tracing::info!("stopping the alerter");
    alerter.stop().await;
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
    drop(lock);
    outcome?;
    if kill.is_cancelled() {
        return Ok(ExitCode::from(130));
    }
    tracing::info!("fleet stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves when the first of `services` has exited (`given_up`: has been
/// given up on), with its name and last exit status.
async fn first_to_exit(
    services: &[(&'static str, &Supervised)],
    given_up: bool,
) -> (&'static str, String) {
    let waits = services.iter().map(|&(name, s)| {
        Box::pin(async move {
            let status = if given_up {
                s.given_up().await
            } else {
                s.exited().await
            };
            (name, status)
        })
    });
    futures::future::select_all(waits).await.0
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

/// Waits until the dispatcher, the health monitor and the log aggregator
/// answer and every agent has registered; returns the connection it used.
/// Services that do not answer within [`READY_TIMEOUT`] are an error;
/// agents that have not registered by then only a warning.
async fn wait_ready(url: &str, agents: &[AgentSpec]) -> anyhow::Result<Api> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let mut api = None;
    let mut waiting_for = "NATS";
    loop {
        if api.is_none() {
            api = Api::connect(url).await.ok();
        }
        if let Some(api) = &api {
            waiting_for = match ready(api, agents).await {
                Ok(()) => return Ok(api.clone()),
                Err(what) => what,
            };
        }
        if tokio::time::Instant::now() >= deadline {
            if let (Some(api), "agents") = (&api, waiting_for) {
                tracing::warn!(
                    "not every agent registered within {READY_TIMEOUT:?}; check the log lines above"
                );
                return Ok(api.clone());
            }
            anyhow::bail!(
                "{waiting_for} did not answer within {READY_TIMEOUT:?}; check the log lines above"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `Ok` once every service answers and every agent has registered, else
/// what is still missing.
async fn ready(api: &Api, agents: &[AgentSpec]) -> Result<(), &'static str> {
    let Ok(reply) = api
        .request::<AgentsReply>(subjects::API_AGENTS_LIST, Bytes::new())
        .await
    else {
        return Err("the dispatcher");
    };
    if api
        .request::<FleetState>(subjects::API_FLEET_STATE, Bytes::new())
        .await
        .is_err()
    {
        return Err("the health monitor");
    }
    if api
        .request::<LogStatsReply>(subjects::API_LOGS_STATS, Bytes::new())
        .await
        .is_err()
    {
        return Err("the log aggregator");
    }
    if agents
        .iter()
        .all(|a| reply.agents.iter().any(|r| r.agent_id == a.id))
    {
        Ok(())
    } else {
        Err("agents")
    }
}

/// The fleet's services other than the agents, for the banner.
struct Services<'a> {
    dispatcher: &'a Supervised,
    monitor: &'a Supervised,
    log_aggregator: &'a Supervised,
    alerter: &'a Supervised,
    console: &'a Supervised,
    console_token: &'a str,
    /// The dispatcher's, the monitor's, the log aggregator's and the
    /// alerter's metrics, then the console's address.
    metrics: &'a [SocketAddr],
    data_dir: &'a Path,
    logs_dir: &'a Path,
    prices: Option<&'a Path>,
}

fn banner(
    global: &Global,
    url: &str,
    server: Option<&NatsServer>,
    services: Services<'_>,
    agents: &[AgentSpec],
    fleet: &[Supervised],
) {
    let metrics = |i: usize| services.metrics[i].to_string();
    let text = if global.json {
        let agents: Vec<_> = agents
            .iter()
            .zip(fleet)
            .map(|(a, s)| json!({"id": a.id, "pid": s.pid(), "capabilities": a.capabilities, "region": a.region}))
            .collect();
        let banner = json!({
            "nats_url": url,
            "nats_server_pid": server.map(|s| s.pid),
            "data_dir": services.data_dir,
            "dispatcher_pid": services.dispatcher.pid(),
            "dispatcher_metrics": metrics(0),
            "health_monitor_pid": services.monitor.pid(),
            "health_monitor_metrics": metrics(1),
            "log_aggregator_pid": services.log_aggregator.pid(),
            "log_aggregator_metrics": metrics(2),
            "alerter_pid": services.alerter.pid(),
            "alerter_metrics": metrics(3),
            "console_pid": services.console.pid(),
            "console_url": format!("http://{}", services.metrics[4]),
            "console_token": services.console_token,
            "prices": services.prices,
            "agents": agents,
        });
        format!("{banner}\n")
    } else {
        banner_text(url, server, &services, agents, fleet)
    };
    // Nobody reading the banner (`up | head -3`) is no reason to stop the fleet.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
}

fn banner_text(
    url: &str,
    server: Option<&NatsServer>,
    services: &Services<'_>,
    agents: &[AgentSpec],
    fleet: &[Supervised],
) -> String {
    let metrics = |i: usize| format!("metrics http://{}/metrics", services.metrics[i]);
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
        "  dispatcher  pid {:<7}  {}\n",
        services.dispatcher.pid(),
        metrics(0)
    ));
    out.push_str(&format!(
        "  monitor     pid {:<7}  {}\n",
        services.monitor.pid(),
        metrics(1)
    ));
    let prices = match services.prices {
        Some(p) => format!("prices {}", p.display()),
        None => "no price table".to_string(),
    };
    out.push_str(&format!(
        "  logs        pid {:<7}  {}  (log aggregator, index {}, {prices})\n",
        services.log_aggregator.pid(),
        metrics(2),
        services.logs_dir.display()
    ));
    out.push_str(&format!(
        "  alerter     pid {:<7}  {}\n",
        services.alerter.pid(),
        metrics(3)
    ));
    out.push_str(&format!(
        "  console     pid {:<7}  http://{}  (admin token {})\n",
        services.console.pid(),
        services.metrics[4],
        services.console_token
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
         \x20 clawfleet agents; clawfleet queues; clawfleet watch; clawfleet alerts\n\
         \x20 kill -9 <an agent's pid>   (its task moves to another agent within seconds; the agent restarts)\n\
         \x20 clawfleet logs --level debug; clawfleet logs --follow\n\
         \x20 curl -H 'Authorization: Bearer {token}' http://{console}/api/v1/agents\n\
         \nCtrl-C stops the fleet (twice: at once).\n",
        token = services.console_token,
        console = services.metrics[4],
    ));
    out
}

/// A new random API token (32 bytes, hex).
fn new_token() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the console's configuration for this run: its address and the
/// hash of the admin token, readable by this user only.
fn write_console_config(
    data_dir: &Path,
    listen: SocketAddr,
    token: &str,
) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::path::absolute(data_dir.join("console.toml"))
        .context("while locating the console configuration")?;
    let text = format!(
        "# Written by `clawfleet up` for this run; the token is in its banner.\n\
         listen = \"{listen}\"\n\n[[tokens]]\nname = \"up-admin\"\nsha256 = \"{}\"\nrole = \"admin\"\n",
        clawfleet_console::auth::hash_token(token)
    );
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("while writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(path)
}

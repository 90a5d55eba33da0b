//! One module per subcommand; [`Command`] routes to them.

mod agent;
mod agents;
mod alerter;
mod alerts;
mod batch;
mod console;
mod dispatcher;
mod dlq;
mod health_monitor;
mod log_aggregator;
mod logs;
mod queues;
mod report;
mod submit;
mod task;
pub(crate) mod up;
mod watch;

use std::process::ExitCode;

use clap::Subcommand;
use clawfleet_shared::config::DEFAULT_NATS_URL;

use crate::bench;

/// Value parser of flags naming one of a fixed set of words (a priority, a
/// service): any case is accepted, and the word is sent in lowercase, the
/// spelling the fleet stores.
pub(crate) fn lowercase(s: &str) -> Result<String, String> {
    Ok(s.to_lowercase())
}

/// Flags every subcommand sees.
#[derive(Debug, Clone)]
pub struct Global {
    /// `--nats-url` or `NATS_URL`, when either was given.
    pub nats_url: Option<String>,
    /// `--json`.
    pub json: bool,
}

impl Global {
    /// The NATS URL to use: the one given, else the default.
    pub fn url(&self) -> &str {
        self.nats_url.as_deref().unwrap_or(DEFAULT_NATS_URL)
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a local fleet: nats-server, a dispatcher and agents, as child processes.
    Up(up::UpArgs),
    /// Submit one task.
    Submit(submit::SubmitArgs),
    /// Submit every task of a JSONL file and wait for their results.
    Batch(batch::BatchArgs),
    /// Read or cancel tasks.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// List the agents with their health, or quarantine and release one.
    Agents(agents::AgentsArgs),
    /// Show queue depths, or pause and resume queues.
    Queues(queues::QueuesArgs),
    /// Firing and pending alerts, the alert rules, and silences (needs an alerter).
    Alerts(alerts::AlertsArgs),
    /// Read the dead-letter queue and replay its entries.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Print task lifecycle events as they happen.
    Watch(watch::WatchArgs),
    /// Search the fleet's logs, or follow them live.
    Logs(logs::LogsArgs),
    /// Fleet analytics: success, latency and attempts per group, agents below
    /// the fleet average, baselines, and what fails most (needs a log aggregator).
    Report(report::ReportArgs),
    /// What the fleet's attempts cost, per agent, tenant, capability, model or time.
    Cost(report::CostArgs),
    /// Measure raw JetStream and clawfleet end to end (own server, dispatcher and agents) in one run.
    Bench(bench::BenchArgs),
    /// Run a dispatcher in this process (used by `up`).
    #[command(hide = true)]
    Dispatcher(dispatcher::DispatcherArgs),
    /// Run an agent in this process (used by `up`).
    #[command(hide = true)]
    Agent(agent::AgentArgs),
    /// Run a health monitor in this process (used by `up`).
    #[command(hide = true)]
    HealthMonitor(health_monitor::HealthMonitorArgs),
    /// Run a log aggregator in this process (used by `up`).
    #[command(hide = true)]
    LogAggregator(log_aggregator::LogAggregatorArgs),
    /// Run an alerter in this process (used by `up`).
    #[command(hide = true)]
    Alerter(alerter::AlerterArgs),
    /// Run a console in this process (used by `up`).
    #[command(hide = true)]
    Console(console::ConsoleArgs),
}

impl Command {
    /// Whether this is a client command, which only reads and writes the
    /// fleet's subjects and its own stdout and stderr (not `up`, not a service).
    pub fn is_client(&self) -> bool {
        !matches!(
            self,
            Command::Up(_)
                | Command::Dispatcher(_)
                | Command::Agent(_)
                | Command::HealthMonitor(_)
                | Command::LogAggregator(_)
                | Command::Alerter(_)
                | Command::Console(_)
        )
    }

    /// Runs the subcommand; the exit code says whether what it did succeeded.
    pub async fn run(self, global: Global) -> anyhow::Result<ExitCode> {
        match self {
            Command::Up(args) => up::run(&global, args).await,
            Command::Submit(args) => submit::run(&global, args).await,
            Command::Batch(args) => batch::run(&global, args).await,
            Command::Task(cmd) => task::run(&global, cmd).await,
            Command::Agents(args) => agents::run(&global, args).await,
            Command::Queues(args) => queues::run(&global, args).await,
            Command::Alerts(args) => alerts::run(&global, args).await,
            Command::Dlq(cmd) => dlq::run(&global, cmd).await,
            Command::Watch(args) => watch::run(&global, args).await,
            Command::Logs(args) => logs::run(&global, args).await,
            Command::Report(args) => report::report(&global, args).await,
            Command::Cost(args) => report::cost(&global, args).await,
            Command::Bench(args) => bench::run(global.nats_url, args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Dispatcher(args) => dispatcher::run(&global, args).await,
            Command::Agent(args) => agent::run(&global, args).await,
            Command::HealthMonitor(args) => health_monitor::run(&global, args).await,
            Command::LogAggregator(args) => log_aggregator::run(&global, args).await,
            Command::Alerter(args) => alerter::run(&global, args).await,
            Command::Console(args) => console::run(&global, args).await,
        }
    }
}

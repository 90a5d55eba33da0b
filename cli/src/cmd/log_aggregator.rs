//! `clawfleet log-aggregator` (hidden): a log aggregator in this process, as
//! `up` starts it. Same configuration layers as the
//! `clawfleet-log-aggregator` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use super::Global;

/// Options of the hidden `log-aggregator` subcommand.
#[derive(Debug, clap::Args, Serialize)]
pub struct LogAggregatorArgs {
    /// TOML config file.
    #[arg(long, env = "CLAWFLEET_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Directory of the index.
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// Filled in from the global `--nats-url`.
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_url: Option<String>,
}

/// Runs a log aggregator until SIGINT or SIGTERM.
pub async fn run(global: &Global, mut args: LogAggregatorArgs) -> anyhow::Result<ExitCode> {
    args.nats_url = global.nats_url.clone();
    let config: clawfleet_log_aggregator::Config =
        clawfleet_shared::config::load(args.config.as_deref(), &args)?;
    config.validate()?;
    clawfleet_shared::telemetry::init_with_shipping("log-aggregator", &config.log_shipping);
    let shutdown = clawfleet_shared::signals::shutdown_on_signal();
    let outcome = clawfleet_log_aggregator::run(config, shutdown).await;
    clawfleet_shared::logship::flush(std::time::Duration::from_secs(2)).await;
    outcome.context("while running the log aggregator")?;
    Ok(ExitCode::SUCCESS)
}

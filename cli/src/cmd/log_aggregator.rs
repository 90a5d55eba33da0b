//! `clawfleet log-aggregator` (hidden): a log aggregator in this process, as
//! `up` starts it. Same configuration layers as the
//! `clawfleet-log-aggregator` binary.

use std::path::{Path, PathBuf};
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
    /// Where to serve `/metrics` and `/healthz`.
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// A price table file (see [`read_prices`]), in place of the config's.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    prices: Option<PathBuf>,
    /// Filled in from the global `--nats-url`.
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_url: Option<String>,
}

/// Runs a log aggregator until SIGINT or SIGTERM.
pub async fn run(global: &Global, mut args: LogAggregatorArgs) -> anyhow::Result<ExitCode> {
    args.nats_url = global.nats_url.clone();
    let mut config: clawfleet_log_aggregator::Config =
        clawfleet_shared::config::load(args.config.as_deref(), &args)?;
    if let Some(path) = &args.prices {
        config.analytics.prices = read_prices(path)?;
    }
    config.validate()?;
    clawfleet_shared::telemetry::init_with_shipping("log-aggregator", &config.log_shipping);
    let shutdown = clawfleet_shared::signals::shutdown_on_signal();
    let outcome = clawfleet_log_aggregator::run(config, shutdown).await;
    clawfleet_shared::logship::flush(std::time::Duration::from_secs(2)).await;
    outcome.context("while running the log aggregator")?;
    Ok(ExitCode::SUCCESS)
}

/// Reads a price table: a TOML file with the keys of the log aggregator's
/// `[analytics.prices]` at its top level (`currency`, `per_agent_hour`,
/// `[models.<model>]`, `[default_model]`), checked as the aggregator checks them.
pub fn read_prices(path: &Path) -> anyhow::Result<clawfleet_log_aggregator::config::Prices> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("while reading the price table {}", path.display()))?;
    let prices: clawfleet_log_aggregator::config::Prices = toml::from_str(&text)
        .with_context(|| format!("while reading the price table {}", path.display()))?;
    let mut check = clawfleet_log_aggregator::Config::default();
    check.analytics.prices = prices.clone();
    check
        .validate()
        .with_context(|| format!("in the price table {}", path.display()))?;
    Ok(prices)
}

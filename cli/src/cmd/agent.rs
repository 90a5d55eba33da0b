//! `clawfleet agent` (hidden): an agent in this process, as `up` starts it.
//! Same configuration layers as the `clawfleet-agent` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use super::Global;

/// Options of the hidden `agent` subcommand.
#[derive(Debug, clap::Args, Serialize)]
pub struct AgentArgs {
    /// TOML config file.
    #[arg(long, env = "CLAWFLEET_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Agent id.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_id: Option<String>,
    /// Capabilities, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "CAP,...")]
    #[serde(skip_serializing_if = "Option::is_none")]
    capabilities: Option<Vec<String>>,
    /// Region.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    /// Tasks run at once at most.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_concurrency: Option<u32>,
    /// Filled in from the global `--nats-url`.
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_url: Option<String>,
}

/// Runs an agent until SIGINT or SIGTERM, then drains it.
pub async fn run(global: &Global, mut args: AgentArgs) -> anyhow::Result<ExitCode> {
    args.nats_url = global.nats_url.clone();
    let config: clawfleet_agent::Config =
        clawfleet_shared::config::load(args.config.as_deref(), &args)?;
    let config = config.validate()?;
    clawfleet_shared::telemetry::init_with_shipping("agent", &config.log_shipping);
    let shutdown = clawfleet_shared::signals::shutdown_on_signal();
    let outcome = clawfleet_agent::run(config, shutdown).await;
    clawfleet_shared::logship::flush(std::time::Duration::from_secs(2)).await;
    outcome.context("while running the agent")?;
    Ok(ExitCode::SUCCESS)
}

//! `clawfleet dispatcher` (hidden): a dispatcher in this process, as `up`
//! starts it. Same configuration layers as the `clawfleet-dispatcher` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use super::Global;

/// Options of the hidden `dispatcher` and `health-monitor` subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// TOML config file.
    #[arg(long, env = "CLAWFLEET_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where to serve `/metrics` and `/healthz`.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
}

/// Options of the hidden `dispatcher` subcommand.
pub type DispatcherArgs = ServiceArgs;

/// The command-line layer of the config: only what was given.
#[derive(Serialize)]
struct Overrides<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_addr: Option<SocketAddr>,
}

/// A service's config from its layers, with the global `--nats-url` on top.
pub fn load_service_config<C>(global: &Global, args: &ServiceArgs) -> anyhow::Result<C>
where
    C: Serialize + serde::de::DeserializeOwned + Default,
{
    let overrides = Overrides {
        nats_url: global.nats_url.as_deref(),
        metrics_addr: args.metrics_addr,
    };
    Ok(clawfleet_shared::config::load(
        args.config.as_deref(),
        &overrides,
    )?)
}

/// Runs a dispatcher until SIGINT or SIGTERM.
pub async fn run(global: &Global, args: DispatcherArgs) -> anyhow::Result<ExitCode> {
    let config: clawfleet_dispatcher::Config = load_service_config(global, &args)?;
    config.validate()?;
    clawfleet_shared::telemetry::init_with_shipping("dispatcher", &config.log_shipping);
    let shutdown = clawfleet_shared::signals::shutdown_on_signal();
    let outcome = clawfleet_dispatcher::run(config, shutdown).await;
    clawfleet_shared::logship::flush(std::time::Duration::from_secs(2)).await;
    outcome.context("while running the dispatcher")?;
    Ok(ExitCode::SUCCESS)
}

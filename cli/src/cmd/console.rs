//! `clawfleet console` (hidden): a console in this process, as `up` starts
//! it. Same configuration layers as the `clawfleet-console` binary.

use std::process::ExitCode;

use anyhow::Context;

use super::dispatcher::{load_service_config, ServiceArgs};
use super::Global;

/// Options of the hidden `console` subcommand.
pub type ConsoleArgs = ServiceArgs;

/// Runs a console until SIGINT or SIGTERM.
pub async fn run(global: &Global, args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    let config: clawfleet_console::Config = load_service_config(global, &args)?;
    config.validate()?;
    clawfleet_shared::telemetry::init_with_shipping("console", &config.log_shipping);
    let shutdown = clawfleet_shared::signals::shutdown_on_signal();
    let outcome = clawfleet_console::run(config, shutdown).await;
    clawfleet_shared::logship::flush(std::time::Duration::from_secs(2)).await;
    outcome.context("while running the console")?;
    Ok(ExitCode::SUCCESS)
}

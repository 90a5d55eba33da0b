//! `clawfleet health-monitor` (hidden): a health monitor in this process, as
//! `up` starts it. Same configuration layers as the `clawfleet-health-monitor`
//! binary.

use std::process::ExitCode;

use anyhow::Context;

use super::dispatcher::{load_service_config, ServiceArgs};
use super::Global;

/// Options of the hidden `health-monitor` subcommand.
pub type HealthMonitorArgs = ServiceArgs;

/// Runs a health monitor until SIGINT or SIGTERM.
pub async fn run(global: &Global, args: HealthMonitorArgs) -> anyhow::Result<ExitCode> {
    let config: clawfleet_health_monitor::Config = load_service_config(global, &args)?;
    clawfleet_shared::telemetry::init_with_shipping("health-monitor", &config.log_shipping);
    let shutdown = clawfleet_shared::signals::shutdown_on_signal();
    let outcome = clawfleet_health_monitor::run(config, shutdown).await;
    clawfleet_shared::logship::flush(std::time::Duration::from_secs(2)).await;
    outcome.context("while running the health monitor")?;
    Ok(ExitCode::SUCCESS)
}

//! `clawfleet alerter` (hidden): an alerter in this process, as `up` starts
//! it. Same configuration layers as the `clawfleet-alerter` binary; SIGHUP
//! reads them again.

use std::process::ExitCode;

use anyhow::Context;

use super::dispatcher::{load_service_config, ServiceArgs};
use super::Global;

/// Options of the hidden `alerter` subcommand.
pub type AlerterArgs = ServiceArgs;

/// Runs an alerter until SIGINT or SIGTERM.
pub async fn run(global: &Global, args: AlerterArgs) -> anyhow::Result<ExitCode> {
    let config: clawfleet_alerter::Config = load_service_config(global, &args)?;
    config.validate()?;
    clawfleet_shared::telemetry::init_with_shipping("alerter", &config.log_shipping);
    let shutdown = clawfleet_shared::signals::shutdown_on_signal();
    let (global, again) = (global.clone(), args.clone());
    let reload: clawfleet_alerter::Reload = Box::new(move || {
        load_service_config(&global, &again)
            .map_err(|e| clawfleet_shared::config::ConfigError::invalid("config", e.to_string()))
    });
    let outcome = clawfleet_alerter::run(config, Some(reload), shutdown).await;
    clawfleet_shared::logship::flush(std::time::Duration::from_secs(2)).await;
    outcome.context("while running the alerter")?;
    Ok(ExitCode::SUCCESS)
}

//! `clawfleet-alerter`: see the library docs.

/// mimalloc: the services allocate and free many small buffers per task
/// (messages, JSON), where it spends far less time than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clawfleet_alerter::Config;
use serde::Serialize;

#[derive(Parser, Serialize, Clone)]
#[command(
    version,
    about = "clawfleet alerter: fleet-level alert rules, silences and notifications"
)]
struct Args {
    /// TOML config file (rules, route, receivers); read again on SIGHUP.
    #[arg(long, env = "CLAWFLEET_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// NATS server URL.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_url: Option<String>,
    /// Print the effective configuration (JSON, after every layer) and exit.
    #[arg(long)]
    #[serde(skip)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config: Config = match clawfleet_shared::config::load(args.config.as_deref(), &args) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = config.validate() {
        return fail(e);
    }
    if args.print_config {
        return match serde_json::to_string_pretty(&config) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    clawfleet_shared::telemetry::init_with_shipping("alerter", &config.log_shipping);
    let shutdown = clawfleet_shared::signals::shutdown_on_signal();
    let again = args.clone();
    let reload: clawfleet_alerter::Reload =
        Box::new(move || clawfleet_shared::config::load(again.config.as_deref(), &again));
    let outcome = clawfleet_alerter::run(config, Some(reload), shutdown).await;
    clawfleet_shared::logship::flush(std::time::Duration::from_secs(2)).await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("clawfleet-alerter: {e}");
    ExitCode::FAILURE
}

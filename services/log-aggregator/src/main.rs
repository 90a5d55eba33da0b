//! `clawfleet-log-aggregator`: see the library docs.

/// mimalloc: the services allocate and free many small buffers per task
/// (messages, JSON), where it spends far less time than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clawfleet_log_aggregator::Config;
use serde::Serialize;

#[derive(Parser, Serialize)]
#[command(
    version,
    about = "clawfleet log aggregator: indexes the fleet's logs for search and enforces retention"
)]
struct Args {
    /// TOML config file.
    #[arg(long, env = "CLAWFLEET_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// NATS server URL.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_url: Option<String>,
    /// Directory of the index.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// Print the effective configuration (JSON, after every layer) and exit.
    #[arg(long)]
    #[serde(skip)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Refuse a bad config before anything else, with the key it is about.
    let config = match clawfleet_shared::config::load::<Config, _>(args.config.as_deref(), &args)
        .and_then(|c| c.validate().map(|()| c))
    {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if args.print_config {
        println!(
            "{}",
            serde_json::to_string_pretty(&config).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    clawfleet_shared::telemetry::init_with_shipping("log-aggregator", &config.log_shipping);
    let shutdown = clawfleet_shared::signals::shutdown_on_signal();
    let outcome = clawfleet_log_aggregator::run(config, shutdown).await;
    clawfleet_shared::logship::flush(Duration::from_secs(2)).await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("clawfleet-log-aggregator: {e}");
    ExitCode::FAILURE
}

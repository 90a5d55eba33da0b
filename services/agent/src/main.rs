//! `clawfleet-agent`: see the library docs.

/// mimalloc: the services allocate and free many small buffers per task
/// (messages, JSON), where it spends far less time than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clawfleet_agent::Config;
use serde::Serialize;

#[derive(Parser, Serialize)]
#[command(
    version,
    about = "clawfleet agent: pulls and runs tasks beside one executor"
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
    /// Agent id.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_id: Option<String>,
    /// Capabilities, comma-separated.
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    capabilities: Option<Vec<String>>,
    /// Region.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    /// Tasks run at once at most.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_concurrency: Option<u32>,
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
        .map_err(|e| e.to_string())
        .and_then(|c| c.validate().map_err(|e| e.to_string()))
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
    clawfleet_shared::telemetry::init_with_shipping("agent", &config.log_shipping);
    let shutdown = clawfleet_shared::signals::shutdown_on_signal();
    let outcome = clawfleet_agent::run(config, shutdown).await;
    clawfleet_shared::logship::flush(std::time::Duration::from_secs(2)).await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("clawfleet-agent: {e}");
    ExitCode::FAILURE
}

//! `clawfleet-console`: see the library docs.

/// mimalloc: the services allocate and free many small buffers per task
/// (messages, JSON), where it spends far less time than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clawfleet_console::Config;
use serde::Serialize;

#[derive(Parser, Serialize)]
#[command(version, about = "clawfleet console: the fleet's HTTP API")]
struct Args {
    /// TOML config file.
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
    /// Print the SHA-256 of a token (for `tokens[].sha256`) and exit.
    #[arg(long, value_name = "TOKEN")]
    #[serde(skip)]
    hash_token: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(token) = &args.hash_token {
        println!("{}", clawfleet_console::auth::hash_token(token));
        return ExitCode::SUCCESS;
    }
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
    clawfleet_shared::telemetry::init_with_shipping("console", &config.log_shipping);
    let shutdown = clawfleet_shared::signals::shutdown_on_signal();
    let outcome = clawfleet_console::run(config, shutdown).await;
    clawfleet_shared::logship::flush(std::time::Duration::from_secs(2)).await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("clawfleet-console: {e}");
    ExitCode::FAILURE
}

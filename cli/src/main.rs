//! `clawfleet`: the operator's command line.
//!
//! It runs a whole local fleet (`up`), submits work (`submit`, `batch`),
//! reads the fleet's state (`task get`, `agents`, `queues`, `dlq list`,
//! `dlq show`, `watch`, `logs`) and controls work (`task cancel`, `dlq
//! replay`), all through the public `clawfleet.*` subjects defined in
//! `clawfleet-shared`. It never touches a stream or bucket a service owns
//! except to read results and events, which are there for clients.
//!
//! Exit status: 0 when everything asked for succeeded, 1 when a task failed
//! (or a batch had rejected or failed tasks, a replay had entries it could
//! not submit, or a task cancelled with `--wait` finished otherwise), 2 on an
//! error (bad input, an error reply, no dispatcher, no NATS).

/// mimalloc: the services allocate and free many small buffers per task
/// (messages, JSON), where it spends far less time than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod client;
mod cmd;
mod output;
mod results;

use std::process::ExitCode;

use clap::Parser;
use clawfleet_shared::ErrorBody;

/// Run and drive a fleet of agents over NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "clawfleet", version, propagate_version = true)]
struct Cli {
    /// NATS server URL [default: nats://127.0.0.1:4222].
    #[arg(long, global = true, env = "NATS_URL", value_name = "URL")]
    nats_url: Option<String>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: cmd::Command,
}

/// Lets a client command end quietly when its reader goes away
/// (`clawfleet task get X | head -1`), as `cat` or `ls` do: the default
/// action of SIGPIPE ends the process, where Rust's ignored SIGPIPE would
/// make the next `println!` panic. Sockets are unaffected (Rust writes to
/// them with `MSG_NOSIGNAL`). The services and `up` keep SIGPIPE ignored:
/// an agent writes to its executor's pipes, and `up` must stop its fleet
/// in order.
fn quiet_on_closed_pipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: this installs the default action, not a handler, so no code
    // of ours ever runs in signal context.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.is_client() {
        quiet_on_closed_pipe();
    }
    let global = cmd::Global {
        nats_url: cli.nats_url,
        json: cli.json,
    };
    match cli.command.run(global).await {
        Ok(code) => code,
        Err(e) => {
            match e.downcast_ref::<ErrorBody>() {
                Some(body) => eprintln!("error: {body}"),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::from(2)
        }
    }
}

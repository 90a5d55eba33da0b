//! The `clawfleet` binary against a real nats-server, a real dispatcher and
//! real agents (in-process), run the way a user runs it: as a subprocess,
//! judged by its exit status and output.

mod agents;
mod alerts;
mod batch;
mod bench;
mod control;
mod logs;
mod read;
mod report;
mod submit;
mod up;

use std::process::Stdio;
use std::time::Duration;

use clawfleet_testkit::{
    agent_config, dispatcher_config, start_agent, start_dispatcher, NatsServer, Service,
};

/// Bound for one CLI invocation on a loaded 2-core machine.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound for a handful of tasks to settle.
pub const SETTLE: Duration = Duration::from_secs(20);

/// A server, a dispatcher and some agents.
pub struct Fleet {
    pub server: NatsServer,
    _dispatcher: Option<Service>,
    _agents: Vec<Service>,
    _monitor: Option<Service>,
}

impl Fleet {
    /// A server and a dispatcher with `agents` agents offering `general`.
    pub async fn start(agents: usize) -> Fleet {
        clawfleet_testkit::init_tracing();
        let server = NatsServer::start();
        let dispatcher = start_dispatcher(dispatcher_config(server.url())).await;
        let mut started = Vec::new();
        for n in 1..=agents {
            let mut config = agent_config(server.url(), &format!("general-{n}"), &["general"]);
            config.max_concurrency = 16;
            started.push(start_agent(config).await);
        }
        Fleet {
            server,
            _dispatcher: Some(dispatcher),
            _agents: started,
            _monitor: None,
        }
    }

    /// Starts a health monitor beside the fleet.
    pub async fn with_monitor(self) -> Fleet {
        self.with_monitor_using(|_| {}).await
    }

    /// Starts a health monitor beside the fleet, its test config changed by `change`.
    pub async fn with_monitor_using(
        mut self,
        change: impl FnOnce(&mut clawfleet_health_monitor::Config),
    ) -> Fleet {
        let mut config = clawfleet_testkit::monitor_config(self.server.url());
        change(&mut config);
        self._monitor = Some(clawfleet_testkit::start_health_monitor(config).await);
        self
    }

    /// A server with nothing else running.
    pub fn bare() -> Fleet {
        clawfleet_testkit::init_tracing();
        Fleet {
            server: NatsServer::start(),
            _dispatcher: None,
            _agents: Vec::new(),
            _monitor: None,
        }
    }

    /// Runs `clawfleet args...` against this fleet.
    pub async fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, None).await
    }

    /// Runs `clawfleet --json args...` until it succeeds and `accept` likes
    /// its output. Records and dead letters are written just after the
    /// result, and the record of a new task just after the submit reply, so
    /// readers poll.
    pub async fn poll_json(
        &self,
        args: &[&str],
        accept: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        clawfleet_testkit::wait_for(
            &format!("clawfleet {args:?} to show the expected state"),
            SETTLE,
            || async {
                let run = self.run(&full).await;
                (run.code == 0).then(|| run.json()).filter(|v| accept(v))
            },
        )
        .await
    }

    /// Runs `clawfleet args...` with `stdin` as its standard input.
    pub async fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_clawfleet"));
        cmd.args(args)
            .env("NATS_URL", self.server.url())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("start clawfleet");
        if let Some(input) = stdin {
            use tokio::io::AsyncWriteExt;
            let mut pipe = child.stdin.take().expect("stdin piped");
            pipe.write_all(input.as_bytes()).await.expect("write stdin");
        }
        let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("clawfleet {args:?} did not finish within {RUN_TIMEOUT:?}"))
            .expect("clawfleet ran");
        Run {
            code: output.status.code().expect("exited normally"),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Fleet {
    /// Runs `clawfleet args...` with its stdout already closed by the reader,
    /// as in `clawfleet ... | head -1` once `head` has exited: returns the exit
    /// status and what it wrote on stderr.
    pub async fn run_into_closed_pipe(&self, args: &[&str]) -> (std::process::ExitStatus, String) {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_clawfleet"))
            .args(args)
            .env("NATS_URL", self.server.url())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start clawfleet");
        drop(child.stdout.take());
        let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("clawfleet {args:?} did not finish within {RUN_TIMEOUT:?}"))
            .expect("clawfleet ran");
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// What one invocation did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Stdout as JSON, failing the test with the whole run when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

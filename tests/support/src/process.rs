//! Agents as real child processes, for tests where a process must die the
//! way a crashed or frozen one does (SIGKILL), which an in-process agent
//! cannot.
//!
//! The `clawfleet-agent` binary must be built beside the test binary:
//! `cargo test --workspace` and `scripts/test` build it; a lone
//! `cargo test -p clawfleet-e2e` needs `cargo build -p clawfleet-agent` first.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use clawfleet_shared::agent::AgentInfo;
use clawfleet_shared::subjects;

/// A `clawfleet-agent` process.
pub struct AgentProcess {
    /// Its agent id.
    pub id: String,
    child: tokio::process::Child,
}

/// Path of a workspace binary built beside the running test binary.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p {name}`; scripts/test does)",
        path.display()
    );
    path
}

/// How an [`AgentProcess`] is started.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// How long to wait for its registration (an agent registers once its
    /// executor is up: a supervised OpenClaw gateway takes a while).
    pub register_within: Duration,
    /// A file for the agent's standard error (its log); unset: discarded
    /// unless `TEST_LOG=1`.
    pub log: Option<PathBuf>,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        Self {
            register_within: Duration::from_secs(20),
            log: None,
        }
    }
}

impl AgentProcess {
    /// Starts an agent process with test timings and these extra environment
    /// variables (e.g. `("CLAWFLEET_MAX_CONCURRENCY", "20")`); returns once
    /// its registration is visible.
    pub async fn start(nats_url: &str, id: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with(nats_url, id, env, &ProcessOptions::default()).await
    }

    /// [`AgentProcess::start`] with options.
    pub async fn start_with(
        nats_url: &str,
        id: &str,
        env: &[(&str, &str)],
        options: &ProcessOptions,
    ) -> Self {
        let mut cmd = tokio::process::Command::new(workspace_binary("clawfleet-agent"));
        cmd.env("CLAWFLEET_NATS_URL", nats_url)
            .env("CLAWFLEET_AGENT_ID", id)
            .env("CLAWFLEET_HEARTBEAT_INTERVAL", "500ms")
            .env("CLAWFLEET_IDLE_POLL_INTERVAL", "50ms")
            .env("CLAWFLEET_HEALTH_CHECK_INTERVAL", "100ms")
            .env("CLAWFLEET_RESTART_BACKOFF", "100ms")
            .env("CLAWFLEET_DRAIN_TIMEOUT", "5s")
            .env("CLAWFLEET_CONNECT_TIMEOUT", "5s")
            .env("CLAWFLEET_TOPOLOGY_WAIT", "10s")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        if let Some(path) = &options.log {
            let file = std::fs::File::create(path).expect("create the agent's log file");
            cmd.stderr(file);
        } else if std::env::var_os("TEST_LOG").is_none_or(|v| v != "1") {
            cmd.stderr(Stdio::null());
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start clawfleet-agent");
        let pid = child.id().expect("a running child");
        let client = async_nats::connect(nats_url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let deadline = tokio::time::Instant::now() + options.register_within;
        loop {
            if let Ok(kv) = js.get_key_value(subjects::BUCKET_AGENTS).await {
                if let Ok(Some(bytes)) = kv.get(id).await {
                    // This process's registration, not an earlier one under the same id.
                    if serde_json::from_slice::<AgentInfo>(&bytes).is_ok_and(|i| i.pid == pid) {
                        break;
                    }
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "agent process {id} exited before it registered ({status}){}",
                    options
                        .log
                        .as_ref()
                        .map(|l| format!("; its log is in {}", l.display()))
                        .unwrap_or_default()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "agent process {id} did not register within {:?}",
                options.register_within
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        AgentProcess {
            id: id.to_string(),
            child,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// SIGKILL, and reap.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM (the agent drains and stops), then SIGKILL if it is still
    /// running after `grace`; returns whether it stopped by itself.
    pub async fn terminate(mut self, grace: Duration) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(_) => true,
            Err(_) => {
                let _ = self.child.kill().await;
                false
            }
        }
    }
}

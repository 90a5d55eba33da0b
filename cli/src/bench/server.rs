//! A throw-away `nats-server` for one benchmark run.
//!
//! JetStream on, loopback only, a free port chosen by the server itself
//! (`-p -1`, read back from its ports file) and a store in a temporary
//! directory that is removed with the server. The binary is looked up the
//! way `clawfleet up` looks it up. The server is killed when the handle is
//! stopped or dropped (also when the run is interrupted).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// How long the server may take to start accepting clients.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running temporary server.
pub struct TempServer {
    child: Child,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    /// `http://127.0.0.1:<port>`: its monitoring endpoint.
    pub monitoring: Option<String>,
    // Dropped after the child is killed: holds the store, the log and the ports file.
    dir: TempDir,
}

impl TempServer {
    /// Starts the server and returns once it accepts connections.
    pub async fn start() -> anyhow::Result<TempServer> {
        let binary = crate::cmd::up::nats_server::find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("clawfleet-bench-")
            .tempdir()
            .context("while creating a temporary directory for nats-server")?;
        let log_path = dir.path().join("nats-server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("while creating {}", log_path.display()))?;
        let log_err = log.try_clone()?;
        let mut child = Command::new(&binary)
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-m", "-1", "-sd"])
            .arg(dir.path().join("store"))
            .arg("--ports_file_dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("while starting {}", binary.display()))?;
        let pid = child.id().context("nats-server exited at once")?;
        let ports_file = dir.path().join(format!("nats-server_{pid}.ports"));
        let url = wait_for_url(&mut child, &ports_file, &log_path).await?;
        let monitoring = port_url(&ports_file, "monitoring");
        Ok(TempServer {
            child,
            url,
            monitoring,
            dir,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the server and removes its store.
    pub async fn stop(mut self) {
        if let Err(e) = self.child.kill().await {
            tracing::warn!(error = %e, "could not kill the benchmark's nats-server");
        }
        if let Err(e) = self.dir.close() {
            tracing::warn!(error = %e, "could not remove the benchmark's nats-server store");
        }
    }
}

/// Waits until the server has written its ports file and accepts a connection there.
async fn wait_for_url(child: &mut Child, ports_file: &Path, log: &Path) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "nats-server exited during start-up ({status}); see its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Some(url) = client_url(ports_file) {
            let addr = url.trim_start_matches("nats://");
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(url);
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "nats-server did not accept connections within {START_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The client URL in a ports file (`{"nats": ["nats://127.0.0.1:4222"], ...}`).
fn client_url(ports_file: &Path) -> Option<String> {
    port_url(ports_file, "nats")
}

/// The first URL of `kind` in a ports file.
fn port_url(ports_file: &Path, kind: &str) -> Option<String> {
    let text = std::fs::read_to_string(ports_file).ok()?;
    let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
    ports.get(kind)?.get(0)?.as_str().map(str::to_string)
}

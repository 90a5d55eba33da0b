//! The fleet's own `nats-server`, when no `NATS_URL` points at one.
//!
//! It listens on loopback only, keeps its JetStream store under the data
//! directory (so queued work survives a restart of the fleet) and writes its
//! log to `<data-dir>/nats-server.log`.

use std::net::TcpStream;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use super::child;

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `nats-server` child.
pub struct NatsServer {
    child: Child,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    /// Its process id.
    pub pid: u32,
    /// Its JetStream store.
    pub store: PathBuf,
    /// Its log file.
    pub log: PathBuf,
}

/// Finds `nats-server`: `$NATS_SERVER_BIN`, then `./.tools/bin`, then
/// `./.tools/venv/bin` (where `scripts/setup` installs it), then `PATH`.
pub fn find_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "NATS_SERVER_BIN is {}, which is not a file",
            path.display()
        );
        return Ok(path);
    }
    let local = [".tools/bin/nats-server", ".tools/venv/bin/nats-server"]
        .into_iter()
        .map(PathBuf::from);
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|dir| dir.join("nats-server"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    local.chain(on_path).find(|p| p.is_file()).ok_or_else(|| {
        anyhow::anyhow!(
            "nats-server not found: run scripts/setup (it installs one into .tools/), put nats-server on \
             PATH or set NATS_SERVER_BIN; or set NATS_URL to use a server that is already running"
        )
    })
}

fn accepting(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

impl NatsServer {
    /// Starts the server on `port` with its store in `data_dir` (which this
    /// fleet has locked: the server inherits `lock`) and returns once it
    /// accepts connections.
    pub async fn start(data_dir: &Path, port: u16, lock: RawFd) -> anyhow::Result<NatsServer> {
        let binary = find_binary()?;
        if accepting(port) {
            anyhow::bail!(
                "port {port} is in use (by another fleet's nats-server?): pass --port with a free one \
                 (and --data-dir for a second fleet), or set NATS_URL=nats://127.0.0.1:{port} to use \
                 the server there"
            );
        }
        let store = data_dir.join("nats");
        std::fs::create_dir_all(&store)
            .with_context(|| format!("while creating {}", store.display()))?;
        let log = data_dir.join("nats-server.log");
        let out = std::fs::File::create(&log)
            .with_context(|| format!("while creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut command = child::command(&binary);
        command
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        child::inherit(&mut command, lock);
        let mut child = command
            .spawn()
            .with_context(|| format!("while starting {}", binary.display()))?;
        let pid = child.id().unwrap_or_default();
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while !accepting(port) {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "nats-server exited during start-up ({status}); see {}",
                    log.display()
                );
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not accept connections on port {port} within {START_TIMEOUT:?}; see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            pid,
            store,
            log,
        })
    }

    /// Resolves when the server exits.
    pub async fn exited(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Stops the server: SIGTERM, then SIGKILL after `grace` or on `kill`.
    pub async fn stop(mut self, grace: Duration, kill: &CancellationToken) {
        child::terminate(&mut self.child, "nats-server", grace, kill).await;
    }
}

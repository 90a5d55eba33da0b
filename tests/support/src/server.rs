use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A real `nats-server` with JetStream, on a free loopback port, with its own
/// temporary store. Killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
    url: String,
    config: Option<PathBuf>,
}

/// Finds the `nats-server` binary: `$NATS_SERVER_BIN`, then the project's
/// `.tools/bin`, then `PATH`.
pub fn nats_server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for candidate in [".tools/bin/nats-server", ".tools/venv/bin/nats-server"] {
        let p = root.join(candidate);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("nats-server")
}

impl NatsServer {
    /// Starts a server on a free port and waits until it accepts clients.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a server with this configuration file text as well (users
    /// and permissions, say; the port, store and JetStream are set as in
    /// [`NatsServer::start`]).
    pub fn start_with_config(text: &str) -> Self {
        Self::start_with(Some(text))
    }

    fn start_with(text: Option<&str>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("clawfleet-nats-")
            .tempdir()
            .expect("create temp dir for nats-server");
        let config = text.map(|text| {
            let path = dir.path().join("nats-server.conf");
            std::fs::write(&path, text).expect("write the nats-server config");
            path
        });
        let (child, port) = spawn(dir.path(), None, config.as_deref());
        NatsServer {
            child: Some(child),
            dir,
            port,
            url: format!("nats://127.0.0.1:{port}"),
            config,
        }
    }

    /// The server's URL with these credentials.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("nats://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connects a plain client.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url)
            .await
            .expect("connect to test nats-server")
    }

    /// Kills the server (SIGKILL: no clean shutdown), keeping its store.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store, as after a crash.
    pub fn restart(&mut self) {
        self.kill();
        let (child, port) = spawn(self.dir.path(), Some(self.port), self.config.as_deref());
        assert_eq!(port, self.port);
        self.child = Some(child);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// The child is handed to the server guard, which kills and reaps it on drop.
#[allow(clippy::zombie_processes)]
fn spawn(dir: &Path, port: Option<u16>, config: Option<&Path>) -> (Child, u16) {
    let store = dir.join("store");
    let ports_dir = dir.join("ports");
    std::fs::create_dir_all(&ports_dir).expect("create ports dir");
    for entry in std::fs::read_dir(&ports_dir)
        .expect("read ports dir")
        .flatten()
    {
        let _ = std::fs::remove_file(entry.path());
    }
    let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
    let binary = nats_server_binary();
    let mut cmd = Command::new(&binary);
    if let Some(config) = config {
        cmd.arg("-c").arg(config);
    }
    let mut child = cmd
        .args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-m", "-1", "-sd"])
        .arg(&store)
        .arg("--ports_file_dir")
        .arg(&ports_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "could not start {} ({e}); run scripts/setup or set NATS_SERVER_BIN",
                binary.display()
            )
        });
    let ports_file = ports_dir.join(format!("nats-server_{}.ports", child.id()));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ports_file) {
            if let Some(port) = parse_client_port(&text) {
                wait_accepting(port, deadline);
                return (child, port);
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nats-server did not write {ports_file:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn parse_client_port(text: &str) -> Option<u16> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let url = value.get("nats")?.get(0)?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

fn wait_accepting(port: u16, deadline: Instant) {
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nats-server not accepting on {port}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

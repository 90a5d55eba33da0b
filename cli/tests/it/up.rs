//! `clawfleet up`: whole fleets as child processes, side by side, and what
//! `up` does when it cannot run one.
//!
//! Each test runs `clawfleet up` itself with one agent, one fleet start at a
//! time (a lock below), so fleets of parallel tests do not race for the same
//! metrics ports and the machine is not flooded.

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout};
use tokio::sync::Mutex;

/// One `up` test at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Bound for a fleet to come up, or for `up` to give up, on a loaded machine.
const START: Duration = Duration::from_secs(90);
/// Bound for a fleet to stop after SIGINT.
const STOP: Duration = Duration::from_secs(60);

/// A free loopback port (nothing listens on it once this returns).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn up_command(data_dir: &Path, port: u16, extra: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_clawfleet"));
    cmd.args(["--json", "up", "--agents", "1", "--max-concurrency", "2"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--port", &port.to_string()])
        .args(extra)
        .env_remove("NATS_URL")
        .env("NATS_SERVER_BIN", clawfleet_testkit::nats_server_binary())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A running `clawfleet up`, stopped with SIGINT (or killed when dropped:
/// its children then get SIGTERM from the kernel).
struct Up {
    child: Child,
    banner: serde_json::Value,
}

impl Up {
    /// Starts a fleet and waits for its banner.
    async fn start(data_dir: &Path, port: u16) -> Up {
        Up::start_with(data_dir, port, &[]).await
    }

    /// Starts a fleet with more options of `up` and waits for its banner.
    async fn start_with(data_dir: &Path, port: u16, extra: &[&str]) -> Up {
        let mut child = up_command(data_dir, port, extra).spawn().expect("start up");
        let stdout = child.stdout.take().expect("stdout piped");
        let banner = tokio::time::timeout(START, first_line(stdout)).await;
        match banner {
            Ok(Some(line)) => Up {
                banner: serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("the banner is not JSON ({e}): {line}")),
                child,
            },
            _ => {
                let _ = child.start_kill();
                let out = child.wait_with_output().await.expect("up ran");
                panic!(
                    "clawfleet up printed no banner; stderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("up is running")
    }

    /// The `host:port` of a service's /metrics, from the banner.
    fn metrics(&self, service: &str) -> String {
        self.banner[format!("{service}_metrics")]
            .as_str()
            .unwrap_or_else(|| panic!("no {service}_metrics in {}", self.banner))
            .to_string()
    }

    /// `clawfleet --json args...` against this fleet.
    async fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let url = self.banner["nats_url"].as_str().expect("nats_url");
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_clawfleet"))
            .args(["--json", "--nats-url", url])
            .args(args)
            .output()
            .await
            .expect("clawfleet ran");
        assert!(out.status.success(), "clawfleet {args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).expect("JSON")
    }

    /// Ctrl-C, then waits for the whole fleet to stop.
    async fn stop(mut self) {
        let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGINT);
        match tokio::time::timeout(STOP, self.child.wait()).await {
            Ok(status) => assert!(status.expect("up ran").success(), "up did not stop cleanly"),
            Err(_) => panic!("up did not stop within {STOP:?}"),
        }
    }

    /// SIGKILL, as a crash would; its children get SIGTERM from the kernel.
    async fn kill(mut self) {
        let _ = self.child.start_kill();
        // Reaped, so nothing of it is left but its children.
        let _ = self.child.wait().await;
    }
}

async fn first_line(stdout: ChildStdout) -> Option<String> {
    BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .ok()
        .flatten()
}

/// Runs `up` that is expected to give up: its exit code, stdout and stderr.
async fn run_failing_up(data_dir: &Path, port: u16, extra: &[&str]) -> (i32, String, String) {
    let child = up_command(data_dir, port, extra).spawn().expect("start up");
    let out = tokio::time::timeout(START, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("up did not exit within {START:?}"))
        .expect("up ran");
    (
        out.status.code().expect("exited normally"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The status line of `GET /healthz` on `addr`.
async fn healthz(addr: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send request");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.expect("read reply");
    reply.lines().next().unwrap_or_default().to_string()
}

/// A GET of `url` (`http://host:port/path`), with a bearer token: the
/// whole reply, status line first.
async fn http_get(url: &str, token: Option<&str>) -> String {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (addr, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("send request");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.expect("read reply");
    reply
}

fn accepting(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[tokio::test]
async fn a_second_fleet_on_the_same_data_dir_is_refused_naming_the_first_fleets_pid() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let first = Up::start(dir.path(), free_port()).await;

    let second_port = free_port();
    let (code, stdout, stderr) = run_failing_up(dir.path(), second_port, &[]).await;

    assert_eq!(code, 2, "stdout {stdout}\nstderr {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: the data directory ")
            && last.contains(&format!(
                "in use by another fleet (clawfleet up, pid {})",
                first.pid()
            ))
            && last.contains("--data-dir"),
        "{stderr}"
    );
    assert_eq!(stdout, "");
    // No second nats-server was started on the first fleet's store.
    assert!(!accepting(second_port));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("fleet.lock"))
            .unwrap()
            .trim(),
        first.pid().to_string()
    );
    first.stop().await;
}

#[tokio::test]
async fn two_fleets_with_their_own_data_dirs_run_side_by_side_on_distinct_metrics_ports() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    let prices = b.path().join("prices.toml");
    std::fs::write(&prices, "currency = \"EUR\"\nper_agent_hour = 2.5\n").unwrap();
    let first = Up::start(a.path(), free_port()).await;
    let second = Up::start_with(
        b.path(),
        free_port(),
        &["--prices", prices.to_str().unwrap()],
    )
    .await;

    let services = ["dispatcher", "health_monitor", "log_aggregator", "alerter"];
    let mut addrs: Vec<String> = services
        .iter()
        .flat_map(|s| [first.metrics(s), second.metrics(s)])
        .collect();
    for addr in &addrs {
        assert_eq!(healthz(addr).await, "HTTP/1.1 200 OK", "{addr}");
    }
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 8, "{addrs:?}");
    for fleet in [&first, &second] {
        assert_ne!(fleet.banner["dispatcher_pid"], 0, "{}", fleet.banner);
        assert_eq!(fleet.banner["agents"][0]["id"], "general-1");
        // Each fleet's console answers its own admin token, and only it.
        let url = fleet.banner["console_url"].as_str().expect("console_url");
        let token = fleet.banner["console_token"]
            .as_str()
            .expect("console_token");
        let who = http_get(&format!("{url}/api/v1/whoami"), Some(token)).await;
        assert!(
            who.starts_with("HTTP/1.1 200") && who.contains("\"role\":\"admin\""),
            "{who}"
        );
        let nobody = http_get(&format!("{url}/api/v1/whoami"), None).await;
        assert!(nobody.starts_with("HTTP/1.1 401"), "{nobody}");
    }
    let (t1, t2) = (
        &first.banner["console_token"],
        &second.banner["console_token"],
    );
    assert_ne!(t1, t2, "a token of its own per run");
    // Only the second was given a price table.
    let cost = first.cli_json(&["cost"]).await;
    assert_eq!(
        (&cost["priced"], &cost["currency"]),
        (&false.into(), &"USD".into())
    );
    let cost = second.cli_json(&["cost"]).await;
    assert_eq!(
        (&cost["priced"], &cost["currency"]),
        (&true.into(), &"EUR".into())
    );
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn up_exits_with_an_error_when_a_service_it_needs_cannot_start() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // The log aggregator cannot create its index where a file is.
    std::fs::write(dir.path().join("logs"), "not a directory").unwrap();

    let (code, stdout, stderr) = run_failing_up(dir.path(), free_port(), &[]).await;

    assert_eq!(code, 2, "stdout {stdout}\nstderr {stderr}");
    assert_eq!(stdout, "", "no banner for half a fleet");
    assert!(
        stderr.lines().last().is_some_and(|l| l
            .starts_with("error: the log aggregator exited as the fleet started")),
        "{stderr}"
    );
    assert!(
        stderr.contains("while creating the log index directory"),
        "{stderr}"
    );

    // A metrics port that is taken is refused before anything starts.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let empty = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run_failing_up(
        empty.path(),
        free_port(),
        &["--dispatcher-metrics-port", &port],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: --dispatcher-metrics-port {port}: ")),
        "{stderr}"
    );
    assert!(!empty.path().join("nats").exists(), "nothing was started");

    // So is a price table the log aggregator would refuse.
    let prices = empty.path().join("prices.toml");
    std::fs::write(&prices, "per_agent_hour = -1\n").unwrap();
    let (code, _, stderr) = run_failing_up(
        empty.path(),
        free_port(),
        &["--prices", prices.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.starts_with("error: in the price table ") && stderr.contains("per_agent_hour"),
        "{stderr}"
    );
    assert!(!empty.path().join("nats").exists(), "nothing was started");
}

#[tokio::test]
async fn a_killed_fleet_leaves_no_lock_behind() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    Up::start(dir.path(), port).await.kill().await;

    // Its nats-server and log aggregator may still be stopping: the new
    // fleet waits for them, then takes the directory over.
    let again = Up::start(dir.path(), port).await;

    assert_eq!(
        std::fs::read_to_string(dir.path().join("fleet.lock"))
            .unwrap()
            .trim(),
        again.pid().to_string()
    );
    again.stop().await;
}

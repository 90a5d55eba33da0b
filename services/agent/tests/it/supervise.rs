//! Contract tests of the `openclaw` executor's supervise mode, with small
//! shell scripts standing in for the `openclaw` program and an in-process
//! fake gateway answering on the port the executor hands them. (A real
//! gateway runs in `tests/e2e/tests/openclaw_real.rs`.)

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clawfleet_agent::config::Secret;
use clawfleet_agent::executor::{
    Attempt, ExecError, Executor, GatewaySettings, Health, OpenclawExecutor, OpenclawSettings,
};
use clawfleet_shared::TaskSpec;
use clawfleet_testkit::openclaw::FakeGateway;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// A stand-in for `openclaw`: notes what it was given, then sleeps until
/// it is signalled.
const STAND_IN: &str = r#"#!/bin/sh
printf '%s\n' "$OPENCLAW_GATEWAY_TOKEN" > "$OPENCLAW_STATE_DIR/token.seen"
printf '%s\n' "$@" > "$OPENCLAW_STATE_DIR/args.seen"
printf '%s\n' "$OPENCLAW_CONFIG_PATH" > "$OPENCLAW_STATE_DIR/config-path.seen"
echo "stand-in gateway up"
exec sleep 600
"#;

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn gateway_settings(command: PathBuf, state_dir: PathBuf, port: Option<u16>) -> GatewaySettings {
    GatewaySettings {
        agent_id: "oc-test".into(),
        command,
        node: None,
        state_dir,
        port,
        providers: BTreeMap::from([(
            "fake".to_string(),
            json!({"baseUrl": "http://127.0.0.1:9/v1", "apiKey": "k", "models": [{"id": "m"}]}),
        )]),
        model: "fake/m".into(),
        config: json!({}),
        log_level: "warn".into(),
        stop_timeout: Duration::from_secs(5),
    }
}

fn settings() -> OpenclawSettings {
    OpenclawSettings {
        url: String::new(),
        token: Secret::new(""),
        agent: "main".into(),
        request_timeout: Duration::from_secs(10),
        ready_timeout: Duration::from_secs(10),
        session_prefix: "sup".into(),
    }
}

fn task(id: &str, payload: Value) -> TaskSpec {
    serde_json::from_value(json!({
        "id": id, "tenant": "acme", "priority": "normal", "requires": [],
        "payload": payload, "timeout": "1m", "max_attempts": 3, "labels": {},
        "submitted_at": "2026-01-01T00:00:00Z"
    }))
    .expect("a valid spec")
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn supervise_start_runs_the_gateway_warms_it_up_and_restarts_it_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let gw = FakeGateway::start_accepting_any_token().await;
    let port: u16 = gw.url().rsplit(':').next().unwrap().parse().unwrap();
    let command = script(dir.path(), "openclaw", STAND_IN);
    let state = dir.path().join("state");
    let exec = OpenclawExecutor::supervised(
        settings(),
        gateway_settings(command, state.clone(), Some(port)),
        true,
    )
    .unwrap();
    assert_eq!(
        exec.health().await,
        Health::Down,
        "nothing runs before start"
    );

    exec.start().await.unwrap();
    let (pid, used_port) = exec.gateway().unwrap().running().await.expect("a gateway");
    assert_eq!(used_port, port);
    assert_eq!(exec.url(), format!("http://127.0.0.1:{port}"));
    assert_eq!(exec.health().await, Health::Ready);
    assert_eq!(read(&state, "gateway.pid").trim(), pid.to_string());

    // The stand-in writes what it saw as it starts, while readiness comes
    // from the fake gateway: wait for its last file to be written.
    wait_until("the stand-in to have started", || {
        !read(&state, "config-path.seen").trim().is_empty()
    })
    .await;
    // The gateway got its token through the environment, never the config.
    let token = read(&state, "token.seen").trim().to_string();
    assert_eq!(token.len(), 64, "a generated token");
    let config_text = read(&state, "openclaw.json");
    assert!(!config_text.contains(&token));
    let config: Value = serde_json::from_str(&config_text).unwrap();
    assert_eq!(config["gateway"]["port"], port);
    assert_eq!(config["gateway"]["auth"], json!({"mode": "token"}));
    assert_eq!(
        config["gateway"]["http"]["endpoints"]["chatCompletions"]["enabled"],
        true
    );
    assert_eq!(config["models"]["providers"]["fake"]["apiKey"], "k");
    assert_eq!(config["agents"]["defaults"]["model"]["primary"], "fake/m");
    assert_eq!(
        read(&state, "config-path.seen").trim(),
        state.join("openclaw.json").display().to_string()
    );
    let args: Vec<String> = read(&state, "args.seen")
        .lines()
        .map(str::to_string)
        .collect();
    let want = [
        "--log-level",
        "warn",
        "--no-color",
        "gateway",
        "run",
        "--port",
    ];
    assert_eq!(&args[..6], want);
    assert_eq!(args[6], port.to_string());
    assert_eq!(&args[7..], ["--bind", "loopback"]);

    // One warm-up turn, with the generated token; then tasks.
    let seen = gw.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].session_key.as_deref(), Some("sup:warmup"));
    assert_eq!(seen[0].token.as_deref(), Some(token.as_str()));
    let attempt = Attempt {
        number: 1,
        cancel: CancellationToken::new(),
    };
    let out = exec
        .run(&task("T-1", json!({"message": "hello"})), &attempt)
        .await
        .unwrap();
    assert_eq!(out.result["text"], "ECHO: hello");

    // A crashed gateway is down at once; a restart brings up another.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while exec.health().await != Health::Down {
        assert!(tokio::time::Instant::now() < deadline, "the crash is seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    exec.restart().await.unwrap();
    let (again, _) = exec
        .gateway()
        .unwrap()
        .running()
        .await
        .expect("a new gateway");
    assert_ne!(again, pid);
    assert_eq!(exec.health().await, Health::Ready);
    assert_eq!(gw.seen().len(), 3, "warmed up again");

    // Stop: SIGTERM ends it, and the pid file goes.
    exec.stop().await;
    wait_until("the gateway to exit", || !alive(again)).await;
    assert!(!state.join("gateway.pid").exists());
    assert_eq!(exec.health().await, Health::Down);
}

#[tokio::test]
async fn supervise_a_free_port_is_picked_when_none_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let command = script(dir.path(), "openclaw", STAND_IN);
    let state = dir.path().join("state");
    let mut s = settings();
    // Nothing answers on the picked port: the start fails when it runs out.
    s.ready_timeout = Duration::from_millis(600);
    let exec =
        OpenclawExecutor::supervised(s, gateway_settings(command, state.clone(), None), false)
            .unwrap();
    let err = exec.start().await.unwrap_err();
    let ExecError::Fatal(message) = err else {
        panic!("a fatal error: {err:?}")
    };
    assert!(message.contains("was not ready within"), "{message}");
    assert!(message.contains("stand-in gateway up"), "{message}");
    let args = read(&state, "args.seen");
    let port: u16 = args.lines().nth(6).unwrap().parse().unwrap();
    assert!(port > 0);
    // The gateway that never got ready was stopped.
    assert!(exec.gateway().unwrap().running().await.is_none());
    assert_eq!(exec.health().await, Health::Down);
}

#[tokio::test]
async fn supervise_a_gateway_that_exits_at_once_fails_the_start_with_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let command = script(
        dir.path(),
        "openclaw",
        "#!/bin/sh\necho 'Invalid config: gateway: Unrecognized key' >&2\nexit 1\n",
    );
    let exec = OpenclawExecutor::supervised(
        settings(),
        gateway_settings(command, dir.path().join("state"), None),
        true,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let err = exec.start().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no wait for readiness"
    );
    let ExecError::Fatal(message) = err else {
        panic!("a fatal error: {err:?}")
    };
    assert!(message.contains("exited during start-up"), "{message}");
    assert!(message.contains("Unrecognized key"), "{message}");
    assert_eq!(exec.health().await, Health::Down);
}

#[tokio::test]
async fn supervise_a_node_openclaw_cannot_run_on_is_refused_with_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let command = script(dir.path(), "openclaw.mjs", STAND_IN);
    let node = script(dir.path(), "node", "#!/bin/sh\necho v20.20.2\n");
    let mut gateway = gateway_settings(command, dir.path().join("state"), None);
    gateway.node = Some(node);
    let exec = OpenclawExecutor::supervised(settings(), gateway, true).unwrap();
    let ExecError::Fatal(message) = exec.start().await.unwrap_err() else {
        panic!("a fatal error")
    };
    assert!(message.contains("v20.20.2"), "{message}");
    assert!(message.contains("24.16"), "{message}");
    assert!(message.contains("executor.supervise.node"), "{message}");
}

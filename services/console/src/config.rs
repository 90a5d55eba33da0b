//! Console configuration.
//!
//! API tokens are configured by their SHA-256 (hex), never in clear: the
//! console cannot leak what it does not hold, and `--print-config` is safe
//! to share. `clawfleet-console hash-token` prints the hash of a token.

use std::net::SocketAddr;
use std::time::Duration;

use clawfleet_shared::config::{ConfigError, DEFAULT_NATS_URL};
use serde::{Deserialize, Serialize};

use crate::auth::Role;

/// Console configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// NATS server URL (`NATS_URL` also works).
    pub nats_url: String,
    /// How long to keep trying to reach NATS at start-up.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// How long a call to another service may take.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Refuse every mutating call, whatever the token (a read-only console).
    pub read_only: bool,
    /// Failed authentications allowed per client address per minute;
    /// beyond, the address gets `429` until the minute has passed.
    pub auth_failures_per_minute: u32,
    /// The API tokens.
    pub tokens: Vec<Token>,
    /// Shipping of the console's own log lines.
    pub log_shipping: clawfleet_shared::logship::LogShipping,
}

/// One API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Who it is, for the audit log.
    pub name: String,
    /// SHA-256 of the token, 64 hex digits.
    pub sha256: String,
    /// What it may do.
    pub role: Role,
    /// For the `tenant` role: the one tenant it sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: DEFAULT_NATS_URL.to_string(),
            connect_timeout: Duration::from_secs(30),
            listen: SocketAddr::from(([127, 0, 0, 1], 9190)),
            request_timeout: Duration::from_secs(5),
            max_body_bytes: 1024 * 1024,
            read_only: false,
            auth_failures_per_minute: 10,
            tokens: Vec::new(),
            log_shipping: clawfleet_shared::logship::LogShipping::default(),
        }
    }
}

impl Config {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nats_url.is_empty() {
            return Err(ConfigError::invalid("nats_url", "must not be empty"));
        }
        self.log_shipping.validate()?;
        if !(1024..=64 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(ConfigError::invalid(
                "max_body_bytes",
                "must be between 1 KiB and 64 MiB",
            ));
        }
        if self.auth_failures_per_minute == 0 {
            return Err(ConfigError::invalid(
                "auth_failures_per_minute",
                "must be at least 1",
            ));
        }
        let mut hashes = std::collections::BTreeSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let key = |f: &str| format!("tokens[{i}].{f}");
            if t.name.is_empty() || t.name.len() > 64 {
                return Err(ConfigError::invalid(key("name"), "must be 1 to 64 bytes"));
            }
            if crate::auth::parse_hash(&t.sha256).is_none() {
                return Err(ConfigError::invalid(
                    key("sha256"),
                    "must be the token's SHA-256 as 64 hex digits",
                ));
            }
            if !hashes.insert(t.sha256.to_ascii_lowercase()) {
                return Err(ConfigError::invalid(
                    key("sha256"),
                    "is another token's too",
                ));
            }
            match (t.role, &t.tenant) {
                (Role::Tenant, None) => {
                    return Err(ConfigError::invalid(
                        key("tenant"),
                        "a tenant token names its tenant",
                    ))
                }
                (Role::Tenant, Some(_)) => {}
                (_, Some(_)) => {
                    return Err(ConfigError::invalid(
                        key("tenant"),
                        "only tenant tokens name a tenant",
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

//! Layered configuration, read once at start-up.
//!
//! Order, later wins: built-in defaults → TOML file (`--config`) →
//! `CLAWFLEET_*` environment variables (nested keys with `__`, e.g.
//! `CLAWFLEET_LIMITS__AGENT_TTL=1m`) → `NATS_URL` → command-line flags.
//! Every service validates the result before it connects to anything.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

/// Default NATS URL when neither config nor `NATS_URL` gives one.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The layers could not be read or merged (bad TOML, wrong type, ...).
    #[error("invalid configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A value has the right type but is not acceptable.
    #[error("invalid configuration: `{key}` {message}")]
    Invalid {
        /// The config key.
        key: std::borrow::Cow<'static, str>,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    /// Shorthand for [`ConfigError::Invalid`].
    pub fn invalid(
        key: impl Into<std::borrow::Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Loads `T` from defaults, an optional TOML file, the environment and
/// `overrides` (command-line flags; `None` fields must be skipped when
/// serializing so they do not override anything).
pub fn load<T, O>(file: Option<&Path>, overrides: &O) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
    O: Serialize,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment
        .merge(Env::prefixed("CLAWFLEET_").split("__"))
        .merge(Env::raw().only(&["NATS_URL"]))
        .merge(Serialized::defaults(overrides))
        .extract()
        .map_err(|e| ConfigError::Load(Box::new(e)))
}

/// Deserializes a list of strings from a list or from one comma-separated
/// string, so `CLAWFLEET_CAPABILITIES=code,git` works as well as TOML arrays.
pub fn string_list<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

/// Checks a name used as a subject token (tenant, capability, region, agent id).
pub fn is_token(s: &str, max_len: usize) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max_len
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_lowercase_subject_safe_names() {
        assert!(is_token("acme", 64));
        assert!(is_token("eu-west_1", 64));
        assert!(!is_token("", 64));
        assert!(!is_token("Acme", 64));
        assert!(!is_token("a.b", 64));
        assert!(!is_token("-a", 64));
        assert!(!is_token("a*", 64));
        assert!(!is_token("abc", 2));
    }
}

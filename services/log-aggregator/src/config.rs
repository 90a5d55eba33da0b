//! Log aggregator configuration (see `docs/configuration.md` for every key).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clawfleet_shared::config::{is_token, ConfigError, DEFAULT_NATS_URL};
use clawfleet_shared::logs::Level;
use clawfleet_shared::logship::LogShipping;
use clawfleet_shared::subjects;
use serde::{Deserialize, Serialize};

const DAY: u64 = 24 * 3600;

/// Log aggregator configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// NATS server URL (`NATS_URL` also works).
    pub nats_url: String,
    /// How long to keep trying to reach NATS at start-up.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long to wait for a dispatcher to create the logs stream.
    #[serde(with = "humantime_serde")]
    pub topology_wait: Duration,
    /// Directory of the index (`logs.db` and its write-ahead log).
    pub data_dir: PathBuf,
    /// Durable consumer on `CLAWFLEET_LOGS`. Aggregators with the same name
    /// share the lines between them; give each its own to keep full copies.
    pub consumer: String,
    /// Most lines written in one transaction.
    pub batch_lines: usize,
    /// Longest a line waits for its batch to fill before it is written.
    #[serde(with = "humantime_serde")]
    pub batch_wait: Duration,
    /// Read connections serving searches at once.
    pub readers: usize,
    /// A search still running after this long is stopped with `unavailable`.
    #[serde(with = "humantime_serde")]
    pub search_timeout: Duration,
    /// What is kept, and for how long.
    pub retention: Retention,
    /// Shipping of the aggregator's own log lines.
    pub log_shipping: LogShipping,
    /// Where to serve Prometheus `/metrics` and `/healthz` (none: not served).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Fleet analytics and cost tracking.
    pub analytics: Analytics,
}

/// Fleet analytics and cost tracking, built from the agents' attempt reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Analytics {
    /// Durable consumer of attempt reports on `CLAWFLEET_EVENTS`.
    pub consumer: String,
    /// How long attempts are kept (baselines look back 7 days).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// What usage costs.
    pub prices: Prices,
}

impl Default for Analytics {
    fn default() -> Self {
        Analytics {
            consumer: subjects::ATTEMPTS_CONSUMER.to_string(),
            retention: Duration::from_secs(30 * DAY),
            prices: Prices::default(),
        }
    }
}

/// The price table that turns an attempt's usage into cost. An attempt
/// costs its wall time at `per_agent_hour`, plus its tokens at its model's
/// prices (`default_model` for a model not listed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prices {
    /// Currency of every price (a label only).
    pub currency: String,
    /// Cost of one hour of an agent's attempt time (the machine, the
    /// gateway's share...).
    pub per_agent_hour: f64,
    /// Per model: prices per million tokens.
    pub models: BTreeMap<String, ModelPrice>,
    /// For models not in `models`.
    pub default_model: ModelPrice,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            currency: "USD".to_string(),
            per_agent_hour: 0.0,
            models: BTreeMap::new(),
            default_model: ModelPrice::default(),
        }
    }
}

/// A model's token prices.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelPrice {
    /// Per million input tokens.
    pub input_per_million: f64,
    /// Per million output tokens.
    pub output_per_million: f64,
}

impl Prices {
    /// Cost of an attempt in millionths of the currency unit (integers, so
    /// that totals are exact sums of attempts).
    pub fn cost_micros(
        &self,
        wall_ms: u64,
        model: Option<&str>,
        tokens_in: u64,
        tokens_out: u64,
    ) -> i64 {
        let price = model
            .and_then(|m| self.models.get(m))
            .unwrap_or(&self.default_model);
        // per million tokens, in millionths: tokens × price.
        let tokens = tokens_in as f64 * price.input_per_million
            + tokens_out as f64 * price.output_per_million;
        // per hour, in millionths: ms × price × 1e6 / 3.6e6.
        let time = wall_ms as f64 * self.per_agent_hour / 3.6;
        (tokens + time).round() as i64
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !ok(self.per_agent_hour) {
            return Err(ConfigError::invalid(
                "analytics.prices.per_agent_hour",
                "must be a number >= 0",
            ));
        }
        for (name, p) in std::iter::once(("default_model", &self.default_model))
            .chain(self.models.iter().map(|(k, v)| (k.as_str(), v)))
        {
            if !ok(p.input_per_million) || !ok(p.output_per_million) {
                return Err(ConfigError::invalid(
                    "analytics.prices.models",
                    format!("{name}: prices must be numbers >= 0"),
                ));
            }
        }
        Ok(())
    }
}

/// Retention policy: by age per level (with per-tenant overrides) and by size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Retention {
    /// How often the policy is enforced.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long lines of each level are kept (`0s`: no age limit).
    pub max_age: LevelAges,
    /// Total size of stored lines (as published); above it the least
    /// severe, then oldest, lines go first. `0`: no size limit.
    pub max_bytes: u64,
    /// Overrides for single tenants' lines.
    pub tenants: BTreeMap<String, TenantRetention>,
}

/// A duration per level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LevelAges {
    /// TRACE lines.
    #[serde(with = "humantime_serde")]
    pub trace: Duration,
    /// DEBUG lines.
    #[serde(with = "humantime_serde")]
    pub debug: Duration,
    /// INFO lines.
    #[serde(with = "humantime_serde")]
    pub info: Duration,
    /// WARN lines.
    #[serde(with = "humantime_serde")]
    pub warn: Duration,
    /// ERROR lines.
    #[serde(with = "humantime_serde")]
    pub error: Duration,
}

impl LevelAges {
    /// The age limit of `level`.
    pub fn get(&self, level: Level) -> Duration {
        match level {
            Level::Trace => self.trace,
            Level::Debug => self.debug,
            Level::Info => self.info,
            Level::Warn => self.warn,
            Level::Error => self.error,
        }
    }
}

impl Default for LevelAges {
    fn default() -> Self {
        LevelAges {
            trace: Duration::from_secs(DAY),
            debug: Duration::from_secs(DAY),
            info: Duration::from_secs(14 * DAY),
            warn: Duration::from_secs(30 * DAY),
            error: Duration::from_secs(90 * DAY),
        }
    }
}

/// A tenant's own limits; what it leaves out follows the global policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantRetention {
    /// Age limits of this tenant's lines, per level.
    pub max_age: TenantAges,
    /// Total size of this tenant's lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// Per-level age overrides (levels left out follow the global `max_age`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantAges {
    /// TRACE lines.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub trace: Option<Duration>,
    /// DEBUG lines.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub debug: Option<Duration>,
    /// INFO lines.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub info: Option<Duration>,
    /// WARN lines.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub warn: Option<Duration>,
    /// ERROR lines.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub error: Option<Duration>,
}

impl TenantAges {
    /// The override for `level`, if any.
    pub fn get(&self, level: Level) -> Option<Duration> {
        match level {
            Level::Trace => self.trace,
            Level::Debug => self.debug,
            Level::Info => self.info,
            Level::Warn => self.warn,
            Level::Error => self.error,
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            interval: Duration::from_secs(60),
            max_age: LevelAges::default(),
            max_bytes: 4 * 1024 * 1024 * 1024,
            tenants: BTreeMap::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            nats_url: DEFAULT_NATS_URL.to_string(),
            connect_timeout: Duration::from_secs(30),
            topology_wait: Duration::from_secs(60),
            data_dir: PathBuf::from("clawfleet-logs"),
            consumer: subjects::CONSUMER_LOG_AGGREGATOR.to_string(),
            batch_lines: 4096,
            batch_wait: Duration::from_millis(50),
            readers: 4,
            search_timeout: Duration::from_secs(5),
            retention: Retention::default(),
            // Not its own DEBUG lines: each would be indexed by itself, and
            // each batch would log another.
            log_shipping: LogShipping {
                level: "info,async_nats=warn".to_string(),
                ..LogShipping::default()
            },
            metrics_addr: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9183))),
            analytics: Analytics::default(),
        }
    }
}

impl Config {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nats_url.is_empty() {
            return Err(ConfigError::invalid("nats_url", "must not be empty"));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("data_dir", "must not be empty"));
        }
        let name_ok = !self.consumer.is_empty()
            && self.consumer.len() <= 64
            && self
                .consumer
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(ConfigError::invalid(
                "consumer",
                "must be 1-64 characters of [A-Za-z0-9_-]",
            ));
        }
        if !(1..=100_000).contains(&self.batch_lines) {
            return Err(ConfigError::invalid(
                "batch_lines",
                "must be between 1 and 100000",
            ));
        }
        if self.batch_wait < Duration::from_millis(1) || self.batch_wait > Duration::from_secs(10) {
            return Err(ConfigError::invalid(
                "batch_wait",
                "must be between 1ms and 10s",
            ));
        }
        if !(1..=64).contains(&self.readers) {
            return Err(ConfigError::invalid("readers", "must be between 1 and 64"));
        }
        if self.search_timeout < Duration::from_millis(10) {
            return Err(ConfigError::invalid(
                "search_timeout",
                "must be at least 10ms",
            ));
        }
        if self.retention.interval < Duration::from_millis(10) {
            return Err(ConfigError::invalid(
                "retention.interval",
                "must be at least 10ms",
            ));
        }
        for tenant in self.retention.tenants.keys() {
            if !is_token(tenant, 64) {
                return Err(ConfigError::invalid(
                    "retention.tenants",
                    format!("{tenant:?} is not a valid tenant name"),
                ));
            }
        }
        let name_ok = !self.analytics.consumer.is_empty()
            && self.analytics.consumer.len() <= 64
            && self
                .analytics
                .consumer
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok || self.analytics.consumer == self.consumer {
            return Err(ConfigError::invalid(
                "analytics.consumer",
                "must be 1-64 characters of [A-Za-z0-9_-], other than `consumer`",
            ));
        }
        if self.analytics.retention < Duration::from_secs(60) {
            return Err(ConfigError::invalid(
                "analytics.retention",
                "must be at least 1m",
            ));
        }
        self.analytics.prices.validate()?;
        self.log_shipping.validate()
    }

    /// Path of the attempts database.
    pub fn analytics_db_path(&self) -> PathBuf {
        self.data_dir.join("attempts.db")
    }

    /// Path of the index file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("logs.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_reads_per_level_ages_and_tenant_overrides_from_toml() {
        let toml = r#"
            [retention]
            interval = "30s"
            max_bytes = 1000
            [retention.max_age]
            debug = "2h"
            [retention.tenants.acme]
            max_bytes = 10
            max_age = { info = "30days" }
        "#;
        let config: Config =
            figment::Figment::from(figment::providers::Serialized::defaults(Config::default()))
                .merge(<figment::providers::Toml as figment::providers::Format>::string(toml))
                .extract()
                .unwrap();
        config.validate().unwrap();
        let r = &config.retention;
        assert_eq!(r.interval, Duration::from_secs(30));
        assert_eq!(r.max_age.debug, Duration::from_secs(7200));
        assert_eq!(
            r.max_age.info,
            Duration::from_secs(14 * DAY),
            "default kept"
        );
        assert_eq!(r.tenants["acme"].max_bytes, Some(10));
        assert_eq!(
            r.tenants["acme"].max_age.get(Level::Info),
            Some(Duration::from_secs(30 * DAY))
        );
        assert_eq!(r.tenants["acme"].max_age.get(Level::Debug), None);
    }

    #[test]
    fn prices_turn_usage_into_exact_micro_units() {
        let toml = r#"
            [analytics.prices]
            per_agent_hour = 3.6
            [analytics.prices.models.big]
            input_per_million = 3.0
            output_per_million = 15.0
            [analytics.prices.default_model]
            input_per_million = 1.0
        "#;
        let config: Config =
            figment::Figment::from(figment::providers::Serialized::defaults(Config::default()))
                .merge(<figment::providers::Toml as figment::providers::Format>::string(toml))
                .extract()
                .unwrap();
        config.validate().unwrap();
        let p = &config.analytics.prices;
        // 1000 in × 3 + 100 out × 15 = 4500 micro; 1 s at 3.6/h = 1000 micro.
        assert_eq!(p.cost_micros(1000, Some("big"), 1000, 100), 5500);
        // An unlisted model takes the default prices; no usage costs time only.
        assert_eq!(p.cost_micros(0, Some("other"), 1000, 100), 1000);
        assert_eq!(p.cost_micros(500, None, 0, 0), 500);
        let mut bad = config.clone();
        bad.analytics.prices.per_agent_hour = -1.0;
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("per_agent_hour"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = Config::default();
        c.retention
            .tenants
            .insert("Not A Tenant".into(), Default::default());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("retention.tenants"));
        let c = Config {
            readers: 0,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("`readers`"));
        let c = Config {
            consumer: "a.b".into(),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("`consumer`"));
    }
}

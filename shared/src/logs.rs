//! Log lines on the wire and the log search API.
//!
//! Every service and agent ships its structured log events as [`LogLine`]s
//! on `clawfleet.logs.<service>.<level>.<agent_id>` (see
//! [`crate::subjects::log_line`]); the `CLAWFLEET_LOGS` stream keeps them
//! for a short while, and the log aggregator indexes them for search
//! (`clawfleet.api.logs.search`) and keeps them as long as its retention
//! policy says. Any NATS client may publish lines of its own in the same
//! shape.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::timefmt::{self, Timestamp};

/// Severity of a log line, from least to most severe (so `>=` means "at
/// least as severe"). Serialized in lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Detail for debugging, such as each step of a task.
    Debug,
    /// Normal operation worth recording.
    Info,
    /// Something went wrong but the work goes on (a failed attempt, a retry).
    Warn,
    /// Something failed.
    Error,
}

impl Level {
    /// Every level, least severe first.
    pub const ALL: [Level; 5] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
    ];

    /// The wire name, also the subject token.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// 0 for trace up to 4 for error: the order of severity, as stored.
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// The level of a [`Level::rank`].
    pub fn from_rank(rank: u8) -> Option<Level> {
        Level::ALL.get(rank as usize).copied()
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A level name that is not one of `trace`, `debug`, `info`, `warn`, `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a log level (trace, debug, info, warn or error)")]
pub struct UnknownLevel(pub String);

impl FromStr for Level {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "trace" => Ok(Level::Trace),
            "debug" => Ok(Level::Debug),
            "info" => Ok(Level::Info),
            "warn" | "warning" => Ok(Level::Warn),
            "error" => Ok(Level::Error),
            _ => Err(UnknownLevel(s.to_string())),
        }
    }
}

impl From<tracing::Level> for Level {
    fn from(level: tracing::Level) -> Self {
        match level {
            tracing::Level::TRACE => Level::Trace,
            tracing::Level::DEBUG => Level::Debug,
            tracing::Level::INFO => Level::Info,
            tracing::Level::WARN => Level::Warn,
            tracing::Level::ERROR => Level::Error,
        }
    }
}

/// One structured log line, as published on `clawfleet.logs.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// When it was logged.
    #[serde(with = "timefmt")]
    pub time: Timestamp,
    /// Severity.
    pub level: Level,
    /// The service that logged it: `dispatcher`, `agent`, `log-aggregator`, ...
    pub service: String,
    /// The agent it is about (always set on lines an agent ships).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The task it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The tenant of that task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The capability (or `+`-joined capability set) involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// What happened, for people.
    pub message: String,
    /// Every other key/value the event carried.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, Value>,
}

impl LogLine {
    /// A line with a message and nothing else set.
    pub fn new(level: Level, service: impl Into<String>, message: impl Into<String>) -> Self {
        LogLine {
            time: timefmt::now(),
            level,
            service: service.into(),
            agent_id: None,
            task_id: None,
            tenant: None,
            capability: None,
            message: message.into(),
            fields: BTreeMap::new(),
        }
    }

    /// Cuts the line to the documented limits, whoever published it: the
    /// message to [`MAX_MESSAGE_BYTES`], each string field to
    /// [`MAX_FIELD_BYTES`] (a field of another type whose encoding is
    /// longer becomes that encoding, cut), names to [`MAX_NAME_BYTES`], and
    /// at most [`MAX_FIELDS`] fields. A line that was cut gets the field
    /// `truncated: true`. Returns whether anything was cut.
    pub fn bound(&mut self) -> bool {
        use crate::strict::cut_in_place;
        fn limit(s: &mut String, max: usize, cut: &mut bool) {
            if s.len() > max {
                cut_in_place(s, max);
                *cut = true;
            }
        }
        let mut cut = false;
        limit(&mut self.message, MAX_MESSAGE_BYTES, &mut cut);
        limit(&mut self.service, MAX_NAME_BYTES, &mut cut);
        for name in [
            &mut self.agent_id,
            &mut self.task_id,
            &mut self.tenant,
            &mut self.capability,
        ]
        .into_iter()
        .flatten()
        {
            limit(name, MAX_NAME_BYTES, &mut cut);
        }
        if self.fields.len() > MAX_FIELDS || self.fields.keys().any(|k| k.len() > MAX_NAME_BYTES) {
            let fields = std::mem::take(&mut self.fields);
            self.fields = fields
                .into_iter()
                .filter(|(k, _)| k.len() <= MAX_NAME_BYTES)
                .take(MAX_FIELDS)
                .collect();
            cut = true;
        }
        for value in self.fields.values_mut() {
            match value {
                Value::String(s) => limit(s, MAX_FIELD_BYTES, &mut cut),
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
                other => {
                    let text = other.to_string();
                    if text.len() > MAX_FIELD_BYTES {
                        *other = Value::String(crate::strict::cut(&text, MAX_FIELD_BYTES));
                        cut = true;
                    }
                }
            }
        }
        if cut {
            self.fields.insert("truncated".into(), Value::Bool(true));
        }
        cut
    }

    /// The subject it is published on.
    pub fn subject(&self) -> String {
        crate::subjects::log_line(&self.service, self.level, self.agent_id.as_deref())
    }
}

/// Longest message a line keeps; longer ones are cut (at a character
/// boundary) and end with `…`.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;
/// Longest string field value a line keeps; longer ones are cut the same way.
pub const MAX_FIELD_BYTES: usize = 1024;
/// Longest service, agent, task, tenant or capability name, or field key.
pub const MAX_NAME_BYTES: usize = 128;
/// Most fields a line keeps.
pub const MAX_FIELDS: usize = 64;

/// Target of the events that carry an executor's own output (the `command`
/// executor's stderr, one event per line). Services keep them out of their
/// own stderr by default; they are shipped like any other line, with the
/// field `stream`.
pub const EXECUTOR_OUTPUT_TARGET: &str = "clawfleet_executor_output";

/// Default and largest `limit` of a search.
pub const SEARCH_DEFAULT_LIMIT: usize = 100;
/// Largest `limit` of a search.
pub const SEARCH_MAX_LIMIT: usize = 1000;

/// Request to `clawfleet.api.logs.search`. Every field is optional; an
/// empty body means `{}` (the newest lines).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSearchRequest {
    /// Full-text query in SQLite FTS5 syntax over the message and the
    /// field values: words (all must match), `"a phrase"`, `OR`, `NOT`,
    /// `prefix*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Only lines of this agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Only lines about this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Only lines of this tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Only lines at least this severe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// Only lines of this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Only lines logged at or after this time.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub since: Option<Timestamp>,
    /// Only lines logged before this time.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub until: Option<Timestamp>,
    /// At most this many lines (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Continue after the last line of a previous page: that reply's `next_cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A line as returned by a search: the line plus its place in the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredLine {
    /// Position in the index (newest lines have the largest); stable while
    /// the line is stored.
    pub id: u64,
    /// The line. Its `time` has microsecond precision.
    #[serde(flatten)]
    pub line: LogLine,
}

/// Reply to `clawfleet.api.logs.search`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogSearchReply {
    /// Matching lines, newest first.
    pub lines: Vec<StoredLine>,
    /// Present when more lines may match: pass it as `cursor` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// `true` when the page holds fewer lines than `limit` although more
    /// match, to keep the reply within its byte budget
    /// ([`crate::api::reply_budget`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// Lines and bytes stored for one level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelUsage {
    /// Lines stored.
    pub lines: u64,
    /// Their size, as published.
    pub bytes: u64,
}

/// Reply to `clawfleet.api.logs.stats`: what the aggregator holds and has done
/// since its index was created.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogStatsReply {
    /// Lines stored.
    pub lines: u64,
    /// Their size, as published (the index on disk is larger).
    pub bytes: u64,
    /// Lines and bytes per level (levels with none are left out).
    pub levels: BTreeMap<Level, LevelUsage>,
    /// Lines and bytes per tenant (`_` for lines without a tenant).
    pub tenants: BTreeMap<String, LevelUsage>,
    /// Time of the oldest stored line.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub oldest: Option<Timestamp>,
    /// Time of the newest stored line.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub newest: Option<Timestamp>,
    /// Lines indexed, ever.
    pub ingested: u64,
    /// Messages on the log subjects that were not log lines (skipped), ever.
    pub unreadable: u64,
    /// Lines removed because they were older than their `max_age`, per level.
    pub removed_by_age: BTreeMap<Level, u64>,
    /// Lines removed to stay within a `max_bytes`, per level.
    pub removed_by_size: BTreeMap<Level, u64>,
    /// Retention passes run, ever.
    pub retention_runs: u64,
    /// When the last retention pass ended.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_retention: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_by_severity_and_parse_their_names() {
        assert!(Level::Error > Level::Warn && Level::Warn > Level::Info);
        assert!(Level::Debug > Level::Trace);
        for l in Level::ALL {
            assert_eq!(l.as_str().parse::<Level>(), Ok(l));
            assert_eq!(Level::from_rank(l.rank()), Some(l));
        }
        assert!("loud".parse::<Level>().is_err());
    }

    #[test]
    fn a_line_round_trips_and_leaves_out_what_it_does_not_have() {
        let mut line = LogLine::new(Level::Warn, "agent", "attempt failed");
        line.task_id = Some("t1".into());
        line.fields.insert("attempt".into(), Value::from(2));
        let json = serde_json::to_value(&line).unwrap();
        assert_eq!(json["level"], "warn");
        assert_eq!(json["fields"]["attempt"], 2);
        assert!(json.get("agent_id").is_none());
        let back: LogLine = serde_json::from_value(json).unwrap();
        assert_eq!(back, line);
        assert_eq!(line.subject(), "clawfleet.logs.agent.warn._");
    }

    #[test]
    fn a_line_from_anyone_is_cut_to_the_documented_limits() {
        let mut line = LogLine::new(Level::Info, "x".repeat(1000), "m".repeat(1 << 20));
        line.task_id = Some("t".repeat(5000));
        line.fields
            .insert("big".into(), Value::String("v".repeat(1 << 16)));
        line.fields
            .insert("list".into(), Value::from(vec!["a"; 10_000]));
        for i in 0..200 {
            line.fields.insert(format!("f{i:03}"), Value::from(i));
        }
        assert!(line.bound());
        assert!(line.message.len() <= MAX_MESSAGE_BYTES);
        assert!(line.service.len() <= MAX_NAME_BYTES);
        assert!(line.task_id.as_ref().unwrap().len() <= MAX_NAME_BYTES);
        assert!(line.fields.len() <= MAX_FIELDS + 1);
        assert_eq!(line.fields["truncated"], true);
        let size = serde_json::to_vec(&line).unwrap().len();
        assert!(size < 100 * 1024, "{size}");
        let mut small = LogLine::new(Level::Info, "agent", "fine");
        assert!(!small.bound());
        assert!(small.fields.is_empty());
    }
}

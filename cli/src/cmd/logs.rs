//! `clawfleet logs`: search the fleet's logs, or follow them live.
//!
//! A search asks the log aggregator (`clawfleet.api.logs.search`) and prints
//! the newest matching lines, oldest of them first so the newest ends up at
//! the bottom, like `tail`. `--follow` instead subscribes to the log
//! subjects (core NATS, nothing stored, nothing needed but the server): the
//! service, level and agent filters narrow the subscription itself, the
//! task, tenant and text filters are applied here to each line.

use std::process::ExitCode;

use clawfleet_shared::config::is_token;
use clawfleet_shared::logs::{Level, LogLine, LogSearchReply, LogSearchRequest};
use clawfleet_shared::subjects;
use clawfleet_shared::timefmt::{self, Timestamp};
use futures::StreamExt;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use super::Global;
use crate::client::Api;
use crate::output;

/// Options of `clawfleet logs`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "TEXT is an SQLite FTS5 query over messages and field values: \
                        every word must match, \"a phrase\" matches words in a row, OR and NOT \
                        combine, prefix* matches a prefix. Words with punctuation (report-42) \
                        are quoted for you unless TEXT has quotes of its own. With --follow, TEXT matches lines containing every word, \
                        ignoring case. Searches need a running log aggregator; --follow does not."
)]
pub struct LogsArgs {
    /// Full-text query.
    text: Option<String>,
    /// Only this agent's lines.
    #[arg(long, value_name = "ID")]
    agent: Option<String>,
    /// Only lines about this task.
    #[arg(long, value_name = "ID")]
    task: Option<String>,
    /// Only this tenant's lines.
    #[arg(long)]
    tenant: Option<String>,
    /// Only lines at least this severe.
    #[arg(long, value_enum, ignore_case = true)]
    level: Option<LevelArg>,
    /// Only this service's lines (dispatcher, agent, log-aggregator, ...).
    #[arg(long, value_parser = super::lowercase)]
    service: Option<String>,
    /// Only lines logged since then: a duration ago ("15m", "2h") or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = parse_when, conflicts_with = "follow")]
    since: Option<Timestamp>,
    /// Only lines logged before then: a duration ago or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = parse_when, conflicts_with = "follow")]
    until: Option<Timestamp>,
    /// At most this many lines (the aggregator caps it at 1000).
    #[arg(long, default_value_t = 100, value_name = "N")]
    limit: usize,
    /// The next page: the cursor a previous search printed.
    #[arg(long, conflicts_with = "follow")]
    cursor: Option<String>,
    /// Print new lines as they are logged, until Ctrl-C.
    #[arg(long, short = 'f')]
    follow: bool,
}

/// A level, as a flag value.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LevelArg {
    /// Everything.
    Trace,
    /// DEBUG and above.
    Debug,
    /// INFO and above.
    Info,
    /// WARN and ERROR.
    Warn,
    /// ERROR only.
    Error,
}

impl From<LevelArg> for Level {
    fn from(l: LevelArg) -> Self {
        match l {
            LevelArg::Trace => Level::Trace,
            LevelArg::Debug => Level::Debug,
            LevelArg::Info => Level::Info,
            LevelArg::Warn => Level::Warn,
            LevelArg::Error => Level::Error,
        }
    }
}

/// `15m` (that long ago) or an RFC 3339 time.
pub(crate) fn parse_when(s: &str) -> Result<Timestamp, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return time::Duration::try_from(d)
            .ok()
            .and_then(|d| timefmt::now().checked_sub(d))
            .ok_or_else(|| format!("{s:?} reaches back before the earliest time there is"));
    }
    Timestamp::parse(s, &Rfc3339)
        .map_err(|_| format!("{s:?} is neither a duration (\"15m\", \"2h\") nor an RFC 3339 time"))
}

/// Quotes the words of `text` that FTS5 would read as syntax (`report-42`,
/// `a.b`, `key:value`), so they match as phrases; leaves alone words,
/// `prefix*`, `OR`/`AND`/`NOT` and parentheses. A text with a `"` of its own
/// is the user's FTS5 query and is passed as it is.
fn quote_punctuation(text: &str) -> String {
    if text.contains('"') {
        return text.to_string();
    }
    let plain = |w: &str| {
        let w = w.trim_start_matches('(').trim_end_matches(')');
        let w = w.strip_suffix('*').unwrap_or(w);
        w.chars().all(|c| c.is_alphanumeric() || c == '_')
    };
    text.split_whitespace()
        .map(|w| {
            if plain(w) {
                w.to_string()
            } else {
                format!("\"{w}\"")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `clawfleet logs`.
pub async fn run(global: &Global, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global.url()).await?;
    if args.follow {
        return follow(global, &api, args).await;
    }
    let request = LogSearchRequest {
        text: args.text.as_deref().map(quote_punctuation),
        agent_id: args.agent,
        task_id: args.task,
        tenant: args.tenant,
        level: args.level.map(Level::from),
        service: args.service,
        since: args.since,
        until: args.until,
        limit: Some(args.limit),
        cursor: args.cursor,
    };
    let reply: LogSearchReply = api
        .request_json(subjects::API_LOGS_SEARCH, &request)
        .await?;
    if global.json {
        output::print_json(&reply)?;
        return Ok(ExitCode::SUCCESS);
    }
    if reply.lines.is_empty() {
        println!("no log lines match");
    }
    for stored in reply.lines.iter().rev() {
        println!("{}", render(&stored.line));
    }
    if let Some(cursor) = &reply.next_cursor {
        eprintln!("older lines match too: add --cursor {cursor}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn follow(global: &Global, api: &Api, args: LogsArgs) -> anyhow::Result<ExitCode> {
    for (flag, value) in [("--service", &args.service), ("--agent", &args.agent)] {
        if let Some(v) = value.as_deref().filter(|v| !is_token(v, 64)) {
            anyhow::bail!("{flag} {v:?} is not a valid name");
        }
    }
    let min = args.level.map_or(Level::Trace, Level::from);
    let mut subs = Vec::new();
    for level in Level::ALL.into_iter().filter(|l| *l >= min) {
        let subject = subjects::logs_filter(args.service.as_deref(), level, args.agent.as_deref());
        subs.push(api.client().subscribe(subject).await?);
    }
    let words: Vec<String> = args
        .text
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_lowercase)
        .collect();
    let mut lines = futures::stream::select_all(subs);
    if !global.json {
        eprintln!(
            "following the fleet's logs on {} (Ctrl-C to stop)",
            api.url()
        );
    }
    loop {
        let msg = tokio::select! {
            m = lines.next() => match m {
                Some(m) => m,
                None => anyhow::bail!("the connection to {} closed", api.url()),
            },
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        let Ok(line) = serde_json::from_slice::<LogLine>(&msg.payload) else {
            continue;
        };
        let wanted = args
            .task
            .as_ref()
            .is_none_or(|t| line.task_id.as_ref() == Some(t))
            && args
                .tenant
                .as_ref()
                .is_none_or(|t| line.tenant.as_ref() == Some(t))
            && contains_all(&line, &words);
        if !wanted {
            continue;
        }
        if global.json {
            println!("{}", serde_json::to_string(&line)?);
        } else {
            println!("{}", render(&line));
        }
    }
}

/// Whether every word occurs in the message or a field value (ignoring case).
fn contains_all(line: &LogLine, words: &[String]) -> bool {
    if words.is_empty() {
        return true;
    }
    let mut haystack = line.message.to_lowercase();
    for value in line.fields.values() {
        haystack.push(' ');
        match value {
            Value::String(s) => haystack.push_str(&s.to_lowercase()),
            other => haystack.push_str(&other.to_string()),
        }
    }
    words.iter().all(|w| haystack.contains(w.as_str()))
}

/// `2026-11-25 06:34:59.261  WARN   agent/a1  task=t-1 tenant=acme  attempt failed  attempt=1`
fn render(l: &LogLine) -> String {
    let when = l
        .time
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]"
        ))
        .unwrap_or_else(|_| l.time.to_string());
    let who = match &l.agent_id {
        Some(agent) => format!("{}/{agent}", l.service),
        None => l.service.clone(),
    };
    let mut out = format!(
        "{when}  {:<5}  {who}",
        l.level.as_str().to_ascii_uppercase()
    );
    for (key, value) in [
        ("task", &l.task_id),
        ("tenant", &l.tenant),
        ("capability", &l.capability),
    ] {
        if let Some(v) = value {
            out.push_str(&format!("  {key}={v}"));
        }
    }
    out.push_str("  ");
    out.push_str(&l.message);
    for (key, value) in &l.fields {
        match value {
            Value::String(s) => out.push_str(&format!("  {key}={s}")),
            other => out.push_str(&format!("  {key}={other}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_left_to_right_time_level_who_what() {
        let mut line = LogLine::new(Level::Warn, "agent", "attempt failed");
        line.time = Timestamp::parse("2026-11-25T06:34:59.261Z", &Rfc3339).unwrap();
        line.agent_id = Some("a1".into());
        line.task_id = Some("t-1".into());
        line.fields.insert("attempt".into(), 1.into());
        assert_eq!(
            render(&line),
            "2026-11-25 06:34:59.261  WARN   agent/a1  task=t-1  attempt failed  attempt=1"
        );
    }

    #[test]
    fn follow_text_needs_every_word_anywhere_in_the_line() {
        let mut line = LogLine::new(Level::Info, "agent", "Disk on fire");
        line.fields.insert("stream".into(), "stderr".into());
        let words = |s: &str| {
            s.split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        };
        assert!(contains_all(&line, &words("disk STDERR")));
        assert!(!contains_all(&line, &words("disk water")));
    }

    #[test]
    fn words_with_punctuation_are_quoted_unless_the_text_has_quotes() {
        assert_eq!(
            quote_punctuation("report-42 failed OR (disk*)"),
            "\"report-42\" failed OR (disk*)"
        );
        assert_eq!(quote_punctuation("\"a b\" c-d"), "\"a b\" c-d");
    }

    #[test]
    fn when_is_a_duration_ago_or_a_time() {
        let t = parse_when("2026-11-25T06:34:59Z").unwrap();
        assert_eq!(t.unix_timestamp(), 1_795_588_499);
        let ago = parse_when("1h").unwrap();
        assert!((timefmt::now() - ago).whole_minutes() == 60);
        assert!(parse_when("yesterday").is_err());
        assert!(parse_when("100000years").is_err());
    }
}

//! Searching the index: a request becomes one SQL query, newest first.
//!
//! Lines are walked backwards by id (which is time order, see
//! [`crate::store`]), so a page costs what it takes to find `limit`
//! matching lines, never a sort of everything that matches. With a text
//! query the walk goes over the FTS5 index (which returns rowids in
//! descending order natively) and each hit is checked against the other
//! filters, except with a task filter: a task has few lines, so those are
//! walked (by the task index) and each is checked against the text.
//! Without text the walk goes over the line table or the index of the
//! filter SQLite's planner finds most selective.
//!
//! The cost of a text query with a filter grows with the number of text
//! hits the filter rejects: a common word restricted to a tenant with few
//! lines reads many hits. `search_timeout` bounds it; a time range
//! (`since`) bounds it better.

use std::time::{Duration, Instant};

use clawfleet_shared::logs::{
    Level, LogLine, LogSearchReply, LogSearchRequest, StoredLine, SEARCH_DEFAULT_LIMIT,
    SEARCH_MAX_LIMIT,
};
use clawfleet_shared::{ErrorBody, ErrorCode};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, ErrorCode as SqliteCode};

use crate::store::{id_floor, time_of};

/// Longest text query accepted, in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;

/// A validated search.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// FTS5 query.
    pub text: Option<String>,
    /// Exact filters.
    pub agent_id: Option<String>,
    /// Exact filters.
    pub task_id: Option<String>,
    /// Exact filters.
    pub tenant: Option<String>,
    /// Exact filters.
    pub service: Option<String>,
    /// Lines at least this severe (`None`: all).
    pub min_level: Option<Level>,
    /// Smallest id wanted (from `since`).
    pub from_id: Option<i64>,
    /// Ids below this only (from `until` and the cursor).
    pub before_id: Option<i64>,
    /// Lines per page.
    pub limit: usize,
}

fn invalid(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::InvalidRequest, message)
}

impl Query {
    /// Checks a request. Errors are `invalid_request` (`invalid_query` for
    /// the text is only known when it runs).
    pub fn parse(req: LogSearchRequest) -> Result<Query, ErrorBody> {
        let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let text = non_empty(req.text);
        if text.as_ref().is_some_and(|t| t.len() > MAX_TEXT_BYTES) {
            return Err(ErrorBody::new(
                ErrorCode::InvalidQuery,
                format!("the text query is longer than {MAX_TEXT_BYTES} bytes"),
            ));
        }
        if let (Some(since), Some(until)) = (req.since, req.until) {
            if since >= until {
                return Err(invalid("`since` must be before `until`"));
            }
        }
        let cursor = match req.cursor.as_deref() {
            None => None,
            Some(c) => Some(c.parse::<i64>().ok().filter(|c| *c > 0).ok_or_else(|| {
                invalid(format!(
                    "cursor {} is not the next_cursor of a previous reply",
                    clawfleet_shared::strict::echo(c)
                ))
            })?),
        };
        let until = req.until.map(id_floor);
        let before_id = match (until, cursor) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Query {
            text,
            agent_id: non_empty(req.agent_id),
            task_id: non_empty(req.task_id),
            tenant: non_empty(req.tenant),
            service: non_empty(req.service),
            min_level: req.level.filter(|l| *l > Level::Trace),
            from_id: req.since.map(id_floor),
            before_id,
            limit: req
                .limit
                .unwrap_or(SEARCH_DEFAULT_LIMIT)
                .clamp(1, SEARCH_MAX_LIMIT),
        })
    }
}

/// Why a search did not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The text is not a valid FTS5 query.
    #[error("invalid text query ({0}); use words, \"quoted phrases\", OR, NOT, prefix* and quote words with punctuation, e.g. \"task-1\"")]
    InvalidQuery(String),
    /// It ran longer than the search timeout.
    #[error("the search ran longer than {0:?}; narrow it with filters or a time range")]
    TimedOut(Duration),
    /// Anything else SQLite reported.
    #[error("log index: {0}")]
    Sqlite(rusqlite::Error),
}

impl From<SearchError> for ErrorBody {
    fn from(e: SearchError) -> Self {
        let code = match e {
            SearchError::InvalidQuery(_) => ErrorCode::InvalidQuery,
            SearchError::TimedOut(_) | SearchError::Sqlite(_) => ErrorCode::Unavailable,
        };
        ErrorBody::new(code, e.to_string())
    }
}

/// Runs a search on a read connection, stopping it after `timeout`; the
/// reply holds at most `budget` bytes of JSON.
///
/// A text that is one task id (`report-42`, quoted or not) also finds the
/// lines *about* that task, which need not mention it: ids are filters, not
/// words of the text index. The two walks are merged newest first, so the
/// cursor pages through both.
pub fn run(
    conn: &Connection,
    q: &Query,
    timeout: Duration,
    budget: usize,
) -> Result<LogSearchReply, SearchError> {
    let deadline = Instant::now() + timeout;
    conn.progress_handler(10_000, Some(move || Instant::now() > deadline))
        .map_err(SearchError::Sqlite)?;
    let result = query(conn, q).and_then(|mut lines| {
        if let Some(id) = q.task_id.is_none().then(|| task_term(q)).flatten() {
            let about = Query {
                text: None,
                task_id: Some(id),
                ..q.clone()
            };
            lines.extend(query(conn, &about)?);
            lines.sort_by_key(|l| std::cmp::Reverse(l.id));
            lines.dedup_by_key(|l| l.id);
        }
        Ok(lines)
    });
    conn.progress_handler(0, None::<fn() -> bool>)
        .map_err(SearchError::Sqlite)?;
    result
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == SqliteCode::OperationInterrupted => {
                SearchError::TimedOut(timeout)
            }
            // Everything but the text is fixed SQL with bound values, so a
            // generic SQL error here can only be the FTS5 query's.
            rusqlite::Error::SqliteFailure(f, msg)
                if f.code == SqliteCode::Unknown && q.text.is_some() =>
            {
                SearchError::InvalidQuery(msg.unwrap_or_else(|| f.to_string()))
            }
            other => SearchError::Sqlite(other),
        })
        .map(|lines| page(lines, q.limit, budget))
}

/// The task id a text of one term names, if it can be one.
fn task_term(q: &Query) -> Option<String> {
    let text = q.text.as_deref()?.trim();
    let term = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    clawfleet_shared::names::TaskId::is_valid(term).then(|| term.to_string())
}

/// The newest `limit` of `lines` (newest first) that fit in `budget` bytes,
/// each cut to the line limits (lines stored before those limits held may
/// be larger), with the cursor of the next page.
fn page(lines: Vec<StoredLine>, limit: usize, budget: usize) -> LogSearchReply {
    let more = lines.len() > limit;
    let mut used = 64;
    let mut out = Vec::with_capacity(lines.len().min(limit));
    let mut truncated = false;
    for mut stored in lines.into_iter().take(limit) {
        stored.line.bound();
        let size = serde_json::to_vec(&stored).map_or(usize::MAX / 2, |v| v.len()) + 1;
        if used + size > budget && !out.is_empty() {
            truncated = true;
            break;
        }
        used += size;
        out.push(stored);
    }
    let next_cursor = (more || truncated)
        .then(|| out.last().map(|l| l.id.to_string()))
        .flatten();
    LogSearchReply {
        lines: out,
        next_cursor,
        truncated,
    }
}

/// Up to `limit + 1` matching lines, newest first.
fn query(conn: &Connection, q: &Query) -> Result<Vec<StoredLine>, rusqlite::Error> {
    // `CROSS JOIN` makes SQLite keep the left table as the outer loop. Left
    // to itself, it drives a text query from a filter's index and evaluates
    // the full-text query once per row (about 0.2 ms each): fine for a
    // task's few lines, ruinous for a tenant's millions.
    let (from, id) = match (&q.text, &q.task_id) {
        (Some(_), Some(_)) => ("lines l CROSS JOIN lines_text t ON t.rowid = l.id", "l.id"),
        (Some(_), None) => (
            "lines_text t CROSS JOIN lines l ON l.id = t.rowid",
            "t.rowid",
        ),
        (None, _) => ("lines l", "l.id"),
    };
    let mut conditions: Vec<String> = Vec::new();
    let mut args: Vec<SqlValue> = Vec::new();
    let mut bind = |condition: String, value: SqlValue, conditions: &mut Vec<String>| {
        args.push(value);
        conditions.push(condition.replace('?', &format!("?{}", args.len())));
    };
    if let Some(text) = &q.text {
        bind(
            "lines_text MATCH ?".into(),
            SqlValue::Text(text.clone()),
            &mut conditions,
        );
    }
    if let Some(from_id) = q.from_id {
        bind(
            format!("{id} >= ?"),
            SqlValue::Integer(from_id),
            &mut conditions,
        );
    }
    if let Some(before) = q.before_id {
        bind(
            format!("{id} < ?"),
            SqlValue::Integer(before),
            &mut conditions,
        );
    }
    for (column, value) in [
        ("task_id", &q.task_id),
        ("agent_id", &q.agent_id),
        ("tenant", &q.tenant),
        ("service", &q.service),
    ] {
        if let Some(v) = value {
            bind(
                format!("l.{column} = ?"),
                SqlValue::Text(v.clone()),
                &mut conditions,
            );
        }
    }
    if let Some(level) = q.min_level {
        bind(
            "l.level >= ?".into(),
            SqlValue::Integer(i64::from(level.rank())),
            &mut conditions,
        );
    }
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    args.push(SqlValue::Integer(q.limit as i64 + 1));
    let sql = format!(
        "SELECT l.id, l.level, l.service, l.agent_id, l.task_id, l.tenant, l.capability,
                l.message, l.fields
         FROM {from} {where_clause} ORDER BY {id} DESC LIMIT ?{}",
        args.len()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
        let id: i64 = r.get(0)?;
        let level: u8 = r.get(1)?;
        let fields: Option<String> = r.get(8)?;
        Ok(StoredLine {
            id: id as u64,
            line: LogLine {
                time: time_of(id),
                level: Level::from_rank(level).unwrap_or(Level::Info),
                service: r.get(2)?,
                agent_id: r.get(3)?,
                task_id: r.get(4)?,
                tenant: r.get(5)?,
                capability: r.get(6)?,
                message: r.get(7)?,
                fields: fields
                    .and_then(|f| serde_json::from_str(&f).ok())
                    .unwrap_or_default(),
            },
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{incoming, index, line};
    use crate::store::{insert_batch, WriterState};

    fn search(conn: &Connection, req: LogSearchRequest) -> Result<LogSearchReply, SearchError> {
        let q = Query::parse(req).map_err(|e| SearchError::InvalidQuery(e.message))?;
        run(conn, &q, Duration::from_secs(5), 512 * 1024)
    }

    fn messages(reply: &LogSearchReply) -> Vec<&str> {
        reply
            .lines
            .iter()
            .map(|l| l.line.message.as_str())
            .collect()
    }

    fn fixture() -> (tempfile::TempDir, Connection) {
        let (dir, mut conn) = index();
        let mut lines = Vec::new();
        for (i, (level, msg, agent, task)) in [
            (Level::Info, "disk is fine", "a1", "t1"),
            (Level::Warn, "disk on fire", "a2", "t1"),
            (Level::Debug, "attempt started", "a1", "t2"),
            (Level::Error, "disk gone", "a3", "t2"),
            (Level::Info, "all good", "a2", "t3"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut l = line(
                level,
                msg,
                Duration::from_secs(60) - Duration::from_secs(i as u64),
            );
            l.agent_id = Some(agent.into());
            l.task_id = Some(task.into());
            l.fields.insert("note".into(), format!("n{i}").into());
            lines.push(incoming(i as u64 + 1, l));
        }
        insert_batch(&mut conn, &mut WriterState::default(), &lines).unwrap();
        (dir, conn)
    }

    #[test]
    fn text_and_filters_combine_newest_first() {
        let (_dir, conn) = fixture();
        let all = search(&conn, LogSearchRequest::default()).unwrap();
        assert_eq!(
            messages(&all),
            [
                "all good",
                "disk gone",
                "attempt started",
                "disk on fire",
                "disk is fine"
            ]
        );
        let disk = search(
            &conn,
            LogSearchRequest {
                text: Some("disk".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            messages(&disk),
            ["disk gone", "disk on fire", "disk is fine"]
        );
        let warn_t1 = search(
            &conn,
            LogSearchRequest {
                text: Some("disk".into()),
                task_id: Some("t1".into()),
                level: Some(Level::Warn),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(messages(&warn_t1), ["disk on fire"]);
        let by_field = search(
            &conn,
            LogSearchRequest {
                text: Some("n2".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(messages(&by_field), ["attempt started"]);
        assert_eq!(by_field.lines[0].line.fields["note"], "n2");
    }

    #[test]
    fn pages_follow_the_cursor_without_overlap() {
        let (_dir, conn) = fixture();
        let mut req = LogSearchRequest {
            limit: Some(2),
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = search(&conn, req.clone()).unwrap();
            seen.extend(messages(&page).into_iter().map(String::from));
            match page.next_cursor {
                Some(c) => req.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[0], "all good");
        assert_eq!(seen[4], "disk is fine");
    }

    #[test]
    fn a_broken_text_query_is_an_invalid_query() {
        let (_dir, conn) = fixture();
        let err = search(
            &conn,
            LogSearchRequest {
                text: Some("\"unbalanced".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, SearchError::InvalidQuery(ref m) if m.contains("unterminated")),
            "{err}"
        );
        assert_eq!(ErrorBody::from(err).code, ErrorCode::InvalidQuery);
    }
}

//! The index file: schema, line ids, and what the writer does with a batch.
//!
//! One SQLite database in WAL mode, so one writer and any number of readers
//! work at once without blocking each other:
//!
//! - `lines`: one row per line. Its `id` (the rowid) is the line's time in
//!   microseconds since the epoch, shifted left by [`SEQ_BITS`] bits, plus
//!   a counter that tells apart lines of the same microsecond. So the
//!   primary key *is* the time order: "newest first" is a backwards walk of
//!   the table, a time range is a rowid range, the search cursor is a
//!   rowid, and an age limit is a range delete. No separate time index is
//!   needed.
//! - `lines_text`: an FTS5 index of the message and the field values. It is
//!   contentless (the text lives in `lines` only) with `contentless_delete`
//!   so retention can delete from it by rowid; a trigger keeps it in step.
//! - partial indexes on `(task_id, id)`, `(agent_id, id)`, `(tenant, id)`
//!   and full ones on `(service, id)`, `(level, id)`: each filter of the
//!   search API finds its lines newest first without sorting.
//! - `usage`: lines and bytes per tenant and level, kept by the writer, so
//!   size limits and stats never scan `lines`.
//! - `counters`: lines ingested, removed and so on, plus the stream
//!   sequence of the last line indexed (a redelivered message at or below
//!   it is skipped, so a line is indexed once).

use std::collections::HashMap;
use std::path::Path;

use clawfleet_shared::logs::{Level, LogLine};
use clawfleet_shared::timefmt::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::Value;
use time::OffsetDateTime;

/// Low bits of a line id that tell apart lines of the same microsecond.
pub const SEQ_BITS: u32 = 10;
const SEQ_MASK: i64 = (1 << SEQ_BITS) - 1;
/// Largest time an id can hold, in microseconds (about the year 2255).
const MAX_MICROS: i64 = i64::MAX >> SEQ_BITS;

/// Version of the schema below, kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS lines (
    id INTEGER PRIMARY KEY,
    level INTEGER NOT NULL,
    service TEXT NOT NULL,
    agent_id TEXT,
    task_id TEXT,
    tenant TEXT,
    capability TEXT,
    message TEXT NOT NULL,
    fields TEXT,
    bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS lines_by_task ON lines(task_id, id) WHERE task_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS lines_by_agent ON lines(agent_id, id) WHERE agent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS lines_by_tenant ON lines(tenant, id) WHERE tenant IS NOT NULL;
CREATE INDEX IF NOT EXISTS lines_by_service ON lines(service, id);
CREATE INDEX IF NOT EXISTS lines_by_level ON lines(level, id);
CREATE VIRTUAL TABLE IF NOT EXISTS lines_text USING fts5(
    message, fields, content='', contentless_delete=1
);
CREATE TRIGGER IF NOT EXISTS lines_text_delete AFTER DELETE ON lines BEGIN
    DELETE FROM lines_text WHERE rowid = old.id;
END;
CREATE TABLE IF NOT EXISTS usage (
    tenant TEXT NOT NULL,
    level INTEGER NOT NULL,
    lines INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (tenant, level)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// Errors of the index.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("log index: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory could not be created.
    #[error("while creating the log index directory {path}: {source}")]
    Dir {
        /// The directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file was made by another schema version.
    #[error("the log index has schema version {found}, this aggregator reads {SCHEMA_VERSION}; move it away to start a new one")]
    Version {
        /// Version in the file.
        found: i64,
    },
}

/// Opens (creating if needed) the index for writing: the one connection
/// that writes.
pub fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -65536;
         PRAGMA busy_timeout = 5000;",
    )?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version != 0 && version != SCHEMA_VERSION {
        return Err(StoreError::Version { found: version });
    }
    conn.execute_batch(SCHEMA)?;
    // FTS5 merges its index segments as it goes. Letting more segments
    // pile up before merging (automerge 16, crisismerge 64, against 4 and
    // 16 by default) doubles the lines indexed per second; searches read a
    // few more segments, and the writer merges some when it is idle (see
    // `merge_some`).
    conn.execute_batch(
        "INSERT INTO lines_text(lines_text, rank) VALUES ('automerge', 16);
         INSERT INTO lines_text(lines_text, rank) VALUES ('crisismerge', 64);",
    )?;
    conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))?;
    optimize(&conn)?;
    Ok(conn)
}

/// Settings of a read connection: it never writes, waits for the writer's
/// checkpoints instead of failing, and maps the file for speed.
pub const READER_PRAGMAS: &str = "PRAGMA query_only = ON;
     PRAGMA busy_timeout = 5000;
     PRAGMA temp_store = MEMORY;
     PRAGMA cache_size = -32768;
     PRAGMA mmap_size = 1073741824;";

/// Refreshes the planner's statistics where the tables changed a lot, so
/// it keeps choosing the right index as the index grows.
pub fn optimize(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.execute_batch("PRAGMA analysis_limit = 1000; PRAGMA optimize;")
}

/// Does a bounded amount of the full-text index's merging (when the
/// writer has nothing else to do); returns whether there may be more.
pub fn merge_some(conn: &Connection) -> Result<bool, rusqlite::Error> {
    let before = conn.total_changes();
    conn.execute(
        "INSERT INTO lines_text(lines_text, rank) VALUES ('merge', 256)",
        [],
    )?;
    // FTS5 makes fewer than two changes when there was nothing to merge.
    Ok(conn.total_changes() - before >= 2)
}

/// Microseconds since the epoch, clamped to what an id can hold.
fn micros(t: Timestamp) -> i64 {
    let us = t.unix_timestamp_nanos() / 1000;
    us.clamp(0, MAX_MICROS as i128) as i64
}

/// The smallest id of a line logged at `t`: ids of lines logged at or after
/// `t` are `>=` it, ids of earlier lines `<` it.
pub fn id_floor(t: Timestamp) -> i64 {
    micros(t) << SEQ_BITS
}

/// The time encoded in an id (microsecond precision).
pub fn time_of(id: i64) -> Timestamp {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(id >> SEQ_BITS) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A message from the logs stream, decoded.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Its sequence in `CLAWFLEET_LOGS`.
    pub seq: u64,
    /// Its size as published.
    pub bytes: usize,
    /// The line, or `None` when the message was not a log line.
    pub line: Option<LogLine>,
}

/// What a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inserted {
    /// Lines added.
    pub lines: u64,
    /// Messages that were not log lines.
    pub unreadable: u64,
    /// Messages already indexed (redelivered), skipped.
    pub duplicates: u64,
}

/// Names in the `counters` table.
pub mod counter {
    /// Stream sequence of the last message indexed.
    pub const LAST_SEQ: &str = "last_seq";
    /// Lines indexed, ever.
    pub const INGESTED: &str = "ingested";
    /// Messages that were not log lines, ever.
    pub const UNREADABLE: &str = "unreadable";
    /// Retention passes completed.
    pub const RETENTION_RUNS: &str = "retention_runs";
    /// When the last retention pass ended (id units, see [`super::id_floor`]).
    pub const LAST_RETENTION: &str = "last_retention";

    /// Lines removed by age, for one level.
    pub fn removed_by_age(level: super::Level) -> String {
        format!("removed_by_age_{}", level.as_str())
    }

    /// Lines removed by size, for one level.
    pub fn removed_by_size(level: super::Level) -> String {
        format!("removed_by_size_{}", level.as_str())
    }
}

/// Reads a counter (0 when never set).
pub fn get_counter(conn: &Connection, name: &str) -> Result<i64, rusqlite::Error> {
    Ok(conn
        .query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or(0))
}

/// Adds to a counter.
pub fn add_counter(tx: &Transaction<'_>, name: &str, by: i64) -> Result<(), rusqlite::Error> {
    if by != 0 {
        tx.prepare_cached(
            "INSERT INTO counters(name, value) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
        )?
        .execute(params![name, by])?;
    }
    Ok(())
}

/// Sets a counter.
pub fn set_counter(tx: &Transaction<'_>, name: &str, value: i64) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO counters(name, value) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![name, value])?;
    Ok(())
}

/// Lines and bytes added (or, negative, removed) per (tenant, level).
#[derive(Debug, Default)]
pub struct UsageDelta(HashMap<(String, u8), (i64, i64)>);

impl UsageDelta {
    /// Counts one line.
    pub fn add(&mut self, tenant: Option<&str>, level: u8, bytes: i64) {
        let e = self
            .0
            .entry((tenant.unwrap_or("").to_string(), level))
            .or_default();
        e.0 += 1;
        e.1 += bytes;
    }

    /// Writes the delta, added (`sign` 1) or taken away (`sign` -1).
    pub fn apply(&self, tx: &Transaction<'_>, sign: i64) -> Result<(), rusqlite::Error> {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO usage(tenant, level, lines, bytes) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(tenant, level) DO UPDATE
             SET lines = lines + excluded.lines, bytes = bytes + excluded.bytes",
        )?;
        for ((tenant, level), (lines, bytes)) in &self.0 {
            stmt.execute(params![tenant, level, sign * lines, sign * bytes])?;
        }
        Ok(())
    }
}

/// The text of a line's fields as indexed for full-text search: the values,
/// separated by spaces.
fn fields_text(line: &LogLine) -> String {
    let mut out = String::new();
    for value in line.fields.values() {
        if !out.is_empty() {
            out.push(' ');
        }
        match value {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
    }
    out
}

/// The writer's state between batches.
#[derive(Debug, Default)]
pub struct WriterState {
    counter: i64,
}

/// Indexes a batch in one transaction. Messages at or below the last
/// sequence indexed are skipped.
pub fn insert_batch(
    conn: &mut Connection,
    state: &mut WriterState,
    batch: &[Incoming],
) -> Result<Inserted, rusqlite::Error> {
    let tx = conn.transaction()?;
    let last_seq = get_counter(&tx, counter::LAST_SEQ)? as u64;
    let mut done = Inserted::default();
    let mut usage = UsageDelta::default();
    let mut max_seq = last_seq;
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO lines
                (id, level, service, agent_id, task_id, tenant, capability, message, fields, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        let mut insert_text = tx
            .prepare_cached("INSERT INTO lines_text(rowid, message, fields) VALUES (?1, ?2, ?3)")?;
        for item in batch {
            if item.seq <= last_seq {
                done.duplicates += 1;
                continue;
            }
            max_seq = max_seq.max(item.seq);
            let Some(line) = &item.line else {
                done.unreadable += 1;
                continue;
            };
            let fields = if line.fields.is_empty() {
                None
            } else {
                serde_json::to_string(&line.fields).ok()
            };
            let base = id_floor(line.time);
            let level = line.level.rank();
            let mut stored = None;
            // Another line of the same microsecond may hold the slot: try the next.
            for _ in 0..=SEQ_MASK {
                let id = base | (state.counter & SEQ_MASK);
                state.counter = state.counter.wrapping_add(1);
                let n = insert.execute(params![
                    id,
                    level,
                    line.service,
                    line.agent_id,
                    line.task_id,
                    line.tenant,
                    line.capability,
                    line.message,
                    fields,
                    item.bytes as i64,
                ])?;
                if n == 1 {
                    stored = Some(id);
                    break;
                }
            }
            let Some(id) = stored else {
                // 1024 lines in one microsecond: not a log any service writes.
                done.unreadable += 1;
                continue;
            };
            insert_text.execute(params![id, line.message, fields_text(line)])?;
            usage.add(line.tenant.as_deref(), level, item.bytes as i64);
            done.lines += 1;
        }
    }
    usage.apply(&tx, 1)?;
    add_counter(&tx, counter::INGESTED, done.lines as i64)?;
    add_counter(&tx, counter::UNREADABLE, done.unreadable as i64)?;
    if max_seq > last_seq {
        set_counter(&tx, counter::LAST_SEQ, max_seq as i64)?;
    }
    tx.commit()?;
    Ok(done)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    /// A fresh index in a temporary directory.
    pub(crate) fn index() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(&dir.path().join("logs.db")).unwrap();
        (dir, conn)
    }

    pub(crate) fn line(level: Level, message: &str, ago: Duration) -> LogLine {
        let mut l = LogLine::new(level, "agent", message);
        l.time = clawfleet_shared::timefmt::now() - ago;
        l
    }

    pub(crate) fn incoming(seq: u64, line: LogLine) -> Incoming {
        Incoming {
            seq,
            bytes: serde_json::to_vec(&line).unwrap().len(),
            line: Some(line),
        }
    }

    #[test]
    fn ids_keep_time_order_and_give_back_the_time() {
        let t = clawfleet_shared::timefmt::now();
        let later = t + Duration::from_micros(1);
        assert!(id_floor(later) > id_floor(t) | SEQ_MASK);
        assert_eq!(
            time_of(id_floor(t)).unix_timestamp_nanos() / 1000,
            t.unix_timestamp_nanos() / 1000
        );
    }

    #[test]
    fn a_batch_is_indexed_once_even_when_redelivered() {
        let (_dir, mut conn) = index();
        let mut state = WriterState::default();
        let same_time = line(Level::Info, "one", Duration::ZERO);
        let mut twin = same_time.clone();
        twin.message = "two".into();
        let batch = vec![
            incoming(1, same_time),
            incoming(2, twin),
            Incoming {
                seq: 3,
                bytes: 3,
                line: None,
            },
        ];
        let first = insert_batch(&mut conn, &mut state, &batch).unwrap();
        assert_eq!(
            first,
            Inserted {
                lines: 2,
                unreadable: 1,
                duplicates: 0
            }
        );
        let again = insert_batch(&mut conn, &mut state, &batch).unwrap();
        assert_eq!(again.duplicates, 3);
        let n: i64 = conn
            .query_row("SELECT count(*) FROM lines", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2, "two lines of the same microsecond, each once");
        assert_eq!(get_counter(&conn, counter::LAST_SEQ).unwrap(), 3);
        assert_eq!(get_counter(&conn, counter::INGESTED).unwrap(), 2);
    }
}

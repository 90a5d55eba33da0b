//! The attempts database: one row per attempt an agent reported.
//!
//! The key is (task, agent, start time): a report delivered twice is kept
//! once. Times are microseconds since the epoch; `ended_us` is indexed, as
//! every query is a window of end times. `wall_bucket` is the attempt's
//! place in a log-scale latency histogram with [`BUCKETS_PER_DOUBLING`]
//! buckets per doubling, so percentiles are an aggregate query over an
//! index instead of a sort of every attempt. Cost is stored in millionths
//! of the currency unit, as integers, so that every total is the exact sum
//! of its attempts.

use std::path::Path;

use clawfleet_shared::events::AttemptReport;
use clawfleet_shared::subjects;
use clawfleet_shared::timefmt::Timestamp;
use rusqlite::{params, Connection};

use crate::config::Prices;
use crate::store::StoreError;

/// Buckets per doubling of the latency histogram (about 4.4% wide each).
pub const BUCKETS_PER_DOUBLING: f64 = 16.0;

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS attempts (
    task_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    started_us INTEGER NOT NULL,
    ended_us INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    priority TEXT NOT NULL,
    capability TEXT NOT NULL,
    region TEXT,
    labels TEXT,
    size_bytes INTEGER NOT NULL,
    wall_ms INTEGER NOT NULL,
    wall_bucket INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    model TEXT,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    PRIMARY KEY (task_id, agent, started_us)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attempts_by_end ON attempts(ended_us);
CREATE INDEX IF NOT EXISTS attempts_by_tenant ON attempts(tenant, ended_us);
"#;

/// Opens (creating if needed) the attempts database.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
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
         PRAGMA busy_timeout = 5000;",
    )?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version != 0 && version != SCHEMA_VERSION {
        return Err(StoreError::Version { found: version });
    }
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))?;
    Ok(conn)
}

/// An attempt as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Task id.
    pub task_id: String,
    /// Agent.
    pub agent: String,
    /// Start, µs since the epoch.
    pub started_us: i64,
    /// End, µs since the epoch.
    pub ended_us: i64,
    /// Attempt number.
    pub attempt: u32,
    /// Tenant.
    pub tenant: String,
    /// Priority.
    pub priority: String,
    /// Capability set key (`_` for none).
    pub capability: String,
    /// Region.
    pub region: Option<String>,
    /// Labels as a JSON object (none when the task has none).
    pub labels: Option<String>,
    /// Task size.
    pub size_bytes: u64,
    /// Wall time.
    pub wall_ms: u64,
    /// Outcome.
    pub outcome: String,
    /// Error code.
    pub error: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Input tokens.
    pub tokens_in: u64,
    /// Output tokens.
    pub tokens_out: u64,
    /// Cost, millionths of the currency unit.
    pub cost_micros: i64,
}

impl Row {
    /// A report, priced.
    pub fn new(r: &AttemptReport, prices: &Prices) -> Row {
        let wall_ms = r.wall_ms();
        let usage = r.usage.clone().unwrap_or_default();
        Row {
            task_id: r.task_id.clone(),
            agent: r.agent.clone(),
            started_us: micros(r.started_at),
            ended_us: micros(r.ended_at),
            attempt: r.attempt,
            tenant: r.tenant.clone(),
            priority: r.priority.as_str().to_string(),
            capability: subjects::capkey(&r.requires),
            region: r.region.clone(),
            labels: (!r.labels.is_empty())
                .then(|| serde_json::to_string(&r.labels).unwrap_or_default()),
            size_bytes: r.size_bytes,
            wall_ms,
            outcome: r.outcome.as_str().to_string(),
            error: r.error.map(|e| e.to_string()),
            model: usage.model.clone(),
            tokens_in: usage.tokens_in,
            tokens_out: usage.tokens_out,
            cost_micros: prices.cost_micros(
                wall_ms,
                usage.model.as_deref(),
                usage.tokens_in,
                usage.tokens_out,
            ),
        }
    }
}

/// Microseconds since the epoch.
pub fn micros(t: Timestamp) -> i64 {
    (t.unix_timestamp_nanos() / 1000).clamp(0, i64::MAX as i128) as i64
}

/// The histogram bucket of a wall time: 0 for 0 ms, then
/// `floor(16 × log2(ms)) + 1`.
pub fn bucket(wall_ms: u64) -> i64 {
    if wall_ms == 0 {
        0
    } else {
        (BUCKETS_PER_DOUBLING * (wall_ms as f64).log2()).floor() as i64 + 1
    }
}

/// Writes `rows` in one transaction; says which were new (the others were
/// already there: a report delivered again).
pub fn insert(conn: &mut Connection, rows: &[Row]) -> rusqlite::Result<Vec<bool>> {
    let tx = conn.transaction()?;
    let mut added = Vec::with_capacity(rows.len());
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO attempts (task_id, agent, started_us, ended_us, attempt, tenant,
                priority, capability, region, labels, size_bytes, wall_ms, wall_bucket, outcome,
                error, model, tokens_in, tokens_out, cost_micros)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        )?;
        for r in rows {
            let n = stmt.execute(params![
                r.task_id,
                r.agent,
                r.started_us,
                r.ended_us,
                r.attempt,
                r.tenant,
                r.priority,
                r.capability,
                r.region,
                r.labels,
                r.size_bytes as i64,
                r.wall_ms as i64,
                bucket(r.wall_ms),
                r.outcome,
                r.error,
                r.model,
                r.tokens_in as i64,
                r.tokens_out as i64,
                r.cost_micros,
            ])?;
            added.push(n == 1);
        }
    }
    tx.commit()?;
    Ok(added)
}

/// Deletes attempts that ended before `cutoff`; returns how many.
pub fn remove_before(conn: &Connection, cutoff: Timestamp) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM attempts WHERE ended_us < ?1",
        params![micros(cutoff)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_by_a_sixteenth_of_a_doubling() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 1);
        assert_eq!(bucket(2), 17);
        assert_eq!(bucket(1024), 161);
        // Neighbouring values share a bucket; values 5% apart do not.
        assert_eq!(bucket(1000), bucket(1001));
        assert!(bucket(1050) > bucket(1000));
    }
}

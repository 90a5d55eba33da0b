//! The analytics queries, over the attempts database.
//!
//! "Finished" attempts are those that succeeded, failed or timed out:
//! success rates and latencies count only them. Attempts that were stopped
//! (preempted, cancelled, handed back by a stopping agent) count in
//! attempts and cost, not in rates.

use std::collections::BTreeMap;

use clawfleet_shared::analytics::{
    AgentComparison, Baseline, BaselinesReply, BaselinesRequest, BelowAverageReply,
    BelowAverageRequest, Correlation, CorrelationsReply, CorrelationsRequest, GroupBy, GroupStats,
    SummaryReply, Window,
};
use clawfleet_shared::timefmt::{self, Timestamp};
use rusqlite::{params, Connection};

use super::store::micros;
use crate::config::Prices;

const FINISHED: &str = "outcome IN ('succeeded', 'failed', 'timeout')";
const DAY: time::Duration = time::Duration::days(1);

/// Errors a request can get.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The request does not make sense.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("attempts database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Whether a time can be written in RFC 3339 (years 0 to 9999), as every
/// time in a reply must be.
fn representable(t: &Timestamp) -> bool {
    (0..=9999).contains(&t.year())
}

/// A resolved window.
#[derive(Debug, Clone)]
struct Scope {
    since: Timestamp,
    until: Timestamp,
    tenant: Option<String>,
}

impl Scope {
    fn of(w: &Window) -> Result<Scope, ReportError> {
        let until = w.until.unwrap_or_else(timefmt::now);
        let since = match w.since {
            Some(since) => since,
            None => until
                .checked_sub(DAY)
                .filter(representable)
                .ok_or_else(|| {
                    ReportError::Invalid(
                        "`until` is too early for the default window of a day".into(),
                    )
                })?,
        };
        if since >= until {
            return Err(ReportError::Invalid(
                "`since` must be before `until`".into(),
            ));
        }
        Ok(Scope {
            since,
            until,
            tenant: w.tenant.clone(),
        })
    }
}

/// One group's running sums.
#[derive(Debug, Default, Clone)]
struct Acc {
    attempts: u64,
    tasks: u64,
    succeeded: u64,
    failed: u64,
    tokens_in: u64,
    tokens_out: u64,
    wall_ms: u64,
    cost: i64,
    cost_failed: i64,
    cost_retries: i64,
    /// Finished attempts' latency histogram: bucket → (count, largest value).
    hist: BTreeMap<i64, (u64, u64)>,
}

impl Acc {
    fn stats(&self, key: String) -> GroupStats {
        let finished = self.succeeded + self.failed;
        GroupStats {
            key,
            attempts: self.attempts,
            tasks: self.tasks,
            succeeded: self.succeeded,
            failed: self.failed,
            stopped: self.attempts - finished,
            success_rate: (finished > 0).then(|| self.succeeded as f64 / finished as f64),
            p50_ms: percentile(&self.hist, 0.50),
            p95_ms: percentile(&self.hist, 0.95),
            attempts_per_task: if self.tasks == 0 {
                0.0
            } else {
                self.attempts as f64 / self.tasks as f64
            },
            tokens_in: self.tokens_in,
            tokens_out: self.tokens_out,
            wall_seconds: self.wall_ms as f64 / 1000.0,
            cost: money(self.cost),
            cost_failed: money(self.cost_failed),
            cost_retries: money(self.cost_retries),
        }
    }

    fn finished(&self) -> u64 {
        self.succeeded + self.failed
    }
}

fn money(micros: i64) -> f64 {
    micros as f64 / 1e6
}

/// The value at quantile `q` of a histogram: the largest value seen in the
/// bucket where the cumulative count reaches `q` (within one bucket's width
/// of the exact value).
fn percentile(hist: &BTreeMap<i64, (u64, u64)>, q: f64) -> Option<u64> {
    let total: u64 = hist.values().map(|(n, _)| n).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (n, max) in hist.values() {
        seen += n;
        if seen >= rank {
            return Some(*max);
        }
    }
    hist.values().last().map(|(_, max)| *max)
}

/// The SQL expression a grouping keys rows by, and its parameter.
fn key_sql(by: &GroupBy) -> Result<(&'static str, Option<String>), ReportError> {
    Ok(match by {
        GroupBy::Agent => ("agent", None),
        GroupBy::Capability => ("capability", None),
        GroupBy::Tenant => ("tenant", None),
        GroupBy::Priority => ("priority", None),
        GroupBy::Model => ("coalesce(model, '-')", None),
        GroupBy::Region => ("coalesce(region, '_')", None),
        GroupBy::Hour => (
            "strftime('%Y-%m-%dT%H:00:00Z', ended_us / 1000000, 'unixepoch')",
            None,
        ),
        GroupBy::Day => (
            "strftime('%Y-%m-%d', ended_us / 1000000, 'unixepoch')",
            None,
        ),
        GroupBy::Label(key) => {
            if key.is_empty() || key.contains(['"', '\\']) {
                return Err(ReportError::Invalid(format!("{key:?} is not a label name")));
            }
            (
                "coalesce(?4 || '=' || json_extract(labels, '$.\"' || ?4 || '\"'), ?4 || ' unset')",
                Some(key.clone()),
            )
        }
    })
}

/// Sums per group over the scope.
fn collect(
    conn: &Connection,
    scope: &Scope,
    by: &GroupBy,
) -> Result<BTreeMap<String, Acc>, ReportError> {
    let (key, param) = key_sql(by)?;
    let filter = "ended_us >= ?1 AND ended_us < ?2 AND (?3 IS NULL OR tenant = ?3)";
    let sums = format!(
        "SELECT {key} AS k, count(*), count(DISTINCT task_id),
                sum(outcome = 'succeeded'), sum(outcome IN ('failed', 'timeout')),
                sum(tokens_in), sum(tokens_out), sum(wall_ms), sum(cost_micros),
                sum(CASE WHEN outcome <> 'succeeded' THEN cost_micros ELSE 0 END),
                sum(CASE WHEN attempt > 1 THEN cost_micros ELSE 0 END)
         FROM attempts WHERE {filter} AND (?4 IS NULL OR ?4 IS NOT NULL) GROUP BY k"
    );
    let hist = format!(
        "SELECT {key} AS k, wall_bucket, count(*), max(wall_ms)
         FROM attempts WHERE {filter} AND {FINISHED} AND (?4 IS NULL OR ?4 IS NOT NULL)
         GROUP BY k, wall_bucket"
    );
    let p = params![
        micros(scope.since),
        micros(scope.until),
        scope.tenant,
        param
    ];
    let mut groups: BTreeMap<String, Acc> = BTreeMap::new();
    let mut stmt = conn.prepare_cached(&sums)?;
    let mut rows = stmt.query(p)?;
    while let Some(r) = rows.next()? {
        let k: String = r.get(0)?;
        let get =
            |i: usize| -> rusqlite::Result<i64> { Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0)) };
        groups.insert(
            k,
            Acc {
                attempts: get(1)? as u64,
                tasks: get(2)? as u64,
                succeeded: get(3)? as u64,
                failed: get(4)? as u64,
                tokens_in: get(5)? as u64,
                tokens_out: get(6)? as u64,
                wall_ms: get(7)? as u64,
                cost: get(8)?,
                cost_failed: get(9)?,
                cost_retries: get(10)?,
                hist: BTreeMap::new(),
            },
        );
    }
    let mut stmt = conn.prepare_cached(&hist)?;
    let mut rows = stmt.query(p)?;
    while let Some(r) = rows.next()? {
        let k: String = r.get(0)?;
        let b: i64 = r.get(1)?;
        let n: i64 = r.get(2)?;
        let max: i64 = r.get(3)?;
        if let Some(acc) = groups.get_mut(&k) {
            acc.hist.insert(b, (n as u64, max as u64));
        }
    }
    Ok(groups)
}

/// Everything in the scope as one group.
fn total(conn: &Connection, scope: &Scope) -> Result<Acc, ReportError> {
    // Grouping by tenant then merging keeps one query shape; distinct
    // tasks never span tenants.
    let groups = collect(conn, scope, &GroupBy::Tenant)?;
    let mut all = Acc::default();
    for acc in groups.values() {
        merge(&mut all, acc);
    }
    Ok(all)
}

fn merge(into: &mut Acc, acc: &Acc) {
    into.attempts += acc.attempts;
    into.tasks += acc.tasks;
    into.succeeded += acc.succeeded;
    into.failed += acc.failed;
    into.tokens_in += acc.tokens_in;
    into.tokens_out += acc.tokens_out;
    into.wall_ms += acc.wall_ms;
    into.cost += acc.cost;
    into.cost_failed += acc.cost_failed;
    into.cost_retries += acc.cost_retries;
    for (b, (n, max)) in &acc.hist {
        let e = into.hist.entry(*b).or_insert((0, 0));
        e.0 += n;
        e.1 = e.1.max(*max);
    }
}

/// What cost replies say about the price table.
#[derive(Debug, Clone, PartialEq)]
pub struct Pricing {
    /// Currency of the cost figures.
    pub currency: String,
    /// Whether any price is above zero.
    pub priced: bool,
}

impl Pricing {
    /// The pricing of `prices`.
    pub fn of(prices: &Prices) -> Pricing {
        let model_priced =
            |m: &crate::config::ModelPrice| m.input_per_million > 0.0 || m.output_per_million > 0.0;
        Pricing {
            currency: prices.currency.clone(),
            priced: prices.per_agent_hour > 0.0
                || model_priced(&prices.default_model)
                || prices.models.values().any(model_priced),
        }
    }
}

/// Performance and cost per group; `by_cost` orders by cost instead of
/// attempts (time groupings are always in time order).
pub fn summary(
    conn: &Connection,
    window: &Window,
    by: &GroupBy,
    pricing: &Pricing,
    by_cost: bool,
) -> Result<SummaryReply, ReportError> {
    let scope = Scope::of(window)?;
    let groups = collect(conn, &scope, by)?;
    let total = total(conn, &scope)?;
    let mut rows: Vec<(Acc, GroupStats)> = groups
        .into_iter()
        .map(|(k, acc)| {
            let s = acc.stats(k);
            (acc, s)
        })
        .collect();
    if !matches!(by, GroupBy::Hour | GroupBy::Day) {
        if by_cost {
            rows.sort_by(|a, b| b.0.cost.cmp(&a.0.cost).then(a.1.key.cmp(&b.1.key)));
        } else {
            rows.sort_by(|a, b| b.1.attempts.cmp(&a.1.attempts).then(a.1.key.cmp(&b.1.key)));
        }
    }
    Ok(SummaryReply {
        truncated: false,
        since: scope.since,
        until: scope.until,
        currency: pricing.currency.clone(),
        priced: pricing.priced,
        groups: rows.into_iter().map(|(_, s)| s).collect(),
        total: total.stats("total".into()),
    })
}

/// Agents doing clearly worse than the rest of the fleet.
pub fn below_average(
    conn: &Connection,
    req: &BelowAverageRequest,
) -> Result<BelowAverageReply, ReportError> {
    let scope = Scope::of(&req.window)?;
    let agents = collect(conn, &scope, &GroupBy::Agent)?;
    let mut fleet = Acc::default();
    for acc in agents.values() {
        merge(&mut fleet, acc);
    }
    let fleet_stats = fleet.stats(String::new());
    let mut judged = Vec::new();
    for (agent, acc) in &agents {
        if acc.finished() < req.min_attempts.max(1) {
            continue;
        }
        // The rest of the fleet: everyone's sums minus this agent's.
        let mut others = Acc {
            succeeded: fleet.succeeded - acc.succeeded,
            failed: fleet.failed - acc.failed,
            ..Acc::default()
        };
        for (other, o) in &agents {
            if other != agent {
                for (b, (n, max)) in &o.hist {
                    let e = others.hist.entry(*b).or_insert((0, 0));
                    e.0 += n;
                    e.1 = e.1.max(*max);
                }
            }
        }
        if others.finished() == 0 {
            continue;
        }
        let rate = acc.succeeded as f64 / acc.finished() as f64;
        let others_rate = others.succeeded as f64 / others.finished() as f64;
        let p50 = percentile(&acc.hist, 0.5);
        let others_p50 = percentile(&others.hist, 0.5);
        let latency_ratio = match (p50, others_p50) {
            (Some(a), Some(o)) if o > 0 => Some(a as f64 / o as f64),
            _ => None,
        };
        let gap = others_rate - rate;
        let mut reasons = Vec::new();
        if gap >= req.rate_margin {
            reasons.push(format!(
                "success rate {:.1}% vs {:.1}% for the rest of the fleet ({:.1} points lower)",
                rate * 100.0,
                others_rate * 100.0,
                gap * 100.0
            ));
        }
        let slower_by = p50.unwrap_or(0).saturating_sub(others_p50.unwrap_or(0));
        if let Some(ratio) = latency_ratio
            .filter(|r| *r >= req.latency_factor && slower_by >= req.min_latency_gap_ms)
        {
            reasons.push(format!(
                "median latency {} ms vs {} ms for the rest of the fleet ({ratio:.1}x)",
                p50.unwrap_or(0),
                others_p50.unwrap_or(0)
            ));
        }
        judged.push(AgentComparison {
            agent: agent.clone(),
            attempts: acc.finished(),
            success_rate: rate,
            others_success_rate: others_rate,
            rate_gap: gap,
            p50_ms: p50,
            others_p50_ms: others_p50,
            latency_ratio,
            reasons,
        });
    }
    let mut below: Vec<AgentComparison> = judged
        .iter()
        .filter(|a| !a.reasons.is_empty())
        .cloned()
        .collect();
    below.sort_by(|a, b| {
        b.rate_gap.total_cmp(&a.rate_gap).then(
            b.latency_ratio
                .unwrap_or(0.0)
                .total_cmp(&a.latency_ratio.unwrap_or(0.0)),
        )
    });
    Ok(BelowAverageReply {
        truncated: false,
        since: scope.since,
        until: scope.until,
        fleet_success_rate: fleet_stats.success_rate,
        fleet_p50_ms: fleet_stats.p50_ms,
        below,
        agents: judged,
    })
}

/// Per capability: the recent period against the baseline before it.
pub fn baselines(conn: &Connection, req: &BaselinesRequest) -> Result<BaselinesReply, ReportError> {
    if req.baseline_days == 0 || req.baseline_days > 90 {
        return Err(ReportError::Invalid(
            "`baseline_days` must be between 1 and 90".into(),
        ));
    }
    let recent = time::Duration::try_from(req.recent)
        .ok()
        .filter(|d| *d > time::Duration::ZERO)
        .ok_or_else(|| ReportError::Invalid("`recent` must be a positive duration".into()))?;
    let until = req.until.unwrap_or_else(timefmt::now);
    let out_of_range = || {
        ReportError::Invalid(
            "`recent` and `baseline_days` reach back before the earliest time there is".into(),
        )
    };
    let recent_since = until
        .checked_sub(recent)
        .filter(representable)
        .ok_or_else(out_of_range)?;
    let baseline_since = recent_since
        .checked_sub(DAY * req.baseline_days as i32)
        .filter(representable)
        .ok_or_else(out_of_range)?;
    let scope = |since, until| Scope {
        since,
        until,
        tenant: req.tenant.clone(),
    };
    let base = collect(
        conn,
        &scope(baseline_since, recent_since),
        &GroupBy::Capability,
    )?;
    let now = collect(conn, &scope(recent_since, until), &GroupBy::Capability)?;
    let keys: std::collections::BTreeSet<&String> = base.keys().chain(now.keys()).collect();
    let empty = Acc::default();
    let capabilities = keys
        .into_iter()
        .map(|k| {
            let b = base.get(k).unwrap_or(&empty).stats(k.clone());
            let r = now.get(k).unwrap_or(&empty).stats(k.clone());
            let rate_change = match (r.success_rate, b.success_rate) {
                (Some(r), Some(b)) => Some(r - b),
                _ => None,
            };
            let p95_ratio = match (r.p95_ms, b.p95_ms) {
                (Some(r), Some(b)) if b > 0 => Some(r as f64 / b as f64),
                _ => None,
            };
            let mut deviations = Vec::new();
            if let Some(c) = rate_change.filter(|c| *c <= -0.05) {
                deviations.push(format!(
                    "success rate {:.1} points below its baseline",
                    -c * 100.0
                ));
            }
            if let Some(x) = p95_ratio.filter(|x| *x >= 1.5) {
                deviations.push(format!("p95 latency {x:.1}x its baseline"));
            }
            Baseline {
                capability: k.clone(),
                baseline: b,
                recent: r,
                success_rate_change: rate_change,
                p95_ratio,
                deviations,
            }
        })
        .collect();
    Ok(BaselinesReply {
        truncated: false,
        baseline_since,
        recent_since,
        until,
        capabilities,
    })
}

/// Size classes of tasks, for correlations.
const SIZE_CLASS: &str = "CASE WHEN size_bytes < 1024 THEN '<1KiB'
      WHEN size_bytes < 10240 THEN '1KiB-10KiB'
      WHEN size_bytes < 102400 THEN '10KiB-100KiB'
      ELSE '>=100KiB' END";

/// Failure rate by task characteristic.
pub fn correlations(
    conn: &Connection,
    req: &CorrelationsRequest,
) -> Result<CorrelationsReply, ReportError> {
    let scope = Scope::of(&req.window)?;
    let filter =
        format!("ended_us >= ?1 AND ended_us < ?2 AND (?3 IS NULL OR tenant = ?3) AND {FINISHED}");
    let queries = [
        (
            "label",
            format!(
                "SELECT je.key || '=' || je.value, count(*), sum(outcome <> 'succeeded')
                 FROM attempts, json_each(attempts.labels) AS je
                 WHERE attempts.labels IS NOT NULL AND {filter} GROUP BY 1"
            ),
        ),
        (
            "size",
            format!(
                "SELECT {SIZE_CLASS}, count(*), sum(outcome <> 'succeeded')
                 FROM attempts WHERE {filter} GROUP BY 1"
            ),
        ),
        (
            "capability",
            format!(
                "SELECT capability, count(*), sum(outcome <> 'succeeded')
                 FROM attempts WHERE {filter} GROUP BY 1"
            ),
        ),
        (
            "priority",
            format!(
                "SELECT priority, count(*), sum(outcome <> 'succeeded')
                 FROM attempts WHERE {filter} GROUP BY 1"
            ),
        ),
    ];
    let p = params![micros(scope.since), micros(scope.until), scope.tenant];
    let (all, failed): (i64, Option<i64>) = conn.query_row(
        &format!("SELECT count(*), sum(outcome <> 'succeeded') FROM attempts WHERE {filter}"),
        p,
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let fleet_rate = (all > 0).then(|| failed.unwrap_or(0) as f64 / all as f64);
    let mut out = Vec::new();
    for (characteristic, sql) in &queries {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query(p)?;
        while let Some(r) = rows.next()? {
            let value: String = r.get(0)?;
            let n: i64 = r.get(1)?;
            let f: i64 = r.get::<_, Option<i64>>(2)?.unwrap_or(0);
            if (n as u64) < req.min_attempts.max(1) {
                continue;
            }
            let rate = f as f64 / n as f64;
            out.push(Correlation {
                characteristic: characteristic.to_string(),
                value,
                attempts: n as u64,
                failure_rate: rate,
                lift: fleet_rate.filter(|r| *r > 0.0).map(|fr| rate / fr),
            });
        }
    }
    out.sort_by(|a, b| {
        b.failure_rate
            .total_cmp(&a.failure_rate)
            .then(b.attempts.cmp(&a.attempts))
    });
    Ok(CorrelationsReply {
        truncated: false,
        since: scope.since,
        until: scope.until,
        fleet_failure_rate: fleet_rate,
        correlations: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::store::{self, Row};

    fn row(task: &str, agent: &str, ended_s: i64, wall_ms: u64, outcome: &str) -> Row {
        let ended_us = 1_700_000_000_000_000 + ended_s * 1_000_000;
        Row {
            task_id: task.into(),
            agent: agent.into(),
            started_us: ended_us - wall_ms as i64 * 1000,
            ended_us,
            attempt: 1,
            tenant: "acme".into(),
            priority: "normal".into(),
            capability: "code".into(),
            region: None,
            labels: Some(r#"{"team":"web"}"#.into()),
            size_bytes: 100,
            wall_ms,
            outcome: outcome.into(),
            error: None,
            model: None,
            tokens_in: 10,
            tokens_out: 1,
            cost_micros: 7,
        }
    }

    fn window() -> Window {
        Window {
            since: Some(time::OffsetDateTime::from_unix_timestamp(1_699_999_000).unwrap()),
            until: Some(time::OffsetDateTime::from_unix_timestamp(1_700_001_000).unwrap()),
            tenant: None,
        }
    }

    fn usd() -> Pricing {
        Pricing::of(&Prices::default())
    }

    #[test]
    fn only_a_price_above_zero_makes_a_price_table() {
        assert!(!usd().priced);
        let mut prices = Prices::default();
        prices.models.insert("free".into(), Default::default());
        assert!(!Pricing::of(&prices).priced);
        prices.default_model.output_per_million = 0.5;
        assert!(Pricing::of(&prices).priced);
        let hourly = Prices {
            per_agent_hour: 1.0,
            ..Prices::default()
        };
        assert!(Pricing::of(&hourly).priced);
    }

    #[test]
    fn percentiles_come_from_the_histogram_within_a_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = store::open(&dir.path().join("a.db")).unwrap();
        let rows: Vec<Row> = (1..=100)
            .map(|i| row(&format!("t{i}"), "a", i, i as u64 * 10, "succeeded"))
            .collect();
        assert!(store::insert(&mut conn, &rows).unwrap().iter().all(|a| *a));
        // The same reports again are kept once.
        assert!(store::insert(&mut conn, &rows).unwrap().iter().all(|a| !*a));
        let s = summary(&conn, &window(), &GroupBy::Agent, &usd(), false).unwrap();
        let a = &s.groups[0];
        assert_eq!(a.attempts, 100);
        assert_eq!(a.cost, 700.0 / 1e6);
        let p50 = a.p50_ms.unwrap() as f64;
        let p95 = a.p95_ms.unwrap() as f64;
        assert!((p50 - 500.0).abs() / 500.0 < 0.05, "{p50}");
        assert!((p95 - 950.0).abs() / 950.0 < 0.05, "{p95}");
        let by_label = summary(
            &conn,
            &window(),
            &GroupBy::Label("team".into()),
            &usd(),
            false,
        )
        .unwrap();
        assert_eq!(by_label.groups[0].key, "team=web");
        let by_other =
            summary(&conn, &window(), &GroupBy::Label("x".into()), &usd(), false).unwrap();
        assert_eq!(by_other.groups[0].key, "x unset");
    }
}

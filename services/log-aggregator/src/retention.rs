//! Retention: which lines go, by age and by size.
//!
//! By age: each level has a `max_age`; a tenant may override it for its own
//! lines, level by level. A line older than the limit that applies to its
//! tenant and level is removed. A limit of zero means no limit.
//!
//! By size: `max_bytes` bounds the size of all stored lines (their size as
//! published), and a tenant's `max_bytes` bounds its own. Above a bound,
//! lines are removed least severe level first and, within a level, oldest
//! first, until the total is within the bound: a flood of DEBUG lines never
//! pushes out an ERROR line while any DEBUG or INFO line is left. Tenant
//! bounds are enforced before the global one.
//!
//! A pass runs in one transaction on the writer's connection and removes
//! at most a budget of lines, so that ingestion can go on between the
//! chunks of a large clean-up; the caller runs passes until one reports
//! nothing more to do.

use std::time::Duration;

use clawfleet_shared::logs::Level;
use clawfleet_shared::timefmt::Timestamp;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection, Transaction};

use crate::config::Retention;
use crate::store::{self, add_counter, counter, id_floor, UsageDelta};

/// Which tenants' lines an age rule covers.
#[derive(Debug, Clone, PartialEq)]
enum Scope {
    /// Lines of this tenant only.
    Tenant(String),
    /// Lines without a tenant, and of every tenant but these.
    AllBut(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
struct AgeRule {
    level: Level,
    max_age: Duration,
    scope: Scope,
}

/// The retention settings, as rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    ages: Vec<AgeRule>,
    /// `(tenant, max_bytes)`; `None` is the global bound, enforced last.
    sizes: Vec<(Option<String>, u64)>,
}

impl Policy {
    /// Compiles the configured retention.
    pub fn new(r: &Retention) -> Policy {
        let mut ages = Vec::new();
        for level in Level::ALL {
            let overridden: Vec<String> = r
                .tenants
                .iter()
                .filter(|(_, t)| t.max_age.get(level).is_some())
                .map(|(name, _)| name.clone())
                .collect();
            for tenant in &overridden {
                let max_age = r.tenants[tenant].max_age.get(level).expect("overridden");
                if !max_age.is_zero() {
                    ages.push(AgeRule {
                        level,
                        max_age,
                        scope: Scope::Tenant(tenant.clone()),
                    });
                }
            }
            let max_age = r.max_age.get(level);
            if !max_age.is_zero() {
                ages.push(AgeRule {
                    level,
                    max_age,
                    scope: Scope::AllBut(overridden),
                });
            }
        }
        let mut sizes: Vec<(Option<String>, u64)> = r
            .tenants
            .iter()
            .filter_map(|(name, t)| t.max_bytes.map(|b| (Some(name.clone()), b)))
            .collect();
        if r.max_bytes > 0 {
            sizes.push((None, r.max_bytes));
        }
        Policy { ages, sizes }
    }
}

/// What a pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Lines removed by age, per level rank.
    pub by_age: [u64; 5],
    /// Lines removed by size, per level rank.
    pub by_size: [u64; 5],
    /// Their bytes.
    pub bytes: u64,
    /// The budget ran out: run another pass.
    pub more: bool,
}

impl Removed {
    /// Lines removed, all reasons and levels.
    pub fn total(&self) -> u64 {
        self.by_age.iter().chain(&self.by_size).sum()
    }
}

/// Runs one pass at time `now`, removing at most `budget` lines.
pub fn enforce(
    conn: &mut Connection,
    policy: &Policy,
    now: Timestamp,
    budget: usize,
) -> Result<Removed, rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut removed = Removed::default();
    let mut left = budget;
    for rule in &policy.ages {
        if left == 0 {
            break;
        }
        let Some(cutoff) =
            now.checked_sub(time::Duration::try_from(rule.max_age).unwrap_or(time::Duration::MAX))
        else {
            continue;
        };
        let mut sql = String::from(
            "DELETE FROM lines WHERE id IN (SELECT id FROM lines WHERE level = ?1 AND id < ?2",
        );
        let mut args = vec![
            SqlValue::Integer(i64::from(rule.level.rank())),
            SqlValue::Integer(id_floor(cutoff)),
            SqlValue::Integer(left as i64),
        ];
        match &rule.scope {
            Scope::Tenant(t) => {
                sql.push_str(" AND tenant = ?4");
                args.push(SqlValue::Text(t.clone()));
            }
            Scope::AllBut(others) if !others.is_empty() => {
                let marks: Vec<String> = (0..others.len()).map(|i| format!("?{}", i + 4)).collect();
                sql.push_str(&format!(
                    " AND (tenant IS NULL OR tenant NOT IN ({}))",
                    marks.join(", ")
                ));
                args.extend(others.iter().cloned().map(SqlValue::Text));
            }
            Scope::AllBut(_) => {}
        }
        sql.push_str(" LIMIT ?3) RETURNING tenant, level, bytes");
        let (lines, bytes) = delete(&tx, &sql, args)?;
        removed.by_age[rule.level.rank() as usize] += lines;
        removed.bytes += bytes;
        left -= lines as usize;
    }
    if left > 0 {
        for (tenant, max_bytes) in &policy.sizes {
            left = shrink(&tx, tenant.as_deref(), *max_bytes, left, &mut removed)?;
            if left == 0 {
                break;
            }
        }
    }
    removed.more = left == 0;
    for level in Level::ALL {
        let i = level.rank() as usize;
        add_counter(
            &tx,
            &counter::removed_by_age(level),
            removed.by_age[i] as i64,
        )?;
        add_counter(
            &tx,
            &counter::removed_by_size(level),
            removed.by_size[i] as i64,
        )?;
    }
    if !removed.more {
        add_counter(&tx, counter::RETENTION_RUNS, 1)?;
        store::set_counter(&tx, counter::LAST_RETENTION, id_floor(now))?;
    }
    tx.commit()?;
    Ok(removed)
}

/// Runs a `DELETE ... RETURNING tenant, level, bytes` and takes the removed
/// lines off the usage table; returns (lines, bytes) removed.
fn delete(
    tx: &Transaction<'_>,
    sql: &str,
    args: Vec<SqlValue>,
) -> Result<(u64, u64), rusqlite::Error> {
    let mut usage = UsageDelta::default();
    let (mut lines, mut bytes) = (0u64, 0u64);
    {
        let mut stmt = tx.prepare_cached(sql)?;
        let mut rows = stmt.query(params_from_iter(args))?;
        while let Some(row) = rows.next()? {
            let tenant: Option<String> = row.get(0)?;
            let level: u8 = row.get(1)?;
            let b: i64 = row.get(2)?;
            usage.add(tenant.as_deref(), level, b);
            lines += 1;
            bytes += b as u64;
        }
    }
    usage.apply(tx, -1)?;
    Ok((lines, bytes))
}

/// Removes the least severe, oldest lines (of `tenant`, or of everyone)
/// until their total is at most `max_bytes` or `left` lines are gone.
/// Returns the budget left.
fn shrink(
    tx: &Transaction<'_>,
    tenant: Option<&str>,
    max_bytes: u64,
    mut left: usize,
    removed: &mut Removed,
) -> Result<usize, rusqlite::Error> {
    let total: i64 = match tenant {
        Some(t) => tx.query_row(
            "SELECT COALESCE(SUM(bytes), 0) FROM usage WHERE tenant = ?1",
            [t],
            |r| r.get(0),
        )?,
        None => tx.query_row("SELECT COALESCE(SUM(bytes), 0) FROM usage", [], |r| {
            r.get(0)
        })?,
    };
    let mut excess = total - max_bytes as i64;
    let scope = if tenant.is_some() {
        " AND tenant = ?3"
    } else {
        ""
    };
    for level in Level::ALL {
        while excess > 0 && left > 0 {
            // The oldest lines of this level, just enough of them.
            let mut args = vec![
                SqlValue::Integer(i64::from(level.rank())),
                SqlValue::Integer(left.min(1000) as i64),
            ];
            if let Some(t) = tenant {
                args.push(SqlValue::Text(t.to_string()));
            }
            let candidates: Vec<(i64, i64)> = {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT id, bytes FROM lines WHERE level = ?1{scope} ORDER BY id LIMIT ?2"
                ))?;
                let rows = stmt.query_map(params_from_iter(args.clone()), |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
                rows.collect::<Result<_, _>>()?
            };
            let Some(cut) = cut_point(&candidates, excess) else {
                break;
            };
            args[1] = SqlValue::Integer(cut);
            let (lines, bytes) = delete(
                tx,
                &format!(
                    "DELETE FROM lines WHERE level = ?1 AND id <= ?2{scope}
                     RETURNING tenant, level, bytes"
                ),
                args,
            )?;
            removed.by_size[level.rank() as usize] += lines;
            removed.bytes += bytes;
            excess -= bytes as i64;
            left = left.saturating_sub(lines as usize);
        }
    }
    Ok(left)
}

/// The id up to which `candidates` (oldest first, with their bytes) must go
/// to free `excess` bytes; all of them if that is not enough.
fn cut_point(candidates: &[(i64, i64)], excess: i64) -> Option<i64> {
    let mut freed = 0;
    for (id, bytes) in candidates {
        freed += bytes;
        if freed >= excess {
            return Some(*id);
        }
    }
    candidates.last().map(|(id, _)| *id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TenantAges, TenantRetention};
    use crate::store::tests::{incoming, index, line};
    use crate::store::{insert_batch, WriterState};

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn messages(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT message FROM lines ORDER BY id")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    fn usage_bytes(conn: &Connection) -> i64 {
        conn.query_row("SELECT SUM(bytes) FROM usage", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn age_limits_apply_per_level_and_tenant_overrides_win() {
        let (_dir, mut conn) = index();
        let tenant = |mut l: clawfleet_shared::logs::LogLine, t: &str| {
            l.tenant = Some(t.into());
            l
        };
        let batch: Vec<_> = [
            line(Level::Debug, "old debug", 2 * DAY),
            line(Level::Debug, "new debug", HOUR),
            tenant(line(Level::Info, "old info acme", 20 * DAY), "acme"),
            tenant(line(Level::Info, "old info vip", 20 * DAY), "vip"),
            tenant(line(Level::Info, "ancient info vip", 70 * DAY), "vip"),
            line(Level::Error, "old error", 20 * DAY),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, l)| incoming(i as u64 + 1, l))
        .collect();
        insert_batch(&mut conn, &mut WriterState::default(), &batch).unwrap();
        let mut config = Retention::default();
        config.tenants.insert(
            "vip".into(),
            TenantRetention {
                max_age: TenantAges {
                    info: Some(60 * DAY),
                    ..Default::default()
                },
                max_bytes: None,
            },
        );
        let removed = enforce(
            &mut conn,
            &Policy::new(&config),
            clawfleet_shared::timefmt::now(),
            10_000,
        )
        .unwrap();
        assert_eq!(removed.by_age[Level::Debug.rank() as usize], 1);
        assert_eq!(removed.by_age[Level::Info.rank() as usize], 2);
        assert_eq!(removed.total(), 3);
        assert!(!removed.more);
        let mut kept = messages(&conn);
        kept.sort();
        assert_eq!(kept, ["new debug", "old error", "old info vip"]);
        let bytes: i64 = batch
            .iter()
            .filter(|i| kept.contains(&i.line.as_ref().unwrap().message))
            .map(|i| i.bytes as i64)
            .sum();
        assert_eq!(usage_bytes(&conn), bytes, "usage follows removals");
    }

    #[test]
    fn size_limits_remove_the_least_severe_oldest_lines_just_enough() {
        let (_dir, mut conn) = index();
        let levels = [
            Level::Error,
            Level::Debug,
            Level::Info,
            Level::Debug,
            Level::Info,
        ];
        let batch: Vec<_> = levels
            .iter()
            .enumerate()
            .map(|(i, level)| {
                let ago = Duration::from_secs(100 - i as u64);
                let mut item = incoming(i as u64 + 1, line(*level, &format!("line {i}"), ago));
                item.bytes = 100;
                item
            })
            .collect();
        insert_batch(&mut conn, &mut WriterState::default(), &batch).unwrap();
        let size = 100;
        // Room for three lines and a half: two lines must go, both debug.
        let config = Retention {
            max_bytes: size * 3 + size / 2,
            ..Retention::default()
        };
        let removed = enforce(
            &mut conn,
            &Policy::new(&config),
            clawfleet_shared::timefmt::now(),
            10_000,
        )
        .unwrap();
        assert_eq!(removed.by_size[Level::Debug.rank() as usize], 2);
        assert_eq!(removed.total(), 2);
        assert_eq!(messages(&conn), ["line 0", "line 2", "line 4"]);
        // One more line's worth less: the oldest info line goes next.
        let config = Retention {
            max_bytes: size * 2,
            ..Retention::default()
        };
        enforce(
            &mut conn,
            &Policy::new(&config),
            clawfleet_shared::timefmt::now(),
            10_000,
        )
        .unwrap();
        assert_eq!(messages(&conn), ["line 0", "line 4"]);
    }

    #[test]
    fn a_pass_stops_at_its_budget_and_says_there_is_more() {
        let (_dir, mut conn) = index();
        let batch: Vec<_> = (0..10)
            .map(|i| incoming(i + 1, line(Level::Debug, "old", 2 * DAY)))
            .collect();
        insert_batch(&mut conn, &mut WriterState::default(), &batch).unwrap();
        let policy = Policy::new(&Retention::default());
        let now = clawfleet_shared::timefmt::now();
        let first = enforce(&mut conn, &policy, now, 4).unwrap();
        assert_eq!((first.total(), first.more), (4, true));
        while enforce(&mut conn, &policy, now, 4).unwrap().more {}
        assert!(messages(&conn).is_empty());
        assert_eq!(
            store::get_counter(&conn, &counter::removed_by_age(Level::Debug)).unwrap(),
            10
        );
    }
}

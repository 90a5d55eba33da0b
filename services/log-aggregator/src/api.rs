//! The request/reply API: `clawfleet.api.logs.search`,
//! `clawfleet.api.logs.stats` and `clawfleet.api.analytics.*`, served in the queue group
//! `clawfleet-log-aggregator`. Each request runs on a read connection from
//! the pool, off the async runtime.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::Message;
use bytes::Bytes;
use clawfleet_shared::analytics::{
    BaselinesRequest, BelowAverageRequest, CorrelationsRequest, SummaryRequest,
};
use clawfleet_shared::api::reply_budget;
use clawfleet_shared::error::ErrorReply;
use clawfleet_shared::logs::{Level, LevelUsage, LogSearchRequest, LogStatsReply};
use clawfleet_shared::strict;
use clawfleet_shared::{subjects, ErrorBody, ErrorCode};
use deadpool_sqlite::Pool;
use futures::StreamExt;
use rusqlite::Connection;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::analytics::reports::{self, Pricing, ReportError};
use crate::search::{self, Query};
use crate::store::{self, counter, time_of};

/// Requests handled at once; more wait in the subscription.
const MAX_CONCURRENT_REQUESTS: usize = 256;

/// What the handlers need.
pub struct Api {
    pub(crate) client: async_nats::Client,
    pub(crate) js: async_nats::jetstream::Context,
    pub(crate) readers: Pool,
    pub(crate) search_timeout: Duration,
    /// Read connections to the attempts database.
    pub(crate) analytics: Pool,
    /// The price table's currency, and whether it has any price.
    pub(crate) pricing: Pricing,
}

type Reply = Result<Bytes, ErrorBody>;

fn ok<T: Serialize>(body: &T) -> Reply {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()))
}

fn unavailable(e: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(ErrorCode::Unavailable, format!("log index: {e}"))
}

impl Api {
    /// Subscribes and serves until `cancel`; answers what it took before
    /// returning. `ready` gets the outcome of subscribing.
    pub async fn serve(
        self: Arc<Self>,
        cancel: CancellationToken,
        ready: tokio::sync::oneshot::Sender<Result<(), async_nats::SubscribeError>>,
    ) {
        let group = subjects::LOG_AGGREGATOR_QUEUE_GROUP.to_string();
        let mut subs = Vec::new();
        for subject in subjects::LOG_AGGREGATOR_API {
            match self.client.queue_subscribe(subject, group.clone()).await {
                Ok(sub) => subs.push(sub),
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            }
        }
        // A flush only empties our socket buffer; the answer to a request on
        // the same connection comes after the server has handled everything
        // sent before it, subscriptions included.
        if let Err(e) = self.js.query_account().await {
            tracing::warn!(error = %e, "could not confirm the API subscriptions");
        }
        let _ = ready.send(Ok(()));
        let mut requests = futures::stream::select_all(subs);
        let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
        let tracker = TaskTracker::new();
        loop {
            let msg = tokio::select! {
                m = requests.next() => match m { Some(m) => m, None => break },
                _ = cancel.cancelled() => break,
            };
            let Ok(permit) = limit.clone().acquire_owned().await else {
                break;
            };
            let this = self.clone();
            tracker.spawn(async move {
                this.handle(msg).await;
                drop(permit);
            });
        }
        drop(requests);
        tracker.close();
        tracker.wait().await;
    }

    async fn handle(&self, msg: Message) {
        let Some(reply_to) = msg.reply.clone() else {
            return;
        };
        let reply = match msg.subject.as_str() {
            subjects::API_LOGS_SEARCH => self.search(&msg.payload).await,
            subjects::API_LOGS_STATS => self.stats().await,
            subjects::API_ANALYTICS_SUMMARY => {
                self.analytics_query(&msg.payload, |c, r: SummaryRequest, cur| {
                    reports::summary(c, &r.window, &r.by, &cur, false)
                })
                .await
            }
            subjects::API_ANALYTICS_COST => {
                self.analytics_query(&msg.payload, |c, r: SummaryRequest, cur| {
                    reports::summary(c, &r.window, &r.by, &cur, true)
                })
                .await
            }
            subjects::API_ANALYTICS_BELOW_AVERAGE => {
                self.analytics_query(&msg.payload, |c, r: BelowAverageRequest, _| {
                    reports::below_average(c, &r)
                })
                .await
            }
            subjects::API_ANALYTICS_BASELINES => {
                self.analytics_query(&msg.payload, |c, r: BaselinesRequest, _| {
                    reports::baselines(c, &r)
                })
                .await
            }
            subjects::API_ANALYTICS_CORRELATIONS => {
                self.analytics_query(&msg.payload, |c, r: CorrelationsRequest, _| {
                    reports::correlations(c, &r)
                })
                .await
            }
            other => Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("unknown API subject {other}"),
            )),
        };
        let body = reply.unwrap_or_else(|error| {
            serde_json::to_vec(&ErrorReply { error })
                .expect("error reply encodes")
                .into()
        });
        if let Err(e) = self.client.publish(reply_to, body).await {
            tracing::warn!(error = %e, "could not send API reply");
        }
    }

    async fn read<T, F>(&self, f: F) -> Result<T, ErrorBody>
    where
        F: FnOnce(&mut Connection) -> Result<T, ErrorBody> + Send + 'static,
        T: Send + 'static,
    {
        let conn = self.readers.get().await.map_err(unavailable)?;
        conn.interact(f).await.map_err(unavailable)?
    }

    async fn search(&self, payload: &[u8]) -> Reply {
        let req: LogSearchRequest = strict::object_or_empty(payload).map_err(|e| {
            ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("bad logs.search request: {e}"),
            )
        })?;
        let query = Query::parse(req)?;
        let timeout = self.search_timeout;
        let budget = reply_budget(self.client.server_info().max_payload);
        let reply = self
            .read(move |conn| search::run(conn, &query, timeout, budget).map_err(ErrorBody::from))
            .await?;
        ok(&reply)
    }

    /// Decodes an analytics request (an empty body takes every default)
    /// and runs `f` on a read connection to the attempts database.
    async fn analytics_query<R, T, F>(&self, payload: &[u8], f: F) -> Reply
    where
        R: serde::de::DeserializeOwned + Send + 'static,
        T: Serialize + Send + 'static,
        F: FnOnce(&Connection, R, Pricing) -> Result<T, ReportError> + Send + 'static,
    {
        let body: &[u8] = if payload.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            payload
        };
        let req: R = strict::object(body).map_err(|e| {
            ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("bad analytics request: {e}"),
            )
        })?;
        let pricing = self.pricing.clone();
        let down = |e: &dyn std::fmt::Display| {
            ErrorBody::new(ErrorCode::Unavailable, format!("attempts database: {e}"))
        };
        let conn = self.analytics.get().await.map_err(|e| down(&e))?;
        let reply = conn
            .interact(move |c| {
                f(c, req, pricing).map_err(|e| match e {
                    ReportError::Invalid(m) => ErrorBody::new(ErrorCode::InvalidRequest, m),
                    e @ ReportError::Sqlite(_) => {
                        ErrorBody::new(ErrorCode::Unavailable, e.to_string())
                    }
                })
            })
            .await
            .map_err(|e| down(&e))??;
        let mut value = serde_json::to_value(&reply)
            .map_err(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()))?;
        fit(
            &mut value,
            reply_budget(self.client.server_info().max_payload),
        );
        ok(&value)
    }

    async fn stats(&self) -> Reply {
        let stats = self
            .read(|conn| read_stats(conn).map_err(unavailable))
            .await?;
        ok(&stats)
    }
}

/// Cuts a report to `budget` bytes of JSON: while it is larger, the last
/// row of its longest list goes, and the report says `truncated`. Rows come
/// most significant first, so what is left is the head of the report.
fn fit(report: &mut serde_json::Value, budget: usize) {
    let size = |v: &serde_json::Value| serde_json::to_vec(v).map_or(usize::MAX, |b| b.len());
    let mut excess = size(report).saturating_sub(budget);
    if excess == 0 {
        return;
    }
    let Some(obj) = report.as_object_mut() else {
        return;
    };
    while excess > 0 {
        let longest = obj
            .iter_mut()
            .filter_map(|(_, v)| v.as_array_mut())
            .max_by_key(|a| a.len());
        let Some(rows) = longest.filter(|a| !a.is_empty()) else {
            break;
        };
        let row = rows.pop().expect("not empty");
        excess = excess.saturating_sub(size(&row) + 1);
    }
    obj.insert("truncated".into(), serde_json::Value::Bool(true));
}

/// Reads the stats reply from the index.
pub fn read_stats(conn: &Connection) -> Result<LogStatsReply, rusqlite::Error> {
    let mut stats = LogStatsReply::default();
    {
        let mut stmt =
            conn.prepare_cached("SELECT tenant, level, lines, bytes FROM usage WHERE lines > 0")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let tenant: String = row.get(0)?;
            let level: u8 = row.get(1)?;
            let lines = row.get::<_, i64>(2)? as u64;
            let bytes = row.get::<_, i64>(3)? as u64;
            stats.lines += lines;
            stats.bytes += bytes;
            if let Some(level) = Level::from_rank(level) {
                let e = stats.levels.entry(level).or_default();
                e.lines += lines;
                e.bytes += bytes;
            }
            let key = if tenant.is_empty() {
                subjects::ANY.to_string()
            } else {
                tenant
            };
            let e: &mut LevelUsage = stats.tenants.entry(key).or_default();
            e.lines += lines;
            e.bytes += bytes;
        }
    }
    let (oldest, newest): (Option<i64>, Option<i64>) =
        conn.query_row("SELECT MIN(id), MAX(id) FROM lines", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    stats.oldest = oldest.map(time_of);
    stats.newest = newest.map(time_of);
    let count = |name: &str| store::get_counter(conn, name).map(|v| v.max(0) as u64);
    stats.ingested = count(counter::INGESTED)?;
    stats.unreadable = count(counter::UNREADABLE)?;
    stats.retention_runs = count(counter::RETENTION_RUNS)?;
    let last = store::get_counter(conn, counter::LAST_RETENTION)?;
    stats.last_retention = (last > 0).then(|| time_of(last));
    let mut by_age = BTreeMap::new();
    let mut by_size = BTreeMap::new();
    for level in Level::ALL {
        let age = count(&counter::removed_by_age(level))?;
        if age > 0 {
            by_age.insert(level, age);
        }
        let size = count(&counter::removed_by_size(level))?;
        if size > 0 {
            by_size.insert(level, size);
        }
    }
    stats.removed_by_age = by_age;
    stats.removed_by_size = by_size;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_too_large_for_its_reply_keeps_its_first_rows_and_says_so() {
        let rows: Vec<serde_json::Value> = (0..10_000)
            .map(|i| serde_json::json!({"key": format!("label-value-{i}"), "attempts": i}))
            .collect();
        let mut report = serde_json::json!({"since": "x", "groups": rows, "total": {}});
        fit(&mut report, 64 * 1024);
        assert!(serde_json::to_vec(&report).unwrap().len() <= 64 * 1024);
        assert_eq!(report["truncated"], true);
        assert_eq!(report["groups"][0]["key"], "label-value-0");
        let mut small = serde_json::json!({"groups": [1, 2]});
        fit(&mut small, 64 * 1024);
        assert!(small.get("truncated").is_none());
    }
}

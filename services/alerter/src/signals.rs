//! Reading each rule's signal from what the fleet already records.
//!
//! Attempts, latency and cost come from the log aggregator's analytics
//! history (`clawfleet.api.analytics.*`), queues from the dispatcher
//! (`clawfleet.api.queues.list`, JetStream consumer state underneath), agents
//! from the health monitor (`clawfleet.api.fleet.state`), dead letters from
//! the dead-letter stream's per-subject counts, and NATS itself from a
//! JetStream request of the alerter's own. Nothing is estimated: a signal
//! that cannot be read this cycle is an error for its rule (shown by
//! `alerts rules`), and its alerts keep their state until it can.
//!
//! One [`Cycle`] reads each shared source once per evaluation, however many
//! rules use it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use async_nats::jetstream;
use clawfleet_shared::analytics::{
    BaselinesReply, BaselinesRequest, GroupBy, GroupStats, SummaryReply, SummaryRequest, Window,
};
use clawfleet_shared::api::{ListRequest, QueueDepth, QueuesReply};
use clawfleet_shared::health::FleetState;
use clawfleet_shared::logs::{Level, LogSearchReply, LogSearchRequest};
use clawfleet_shared::timefmt::Timestamp;
use clawfleet_shared::{subjects, ErrorBody};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::{Grouping, Signal};
use crate::engine::labels::Labels;

/// Most pages followed in one paged listing (agents, queues).
const MAX_PAGES: usize = 200;

/// Why a signal could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SignalError {
    /// The service that answers for it did not, or answered an error.
    #[error("{0}")]
    Api(ErrorBody),
    /// JetStream did not answer.
    #[error("JetStream: {0}")]
    JetStream(String),
}

/// Where signals come from.
pub struct Sources {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) timeout: Duration,
    /// Dead-letter counts per subject at past evaluations, oldest first.
    pub(crate) dlq_history: VecDeque<(Timestamp, HashMap<String, u64>)>,
}

/// What one evaluation has read so far.
#[derive(Default)]
pub struct Cycle {
    fleet: Option<Result<FleetState, SignalError>>,
    queues: Option<Result<Vec<QueueDepth>, SignalError>>,
    summaries: HashMap<String, Result<SummaryReply, SignalError>>,
    dlq: Option<Result<HashMap<String, u64>, SignalError>>,
    nats_ok: Option<bool>,
}

impl Sources {
    /// Every group's value of `signal` now.
    pub async fn read(
        &mut self,
        signal: &Signal,
        cycle: &mut Cycle,
        now: Timestamp,
    ) -> Result<Vec<(Labels, f64)>, SignalError> {
        // Every source but the connection itself is out of reach: say so at
        // once rather than wait out each request.
        if !matches!(signal, Signal::NatsUnreachable) && !crate::store::connected(&self.client) {
            return Err(SignalError::JetStream("not connected to NATS".to_string()));
        }
        match signal {
            Signal::ErrorRate {
                window,
                by,
                min_attempts,
            } => {
                let reply = self.summary(cycle, *window, *by, false, now).await?;
                Ok(groups(&reply, *by)
                    .filter_map(|(labels, g)| {
                        let judged = g.succeeded + g.failed;
                        (judged >= *min_attempts && judged > 0)
                            .then(|| (labels, g.failed as f64 / judged as f64))
                    })
                    .collect())
            }
            Signal::LatencyP95 {
                window,
                by,
                min_attempts,
            } => {
                let reply = self.summary(cycle, *window, *by, false, now).await?;
                Ok(groups(&reply, *by)
                    .filter_map(|(labels, g)| {
                        let p95 = g.p95_ms?;
                        (g.succeeded + g.failed >= *min_attempts)
                            .then(|| (labels, p95 as f64 / 1000.0))
                    })
                    .collect())
            }
            Signal::Cost { window, by } => {
                let reply = self.summary(cycle, *window, *by, true, now).await?;
                Ok(groups(&reply, *by).map(|(l, g)| (l, g.cost)).collect())
            }
            Signal::QueueDepth => Ok(self
                .queues(cycle)
                .await?
                .iter()
                .map(|q| (queue_labels(q), (q.waiting + q.delayed) as f64))
                .collect()),
            Signal::OldestQueuedAge => Ok(self
                .queues(cycle)
                .await?
                .iter()
                .filter_map(|q| {
                    let at = q.oldest_waiting_at?;
                    Some((queue_labels(q), (now - at).as_seconds_f64().max(0.0)))
                })
                .collect()),
            Signal::HealthyAgents { by, expect } => {
                let fleet = self.fleet(cycle).await?;
                let mut counts: BTreeMap<String, u64> =
                    expect.iter().map(|g| (g.clone(), 0)).collect();
                if matches!(by, Grouping::Fleet) {
                    counts.entry(String::new()).or_default();
                }
                for agent in &fleet.agents {
                    let Some(info) = &agent.info else { continue };
                    let keys: Vec<String> = match by {
                        Grouping::Region => {
                            vec![info
                                .region
                                .clone()
                                .unwrap_or_else(|| subjects::ANY.to_string())]
                        }
                        Grouping::Profile => info.profiles.clone(),
                        _ => vec![String::new()],
                    };
                    let healthy = agent.health.takes_work();
                    for key in keys {
                        *counts.entry(key).or_default() += u64::from(healthy);
                    }
                }
                Ok(counts
                    .into_iter()
                    .map(|(key, n)| (group_labels(*by, key), n as f64))
                    .collect())
            }
            Signal::QuarantinedAgent => Ok(self
                .fleet(cycle)
                .await?
                .agents
                .iter()
                .filter(|a| a.health.quarantine.is_some())
                .map(|a| (agent_labels(&a.health.agent_id), 1.0))
                .collect()),
            Signal::EscalatedAgent => Ok(self
                .fleet(cycle)
                .await?
                .agents
                .iter()
                .filter(|a| a.health.escalated)
                .map(|a| (agent_labels(&a.health.agent_id), 1.0))
                .collect()),
            Signal::DeadLetters { window } => {
                let counts = self.dead_letters(cycle, now).await?;
                let since = now - *window;
                // The growth since the oldest count within the window (or
                // since the alerter started, when it started within it).
                let base = self
                    .dlq_history
                    .iter()
                    .find(|(at, _)| *at >= since)
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default();
                let started = self.dlq_history.front().is_some_and(|(at, _)| *at >= since);
                Ok(counts
                    .iter()
                    .filter_map(|(subject, n)| {
                        let before = base.get(subject).copied().unwrap_or(if started {
                            // A subject first seen since start: all of it is new.
                            0
                        } else {
                            *n
                        });
                        let grown = n.saturating_sub(before);
                        let mut parts = subject.split('.').skip(2);
                        let reason = parts.next()?.to_string();
                        let tenant = parts.next()?.to_string();
                        (grown > 0).then(|| {
                            (
                                Labels::from([
                                    ("reason".to_string(), reason),
                                    ("tenant".to_string(), tenant),
                                ]),
                                grown as f64,
                            )
                        })
                    })
                    .collect())
            }
            Signal::LatencyVsBaseline {
                recent,
                baseline_days,
                min_attempts,
            } => {
                let request = BaselinesRequest {
                    tenant: None,
                    recent: *recent,
                    baseline_days: *baseline_days,
                    until: Some(now),
                };
                let reply: BaselinesReply = self
                    .request(subjects::API_ANALYTICS_BASELINES, &request)
                    .await?;
                Ok(reply
                    .capabilities
                    .iter()
                    .filter(|b| b.recent.succeeded + b.recent.failed >= *min_attempts)
                    .filter_map(|b| {
                        Some((
                            Labels::from([("capability".to_string(), b.capability.clone())]),
                            b.p95_ratio?,
                        ))
                    })
                    .collect())
            }
            Signal::LogLinesDropped { window } => {
                let mut dropped: BTreeMap<String, f64> = BTreeMap::new();
                let mut cursor = None;
                for _ in 0..MAX_PAGES {
                    let request = LogSearchRequest {
                        text: Some("\"log shipping dropped\"".to_string()),
                        level: Some(Level::Warn),
                        since: Some(now - *window),
                        until: Some(now),
                        limit: Some(1000),
                        cursor: cursor.take(),
                        ..Default::default()
                    };
                    let page: LogSearchReply =
                        self.request(subjects::API_LOGS_SEARCH, &request).await?;
                    for stored in &page.lines {
                        let n = stored
                            .line
                            .fields
                            .get("dropped_since_last_report")
                            .and_then(|v| v.as_f64())
                            .unwrap_or(0.0);
                        *dropped.entry(stored.line.service.clone()).or_default() += n;
                    }
                    match page.next_cursor {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                }
                Ok(dropped
                    .into_iter()
                    .map(|(service, n)| (Labels::from([("service".to_string(), service)]), n))
                    .collect())
            }
            Signal::LogIndexLag { consumer } => {
                let jet = |e: &dyn std::fmt::Display| SignalError::JetStream(e.to_string());
                let stream = self
                    .js
                    .get_stream_no_info(subjects::STREAM_LOGS)
                    .await
                    .map_err(|e| jet(&e))?;
                let info = tokio::time::timeout(self.timeout, stream.consumer_info(consumer))
                    .await
                    .map_err(|_| SignalError::JetStream("the log consumer took too long".into()))?
                    .map_err(|e| {
                        SignalError::JetStream(format!("log aggregator consumer {consumer:?}: {e}"))
                    })?;
                let behind = info.num_pending + info.num_ack_pending as u64;
                let lag = if behind == 0 {
                    0.0
                } else {
                    // The first line past the acknowledged floor is the oldest
                    // not indexed (or the next one, if retention took it).
                    let next = info.ack_floor.stream_sequence + 1;
                    match tokio::time::timeout(
                        self.timeout,
                        stream.direct_get_next_for_subject(subjects::LOGS_ALL, Some(next)),
                    )
                    .await
                    {
                        Ok(Ok(m)) => (now - m.time).as_seconds_f64().max(0.0),
                        Ok(Err(e)) => return Err(jet(&e)),
                        Err(_) => {
                            return Err(SignalError::JetStream(
                                "the log stream took too long".into(),
                            ))
                        }
                    }
                };
                Ok(vec![(Labels::new(), lag)])
            }
            Signal::NatsUnreachable => {
                let ok = match cycle.nats_ok {
                    Some(ok) => ok,
                    None => {
                        let ok = crate::store::connected(&self.client)
                            && tokio::time::timeout(self.timeout, self.js.query_account())
                                .await
                                .is_ok_and(|r| r.is_ok());
                        cycle.nats_ok = Some(ok);
                        ok
                    }
                };
                Ok(vec![(Labels::new(), if ok { 0.0 } else { 1.0 })])
            }
        }
    }

    /// Records this cycle's dead-letter counts for later growth, keeping
    /// `keep` of history.
    pub fn end_cycle(&mut self, cycle: &Cycle, now: Timestamp, keep: Duration) {
        if let Some(Ok(counts)) = &cycle.dlq {
            self.dlq_history.push_back((now, counts.clone()));
        }
        let cutoff = now - keep;
        while self.dlq_history.front().is_some_and(|(at, _)| *at < cutoff)
            && self.dlq_history.len() > 1
        {
            self.dlq_history.pop_front();
        }
    }

    async fn summary(
        &self,
        cycle: &mut Cycle,
        window: Duration,
        by: Grouping,
        cost: bool,
        now: Timestamp,
    ) -> Result<SummaryReply, SignalError> {
        let key = format!("{cost}/{window:?}/{by:?}");
        if let Some(r) = cycle.summaries.get(&key) {
            return r.clone();
        }
        let request = SummaryRequest {
            window: Window {
                since: Some(now - window),
                until: Some(now),
                tenant: None,
            },
            by: analytics_grouping(by),
        };
        let subject = if cost {
            subjects::API_ANALYTICS_COST
        } else {
            subjects::API_ANALYTICS_SUMMARY
        };
        let r = self.request(subject, &request).await;
        cycle.summaries.insert(key, r.clone());
        r
    }

    /// What `tenant` spent from `since` to `now`, and the currency.
    pub async fn spend(
        &self,
        tenant: &str,
        since: Timestamp,
        now: Timestamp,
    ) -> Result<(f64, String), SignalError> {
        let request = SummaryRequest {
            window: Window {
                since: Some(since),
                until: Some(now),
                tenant: Some(tenant.to_string()),
            },
            by: GroupBy::Tenant,
        };
        let reply: SummaryReply = self.request(subjects::API_ANALYTICS_COST, &request).await?;
        Ok((reply.total.cost, reply.currency))
    }

    async fn queues(&self, cycle: &mut Cycle) -> Result<Vec<QueueDepth>, SignalError> {
        if let Some(r) = &cycle.queues {
            return r.clone();
        }
        let mut all = Vec::new();
        let mut cursor = None;
        let mut r = Ok(());
        for _ in 0..MAX_PAGES {
            match self
                .request::<_, QueuesReply>(
                    subjects::API_QUEUES_LIST,
                    &ListRequest {
                        cursor: cursor.take(),
                    },
                )
                .await
            {
                Ok(page) => {
                    all.extend(page.queues);
                    match page.next_cursor {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                }
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
        }
        let r = r.map(|()| all);
        cycle.queues = Some(r.clone());
        r
    }

    async fn fleet(&self, cycle: &mut Cycle) -> Result<FleetState, SignalError> {
        if let Some(r) = &cycle.fleet {
            return r.clone();
        }
        let mut state: Option<FleetState> = None;
        let mut cursor = None;
        let mut r = Ok(());
        for _ in 0..MAX_PAGES {
            match self
                .request::<_, FleetState>(
                    subjects::API_FLEET_STATE,
                    &ListRequest {
                        cursor: cursor.take(),
                    },
                )
                .await
            {
                Ok(page) => {
                    let next = page.next_cursor.clone();
                    match &mut state {
                        Some(s) => s.agents.extend(page.agents),
                        None => state = Some(page),
                    }
                    match next {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                }
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
        }
        let r = r.map(|()| state.expect("a first page was read"));
        cycle.fleet = Some(r.clone());
        r
    }

    async fn dead_letters(
        &self,
        cycle: &mut Cycle,
        _now: Timestamp,
    ) -> Result<HashMap<String, u64>, SignalError> {
        if let Some(r) = &cycle.dlq {
            return r.clone();
        }
        let r = async {
            let stream = self
                .js
                .get_stream_no_info(subjects::STREAM_DLQ)
                .await
                .map_err(|e| SignalError::JetStream(e.to_string()))?;
            let info = stream
                .info_with_subjects(subjects::DLQ_ALL)
                .await
                .map_err(|e| SignalError::JetStream(e.to_string()))?;
            use futures::{StreamExt, TryStreamExt};
            let counts: HashMap<String, u64> = tokio::time::timeout(
                self.timeout,
                info.take(10_000).try_collect::<HashMap<String, usize>>(),
            )
            .await
            .map_err(|_| SignalError::JetStream("dead-letter subjects took too long".into()))?
            .map_err(|e| SignalError::JetStream(e.to_string()))?
            .into_iter()
            .map(|(s, n)| (s, n as u64))
            .collect();
            Ok(counts)
        }
        .await;
        cycle.dlq = Some(r.clone());
        r
    }

    async fn request<Q: Serialize, R: DeserializeOwned>(
        &self,
        subject: &'static str,
        body: &Q,
    ) -> Result<R, SignalError> {
        if !crate::store::connected(&self.client) {
            return Err(SignalError::Api(ErrorBody::new(
                clawfleet_shared::ErrorCode::Unavailable,
                format!("{subject}: not connected to NATS"),
            )));
        }
        let body = serde_json::to_vec(body).expect("requests encode");
        clawfleet_shared::api::request(&self.client, subject, body.into(), self.timeout)
            .await
            .map_err(SignalError::Api)
    }
}

fn analytics_grouping(by: Grouping) -> GroupBy {
    match by {
        Grouping::Tenant => GroupBy::Tenant,
        Grouping::Capability => GroupBy::Capability,
        Grouping::Model => GroupBy::Model,
        Grouping::Region => GroupBy::Region,
        // The fleet reads the total, whatever the grouping.
        Grouping::Agent | Grouping::Fleet | Grouping::Profile => GroupBy::Agent,
    }
}

/// The groups of a summary as labels and figures: the total for the fleet.
fn groups(
    reply: &SummaryReply,
    by: Grouping,
) -> Box<dyn Iterator<Item = (Labels, &GroupStats)> + '_> {
    match by.label() {
        None => Box::new(std::iter::once((Labels::new(), &reply.total))),
        Some(_) => Box::new(
            reply
                .groups
                .iter()
                .map(move |g| (group_labels(by, g.key.clone()), g)),
        ),
    }
}

fn group_labels(by: Grouping, key: String) -> Labels {
    match by.label() {
        Some(label) => Labels::from([(label.to_string(), key)]),
        None => Labels::new(),
    }
}

fn agent_labels(agent: &str) -> Labels {
    Labels::from([("agent".to_string(), agent.to_string())])
}

fn queue_labels(q: &QueueDepth) -> Labels {
    Labels::from([
        ("queue".to_string(), q.subject.clone()),
        ("tenant".to_string(), q.tenant.clone()),
        ("priority".to_string(), q.priority.as_str().to_string()),
        (
            "region".to_string(),
            q.region
                .clone()
                .unwrap_or_else(|| subjects::ANY.to_string()),
        ),
        ("capability".to_string(), subjects::capkey(&q.requires)),
    ])
}

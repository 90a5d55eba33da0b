//! What a phase cost the server, from the server's own counters.
//!
//! Two figures per task, so "a task costs N messages" is measured rather
//! than counted from the code:
//! - **stored messages**: the growth of every stream's last sequence
//!   (queues, records, events, results, logs, key-value buckets alike),
//!   read with JetStream's stream list, with the streams that grew most;
//! - **client messages**: the growth of the server's `in_msgs` + `out_msgs`
//!   from its monitoring endpoint (`/varz`), every message a client sent
//!   or was sent, replies and acks included. Only available on a server
//!   with monitoring on (the benchmark's own server has it).
//!
//! The window includes whatever else runs meanwhile (heartbeats, pings),
//! which is part of what the fleet costs.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use serde::Serialize;

/// Streams shown by name in the breakdown, most first.
const TOP_STREAMS: usize = 8;

/// The server's counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Last sequence of each stream, by name.
    streams: BTreeMap<String, u64>,
    /// `in_msgs + out_msgs`, if the monitoring endpoint answered.
    client_msgs: Option<u64>,
}

/// How to read the counters of one server.
#[derive(Debug, Clone)]
pub struct Counters {
    js: async_nats::jetstream::Context,
    /// `http://host:port/varz`, when the server has monitoring on.
    varz: Option<String>,
    http: reqwest::Client,
}

/// Messages per task over one phase.
#[derive(Debug, Clone, Serialize)]
pub struct CostReport {
    /// Tasks (or jobs) the window covered.
    pub tasks: usize,
    /// Messages stored in any stream, per task.
    pub stored_per_task: f64,
    /// Client ↔ server messages, per task (absent without monitoring).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_per_task: Option<f64>,
    /// The streams that grew most, with their messages per task.
    pub by_stream: Vec<(String, f64)>,
}

impl Counters {
    /// Counters of the server `client` is connected to; `monitoring` is its
    /// monitoring endpoint's base URL, if known.
    pub fn new(client: async_nats::Client, monitoring: Option<String>) -> Counters {
        Counters {
            js: async_nats::jetstream::new(client),
            varz: monitoring.map(|m| format!("{}/varz", m.trim_end_matches('/'))),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client builds"),
        }
    }

    /// Reads the counters now.
    pub async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let streams = self
            .js
            .streams()
            .map_ok(|info| (info.config.name.clone(), info.state.last_sequence))
            .try_collect()
            .await
            .context("while listing the streams")?;
        let client_msgs = match &self.varz {
            Some(url) => Some(self.client_msgs(url).await?),
            None => None,
        };
        Ok(Snapshot {
            streams,
            client_msgs,
        })
    }

    async fn client_msgs(&self, url: &str) -> anyhow::Result<u64> {
        let body = self
            .http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("while reading {url}"))?
            .bytes()
            .await
            .with_context(|| format!("while reading {url}"))?;
        let varz: serde_json::Value =
            serde_json::from_slice(&body).with_context(|| format!("{url} answered no JSON"))?;
        let field = |name: &str| varz.get(name).and_then(serde_json::Value::as_u64);
        match (field("in_msgs"), field("out_msgs")) {
            (Some(i), Some(o)) => Ok(i + o),
            _ => anyhow::bail!("{url} has no in_msgs/out_msgs"),
        }
    }
}

impl Snapshot {
    /// What happened between `self` and `later`, per task of `tasks`.
    pub fn cost_until(&self, later: &Snapshot, tasks: usize) -> CostReport {
        let per = |n: u64| n as f64 / tasks.max(1) as f64;
        let mut grown: Vec<(String, u64)> = later
            .streams
            .iter()
            .map(|(name, &seq)| {
                let before = self.streams.get(name).copied().unwrap_or(0);
                (name.clone(), seq.saturating_sub(before))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        let stored: u64 = grown.iter().map(|(_, n)| n).sum();
        // Streams that grew by less than one message per hundred tasks are
        // background (heartbeats), left out of the breakdown.
        grown.retain(|(_, n)| *n * 100 >= tasks as u64);
        grown.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        grown.truncate(TOP_STREAMS);
        CostReport {
            tasks,
            stored_per_task: per(stored),
            client_per_task: match (self.client_msgs, later.client_msgs) {
                (Some(a), Some(b)) => Some(per(b.saturating_sub(a))),
                _ => None,
            },
            by_stream: grown.into_iter().map(|(name, n)| (name, per(n))).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(streams: &[(&str, u64)], client: Option<u64>) -> Snapshot {
        Snapshot {
            streams: streams.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
            client_msgs: client,
        }
    }

    #[test]
    fn cost_is_the_growth_per_task_with_the_biggest_streams_first() {
        let before = snapshot(&[("Q", 10), ("R", 5)], Some(100));
        let after = snapshot(&[("Q", 30), ("R", 45), ("NEW", 10)], Some(400));
        let cost = before.cost_until(&after, 10);
        assert_eq!(cost.stored_per_task, 7.0);
        assert_eq!(cost.client_per_task, Some(30.0));
        assert_eq!(
            cost.by_stream,
            vec![("R".into(), 4.0), ("Q".into(), 2.0), ("NEW".into(), 1.0)]
        );
    }

    #[test]
    fn without_monitoring_there_is_no_client_figure() {
        let cost = snapshot(&[], None).cost_until(&snapshot(&[("Q", 3)], None), 3);
        assert_eq!(cost.client_per_task, None);
        assert_eq!(cost.stored_per_task, 1.0);
    }
}

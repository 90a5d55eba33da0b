//! The benchmark's findings, for people and for programs.

use serde::Serialize;

use super::counters::CostReport;
use super::e2e::{LatencyReport, ThroughputReport};
use super::failover::FailoverReport;
use super::raw::{JobsReport, RawReport};

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The server measured against.
    pub nats_url: String,
    /// Its version.
    pub nats_server_version: String,
    /// Whether the benchmark started that server itself.
    pub own_server: bool,
    /// In-process agents.
    pub agents: usize,
    /// Tasks each agent runs at once.
    pub concurrency: usize,
    /// Baseline (a): plain JetStream publish → pull → ack.
    pub raw: RawReport,
    /// Baseline: a minimal job system on plain JetStream.
    pub raw_jobs: JobsReport,
    /// (b): clawfleet end to end.
    pub clawfleet: ThroughputReport,
    /// clawfleet tasks/s over raw JetStream msg/s (b / a).
    pub ratio: f64,
    /// clawfleet tasks/s over raw jobs/s.
    pub ratio_to_raw_jobs: f64,
    /// Latency at a steady rate below the peak.
    pub latency: LatencyReport,
    /// The policy layer on, when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyReport>,
    /// Kill → running elsewhere, when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverReport>,
}

/// clawfleet with the policy layer on: 3 tenants, 4 profiles, 2 regions.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    /// Throughput.
    pub throughput: ThroughputReport,
    /// Latency at the plain path's paced rate.
    pub latency: LatencyReport,
    /// Policy throughput over plain throughput.
    pub ratio_to_plain: f64,
    /// The tenants' `max_running`, if they had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<u32>,
}

impl Report {
    /// The human-readable report.
    pub fn render(&self) -> String {
        let (raw, jobs, fleet, lat) = (&self.raw, &self.raw_jobs, &self.clawfleet, &self.latency);
        let server = if self.own_server {
            "started for this run"
        } else {
            "already running"
        };
        let mut out = format!(
            "clawfleet bench against nats-server {} at {} ({server})\n\n",
            self.nats_server_version, self.nats_url
        );
        out.push_str(&format!(
            "raw JetStream: {} messages of {} bytes, work-queue stream, 1 publisher, 1 pull consumer\n\
             \x20 publish, acks pipelined      {:>10} msg/s\n\
             \x20 publish → pull → ack         {:>10} msg/s   ({:.2} s)\n\n",
            count(raw.messages),
            raw.message_bytes,
            rate(raw.publish_per_sec),
            rate(raw.round_trip_per_sec),
            seconds(raw.elapsed_ms),
        ));
        out.push_str(&format!(
            "raw job round trip: {} jobs, {} workers × {} in flight, result stream, core collector\n\
             \x20 job → result                 {:>10} jobs/s  ({:.2} s)\n{}\n",
            count(jobs.jobs),
            jobs.workers,
            jobs.concurrency,
            rate(jobs.per_sec),
            seconds(jobs.elapsed_ms),
            cost(jobs.cost.as_ref(), "job"),
        ));
        out.push_str(&format!(
            "clawfleet end to end: {} tasks of {} bytes, 1 dispatcher, {} agents × {} slots\n\
             \x20 submit to intake             {:>10} tasks/s\n\
             \x20 submit → result              {:>10} tasks/s ({:.2} s; {} succeeded, {} failed)\n\
             \x20 vs raw JetStream             {:>10.2}\n\
             \x20 vs raw job round trip        {:>10.2}\n{}\n",
            count(fleet.tasks),
            fleet.task_bytes,
            self.agents,
            self.concurrency,
            rate(fleet.submit_per_sec),
            rate(fleet.per_sec),
            seconds(fleet.elapsed_ms),
            count(fleet.succeeded),
            count(fleet.failed),
            self.ratio,
            self.ratio_to_raw_jobs,
            cost(fleet.cost.as_ref(), "task"),
        ));
        out.push_str(&format!(
            "latency, submit → result: {} tasks paced at {} tasks/s (achieved {}, max pacing lag {:.1} ms)\n{}",
            count(lat.tasks),
            rate(lat.target_per_sec),
            rate(lat.submitted_per_sec),
            lat.max_pacing_lag_ms,
            percentiles(lat),
        ));
        if let Some(p) = &self.policy {
            let (t, l) = (&p.throughput, &p.latency);
            out.push_str(&format!(
                "\npolicy layer on: 3 tenants (weights 1-3, quotas{}), 4 profiles, 2 regions, {} agents\n\
                 \x20 submit → result              {:>10} tasks/s ({:.2} s; {} succeeded, {} failed)\n\
                 \x20 vs the plain path            {:>10.2}\n\
                 latency at {} tasks/s, as above:\n{}",
                p.max_running
                    .map(|n| format!(", max_running {n}"))
                    .unwrap_or_default(),
                self.agents,
                rate(t.per_sec),
                seconds(t.elapsed_ms),
                count(t.succeeded),
                count(t.failed),
                p.ratio_to_plain,
                rate(l.target_per_sec),
                percentiles(l),
            ));
        }
        if let Some(f) = &self.failover {
            out.push_str(&format!(
                "\nfailover, agent SIGKILLed holding tasks → each task running on another agent: \
                 {} kills, {} held tasks ({} fetched but not yet recorded running)\n\
                 \x20 health monitor heartbeat timeout {:.1} s (JetStream ack wait {:.0} s)\n\
                 \x20 p50 {:.0} ms   p99 {:.0} ms   max {:.0} ms\n",
                f.kills,
                f.held,
                f.held_unrecorded,
                seconds(f.heartbeat_timeout_ms),
                seconds(f.ack_wait_ms),
                f.p50_ms,
                f.p99_ms,
                f.max_ms,
            ));
        }
        out
    }
}

/// The messages-per-task lines of a phase, from the server's counters.
fn cost(cost: Option<&CostReport>, unit: &str) -> String {
    let Some(c) = cost else {
        return String::new();
    };
    let client = c.client_per_task.map_or_else(
        || "n/a (no monitoring endpoint)".to_string(),
        |n| format!("{n:.1}"),
    );
    let streams: Vec<String> = c
        .by_stream
        .iter()
        .map(|(name, n)| format!("{name} {n:.2}"))
        .collect();
    format!(
        "  per {unit}: {:.2} stored messages, {client} client messages\n\
         \x20   stored, by stream: {}\n",
        c.stored_per_task,
        streams.join(", ")
    )
}

/// The percentile line of a latency report.
fn percentiles(lat: &LatencyReport) -> String {
    format!(
        "  p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   max {:.2} ms   mean {:.2} ms{}\n",
        lat.p50_ms,
        lat.p90_ms,
        lat.p99_ms,
        lat.max_ms,
        lat.mean_ms,
        if lat.failed > 0 {
            format!("   ({} failed)", count(lat.failed))
        } else {
            String::new()
        },
    )
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// A rate, rounded to a whole number, with thousands separators.
fn rate(per_sec: f64) -> String {
    count(per_sec.round() as usize)
}

/// `12345` as `12,345`.
fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(rate(89_999.6), "90,000");
    }
}

//! Every subject, stream, consumer and bucket name clawfleet uses.
//!
//! Layout (see `docs/protocol.md` for the full contract):
//!
//! | subject | kind | who publishes | who reads |
//! |---|---|---|---|
//! | `clawfleet.api.submit` | request/reply | clients | dispatcher |
//! | `clawfleet.api.task.get` | request/reply | clients | dispatcher |
//! | `clawfleet.api.agents.list` | request/reply | clients | dispatcher |
//! | `clawfleet.api.queues.list` | request/reply | clients | dispatcher |
//! | `clawfleet.api.dlq.list` | request/reply | clients | dispatcher |
//! | `clawfleet.api.queues.pause` / `.resume` | request/reply | operators | dispatcher |
//! | `clawfleet.api.task.cancel` | request/reply | clients | dispatcher |
//! | `clawfleet.api.dlq.get` / `.replay` | request/reply | operators | dispatcher |
//! | `clawfleet.intake.<tenant>` | stream `CLAWFLEET_INTAKE` | clients | dispatcher |
//! | `clawfleet.queue.<priority>.<region>.<capkey>.<tenant>` | stream `CLAWFLEET_QUEUE` | dispatcher | agents |
//! | `clawfleet.results.<tenant>.<id>` | stream `CLAWFLEET_RESULTS` | agents | clients |
//! | `clawfleet.events.task.<kind>.<tenant>` | stream `CLAWFLEET_EVENTS` | dispatcher, agents | integrations |
//! | `clawfleet.events.agent.<kind>.<agent_id>` | stream `CLAWFLEET_EVENTS` | agents | integrations |
//! | `clawfleet.events.attempt.<tenant>.<agent_id>` | stream `CLAWFLEET_EVENTS` | agents (attempts that end no task event) | log aggregator (analytics, cost) |
//! | `clawfleet.dlq.<reason>.<tenant>` | stream `CLAWFLEET_DLQ` | dispatcher, agents | operators |
//! | `clawfleet.signal.work` | core NATS, not stored | dispatcher, health monitor, agents | agents |
//! | `clawfleet.api.fleet.state` | request/reply | clients | health monitor |
//! | `clawfleet.api.agent.quarantine` / `.release` | request/reply | operators | health monitor |
//! | `clawfleet.agent.ping.<agent_id>` | request/reply | health monitor | that agent |
//! | `clawfleet.agent.lease.<agent_id>` | core NATS, not stored | that agent | health monitor |
//! | `clawfleet.agent.cancel.<agent_id>` | core NATS, not stored | dispatcher | that agent |
//! | `clawfleet.logs.<service>.<level>.<agent_id>` | stream `CLAWFLEET_LOGS` | every service | log aggregator, `clawfleet logs --follow` |
//! | `clawfleet.api.logs.search` | request/reply | clients | log aggregator |
//! | `clawfleet.api.alerts.list` / `.rules` / `.test` / `.silences` / `.silence` / `.expire` | request/reply | operators | alerter |
//! | `clawfleet.events.alert.<state>.<alertname>` | stream `CLAWFLEET_EVENTS` | alerter | integrations |
//! | `clawfleet.events.alert.notified.<receiver>` | stream `CLAWFLEET_EVENTS` | alerter | operators |
//! | `clawfleet.api.logs.stats` | request/reply | clients | log aggregator |
//! | `clawfleet.api.analytics.{summary,cost,below_average,baselines,correlations}` | request/reply | clients | log aggregator |
//!
//! The tenant is always a single subject token so that a later security layer
//! can grant a tenant's credentials its own subjects and nothing else.
//!
//! Log subjects are the exception: they carry the service, level and agent
//! but not the tenant. Logs are an operator's tool, many lines belong to no
//! tenant (start-up, connection trouble) or to several, and tenant-scoped
//! access to logs belongs in the search API, which can check who asks. The
//! three tokens they do carry let a live tail (or `nats sub`) narrow down by
//! the filters people use most without decoding every line.

use crate::config::is_token;
use crate::logs::Level;
use crate::task::Priority;

/// Root token of every clawfleet subject.
pub const ROOT: &str = "clawfleet";

/// Request/reply: submit one task. Served by the dispatchers (queue group [`DISPATCHER_QUEUE_GROUP`]).
pub const API_SUBMIT: &str = "clawfleet.api.submit";
/// Request/reply: read a task's record by id.
pub const API_TASK_GET: &str = "clawfleet.api.task.get";
/// Request/reply: list registered agents.
pub const API_AGENTS_LIST: &str = "clawfleet.api.agents.list";
/// Request/reply: queue depth per priority and capability set.
pub const API_QUEUES_LIST: &str = "clawfleet.api.queues.list";
/// Request/reply: list dead-letter entries.
pub const API_DLQ_LIST: &str = "clawfleet.api.dlq.list";
/// Request/reply: pause the queues a rule matches.
pub const API_QUEUES_PAUSE: &str = "clawfleet.api.queues.pause";
/// Request/reply: remove a pause rule.
pub const API_QUEUES_RESUME: &str = "clawfleet.api.queues.resume";
/// Request/reply: cancel a queued or running task.
pub const API_TASK_CANCEL: &str = "clawfleet.api.task.cancel";
/// Request/reply: read one dead letter by its stream sequence.
pub const API_DLQ_GET: &str = "clawfleet.api.dlq.get";
/// Request/reply: submit dead letters again as new tasks.
pub const API_DLQ_REPLAY: &str = "clawfleet.api.dlq.replay";
/// Queue group the dispatchers share for the request/reply API.
pub const DISPATCHER_QUEUE_GROUP: &str = "clawfleet-dispatcher";
/// Request/reply: every agent with its health, workload and failure rate.
pub const API_FLEET_STATE: &str = "clawfleet.api.fleet.state";
/// Request/reply: take an agent out of the pool until released.
pub const API_AGENT_QUARANTINE: &str = "clawfleet.api.agent.quarantine";
/// Request/reply: lift an agent's quarantine.
pub const API_AGENT_RELEASE: &str = "clawfleet.api.agent.release";
/// Queue group the health monitors share for their request/reply API.
pub const MONITOR_QUEUE_GROUP: &str = "clawfleet-health-monitor";
/// Wildcard of every agent's lease announcements.
pub const LEASES_ALL: &str = "clawfleet.agent.lease.*";
/// Request/reply: search the indexed log lines. Served by the log aggregators
/// (queue group [`LOG_AGGREGATOR_QUEUE_GROUP`]).
pub const API_LOGS_SEARCH: &str = "clawfleet.api.logs.search";
/// Request/reply: what the log index holds and what retention removed.
pub const API_LOGS_STATS: &str = "clawfleet.api.logs.stats";
/// Alerter: pending, firing and recently resolved alerts.
pub const API_ALERTS_LIST: &str = "clawfleet.api.alerts.list";
/// Alerter: the loaded rules and their latest values.
pub const API_ALERTS_RULES: &str = "clawfleet.api.alerts.rules";
/// Alerter: the silences.
pub const API_ALERTS_SILENCES: &str = "clawfleet.api.alerts.silences";
/// Alerter: create a silence.
pub const API_ALERTS_SILENCE: &str = "clawfleet.api.alerts.silence";
/// Alerter: expire a silence.
pub const API_ALERTS_EXPIRE: &str = "clawfleet.api.alerts.expire";
/// Alerter: evaluate one rule now, and show what it would send.
pub const API_ALERTS_TEST: &str = "clawfleet.api.alerts.test";
/// Every alerter API subject.
pub const ALERTER_API: [&str; 6] = [
    API_ALERTS_LIST,
    API_ALERTS_RULES,
    API_ALERTS_TEST,
    API_ALERTS_SILENCES,
    API_ALERTS_SILENCE,
    API_ALERTS_EXPIRE,
];
/// Queue group of the alerter replicas' API subscriptions.
pub const ALERTER_QUEUE_GROUP: &str = "clawfleet-alerter";
/// The alerter's bucket: alerts, notification log, silences, leader lease.
pub const BUCKET_ALERTER: &str = "clawfleet-alerter";

/// Wildcard of the alerter's events (transitions and notifications).
pub const ALERT_EVENTS_ALL: &str = "clawfleet.events.alert.>";

/// `clawfleet.events.alert.<state>.<alertname>`: an alert changed state
/// (`pending`, `firing`, `resolved`).
pub fn alert_event(state: &str, alertname: &str) -> String {
    format!("clawfleet.events.alert.{state}.{alertname}")
}

/// `clawfleet.events.alert.notified.<receiver>`: a notification and its delivery.
pub fn alert_notified(receiver: &str) -> String {
    format!("clawfleet.events.alert.notified.{receiver}")
}

/// Fleet analytics: performance per group (log aggregator).
pub const API_ANALYTICS_SUMMARY: &str = "clawfleet.api.analytics.summary";
/// Fleet analytics: cost per group (log aggregator).
pub const API_ANALYTICS_COST: &str = "clawfleet.api.analytics.cost";
/// Fleet analytics: agents below the fleet average (log aggregator).
pub const API_ANALYTICS_BELOW_AVERAGE: &str = "clawfleet.api.analytics.below_average";
/// Fleet analytics: per-capability baselines and deviations (log aggregator).
pub const API_ANALYTICS_BASELINES: &str = "clawfleet.api.analytics.baselines";
/// Fleet analytics: failure rate by task characteristic (log aggregator).
pub const API_ANALYTICS_CORRELATIONS: &str = "clawfleet.api.analytics.correlations";
/// Every request/reply subject the dispatchers serve.
pub const DISPATCHER_API: [&str; 10] = [
    API_SUBMIT,
    API_TASK_GET,
    API_AGENTS_LIST,
    API_QUEUES_LIST,
    API_DLQ_LIST,
    API_QUEUES_PAUSE,
    API_QUEUES_RESUME,
    API_TASK_CANCEL,
    API_DLQ_GET,
    API_DLQ_REPLAY,
];
/// Every request/reply subject the health monitors serve.
pub const MONITOR_API: [&str; 3] = [API_FLEET_STATE, API_AGENT_QUARANTINE, API_AGENT_RELEASE];
/// Every request/reply subject the log aggregators serve.
pub const LOG_AGGREGATOR_API: [&str; 7] = [
    API_LOGS_SEARCH,
    API_LOGS_STATS,
    API_ANALYTICS_SUMMARY,
    API_ANALYTICS_COST,
    API_ANALYTICS_BELOW_AVERAGE,
    API_ANALYTICS_BASELINES,
    API_ANALYTICS_CORRELATIONS,
];
/// Durable consumer of attempt reports on `CLAWFLEET_EVENTS` (log aggregator).
pub const ATTEMPTS_CONSUMER: &str = "log-aggregator-attempts";
/// Queue group the log aggregators share for their request/reply API.
pub const LOG_AGGREGATOR_QUEUE_GROUP: &str = "clawfleet-log-aggregator";

/// Wildcard captured by the intake stream.
pub const INTAKE_ALL: &str = "clawfleet.intake.>";
/// Core NATS subject the dispatchers use to wake idle agents after routing work.
pub const SIGNAL_WORK: &str = "clawfleet.signal.work";
/// Core NATS subject on which every dispatcher announces itself each second,
/// so each knows how many share the tenants' submission rates.
pub const DISPATCHER_PRESENCE: &str = "clawfleet.dispatcher.presence";
/// Wildcard captured by the queue stream.
pub const QUEUE_ALL: &str = "clawfleet.queue.>";
/// Wildcard captured by the results stream.
pub const RESULTS_ALL: &str = "clawfleet.results.>";
/// Wildcard captured by the events stream.
pub const EVENTS_ALL: &str = "clawfleet.events.>";
/// Wildcard for task lifecycle events only.
pub const TASK_EVENTS_ALL: &str = "clawfleet.events.task.>";
/// Wildcard captured by the dead-letter stream.
pub const DLQ_ALL: &str = "clawfleet.dlq.>";
/// Wildcard captured by the logs stream.
pub const LOGS_ALL: &str = "clawfleet.logs.>";

/// Stream holding submitted tasks until a dispatcher has routed them (work-queue retention).
pub const STREAM_INTAKE: &str = "CLAWFLEET_INTAKE";
/// Stream holding routed tasks until an agent finishes them (work-queue retention).
pub const STREAM_QUEUE: &str = "CLAWFLEET_QUEUE";
/// Stream holding one final result per task.
pub const STREAM_RESULTS: &str = "CLAWFLEET_RESULTS";
/// Stream holding lifecycle events.
pub const STREAM_EVENTS: &str = "CLAWFLEET_EVENTS";
/// Stream holding dead letters: rejected, failed and poison tasks.
pub const STREAM_DLQ: &str = "CLAWFLEET_DLQ";
/// Stream holding shipped log lines until the log aggregator has indexed them.
pub const STREAM_LOGS: &str = "CLAWFLEET_LOGS";

/// Durable consumer on [`STREAM_INTAKE`] shared by every dispatcher.
pub const CONSUMER_DISPATCHER: &str = "dispatcher";
/// Default durable consumer of the log aggregator on [`STREAM_LOGS`].
pub const CONSUMER_LOG_AGGREGATOR: &str = "log-aggregator";

/// KV bucket: task records, keyed by task id.
pub const BUCKET_TASKS: &str = "clawfleet-tasks";
/// KV bucket: live agents, keyed by agent id; entries expire when beats stop.
pub const BUCKET_AGENTS: &str = "clawfleet-agents";
/// KV bucket: capability profiles agents have offered, keyed by [`profile_key`].
pub const BUCKET_PROFILES: &str = "clawfleet-profiles";
/// KV bucket: the queues the dispatchers have created, keyed by [`queue_key`].
pub const BUCKET_QUEUES: &str = "clawfleet-queues";
/// KV bucket: each agent's health as the health monitor judges it, keyed by
/// agent id. Agents watch their own key and stop pulling when it says so.
pub const BUCKET_HEALTH: &str = "clawfleet-health";
/// KV bucket: per tenant with a `max_running` quota, the tasks running for
/// it and on which agent ([`crate::agent::RunningSet`]), keyed by tenant.
/// Agents add a task before its attempt starts and remove it when the
/// attempt ends, so the quota holds across all of the tenant's queues.
pub const BUCKET_RUNNING: &str = "clawfleet-running";
/// KV bucket of tenants over a hard cost budget (written by the alerter,
/// read by dispatchers): one key per tenant.
pub const BUCKET_BUDGETS: &str = "clawfleet-budgets";

/// Header on a queued task: the task record's revision when the dispatcher
/// queued it. An agent receiving the task for the first time updates the
/// record at that revision without reading it first; if the record changed
/// meanwhile, the update fails and the agent reads it.
pub const HEADER_RECORD_REVISION: &str = "Clawfleet-Record-Revision";

/// Header on a queued task: the sequence of the intake message that created
/// its record (the record's `intake_seq`), sent with
/// [`HEADER_RECORD_REVISION`] so an agent can rebuild the record exactly.
pub const HEADER_INTAKE_SEQ: &str = "Clawfleet-Intake-Seq";

/// Header on an intake message published by a dispatcher for a
/// request/reply submission that already passed the tenant's rate limit, so
/// the intake pipeline does not charge it twice.
pub const HEADER_ADMITTED: &str = "Clawfleet-Admitted";

/// Header on the second copy of a task with `prefer_region`, queued for any
/// region: agents leave it alone until the task's `prefer_region_until`.
pub const HEADER_FALLBACK: &str = "Clawfleet-Fallback";

/// Token used in queue subjects for "no region" and "no capabilities".
pub const ANY: &str = "_";

/// `clawfleet.intake.<tenant>`
pub fn intake(tenant: &str) -> String {
    format!("clawfleet.intake.{tenant}")
}

/// The tenant token of an intake subject, if the subject is one.
pub fn tenant_of_intake(subject: &str) -> Option<&str> {
    subject.strip_prefix("clawfleet.intake.")
}

/// `clawfleet.results.<tenant>.<id>`
pub fn result(tenant: &str, id: &str) -> String {
    format!("clawfleet.results.{tenant}.{id}")
}

/// `clawfleet.results.<tenant>.>`: every result of one tenant.
pub fn results_of_tenant(tenant: &str) -> String {
    format!("clawfleet.results.{tenant}.>")
}

/// `clawfleet.events.task.<kind>.<tenant>`
pub fn task_event(kind: &str, tenant: &str) -> String {
    format!("clawfleet.events.task.{kind}.{tenant}")
}

/// `clawfleet.events.attempt.<tenant>.<agent_id>`: one report per attempt run.
pub fn attempt_event(tenant: &str, agent_id: &str) -> String {
    format!("clawfleet.events.attempt.{tenant}.{agent_id}")
}

/// What the subject of an attempt report sent alone starts with.
pub const ATTEMPT_EVENTS_PREFIX: &str = "clawfleet.events.attempt.";
/// Wildcard for attempt reports sent alone.
pub const ATTEMPT_EVENTS_ALL: &str = "clawfleet.events.attempt.>";

/// Every subject an attempt report can arrive on: alone, or inside the task
/// event that ended its attempt (see [`crate::events::AttemptReport`]).
pub const ATTEMPT_REPORTS: [&str; 6] = [
    ATTEMPT_EVENTS_ALL,
    "clawfleet.events.task.succeeded.>",
    "clawfleet.events.task.retrying.>",
    "clawfleet.events.task.failed.>",
    "clawfleet.events.task.preempted.>",
    "clawfleet.events.task.cancelled.>",
];

/// `clawfleet.events.agent.<kind>.<agent_id>`
pub fn agent_event(kind: &str, agent_id: &str) -> String {
    format!("clawfleet.events.agent.{kind}.{agent_id}")
}

/// `clawfleet.agent.ping.<agent_id>`: the health monitor's liveness probe,
/// answered from the agent's work loop (not from its heartbeat thread).
pub fn agent_ping(agent_id: &str) -> String {
    format!("clawfleet.agent.ping.{agent_id}")
}

/// `clawfleet.agent.lease.<agent_id>`: an agent announces the queue messages
/// of each pull the moment it has them, with their ack subjects, and the
/// ones it hands back (a [`crate::agent::LeaseUpdate`]), so a monitor can
/// hand everything the agent held back at once if it dies.
pub fn agent_lease(agent_id: &str) -> String {
    format!("clawfleet.agent.lease.{agent_id}")
}

/// `clawfleet.agent.cancel.<agent_id>`: tells an agent to stop the attempt
/// of a task whose cancel was requested (a [`crate::task::CancelNotice`]).
pub fn agent_cancel(agent_id: &str) -> String {
    format!("clawfleet.agent.cancel.{agent_id}")
}

/// `clawfleet.dlq.<reason>.<tenant>`
pub fn dlq(reason: &str, tenant: &str) -> String {
    format!("clawfleet.dlq.{reason}.{tenant}")
}

/// `clawfleet.logs.<service>.<level>.<agent_id>`, with [`ANY`] for a line
/// of no agent. A service name or agent id that is not a valid subject token
/// is replaced by [`ANY`] (the line itself keeps it).
pub fn log_line(service: &str, level: Level, agent_id: Option<&str>) -> String {
    let token = |s: &str| {
        if is_token(s, 64) {
            s.to_string()
        } else {
            ANY.to_string()
        }
    };
    format!(
        "clawfleet.logs.{}.{}.{}",
        token(service),
        level.as_str(),
        agent_id.map_or_else(|| ANY.to_string(), token)
    )
}

/// Subscription subject for log lines of one service (or any), one level,
/// and one agent (or any).
pub fn logs_filter(service: Option<&str>, level: Level, agent_id: Option<&str>) -> String {
    format!(
        "clawfleet.logs.{}.{}.{}",
        service.unwrap_or("*"),
        level.as_str(),
        agent_id.unwrap_or("*")
    )
}

/// The capability-set token of a queue subject: sorted capabilities joined
/// with `+`, or [`ANY`] when the task requires none. `requires` must already
/// be sorted and de-duplicated (as a validated [`crate::TaskSpec`]'s is).
pub fn capkey(requires: &[String]) -> String {
    if requires.is_empty() {
        ANY.to_string()
    } else {
        requires.join("+")
    }
}

/// `clawfleet.queue.<priority>.<region>.<capkey>.<tenant>`: one queue per
/// priority, residency region, required-capability set and tenant. Tenants
/// have queues of their own so that agents can share their time between
/// tenants (fairness, weights), serve only some tenants (dedicated agents),
/// and so that one tenant's backlog never sits in front of another's task.
pub fn queue(
    priority: Priority,
    region: Option<&str>,
    requires: &[String],
    tenant: &str,
) -> String {
    format!(
        "clawfleet.queue.{}.{}.{}.{tenant}",
        priority.as_str(),
        region.unwrap_or(ANY),
        capkey(requires)
    )
}

/// The tenant token of a queue subject, if the subject is one.
pub fn tenant_of_queue(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix("clawfleet.queue.")?;
    let mut tokens = rest.split('.');
    let (_priority, _region, _caps, tenant) = (
        tokens.next()?,
        tokens.next()?,
        tokens.next()?,
        tokens.next()?,
    );
    tokens.next().is_none().then_some(tenant)
}

/// Stable key of a (tenant, region, capability set), usable as a KV key and
/// in a consumer name (subject tokens may hold characters consumer names may not).
pub fn queue_key(tenant: &str, region: Option<&str>, requires: &[String]) -> String {
    format!(
        "{:016x}",
        fnv1a(&format!(
            "{tenant}|{}|{}",
            region.unwrap_or(ANY),
            capkey(requires)
        ))
    )
}

/// Durable consumer name of one queue: `q-<priority>-<queue_key>`.
pub fn queue_consumer(priority: Priority, key: &str) -> String {
    format!("q-{}-{key}", priority.as_str())
}

/// The consumer a JetStream ack subject belongs to: `$JS.ACK.<stream>.<consumer>.…`
/// (9 tokens), or with a domain and account hash, `$JS.ACK.<domain>.<hash>.<stream>.<consumer>.…`
/// (12 tokens or more).
pub fn consumer_of_ack(ack: &str) -> Option<&str> {
    let tokens: Vec<&str> = ack.split('.').collect();
    if tokens.len() < 9 || tokens[0] != "$JS" || tokens[1] != "ACK" {
        return None;
    }
    match tokens.len() {
        9 => Some(tokens[3]),
        _ => tokens.get(5).copied(),
    }
}

/// Stable key of an agent profile (its region, capability set and the
/// tenants it is dedicated to, if any).
pub fn profile_key(region: Option<&str>, capabilities: &[String], tenants: &[String]) -> String {
    format!(
        "{:016x}",
        fnv1a(&format!(
            "profile|{}|{}|{}",
            region.unwrap_or(ANY),
            capkey(capabilities),
            tenants.join("+")
        ))
    )
}

/// Key of a named profile the dispatcher publishes from its config, in the
/// profiles bucket: agents join a profile by name (`profiles = ["coder"]`).
pub fn named_profile_key(name: &str) -> String {
    format!("named.{name}")
}

/// FNV-1a, 64 bit: a stable, dependency-free hash for names (not for security).
pub fn fnv1a(s: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in s.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_subject_names_its_consumer() {
        assert_eq!(
            consumer_of_ack("$JS.ACK.CLAWFLEET_QUEUE.q-normal-abc.1.22.7.1700000000000000000.0"),
            Some("q-normal-abc")
        );
        assert_eq!(
            consumer_of_ack("$JS.ACK.hub.ACCHASH.CLAWFLEET_QUEUE.q-low-x.1.2.3.4.0.rnd"),
            Some("q-low-x")
        );
        assert_eq!(consumer_of_ack("_INBOX.abc"), None);
    }

    #[test]
    fn queue_subjects_name_priority_region_and_capabilities() {
        let caps = vec!["code".to_string(), "git".to_string()];
        assert_eq!(
            queue(Priority::High, Some("eu"), &caps, "acme"),
            "clawfleet.queue.high.eu.code+git.acme"
        );
        assert_eq!(
            queue(Priority::Low, None, &[], "acme"),
            "clawfleet.queue.low._._.acme"
        );
    }

    #[test]
    fn log_subjects_name_service_level_and_agent() {
        assert_eq!(
            log_line("agent", Level::Warn, Some("gpu-1")),
            "clawfleet.logs.agent.warn.gpu-1"
        );
        assert_eq!(
            log_line("dispatcher", Level::Info, None),
            "clawfleet.logs.dispatcher.info._"
        );
        assert_eq!(
            log_line("My Service", Level::Info, Some("a.b")),
            "clawfleet.logs._.info._"
        );
        assert_eq!(
            logs_filter(None, Level::Error, Some("a1")),
            "clawfleet.logs.*.error.a1"
        );
    }

    #[test]
    fn queue_keys_differ_by_region_and_capabilities() {
        let caps = vec!["code".to_string()];
        assert_ne!(
            queue_key("a", None, &caps),
            queue_key("a", Some("eu"), &caps)
        );
        assert_ne!(queue_key("a", None, &caps), queue_key("a", None, &[]));
        assert_ne!(queue_key("a", None, &caps), queue_key("b", None, &caps));
        assert_eq!(queue_key("a", None, &caps), queue_key("a", None, &caps));
        assert_eq!(queue_key("a", None, &caps).len(), 16);
    }
}

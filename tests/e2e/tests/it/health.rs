//! The health monitor: failover, hung agents, executor restarts and
//! escalation, retries on another agent, quarantine, monitor restarts.

use std::time::Duration;

use clawfleet_shared::agent::LeaseUpdate;
use clawfleet_shared::api::ApiReply;
use clawfleet_shared::events::AgentEvent;
use clawfleet_shared::health::{AgentControl, AgentStatus, FleetState, HealthEntry, HealthState};
use clawfleet_shared::task::Outcome;
use clawfleet_shared::{subjects, TaskRecord, TaskStatus};
use clawfleet_testkit::client::{request, submit, task_get, wait_final, wait_running};
use clawfleet_testkit::{
    agent_config, monitor_config, start_health_monitor, wait_for, AgentProcess, NatsServer, Service,
};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::{events_per_task, Fleet, FINISH};

/// The failover target: heartbeat timeout (1.5 s in the test config) + 1 s.
const FAILOVER_TARGET: Duration = Duration::from_millis(2500);

/// The JetStream ack wait of these tests' fleets: far longer than the
/// monitor's heartbeat timeout, so only the monitor can make failover fast.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// How long a test waits for work the monitor (or the agent) should hand
/// back: well inside [`ACK_WAIT`], so JetStream's redelivery cannot pass.
const BEFORE_ACK_WAIT: Duration = Duration::from_secs(15);

/// A fleet whose JetStream ack wait is [`ACK_WAIT`], with a health monitor.
async fn fleet_with_monitor() -> (Fleet, Service) {
    fleet_with_monitor_on(NatsServer::start()).await
}

/// [`fleet_with_monitor`] on this server.
async fn fleet_with_monitor_on(server: NatsServer) -> (Fleet, Service) {
    let fleet = Fleet::on(server, |c| c.task_ack_wait = ACK_WAIT).await;
    let monitor = start_health_monitor(monitor_config(fleet.server.url())).await;
    (fleet, monitor)
}

/// A server on which an agent connecting as `stalled` cannot write task
/// records: each write waits out the client's 10 s timeout, as on a server
/// in trouble, while the agent holds the message it fetched, unrecorded.
/// Everyone else connects without credentials and may do anything.
const STALLED_RECORDS: &str = r#"
authorization {
  users = [
    { user: "fleet", password: "fleet" }
    { user: "stalled", password: "stalled",
      permissions: { publish: { deny: ["$KV.clawfleet-tasks.>"] } } }
  ]
}
no_auth_user: "fleet"
"#;

/// Queue messages delivered and not acknowledged yet, over every queue.
async fn unacked(js: &async_nats::jetstream::Context) -> u64 {
    let stream = js.get_stream(subjects::STREAM_QUEUE).await.unwrap();
    let mut infos = stream.consumers();
    let mut n = 0;
    while let Some(info) = infos.next().await {
        n += info.unwrap().num_ack_pending as u64;
    }
    n
}

async fn fleet_state(client: &async_nats::Client) -> FleetState {
    request(client, subjects::API_FLEET_STATE, Vec::new())
        .await
        .expect("fleet state")
}

async fn agent_status(client: &async_nats::Client, id: &str) -> Option<AgentStatus> {
    fleet_state(client)
        .await
        .agents
        .into_iter()
        .find(|a| a.health.agent_id == id)
}

async fn submit_ids(fleet: &Fleet, tasks: Vec<Value>) -> Vec<String> {
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(submit(&fleet.client, &t).await.expect("accepted").id);
    }
    ids
}

fn agents_of(record: &TaskRecord) -> Vec<(String, Option<Outcome>)> {
    record
        .attempts
        .iter()
        .map(|a| (a.agent.clone(), a.outcome))
        .collect()
}

#[tokio::test]
async fn a_sigkilled_agents_twenty_tasks_run_elsewhere_within_the_failover_target_and_finish_once()
{
    let (mut fleet, _monitor) = fleet_with_monitor().await;
    let doomed = AgentProcess::start(
        fleet.server.url(),
        "doomed",
        &[("CLAWFLEET_MAX_CONCURRENCY", "20")],
    )
    .await;
    let tasks = (0..20)
        .map(|_| json!({"tenant": "acme", "payload": {"op": "sleep", "ms": 1500}}))
        .collect();
    let ids = submit_ids(&fleet, tasks).await;
    for id in &ids {
        let r = wait_running(&fleet.client, id, FINISH).await;
        assert_eq!(r.attempts[0].agent, "doomed");
    }
    let mut survivor = agent_config(fleet.server.url(), "survivor", &[]);
    survivor.max_concurrency = 20;
    fleet.agent_with(survivor).await;

    let killed_at = time::OffsetDateTime::now_utc();
    doomed.kill().await;
    let mut worst = Duration::ZERO;
    for id in &ids {
        let r = wait_final(&fleet.client, id, FINISH).await;
        assert_eq!(r.status, TaskStatus::Succeeded, "{id}: {r:?}");
        assert_eq!(
            agents_of(&r),
            vec![
                ("doomed".to_string(), Some(Outcome::Lost)),
                ("survivor".to_string(), Some(Outcome::Succeeded))
            ]
        );
        let moved = (r.attempts[1].started_at - killed_at).unsigned_abs();
        worst = worst.max(moved);
    }
    eprintln!("failover: every task running elsewhere {worst:?} after the kill");
    assert!(
        worst <= FAILOVER_TARGET,
        "failover took {worst:?}; the target is {FAILOVER_TARGET:?} (JetStream alone would take 30 s)"
    );
    let succeeded = events_per_task(&fleet, "succeeded").await;
    for id in &ids {
        assert_eq!(succeeded.get(id), Some(&1), "{id} completed once");
    }
    let results =
        clawfleet_testkit::client::stream_messages(&fleet.js, subjects::STREAM_RESULTS).await;
    assert_eq!(results, 20, "one result per task");
    let down = agent_status(&fleet.client, "doomed")
        .await
        .expect("still tracked");
    assert_eq!(down.health.state, HealthState::Down);
}

#[tokio::test]
async fn tasks_an_agent_fetched_but_had_not_recorded_running_are_handed_back_when_it_is_killed() {
    let (mut fleet, _monitor) =
        fleet_with_monitor_on(NatsServer::start_with_config(STALLED_RECORDS)).await;
    let victim = AgentProcess::start(
        &fleet.server.url_as("stalled", "stalled"),
        "stalled",
        &[("CLAWFLEET_MAX_CONCURRENCY", "4")],
    )
    .await;
    let tasks = (0..4)
        .map(|i| json!({"tenant": "acme", "payload": {"op": "echo", "data": i}}))
        .collect();
    let ids = submit_ids(&fleet, tasks).await;
    wait_for("the agent to hold all four tasks", FINISH, || async {
        (unacked(&fleet.js).await == 4).then_some(())
    })
    .await;
    for id in &ids {
        let r = task_get(&fleet.client, id).await.unwrap();
        assert!(
            r.status == TaskStatus::Queued && r.attempts.is_empty(),
            "not recorded as running: {r:?}"
        );
    }
    fleet.agent("survivor", &[], None).await;

    victim.kill().await;
    for id in &ids {
        let r = wait_final(&fleet.client, id, BEFORE_ACK_WAIT).await;
        assert_eq!(r.status, TaskStatus::Succeeded, "{r:?}");
        assert_eq!(
            agents_of(&r),
            vec![("survivor".to_string(), Some(Outcome::Succeeded))],
            "the killed agent never recorded an attempt"
        );
    }
}

#[tokio::test]
async fn a_task_whose_record_cannot_be_written_is_handed_back_and_runs_once_writes_work_again() {
    let mut fleet = Fleet::with(|c| c.task_ack_wait = ACK_WAIT).await;
    // An agent registers the profile the task needs, and leaves: the
    // task waits for the next one.
    fleet.agent("writer", &[], None).await;
    fleet.take_agent("writer").stop().await;
    let id = submit_ids(
        &fleet,
        vec![json!({"tenant": "acme", "payload": {"op": "echo", "data": "written"}})],
    )
    .await
    .remove(0);
    wait_for("the task to be queued", FINISH, || async {
        let queued = clawfleet_testkit::client::stream_messages(&fleet.js, subjects::STREAM_QUEUE);
        (queued.await == 1).then_some(())
    })
    .await;
    // From now on every record write fails: the bucket's stream refuses
    // messages of a record's size.
    let records = format!("KV_{}", subjects::BUCKET_TASKS);
    let config = fleet
        .js
        .get_stream(&records)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    fleet
        .js
        .update_stream(async_nats::jetstream::stream::Config {
            max_message_size: 64,
            ..config.clone()
        })
        .await
        .unwrap();
    let mut naked = fleet
        .client
        .subscribe(format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.{}.>",
            subjects::STREAM_QUEUE
        ))
        .await
        .unwrap();
    fleet.agent("writer", &[], None).await;

    tokio::time::timeout(BEFORE_ACK_WAIT, naked.next())
        .await
        .expect("the agent hands the task back when its record write fails");
    let r = task_get(&fleet.client, &id).await.unwrap();
    assert!(
        r.status == TaskStatus::Queued && r.attempts.is_empty(),
        "{r:?}"
    );
    fleet.js.update_stream(config).await.unwrap();
    let r = wait_final(&fleet.client, &id, BEFORE_ACK_WAIT).await;
    assert_eq!(r.result, Some(json!("written")), "{r:?}");
    assert_eq!(
        agents_of(&r),
        vec![("writer".to_string(), Some(Outcome::Succeeded))]
    );
}

/// The next lease announcement on `sub` that mentions `ack` (held or released).
async fn next_about(
    sub: &mut async_nats::Subscriber,
    ack: Option<&str>,
    within: Duration,
) -> Option<(LeaseUpdate, async_nats::Message)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, sub.next()).await.ok()??;
        let update: LeaseUpdate = serde_json::from_slice(&msg.payload).expect("a lease update");
        let about = ack.is_none_or(|ack| {
            update.held.iter().any(|l| l.ack == ack) || update.released.iter().any(|a| a == ack)
        });
        if about {
            return Some((update, msg));
        }
    }
}

#[tokio::test]
async fn an_agent_announces_what_it_took_again_until_a_monitor_confirms_it() {
    // No monitor: the test answers, or does not.
    let mut fleet = Fleet::new().await;
    let mut announced = fleet
        .client
        .subscribe(subjects::agent_lease("holder"))
        .await
        .unwrap();
    fleet.agent("holder", &[], None).await;
    let id = submit_ids(
        &fleet,
        vec![json!({"tenant": "acme", "payload": {"op": "sleep", "ms": 6000}})],
    )
    .await
    .remove(0);
    let (first, _) = next_about(&mut announced, None, FINISH)
        .await
        .expect("an announcement of the pull");
    assert_eq!(first.held.len(), 1, "{first:?}");
    assert_eq!(first.held[0].task_id, id);
    let ack = first.held[0].ack.clone();
    // Unanswered, it comes again.
    let (_, again) = next_about(&mut announced, Some(&ack), Duration::from_secs(3))
        .await
        .expect("the unconfirmed lease announced again");
    let reply = again.reply.clone().expect("a reply subject");
    fleet
        .client
        .publish(reply, bytes::Bytes::new())
        .await
        .unwrap();
    // Confirmed: not again while the task runs (unconfirmed, it would be
    // sent again within 0.5, 1 and 2 s).
    let more = next_about(&mut announced, Some(&ack), Duration::from_millis(2500)).await;
    assert!(
        more.is_none(),
        "announced again after a confirmation: {more:?}"
    );
    wait_final(&fleet.client, &id, FINISH).await;
}

#[tokio::test]
async fn an_agent_announces_a_task_it_hands_back_as_released() {
    let mut fleet = Fleet::new().await;
    let mut announced = fleet
        .client
        .subscribe(subjects::agent_lease("holder"))
        .await
        .unwrap();
    fleet.agent("holder", &[], None).await;
    // Not due for ten minutes: handed back at once.
    let id = submit_ids(
        &fleet,
        vec![json!({"tenant": "acme", "delay": "10m", "payload": {"op": "echo"}})],
    )
    .await
    .remove(0);
    let (held, _) = next_about(&mut announced, None, FINISH)
        .await
        .expect("an announcement of the pull");
    assert_eq!(held.held[0].task_id, id);
    let ack = held.held[0].ack.clone();
    let (released, _) = next_about(&mut announced, Some(&ack), FINISH)
        .await
        .expect("the hand-back announced");
    assert_eq!(released.released, vec![ack], "{released:?}");
    assert!(released.held.is_empty(), "{released:?}");
}

#[tokio::test]
async fn an_agent_restarted_under_the_same_id_at_once_still_has_its_tasks_moved_fast() {
    let (mut fleet, _monitor) = fleet_with_monitor().await;
    let first = AgentProcess::start(fleet.server.url(), "phoenix", &[]).await;
    let tasks = (0..3)
        .map(|_| json!({"tenant": "acme", "payload": {"op": "sleep", "ms": 1500}}))
        .collect();
    let ids = submit_ids(&fleet, tasks).await;
    for id in &ids {
        wait_running(&fleet.client, id, FINISH).await;
    }
    fleet.agent("other", &[], None).await;
    // A supervisor brings the process back under the same id before any
    // heartbeat is missed.
    let killed_at = time::OffsetDateTime::now_utc();
    first.kill().await;
    let second = AgentProcess::start(fleet.server.url(), "phoenix", &[]).await;
    for id in &ids {
        let r = wait_final(&fleet.client, id, FINISH).await;
        assert_eq!(
            agents_of(&r),
            vec![
                ("phoenix".to_string(), Some(Outcome::Lost)),
                ("other".to_string(), Some(Outcome::Succeeded))
            ]
        );
        let moved = (r.attempts[1].started_at - killed_at).unsigned_abs();
        assert!(moved <= FAILOVER_TARGET, "{id} moved after {moved:?}");
    }
    wait_for("the new phoenix to pass its checks", FINISH, || async {
        agent_status(&fleet.client, "phoenix").await.filter(|s| {
            s.health.state == HealthState::Healthy && s.info.as_ref().is_some_and(|i| i.pulling)
        })
    })
    .await;
    second.kill().await;
}

#[tokio::test]
async fn a_hung_agent_that_still_beats_is_declared_down_and_its_task_finishes_elsewhere_once() {
    let (mut fleet, _monitor) = fleet_with_monitor().await;
    let mut events = fleet
        .client
        .subscribe(subjects::agent_event("down", "hung"))
        .await
        .unwrap();
    // One runtime worker, and a task that blocks it: the agent's heartbeat
    // thread goes on, but nothing else in the process runs.
    let hung = AgentProcess::start(
        fleet.server.url(),
        "hung",
        &[
            ("CLAWFLEET_MAX_CONCURRENCY", "1"),
            ("TOKIO_WORKER_THREADS", "1"),
        ],
    )
    .await;
    let id = submit_ids(
        &fleet,
        vec![json!({"tenant": "acme", "payload": {"op": "block", "ms": 4000, "on": ["hung"], "data": "done"}})],
    )
    .await
    .remove(0);
    wait_running(&fleet.client, &id, FINISH).await;
    fleet.agent("healthy", &[], None).await;

    let down = tokio::time::timeout(FINISH, events.next())
        .await
        .expect("a down event")
        .unwrap();
    let down: AgentEvent = serde_json::from_slice(&down.payload).unwrap();
    assert!(
        down.reason.as_deref().unwrap_or_default().contains("hung"),
        "{down:?}"
    );
    let r = wait_final(&fleet.client, &id, FINISH).await;
    assert_eq!(r.status, TaskStatus::Succeeded);
    assert_eq!(r.result, Some(json!("done")));
    assert_eq!(r.attempts.last().unwrap().agent, "healthy");
    assert_eq!(r.attempts[0].outcome, Some(Outcome::Lost));
    // The beating agent is still registered, but out of the pool.
    let status = agent_status(&fleet.client, "hung").await.unwrap();
    assert!(!status.health.takes_work(), "{status:?}");

    // Unblocked, it answers pings again and comes back through recovering;
    // its late attempt changed nothing.
    wait_for("the hung agent to be healthy again", FINISH, || async {
        agent_status(&fleet.client, "hung")
            .await
            .filter(|s| s.health.state == HealthState::Healthy)
    })
    .await;
    let after = task_get(&fleet.client, &id).await.unwrap();
    assert_eq!(
        after.attempts, r.attempts,
        "the late attempt was fenced out"
    );
    assert_eq!(
        events_per_task(&fleet, "succeeded").await.get(&id),
        Some(&1)
    );
    hung.kill().await;
}

#[tokio::test]
async fn a_crashed_executor_is_restarted_and_one_that_stays_down_escalates() {
    let (mut fleet, _monitor) = fleet_with_monitor().await;
    let dir = tempfile::tempdir().unwrap();
    let health_file = dir.path().join("health");
    let mut config = agent_config(fleet.server.url(), "flaky-exec", &[]);
    config.executor = clawfleet_agent::ExecutorConfig::Sim {
        health_file: Some(health_file.clone()),
    };
    fleet.agent_with(config).await;
    let mut restarted = fleet
        .client
        .subscribe(subjects::agent_event("executor_restarted", "flaky-exec"))
        .await
        .unwrap();
    let mut escalated = fleet
        .client
        .subscribe(subjects::agent_event("escalated", "flaky-exec"))
        .await
        .unwrap();

    // The executor dies while running a task; the agent restarts it and the
    // task's retry succeeds on the restarted executor.
    let id = submit_ids(
        &fleet,
        vec![json!({"tenant": "acme", "payload": {"op": "flaky", "fail_attempts": 0, "data": 1}})],
    )
    .await
    .remove(0);
    wait_final(&fleet.client, &id, FINISH).await;
    let crash = submit_ids(
        &fleet,
        vec![json!({"tenant": "acme", "max_attempts": 1, "payload": {"op": "crash"}})],
    )
    .await
    .remove(0);
    let r = wait_final(&fleet.client, &crash, FINISH).await;
    assert_eq!(r.status, TaskStatus::Failed);
    tokio::time::timeout(FINISH, restarted.next())
        .await
        .expect("a restart event");
    let after = submit_ids(
        &fleet,
        vec![json!({"tenant": "acme", "payload": {"op": "echo", "data": "ok"}})],
    )
    .await
    .remove(0);
    let r = wait_final(&fleet.client, &after, FINISH).await;
    assert_eq!(r.result, Some(json!("ok")), "the restarted executor works");
    let status = agent_status(&fleet.client, "flaky-exec").await.unwrap();
    assert!(status.info.as_ref().unwrap().restarts >= 1);
    assert!(!status.health.escalated, "one restart is not an incident");

    // Now it stays down: restarts pile up and the monitor escalates (5 in the window).
    std::fs::write(&health_file, "down").unwrap();
    let event = tokio::time::timeout(Duration::from_secs(30), escalated.next())
        .await
        .expect("an escalation")
        .unwrap();
    let event: AgentEvent = serde_json::from_slice(&event.payload).unwrap();
    assert!(event.reason.unwrap().contains("restarted"));
    let status = agent_status(&fleet.client, "flaky-exec").await.unwrap();
    assert!(status.health.escalated);
    assert!(
        !status.info.unwrap().pulling,
        "a down executor takes no work"
    );
}

#[tokio::test]
async fn the_attempt_after_a_failure_runs_on_the_other_agent() {
    let (mut fleet, _monitor) = fleet_with_monitor().await;
    fleet.agent("bad", &[], None).await;
    fleet.agent("good", &[], None).await;
    let tasks = (0..30)
        .map(|i| json!({"tenant": "acme", "payload": {"op": "fail", "on": ["bad"], "data": i}}))
        .collect();
    let ids = submit_ids(&fleet, tasks).await;
    let mut moved = 0;
    for id in &ids {
        let r = wait_final(&fleet.client, id, FINISH).await;
        assert_eq!(r.status, TaskStatus::Succeeded, "{r:?}");
        let agents = agents_of(&r);
        if agents[0].0 == "bad" {
            moved += 1;
            assert_eq!(
                agents,
                vec![
                    ("bad".to_string(), Some(Outcome::Failed)),
                    ("good".to_string(), Some(Outcome::Succeeded))
                ],
                "{id}"
            );
        }
    }
    assert!(moved > 0, "some tasks started on the failing agent");
}

#[tokio::test]
async fn an_agent_failing_far_more_than_the_fleet_is_quarantined_until_released() {
    let mut fleet = Fleet::new().await;
    let mut config = monitor_config(fleet.server.url());
    config.quarantine.min_attempts = 10;
    let _monitor = start_health_monitor(config).await;
    fleet.agent("lemon", &[], None).await;
    fleet.agent("peach", &[], None).await;
    let mut quarantined = fleet
        .client
        .subscribe(subjects::agent_event("quarantined", "lemon"))
        .await
        .unwrap();
    // Retries may land on lemon again: an agent that hands each failed task
    // to the others, and pauses a moment each time, would take a while to
    // gather `min_attempts` attempts.
    let tasks = (0..60)
        .map(|_| {
            json!({"tenant": "acme", "retry": {"different_agent": false},
            "payload": {"op": "fail", "on": ["lemon"]}})
        })
        .collect();
    let first = submit_ids(&fleet, tasks).await;
    tokio::time::timeout(FINISH, quarantined.next())
        .await
        .expect("lemon quarantined");
    for id in &first {
        wait_final(&fleet.client, id, FINISH).await;
    }
    let status = agent_status(&fleet.client, "lemon").await.unwrap();
    let q = status.health.quarantine.clone().expect("quarantined");
    assert_eq!(q.by, "monitor");
    assert!(status.stats.failure_rate >= 0.5, "{status:?}");
    wait_for("lemon to stop pulling", FINISH, || async {
        agent_status(&fleet.client, "lemon")
            .await
            .and_then(|s| s.info)
            .filter(|i| !i.pulling)
    })
    .await;

    let echo = |i| json!({"tenant": "acme", "payload": {"op": "echo", "data": i}});
    let second = submit_ids(&fleet, (0..30).map(echo).collect()).await;
    for id in &second {
        let r = wait_final(&fleet.client, id, FINISH).await;
        assert_eq!(
            r.attempts[0].agent, "peach",
            "a quarantined agent gets no new work"
        );
    }

    let released: ApiReply<Option<HealthEntry>> = serde_json::from_slice(
        &fleet
            .client
            .request(
                subjects::API_AGENT_RELEASE,
                serde_json::to_vec(&AgentControl {
                    agent_id: "lemon".into(),
                    reason: None,
                })
                .unwrap()
                .into(),
            )
            .await
            .unwrap()
            .payload,
    )
    .unwrap();
    let entry = released.into_result().unwrap().unwrap();
    assert!(entry.quarantine.is_none());
    wait_for("lemon to pull again", FINISH, || async {
        agent_status(&fleet.client, "lemon")
            .await
            .and_then(|s| s.info)
            .filter(|i| i.pulling)
    })
    .await;
}

#[tokio::test]
async fn a_restarted_monitor_rebuilds_from_nats_without_a_storm_of_false_downs() {
    let (mut fleet, monitor) = fleet_with_monitor().await;
    for id in ["m1", "m2", "m3"] {
        fleet.agent(id, &[], None).await;
    }
    wait_for("three healthy agents", FINISH, || async {
        let s = fleet_state(&fleet.client).await;
        (s.agents.len() == 3
            && s.agents
                .iter()
                .all(|a| a.health.state == HealthState::Healthy))
        .then_some(())
    })
    .await;
    let mut downs = fleet
        .client
        .subscribe(format!(
            "{}.>",
            subjects::agent_event("down", "*").trim_end_matches(".*")
        ))
        .await
        .unwrap();
    monitor.kill().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _monitor = start_health_monitor(monitor_config(fleet.server.url())).await;
    // Two heartbeat timeouts with live agents: nobody goes down.
    let storm = tokio::time::timeout(Duration::from_secs(3), downs.next()).await;
    assert!(
        storm.is_err(),
        "false down after a monitor restart: {storm:?}"
    );
    let s = fleet_state(&fleet.client).await;
    assert_eq!(s.agents.len(), 3);
    assert!(
        s.agents
            .iter()
            .all(|a| a.health.state == HealthState::Healthy),
        "{s:?}"
    );
    // And the new monitor does judge: a crashed agent goes down.
    fleet.take_agent("m2").kill().await;
    let down = tokio::time::timeout(FINISH, downs.next())
        .await
        .expect("m2 down")
        .unwrap();
    assert_eq!(down.subject.as_str(), subjects::agent_event("down", "m2"));
}

#[tokio::test]
async fn a_verdict_holds_while_the_monitor_confirms_it_and_runs_out_when_no_monitor_does() {
    let (mut fleet, monitor) = fleet_with_monitor().await;
    fleet.agent("held", &[], None).await;
    wait_for("the monitor to know the agent", FINISH, || async {
        agent_status(&fleet.client, "held").await
    })
    .await;
    let _: Option<HealthEntry> = request(
        &fleet.client,
        subjects::API_AGENT_QUARANTINE,
        serde_json::to_vec(&AgentControl {
            agent_id: "held".into(),
            reason: Some("maintenance".into()),
        })
        .unwrap(),
    )
    .await
    .unwrap();
    wait_for("the agent to stop pulling", FINISH, || async {
        agent_status(&fleet.client, "held")
            .await
            .and_then(|s| s.info)
            .filter(|i| !i.pulling)
    })
    .await;
    // Nine times the 300 ms validity: confirmed all along, still held.
    tokio::time::sleep(Duration::from_millis(2700)).await;
    let info = agent_status(&fleet.client, "held")
        .await
        .and_then(|s| s.info);
    assert!(
        info.is_some_and(|i| !i.pulling),
        "the verdict ran out while the monitor confirmed it"
    );
    let id = submit_ids(
        &fleet,
        vec![json!({"tenant": "acme", "payload": {"op": "echo"}})],
    )
    .await
    .remove(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        task_get(&fleet.client, &id).await.unwrap().status,
        TaskStatus::Queued,
        "a quarantined agent took work"
    );
    // No monitor any more: the unconfirmed verdict runs out and work flows.
    monitor.kill().await;
    let r = wait_final(&fleet.client, &id, FINISH).await;
    assert_eq!(r.status, TaskStatus::Succeeded);
    assert_eq!(r.attempts[0].agent, "held");
}

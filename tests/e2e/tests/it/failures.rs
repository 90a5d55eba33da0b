//! What happens when things go wrong: failing work, dead agents, restarted
//! dispatchers and servers, poison messages, stopping agents.

use std::time::Duration;

use clawfleet_shared::api::{ApiReply, DlqReason, SubmitReply, TaskCancelReply, TaskCancelRequest};
use clawfleet_shared::events::TaskEventKind;
use clawfleet_shared::task::Outcome;
use clawfleet_shared::{subjects, ErrorCode, TaskStatus};
use clawfleet_testkit::client::{
    publish_intake_many, request, stream_messages, submit, task_get, wait_final, wait_running,
};
use clawfleet_testkit::{dispatcher_config, start_dispatcher, wait_for};
use serde_json::json;

use crate::{dead_letters, events_by_task, events_per_task, Fleet, FINISH};

/// Publishes `n` echo tasks with ids `<prefix>-<i>` to intake.
async fn publish_echo_tasks(fleet: &Fleet, prefix: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:05}")).collect();
    publish_intake_many(
        &fleet.js,
        ids.iter().enumerate().map(
            |(i, id)| json!({"id": id, "tenant": "acme", "payload": {"op": "echo", "data": i}}),
        ),
    )
    .await;
    ids
}

/// Waits for every task to succeed; returns nothing, panics with the first that did not.
async fn all_succeed(fleet: &Fleet, ids: &[String], timeout: Duration) {
    for id in ids {
        let record = wait_final(&fleet.client, id, timeout).await;
        assert_eq!(
            record.status,
            TaskStatus::Succeeded,
            "task {id}: {record:?}"
        );
    }
}

/// Every task entered its queue once, started once and succeeded once.
/// (`queued` events are at least once: a dispatcher that crashes between
/// publishing one and acking its intake message publishes it again.)
async fn assert_exactly_once(fleet: &Fleet, ids: &[String]) {
    let mut queue = fleet.js.get_stream(subjects::STREAM_QUEUE).await.unwrap();
    let state = queue.info().await.unwrap().state.clone();
    assert_eq!(
        state.last_sequence,
        ids.len() as u64,
        "messages ever stored in the queue stream"
    );
    assert_eq!(state.messages, 0, "nothing left queued");
    let queued = events_per_task(fleet, "queued").await;
    for id in ids {
        assert!(
            queued.get(id).copied().unwrap_or(0) >= 1,
            "task {id} has no queued event"
        );
    }
    for kind in ["started", "succeeded"] {
        let counts = events_per_task(fleet, kind).await;
        for id in ids {
            assert_eq!(
                counts.get(id).copied(),
                Some(1),
                "task {id} was {kind} {:?} times",
                counts.get(id)
            );
        }
    }
}

#[tokio::test]
async fn a_failing_task_is_retried_up_to_max_attempts_then_fails_with_every_attempt_recorded() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &[], None).await;
    fleet.agent("a2", &[], None).await;

    let reply = submit(
        &fleet.client,
        &json!({"tenant": "acme", "max_attempts": 3, "payload": {"op": "fail", "message": "upstream said no"}}),
    )
    .await
    .unwrap();
    let record = wait_final(&fleet.client, &reply.id, FINISH).await;

    assert_eq!(record.status, TaskStatus::Failed);
    assert_eq!(
        record
            .attempts
            .iter()
            .map(|a| a.attempt)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    for a in &record.attempts {
        assert_eq!(a.outcome, Some(Outcome::Failed));
        let error = a.error.as_ref().unwrap();
        assert_eq!(error.code, ErrorCode::ExecutorFailed);
        assert!(error.message.contains("upstream said no"), "{error:?}");
        assert!(a.ended_at.unwrap() >= a.started_at);
    }
    assert_eq!(
        record.failure.as_ref().unwrap().code,
        ErrorCode::ExecutorFailed
    );

    // The final result says so too, and the task is listed as a dead letter.
    let stream = fleet.js.get_stream(subjects::STREAM_RESULTS).await.unwrap();
    let msg = stream
        .get_last_raw_message_by_subject(&subjects::result("acme", &reply.id))
        .await
        .unwrap();
    let result: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(result["status"], "failed");
    assert_eq!(result["attempts"], 3);
    let dlq = wait_for("the dead letter", FINISH, || async {
        dead_letters(&fleet, DlqReason::Failed)
            .await
            .into_iter()
            .find(|e| e.id.as_deref() == Some(&reply.id))
    })
    .await;
    assert_eq!(dlq.tenant, "acme");
    assert_eq!(dlq.task["payload"]["op"], "fail");
    let retries = wait_for("two retrying events", FINISH, || async {
        events_per_task(&fleet, "retrying")
            .await
            .get(&reply.id)
            .copied()
            .filter(|n| *n == 2)
    })
    .await;
    assert_eq!(retries, 2);
}

#[tokio::test]
async fn a_task_past_its_timeout_is_stopped_and_retried_then_fails_with_timeout() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &[], None).await;
    let reply = submit(
        &fleet.client,
        &json!({"tenant": "acme", "timeout": "300ms", "max_attempts": 2, "payload": {"op": "sleep", "ms": 60_000}}),
    )
    .await
    .unwrap();
    let record = wait_final(&fleet.client, &reply.id, FINISH).await;
    assert_eq!(record.status, TaskStatus::Failed);
    assert_eq!(record.attempts.len(), 2);
    for a in &record.attempts {
        assert_eq!(a.outcome, Some(Outcome::Timeout));
        assert_eq!(a.error.as_ref().unwrap().code, ErrorCode::Timeout);
        let ran = a.ended_at.unwrap() - a.started_at;
        assert!(
            ran < time::Duration::seconds(10),
            "the attempt was not stopped at its timeout: {ran}"
        );
    }
    assert_eq!(record.failure.unwrap().code, ErrorCode::Timeout);
}

#[tokio::test]
async fn a_task_whose_agent_dies_mid_task_completes_on_another_agent() {
    let mut fleet = Fleet::new().await;
    fleet.agent("doomed", &[], None).await;
    let reply = submit(
        &fleet.client,
        &json!({"tenant": "acme", "payload": {"op": "sleep", "ms": 1000}}),
    )
    .await
    .unwrap();
    // The doomed agent is the only one, so the task runs there.
    wait_running(&fleet.client, &reply.id, FINISH).await;
    fleet.agent("rescuer", &[], None).await;
    // Crash: nothing acked, nothing handed back, the connection just goes away.
    fleet.take_agent("doomed").kill().await;

    let record = wait_final(&fleet.client, &reply.id, FINISH).await;
    assert_eq!(record.status, TaskStatus::Succeeded);
    assert_eq!(record.attempts.len(), 2, "{:?}", record.attempts);
    let (lost, won) = (&record.attempts[0], &record.attempts[1]);
    assert_eq!(
        (lost.agent.as_str(), lost.outcome),
        ("doomed", Some(Outcome::Lost))
    );
    assert_eq!(lost.error.as_ref().unwrap().code, ErrorCode::AgentLost);
    assert_eq!(
        (won.agent.as_str(), won.outcome),
        ("rescuer", Some(Outcome::Succeeded))
    );
    assert_eq!((lost.attempt, won.attempt), (1, 2));
}

#[tokio::test]
async fn a_stopping_agent_hands_its_task_back_without_spending_an_attempt() {
    let mut fleet = Fleet::new().await;
    let mut config = clawfleet_testkit::agent_config(fleet.server.url(), "leaving", &[]);
    config.drain_timeout = Duration::from_millis(200);
    fleet.agent_with(config).await;
    let reply = submit(
        &fleet.client,
        &json!({"tenant": "acme", "max_attempts": 1, "payload": {"op": "sleep", "ms": 1500}}),
    )
    .await
    .unwrap();
    wait_running(&fleet.client, &reply.id, FINISH).await;
    fleet.take_agent("leaving").stop().await;
    let handed_back = task_get(&fleet.client, &reply.id).await.unwrap();
    assert_eq!(handed_back.status, TaskStatus::Queued);

    fleet.agent("staying", &[], None).await;
    let record = wait_final(&fleet.client, &reply.id, FINISH).await;
    assert_eq!(
        record.status,
        TaskStatus::Succeeded,
        "the hand-back must not use up the only attempt"
    );
    let summary: Vec<_> = record
        .attempts
        .iter()
        .map(|a| (a.agent.as_str(), a.attempt, a.outcome))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("leaving", 1, Some(Outcome::Returned)),
            ("staying", 1, Some(Outcome::Succeeded))
        ]
    );
}

#[tokio::test]
async fn a_dispatcher_restarted_with_tasks_in_flight_loses_nothing_and_runs_nothing_twice() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &[], None).await;
    fleet.agent("a2", &[], None).await;

    let first = publish_echo_tasks(&fleet, "before", 1_000).await;
    // Crash the dispatcher part-way through routing the intake.
    wait_for("routing to be under way", FINISH, || async {
        task_get(&fleet.client, "before-00050").await.map(|_| ())
    })
    .await;
    fleet.dispatcher.take().unwrap().kill().await;
    // Intake keeps accepting while no dispatcher runs.
    let second = publish_echo_tasks(&fleet, "during", 200).await;
    fleet.dispatcher = Some(start_dispatcher(dispatcher_config(fleet.server.url())).await);

    let ids: Vec<String> = first.into_iter().chain(second).collect();
    all_succeed(&fleet, &ids, Duration::from_secs(60)).await;
    assert_exactly_once(&fleet, &ids).await;
}

#[tokio::test]
async fn two_dispatchers_side_by_side_dispatch_every_task_exactly_once() {
    let mut fleet = Fleet::new().await;
    let second = start_dispatcher(dispatcher_config(fleet.server.url())).await;
    fleet.agent("a1", &[], None).await;
    fleet.agent("a2", &[], None).await;

    let ids = publish_echo_tasks(&fleet, "shared", 1_500).await;
    all_succeed(&fleet, &ids, Duration::from_secs(60)).await;
    assert_exactly_once(&fleet, &ids).await;
    second.stop().await;
}

#[tokio::test]
async fn a_restarted_nats_server_loses_no_accepted_task() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &[], None).await;
    let mut ids = Vec::new();
    for i in 0..200 {
        let reply = submit(
            &fleet.client,
            &json!({"tenant": "acme", "priority": if i % 2 == 0 { "high" } else { "low" }, "payload": {"op": "sleep", "ms": 20}}),
        )
        .await
        .unwrap();
        ids.push(reply.id);
    }
    wait_for("some tasks to finish", FINISH, || async {
        task_get(&fleet.client, &ids[10])
            .await
            .filter(|r| r.status.is_final())
    })
    .await;
    fleet.server.restart();

    // Clients, dispatcher and agent reconnect by themselves; everything
    // accepted before the crash still runs, and new work is accepted.
    let task = serde_json::to_vec(&json!({"tenant": "acme", "priority": "critical", "payload": {"op": "echo", "data": "after"}})).unwrap();
    let after = wait_for("submissions to be accepted again", FINISH, || async {
        // Until the server is back, requests fail at the transport level.
        let reply = fleet
            .client
            .request(subjects::API_SUBMIT, task.clone().into())
            .await
            .ok()?;
        serde_json::from_slice::<ApiReply<SubmitReply>>(&reply.payload)
            .ok()?
            .into_result()
            .ok()
    })
    .await;
    ids.push(after.id);
    all_succeed(&fleet, &ids, Duration::from_secs(60)).await;
}

#[tokio::test]
async fn a_poison_message_in_a_queue_is_dead_lettered_and_never_redelivered() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &[], None).await;
    // A queue exists once a task has been routed to it.
    let warmup = submit(
        &fleet.client,
        &json!({"tenant": "acme", "payload": {"op": "echo", "data": 1}}),
    )
    .await
    .unwrap();
    let warmup = wait_final(&fleet.client, &warmup.id, FINISH).await;

    let garbage = b"{not a task".to_vec();
    fleet
        .js
        .publish(warmup.queue.clone(), garbage.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let entry = wait_for("the poison dead letter", FINISH, || async {
        dead_letters(&fleet, DlqReason::Poison)
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(entry.failure.code, ErrorCode::Poison);
    assert_eq!(entry.subject, warmup.queue);
    assert_eq!(entry.task, json!("{not a task"));
    wait_for("the poison message to leave the queue", FINISH, || async {
        (stream_messages(&fleet.js, subjects::STREAM_QUEUE).await == 0).then_some(())
    })
    .await;

    // The agent is unharmed and goes on working.
    let after = submit(
        &fleet.client,
        &json!({"tenant": "acme", "payload": {"op": "echo", "data": 2}}),
    )
    .await
    .unwrap();
    assert_eq!(
        wait_final(&fleet.client, &after.id, FINISH).await.status,
        TaskStatus::Succeeded
    );
    assert_eq!(
        dead_letters(&fleet, DlqReason::Poison).await.len(),
        1,
        "the poison message came back"
    );
}

#[tokio::test]
async fn a_fatal_executor_error_fails_at_once_without_retries() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &[], None).await;
    // The sim executor cannot run an unknown operation, however often it tries.
    let reply = submit(
        &fleet.client,
        &json!({"tenant": "acme", "max_attempts": 5, "payload": {"op": "juggle"}}),
    )
    .await
    .unwrap();
    let record = wait_final(&fleet.client, &reply.id, FINISH).await;
    assert_eq!(record.status, TaskStatus::Failed);
    assert_eq!(record.attempts.len(), 1);
    assert_eq!(record.failure.unwrap().code, ErrorCode::ExecutorRejected);
}

#[tokio::test]
async fn a_flaky_task_succeeds_on_a_later_attempt_with_its_failures_recorded() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &[], None).await;
    let reply = submit(
        &fleet.client,
        &json!({"tenant": "acme", "max_attempts": 3, "payload": {"op": "flaky", "fail_attempts": 2, "data": "third time"}}),
    )
    .await
    .unwrap();
    let record = wait_final(&fleet.client, &reply.id, FINISH).await;
    assert_eq!(record.status, TaskStatus::Succeeded);
    assert_eq!(record.result, Some(json!("third time")));
    let outcomes: Vec<_> = record.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        vec![
            Some(Outcome::Failed),
            Some(Outcome::Failed),
            Some(Outcome::Succeeded)
        ]
    );
    assert!(record.failure.is_none(), "a success clears the last error");
}

#[tokio::test]
async fn a_retry_policy_retries_only_the_failures_it_names_and_backs_off_as_told() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &[], None).await;
    // Executor errors are not in `on`: one attempt, then failed.
    let no_retry = submit(
        &fleet.client,
        &json!({"tenant": "acme", "max_attempts": 4, "retry": {"on": ["timeout"]},
                "payload": {"op": "fail", "message": "nope"}}),
    )
    .await
    .unwrap();
    // Timeouts are: every attempt runs, at least `backoff` apart.
    let retried = submit(
        &fleet.client,
        &json!({"tenant": "acme", "max_attempts": 3, "timeout": "50ms",
                "retry": {"on": ["timeout"], "backoff": "300ms", "backoff_max": "300ms"},
                "payload": {"op": "sleep", "ms": 5000}}),
    )
    .await
    .unwrap();
    let r = wait_final(&fleet.client, &no_retry.id, FINISH).await;
    assert_eq!(r.status, TaskStatus::Failed);
    assert_eq!(r.attempts.len(), 1, "{r:?}");
    assert_eq!(r.failure.unwrap().code, ErrorCode::ExecutorFailed);

    let r = wait_final(&fleet.client, &retried.id, FINISH).await;
    assert_eq!(r.status, TaskStatus::Failed);
    assert_eq!(r.attempts.len(), 3, "{r:?}");
    assert!(r
        .attempts
        .iter()
        .all(|a| a.outcome == Some(Outcome::Timeout)));
    for pair in r.attempts.windows(2) {
        let gap = pair[1].started_at - pair[0].ended_at.unwrap();
        // 300 ms ± 20% jitter, capped at 300 ms: at least 240 ms.
        assert!(
            gap >= time::Duration::milliseconds(240),
            "gap {gap} in {r:?}"
        );
    }
}

#[tokio::test]
async fn after_a_mixed_failing_workload_every_tasks_events_agree_with_its_record() {
    let mut fleet = Fleet::new().await;
    fleet.agent("mix-a", &[], None).await;
    fleet.agent("mix-b", &[], None).await;
    let retry = json!({"backoff": "10ms", "backoff_max": "20ms"});
    let mut bodies = Vec::new();
    for i in 0..8 {
        let payload = match i % 4 {
            0 => json!({"op": "echo", "data": i}),
            1 => json!({"op": "flaky", "fail_attempts": 1, "data": i}),
            2 => json!({"op": "fatal", "message": "no"}),
            _ => json!({"op": "fail", "message": "always"}),
        };
        bodies.push(
            json!({"id": format!("mix-{i}"), "tenant": "acme", "payload": payload,
                           "max_attempts": 2, "retry": retry}),
        );
    }
    // Cancelled while running, and while waiting for its delay.
    bodies.push(
        json!({"id": "mix-running", "tenant": "acme", "payload": {"op": "sleep", "ms": 60_000}}),
    );
    bodies.push(
        json!({"id": "mix-waiting", "tenant": "acme", "delay": "1h", "payload": {"op": "echo"}}),
    );
    for body in &bodies {
        submit(&fleet.client, body).await.unwrap();
    }
    wait_running(&fleet.client, "mix-running", FINISH).await;
    for id in ["mix-running", "mix-waiting"] {
        let req = TaskCancelRequest {
            id: id.into(),
            tenant: None,
            reason: Some("mixed workload".into()),
        };
        let reply: Result<TaskCancelReply, _> = request(
            &fleet.client,
            subjects::API_TASK_CANCEL,
            serde_json::to_vec(&req).unwrap(),
        )
        .await;
        reply.unwrap();
    }
    let mut records = Vec::new();
    for body in &bodies {
        let id = body["id"].as_str().unwrap();
        records.push(wait_final(&fleet.client, id, FINISH).await);
    }
    // Every final event is in the stream once its result is.
    wait_for("every task's final event", FINISH, || async {
        let events = events_by_task(&fleet).await;
        records
            .iter()
            .all(|r| {
                events
                    .get(&r.spec.id)
                    .and_then(|e| e.last())
                    .is_some_and(|e| is_final(e.kind))
            })
            .then_some(())
    })
    .await;
    let events = events_by_task(&fleet).await;
    let mut statuses = std::collections::BTreeSet::new();
    for r in &records {
        let id = &r.spec.id;
        let e = &events[id];
        let kinds: Vec<TaskEventKind> = e.iter().map(|e| e.kind).collect();
        statuses.insert(r.status.to_string());
        assert_eq!(
            kinds.first(),
            Some(&TaskEventKind::Queued),
            "{id}: {kinds:?}"
        );
        // Exactly one final event, the last, saying what the record says.
        assert_eq!(
            kinds.iter().filter(|k| is_final(**k)).count(),
            1,
            "{id}: {kinds:?}"
        );
        let last = e.last().unwrap();
        assert_eq!(
            last.kind.as_str(),
            r.status.to_string(),
            "{id}: {kinds:?} vs {r:?}"
        );
        // One `started` per attempt in the record, same agent and number, in order.
        let started: Vec<(u32, String)> = e
            .iter()
            .filter(|e| e.kind == TaskEventKind::Started)
            .map(|e| (e.attempt.unwrap(), e.agent.clone().unwrap()))
            .collect();
        let attempts: Vec<(u32, String)> = r
            .attempts
            .iter()
            .map(|a| (a.attempt, a.agent.clone()))
            .collect();
        assert_eq!(started, attempts, "{id}: events {kinds:?}, record {r:?}");
        // A `retrying` event for every attempt that failed and was followed by another.
        let retried = r
            .attempts
            .iter()
            .rev()
            .skip(1)
            .filter(|a| matches!(a.outcome, Some(Outcome::Failed | Outcome::Timeout)))
            .count();
        let retrying = kinds
            .iter()
            .filter(|k| **k == TaskEventKind::Retrying)
            .count();
        assert_eq!(retrying, retried, "{id}: {kinds:?} vs {r:?}");
        if matches!(r.status, TaskStatus::Succeeded | TaskStatus::Failed) {
            assert_eq!(last.attempt, r.attempts.last().map(|a| a.attempt), "{id}");
        }
        // Every event that ends an attempt the executor ran carries that
        // attempt's report, as the record has it.
        for event in e.iter().filter(|e| {
            matches!(e.kind, TaskEventKind::Succeeded | TaskEventKind::Retrying)
                || (e.kind == TaskEventKind::Failed && e.attempt.is_some())
        }) {
            let report = event
                .report
                .as_ref()
                .unwrap_or_else(|| panic!("{id}: {:?} without its report", event.kind));
            let attempt = r
                .attempts
                .iter()
                .find(|a| a.attempt == report.attempt)
                .unwrap_or_else(|| panic!("{id}: report of an unknown attempt {report:?}"));
            assert_eq!(Some(report.attempt), event.attempt, "{id}");
            assert_eq!(report.agent, attempt.agent, "{id}");
            assert_eq!(Some(report.ended_at), attempt.ended_at, "{id}");
            assert_eq!(Some(report.outcome), attempt.outcome, "{id}");
        }
    }
    // The workload did reach every ending.
    assert_eq!(
        statuses.into_iter().collect::<Vec<_>>(),
        vec!["cancelled", "failed", "succeeded"]
    );
}

fn is_final(kind: TaskEventKind) -> bool {
    matches!(
        kind,
        TaskEventKind::Succeeded | TaskEventKind::Failed | TaskEventKind::Cancelled
    )
}

#[tokio::test]
async fn an_idle_agent_takes_up_a_retry_when_its_back_off_ends_without_polling() {
    let mut fleet = Fleet::new().await;
    // Idle polls a minute apart: only the agent's own wake-up at the end of
    // the retry's back-off can start the second attempt in time.
    let mut config = clawfleet_testkit::agent_config(fleet.server.url(), "sleepy", &[]);
    config.idle_poll_interval = Duration::from_secs(60);
    config.idle_poll_max = Duration::from_secs(60);
    fleet.agent_with(config).await;
    let body = json!({"tenant": "acme", "max_attempts": 2,
                      "retry": {"backoff": "300ms", "backoff_max": "300ms", "different_agent": false},
                      "payload": {"op": "flaky", "fail_attempts": 1, "data": "late"}});
    let id = submit(&fleet.client, &body).await.unwrap().id;
    let r = wait_final(&fleet.client, &id, Duration::from_secs(10)).await;
    assert_eq!(r.status, TaskStatus::Succeeded, "{r:?}");
    assert_eq!(r.attempts.len(), 2);
    let gap = r.attempts[1].started_at - r.attempts[0].ended_at.unwrap();
    assert!(
        gap < time::Duration::seconds(5),
        "the retry waited {gap} for an idle poll"
    );
}

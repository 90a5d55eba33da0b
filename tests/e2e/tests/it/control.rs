//! Task control: cancelling queued and running tasks, delayed tasks, and
//! replaying dead letters.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use clawfleet_dispatcher::config::StaticProfile;
use clawfleet_shared::api::{
    DlqEntry, DlqGetRequest, DlqReason, DlqReplayReply, DlqReplayRequest, TaskCancelReply,
    TaskCancelRequest,
};
use clawfleet_shared::events::TaskEvent;
use clawfleet_shared::task::{Outcome, ReplayOf};
use clawfleet_shared::{subjects, ErrorBody, ErrorCode, TaskResult, TaskStatus};
use clawfleet_testkit::client::{
    publish_intake, request, submit, task_get, wait_final, wait_running,
};
use clawfleet_testkit::{agent_config, wait_for};
use futures::StreamExt;
use serde_json::json;

use crate::{dead_letters, Fleet, FINISH};

async fn cancel(
    fleet: &Fleet,
    id: &str,
    tenant: Option<&str>,
    reason: Option<&str>,
) -> Result<TaskCancelReply, ErrorBody> {
    let req = TaskCancelRequest {
        id: id.to_string(),
        tenant: tenant.map(str::to_string),
        reason: reason.map(str::to_string),
    };
    request(
        &fleet.client,
        subjects::API_TASK_CANCEL,
        serde_json::to_vec(&req).unwrap(),
    )
    .await
}

/// The task's result, as a client reads it from the results stream.
async fn result_of(js: &jetstream::Context, tenant: &str, id: &str) -> Option<TaskResult> {
    let stream = js.get_stream(subjects::STREAM_RESULTS).await.unwrap();
    let msg = stream
        .get_last_raw_message_by_subject(&subjects::result(tenant, id))
        .await
        .ok()?;
    Some(serde_json::from_slice(&msg.payload).unwrap())
}

/// Every stored task event of `kind` about task `id`.
async fn events_of(fleet: &Fleet, kind: &str, id: &str) -> Vec<TaskEvent> {
    let stream = fleet.js.get_stream(subjects::STREAM_EVENTS).await.unwrap();
    let mut consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subjects::task_event(kind, "*"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut found = Vec::new();
    if consumer.info().await.unwrap().num_pending == 0 {
        return found;
    }
    let mut messages = consumer.messages().await.unwrap();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(2), messages.next()).await {
        let msg = msg.unwrap();
        let event: TaskEvent = serde_json::from_slice(&msg.payload).unwrap();
        if event.id.as_deref() == Some(id) {
            found.push(event);
        }
        if msg.info().unwrap().pending == 0 {
            break;
        }
    }
    found
}

/// Messages waiting in the queue stream (queued, delayed or held by an agent).
async fn queued_messages(fleet: &Fleet) -> u64 {
    clawfleet_testkit::client::stream_messages(&fleet.js, subjects::STREAM_QUEUE).await
}

#[tokio::test]
async fn a_queued_task_cancelled_before_any_agent_could_run_it_never_runs() {
    // The `gpu` profile is declared, so gpu work queues while no gpu agent is up.
    let mut fleet = Fleet::with(|c| {
        c.profiles = vec![StaticProfile {
            name: "gpu".into(),
            capabilities: vec!["gpu".into()],
            region: None,
            tenants: vec![],
        }]
    })
    .await;
    let task = json!({"tenant": "acme", "id": "render-1", "requires": ["gpu"], "payload": {"op": "echo", "data": 1}});
    submit(&fleet.client, &task).await.unwrap();
    wait_for("the task's record", FINISH, || async {
        task_get(&fleet.client, "render-1").await
    })
    .await;

    let reply = cancel(
        &fleet,
        "render-1",
        Some("acme"),
        Some("not needed any more"),
    )
    .await
    .unwrap();

    assert_eq!(reply.status, TaskStatus::Cancelled, "{reply:?}");
    let record = task_get(&fleet.client, "render-1").await.unwrap();
    assert_eq!(record.status, TaskStatus::Cancelled);
    assert!(record.attempts.is_empty());
    assert!(record.finished_at.is_some());
    assert_eq!(
        record.cancel.as_ref().unwrap().reason.as_deref(),
        Some("not needed any more")
    );
    let failure = record.failure.as_ref().unwrap();
    assert_eq!(failure.code, ErrorCode::Cancelled);
    assert!(
        failure.message.contains("not needed any more"),
        "{failure:?}"
    );
    let result = result_of(&fleet.js, "acme", "render-1").await.unwrap();
    assert_eq!(result.status, TaskStatus::Cancelled);
    assert_eq!(result.error.unwrap().code, ErrorCode::Cancelled);
    let cancelled = wait_for("the cancelled event", FINISH, || async {
        let events = events_of(&fleet, "cancelled", "render-1").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(cancelled.len(), 1);

    // A gpu agent arrives. Tasks of one queue are delivered in order, so
    // once a later task has run, the cancelled one has been delivered too.
    fleet.agent("gpu-1", &["gpu"], None).await;
    let later = json!({"tenant": "acme", "id": "render-2", "requires": ["gpu"], "payload": {"op": "echo", "data": 2}});
    submit(&fleet.client, &later).await.unwrap();
    assert_eq!(
        wait_final(&fleet.client, "render-2", FINISH).await.status,
        TaskStatus::Succeeded
    );
    wait_for("the queue to be empty", FINISH, || async {
        (queued_messages(&fleet).await == 0).then_some(())
    })
    .await;
    let record = task_get(&fleet.client, "render-1").await.unwrap();
    assert_eq!(record.status, TaskStatus::Cancelled);
    assert!(record.attempts.is_empty(), "{:?}", record.attempts);
    assert!(events_of(&fleet, "started", "render-1").await.is_empty());
    assert_eq!(
        result_of(&fleet.js, "acme", "render-1")
            .await
            .unwrap()
            .status,
        TaskStatus::Cancelled,
        "the agent that dropped the message published nothing else"
    );
}

#[tokio::test]
async fn cancelling_a_running_task_stops_its_executor_and_frees_the_slot() {
    let mut fleet = Fleet::new().await;
    let mut config = agent_config(fleet.server.url(), "a1", &[]);
    config.max_concurrency = 1;
    fleet.agent_with(config).await;
    let long = json!({"tenant": "acme", "id": "long-1", "payload": {"op": "sleep", "ms": 60_000}});
    submit(&fleet.client, &long).await.unwrap();
    wait_running(&fleet.client, "long-1", FINISH).await;

    let asked = Instant::now();
    let reply = cancel(&fleet, "long-1", None, Some("wrong input"))
        .await
        .unwrap();
    let record = wait_final(&fleet.client, "long-1", FINISH).await;
    let took = asked.elapsed();

    assert_eq!(reply.status, TaskStatus::Running);
    assert_eq!(reply.agent.as_deref(), Some("a1"));
    assert!(
        took < Duration::from_secs(5),
        "the executor was not stopped promptly: {took:?}"
    );
    assert_eq!(record.status, TaskStatus::Cancelled);
    assert_eq!(record.attempts.len(), 1, "{:?}", record.attempts);
    let attempt = &record.attempts[0];
    assert_eq!(attempt.outcome, Some(Outcome::Cancelled));
    assert_eq!(attempt.error.as_ref().unwrap().code, ErrorCode::Cancelled);
    assert_eq!(record.failure.as_ref().unwrap().code, ErrorCode::Cancelled);
    assert!(record.result.is_none());
    let result = wait_for("the cancelled result", FINISH, || async {
        result_of(&fleet.js, "acme", "long-1").await
    })
    .await;
    assert_eq!(result.status, TaskStatus::Cancelled);
    assert_eq!(result.agent.as_deref(), Some("a1"));

    // The agent's only slot is free again: another task runs now, not in a minute.
    let next = json!({"tenant": "acme", "id": "next-1", "payload": {"op": "echo", "data": "ok"}});
    submit(&fleet.client, &next).await.unwrap();
    let next = wait_final(&fleet.client, "next-1", FINISH).await;
    assert_eq!(next.status, TaskStatus::Succeeded);
    assert_eq!(next.attempts[0].agent, "a1");

    // Nothing was retried or handed back: one start, one cancel, an empty queue.
    wait_for("the queue to be empty", FINISH, || async {
        (queued_messages(&fleet).await == 0).then_some(())
    })
    .await;
    assert_eq!(events_of(&fleet, "started", "long-1").await.len(), 1);
    let cancelled = events_of(&fleet, "cancelled", "long-1").await;
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].attempt, Some(1));
    assert_eq!(cancelled[0].agent.as_deref(), Some("a1"));
    assert_eq!(
        task_get(&fleet.client, "long-1")
            .await
            .unwrap()
            .attempts
            .len(),
        1
    );
}

#[tokio::test]
async fn a_cancel_request_its_agent_never_heard_of_still_wins_when_the_attempt_ends() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &[], None).await;
    let task = json!({"tenant": "acme", "id": "quiet-1", "payload": {"op": "sleep", "ms": 1500}});
    submit(&fleet.client, &task).await.unwrap();
    wait_running(&fleet.client, "quiet-1", FINISH).await;

    // What a dispatcher leaves behind when its notice to the agent is lost:
    // the request in the record, and nothing else.
    let kv = fleet
        .js
        .get_key_value(subjects::BUCKET_TASKS)
        .await
        .unwrap();
    loop {
        let entry = kv.entry("quiet-1").await.unwrap().unwrap();
        let mut record: serde_json::Value = serde_json::from_slice(&entry.value).unwrap();
        record["cancel"] = json!({"requested_at": "2026-01-01T00:00:00Z", "reason": "quietly"});
        let bytes = serde_json::to_vec(&record).unwrap();
        if kv
            .update("quiet-1", bytes.into(), entry.revision)
            .await
            .is_ok()
        {
            break;
        }
    }

    let record = wait_final(&fleet.client, "quiet-1", FINISH).await;
    assert_eq!(
        record.status,
        TaskStatus::Cancelled,
        "the executor succeeded, but the cancel came first"
    );
    assert_eq!(record.attempts[0].outcome, Some(Outcome::Cancelled));
    assert!(record.result.is_none());
    let result = wait_for("the cancelled result", FINISH, || async {
        result_of(&fleet.js, "acme", "quiet-1").await
    })
    .await;
    assert_eq!(result.status, TaskStatus::Cancelled);
}

#[tokio::test]
async fn a_task_cancelled_after_its_agent_died_is_settled_without_running_again() {
    let mut fleet = Fleet::new().await;
    fleet.agent("doomed", &[], None).await;
    let task =
        json!({"tenant": "acme", "id": "orphan-1", "payload": {"op": "sleep", "ms": 60_000}});
    submit(&fleet.client, &task).await.unwrap();
    wait_running(&fleet.client, "orphan-1", FINISH).await;
    fleet.take_agent("doomed").kill().await;

    let reply = cancel(&fleet, "orphan-1", None, None).await.unwrap();
    assert_eq!(
        reply.status,
        TaskStatus::Running,
        "the record still says so"
    );
    fleet.agent("rescuer", &[], None).await;

    // The task comes back to the rescuer after its ack wait.
    let record = wait_final(&fleet.client, "orphan-1", FINISH).await;
    assert_eq!(record.status, TaskStatus::Cancelled);
    assert_eq!(record.attempts.len(), 1, "{:?}", record.attempts);
    assert_eq!(record.attempts[0].agent, "doomed");
    assert_eq!(record.attempts[0].outcome, Some(Outcome::Lost));
    assert_eq!(events_of(&fleet, "started", "orphan-1").await.len(), 1);
    let result = wait_for("the cancelled result", FINISH, || async {
        result_of(&fleet.js, "acme", "orphan-1").await
    })
    .await;
    assert_eq!(result.status, TaskStatus::Cancelled);
}

#[tokio::test]
async fn cancelling_a_finished_or_unknown_task_is_refused_and_changes_nothing() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &[], None).await;
    let task = json!({"tenant": "acme", "id": "done-1", "payload": {"op": "echo", "data": "x"}});
    submit(&fleet.client, &task).await.unwrap();
    let before = wait_final(&fleet.client, "done-1", FINISH).await;
    // The result is published just after the record is final.
    wait_for("the result", FINISH, || async {
        result_of(&fleet.js, "acme", "done-1").await
    })
    .await;

    let finished = cancel(&fleet, "done-1", None, Some("too late"))
        .await
        .unwrap_err();
    let other_tenant = cancel(&fleet, "done-1", Some("globex"), None)
        .await
        .unwrap_err();
    let unknown = cancel(&fleet, "no-such-task", None, None)
        .await
        .unwrap_err();

    assert_eq!(finished.code, ErrorCode::AlreadyFinal, "{finished:?}");
    assert!(finished.message.contains("succeeded"), "{finished:?}");
    assert_eq!(other_tenant.code, ErrorCode::NotFound);
    assert_eq!(unknown.code, ErrorCode::NotFound);
    assert_eq!(task_get(&fleet.client, "done-1").await.unwrap(), before);
    let result = result_of(&fleet.js, "acme", "done-1").await.unwrap();
    assert_eq!(result.status, TaskStatus::Succeeded);
    assert!(events_of(&fleet, "cancelled", "done-1").await.is_empty());
}

#[tokio::test]
async fn a_delayed_task_stays_queued_until_its_time_then_runs() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &[], None).await;
    let task = json!({"tenant": "acme", "id": "later-1", "delay": "2s", "payload": {"op": "echo", "data": "on time"}});
    submit(&fleet.client, &task).await.unwrap();

    let waiting = wait_for("the task's record", FINISH, || async {
        task_get(&fleet.client, "later-1").await
    })
    .await;
    let not_before = waiting.spec.not_before.expect("not_before is recorded");
    let wait = not_before - waiting.spec.submitted_at;
    assert!(
        wait >= time::Duration::milliseconds(1990) && wait <= time::Duration::milliseconds(2100),
        "delay 2s became a wait of {wait}"
    );
    // The agent received it and handed it back until its time: the queue
    // holds it delivered and unacknowledged, nothing waiting, nothing running.
    wait_for(
        "the agent to hand the task back until its time",
        FINISH,
        || async {
            let reply: clawfleet_shared::api::QueuesReply =
                request(&fleet.client, subjects::API_QUEUES_LIST, vec![])
                    .await
                    .ok()?;
            reply
                .queues
                .iter()
                .any(|q| {
                    q.tenant == "acme"
                        && q.priority == clawfleet_shared::Priority::Normal
                        && (q.waiting, q.running, q.delayed) == (0, 0, 1)
                })
                .then_some(())
        },
    )
    .await;
    assert!(
        clawfleet_shared::timefmt::now() < not_before,
        "seen handed back before its time"
    );
    // Meanwhile the record is untouched.
    while clawfleet_shared::timefmt::now() < not_before - time::Duration::milliseconds(150) {
        let record = task_get(&fleet.client, "later-1").await.unwrap();
        assert_eq!(record.status, TaskStatus::Queued);
        assert!(record.attempts.is_empty(), "{:?}", record.attempts);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let record = wait_final(&fleet.client, "later-1", FINISH).await;
    assert_eq!(record.status, TaskStatus::Succeeded);
    assert_eq!(record.attempts.len(), 1, "the wait cost no attempt");
    assert_eq!(record.attempts[0].attempt, 1);
    assert!(
        record.attempts[0].started_at >= not_before,
        "started at {} before its not_before {not_before}",
        record.attempts[0].started_at
    );
}

#[tokio::test]
async fn a_delayed_task_can_be_cancelled_while_it_waits() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &[], None).await;
    let task = json!({"tenant": "acme", "id": "later-2", "delay": "1s", "payload": {"op": "echo", "data": 1}});
    submit(&fleet.client, &task).await.unwrap();
    wait_for("the task's record", FINISH, || async {
        task_get(&fleet.client, "later-2").await
    })
    .await;

    let reply = cancel(&fleet, "later-2", None, None).await.unwrap();

    assert_eq!(reply.status, TaskStatus::Cancelled);
    // Past its time the agent gets the message again and drops it.
    wait_for("the queue to be empty", FINISH, || async {
        (queued_messages(&fleet).await == 0).then_some(())
    })
    .await;
    let record = task_get(&fleet.client, "later-2").await.unwrap();
    assert!(clawfleet_shared::timefmt::now() > record.spec.not_before.unwrap());
    assert_eq!(record.status, TaskStatus::Cancelled);
    assert!(record.attempts.is_empty());
    assert!(events_of(&fleet, "started", "later-2").await.is_empty());
}

#[tokio::test]
async fn delays_are_checked_and_a_past_not_before_means_now() {
    let mut fleet = Fleet::with(|c| c.max_delay = Duration::from_secs(3600)).await;
    fleet.agent("a1", &[], None).await;

    let both = submit(
        &fleet.client,
        &json!({"tenant": "acme", "delay": "1s", "not_before": "2030-01-01T00:00:00Z"}),
    )
    .await
    .unwrap_err();
    let too_long = submit(&fleet.client, &json!({"tenant": "acme", "delay": "2h"}))
        .await
        .unwrap_err();
    let too_far = submit(
        &fleet.client,
        &json!({"tenant": "acme", "not_before": "2099-01-01T00:00:00Z"}),
    )
    .await
    .unwrap_err();
    let garbled = submit(
        &fleet.client,
        &json!({"tenant": "acme", "not_before": "tomorrow"}),
    )
    .await
    .unwrap_err();
    let past = submit(
        &fleet.client,
        &json!({"tenant": "acme", "not_before": "2020-01-01T00:00:00Z", "payload": {"op": "echo", "data": 1}}),
    )
    .await
    .unwrap();

    for e in [&both, &too_long, &too_far, &garbled] {
        assert_eq!(e.code, ErrorCode::InvalidDelay, "{e:?}");
    }
    assert!(too_long.message.contains("1h"), "{too_long:?}");
    let record = wait_final(&fleet.client, &past.id, FINISH).await;
    assert_eq!(record.status, TaskStatus::Succeeded);
}

async fn replay(fleet: &Fleet, req: &DlqReplayRequest) -> DlqReplayReply {
    request(
        &fleet.client,
        subjects::API_DLQ_REPLAY,
        serde_json::to_vec(req).unwrap(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_failed_task_replayed_from_the_dead_letters_runs_again_as_a_linked_task_once() {
    let mut fleet = Fleet::new().await;
    // The task fails on `flawed` only; `sound` runs it fine.
    fleet.agent("flawed", &["code"], None).await;
    let task = json!({
        "tenant": "acme", "id": "build-7", "priority": "high", "requires": ["code"],
        "timeout": "30s", "max_attempts": 1, "labels": {"ticket": "OPS-1"},
        "payload": {"op": "fail", "on": ["flawed"], "message": "flawed tools", "data": "built"},
    });
    submit(&fleet.client, &task).await.unwrap();
    assert_eq!(
        wait_final(&fleet.client, "build-7", FINISH).await.status,
        TaskStatus::Failed
    );
    let letter = wait_for("the dead letter", FINISH, || async {
        dead_letters(&fleet, DlqReason::Failed)
            .await
            .into_iter()
            .find(|e| e.id.as_deref() == Some("build-7"))
    })
    .await;
    let seq = letter.seq.unwrap();
    fleet.take_agent("flawed").stop().await;
    fleet.agent("sound", &["code"], None).await;

    // dlq.get shows the same entry; an unknown sequence is not found.
    let shown: DlqEntry = request(
        &fleet.client,
        subjects::API_DLQ_GET,
        serde_json::to_vec(&DlqGetRequest { seq, tenant: None }).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(shown.id.as_deref(), Some("build-7"));
    assert_eq!(shown.seq, Some(seq));
    let missing = request::<DlqEntry>(
        &fleet.client,
        subjects::API_DLQ_GET,
        serde_json::to_vec(&DlqGetRequest {
            seq: seq + 1000,
            tenant: None,
        })
        .unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(missing.code, ErrorCode::NotFound);

    let by_seq = DlqReplayRequest {
        seqs: vec![seq],
        ..Default::default()
    };
    let first = replay(&fleet, &by_seq).await;

    let new_id = format!("build-7-r{seq}");
    assert_eq!(first.entries.len(), 1, "{first:?}");
    let entry = &first.entries[0];
    assert_eq!(entry.error, None, "{entry:?}");
    assert_eq!(entry.id.as_deref(), Some(new_id.as_str()));
    assert_eq!(entry.original_id.as_deref(), Some("build-7"));
    assert_eq!(entry.status, Some(TaskStatus::Queued));
    assert!(!entry.duplicate);
    let replayed = wait_final(&fleet.client, &new_id, FINISH).await;
    assert_eq!(replayed.status, TaskStatus::Succeeded, "{replayed:?}");
    assert_eq!(replayed.result, Some(json!("built")));
    assert_eq!(
        replayed.spec.replay_of,
        Some(ReplayOf {
            id: Some("build-7".into()),
            dlq_seq: seq
        })
    );
    let original = task_get(&fleet.client, "build-7").await.unwrap();
    assert_eq!(
        original.status,
        TaskStatus::Failed,
        "the original is left as it was"
    );
    for (field, was, now) in [
        (
            "priority",
            json!(original.spec.priority),
            json!(replayed.spec.priority),
        ),
        (
            "requires",
            json!(original.spec.requires),
            json!(replayed.spec.requires),
        ),
        (
            "labels",
            json!(original.spec.labels),
            json!(replayed.spec.labels),
        ),
        (
            "payload",
            original.spec.payload.clone(),
            replayed.spec.payload.clone(),
        ),
        (
            "timeout",
            json!(original.spec.timeout),
            json!(replayed.spec.timeout),
        ),
        (
            "max_attempts",
            json!(original.spec.max_attempts),
            json!(replayed.spec.max_attempts),
        ),
        (
            "retry",
            json!(original.spec.retry),
            json!(replayed.spec.retry),
        ),
    ] {
        assert_eq!(was, now, "{field} was not carried over");
    }

    // Again, by filter this time: the same task is found, nothing new runs.
    let again = replay(
        &fleet,
        &DlqReplayRequest {
            tenant: Some("acme".into()),
            reason: Some(DlqReason::Failed),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(again.entries.len(), 1, "{again:?}");
    assert_eq!(again.entries[0].id.as_deref(), Some(new_id.as_str()));
    assert!(again.entries[0].duplicate, "{again:?}");
    assert_eq!(again.entries[0].status, Some(TaskStatus::Succeeded));
    let mut queue = fleet.js.get_stream(subjects::STREAM_QUEUE).await.unwrap();
    assert_eq!(
        queue.info().await.unwrap().state.last_sequence,
        2,
        "the original and one replay were ever queued"
    );
}

#[tokio::test]
async fn a_rejected_submission_replayed_after_its_cause_is_fixed_runs_and_a_still_bad_one_is_refused(
) {
    let mut fleet = Fleet::new().await;
    fleet.agent("plain", &[], None).await;
    // Refused on intake: nobody offers gpu yet; and a plain typo.
    publish_intake(
        &fleet.js,
        "acme",
        br#"{"id": "needs-gpu", "requires": ["gpu"], "payload": {"op": "echo", "data": "rendered"}}"#
            .to_vec(),
    )
    .await;
    publish_intake(
        &fleet.js,
        "acme",
        br#"{"id": "typo", "priority": "urgent"}"#.to_vec(),
    )
    .await;
    let rejected = wait_for("two rejected dead letters", FINISH, || async {
        let entries = dead_letters(&fleet, DlqReason::Rejected).await;
        (entries.len() == 2).then_some(entries)
    })
    .await;
    let seq_of = |id: &str| {
        rejected
            .iter()
            .find(|e| e.task["id"] == id)
            .and_then(|e| e.seq)
            .unwrap()
    };
    let (gpu_seq, typo_seq) = (seq_of("needs-gpu"), seq_of("typo"));
    fleet.agent("gpu-1", &["gpu"], None).await;

    let by_filter = DlqReplayRequest {
        tenant: Some("acme".into()),
        reason: Some(DlqReason::Rejected),
        ..Default::default()
    };
    let dry = replay(
        &fleet,
        &DlqReplayRequest {
            dry_run: true,
            ..by_filter.clone()
        },
    )
    .await;
    let first = replay(&fleet, &by_filter).await;

    assert!(dry.dry_run);
    assert_eq!(dry.entries.len(), 2, "{dry:?}");
    assert!(dry.entries.iter().all(|e| e.status.is_none()), "{dry:?}");
    let seqs: Vec<u64> = first.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [gpu_seq, typo_seq], "oldest first");
    let (gpu, typo) = (&first.entries[0], &first.entries[1]);
    let new_id = format!("needs-gpu-r{gpu_seq}");
    assert_eq!(gpu.id.as_deref(), Some(new_id.as_str()), "{gpu:?}");
    assert_eq!(gpu.status, Some(TaskStatus::Queued));
    assert_eq!(
        typo.error.as_ref().map(|e| e.code),
        Some(ErrorCode::InvalidPriority),
        "{typo:?}"
    );
    assert_eq!(typo.status, None);
    let record = wait_final(&fleet.client, &new_id, FINISH).await;
    assert_eq!(record.status, TaskStatus::Succeeded);
    assert_eq!(record.spec.tenant, "acme", "the intake subject's tenant");
    assert_eq!(record.attempts[0].agent, "gpu-1");
    assert_eq!(
        record.spec.replay_of,
        Some(ReplayOf {
            id: Some("needs-gpu".into()),
            dlq_seq: gpu_seq
        })
    );

    let again = replay(&fleet, &by_filter).await;
    assert!(again.entries[0].duplicate, "{again:?}");
    assert_eq!(again.entries[0].id.as_deref(), Some(new_id.as_str()));
    assert_eq!(
        again.entries[1].error.as_ref().map(|e| e.code),
        Some(ErrorCode::InvalidPriority)
    );
    assert_eq!(
        dead_letters(&fleet, DlqReason::Rejected).await.len(),
        2,
        "a refused replay adds no dead letter"
    );
    let unfiltered =
        request::<DlqReplayReply>(&fleet.client, subjects::API_DLQ_REPLAY, b"{}".to_vec())
            .await
            .unwrap_err();
    assert_eq!(unfiltered.code, ErrorCode::InvalidRequest);
}

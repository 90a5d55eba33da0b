//! The happy path: submit both ways, results readable after the fact, idempotency.

use clawfleet_shared::{subjects, TaskStatus};
use clawfleet_testkit::client::{publish_intake, submit, task_get, wait_final};
use clawfleet_testkit::wait_for;
use futures::StreamExt;
use serde_json::json;

use crate::{Fleet, FINISH};

/// Reads the one result of a task from the results stream, as a late subscriber would.
async fn read_result(fleet: &Fleet, tenant: &str, id: &str) -> serde_json::Value {
    let stream = fleet.js.get_stream(subjects::STREAM_RESULTS).await.unwrap();
    let msg = stream
        .get_last_raw_message_by_subject(&subjects::result(tenant, id))
        .await
        .expect("result is kept in the stream");
    serde_json::from_slice(&msg.payload).unwrap()
}

#[tokio::test]
async fn tasks_submitted_by_request_and_by_intake_both_complete_with_results_readable_later() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &["general"], None).await;

    let reply = submit(
        &fleet.client,
        &json!({"tenant": "acme", "payload": {"op": "echo", "data": "by request"}}),
    )
    .await
    .expect("accepted");
    assert_eq!(reply.status, TaskStatus::Queued);
    assert!(!reply.duplicate);

    publish_intake(
        &fleet.js,
        "acme",
        serde_json::to_vec(
            &json!({"id": "intake-1", "payload": {"op": "echo", "data": "by intake"}}),
        )
        .unwrap(),
    )
    .await;

    let by_request = wait_final(&fleet.client, &reply.id, FINISH).await;
    let by_intake = wait_final(&fleet.client, "intake-1", FINISH).await;
    assert_eq!(by_request.status, TaskStatus::Succeeded);
    assert_eq!(by_request.result, Some(json!("by request")));
    assert_eq!(by_intake.status, TaskStatus::Succeeded);
    assert_eq!(by_intake.spec.tenant, "acme");
    assert_eq!(by_intake.attempts.len(), 1);
    assert_eq!(by_intake.attempts[0].agent, "a1");

    // Subscribing only now, after both finished, still finds both results.
    let r1 = read_result(&fleet, "acme", &reply.id).await;
    let r2 = read_result(&fleet, "acme", "intake-1").await;
    assert_eq!(r1["status"], "succeeded");
    assert_eq!(r1["result"], "by request");
    assert_eq!(r2["result"], "by intake");
    assert_eq!(r2["attempts"], 1);
}

#[tokio::test]
async fn lifecycle_events_are_published_for_each_step() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &[], None).await;
    let mut events = fleet
        .client
        .subscribe(subjects::TASK_EVENTS_ALL)
        .await
        .unwrap();
    fleet.client.flush().await.unwrap();

    let reply = submit(
        &fleet.client,
        &json!({"tenant": "acme", "payload": {"op": "echo", "data": 1}}),
    )
    .await
    .unwrap();
    let mut kinds = Vec::new();
    while kinds.last().map(String::as_str) != Some("succeeded") {
        let msg = tokio::time::timeout(FINISH, events.next())
            .await
            .expect("event in time")
            .unwrap();
        let event: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(event["id"], reply.id.as_str());
        assert_eq!(
            msg.subject.as_str(),
            subjects::task_event(event["kind"].as_str().unwrap(), "acme")
        );
        kinds.push(event["kind"].as_str().unwrap().to_string());
    }
    assert_eq!(kinds, ["queued", "started", "succeeded"]);
}

#[tokio::test]
async fn the_same_id_submitted_twice_runs_once() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &[], None).await;
    let task = json!({"id": "once", "tenant": "acme", "payload": {"op": "echo", "data": 7}});

    let first = submit(&fleet.client, &task).await.unwrap();
    let second = submit(&fleet.client, &task).await.unwrap();
    assert_eq!(first.id, "once");
    assert!(!first.duplicate);
    assert_eq!(second.id, "once");
    assert!(second.duplicate, "a known id is reported as a duplicate");

    let record = wait_final(&fleet.client, "once", FINISH).await;
    assert_eq!(record.attempts.len(), 1);

    // After it finished: still a duplicate, reporting the current status.
    let third = submit(&fleet.client, &task).await.unwrap();
    assert!(third.duplicate);
    assert_eq!(third.status, TaskStatus::Succeeded);
    // And by intake, beyond the request path: ignored, still one attempt.
    let seq = fleet
        .js
        .publish(
            subjects::intake("acme"),
            serde_json::to_vec(&task).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    // Once the dispatcher has acknowledged that message, it has decided.
    wait_for("the dispatcher to handle the duplicate", FINISH, || async {
        let stream = fleet.js.get_stream(subjects::STREAM_INTAKE).await.ok()?;
        let info = stream
            .consumer_info(subjects::CONSUMER_DISPATCHER)
            .await
            .ok()?;
        (info.ack_floor.stream_sequence >= seq).then_some(())
    })
    .await;
    let record = task_get(&fleet.client, "once").await.unwrap();
    assert_eq!(record.attempts.len(), 1, "a duplicate never runs again");
    assert_eq!(record.status, TaskStatus::Succeeded);
}

#[tokio::test]
async fn an_id_used_by_one_tenant_is_refused_to_another() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &[], None).await;
    submit(
        &fleet.client,
        &json!({"id": "shared-id", "tenant": "acme", "payload": {"op": "echo"}}),
    )
    .await
    .unwrap();
    wait_final(&fleet.client, "shared-id", FINISH).await;
    let err = submit(
        &fleet.client,
        &json!({"id": "shared-id", "tenant": "globex", "payload": {"op": "echo"}}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, clawfleet_shared::ErrorCode::IdConflict);
}

#[tokio::test]
async fn a_command_agent_runs_its_program_and_stops_it_at_the_task_timeout() {
    let mut fleet = Fleet::new().await;
    let mut config = clawfleet_testkit::agent_config(fleet.server.url(), "shell", &["shell"]);
    // Upper-cases the payload, or sleeps when asked to.
    let script = r#"input=$(cat); case "$input" in *sleep*) exec sleep 30;; esac; printf '%s' "$input" | tr a-z A-Z"#;
    config.executor = clawfleet_agent::config::ExecutorConfig::Command {
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        probe: vec!["true".into()],
    };
    fleet.agent_with(config).await;

    let shout = submit(
        &fleet.client,
        &json!({"tenant": "acme", "requires": ["shell"], "payload": {"text": "hello"}}),
    )
    .await
    .unwrap();
    let record = wait_final(&fleet.client, &shout.id, FINISH).await;
    assert_eq!(record.status, TaskStatus::Succeeded);
    assert_eq!(record.result, Some(json!({"TEXT": "HELLO"})));

    let stuck = submit(
        &fleet.client,
        &json!({"tenant": "acme", "requires": ["shell"], "timeout": "500ms", "max_attempts": 1, "payload": "sleep"}),
    )
    .await
    .unwrap();
    let record = wait_final(&fleet.client, &stuck.id, FINISH).await;
    assert_eq!(record.status, TaskStatus::Failed);
    assert_eq!(
        record.failure.unwrap().code,
        clawfleet_shared::ErrorCode::Timeout
    );
}

#[tokio::test]
async fn more_followers_of_the_queue_registry_than_the_servers_default_limit_still_leave_room() {
    // nats-server 2.15 allows 1,000 consumers per stream unless the stream
    // sets its own limit: as many agents following the queue registry
    // would stop any new queue from being listed, and so any new task.
    let mut fleet = Fleet::new().await;
    let registry = fleet
        .js
        .get_stream(format!("KV_{}", subjects::BUCKET_QUEUES))
        .await
        .unwrap();
    let mut followers = Vec::new();
    for _ in 0..1001 {
        followers.push(
            registry
                .create_consumer(async_nats::jetstream::consumer::pull::Config {
                    inactive_threshold: std::time::Duration::from_secs(60),
                    ..Default::default()
                })
                .await
                .expect("a follower of the queue registry"),
        );
    }
    fleet.agent("a1", &[], None).await;
    let id = submit(
        &fleet.client,
        &json!({"tenant": "acme", "payload": {"op": "echo"}}),
    )
    .await
    .expect("accepted")
    .id;
    assert_eq!(
        wait_final(&fleet.client, &id, FINISH).await.status,
        TaskStatus::Succeeded
    );
}

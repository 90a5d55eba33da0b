//! Bad input: a clear error, a record of the refusal, and nothing enqueued.

use std::time::Duration;

use clawfleet_shared::api::{DlqListReply, DlqListRequest, DlqReason};
use clawfleet_shared::{subjects, ErrorCode, TaskStatus};
use clawfleet_testkit::client::{
    publish_intake, request, stream_messages, submit, submit_raw, wait_final,
};
use clawfleet_testkit::wait_for;
use serde_json::json;

use crate::{Fleet, FINISH};

async fn dlq(fleet: &Fleet, req: DlqListRequest) -> DlqListReply {
    request(
        &fleet.client,
        subjects::API_DLQ_LIST,
        serde_json::to_vec(&req).unwrap(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn each_kind_of_bad_submission_gets_its_error_code_and_nothing_is_enqueued() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &["code"], Some("eu")).await;
    let big = "x".repeat(300 * 1024);
    let cases: Vec<(Vec<u8>, ErrorCode)> = vec![
        (b"this is not json".to_vec(), ErrorCode::InvalidJson),
        (
            br#"{"payload": {"op": "echo"}}"#.to_vec(),
            ErrorCode::MissingTenant,
        ),
        (
            br#"{"tenant": "acme", "priority": "urgent"}"#.to_vec(),
            ErrorCode::InvalidPriority,
        ),
        (
            format!(r#"{{"tenant": "acme", "payload": "{big}"}}"#).into_bytes(),
            ErrorCode::PayloadTooLarge,
        ),
        (
            br#"{"tenant": "acme", "requires": ["gpu"]}"#.to_vec(),
            ErrorCode::UnknownCapability,
        ),
        (
            br#"{"tenant": "acme", "requires": ["code"], "region": "us"}"#.to_vec(),
            ErrorCode::UnknownRegion,
        ),
        (
            br#"{"tenant": "acme", "timeout": "five minutes"}"#.to_vec(),
            ErrorCode::InvalidTimeout,
        ),
        (
            format!(r#"{{"tenant": "acme", "id": "{}"}}"#, "i".repeat(65)).into_bytes(),
            ErrorCode::IdTooLong,
        ),
        (
            br#"{"tenant": "Not A Tenant"}"#.to_vec(),
            ErrorCode::InvalidTenant,
        ),
        (
            br#"{"tenant": "acme", "max_attempts": 0}"#.to_vec(),
            ErrorCode::InvalidMaxAttempts,
        ),
        (
            br#"{"tenant": "acme", "priorty": "high"}"#.to_vec(),
            ErrorCode::UnknownField,
        ),
    ];
    for (body, code) in cases {
        let err = submit_raw(&fleet.client, body)
            .await
            .expect_err("bad input is refused");
        assert_eq!(err.code, code, "{}", err.message);
        assert!(!err.message.is_empty());
    }
    assert_eq!(stream_messages(&fleet.js, subjects::STREAM_INTAKE).await, 0);
    assert_eq!(stream_messages(&fleet.js, subjects::STREAM_QUEUE).await, 0);
    assert_eq!(
        stream_messages(&fleet.js, &format!("KV_{}", subjects::BUCKET_TASKS)).await,
        0
    );
}

#[tokio::test]
async fn bad_intake_messages_are_dead_lettered_with_their_reason_never_dropped() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &[], None).await;
    let mut rejected = fleet
        .client
        .subscribe(subjects::task_event("rejected", "acme"))
        .await
        .unwrap();
    fleet.client.flush().await.unwrap();

    publish_intake(&fleet.js, "acme", b"{not json".to_vec()).await;
    publish_intake(&fleet.js, "acme", br#"{"priority": "whenever"}"#.to_vec()).await;
    publish_intake(&fleet.js, "acme", br#"{"tenant": "globex"}"#.to_vec()).await;
    publish_intake(
        &fleet.js,
        "acme",
        br#"{"id": "needs-gpu", "requires": ["gpu"]}"#.to_vec(),
    )
    .await;
    // A good one behind them still runs.
    publish_intake(
        &fleet.js,
        "acme",
        br#"{"id": "fine", "payload": {"op": "echo", "data": 1}}"#.to_vec(),
    )
    .await;

    let entries = wait_for("four dead letters", FINISH, || async {
        let reply = dlq(
            &fleet,
            DlqListRequest {
                tenant: Some("acme".into()),
                ..Default::default()
            },
        )
        .await;
        (reply.entries.len() == 4).then_some(reply.entries)
    })
    .await;
    let mut codes: Vec<ErrorCode> = entries.iter().map(|e| e.failure.code).collect();
    codes.sort_by_key(|c| c.as_str());
    assert_eq!(
        codes,
        [
            ErrorCode::InvalidJson,
            ErrorCode::InvalidPriority,
            ErrorCode::TenantMismatch,
            ErrorCode::UnknownCapability
        ]
    );
    assert!(entries
        .iter()
        .all(|e| e.reason == DlqReason::Rejected && e.subject == "clawfleet.intake.acme"));
    let gpu = entries
        .iter()
        .find(|e| e.id.as_deref() == Some("needs-gpu"))
        .expect("id kept");
    assert_eq!(
        gpu.task["requires"],
        json!(["gpu"]),
        "the original task is kept for inspection"
    );
    let raw = entries
        .iter()
        .find(|e| e.failure.code == ErrorCode::InvalidJson)
        .unwrap();
    assert_eq!(
        raw.task,
        json!("{not json"),
        "an unparseable body is kept as text"
    );

    for _ in 0..4 {
        tokio::time::timeout(FINISH, futures::StreamExt::next(&mut rejected))
            .await
            .expect("rejected event");
    }
    assert_eq!(
        wait_final(&fleet.client, "fine", FINISH).await.status,
        TaskStatus::Succeeded
    );
    assert_eq!(
        stream_messages(&fleet.js, subjects::STREAM_INTAKE).await,
        0,
        "intake is fully consumed"
    );

    let only_invalid = dlq(
        &fleet,
        DlqListRequest {
            limit: Some(2),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(only_invalid.entries.len(), 2, "limit is honoured");
    let none = dlq(
        &fleet,
        DlqListRequest {
            reason: Some(DlqReason::Failed),
            ..Default::default()
        },
    )
    .await;
    assert!(none.entries.is_empty());
}

#[tokio::test]
async fn a_capability_nobody_offers_is_refused_until_an_agent_offering_it_joins() {
    let mut fleet = Fleet::new().await;
    fleet.agent("plain", &["general"], None).await;
    let task = json!({"tenant": "acme", "requires": ["gpu"], "payload": {"op": "echo", "data": "rendered"}});

    let err = submit(&fleet.client, &task).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownCapability);
    assert!(err.message.contains("gpu"), "{}", err.message);

    fleet.agent("renderer", &["general", "gpu"], None).await;
    let reply = submit(&fleet.client, &task)
        .await
        .expect("accepted once a gpu agent registered");
    let record = wait_final(&fleet.client, &reply.id, FINISH).await;
    assert_eq!(record.status, TaskStatus::Succeeded);
    assert_eq!(record.attempts[0].agent, "renderer");
}

#[tokio::test]
async fn a_profile_declared_in_config_queues_work_before_any_agent_offers_it() {
    clawfleet_testkit::init_tracing();
    let server = clawfleet_testkit::NatsServer::start();
    let mut config = clawfleet_testkit::dispatcher_config(server.url());
    config.profiles = vec![clawfleet_dispatcher::config::StaticProfile {
        name: "gpu".into(),
        capabilities: vec!["gpu".into()],
        region: None,
        tenants: vec![],
    }];
    let _dispatcher = clawfleet_testkit::start_dispatcher(config).await;
    let client = server.client().await;
    let reply = submit(
        &client,
        &json!({"tenant": "acme", "requires": ["gpu"], "payload": {"op": "echo", "data": 3}}),
    )
    .await
    .expect("declared profiles are accepted with no agent up");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = clawfleet_testkit::client::task_get(&client, &reply.id)
        .await
        .unwrap();
    assert_eq!(waiting.status, TaskStatus::Queued);

    let _agent = clawfleet_testkit::start_agent(clawfleet_testkit::agent_config(
        server.url(),
        "late-gpu",
        &["gpu"],
    ))
    .await;
    let record = wait_final(&client, &reply.id, FINISH).await;
    assert_eq!(record.result, Some(json!(3)));
}

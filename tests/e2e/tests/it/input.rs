//! Bad input: a clear error, a record of the refusal, and nothing enqueued.

use std::time::Duration;

use clawfleet_shared::api::{DlqListReply, DlqListRequest, DlqReason};
use clawfleet_shared::{subjects, ErrorCode, TaskStatus};
use clawfleet_testkit::client::{
    publish_intake, request, stream_messages, submit, submit_raw, wait_final,
};
use clawfleet_testkit::wait_for;
use serde_json::json;

use crate::{stream_subject_count, Fleet, FINISH};

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

#[tokio::test]
async fn dead_letters_too_large_to_list_at_once_are_paged_within_the_reply_budget() {
    let fleet = Fleet::new().await;
    // 300 bodies of 70 KB that are not JSON: each is kept as its summary,
    // about 2.5 KB listed, so all of them are several times the budget.
    let count = 300;
    for i in 0..count {
        // Control bytes are escaped six-fold in the listed head.
        let mut body = format!("not json {i:04} ").into_bytes();
        body.resize(70_000, 1);
        fleet
            .js
            .publish(subjects::intake("acme"), body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    wait_for("every body dead-lettered", FINISH * 3, || async {
        (stream_subject_count(&fleet, subjects::STREAM_DLQ, "clawfleet.dlq.rejected.acme").await
            == count)
            .then_some(())
    })
    .await;
    let budget = clawfleet_shared::api::reply_budget(fleet.client.server_info().max_payload);
    let mut req = DlqListRequest {
        limit: Some(1000),
        ..Default::default()
    };
    let mut seqs = Vec::new();
    let mut pages = 0;
    loop {
        let reply = fleet
            .client
            .request(
                subjects::API_DLQ_LIST,
                serde_json::to_vec(&req).unwrap().into(),
            )
            .await
            .expect("a reply, however many entries match");
        assert!(
            reply.payload.len() <= budget,
            "{} bytes",
            reply.payload.len()
        );
        let page: DlqListReply = serde_json::from_slice(&reply.payload).unwrap();
        pages += 1;
        for e in &page.entries {
            let summary = e.body.as_ref().expect("a large body is summarised");
            assert_eq!(summary.bytes, 70_000);
            assert!(e.task.is_null());
        }
        seqs.extend(page.entries.iter().map(|e| e.seq.unwrap()));
        match page.next_cursor {
            Some(cursor) => {
                assert!(page.truncated, "a page cut short says so");
                req.cursor = Some(cursor);
            }
            None => break,
        }
    }
    assert!(pages > 1, "the listing needed more than one page");
    let mut unique = seqs.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len() as u64, count, "every entry once, none twice");
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first");

    // The whole entry, by sequence, carries the digest of what was sent.
    let entry: clawfleet_shared::api::DlqEntry = request(
        &fleet.client,
        subjects::API_DLQ_GET,
        serde_json::to_vec(&json!({"seq": seqs[0]})).unwrap(),
    )
    .await
    .unwrap();
    let summary = entry.body.unwrap();
    // Dead letters are stored concurrently, so the newest may be any body.
    let prefix = &summary.head[..14];
    assert!(prefix.starts_with("not json "), "{prefix}");
    let mut sent = prefix.as_bytes().to_vec();
    sent.resize(70_000, 1);
    assert_eq!(
        summary.sha256,
        clawfleet_shared::api::BodySummary::of(&sent).sha256
    );
    assert_eq!(summary.sha256.len(), 64);
}

#[tokio::test]
async fn a_delayed_task_is_counted_delayed_not_running_also_once_cancelled() {
    use clawfleet_shared::api::{QueuesReply, TaskCancelReply};
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &["code"], None).await;
    let later = submit(
        &fleet.client,
        &json!({"tenant": "acme", "requires": ["code"], "delay": "1h", "payload": {"op": "echo"}}),
    )
    .await
    .unwrap();
    let busy = submit(
        &fleet.client,
        &json!({"tenant": "acme", "requires": ["code"], "payload": {"op": "sleep", "ms": 60000}}),
    )
    .await
    .unwrap();
    clawfleet_testkit::client::wait_running(&fleet.client, &busy.id, FINISH).await;
    // The agent took the delayed task and handed it back until its time;
    // the sleeping one runs, and its agent's heartbeat says so.
    let queue = wait_for("one running and one delayed", FINISH, || async {
        let reply: QueuesReply = request(&fleet.client, subjects::API_QUEUES_LIST, vec![])
            .await
            .ok()?;
        let q = reply
            .queues
            .into_iter()
            .find(|q| q.tenant == "acme" && q.priority == clawfleet_shared::Priority::Normal)?;
        (q.running == 1 && q.delayed == 1 && q.waiting == 0).then_some(q)
    })
    .await;
    assert_eq!(queue.requires, vec!["code".to_string()]);

    let cancelled: TaskCancelReply = request(
        &fleet.client,
        subjects::API_TASK_CANCEL,
        serde_json::to_vec(&json!({"id": later.id})).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    let reply: QueuesReply = request(&fleet.client, subjects::API_QUEUES_LIST, vec![])
        .await
        .unwrap();
    let q = reply
        .queues
        .iter()
        .find(|q| q.tenant == "acme" && q.priority == clawfleet_shared::Priority::Normal)
        .unwrap();
    assert_eq!(
        (q.running, q.delayed),
        (1, 1),
        "a cancelled delayed task is not running"
    );
}

#[tokio::test]
async fn requests_must_be_one_object_with_each_key_once() {
    use clawfleet_shared::api::{PauseRule, PausedReply};
    let fleet = Fleet::new().await;
    let call = |subject: &'static str, body: &'static str| {
        let client = fleet.client.clone();
        async move {
            request::<serde_json::Value>(&client, subject, body.as_bytes().to_vec())
                .await
                .err()
                .map(|e| e.code)
        }
    };
    // `[]` once paused every queue.
    assert_eq!(
        call(subjects::API_QUEUES_PAUSE, "[]").await,
        Some(ErrorCode::InvalidRequest)
    );
    assert_eq!(
        call(subjects::API_QUEUES_PAUSE, "").await,
        Some(ErrorCode::InvalidRequest)
    );
    assert_eq!(
        call(subjects::API_QUEUES_PAUSE, "{}").await,
        Some(ErrorCode::InvalidRequest),
        "pausing everything must say all"
    );
    let paused: PausedReply = request(
        &fleet.client,
        subjects::API_QUEUES_RESUME,
        br#"{"tenant": "acme"}"#.to_vec(),
    )
    .await
    .map(|_: PausedReply| unreachable!("nothing was paused"))
    .unwrap_or_else(|e| {
        assert_eq!(e.code, ErrorCode::NotFound);
        PausedReply::default()
    });
    assert!(paused.paused.is_empty());
    let all: PausedReply = request(
        &fleet.client,
        subjects::API_QUEUES_PAUSE,
        br#"{"all": true}"#.to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(
        all.paused,
        vec![PauseRule {
            all: true,
            ..Default::default()
        }]
    );
    for (subject, body) in [
        (subjects::API_TASK_GET, r#"["x"]"#),
        (subjects::API_TASK_GET, r#"{"id":"a","id":"b"}"#),
        (subjects::API_DLQ_GET, "[1]"),
        (subjects::API_DLQ_GET, r#"{"seq": 0}"#),
        (subjects::API_DLQ_LIST, r#"{"tenant":"a","tenant":"b"}"#),
        (subjects::API_TASK_CANCEL, "null"),
        (
            subjects::API_SUBMIT,
            r#"{"tenant":"acme","tenant":"globex"}"#,
        ),
    ] {
        assert_eq!(
            call(subject, body).await,
            Some(ErrorCode::InvalidRequest),
            "{subject} {body}"
        );
    }
}

#[tokio::test]
async fn an_error_about_a_huge_input_quotes_a_little_of_it_and_still_arrives() {
    let mut fleet = Fleet::new().await;
    fleet.agent("a1", &["code"], None).await;
    for body in [
        format!(r#"{{"tenant": "{}"}}"#, "x".repeat(1_000_000)),
        format!(
            r#"{{"tenant": "acme", "requires": ["{}"]}}"#,
            "C".repeat(1_000_000)
        ),
        format!(r#"{{"tenant": "acme", "id": "{}"}}"#, "i".repeat(1_000_000)),
    ] {
        let reply = fleet
            .client
            .request(subjects::API_SUBMIT, body.into_bytes().into())
            .await
            .expect("an answer");
        assert!(reply.payload.len() < 2048, "{} bytes", reply.payload.len());
        let error: clawfleet_shared::error::ErrorReply =
            serde_json::from_slice(&reply.payload).unwrap();
        assert!(
            error.error.message.contains("bytes)"),
            "{}",
            error.error.message
        );
    }
}

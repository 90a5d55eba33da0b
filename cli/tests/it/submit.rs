//! `clawfleet submit`: one task, its reply, and with `--wait` its result.

use crate::Fleet;

#[tokio::test]
async fn submit_wait_prints_the_echoed_result() {
    let fleet = Fleet::start(1).await;

    let run = fleet
        .run(&[
            "submit",
            "--tenant",
            "acme",
            "--payload",
            r#"{"op":"echo","data":"hi"}"#,
            "--wait",
        ])
        .await;

    assert_eq!(run.code, 0, "{run:#?}");
    let result = run.json();
    assert_eq!(result["status"], "succeeded");
    assert_eq!(result["result"], "hi");
    assert_eq!(result["tenant"], "acme");
}

#[tokio::test]
async fn submit_wait_on_a_task_that_already_finished_still_finds_its_result() {
    let fleet = Fleet::start(1).await;
    let args = [
        "submit",
        "--tenant",
        "acme",
        "--id",
        "again",
        "--payload",
        r#"{"op":"echo","data":7}"#,
        "--wait",
    ];
    assert_eq!(fleet.run(&args).await.code, 0);

    let run = fleet.run(&args).await;

    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json()["result"], 7);
    assert!(run.stderr.contains("duplicate"), "{run:#?}");
}

#[tokio::test]
async fn submit_wait_on_a_failing_task_exits_1_with_the_error() {
    let fleet = Fleet::start(1).await;

    let run = fleet
        .run(&[
            "submit",
            "--tenant",
            "acme",
            "--payload",
            r#"{"op":"fatal","message":"cannot"}"#,
            "--wait",
        ])
        .await;

    assert_eq!(run.code, 1, "{run:#?}");
    let result = run.json();
    assert_eq!(result["status"], "failed");
    assert_eq!(result["error"]["message"], "cannot");
}

#[tokio::test]
async fn submit_with_a_bad_priority_exits_2_with_invalid_priority() {
    let fleet = Fleet::start(1).await;

    let run = fleet
        .run(&[
            "submit",
            "--tenant",
            "acme",
            "--priority",
            "urgent",
            "--payload",
            r#"{"op":"echo"}"#,
        ])
        .await;

    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.starts_with("error: invalid_priority: "),
        "{run:#?}"
    );
    assert!(run.stdout.is_empty(), "{run:#?}");
}

#[tokio::test]
async fn submit_json_prints_the_reply_and_flags_reach_the_record() {
    let fleet = Fleet::start(1).await;

    let run = fleet
        .run(&[
            "--json",
            "submit",
            "--tenant",
            "acme",
            "--id",
            "labelled",
            "--priority",
            "high",
            "--requires",
            "general",
            "--timeout",
            "30s",
            "--max-attempts",
            "2",
            "--label",
            "team=infra",
            "--payload",
            r#"{"op":"echo"}"#,
        ])
        .await;

    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        run.json(),
        serde_json::json!({"id": "labelled", "status": "queued"})
    );
    let record = fleet
        .poll_json(&["task", "get", "labelled"], |_| true)
        .await;
    assert_eq!(record["priority"], "high");
    assert_eq!(record["requires"], serde_json::json!(["general"]));
    assert_eq!(record["timeout"], "30s");
    assert_eq!(record["max_attempts"], 2);
    assert_eq!(record["labels"], serde_json::json!({"team": "infra"}));
}

#[tokio::test]
async fn submit_reads_a_task_from_stdin() {
    let fleet = Fleet::start(1).await;

    let run = fleet
        .run_with_stdin(
            &["submit", "--file", "-", "--wait"],
            Some(r#"{"tenant": "acme", "payload": {"op": "echo", "data": [1, 2]}}"#),
        )
        .await;

    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json()["result"], serde_json::json!([1, 2]));
}

#[tokio::test]
async fn a_priority_in_capitals_is_accepted_and_stored_in_lowercase() {
    let fleet = Fleet::start(1).await;

    let run = fleet
        .run(&[
            "submit",
            "--tenant",
            "acme",
            "--id",
            "loud",
            "--priority",
            "HIGH",
            "--payload",
            r#"{"op":"echo"}"#,
        ])
        .await;

    assert_eq!(run.code, 0, "{run:#?}");
    let record = fleet.poll_json(&["task", "get", "loud"], |_| true).await;
    assert_eq!(record["priority"], "high");
    let paused = fleet
        .run(&["--json", "queues", "pause", "--priority", "Low"])
        .await;
    assert_eq!(paused.code, 0, "{paused:#?}");
    assert_eq!(paused.json()["paused"][0]["priority"], "low", "{paused:#?}");
    let dlq = fleet.run(&["dlq", "list", "--reason", "FAILED"]).await;
    assert_eq!(dlq.code, 0, "{dlq:#?}");
}

#[tokio::test]
async fn submit_without_a_payload_is_refused_before_anything_is_queued() {
    let fleet = Fleet::start(1).await;

    let run = fleet
        .run(&["submit", "--tenant", "acme", "--id", "empty"])
        .await;

    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("--payload"), "{run:#?}");
    let record = fleet.run(&["task", "get", "empty"]).await;
    assert!(
        record.stderr.starts_with("error: not_found: "),
        "{record:#?}"
    );
}

#[tokio::test]
async fn a_payload_the_simulator_cannot_run_fails_with_the_shapes_it_can() {
    let fleet = Fleet::start(1).await;

    let run = fleet
        .run(&[
            "submit",
            "--tenant",
            "acme",
            "--payload",
            r#"{"message":"summarise the tickets"}"#,
            "--wait",
        ])
        .await;

    assert_eq!(run.code, 1, "{run:#?}");
    let result = run.json();
    assert_eq!(result["status"], "failed");
    assert_eq!(result["error"]["code"], "executor_rejected", "{result}");
    let message = result["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(r#"has no "op""#), "{message}");
    assert!(
        message.contains(r#"{"message":"summarise the tickets"}"#),
        "{message}"
    );
    assert!(
        message.contains(r#"{"op":"echo","data":X}"#)
            && message.contains(r#"{"op":"sleep","ms":N}"#),
        "{message}"
    );
}

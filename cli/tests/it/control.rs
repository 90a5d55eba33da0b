//! Task control from the command line: `task cancel`, `submit --delay`,
//! `dlq show` and `dlq replay`.

use crate::Fleet;

#[tokio::test]
async fn task_cancel_stops_a_running_task_and_a_second_cancel_is_refused() {
    let fleet = Fleet::start(1).await;
    let run = fleet
        .run(&[
            "submit",
            "--tenant",
            "acme",
            "--id",
            "long",
            "--payload",
            r#"{"op":"sleep","ms":60000}"#,
        ])
        .await;
    assert_eq!(run.code, 0, "{run:#?}");
    fleet
        .poll_json(&["task", "get", "long"], |r| r["status"] == "running")
        .await;

    let cancelled = fleet
        .run(&[
            "task",
            "cancel",
            "long",
            "--reason",
            "changed my mind",
            "--wait",
        ])
        .await;
    let again = fleet.run(&["task", "cancel", "long"]).await;
    let human = fleet.run(&["task", "get", "long"]).await;

    assert_eq!(cancelled.code, 0, "{cancelled:#?}");
    let result = cancelled.json();
    assert_eq!(result["status"], "cancelled", "{result}");
    assert_eq!(result["error"]["code"], "cancelled", "{result}");
    assert!(
        result["error"]["message"]
            .as_str()
            .unwrap()
            .contains("changed my mind"),
        "{result}"
    );
    assert_eq!(again.code, 2, "{again:#?}");
    assert!(
        again.stderr.starts_with("error: already_final: "),
        "{again:#?}"
    );
    assert!(
        human.stdout.starts_with("task long  cancelled"),
        "{human:#?}"
    );
    assert!(human.stdout.contains("cancelled  "), "{human:#?}");
    assert!(human.stdout.contains("changed my mind"), "{human:#?}");
}

#[tokio::test]
async fn submit_with_a_delay_starts_the_task_no_earlier() {
    let fleet = Fleet::start(1).await;

    let run = fleet
        .run(&[
            "submit",
            "--tenant",
            "acme",
            "--id",
            "later",
            "--delay",
            "1s",
            "--payload",
            r#"{"op":"echo","data":"on time"}"#,
            "--wait",
        ])
        .await;

    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json()["result"], "on time");
    let record = fleet
        .poll_json(&["task", "get", "later"], |r| r["status"] == "succeeded")
        .await;
    let time = |v: &serde_json::Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert!(
        time(&record["attempts"][0]["started_at"]) >= time(&record["not_before"]),
        "{record}"
    );
}

#[tokio::test]
async fn dlq_show_and_replay_resubmit_a_failed_task_once() {
    let fleet = Fleet::start(1).await;
    let run = fleet
        .run(&[
            "submit",
            "--tenant",
            "acme",
            "--id",
            "bad",
            "--payload",
            r#"{"op":"fatal","message":"boom"}"#,
            "--wait",
        ])
        .await;
    assert_eq!(run.code, 1, "{run:#?}");
    let listed = fleet
        .poll_json(
            &["dlq", "list", "--reason", "failed", "--since", "1h"],
            |r| r["entries"][0].is_object(),
        )
        .await;
    let seq = listed["entries"][0]["seq"].as_u64().unwrap().to_string();

    let shown = fleet.run(&["dlq", "show", &seq]).await;
    let replayed = fleet.run(&["dlq", "replay", &seq]).await;
    let again = fleet
        .run(&[
            "--json",
            "dlq",
            "replay",
            "--dry-run",
            "--tenant",
            "acme",
            "--reason",
            "failed",
        ])
        .await;
    let unknown = fleet.run(&["dlq", "replay", "99999"]).await;

    assert_eq!(shown.code, 0, "{shown:#?}");
    assert!(
        shown
            .stdout
            .starts_with(&format!("dead letter {seq}  failed")),
        "{shown:#?}"
    );
    assert!(
        shown.stdout.contains("executor_rejected: boom"),
        "{shown:#?}"
    );
    assert!(shown.stdout.contains(r#""op": "fatal""#), "{shown:#?}");
    let new_id = format!("bad-r{seq}");
    assert_eq!(replayed.code, 0, "{replayed:#?}");
    assert!(replayed.stdout.contains(&new_id), "{replayed:#?}");
    assert!(replayed.stdout.contains("queued"), "{replayed:#?}");
    assert_eq!(again.code, 0, "{again:#?}");
    let again = again.json();
    assert_eq!(again["dry_run"], true);
    assert_eq!(again["entries"][0]["id"], new_id.as_str(), "{again}");
    assert_eq!(again["entries"][0]["duplicate"], true, "{again}");
    assert_eq!(unknown.code, 1, "{unknown:#?}");
    assert!(unknown.stdout.contains("not_found"), "{unknown:#?}");
    let record = fleet
        .poll_json(&["task", "get", &new_id], |r| r["status"] == "failed")
        .await;
    assert_eq!(record["replay_of"]["id"], "bad");
    assert_eq!(record["replay_of"]["dlq_seq"].to_string(), seq);
}

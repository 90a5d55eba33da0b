//! `clawfleet batch`: many tasks from a file, counted exactly.

use std::io::Write;

use crate::{Fleet, SETTLE};

fn jsonl(lines: &[String]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    for line in lines {
        writeln!(file, "{line}").expect("write line");
    }
    file.flush().expect("flush");
    file
}

#[tokio::test]
async fn a_batch_of_a_thousand_echo_tasks_all_succeed() {
    let fleet = Fleet::start(2).await;
    let lines: Vec<String> = (0..1000)
        .map(|n| {
            serde_json::json!({"tenant": "acme", "payload": {"op": "echo", "data": n}}).to_string()
        })
        .collect();
    let file = jsonl(&lines);

    let run = fleet
        .run(&["--json", "batch", file.path().to_str().unwrap()])
        .await;

    assert_eq!(run.code, 0, "{run:#?}");
    let summary = run.json();
    assert_eq!(summary["submitted"], 1000, "{summary}");
    assert_eq!(summary["duplicates"], 0, "{summary}");
    assert_eq!(summary["rejected"], 0, "{summary}");
    assert_eq!(summary["succeeded"], 1000, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert!(summary["elapsed_ms"].as_u64().is_some(), "{summary}");
}

#[tokio::test]
async fn a_batch_counts_rejected_lines_by_code_duplicates_and_failures() {
    let fleet = Fleet::start(1).await;
    let lines = [
        r#"{"tenant": "acme", "id": "one", "payload": {"op": "echo", "data": 1}}"#,
        "",
        "this is not json",
        r#"{"tenant": "acme", "priority": "urgent"}"#,
        r#"{"tenant": "acme", "id": "doomed", "payload": {"op": "fatal", "message": "no"}}"#,
        r#"{"tenant": "acme", "id": "one", "payload": {"op": "echo", "data": 1}}"#,
    ];
    let file = jsonl(&lines.map(String::from));

    let run = fleet
        .run(&["--json", "batch", file.path().to_str().unwrap()])
        .await;

    assert_eq!(run.code, 1, "{run:#?}");
    let s = run.json();
    assert_eq!(s["submitted"], 5, "{s}");
    assert_eq!(s["rejected"], 2, "{s}");
    assert_eq!(
        s["rejected_by_code"],
        serde_json::json!({"invalid_json": 1, "invalid_priority": 1}),
        "{s}"
    );
    assert_eq!(s["duplicates"], 1, "{s}");
    assert_eq!(s["succeeded"], 1, "{s}");
    assert_eq!(s["failed"], 1, "{s}");
    let rejected: Vec<(u64, &str)> = s["rejected_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rejected,
        [(3, "invalid_json"), (4, "invalid_priority")],
        "{s}"
    );
    assert!(
        s["rejected_lines"][1]["message"]
            .as_str()
            .is_some_and(|m| m.contains("urgent")),
        "{s}"
    );
}

#[tokio::test]
async fn a_batch_with_skip_leaves_out_the_first_lines_and_keeps_the_file_s_line_numbers() {
    let fleet = Fleet::start(1).await;
    let lines = [
        r#"{"tenant": "acme", "id": "sent-before", "payload": {"op": "echo", "data": 1}}"#,
        "not json either, but skipped",
        r#"{"tenant": "acme", "id": "after", "payload": {"op": "echo", "data": 3}}"#,
        "{broken",
    ];
    let file = jsonl(&lines.map(String::from));

    let run = fleet
        .run(&[
            "--json",
            "batch",
            "--skip",
            "2",
            file.path().to_str().unwrap(),
        ])
        .await;

    assert_eq!(run.code, 1, "{run:#?}");
    let s = run.json();
    assert_eq!(s["submitted"], 2, "{s}");
    assert_eq!(s["succeeded"], 1, "{s}");
    assert_eq!(s["rejected_lines"][0]["line"], 4, "{s}");
    let skipped = fleet.run(&["task", "get", "sent-before"]).await;
    assert!(
        skipped.stderr.starts_with("error: not_found: "),
        "{skipped:#?}"
    );
}

#[tokio::test]
async fn ctrl_c_during_a_batch_says_up_to_which_line_it_was_sent_and_how_to_resume() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    let fleet = Fleet::start(1).await;
    // One at a time, far more than can be sent before the interrupt.
    let lines: Vec<String> = (1..=50_000)
        .map(|n| {
            serde_json::json!({"tenant": "acme", "id": format!("t-{n}"), "payload": {"op": "echo", "data": n}})
                .to_string()
        })
        .collect();
    let file = jsonl(&lines);
    let path = file.path().to_str().unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_clawfleet"))
        .args(["--json", "batch", "--no-wait", "--concurrency", "1", path])
        .env("NATS_URL", fleet.server.url())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start clawfleet batch");
    let nats = fleet.server.client().await;
    clawfleet_testkit::wait_for("the first line to be submitted", SETTLE, || async {
        clawfleet_testkit::client::task_get(&nats, "t-1").await
    })
    .await;

    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGINT).unwrap();
    let out = tokio::time::timeout(SETTLE, child.wait_with_output())
        .await
        .expect("batch stops after Ctrl-C")
        .unwrap();

    assert_eq!(out.status.code(), Some(130), "{out:?}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
    assert_eq!(s["interrupted"], true, "{s}");
    let skip = s["resume_with_skip"].as_u64().expect("where to resume");
    assert!(skip > 0 && skip < 50_000, "{s}");
    assert_eq!(s["submitted"], skip, "{s}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "resume with: clawfleet batch {path} --skip {skip}"
        )),
        "{stderr}"
    );
    // Every line up to there was sent, none after it.
    let last = format!("t-{skip}");
    fleet.poll_json(&["task", "get", &last], |_| true).await;
    let next = fleet
        .run(&["task", "get", &format!("t-{}", skip + 1)])
        .await;
    assert!(next.stderr.starts_with("error: not_found: "), "{next:#?}");
}

#[tokio::test]
async fn a_batch_read_from_stdin_prints_a_human_summary() {
    let fleet = Fleet::start(1).await;
    let input = r#"{"tenant": "acme", "payload": {"op": "echo", "data": "a"}}
{"tenant": "beta", "payload": {"op": "echo", "data": "b"}}
{"tenant": "acme", "requires": ["gpu"]}
"#;

    let run = fleet.run_with_stdin(&["batch", "-"], Some(input)).await;

    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.contains("succeeded   2"), "{run:#?}");
    assert!(run.stdout.contains("unknown_capability: 1"), "{run:#?}");
    assert!(run.stdout.contains("line 3:"), "{run:#?}");
}

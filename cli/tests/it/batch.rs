//! `clawfleet batch`: many tasks from a file, counted exactly.

use std::io::Write;

use crate::Fleet;

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

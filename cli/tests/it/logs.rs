//! `clawfleet logs`: searching through the log aggregator, and following
//! the log subjects live.

use std::process::Stdio;
use std::time::Duration;

use clawfleet_shared::logs::{Level, LogLine};
use clawfleet_testkit::{log_aggregator_config, start_log_aggregator};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{Fleet, SETTLE};

#[tokio::test]
async fn logs_shows_a_tasks_lines_and_says_when_no_aggregator_runs() {
    let fleet = Fleet::start(1).await;
    let none = fleet.run(&["logs", "--task", "t1"]).await;
    assert_eq!(none.code, 2, "{none:#?}");
    assert!(
        none.stderr
            .starts_with("error: unavailable: no log aggregator is running"),
        "{none:#?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let _aggregator =
        start_log_aggregator(log_aggregator_config(fleet.server.url(), dir.path())).await;
    let submitted = fleet
        .run(&[
            "submit",
            "--tenant",
            "acme",
            "--id",
            "t1",
            "--payload",
            r#"{"op":"echo","data":"x"}"#,
            "--wait",
        ])
        .await;
    assert_eq!(submitted.code, 0, "{submitted:#?}");

    let reply = fleet
        .poll_json(&["logs", "--task", "t1"], |r| {
            r["lines"]
                .as_array()
                .is_some_and(|lines| lines.iter().any(|l| l["message"] == "attempt succeeded"))
        })
        .await;
    assert!(reply["lines"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["task_id"] == "t1" && l["tenant"] == "acme"));
    let human = fleet
        .run(&["logs", "--task", "t1", "--level", "debug"])
        .await;
    assert_eq!(human.code, 0, "{human:#?}");
    let last = human.stdout.lines().last().unwrap_or_default();
    assert!(
        last.ends_with(
            "DEBUG  agent/general-1  task=t1  tenant=acme  attempt succeeded  attempt=1"
        ),
        "the newest line comes last: {human:#?}"
    );
    let none = fleet.run(&["logs", "no-such-words-anywhere"]).await;
    assert_eq!(none.stdout, "no log lines match\n", "{none:#?}");
}

#[tokio::test]
async fn logs_follow_prints_only_matching_lines_as_they_come() {
    let fleet = Fleet::bare();
    let client = fleet.server.client().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_clawfleet"))
        .args([
            "--json", "logs", "--follow", "--tenant", "acme", "--level", "info", "disk",
        ])
        .env("NATS_URL", fleet.server.url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start clawfleet");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();

    let line = |level: Level, tenant: &str, message: &str| {
        let mut l = LogLine::new(level, "agent", message);
        l.tenant = Some(tenant.into());
        l
    };
    // It prints nothing until it has subscribed: publish until it shows.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + SETTLE;
    while seen.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing followed: {seen:?}"
        );
        for l in [
            line(Level::Debug, "acme", "disk too quiet to show"),
            line(Level::Info, "globex", "disk of another tenant"),
            line(Level::Info, "acme", "no matching words"),
            line(Level::Warn, "acme", "Disk on fire"),
        ] {
            client
                .publish(l.subject(), serde_json::to_vec(&l).unwrap().into())
                .await
                .unwrap();
        }
        if let Ok(Ok(Some(text))) =
            tokio::time::timeout(Duration::from_millis(200), out.next_line()).await
        {
            seen.push(serde_json::from_str::<LogLine>(&text).expect("a JSON log line"));
        }
    }
    child.kill().await.unwrap();
    for l in &seen {
        assert_eq!(l.message, "Disk on fire", "{seen:?}");
        assert_eq!(l.level, Level::Warn);
    }
}

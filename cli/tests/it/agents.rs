//! `clawfleet agents` with a health monitor: health, `--failing`, quarantine
//! and release.

use crate::Fleet;

#[tokio::test]
async fn agents_shows_health_and_an_operator_can_quarantine_and_release_an_agent() {
    let fleet = Fleet::start(2).await.with_monitor().await;

    let all = fleet
        .poll_json(&["agents"], |r| {
            r["agents"].as_array().is_some_and(|a| {
                a.len() == 2 && a.iter().all(|a| a["health"]["state"] == "healthy")
            })
        })
        .await;
    assert_eq!(all["agents"][0]["info"]["capabilities"][0], "general");
    let none_failing = fleet.run(&["agents", "--failing"]).await;
    assert_eq!(none_failing.code, 0, "{none_failing:#?}");
    assert!(
        none_failing.stdout.contains("no failing agents"),
        "{none_failing:#?}"
    );

    let q = fleet
        .run(&[
            "agents",
            "quarantine",
            "general-1",
            "--reason",
            "disk check",
        ])
        .await;
    assert_eq!(q.code, 0, "{q:#?}");
    assert!(
        q.stdout.contains("general-1 quarantined: disk check"),
        "{q:#?}"
    );
    let failing = fleet.run(&["--json", "agents", "--failing"]).await.json();
    let ids: Vec<&str> = failing["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["health"]["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["general-1"]);
    let table = fleet.run(&["agents"]).await;
    let line = table
        .stdout
        .lines()
        .find(|l| l.starts_with("general-1"))
        .unwrap_or_default();
    assert!(
        line.contains("quarantined") && line.contains("disk check"),
        "{table:#?}"
    );
    // The agent itself stops taking work.
    fleet
        .poll_json(&["agents"], |r| r["agents"][0]["info"]["pulling"] == false)
        .await;

    let released = fleet.run(&["agents", "release", "general-1"]).await;
    assert_eq!(released.code, 0, "{released:#?}");
    let again = fleet.run(&["agents", "release", "general-1"]).await;
    assert_eq!(again.code, 2, "{again:#?}");
    assert!(again.stderr.starts_with("error: not_found: "), "{again:#?}");
    let unknown = fleet.run(&["agents", "quarantine", "nobody"]).await;
    assert_eq!(unknown.code, 2, "{unknown:#?}");
}

#[tokio::test]
async fn agents_without_a_health_monitor_lists_registrations_and_says_health_is_unknown() {
    let fleet = Fleet::start(1).await;
    let run = fleet.run(&["agents"]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.contains("general-1"), "{run:#?}");
    assert!(run.stdout.contains("no health monitor"), "{run:#?}");
    let failing = fleet.run(&["agents", "--failing"]).await;
    assert_ne!(failing.code, 0, "{failing:#?}");
}

//! `clawfleet agents` with a health monitor: health, `--failing`, quarantine
//! and release.

use clawfleet_shared::health::FleetState;
use clawfleet_shared::subjects;
use clawfleet_testkit::client;
use serde_json::json;

use crate::{Fleet, SETTLE};

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
    // The pid to `kill -9` it by.
    let pid = all["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["health"]["agent_id"] == "general-1")
        .map(|a| a["info"]["pid"].to_string())
        .unwrap();
    let header = table.stdout.lines().next().unwrap_or_default();
    assert!(header.split_whitespace().any(|h| h == "pid"), "{table:#?}");
    assert!(line.contains(&format!("  {pid}  ")), "{table:#?}");
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
    assert!(
        unknown.stderr.starts_with("error: not_found: ") && unknown.stderr.contains("\"nobody\""),
        "{unknown:#?}"
    );
}

#[tokio::test]
async fn agents_without_a_health_monitor_lists_registrations_and_says_health_is_unknown() {
    let fleet = Fleet::start(1).await;
    let run = fleet.run(&["agents"]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.contains("general-1"), "{run:#?}");
    assert!(run.stdout.contains("no health monitor"), "{run:#?}");
    let failing = fleet.run(&["agents", "--failing"]).await;
    assert_eq!(failing.code, 2, "{failing:#?}");
    assert!(
        failing.stderr.contains("--failing needs a health monitor"),
        "{failing:#?}"
    );
}

/// Submits `task` `n` times (one attempt each), then waits until the
/// monitor has counted every attempt submitted so far (`counted`).
async fn run_tasks(
    nats: &async_nats::Client,
    task: serde_json::Value,
    n: u64,
    counted: &mut u64,
) -> FleetState {
    for _ in 0..n {
        let mut task = task.clone();
        task["tenant"] = "acme".into();
        task["max_attempts"] = 1.into();
        client::submit(nats, &task).await.expect("accepted");
    }
    *counted += n;
    let want = *counted;
    clawfleet_testkit::wait_for(
        &format!("the monitor to count {want} attempts"),
        SETTLE,
        || async {
            let state: FleetState = client::request(nats, subjects::API_FLEET_STATE, Vec::new())
                .await
                .ok()?;
            (state.agents.iter().map(|a| a.stats.attempts).sum::<u64>() == want).then_some(state)
        },
    )
    .await
}

fn stats_of<'a>(state: &'a FleetState, id: &str) -> &'a clawfleet_shared::health::FailureStats {
    &state
        .agents
        .iter()
        .find(|a| a.health.agent_id == id)
        .unwrap_or_else(|| panic!("no {id} in {state:?}"))
        .stats
}

#[tokio::test]
async fn agents_failing_flags_an_agent_failing_more_than_its_peers_not_failures_by_design() {
    // The monitor's own quarantine would catch general-1 first; this is
    // about what the CLI flags.
    let fleet = Fleet::start(3)
        .await
        .with_monitor_using(|c| c.quarantine.enabled = false)
        .await;
    let nats = fleet.server.client().await;
    let mut counted = 0;

    // Three tasks that fail wherever they run, among enough that work
    // that every agent has a sample.
    let by_design = json!({"payload": {"op": "fail", "message": "fails by design"}});
    let echo = json!({"payload": {"op": "echo", "data": 1}});
    let mut state = run_tasks(&nats, by_design, 3, &mut counted).await;
    for _ in 0..20 {
        if ["general-1", "general-2", "general-3"]
            .iter()
            .all(|id| stats_of(&state, id).attempts >= 40)
        {
            break;
        }
        state = run_tasks(&nats, echo.clone(), 60, &mut counted).await;
    }
    let failures: u64 = state.agents.iter().map(|a| a.stats.failures).sum();
    assert_eq!(failures, 3, "{state:?}");
    let none = fleet.run(&["agents", "--failing"]).await;
    assert_eq!(none.code, 0, "{none:#?}");
    assert_eq!(none.stdout.trim(), "no failing agents", "{none:#?}");

    // general-1 now fails tasks its peers run fine.
    let on_one = json!({"payload": {"op": "fail", "on": ["general-1"], "message": "broken here"}});
    for _ in 0..20 {
        if stats_of(&state, "general-1").failures >= 30 {
            break;
        }
        state = run_tasks(&nats, on_one.clone(), 30, &mut counted).await;
    }

    let failing = fleet.run(&["--json", "agents", "--failing"]).await;
    assert_eq!(failing.code, 0, "{failing:#?}");
    let agents = failing.json()["agents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ids: Vec<&str> = agents
        .iter()
        .filter_map(|a| a["health"]["agent_id"].as_str())
        .collect();
    assert_eq!(ids, ["general-1"], "{failing:#?}");
    let why = agents[0]["failing"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("fails ")
            && why.ends_with("for its 2 peers with the same capabilities (general)"),
        "{why}"
    );
    let table = fleet.run(&["agents", "--failing"]).await;
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with("general-1"))
        .unwrap_or_default();
    assert!(row.ends_with(why), "{table:#?}");
}

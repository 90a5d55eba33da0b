//! `clawfleet alerts` against a fleet with a health monitor and an alerter:
//! firing alerts, rules and their values, a dry-run test of a rule,
//! silences, and the history of transitions and notifications.

use clawfleet_testkit::{alerter_config, start_alerter};

use crate::{Fleet, SETTLE};

#[tokio::test]
async fn alerts_lists_tests_silences_and_tells_the_history() {
    let fleet = Fleet::start(2).await.with_monitor().await;
    let mut config = alerter_config(fleet.server.url());
    #[derive(serde::Deserialize)]
    struct Rules {
        rules: Vec<clawfleet_alerter::config::RuleConfig>,
    }
    config.rules = toml::from_str::<Rules>(
        r#"
[[rules]]
name = "agent_quarantined"
signal = { kind = "quarantined_agent" }
op = ">="
threshold = 1
annotations = { summary = "agent {{ $labels.agent }} is quarantined" }
"#,
    )
    .unwrap()
    .rules;
    let _alerter = start_alerter(config).await;

    let none = fleet.run(&["alerts"]).await;
    assert_eq!(none.code, 0, "{none:#?}");
    assert!(none.stdout.contains("no alerts"), "{none:#?}");
    // A dry run before anything is wrong: the rule reads 0 groups.
    let dry = fleet.run(&["alerts", "test", "agent_quarantined"]).await;
    assert_eq!(dry.code, 0, "{dry:#?}");
    assert!(dry.stdout.contains("would make no alert now"), "{dry:#?}");

    let q = fleet.run(&["agents", "quarantine", "general-1"]).await;
    assert_eq!(q.code, 0, "{q:#?}");
    let listed = fleet
        .poll_json(&["alerts"], |r| {
            r["alerts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["state"] == "firing"))
        })
        .await;
    assert_eq!(listed["alerts"][0]["labels"]["agent"], "general-1");
    let table = fleet.run(&["alerts"]).await;
    assert!(
        table.stdout.contains("agent general-1 is quarantined"),
        "{table:#?}"
    );
    let dry = fleet.run(&["alerts", "test", "agent_quarantined"]).await;
    assert!(
        dry.stdout.contains("would be firing") && dry.stdout.contains("agent=general-1"),
        "{dry:#?}"
    );
    let rules = fleet.run(&["alerts", "rules"]).await;
    assert!(
        rules.stdout.contains("quarantined_agent") && rules.stdout.contains(">= 1"),
        "{rules:#?}"
    );
    let unknown = fleet.run(&["alerts", "test", "nope"]).await;
    assert_eq!(unknown.code, 2, "{unknown:#?}");

    let silenced = fleet
        .run(&[
            "--json",
            "alerts",
            "silence",
            "-m",
            "agent=general-1",
            "--for",
            "1h",
            "--comment",
            "repairing",
        ])
        .await;
    assert_eq!(silenced.code, 0, "{silenced:#?}");
    let id = silenced.json()["id"].as_str().unwrap().to_string();
    fleet
        .poll_json(&["alerts"], |r| {
            r["alerts"][0]["silenced_by"][0].as_str() == Some(id.as_str())
        })
        .await;
    let silences = fleet.run(&["alerts", "silences"]).await;
    assert!(
        silences.stdout.contains(&id) && silences.stdout.contains("active"),
        "{silences:#?}"
    );
    let bad = fleet
        .run(&["alerts", "silence", "-m", "agent=~.*", "--comment", "all"])
        .await;
    assert_eq!(bad.code, 2, "{bad:#?}");
    let expired = fleet.run(&["alerts", "expire", &id]).await;
    assert_eq!(expired.code, 0, "{expired:#?}");

    let history = clawfleet_testkit::wait_for("the transition in the history", SETTLE, || async {
        let h = fleet.run(&["alerts", "history", "--since", "5m"]).await;
        (h.code == 0 && h.stdout.contains("firing") && h.stdout.contains("agent=general-1"))
            .then_some(h)
    })
    .await;
    assert!(!history.stdout.contains("NOT DELIVERED"), "{history:#?}");
}

//! The alerter against a real fleet: rules fire and resolve on crafted
//! conditions, notifications reach a real HTTP receiver on loopback in
//! Alertmanager's webhook shape, grouped, repeated, silenced, inhibited,
//! retried, and neither lost nor repeated across a restart or a second
//! replica.

use std::time::Duration;

use clawfleet_alerter::config::{Receiver, Webhook};
use clawfleet_shared::alerts::{AlertsReply, RulesReply, SilenceInfo, SilencesReply};
use clawfleet_shared::health::AgentControl;
use clawfleet_shared::subjects;
use clawfleet_testkit::client::request;
use clawfleet_testkit::webhook::WebhookReceiver;
use clawfleet_testkit::{
    alerter_config, monitor_config, start_alerter, start_health_monitor, wait_for, Service,
};
use serde_json::{json, Value};

use crate::Fleet;

/// Long enough for a few evaluations and a delivery on a loaded machine.
const NOTIFIED: Duration = Duration::from_secs(15);

/// An alerter config: these rules (TOML `[[rules]]` tables), one webhook
/// receiver `hook` at `url` grouping by `group_by`, short timings.
fn config(fleet: &Fleet, rules: &str, url: &str, group_by: &[&str]) -> clawfleet_alerter::Config {
    let mut config = alerter_config(fleet.server.url());
    #[derive(serde::Deserialize)]
    struct Rules {
        rules: Vec<clawfleet_alerter::config::RuleConfig>,
    }
    config.rules = toml::from_str::<Rules>(rules).expect("test rules").rules;
    config.route = serde_json::from_value(json!({
        "receiver": "hook",
        "group_by": group_by,
        "group_wait": "300ms",
        "group_interval": "600ms",
        "repeat_interval": "1h",
    }))
    .unwrap();
    config.receivers = vec![Receiver {
        name: "hook".to_string(),
        webhooks: vec![Webhook {
            url: url.to_string(),
            send_resolved: true,
            max_alerts: 0,
            timeout: Duration::from_secs(2),
        }],
    }];
    config.inhibit_rules = Vec::new();
    config.validate().expect("valid test config");
    config
}

const QUARANTINED: &str = r#"
[[rules]]
name = "agent_quarantined"
signal = { kind = "quarantined_agent" }
op = ">="
threshold = 1
severity = "warning"
annotations = { summary = "agent {{ $labels.agent }} is quarantined" }
"#;

async fn with_monitor(agents: &[&str]) -> (Fleet, Service) {
    let mut fleet = Fleet::new().await;
    let monitor = start_health_monitor(monitor_config(fleet.server.url())).await;
    for id in agents {
        fleet.agent(id, &[], None).await;
    }
    (fleet, monitor)
}

async fn quarantine(fleet: &Fleet, agent: &str) {
    let _: Value = request(
        &fleet.client,
        subjects::API_AGENT_QUARANTINE,
        serde_json::to_vec(&AgentControl {
            agent_id: agent.to_string(),
            reason: Some("test".to_string()),
        })
        .unwrap(),
    )
    .await
    .expect("quarantined");
}

async fn release(fleet: &Fleet, agent: &str) {
    let _: Value = request(
        &fleet.client,
        subjects::API_AGENT_RELEASE,
        serde_json::to_vec(&AgentControl {
            agent_id: agent.to_string(),
            reason: None,
        })
        .unwrap(),
    )
    .await
    .expect("released");
}

/// Waits until the receiver holds `n` bodies; returns them.
async fn received(hook: &WebhookReceiver, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} notifications"), NOTIFIED, || async {
        let got = hook.received();
        (got.len() >= n).then_some(got)
    })
    .await
}

fn agents_in(body: &Value) -> Vec<String> {
    let mut agents: Vec<String> = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["agent"].as_str().unwrap().to_string())
        .collect();
    agents.sort();
    agents
}

async fn alerts(fleet: &Fleet) -> AlertsReply {
    request(&fleet.client, subjects::API_ALERTS_LIST, b"{}".to_vec())
        .await
        .expect("alerts.list")
}

#[tokio::test]
async fn five_quarantined_agents_make_one_notification_in_alertmanagers_shape_and_resolve() {
    let ids = ["a1", "a2", "a3", "a4", "a5"];
    let (fleet, _monitor) = with_monitor(&ids).await;
    let hook = WebhookReceiver::start().await;
    let _alerter = start_alerter(config(&fleet, QUARANTINED, &hook.url(), &["alertname"])).await;
    for id in ids {
        quarantine(&fleet, id).await;
    }
    let first = received(&hook, 1).await;
    // One notification for the five, not five (they were quarantined
    // within the group's wait).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hook.received().len(), 1, "{:#?}", hook.received());
    let body = &first[0];
    // Alertmanager's webhook payload, version 4, field by field.
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "alerts",
        "commonAnnotations",
        "commonLabels",
        "externalURL",
        "groupKey",
        "groupLabels",
        "receiver",
        "status",
        "truncatedAlerts",
        "version",
    ];
    expected.sort();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort();
    assert_eq!(keys_sorted, expected);
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["receiver"], "hook");
    assert_eq!(body["truncatedAlerts"], 0);
    assert_eq!(
        body["groupLabels"],
        json!({"alertname": "agent_quarantined"})
    );
    assert_eq!(body["groupKey"], "{}:{alertname=\"agent_quarantined\"}");
    assert_eq!(
        body["commonLabels"],
        json!({"alertname": "agent_quarantined", "severity": "warning"})
    );
    assert_eq!(agents_in(body), ids);
    for alert in body["alerts"].as_array().unwrap() {
        let mut keys: Vec<&str> = alert
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "annotations",
                "endsAt",
                "fingerprint",
                "generatorURL",
                "labels",
                "startsAt",
                "status"
            ]
        );
        assert_eq!(alert["status"], "firing");
        assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(alert["fingerprint"].as_str().unwrap().len(), 16);
        let agent = alert["labels"]["agent"].as_str().unwrap();
        assert_eq!(
            alert["annotations"]["summary"],
            format!("agent {agent} is quarantined")
        );
        time::OffsetDateTime::parse(
            alert["startsAt"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("startsAt is RFC 3339");
    }
    // The API shows the same five firing.
    let listed = alerts(&fleet).await;
    assert_eq!(
        listed.alerts.iter().filter(|a| a.state == "firing").count(),
        5
    );
    assert!(listed.leader.is_some());

    // Two released: the next notification says so.
    release(&fleet, "a1").await;
    release(&fleet, "a2").await;
    let got = received(&hook, 2).await;
    let second = &got[1];
    assert_eq!(second["status"], "firing");
    let resolved: Vec<&str> = second["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["status"] == "resolved")
        .map(|a| a["labels"]["agent"].as_str().unwrap())
        .collect();
    let mut resolved = resolved;
    resolved.sort();
    assert_eq!(resolved, ["a1", "a2"], "{second:#}");
}

#[tokio::test]
async fn for_holds_an_alert_pending_and_one_that_clears_before_is_never_sent() {
    let (fleet, _monitor) = with_monitor(&["p1"]).await;
    let hook = WebhookReceiver::start().await;
    let rules = QUARANTINED.replace(
        "severity = \"warning\"",
        "severity = \"warning\"\nfor = \"2s\"",
    );
    let _alerter = start_alerter(config(&fleet, &rules, &hook.url(), &["alertname"])).await;

    // Quarantined for less than `for`: pending, then gone, never sent.
    quarantine(&fleet, "p1").await;
    wait_for("a pending alert", NOTIFIED, || async {
        alerts(&fleet)
            .await
            .alerts
            .iter()
            .any(|a| a.state == "pending")
            .then_some(())
    })
    .await;
    release(&fleet, "p1").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(hook.received().is_empty(), "{:#?}", hook.received());
    assert!(alerts(&fleet).await.alerts.is_empty());

    // Held past `for`: it fires, and not before.
    let since = std::time::Instant::now();
    quarantine(&fleet, "p1").await;
    let got = received(&hook, 1).await;
    assert!(
        since.elapsed() >= Duration::from_secs(2),
        "{:?}",
        since.elapsed()
    );
    assert_eq!(agents_in(&got[0]), ["p1"]);
}

#[tokio::test]
async fn a_silence_mutes_matching_alerts_until_it_is_expired() {
    let (fleet, _monitor) = with_monitor(&["s1", "s2"]).await;
    let hook = WebhookReceiver::start().await;
    let _alerter = start_alerter(config(&fleet, QUARANTINED, &hook.url(), &["agent"])).await;
    let silence: SilenceInfo = request(
        &fleet.client,
        subjects::API_ALERTS_SILENCE,
        serde_json::to_vec(&json!({
            "matchers": ["alertname=agent_quarantined", "agent=~s1|nobody"],
            "duration": "1h",
            "created_by": "ops",
            "comment": "s1 is being repaired",
        }))
        .unwrap(),
    )
    .await
    .expect("silence created");
    assert_eq!(silence.state, "active");
    quarantine(&fleet, "s1").await;
    quarantine(&fleet, "s2").await;
    let got = received(&hook, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Only s2's group was sent; s1's is muted, and shown as such.
    let got_now = hook.received();
    assert_eq!(got_now.len(), 1, "{got_now:#?}");
    assert_eq!(agents_in(&got[0]), ["s2"]);
    let listed = alerts(&fleet).await;
    let s1 = listed
        .alerts
        .iter()
        .find(|a| a.labels.get("agent").map(String::as_str) == Some("s1"))
        .expect("s1's alert listed");
    assert_eq!(s1.silenced_by, std::slice::from_ref(&silence.id));
    let silences: SilencesReply =
        request(&fleet.client, subjects::API_ALERTS_SILENCES, b"{}".to_vec())
            .await
            .unwrap();
    assert_eq!(silences.silences.len(), 1);

    // Expired: s1's alert is sent.
    let _: SilenceInfo = request(
        &fleet.client,
        subjects::API_ALERTS_EXPIRE,
        serde_json::to_vec(&json!({ "id": silence.id })).unwrap(),
    )
    .await
    .expect("expired");
    let got = received(&hook, 2).await;
    assert_eq!(agents_in(&got[1]), ["s1"]);
}

#[tokio::test]
async fn a_silence_that_would_match_everything_is_refused() {
    let (fleet, _monitor) = with_monitor(&[]).await;
    let hook = WebhookReceiver::start().await;
    let _alerter = start_alerter(config(&fleet, QUARANTINED, &hook.url(), &["agent"])).await;
    let refused = request::<SilenceInfo>(
        &fleet.client,
        subjects::API_ALERTS_SILENCE,
        serde_json::to_vec(&json!({
            "matchers": ["alertname=~.*"],
            "duration": "1h",
            "created_by": "ops",
            "comment": "everything",
        }))
        .unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        refused.code,
        clawfleet_shared::ErrorCode::InvalidRequest,
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_inhibiting_alert_mutes_what_it_explains() {
    // Two agents: one quarantined leaves its region with a healthy one.
    let (fleet, _monitor) = with_monitor(&["i1", "i2"]).await;
    let hook = WebhookReceiver::start().await;
    // A source that always holds (no agent is expected in region "mars"),
    // inhibiting quarantine alerts.
    let rules = format!(
        "{QUARANTINED}\n{}",
        r#"
[[rules]]
name = "region_empty"
signal = { kind = "healthy_agents", by = "region", expect = ["mars"] }
op = "<"
threshold = 1
severity = "critical"
"#
    );
    let mut config = config(&fleet, &rules, &hook.url(), &["alertname"]);
    config.inhibit_rules = serde_json::from_value(json!([{
        "source_matchers": ["alertname=region_empty"],
        "target_matchers": ["alertname=agent_quarantined"],
        "equal": [],
    }]))
    .unwrap();
    let _alerter = start_alerter(config).await;
    let got = received(&hook, 1).await;
    assert_eq!(got[0]["groupLabels"]["alertname"], "region_empty");
    quarantine(&fleet, "i1").await;
    wait_for("the quarantine alert, inhibited", NOTIFIED, || async {
        alerts(&fleet)
            .await
            .alerts
            .iter()
            .any(|a| a.inhibited && a.labels["alertname"] == "agent_quarantined")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hook.received().len(), 1, "{:#?}", hook.received());
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_notification_once_it_is_back() {
    let (fleet, _monitor) = with_monitor(&["d1", "d2"]).await;
    let hook = WebhookReceiver::start().await;
    hook.set_failing(true);
    let _alerter = start_alerter(config(&fleet, QUARANTINED, &hook.url(), &["agent"])).await;
    quarantine(&fleet, "d1").await;
    wait_for("refused deliveries", NOTIFIED, || async {
        (hook.refused() >= 3).then_some(())
    })
    .await;
    // Evaluation went on meanwhile: a new alert is seen at once.
    quarantine(&fleet, "d2").await;
    wait_for("d2 firing while the receiver is down", NOTIFIED, || async {
        alerts(&fleet)
            .await
            .alerts
            .iter()
            .any(|a| a.state == "firing" && a.labels.get("agent").map(String::as_str) == Some("d2"))
            .then_some(())
    })
    .await;
    hook.set_failing(false);
    let got = received(&hook, 2).await;
    let mut agents: Vec<String> = got.iter().flat_map(agents_in).collect();
    agents.sort();
    assert_eq!(agents, ["d1", "d2"]);
}

#[tokio::test]
async fn a_restarted_alerter_does_not_notify_again_what_it_sent() {
    let (fleet, _monitor) = with_monitor(&["r1"]).await;
    let hook = WebhookReceiver::start().await;
    let alerter = start_alerter(config(&fleet, QUARANTINED, &hook.url(), &["agent"])).await;
    quarantine(&fleet, "r1").await;
    received(&hook, 1).await;
    alerter.kill().await;
    // The lease of the killed one runs out; the new one takes over from the
    // stored alerts and notification log.
    let _alerter = start_alerter(config(&fleet, QUARANTINED, &hook.url(), &["agent"])).await;
    wait_for("the new alerter leading", NOTIFIED, || async {
        let a = alerts(&fleet).await;
        (a.leader.is_some() && a.alerts.iter().any(|a| a.state == "firing")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hook.received().len(), 1, "{:#?}", hook.received());
    // It does notify what changed.
    release(&fleet, "r1").await;
    let got = received(&hook, 2).await;
    assert_eq!(got[1]["status"], "resolved");
}

#[tokio::test]
async fn two_replicas_notify_once_and_a_killed_leader_is_replaced_within_its_lease() {
    let (fleet, _monitor) = with_monitor(&["x1", "x2"]).await;
    let hook = WebhookReceiver::start().await;
    let mut one = config(&fleet, QUARANTINED, &hook.url(), &["agent"]);
    one.replica = Some("one".to_string());
    let mut two = one.clone();
    two.replica = Some("two".to_string());
    let first = start_alerter(one).await;
    let second = start_alerter(two).await;
    quarantine(&fleet, "x1").await;
    received(&hook, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hook.received().len(), 1, "{:#?}", hook.received());

    let leader = alerts(&fleet).await.leader.expect("a leader");
    let (dead, survivor) = if leader == "one" {
        (first, "two")
    } else {
        (second, "one")
    };
    dead.kill().await;
    let killed = std::time::Instant::now();
    quarantine(&fleet, "x2").await;
    let got = received(&hook, 2).await;
    // Lease 1 s, evaluation every 100 ms, group wait 300 ms.
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(agents_in(&got[1]), ["x2"]);
    assert_eq!(alerts(&fleet).await.leader.as_deref(), Some(survivor));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hook.received().len(), 2, "{:#?}", hook.received());
}

#[tokio::test]
async fn queue_depth_and_oldest_age_fire_on_a_paused_queue_and_resolve_when_it_drains() {
    let (fleet, _monitor) = with_monitor(&["drainer"]).await;
    let pause = clawfleet_shared::api::PauseRule {
        tenant: Some("acme".into()),
        ..Default::default()
    };
    let _: Value = request(
        &fleet.client,
        subjects::API_QUEUES_PAUSE,
        serde_json::to_vec(&pause).unwrap(),
    )
    .await
    .expect("paused");
    let hook = WebhookReceiver::start().await;
    let rules = r#"
[[rules]]
name = "queue_deep"
signal = { kind = "queue_depth" }
op = ">="
threshold = 3
annotations = { summary = "{{ $value }} tasks wait in {{ $labels.queue }}" }

[[rules]]
name = "queue_old"
signal = { kind = "oldest_queued_age" }
op = ">"
threshold = 1
"#;
    let _alerter = start_alerter(config(&fleet, rules, &hook.url(), &["alertname"])).await;
    // The tenant's queues are paused: its tasks wait.
    let mut ids = Vec::new();
    for i in 0..3 {
        let reply = clawfleet_testkit::client::submit(
            &fleet.client,
            &json!({"tenant": "acme", "payload": {"op": "echo", "data": i}}),
        )
        .await
        .expect("accepted");
        ids.push(reply.id);
    }
    let got = received(&hook, 2).await;
    let mut names: Vec<&str> = got
        .iter()
        .map(|b| b["groupLabels"]["alertname"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["queue_deep", "queue_old"]);
    let deep = got
        .iter()
        .find(|b| b["groupLabels"]["alertname"] == "queue_deep")
        .unwrap();
    let alert = &deep["alerts"][0];
    assert_eq!(alert["labels"]["tenant"], "acme");
    assert_eq!(alert["labels"]["priority"], "normal");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("3 tasks wait in clawfleet.queue.normal."),
        "{alert:#}"
    );
    let rules: RulesReply = request(&fleet.client, subjects::API_ALERTS_RULES, b"{}".to_vec())
        .await
        .unwrap();
    let old = rules.rules.iter().find(|r| r.name == "queue_old").unwrap();
    assert!(old.values[0].value > 1.0, "{old:?}");

    // Resumed, the agent drains the queue: both resolve.
    let _: Value = request(
        &fleet.client,
        subjects::API_QUEUES_RESUME,
        serde_json::to_vec(&pause).unwrap(),
    )
    .await
    .expect("resumed");
    for id in &ids {
        clawfleet_testkit::client::wait_final(&fleet.client, id, crate::FINISH).await;
    }
    let got = received(&hook, 4).await;
    assert!(
        got[2..].iter().all(|b| b["status"] == "resolved"),
        "{got:#?}"
    );
}

#[tokio::test]
async fn a_spent_budget_alerts_at_its_fractions_and_refuses_the_tenants_new_tasks() {
    use clawfleet_log_aggregator::config::{ModelPrice, Prices};
    let mut fleet = Fleet::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut logs = clawfleet_testkit::log_aggregator_config(fleet.server.url(), dir.path());
    // 1,000,000 input tokens cost 1 EUR.
    logs.analytics.prices = Prices {
        currency: "EUR".to_string(),
        default_model: ModelPrice {
            input_per_million: 1.0,
            output_per_million: 0.0,
        },
        ..Default::default()
    };
    let _logs = clawfleet_testkit::start_log_aggregator(logs).await;
    fleet.agent("b1", &[], None).await;
    let hook = WebhookReceiver::start().await;
    let mut config = config(
        &fleet,
        "rules = []",
        &hook.url(),
        &["alertname", "threshold"],
    );
    config.budgets = vec![clawfleet_alerter::config::Budget {
        tenant: "acme".to_string(),
        daily: Some(1.0),
        monthly: None,
        alert_at: vec![0.5, 1.0],
        enforce: true,
    }];
    let _alerter = start_alerter(config).await;
    let run = |tokens: u64| {
        let client = fleet.client.clone();
        async move {
            let task = json!({"tenant": "acme", "payload": {"op": "echo",
                "usage": {"tokens_in": tokens, "tokens_out": 0, "model": "m"}}});
            let id = clawfleet_testkit::client::submit(&client, &task).await?.id;
            clawfleet_testkit::client::wait_final(&client, &id, crate::FINISH).await;
            Ok::<_, clawfleet_shared::ErrorBody>(())
        }
    };
    // 0.6 EUR: the 50% alert, and tasks are still accepted.
    run(600_000).await.expect("accepted");
    let got = received(&hook, 1).await;
    assert_eq!(got[0]["groupLabels"]["threshold"], "50%", "{:#}", got[0]);
    assert_eq!(got[0]["alerts"][0]["labels"]["tenant"], "acme");
    assert_eq!(got[0]["alerts"][0]["labels"]["severity"], "warning");
    run(100_000).await.expect("still within the budget");
    // Past 1 EUR: the 100% alert, and the tenant's next task is refused.
    run(400_000).await.expect("accepted");
    let got = received(&hook, 2).await;
    let full = got
        .iter()
        .find(|b| b["groupLabels"]["threshold"] == "100%")
        .expect("the 100% alert");
    assert_eq!(full["alerts"][0]["labels"]["severity"], "critical");
    let refused = wait_for("the tenant refused", NOTIFIED, || async {
        clawfleet_testkit::client::submit(
            &fleet.client,
            &json!({"tenant": "acme", "payload": {"op": "echo"}}),
        )
        .await
        .err()
    })
    .await;
    assert_eq!(
        refused.code,
        clawfleet_shared::ErrorCode::BudgetExceeded,
        "{refused:?}"
    );
    assert!(
        refused.message.contains("daily budget"),
        "{}",
        refused.message
    );
    // Other tenants are not.
    clawfleet_testkit::client::submit(
        &fleet.client,
        &json!({"tenant": "beta", "payload": {"op": "echo"}}),
    )
    .await
    .expect("another tenant's task is accepted");
}

#[tokio::test]
async fn failing_attempts_fire_the_error_rate_and_dead_letter_rules() {
    let mut fleet = Fleet::new().await;
    let dir = tempfile::tempdir().unwrap();
    let _logs = clawfleet_testkit::start_log_aggregator(clawfleet_testkit::log_aggregator_config(
        fleet.server.url(),
        dir.path(),
    ))
    .await;
    fleet.agent("e1", &[], None).await;
    let hook = WebhookReceiver::start().await;
    let rules = r#"
[[rules]]
name = "tenant_errors"
signal = { kind = "error_rate", window = "10m", by = "tenant", min_attempts = 5 }
op = ">"
threshold = 0.5
annotations = { summary = "{{ humanizePercentage $value }} of {{ $labels.tenant }} failed" }

[[rules]]
name = "dead_letters"
signal = { kind = "dead_letters", window = "10m" }
op = ">="
threshold = 4
"#;
    let _alerter = start_alerter(config(&fleet, rules, &hook.url(), &["alertname"])).await;
    // The alerter has counted the dead letters once before any arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..6 {
        let task = if i < 4 {
            json!({"tenant": "acme", "max_attempts": 1, "payload": {"op": "fatal", "data": i}})
        } else {
            json!({"tenant": "beta", "payload": {"op": "echo", "data": i}})
        };
        let id = clawfleet_testkit::client::submit(&fleet.client, &task)
            .await
            .expect("accepted")
            .id;
        clawfleet_testkit::client::wait_final(&fleet.client, &id, crate::FINISH).await;
    }
    // One more failure for acme, so it has 5 attempts: 100% failed; beta 0%.
    let id = clawfleet_testkit::client::submit(
        &fleet.client,
        &json!({"tenant": "acme", "max_attempts": 1, "payload": {"op": "fatal"}}),
    )
    .await
    .unwrap()
    .id;
    clawfleet_testkit::client::wait_final(&fleet.client, &id, crate::FINISH).await;
    let got = received(&hook, 2).await;
    let errors = got
        .iter()
        .find(|b| b["groupLabels"]["alertname"] == "tenant_errors")
        .expect("the error-rate alert");
    let alerts = errors["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "only acme: {errors:#}");
    assert_eq!(alerts[0]["labels"]["tenant"], "acme");
    assert_eq!(alerts[0]["annotations"]["summary"], "100% of acme failed");
    let dead = got
        .iter()
        .find(|b| b["groupLabels"]["alertname"] == "dead_letters")
        .expect("the dead-letter alert");
    assert_eq!(dead["alerts"][0]["labels"]["tenant"], "acme");
    assert_eq!(dead["alerts"][0]["labels"]["reason"], "failed");
}

#[tokio::test]
async fn nats_going_away_is_notified_without_nats_and_resolves_when_it_is_back() {
    let (mut fleet, _monitor) = with_monitor(&[]).await;
    let hook = WebhookReceiver::start().await;
    let rules = r#"
[[rules]]
name = "nats_unreachable"
signal = { kind = "nats_unreachable" }
op = ">="
threshold = 1
severity = "critical"
"#;
    let _alerter = start_alerter(config(&fleet, rules, &hook.url(), &["alertname"])).await;
    // Leading and evaluating (it stores its rules' values once it has).
    wait_for("the alerter evaluating", NOTIFIED, || async {
        let r: RulesReply = request(&fleet.client, subjects::API_ALERTS_RULES, b"{}".to_vec())
            .await
            .ok()?;
        r.evaluated_at.map(|_| ())
    })
    .await;
    fleet.server.kill();
    let got = received(&hook, 1).await;
    assert_eq!(got[0]["groupLabels"]["alertname"], "nats_unreachable");
    assert_eq!(got[0]["status"], "firing");
    fleet.server.restart();
    let got = received(&hook, 2).await;
    assert_eq!(got[1]["status"], "resolved", "{:#}", got[1]);
}

#[tokio::test]
async fn a_stopped_log_index_fires_its_lag_alert_and_resolves_once_it_catches_up() {
    let fleet = Fleet::new().await;
    let hook = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let logs_config = clawfleet_testkit::log_aggregator_config(fleet.server.url(), dir.path());
    let logs = clawfleet_testkit::start_log_aggregator(logs_config.clone()).await;
    let rules = r#"
[[rules]]
name = "log_index_stalled"
signal = { kind = "log_index_lag" }
op = ">"
threshold = 1
annotations = { summary = "{{ humanizeDuration $value }} behind" }

[[rules]]
name = "lines_dropped"
signal = { kind = "log_lines_dropped", window = "10m" }
op = ">"
threshold = 0
"#;
    let _alerter = start_alerter(config(&fleet, rules, &hook.url(), &["alertname"])).await;
    // Caught up: the lag is read as 0, and nothing was dropped.
    wait_for("a caught-up index", NOTIFIED, || async {
        let r: RulesReply = request(&fleet.client, subjects::API_ALERTS_RULES, b"{}".to_vec())
            .await
            .ok()?;
        let lag = r.rules.iter().find(|r| r.name == "log_index_stalled")?;
        let dropped = r.rules.iter().find(|r| r.name == "lines_dropped")?;
        (lag.error.is_none()
            && lag.values.first().is_some_and(|v| v.value < 1.0)
            && dropped.error.is_none()
            && dropped.values.is_empty())
        .then_some(())
    })
    .await;
    assert!(hook.received().is_empty(), "{:#?}", hook.received());
    // The aggregator stops; the services go on shipping lines (a task's
    // steps among them), which nobody indexes: the lag grows and fires.
    logs.stop().await;
    let mut fleet = fleet;
    fleet.agent("l1", &[], None).await;
    let id = clawfleet_testkit::client::submit(
        &fleet.client,
        &json!({"tenant": "acme", "payload": {"op": "echo"}}),
    )
    .await
    .unwrap()
    .id;
    clawfleet_testkit::client::wait_final(&fleet.client, &id, crate::FINISH).await;
    let got = received(&hook, 1).await;
    assert_eq!(got[0]["groupLabels"]["alertname"], "log_index_stalled");
    assert!(
        got[0]["alerts"][0]["annotations"]["summary"]
            .as_str()
            .unwrap()
            .ends_with("behind"),
        "{:#}",
        got[0]
    );
    // Back, it catches up and the alert resolves.
    let _logs = clawfleet_testkit::start_log_aggregator(logs_config).await;
    let got = received(&hook, 2).await;
    assert_eq!(got[1]["status"], "resolved", "{:#}", got[1]);
}

#[tokio::test]
async fn an_existing_alertmanager_gets_the_alerts_as_prometheus_sends_them() {
    let (fleet, _monitor) = with_monitor(&["m1"]).await;
    let hook = WebhookReceiver::start().await;
    let alertmanager = WebhookReceiver::start().await;
    let mut config = config(&fleet, QUARANTINED, &hook.url(), &["alertname"]);
    config.alertmanagers = vec![alertmanager.base_url()];
    let _alerter = start_alerter(config).await;
    quarantine(&fleet, "m1").await;
    let posted = wait_for("the alert at the Alertmanager", NOTIFIED, || async {
        alertmanager
            .received()
            .into_iter()
            .find(|b| b.as_array().is_some_and(|a| !a.is_empty()))
    })
    .await;
    let alert = &posted[0];
    let mut keys: Vec<&str> = alert
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "annotations",
            "endsAt",
            "generatorURL",
            "labels",
            "startsAt"
        ]
    );
    assert_eq!(alert["labels"]["alertname"], "agent_quarantined");
    assert_eq!(alert["labels"]["agent"], "m1");
    let ends = |a: &Value| {
        time::OffsetDateTime::parse(
            a["endsAt"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    // Firing: it ends in the future unless it is sent again.
    assert!(ends(alert) > time::OffsetDateTime::now_utc());
    release(&fleet, "m1").await;
    wait_for("the resolution at the Alertmanager", NOTIFIED, || async {
        alertmanager.received().into_iter().find(|b| {
            b.as_array().is_some_and(|a| {
                a.iter().any(|a| {
                    a["labels"]["agent"] == "m1" && ends(a) <= time::OffsetDateTime::now_utc()
                })
            })
        })
    })
    .await;
}

#[tokio::test]
async fn a_reload_on_sighup_resolves_the_alerts_of_a_removed_rule_and_keeps_the_others() {
    let (fleet, _monitor) = with_monitor(&["h1"]).await;
    let hook = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alerter.toml");
    let other = r#"
[[rules]]
name = "still_here"
signal = { kind = "quarantined_agent" }
op = ">="
threshold = 1
"#;
    std::fs::write(&file, format!("{QUARANTINED}\n{other}")).unwrap();
    let base = config(&fleet, "rules = []", &hook.url(), &["alertname"]);
    let load = {
        let base = base.clone();
        let file = file.clone();
        move || -> Result<clawfleet_alerter::Config, clawfleet_shared::config::ConfigError> {
            #[derive(serde::Deserialize)]
            struct Rules {
                rules: Vec<clawfleet_alerter::config::RuleConfig>,
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let rules = toml::from_str::<Rules>(&text).map_err(|e| {
                clawfleet_shared::config::ConfigError::invalid("rules", e.to_string())
            })?;
            Ok(clawfleet_alerter::Config {
                rules: rules.rules,
                ..base.clone()
            })
        }
    };
    let first = load().unwrap();
    let _alerter = clawfleet_testkit::start_alerter_with_reload(first, Some(Box::new(load))).await;
    quarantine(&fleet, "h1").await;
    let got = received(&hook, 2).await;
    let mut names: Vec<&str> = got
        .iter()
        .map(|b| b["groupLabels"]["alertname"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["agent_quarantined", "still_here"]);

    // An invalid file is refused; nothing changes.
    std::fs::write(&file, "rules = 3").unwrap();
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(hook.received().len(), 2, "{:#?}", hook.received());

    // The first rule removed: its alert resolves, the other keeps firing.
    std::fs::write(&file, other).unwrap();
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
    let got = received(&hook, 3).await;
    assert_eq!(got[2]["groupLabels"]["alertname"], "agent_quarantined");
    assert_eq!(got[2]["status"], "resolved", "{:#}", got[2]);
    let listed = alerts(&fleet).await;
    let firing: Vec<&str> = listed
        .alerts
        .iter()
        .filter(|a| a.state == "firing")
        .map(|a| a.labels["alertname"].as_str())
        .collect();
    assert_eq!(firing, ["still_here"]);
}

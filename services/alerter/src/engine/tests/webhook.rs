use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use super::{at, labels};
use crate::engine::alerts::{AlertBook, RuleTiming, Sample};
use crate::engine::labels::fingerprint;
use crate::engine::routing::{AlertStatus, AlertView, Notification};
use crate::engine::webhook::{alertmanager_alerts, webhook_message, WebhookMessage};

fn view(agent: &str, state: AlertStatus) -> AlertView {
    let labels = labels(&[
        ("alertname", "AgentDown"),
        ("agent", agent),
        ("severity", "page"),
    ]);
    AlertView {
        fingerprint: fingerprint(&labels),
        labels,
        annotations: super::labels(&[
            ("runbook", "https://runbooks/agent-down"),
            ("summary", &format!("{agent} down")),
        ]),
        state,
        starts_at: at(0) + time::Duration::nanoseconds(123_456_789),
        ends_at: (state == AlertStatus::Resolved)
            .then(|| at(90) + time::Duration::milliseconds(500)),
        muted: false,
    }
}

fn notification() -> Notification {
    Notification {
        receiver: "team".into(),
        group_key: r#"{}:{alertname="AgentDown"}"#.into(),
        group_labels: labels(&[("alertname", "AgentDown")]),
        firing: vec![
            view("a1", AlertStatus::Firing),
            view("a2", AlertStatus::Firing),
        ],
        resolved: vec![view("a3", AlertStatus::Resolved)],
        route_id: 0,
    }
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

fn message(send_resolved: bool, max_alerts: usize) -> Option<WebhookMessage> {
    webhook_message(
        &notification(),
        send_resolved,
        max_alerts,
        "http://alerter:9093",
        |a| format!("http://fleet/alerts/{}", a.fingerprint),
    )
}

#[test]
fn the_payload_has_alertmanagers_exact_fields() {
    let json = serde_json::to_value(message(true, 0).unwrap()).unwrap();
    assert_eq!(
        keys(&json),
        BTreeSet::from([
            "version",
            "groupKey",
            "truncatedAlerts",
            "status",
            "receiver",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "externalURL",
            "alerts",
        ])
    );
    assert_eq!(json["version"], "4");
    assert_eq!(json["groupKey"], r#"{}:{alertname="AgentDown"}"#);
    assert_eq!(json["truncatedAlerts"], 0);
    assert_eq!(json["status"], "firing");
    assert_eq!(json["receiver"], "team");
    assert_eq!(json["externalURL"], "http://alerter:9093");
    assert_eq!(
        json["groupLabels"],
        serde_json::json!({"alertname": "AgentDown"})
    );
    assert_eq!(
        json["commonLabels"],
        serde_json::json!({"alertname": "AgentDown", "severity": "page"})
    );
    assert_eq!(
        json["commonAnnotations"],
        serde_json::json!({"runbook": "https://runbooks/agent-down"})
    );

    let alerts = json["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 3);
    for alert in alerts {
        assert_eq!(
            keys(alert),
            BTreeSet::from([
                "status",
                "labels",
                "annotations",
                "startsAt",
                "endsAt",
                "generatorURL",
                "fingerprint",
            ])
        );
    }
    let a1 = &alerts[0];
    assert_eq!(a1["status"], "firing");
    assert_eq!(a1["labels"]["agent"], "a1");
    assert_eq!(a1["startsAt"], "2025-03-01T12:00:00.123456789Z");
    assert_eq!(a1["endsAt"], "0001-01-01T00:00:00Z");
    let fp = fingerprint(&view("a1", AlertStatus::Firing).labels);
    assert_eq!(a1["fingerprint"], fp.as_str());
    assert_eq!(a1["generatorURL"], format!("http://fleet/alerts/{fp}"));
    let a3 = &alerts[2];
    assert_eq!(a3["status"], "resolved");
    assert_eq!(a3["endsAt"], "2025-03-01T12:01:30.5Z");
}

#[test]
fn max_alerts_truncates_and_counts_the_rest() {
    let msg = message(true, 2).unwrap();
    assert_eq!(msg.alerts.len(), 2);
    assert_eq!(msg.truncated_alerts, 1);
    assert_eq!(serde_json::to_value(&msg).unwrap()["truncatedAlerts"], 1);
    // Common annotations are over the kept alerts only.
    assert!(msg.common_annotations.contains_key("runbook"));
    assert_eq!(message(true, 3).unwrap().truncated_alerts, 0);
    assert_eq!(message(true, 1).unwrap().common_labels["agent"], "a1");
}

#[test]
fn resolved_alerts_are_included_only_with_send_resolved() {
    let msg = message(false, 0).unwrap();
    assert_eq!(msg.alerts.len(), 2);
    assert!(msg.alerts.iter().all(|a| a.status == AlertStatus::Firing));

    let mut only_resolved = notification();
    only_resolved.firing.clear();
    let none = webhook_message(&only_resolved, false, 0, "", |_| String::new());
    assert!(none.is_none());
    let msg = webhook_message(&only_resolved, true, 0, "", |_| String::new()).unwrap();
    assert_eq!(msg.status, AlertStatus::Resolved);
    assert_eq!(serde_json::to_value(&msg).unwrap()["status"], "resolved");
}

#[test]
fn the_payload_reads_back() {
    let msg = message(true, 0).unwrap();
    let back: WebhookMessage = serde_json::from_str(&serde_json::to_string(&msg).unwrap()).unwrap();
    assert_eq!(back, msg);
}

#[test]
fn forwarding_to_alertmanager_leaves_pending_out_and_sets_ends_at() {
    let mut book = AlertBook::new();
    let sample = |agent: &str| Sample {
        labels: labels(&[("alertname", "AgentDown"), ("agent", agent)]),
        annotations: labels(&[("summary", "down")]),
        value: 1.0,
    };
    let instant = RuleTiming::default();
    let slow = RuleTiming {
        for_: Duration::from_secs(600),
        keep_firing_for: Duration::ZERO,
    };
    book.observe("firing", &instant, vec![sample("a1")], at(0));
    book.observe("resolved", &instant, vec![sample("a2")], at(0));
    book.observe("resolved", &instant, vec![], at(50));
    book.observe("pending", &slow, vec![sample("a3")], at(0));

    let body = alertmanager_alerts(book.alerts(), at(60), Duration::from_secs(240), |a| {
        format!("http://fleet/rules/{}", a.rule)
    });
    assert_eq!(body.len(), 2);
    let json = serde_json::to_value(&body).unwrap();
    let by_agent = |agent: &str| {
        json.as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["agent"] == agent)
            .cloned()
            .unwrap()
    };
    let firing = by_agent("a1");
    assert_eq!(
        keys(&firing),
        BTreeSet::from([
            "labels",
            "annotations",
            "startsAt",
            "endsAt",
            "generatorURL"
        ])
    );
    assert_eq!(firing["startsAt"], "2025-03-01T12:00:00Z");
    assert_eq!(firing["endsAt"], "2025-03-01T12:05:00Z");
    assert_eq!(firing["generatorURL"], "http://fleet/rules/firing");
    assert_eq!(firing["annotations"]["summary"], "down");
    let resolved = by_agent("a2");
    assert_eq!(resolved["endsAt"], "2025-03-01T12:00:50Z");
}

use std::time::Duration;

use super::{at, labels};
use crate::engine::labels::fingerprint;
use crate::engine::matcher::Matcher;
use crate::engine::routing::{
    AlertStatus, AlertView, Notification, NotificationLog, Notifier, ResolvedRoute, Route,
    MAX_GROUPS,
};

const GROUP_WAIT: i64 = 30;
const GROUP_INTERVAL: i64 = 300;
const REPEAT: i64 = 3600;

fn tree_with(group_by: &[&str], routes: Vec<Route>) -> ResolvedRoute {
    Route {
        receiver: Some("team".into()),
        group_by: Some(group_by.iter().map(|s| (*s).to_owned()).collect()),
        group_wait: Some(Duration::from_secs(GROUP_WAIT as u64)),
        group_interval: Some(Duration::from_secs(GROUP_INTERVAL as u64)),
        repeat_interval: Some(Duration::from_secs(REPEAT as u64)),
        routes,
        ..Route::default()
    }
    .resolve()
    .unwrap()
}

fn notifier() -> Notifier {
    Notifier::new(tree_with(&["alertname"], vec![]))
}

fn firing(agent: &str) -> AlertView {
    let labels = labels(&[("alertname", "AgentDown"), ("agent", agent)]);
    AlertView {
        fingerprint: fingerprint(&labels),
        labels,
        annotations: summary_of(agent),
        state: AlertStatus::Firing,
        starts_at: at(0),
        ends_at: None,
        muted: false,
    }
}

fn summary_of(agent: &str) -> crate::engine::labels::Labels {
    labels(&[("summary", &format!("{agent} is down"))])
}

fn resolved(agent: &str, ends: i64) -> AlertView {
    AlertView {
        state: AlertStatus::Resolved,
        ends_at: Some(at(ends)),
        ..firing(agent)
    }
}

fn muted(mut view: AlertView) -> AlertView {
    view.muted = true;
    view
}

fn agents(n: usize) -> Vec<AlertView> {
    (1..=n).map(|i| firing(&format!("a{i}"))).collect()
}

fn names(views: &[AlertView]) -> Vec<&str> {
    views.iter().map(|v| v.labels["agent"].as_str()).collect()
}

/// Ticks every second over `from..to` with the same alerts; returns what was
/// notified, with when.
fn run(n: &mut Notifier, alerts: &[AlertView], from: i64, to: i64) -> Vec<(i64, Notification)> {
    let mut out = Vec::new();
    for t in from..to {
        for notification in n.tick(alerts, at(t)) {
            out.push((t, notification));
        }
    }
    out
}

/// A notifier that has told its receiver about `alerts` at GROUP_WAIT.
fn notified(alerts: &[AlertView]) -> Notifier {
    let mut n = notifier();
    let sent = run(&mut n, alerts, 0, GROUP_WAIT + 1);
    assert_eq!(sent.len(), 1);
    n.sent(&sent[0].1, at(sent[0].0));
    n
}

#[test]
fn alerts_arriving_within_group_wait_go_out_together() {
    let mut n = notifier();
    assert!(n.tick(&agents(1), at(0)).is_empty());
    assert!(n.tick(&agents(3), at(10)).is_empty());
    assert!(n.tick(&agents(5), at(29)).is_empty());
    let out = n.tick(&agents(5), at(30));
    assert_eq!(out.len(), 1);
    let first = &out[0];
    assert_eq!(first.receiver, "team");
    assert_eq!(first.group_key, r#"{}:{alertname="AgentDown"}"#);
    assert_eq!(first.group_labels, labels(&[("alertname", "AgentDown")]));
    assert_eq!(names(&first.firing), ["a1", "a2", "a3", "a4", "a5"]);
    assert!(first.resolved.is_empty());
}

#[test]
fn a_later_alert_waits_for_the_next_group_interval() {
    let mut n = notified(&agents(5));
    assert!(run(&mut n, &agents(6), 60, GROUP_WAIT + GROUP_INTERVAL).is_empty());
    let out = n.tick(&agents(6), at(GROUP_WAIT + GROUP_INTERVAL));
    assert_eq!(out.len(), 1);
    assert_eq!(names(&out[0].firing), ["a1", "a2", "a3", "a4", "a5", "a6"]);
}

#[test]
fn an_unchanged_group_repeats_only_after_repeat_interval() {
    let mut n = notified(&agents(2));
    let quiet = run(&mut n, &agents(2), GROUP_WAIT + 1, GROUP_WAIT + REPEAT);
    assert!(quiet.is_empty(), "{quiet:?}");
    let out = n.tick(&agents(2), at(GROUP_WAIT + REPEAT));
    assert_eq!(out.len(), 1);
    assert_eq!(names(&out[0].firing), ["a1", "a2"]);
}

#[test]
fn a_resolved_alert_is_notified_as_resolved_then_forgotten() {
    let mut n = notified(&agents(2));
    let now_alerts = vec![firing("a1"), resolved("a2", 100)];
    let out = run(&mut n, &now_alerts, 100, GROUP_WAIT + GROUP_INTERVAL + 1);
    assert_eq!(out.len(), 1);
    let (t, notification) = &out[0];
    assert_eq!(*t, GROUP_WAIT + GROUP_INTERVAL);
    assert_eq!(names(&notification.firing), ["a1"]);
    assert_eq!(names(&notification.resolved), ["a2"]);
    assert_eq!(notification.resolved[0].ends_at, Some(at(100)));
    n.sent(notification, at(*t));
    // The resolved alert is still passed in (retention), but was told.
    let later = run(&mut n, &now_alerts, *t + 1, *t + 2 * GROUP_INTERVAL + 1);
    assert!(later.is_empty(), "{later:?}");
}

#[test]
fn a_group_whose_alerts_all_resolved_is_notified_then_removed() {
    let mut n = notified(&agents(1));
    assert_eq!(n.group_count(), 1);
    let gone = vec![resolved("a1", 100)];
    let out = run(&mut n, &gone, 100, GROUP_WAIT + GROUP_INTERVAL + 1);
    assert_eq!(out.len(), 1);
    assert!(out[0].1.firing.is_empty());
    assert_eq!(names(&out[0].1.resolved), ["a1"]);
    n.sent(&out[0].1, at(out[0].0));
    assert_eq!(n.group_count(), 0);
    assert!(run(&mut n, &gone, 400, 2000).is_empty());
    assert_eq!(n.group_count(), 0);
}

#[test]
fn a_firing_alert_no_longer_passed_in_is_resolved() {
    let mut n = notified(&agents(2));
    assert!(n.tick(&agents(1), at(100)).is_empty());
    let out = run(&mut n, &agents(1), 101, GROUP_WAIT + GROUP_INTERVAL + 1);
    assert_eq!(out.len(), 1);
    assert_eq!(names(&out[0].1.resolved), ["a2"]);
    assert_eq!(out[0].1.resolved[0].ends_at, Some(at(100)));
}

#[test]
fn muted_alerts_are_left_out() {
    let mut n = notifier();
    let alerts = vec![firing("a1"), muted(firing("a2"))];
    let out = run(&mut n, &alerts, 0, GROUP_WAIT + 1);
    assert_eq!(out.len(), 1);
    assert_eq!(names(&out[0].1.firing), ["a1"]);
}

#[test]
fn a_group_of_only_muted_alerts_sends_nothing() {
    let mut n = notifier();
    let alerts = vec![muted(firing("a1")), muted(firing("a2"))];
    assert!(run(&mut n, &alerts, 0, 2 * REPEAT).is_empty());
    assert_eq!(n.group_count(), 0);
}

#[test]
fn alerts_muted_after_being_notified_send_nothing_more() {
    let mut n = notified(&agents(2));
    let alerts = vec![muted(firing("a1")), muted(firing("a2"))];
    assert!(run(&mut n, &alerts, GROUP_WAIT + 1, 2 * REPEAT).is_empty());
}

#[test]
fn an_undelivered_notification_is_retried_at_the_next_group_interval() {
    let mut n = notifier();
    let first = run(&mut n, &agents(2), 0, GROUP_WAIT + 1);
    assert_eq!(first.len(), 1);
    // Not reported as sent: nothing until the next interval, then the same.
    let retry = run(
        &mut n,
        &agents(2),
        GROUP_WAIT + 1,
        GROUP_WAIT + GROUP_INTERVAL + 1,
    );
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].0, GROUP_WAIT + GROUP_INTERVAL);
    assert_eq!(retry[0].1, first[0].1);
    n.sent(&retry[0].1, at(retry[0].0));
    let after = run(
        &mut n,
        &agents(2),
        retry[0].0 + 1,
        retry[0].0 + GROUP_INTERVAL + 1,
    );
    assert!(after.is_empty());
}

#[test]
fn a_restored_log_prevents_resending_an_unchanged_group() {
    let n = notified(&agents(3));
    let json = serde_json::to_string(&n.log()).unwrap();
    let log: NotificationLog = serde_json::from_str(&json).unwrap();

    let mut restarted = notifier();
    restarted.restore(log);
    let quiet = run(&mut restarted, &agents(3), 600, GROUP_WAIT + REPEAT);
    assert!(quiet.is_empty(), "{quiet:?}");
    assert_eq!(restarted.group_count(), 1);
    let repeat = run(
        &mut restarted,
        &agents(3),
        GROUP_WAIT + REPEAT,
        GROUP_WAIT + REPEAT + GROUP_INTERVAL,
    );
    assert_eq!(repeat.len(), 1);
    assert!(repeat[0].0 >= GROUP_WAIT + REPEAT);
}

#[test]
fn a_restored_group_does_not_wait_group_wait_again() {
    let n = notified(&agents(3));
    let mut restarted = notifier();
    restarted.restore(n.log());
    let out = restarted.tick(&agents(4), at(600));
    assert_eq!(out.len(), 1, "news goes out at once, without group_wait");
    assert_eq!(names(&out[0].firing), ["a1", "a2", "a3", "a4"]);
}

#[test]
fn a_restored_group_keeps_its_group_interval_rhythm() {
    let n = notified(&agents(3));
    let mut restarted = notifier();
    restarted.restore(n.log());
    // Restarted 70s after the last notification: news waits for the
    // interval since that notification, neither less nor group_wait more.
    let out = run(
        &mut restarted,
        &agents(4),
        100,
        GROUP_WAIT + GROUP_INTERVAL + 1,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, GROUP_WAIT + GROUP_INTERVAL);
}

#[test]
fn an_alert_that_resolved_during_a_restart_is_still_notified() {
    let n = notified(&agents(1));
    let mut restarted = notifier();
    restarted.restore(n.log());
    let out = run(&mut restarted, &[resolved("a1", 200)], 500, 501);
    assert_eq!(out.len(), 1);
    assert!(out[0].1.firing.is_empty());
    assert_eq!(names(&out[0].1.resolved), ["a1"]);
}

#[test]
fn resolved_alerts_alone_create_no_group() {
    let mut n = notifier();
    assert!(run(&mut n, &[resolved("a1", 0)], 0, 1000).is_empty());
    assert_eq!(n.group_count(), 0);
}

#[test]
fn receivers_without_send_resolved_hear_only_when_everything_resolved() {
    let mut n = notifier();
    n.set_send_resolved("team", false);
    let first = run(&mut n, &agents(2), 0, GROUP_WAIT + 1);
    n.sent(&first[0].1, at(GROUP_WAIT));
    let partly = vec![firing("a1"), resolved("a2", 100)];
    assert!(run(&mut n, &partly, 100, 2000).is_empty());
    let all = vec![resolved("a1", 2000), resolved("a2", 100)];
    let out = run(&mut n, &all, 2000, 2000 + GROUP_INTERVAL + 1);
    assert_eq!(out.len(), 1);
    assert!(out[0].1.firing.is_empty());
}

#[test]
fn continue_notifies_each_matching_route_separately() {
    let mut audit = Route {
        receiver: Some("audit".into()),
        matchers: vec![Matcher::parse("alertname=~.+").unwrap()],
        ..Route::default()
    };
    audit.continue_ = true;
    let pager = Route {
        receiver: Some("pager".into()),
        matchers: vec![Matcher::parse("agent=a1").unwrap()],
        ..Route::default()
    };
    let mut n = Notifier::new(tree_with(&["alertname"], vec![audit, pager]));
    let out = run(&mut n, &agents(2), 0, GROUP_WAIT + 1);
    let mut got: Vec<(&str, &str, Vec<&str>)> = out
        .iter()
        .map(|(_, n)| (n.receiver.as_str(), n.group_key.as_str(), names(&n.firing)))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "audit",
                r#"{}/{alertname=~".+"}:{alertname="AgentDown"}"#,
                vec!["a1", "a2"]
            ),
            (
                "pager",
                r#"{}/{agent="a1"}:{alertname="AgentDown"}"#,
                vec!["a1"]
            ),
        ]
    );
}

#[test]
fn group_by_all_makes_a_group_per_alert() {
    let mut n = Notifier::new(tree_with(&["..."], vec![]));
    let out = run(&mut n, &agents(3), 0, GROUP_WAIT + 1);
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|(_, n)| n.firing.len() == 1));
    assert_eq!(
        out[0].1.group_key,
        r#"{}:{agent="a1", alertname="AgentDown"}"#
    );
}

#[test]
fn the_log_records_only_what_was_sent() {
    let mut n = notifier();
    let out = run(&mut n, &agents(2), 0, GROUP_WAIT + 1);
    assert!(n.log().entries.is_empty());
    n.sent(&out[0].1, at(GROUP_WAIT));
    let log = serde_json::to_value(n.log()).unwrap();
    let entry = &log["entries"][0];
    assert_eq!(entry["group_key"], r#"{}:{alertname="AgentDown"}"#);
    assert_eq!(entry["receiver"], "team");
    assert_eq!(entry["firing"].as_array().map(Vec::len), Some(2));
    assert_eq!(entry["resolved"].as_array().map(Vec::len), Some(0));
    assert_eq!(entry["sent_at"], "2025-03-01T12:00:30Z");
}

#[test]
fn the_number_of_groups_is_bounded() {
    let mut n = Notifier::new(tree_with(&["..."], vec![]));
    let many = agents(MAX_GROUPS + 3);
    n.tick(&many, at(0));
    assert_eq!(n.group_count(), MAX_GROUPS);
    assert_eq!(n.groups_refused(), 3);
}

#[test]
fn reloading_the_same_routes_neither_resends_nor_waits_again() {
    let mut n = notified(&agents(2));
    n.set_route(tree_with(&["alertname"], vec![]));
    assert!(run(&mut n, &agents(2), 100, GROUP_WAIT + REPEAT).is_empty());
    let out = n.tick(&agents(3), at(GROUP_WAIT + REPEAT));
    assert_eq!(out.len(), 1);
}

#[test]
fn reloading_with_new_grouping_starts_new_groups_without_resolving_old_ones() {
    let mut n = notified(&agents(2));
    n.set_route(tree_with(&["alertname", "agent"], vec![]));
    assert!(run(&mut n, &agents(2), 100, 100 + GROUP_WAIT).is_empty());
    let out = n.tick(&agents(2), at(100 + GROUP_WAIT));
    assert_eq!(out.len(), 2);
    assert!(out
        .iter()
        .all(|n| n.resolved.is_empty() && n.firing.len() == 1));
    assert_eq!(
        out[0].group_key,
        r#"{}:{agent="a1", alertname="AgentDown"}"#
    );
}

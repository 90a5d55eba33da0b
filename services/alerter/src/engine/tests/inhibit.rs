use super::labels;
use crate::engine::inhibit::{inhibited, InhibitError, InhibitRule};
use crate::engine::matcher::Matcher;

fn rule(source: &[&str], target: &[&str], equal: &[&str]) -> InhibitRule {
    InhibitRule {
        source_matchers: source.iter().map(|m| Matcher::parse(m).unwrap()).collect(),
        target_matchers: target.iter().map(|m| Matcher::parse(m).unwrap()).collect(),
        equal: equal.iter().map(|s| (*s).to_owned()).collect(),
    }
}

#[test]
fn a_critical_alert_inhibits_warnings_of_the_same_cluster() {
    let rules = [rule(
        &["severity=critical"],
        &["severity=warning"],
        &["cluster"],
    )];
    let critical = labels(&[
        ("alertname", "Down"),
        ("severity", "critical"),
        ("cluster", "eu"),
    ]);
    let warning_eu = labels(&[
        ("alertname", "Slow"),
        ("severity", "warning"),
        ("cluster", "eu"),
    ]);
    let warning_us = labels(&[
        ("alertname", "Slow"),
        ("severity", "warning"),
        ("cluster", "us"),
    ]);
    assert!(inhibited(&rules, &warning_eu, &[&critical]));
    assert!(!inhibited(&rules, &warning_us, &[&critical]));
    assert!(
        !inhibited(&rules, &warning_eu, &[]),
        "needs a firing source"
    );
    assert!(!inhibited(&rules, &critical, &[&critical]), "not a target");
}

#[test]
fn equal_labels_absent_on_both_sides_count_as_equal() {
    let rules = [rule(
        &["severity=critical"],
        &["severity=warning"],
        &["cluster"],
    )];
    let source = labels(&[("severity", "critical")]);
    let target = labels(&[("severity", "warning")]);
    assert!(inhibited(&rules, &target, &[&source]));
    let target_with = labels(&[("severity", "warning"), ("cluster", "eu")]);
    assert!(!inhibited(&rules, &target_with, &[&source]));
}

#[test]
fn an_alert_matching_both_sides_does_not_inhibit_itself() {
    // Every `alertname=~Node.*` alert is both source and target.
    let rules = [rule(
        &["alertname=~Node.*"],
        &["alertname=~Node.*"],
        &["node"],
    )];
    let a = labels(&[("alertname", "NodeDown"), ("node", "n1")]);
    let b = labels(&[("alertname", "NodeSlow"), ("node", "n1")]);
    assert!(!inhibited(&rules, &a, &[&a]));
    // Nor do two such alerts mute each other, as in Alertmanager.
    assert!(!inhibited(&rules, &a, &[&a, &b]));
    assert!(!inhibited(&rules, &b, &[&a, &b]));
}

#[test]
fn a_two_sided_target_can_still_be_inhibited_by_a_pure_source() {
    let rules = [rule(
        &["severity=~critical|page"],
        &["severity=~warning|critical"],
        &[],
    )];
    let page = labels(&[("severity", "page")]);
    let critical = labels(&[("severity", "critical")]);
    assert!(inhibited(&rules, &critical, &[&critical, &page]));
    assert!(!inhibited(&rules, &critical, &[&critical]));
}

#[test]
fn any_rule_is_enough() {
    let rules = [
        rule(&["alertname=NatsDown"], &["alertname=AgentDown"], &[]),
        rule(&["severity=critical"], &["severity=warning"], &["agent"]),
    ];
    let target = labels(&[
        ("alertname", "AgentDown"),
        ("severity", "warning"),
        ("agent", "a1"),
    ]);
    let nats = labels(&[("alertname", "NatsDown")]);
    let critical = labels(&[("severity", "critical"), ("agent", "a1")]);
    assert!(inhibited(&rules, &target, &[&nats]));
    assert!(inhibited(&rules, &target, &[&critical]));
    assert!(!inhibited(
        &rules,
        &target,
        &[&labels(&[("severity", "critical")])]
    ));
    assert!(!inhibited(&[], &target, &[&nats]));
}

#[test]
fn rules_deserialize_and_validate() {
    let parsed: InhibitRule = serde_json::from_str(
        r#"{"source_matchers": ["severity=critical"], "target_matchers": ["severity=warning"], "equal": ["cluster"]}"#,
    )
    .unwrap();
    assert_eq!(
        parsed,
        rule(&["severity=critical"], &["severity=warning"], &["cluster"])
    );
    assert_eq!(parsed.validate(), Ok(()));
    assert!(matches!(
        rule(&[], &[], &["bad-name"]).validate(),
        Err(InhibitError::EqualLabel(_))
    ));
    let equal: Vec<String> = (0..33).map(|i| format!("l{i}")).collect();
    let equal: Vec<&str> = equal.iter().map(String::as_str).collect();
    assert_eq!(
        rule(&[], &[], &equal).validate(),
        Err(InhibitError::TooLarge)
    );
    assert!(serde_json::from_str::<InhibitRule>(r#"{"source_match": {}}"#).is_err());
}

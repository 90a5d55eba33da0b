use std::time::Duration;

use proptest::prelude::*;

use super::{at, labels};
use crate::engine::alerts::{
    AlertBook, AlertState, RuleTiming, Sample, TransitionTo, MAX_ALERTS_PER_RULE,
};
use crate::engine::labels::{fingerprint, Labels, MAX_LABELS};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn timing(for_: u64, keep_firing_for: u64) -> RuleTiming {
    RuleTiming {
        for_: secs(for_),
        keep_firing_for: secs(keep_firing_for),
    }
}

fn sample(value: f64) -> Sample {
    Sample {
        labels: labels(&[("alertname", "AgentDown"), ("agent", "a1")]),
        annotations: labels(&[("summary", &format!("value {value}"))]),
        value,
    }
}

fn only_alert(book: &AlertBook) -> crate::engine::alerts::ActiveAlert {
    let all: Vec<_> = book.alerts().cloned().collect();
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().unwrap()
}

#[test]
fn a_new_alert_is_pending_then_fires_once_for_has_passed() {
    let mut book = AlertBook::new();
    let t = timing(60, 0);
    let tr = book.observe("r", &t, vec![sample(1.0)], at(0));
    assert_eq!(tr.len(), 1);
    assert_eq!((tr[0].from, tr[0].to), (None, TransitionTo::Pending));
    assert_eq!(tr[0].fingerprint, fingerprint(&sample(1.0).labels));

    assert!(book.observe("r", &t, vec![sample(2.0)], at(30)).is_empty());
    assert!(book.observe("r", &t, vec![sample(3.0)], at(59)).is_empty());
    let tr = book.observe("r", &t, vec![sample(4.0)], at(60));
    assert_eq!(tr.len(), 1);
    assert_eq!(
        (tr[0].from, tr[0].to),
        (Some(AlertState::Pending), TransitionTo::Firing)
    );
    assert_eq!(tr[0].value, 4.0);
    let alert = only_alert(&book);
    assert_eq!(alert.state, AlertState::Firing);
    assert_eq!(alert.active_at, at(0));
    assert_eq!(alert.fired_at, Some(at(60)));
}

#[test]
fn without_for_an_alert_fires_at_once() {
    let mut book = AlertBook::new();
    let tr = book.observe("r", &timing(0, 0), vec![sample(1.0)], at(0));
    assert_eq!(tr.len(), 1);
    assert_eq!((tr[0].from, tr[0].to), (None, TransitionTo::Firing));
    assert_eq!(only_alert(&book).fired_at, Some(at(0)));
}

#[test]
fn a_pending_alert_that_clears_is_dropped_without_notifying() {
    let mut book = AlertBook::new();
    let t = timing(300, 0);
    book.observe("r", &t, vec![sample(1.0)], at(0));
    book.observe("r", &t, vec![sample(1.0)], at(200));
    let tr = book.observe("r", &t, vec![], at(260));
    assert_eq!(tr.len(), 1);
    assert_eq!(
        (tr[0].from, tr[0].to),
        (Some(AlertState::Pending), TransitionTo::Dropped)
    );
    assert!(!tr[0].to.notifies());
    assert!(book.is_empty());
    // Holding again starts the for-clock over.
    book.observe("r", &t, vec![sample(1.0)], at(270));
    assert!(book.observe("r", &t, vec![sample(1.0)], at(500)).is_empty());
    let tr = book.observe("r", &t, vec![sample(1.0)], at(570));
    assert_eq!(tr[0].to, TransitionTo::Firing);
}

#[test]
fn a_firing_alert_resolves_at_once_without_keep_firing_for() {
    let mut book = AlertBook::new();
    let t = timing(0, 0);
    book.observe("r", &t, vec![sample(1.0)], at(0));
    let tr = book.observe("r", &t, vec![], at(10));
    assert_eq!(tr.len(), 1);
    assert_eq!(
        (tr[0].from, tr[0].to),
        (Some(AlertState::Firing), TransitionTo::Resolved)
    );
    let alert = only_alert(&book);
    assert_eq!(alert.state, AlertState::Resolved);
    assert_eq!(alert.resolved_at, Some(at(10)));
}

#[test]
fn keep_firing_for_counts_from_the_last_time_the_condition_held() {
    let mut book = AlertBook::new();
    let t = timing(0, 120);
    book.observe("r", &t, vec![sample(1.0)], at(0));
    book.observe("r", &t, vec![sample(1.0)], at(30));
    assert!(book.observe("r", &t, vec![], at(60)).is_empty());
    assert!(book.observe("r", &t, vec![], at(149)).is_empty());
    assert_eq!(only_alert(&book).state, AlertState::Firing);
    let tr = book.observe("r", &t, vec![], at(150));
    assert_eq!(tr.len(), 1);
    assert_eq!(tr[0].to, TransitionTo::Resolved);
    assert_eq!(only_alert(&book).resolved_at, Some(at(150)));
}

#[test]
fn holding_again_within_keep_firing_for_keeps_firing_quietly() {
    let mut book = AlertBook::new();
    let t = timing(0, 120);
    book.observe("r", &t, vec![sample(1.0)], at(0));
    assert!(book.observe("r", &t, vec![], at(60)).is_empty());
    assert!(book.observe("r", &t, vec![sample(2.0)], at(100)).is_empty());
    // 150 is 150s after the first hold but only 50s after the last one.
    assert!(book.observe("r", &t, vec![], at(150)).is_empty());
    let alert = only_alert(&book);
    assert_eq!(alert.state, AlertState::Firing);
    assert_eq!(alert.fired_at, Some(at(0)));
    assert_eq!(alert.last_true_at, at(100));
}

#[test]
fn a_resolved_alert_that_holds_again_starts_a_new_pending_spell() {
    let mut book = AlertBook::new();
    let t = timing(60, 0);
    book.observe("r", &t, vec![sample(1.0)], at(0));
    book.observe("r", &t, vec![sample(1.0)], at(60));
    book.observe("r", &t, vec![], at(90));
    assert_eq!(only_alert(&book).state, AlertState::Resolved);

    let tr = book.observe("r", &t, vec![sample(5.0)], at(100));
    assert_eq!(tr.len(), 1);
    assert_eq!(
        (tr[0].from, tr[0].to),
        (Some(AlertState::Resolved), TransitionTo::Pending)
    );
    let alert = only_alert(&book);
    assert_eq!(alert.state, AlertState::Pending);
    assert_eq!(alert.active_at, at(100));
    assert_eq!(alert.fired_at, None);
    assert_eq!(alert.resolved_at, None);
    let tr = book.observe("r", &t, vec![sample(5.0)], at(160));
    assert_eq!(tr[0].to, TransitionTo::Firing);
}

#[test]
fn annotations_and_value_follow_the_latest_evaluation() {
    let mut book = AlertBook::new();
    let t = timing(0, 0);
    book.observe("r", &t, vec![sample(1.0)], at(0));
    book.observe("r", &t, vec![sample(7.5)], at(10));
    let alert = only_alert(&book);
    assert_eq!(alert.value, 7.5);
    assert_eq!(alert.annotations["summary"], "value 7.5");
    assert_eq!(alert.last_true_at, at(10));
}

#[test]
fn removing_a_rule_resolves_its_firing_alerts_and_drops_pending_ones() {
    let firing = sample(1.0);
    let mut pending = sample(1.0);
    pending.labels.insert("agent".into(), "a2".into());
    let mut book = AlertBook::new();
    book.observe("r", &timing(30, 0), vec![firing.clone()], at(0));
    book.observe(
        "r",
        &timing(30, 0),
        vec![firing.clone(), pending.clone()],
        at(30),
    );
    let tr = book.remove_rule("r", at(40));
    let mut outcomes: Vec<_> = tr
        .iter()
        .map(|t| (t.labels["agent"].clone(), t.to))
        .collect();
    outcomes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        outcomes,
        vec![
            ("a1".to_owned(), TransitionTo::Resolved),
            ("a2".to_owned(), TransitionTo::Dropped)
        ]
    );
    let alert = only_alert(&book);
    assert_eq!(alert.state, AlertState::Resolved);
    assert_eq!(alert.resolved_at, Some(at(40)));
    assert!(book.remove_rule("r", at(50)).is_empty());
    assert!(book.remove_rule("unknown", at(50)).is_empty());
}

#[test]
fn resolved_alerts_are_kept_for_the_retention_then_pruned() {
    let mut book = AlertBook::new();
    let t = timing(0, 0);
    book.observe("r", &t, vec![sample(1.0)], at(0));
    book.observe("r", &t, vec![], at(10));
    assert_eq!(book.prune_resolved(secs(900), at(909)), 0);
    assert_eq!(book.len(), 1);
    assert_eq!(book.prune_resolved(secs(900), at(910)), 1);
    assert!(book.is_empty());
}

#[test]
fn pruning_leaves_firing_and_pending_alerts_alone() {
    let mut book = AlertBook::new();
    book.observe("firing", &timing(0, 0), vec![sample(1.0)], at(0));
    book.observe("pending", &timing(3600, 0), vec![sample(1.0)], at(0));
    assert_eq!(book.prune_resolved(secs(1), at(10_000)), 0);
    assert_eq!(book.len(), 2);
}

#[test]
fn each_rule_keeps_its_own_alert_for_identical_labels() {
    let mut book = AlertBook::new();
    let t = timing(0, 0);
    book.observe("a", &t, vec![sample(1.0)], at(0));
    book.observe("b", &t, vec![sample(1.0)], at(0));
    let tr = book.observe("b", &t, vec![], at(10));
    assert_eq!(tr.len(), 1);
    let fp = fingerprint(&sample(1.0).labels);
    assert_eq!(
        book.get("a", &fp).map(|a| a.state),
        Some(AlertState::Firing)
    );
    assert_eq!(
        book.get("b", &fp).map(|a| a.state),
        Some(AlertState::Resolved)
    );
}

#[test]
fn cardinality_is_capped_per_rule_and_counted() {
    let mut book = AlertBook::new();
    let t = timing(0, 0);
    let samples = |n: usize| -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                labels: labels(&[("alertname", "x"), ("agent", &format!("a{i}"))]),
                annotations: Labels::new(),
                value: 1.0,
            })
            .collect()
    };
    book.observe("r", &t, samples(MAX_ALERTS_PER_RULE + 5), at(0));
    assert_eq!(book.len(), MAX_ALERTS_PER_RULE);
    assert_eq!(book.dropped_samples(), 5);
    // Alerts already held keep updating at the cap; another rule has its own cap.
    book.observe("r", &t, samples(MAX_ALERTS_PER_RULE), at(10));
    assert_eq!(book.dropped_samples(), 5);
    book.observe("other", &t, samples(1), at(10));
    assert_eq!(book.rule_alerts("other").count(), 1);
}

#[test]
fn samples_with_labels_out_of_bounds_are_ignored_and_counted() {
    let mut book = AlertBook::new();
    let many: Labels = (0..=MAX_LABELS)
        .map(|i| (format!("l{i}"), "v".into()))
        .collect();
    let bad_name = labels(&[("alertname", "x"), ("bad-name", "v")]);
    let samples = [many, bad_name]
        .into_iter()
        .map(|labels| Sample {
            labels,
            annotations: Labels::new(),
            value: 0.0,
        })
        .collect();
    assert!(book.observe("r", &timing(0, 0), samples, at(0)).is_empty());
    assert!(book.is_empty());
    assert_eq!(book.dropped_samples(), 2);
}

#[test]
fn empty_label_values_are_the_same_as_absent_labels() {
    let mut book = AlertBook::new();
    let mut with_empty = sample(1.0);
    with_empty.labels.insert("team".into(), String::new());
    let tr = book.observe("r", &timing(0, 0), vec![with_empty, sample(2.0)], at(0));
    assert_eq!(tr.len(), 1, "the same alert, given twice, counts once");
    assert_eq!(tr[0].fingerprint, fingerprint(&sample(1.0).labels));
    assert!(!only_alert(&book).labels.contains_key("team"));
    assert_eq!(only_alert(&book).value, 1.0);
}

#[test]
fn the_book_survives_a_json_round_trip() {
    let mut book = AlertBook::new();
    book.observe("r", &timing(0, 0), vec![sample(f64::NAN)], at(0));
    let mut second = sample(f64::INFINITY);
    second.labels.insert("agent".into(), "a2".into());
    book.observe("q", &timing(60, 0), vec![second], at(5));
    let json = serde_json::to_value(&book).unwrap();
    let alerts = json["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2);
    let firing = alerts.iter().find(|a| a["rule"] == "r").unwrap();
    assert_eq!(firing["state"], "firing");
    assert_eq!(firing["value"], "NaN");
    assert_eq!(firing["active_at"], "2025-03-01T12:00:00Z");
    assert_eq!(firing["resolved_at"], serde_json::Value::Null);

    let back: AlertBook = serde_json::from_value(json).unwrap();
    assert_eq!(back.len(), 2);
    let restored = back.rule_alerts("r").next().unwrap();
    assert!(restored.value.is_nan());
    let pending = back.rule_alerts("q").next().unwrap();
    assert_eq!(pending.state, AlertState::Pending);
    assert_eq!(pending.value, f64::INFINITY);
    // The restored book carries on: the pending alert fires on schedule.
    let mut back = back;
    let mut again = sample(1.0);
    again.labels.insert("agent".into(), "a2".into());
    let tr = back.observe("q", &timing(60, 0), vec![again], at(65));
    assert_eq!(tr[0].to, TransitionTo::Firing);
}

proptest! {
    /// Over any sequence of evaluations: an alert fires only after its
    /// condition held continuously for `for`, resolves only after it stopped
    /// holding for `keep_firing_for`, and every firing ends in exactly one
    /// resolution once the condition stops for good.
    #[test]
    fn firing_respects_for_and_every_firing_resolves_once(
        for_secs in 0u64..120,
        keep_secs in 0u64..120,
        steps in prop::collection::vec((any::<bool>(), 1i64..60), 1..80),
    ) {
        let t = timing(for_secs, keep_secs);
        let mut book = AlertBook::new();
        let mut now = 0i64;
        let mut run_start: Option<i64> = None;
        let mut last_true: Option<i64> = None;
        let mut notified = Vec::new();
        let mut check = |transitions: Vec<crate::engine::alerts::Transition>,
                         now: i64,
                         run_start: Option<i64>,
                         last_true: Option<i64>|
         -> Result<(), TestCaseError> {
            for tr in transitions {
                match tr.to {
                    TransitionTo::Firing => {
                        let start = run_start.ok_or_else(|| TestCaseError::fail("fired while false"))?;
                        prop_assert!(now - start >= for_secs as i64, "fired after {}s", now - start);
                    }
                    TransitionTo::Resolved => {
                        let last = last_true.ok_or_else(|| TestCaseError::fail("resolved, never true"))?;
                        prop_assert!(now - last >= keep_secs as i64);
                        prop_assert!(run_start.is_none(), "resolved while true");
                    }
                    _ => {}
                }
                if tr.to.notifies() {
                    notified.push(tr.to);
                }
            }
            Ok(())
        };
        for (holds, dt) in steps {
            now += dt;
            let samples = if holds {
                run_start.get_or_insert(now);
                last_true = Some(now);
                vec![sample(1.0)]
            } else {
                run_start = None;
                vec![]
            };
            let transitions = book.observe("r", &t, samples, at(now));
            check(transitions, now, run_start, last_true)?;
        }
        run_start = None;
        for _ in 0..3 {
            now += keep_secs as i64 + 1;
            let transitions = book.observe("r", &t, vec![], at(now));
            check(transitions, now, run_start, last_true)?;
        }
        prop_assert_eq!(notified.len() % 2, 0, "{:?}", notified);
        for pair in notified.chunks(2) {
            prop_assert_eq!(pair, &[TransitionTo::Firing, TransitionTo::Resolved][..]);
        }
        prop_assert!(book.alerts().all(|a| a.state == AlertState::Resolved));
    }
}

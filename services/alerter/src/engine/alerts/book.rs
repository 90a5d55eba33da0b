//! [`AlertBook`]: every rule's alerts, and the evaluation state machine.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use super::{ActiveAlert, AlertState, RuleTiming, Sample, Transition, TransitionTo};
use crate::engine::clock::elapsed_at_least;
use crate::engine::labels::{bound_annotations, fingerprint, validate, Labels};

/// Most alerts one rule may hold. A rule over a label with unbounded values
/// (hostile or buggy agents) would otherwise grow the book without limit;
/// results beyond the cap are ignored and counted.
pub const MAX_ALERTS_PER_RULE: usize = 10_000;

/// How long the service keeps resolved alerts (Prometheus keeps them 15
/// minutes), so that notifications can still carry their resolution.
pub const DEFAULT_RESOLVED_RETENTION: Duration = Duration::from_secs(15 * 60);

/// The alerts of every rule, keyed by rule and by fingerprint.
///
/// Two rules can produce identical label sets (two rules with the same
/// `alertname`, say); each keeps its own alert, so one rule's condition
/// stopping does not resolve the other's.
///
/// Serialized as `{"alerts": [...], "dropped_samples": n}`; keys are
/// recomputed from the labels on load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertBook {
    rules: BTreeMap<String, BTreeMap<String, ActiveAlert>>,
    dropped_samples: u64,
}

impl AlertBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one evaluation of `rule`: `samples` are the groups for which
    /// its condition holds at `now`. Returns every state change, in sample
    /// order for new alerts and fingerprint order for the rest.
    ///
    /// Samples whose labels break the bounds of
    /// [`crate::engine::labels::validate`], and new alerts beyond
    /// [`MAX_ALERTS_PER_RULE`], are ignored and counted in
    /// [`AlertBook::dropped_samples`]. A label set given twice in one
    /// evaluation counts once (the first sample wins).
    pub fn observe(
        &mut self,
        rule: &str,
        timing: &RuleTiming,
        samples: Vec<Sample>,
        now: OffsetDateTime,
    ) -> Vec<Transition> {
        let alerts = self.rules.entry(rule.to_owned()).or_default();
        let mut transitions = Vec::new();
        let mut held: BTreeSet<String> = BTreeSet::new();

        for sample in samples {
            let labels: Labels = sample
                .labels
                .into_iter()
                .filter(|(_, value)| !value.is_empty())
                .collect();
            if validate(&labels).is_err() {
                self.dropped_samples += 1;
                continue;
            }
            let fp = fingerprint(&labels);
            if held.contains(&fp) {
                continue;
            }
            let annotations = bound_annotations(sample.annotations);
            if let Some(alert) = alerts
                .get_mut(&fp)
                .filter(|a| a.state != AlertState::Resolved)
            {
                alert.annotations = annotations;
                alert.value = sample.value;
                alert.last_true_at = now;
                held.insert(fp);
                continue;
            }
            // New, or resolved and holding again: a new pending spell.
            let from = alerts.get(&fp).map(|a| a.state);
            if from.is_none() && alerts.len() >= MAX_ALERTS_PER_RULE {
                self.dropped_samples += 1;
                continue;
            }
            let fires_now = timing.for_.is_zero();
            let (state, to) = if fires_now {
                (AlertState::Firing, TransitionTo::Firing)
            } else {
                (AlertState::Pending, TransitionTo::Pending)
            };
            let alert = ActiveAlert {
                rule: rule.to_owned(),
                labels,
                annotations,
                state,
                active_at: now,
                fired_at: fires_now.then_some(now),
                resolved_at: None,
                last_true_at: now,
                value: sample.value,
            };
            transitions.push(Transition::of(&alert, &fp, from, to, now));
            alerts.insert(fp.clone(), alert);
            held.insert(fp);
        }

        let mut dropped = Vec::new();
        for (fp, alert) in alerts.iter_mut() {
            let holds = held.contains(fp);
            match alert.state {
                AlertState::Pending if holds => {
                    if elapsed_at_least(alert.active_at, now, timing.for_) {
                        alert.state = AlertState::Firing;
                        alert.fired_at = Some(now);
                        transitions.push(Transition::of(
                            alert,
                            fp,
                            Some(AlertState::Pending),
                            TransitionTo::Firing,
                            now,
                        ));
                    }
                }
                AlertState::Pending => {
                    transitions.push(Transition::of(
                        alert,
                        fp,
                        Some(AlertState::Pending),
                        TransitionTo::Dropped,
                        now,
                    ));
                    dropped.push(fp.clone());
                }
                AlertState::Firing if !holds => {
                    if elapsed_at_least(alert.last_true_at, now, timing.keep_firing_for) {
                        alert.state = AlertState::Resolved;
                        alert.resolved_at = Some(now);
                        transitions.push(Transition::of(
                            alert,
                            fp,
                            Some(AlertState::Firing),
                            TransitionTo::Resolved,
                            now,
                        ));
                    }
                }
                AlertState::Firing | AlertState::Resolved => {}
            }
        }
        for fp in dropped {
            alerts.remove(&fp);
        }
        if alerts.is_empty() {
            self.rules.remove(rule);
        }
        transitions
    }

    /// Ends a rule that no longer exists (deleted on reload): its firing
    /// alerts resolve at `now` (receivers must hear that they ended, not be
    /// left with alerts that never resolve), its pending alerts are dropped.
    /// The resolved alerts stay until [`AlertBook::prune_resolved`].
    pub fn remove_rule(&mut self, rule: &str, now: OffsetDateTime) -> Vec<Transition> {
        let Some(alerts) = self.rules.get_mut(rule) else {
            return Vec::new();
        };
        let mut transitions = Vec::new();
        alerts.retain(|fp, alert| match alert.state {
            AlertState::Pending => {
                transitions.push(Transition::of(
                    alert,
                    fp,
                    Some(AlertState::Pending),
                    TransitionTo::Dropped,
                    now,
                ));
                false
            }
            AlertState::Firing => {
                alert.state = AlertState::Resolved;
                alert.resolved_at = Some(now);
                transitions.push(Transition::of(
                    alert,
                    fp,
                    Some(AlertState::Firing),
                    TransitionTo::Resolved,
                    now,
                ));
                true
            }
            AlertState::Resolved => true,
        });
        if alerts.is_empty() {
            self.rules.remove(rule);
        }
        transitions
    }

    /// Forgets resolved alerts that resolved at least `older_than` before
    /// `now` (the service uses [`DEFAULT_RESOLVED_RETENTION`]). Returns how
    /// many were forgotten.
    pub fn prune_resolved(&mut self, older_than: Duration, now: OffsetDateTime) -> usize {
        let mut pruned = 0;
        self.rules.retain(|_, alerts| {
            alerts.retain(|_, alert| {
                let expired = alert.state == AlertState::Resolved
                    && alert
                        .resolved_at
                        .is_none_or(|at| elapsed_at_least(at, now, older_than));
                pruned += usize::from(expired);
                !expired
            });
            !alerts.is_empty()
        });
        pruned
    }

    /// Every alert, by rule then fingerprint.
    pub fn alerts(&self) -> impl Iterator<Item = &ActiveAlert> {
        self.rules.values().flat_map(BTreeMap::values)
    }

    /// The alerts of one rule.
    pub fn rule_alerts<'a>(&'a self, rule: &str) -> impl Iterator<Item = &'a ActiveAlert> + 'a {
        self.rules.get(rule).into_iter().flat_map(BTreeMap::values)
    }

    /// One alert, by rule and fingerprint.
    pub fn get(&self, rule: &str, fingerprint: &str) -> Option<&ActiveAlert> {
        self.rules.get(rule)?.get(fingerprint)
    }

    /// How many alerts the book holds, in every state.
    pub fn len(&self) -> usize {
        self.rules.values().map(BTreeMap::len).sum()
    }

    /// Whether the book holds no alert.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Samples ignored so far: over [`MAX_ALERTS_PER_RULE`] or with labels
    /// outside the bounds. A growing count means a rule is producing more
    /// distinct alerts than it should.
    pub fn dropped_samples(&self) -> u64 {
        self.dropped_samples
    }

    fn insert_loaded(&mut self, alert: ActiveAlert) {
        if validate(&alert.labels).is_err() {
            self.dropped_samples += 1;
            return;
        }
        let alerts = self.rules.entry(alert.rule.clone()).or_default();
        let fp = fingerprint(&alert.labels);
        if !alerts.contains_key(&fp) && alerts.len() >= MAX_ALERTS_PER_RULE {
            self.dropped_samples += 1;
            return;
        }
        alerts.insert(fp, alert);
    }
}

#[derive(Serialize)]
struct BookOut<'a> {
    alerts: Vec<&'a ActiveAlert>,
    dropped_samples: u64,
}

#[derive(Deserialize)]
struct BookIn {
    #[serde(default)]
    alerts: Vec<ActiveAlert>,
    #[serde(default)]
    dropped_samples: u64,
}

impl Serialize for AlertBook {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        BookOut {
            alerts: self.alerts().collect(),
            dropped_samples: self.dropped_samples,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for AlertBook {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let loaded = BookIn::deserialize(deserializer)?;
        let mut book = AlertBook {
            rules: BTreeMap::new(),
            dropped_samples: loaded.dropped_samples,
        };
        for alert in loaded.alerts {
            book.insert_loaded(alert);
        }
        Ok(book)
    }
}

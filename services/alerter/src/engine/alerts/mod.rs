//! The life of an alert, with Prometheus's rule semantics.
//!
//! Each evaluation of a rule yields the label groups for which its condition
//! holds ([`Sample`]s). [`AlertBook::observe`] turns those into alert states:
//!
//! - a group that starts to hold is **pending** (or **firing** at once when
//!   the rule has no `for`);
//! - a pending alert that has held for `for` is **firing**;
//! - a pending alert whose condition stops holding disappears without a
//!   notification (it never fired);
//! - a firing alert whose condition stops holding keeps firing until
//!   `keep_firing_for` has passed since it last held, then is **resolved**;
//! - a resolved alert is kept for a while so notifications can carry its
//!   resolution, and starts over as pending if its condition holds again.
//!
//! "Inactive" is not a state here: an alert that is not in the book is
//! inactive.

mod book;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use book::{AlertBook, DEFAULT_RESOLVED_RETENTION, MAX_ALERTS_PER_RULE};

use super::labels::{fingerprint, Labels};

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition holds, but not yet for the rule's `for`.
    Pending,
    /// The condition has held for `for` (or is within `keep_firing_for` of
    /// having held).
    Firing,
    /// Was firing and has stopped; kept so that notifications can say so.
    Resolved,
}

/// One alert of one rule, as the service persists it (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveAlert {
    /// The rule that produced it.
    pub rule: String,
    /// Its identity: the group's labels plus the rule's labels and
    /// `alertname`.
    pub labels: Labels,
    /// Rendered annotations, refreshed every evaluation the condition holds.
    pub annotations: Labels,
    /// Where it is in its lifecycle.
    pub state: AlertState,
    /// When the condition started to hold (the start of this pending spell).
    #[serde(with = "time::serde::rfc3339")]
    pub active_at: OffsetDateTime,
    /// When it became firing; what notifications call `startsAt`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub fired_at: Option<OffsetDateTime>,
    /// When it became resolved; what notifications call `endsAt`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
    /// The last evaluation at which the condition held: `keep_firing_for`
    /// counts from here.
    #[serde(with = "time::serde::rfc3339")]
    pub last_true_at: OffsetDateTime,
    /// The value the condition had the last time it held (`{{ $value }}`).
    /// Non-finite values are stored as `"NaN"`, `"+Inf"`, `"-Inf"`, since
    /// JSON has no number for them.
    #[serde(with = "sample_value")]
    pub value: f64,
}

impl ActiveAlert {
    /// The fingerprint of its labels.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.labels)
    }
}

/// The timing settings of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RuleTiming {
    /// How long the condition must hold before the alert fires (`for`).
    pub for_: Duration,
    /// How long a firing alert keeps firing after its condition last held
    /// (`keep_firing_for`), so a flapping condition does not resolve and
    /// re-fire.
    pub keep_firing_for: Duration,
}

/// One group for which a rule's condition holds in this evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The alert's labels, already including the rule's labels and
    /// `alertname`. Labels with empty values are dropped, as in Prometheus.
    pub labels: Labels,
    /// The rendered annotations.
    pub annotations: Labels,
    /// The condition's value for this group.
    pub value: f64,
}

/// The state an alert moved to in an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransitionTo {
    /// Started to hold.
    Pending,
    /// Started firing.
    Firing,
    /// Stopped firing.
    Resolved,
    /// A pending alert whose condition stopped holding before `for` passed:
    /// gone, and never notified. Reported so it can be logged.
    Dropped,
}

impl TransitionTo {
    /// Whether receivers hear about this change (firing and resolved do;
    /// pending and dropped never leave the alerter).
    pub fn notifies(self) -> bool {
        matches!(self, TransitionTo::Firing | TransitionTo::Resolved)
    }
}

/// A change of one alert's state, for logs, events and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The alert's fingerprint.
    pub fingerprint: String,
    /// The rule it belongs to.
    pub rule: String,
    /// The alert's labels.
    pub labels: Labels,
    /// The state before (`None`: the alert was inactive).
    pub from: Option<AlertState>,
    /// The state after.
    pub to: TransitionTo,
    /// The alert's latest value.
    pub value: f64,
    /// When (the evaluation's `now`).
    pub at: OffsetDateTime,
}

impl Transition {
    fn of(
        alert: &ActiveAlert,
        fingerprint: &str,
        from: Option<AlertState>,
        to: TransitionTo,
        at: OffsetDateTime,
    ) -> Self {
        Transition {
            fingerprint: fingerprint.to_owned(),
            rule: alert.rule.clone(),
            labels: alert.labels.clone(),
            from,
            to,
            value: alert.value,
            at,
        }
    }
}

/// Serde for sample values: finite values as JSON numbers, the others as the
/// strings Prometheus prints for them.
mod sample_value {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("+Inf")
        } else {
            s.serialize_str("-Inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(f64),
        Text(String),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Number(v) => Ok(v),
            Repr::Text(text) => match text.as_str() {
                "NaN" => Ok(f64::NAN),
                "+Inf" | "Inf" => Ok(f64::INFINITY),
                "-Inf" => Ok(f64::NEG_INFINITY),
                other => other.parse().map_err(serde::de::Error::custom),
            },
        }
    }
}

//! What the notifier is given ([`AlertView`]) and what it hands back
//! ([`Notification`]).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::engine::alerts::{ActiveAlert, AlertState};
use crate::engine::labels::Labels;

/// Whether a notified alert is firing or resolved (the `status` of
/// Alertmanager's payloads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// Still firing.
    Firing,
    /// Over.
    Resolved,
}

impl AlertStatus {
    /// `"firing"` or `"resolved"`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// One alert as the notifier sees it: the service builds these from the
/// alert book (firing and recently resolved alerts only) and decides
/// `muted` from silences and inhibition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertView {
    /// The fingerprint of `labels`.
    pub fingerprint: String,
    /// The alert's labels.
    pub labels: Labels,
    /// The alert's annotations.
    pub annotations: Labels,
    /// Firing or resolved.
    pub state: AlertStatus,
    /// When it started firing.
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    /// When it resolved (`None` while firing).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ends_at: Option<OffsetDateTime>,
    /// Silenced or inhibited: tracked, but left out of notifications.
    pub muted: bool,
}

impl AlertView {
    /// The view of a book alert; `None` for a pending one, which receivers
    /// never hear about. `startsAt` is when the alert fired and `endsAt`
    /// when it resolved, as Prometheus sends them to Alertmanager.
    pub fn from_alert(alert: &ActiveAlert, muted: bool) -> Option<Self> {
        let (state, ends_at) = match alert.state {
            AlertState::Pending => return None,
            AlertState::Firing => (AlertStatus::Firing, None),
            AlertState::Resolved => (
                AlertStatus::Resolved,
                Some(alert.resolved_at.unwrap_or(alert.last_true_at)),
            ),
        };
        Some(AlertView {
            fingerprint: alert.fingerprint(),
            labels: alert.labels.clone(),
            annotations: alert.annotations.clone(),
            state,
            starts_at: alert.fired_at.unwrap_or(alert.active_at),
            ends_at,
            muted,
        })
    }
}

/// A notification the service should deliver to `receiver`. Once delivered,
/// the service reports it with [`crate::engine::Notifier::sent`]; one that
/// is never reported is simply offered again at the group's next
/// `group_interval`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Who to notify.
    pub receiver: String,
    /// Alertmanager's group key, e.g. `{}/{severity="page"}:{alertname="x"}`.
    pub group_key: String,
    /// The labels the group is made of.
    pub group_labels: Labels,
    /// The group's firing alerts (muted ones left out), in Alertmanager's
    /// order.
    pub firing: Vec<AlertView>,
    /// The group's resolved alerts not yet notified (muted ones left out).
    pub resolved: Vec<AlertView>,
    /// The route the group belongs to ([`crate::engine::ResolvedRoute::id`]).
    pub route_id: usize,
}

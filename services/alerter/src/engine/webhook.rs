//! Alertmanager's wire formats: the webhook payload (version 4) a receiver
//! gets, and the `POST /api/v2/alerts` body for handing alerts to an
//! existing Alertmanager.
//!
//! Receivers written for Alertmanager's webhook (chat bridges, paging
//! gateways, ticket robots) parse these bodies, so the key names, the
//! status strings, the time format and the zero `endsAt` of firing alerts
//! are exactly Alertmanager's.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::macros::datetime;
use time::OffsetDateTime;

use crate::engine::alerts::{ActiveAlert, AlertState};
use crate::engine::clock::add;
use crate::engine::gofmt::go_time;
use crate::engine::labels::{alert_order, Labels};
use crate::engine::routing::{AlertStatus, AlertView, Notification};

/// The webhook payload version Alertmanager sends.
pub const WEBHOOK_VERSION: &str = "4";

/// Go's zero time, which Alertmanager sends as the `endsAt` of firing
/// alerts: `0001-01-01T00:00:00Z`.
pub const ZERO_TIME: OffsetDateTime = datetime!(0001-01-01 0:00 UTC);

/// The body of a webhook notification, field for field Alertmanager's
/// `webhook.Message` (fields in the order Alertmanager writes them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookMessage {
    /// The receiver's name.
    pub receiver: String,
    /// `firing` if any included alert fires, else `resolved`.
    pub status: AlertStatus,
    /// The alerts, at most `max_alerts` of them.
    pub alerts: Vec<WebhookAlert>,
    /// The labels the group is made of.
    #[serde(rename = "groupLabels")]
    pub group_labels: Labels,
    /// Labels every included alert has, with the same value.
    #[serde(rename = "commonLabels")]
    pub common_labels: Labels,
    /// Annotations every included alert has, with the same value.
    #[serde(rename = "commonAnnotations")]
    pub common_annotations: Labels,
    /// Link back to the alerter.
    #[serde(rename = "externalURL")]
    pub external_url: String,
    /// Always [`WEBHOOK_VERSION`].
    pub version: String,
    /// The group key, which receivers use to thread or deduplicate.
    #[serde(rename = "groupKey")]
    pub group_key: String,
    /// How many alerts were left out because of `max_alerts`.
    #[serde(rename = "truncatedAlerts")]
    pub truncated_alerts: u64,
}

/// One alert of a webhook body (Alertmanager's `template.Alert`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookAlert {
    /// `firing` or `resolved`.
    pub status: AlertStatus,
    /// The alert's labels.
    pub labels: Labels,
    /// The alert's annotations.
    pub annotations: Labels,
    /// When it started firing.
    #[serde(rename = "startsAt", with = "go_time")]
    pub starts_at: OffsetDateTime,
    /// When it resolved; [`ZERO_TIME`] while it fires.
    #[serde(rename = "endsAt", with = "go_time")]
    pub ends_at: OffsetDateTime,
    /// Link to what produced the alert.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    /// The fingerprint of its labels.
    pub fingerprint: String,
}

/// Builds the webhook body for a notification, as Alertmanager's webhook
/// notifier does: resolved alerts only when the receiver wants them
/// (`send_resolved`), all alerts in Alertmanager's order, the first
/// `max_alerts` kept (0: no limit) and the rest counted in
/// `truncatedAlerts`, then status and common labels/annotations computed
/// over the kept alerts. `None` when nothing is left to send (a receiver
/// without `send_resolved` and only resolved alerts): the notification
/// still counts as delivered.
pub fn webhook_message(
    notification: &Notification,
    send_resolved: bool,
    max_alerts: usize,
    external_url: &str,
    generator_url: impl Fn(&AlertView) -> String,
) -> Option<WebhookMessage> {
    let mut included: Vec<&AlertView> = notification.firing.iter().collect();
    if send_resolved {
        included.extend(notification.resolved.iter());
    }
    if included.is_empty() {
        return None;
    }
    included.sort_by(|a, b| alert_order(&a.labels, &b.labels));
    let mut truncated_alerts = 0;
    if max_alerts != 0 && included.len() > max_alerts {
        truncated_alerts = u64::try_from(included.len() - max_alerts).unwrap_or(u64::MAX);
        included.truncate(max_alerts);
    }
    let status = if included.iter().any(|a| a.state == AlertStatus::Firing) {
        AlertStatus::Firing
    } else {
        AlertStatus::Resolved
    };
    let common_labels = common(included.iter().map(|a| &a.labels));
    let common_annotations = common(included.iter().map(|a| &a.annotations));
    let alerts = included
        .into_iter()
        .map(|a| WebhookAlert {
            status: a.state,
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at: a.starts_at,
            ends_at: match a.state {
                AlertStatus::Firing => ZERO_TIME,
                AlertStatus::Resolved => a.ends_at.unwrap_or(ZERO_TIME),
            },
            generator_url: generator_url(a),
            fingerprint: a.fingerprint.clone(),
        })
        .collect();
    Some(WebhookMessage {
        receiver: notification.receiver.clone(),
        status,
        alerts,
        group_labels: notification.group_labels.clone(),
        common_labels,
        common_annotations,
        external_url: external_url.to_owned(),
        version: WEBHOOK_VERSION.to_owned(),
        group_key: notification.group_key.clone(),
        truncated_alerts,
    })
}

/// The pairs every set has, with the same value.
fn common<'a>(mut sets: impl Iterator<Item = &'a Labels>) -> Labels {
    let Some(first) = sets.next() else {
        return Labels::new();
    };
    let mut common = first.clone();
    for set in sets {
        if common.is_empty() {
            break;
        }
        common.retain(|name, value| set.get(name) == Some(value));
    }
    common
}

/// One alert of a `POST /api/v2/alerts` body (Alertmanager's
/// `PostableAlert`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostableAlert {
    /// The alert's labels.
    pub labels: Labels,
    /// The alert's annotations.
    pub annotations: Labels,
    /// When it started firing.
    #[serde(rename = "startsAt", with = "go_time")]
    pub starts_at: OffsetDateTime,
    /// When it resolved or, while firing, until when Alertmanager should
    /// consider it firing without hearing from us again.
    #[serde(rename = "endsAt", with = "go_time")]
    pub ends_at: OffsetDateTime,
    /// Link to what produced the alert.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// The body for forwarding alerts to an Alertmanager, as Prometheus builds
/// it: pending alerts are left out, `startsAt` is when the alert fired, and
/// `endsAt` is when it resolved or, for a firing alert, `now + valid_for`.
/// Prometheus uses `valid_for = 4 × max(evaluation interval, resend delay)`,
/// so a firing alert that stops being re-sent (the alerter is down) resolves
/// in Alertmanager on its own after a few missed rounds.
pub fn alertmanager_alerts<'a>(
    alerts: impl IntoIterator<Item = &'a ActiveAlert>,
    now: OffsetDateTime,
    valid_for: Duration,
    generator_url: impl Fn(&ActiveAlert) -> String,
) -> Vec<PostableAlert> {
    alerts
        .into_iter()
        .filter_map(|alert| {
            let ends_at = match alert.state {
                AlertState::Pending => return None,
                AlertState::Firing => add(now, valid_for),
                AlertState::Resolved => alert.resolved_at.unwrap_or(now),
            };
            Some(PostableAlert {
                labels: alert.labels.clone(),
                annotations: alert.annotations.clone(),
                starts_at: alert.fired_at.unwrap_or(alert.active_at),
                ends_at,
                generator_url: generator_url(alert),
            })
        })
        .collect()
}

//! Delivering notifications to receivers, off the evaluation loop.
//!
//! Each notification is delivered by a task of its own: webhooks get
//! Alertmanager's webhook payload (version 4), Alertmanagers the alerts on
//! `POST /api/v2/alerts`, and a receiver without integrations logs it. A
//! failed POST is retried a few times with back-off inside its task; if it
//! still fails, the notification is reported undelivered, the notification
//! log is not updated, and the group tries again at its next
//! `group_interval`. Evaluation never waits for a receiver.

use std::time::Duration;

use clawfleet_shared::alerts::NotificationRecord;
use clawfleet_shared::timefmt;

use crate::config::Receiver;
use crate::engine::alerts::ActiveAlert;
use crate::engine::routing::{AlertView, Notification};
use crate::engine::webhook;

/// Tries of one POST within one delivery.
const TRIES: u32 = 3;
/// Delay before the second try; doubled for each later one.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Most bytes of a receiver's error response kept in the record.
const MAX_ERROR_BYTES: usize = 300;

/// The outcome of one delivery.
pub struct Delivered {
    /// What was sent.
    pub notification: Notification,
    /// Whether every integration of the receiver took it.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
}

/// Sends notifications.
#[derive(Clone)]
pub struct Deliverer {
    pub(crate) http: reqwest::Client,
    pub(crate) external_url: String,
}

impl Deliverer {
    /// A deliverer linking alerts to `external_url`.
    pub fn new(external_url: String) -> Deliverer {
        let http = reqwest::Client::builder()
            .user_agent(concat!("clawfleet-alerter/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client builds");
        Deliverer { http, external_url }
    }

    /// Delivers `notification` to `receiver`, with retries.
    pub async fn deliver(&self, receiver: &Receiver, notification: Notification) -> Delivered {
        let mut errors = Vec::new();
        let generator = |a: &AlertView| {
            format!(
                "{}/#/alerts?fingerprint={}",
                self.external_url.trim_end_matches('/'),
                a.fingerprint
            )
        };
        for hook in &receiver.webhooks {
            let Some(message) = webhook::webhook_message(
                &notification,
                hook.send_resolved,
                hook.max_alerts,
                &self.external_url,
                generator,
            ) else {
                continue;
            };
            if let Err(e) = self.post(&hook.url, &message, hook.timeout).await {
                errors.push(format!("{}: {e}", hook.url));
            }
        }
        if receiver.webhooks.is_empty() {
            for a in &notification.firing {
                tracing::warn!(receiver = %receiver.name, group = %notification.group_key, alert = %a.labels.get("alertname").map_or("", String::as_str), fingerprint = %a.fingerprint, labels = ?a.labels, "alert firing: {}", a.annotations.get("summary").map_or("", String::as_str));
            }
            for a in &notification.resolved {
                tracing::info!(receiver = %receiver.name, group = %notification.group_key, alert = %a.labels.get("alertname").map_or("", String::as_str), fingerprint = %a.fingerprint, "alert resolved");
            }
        }
        let ok = errors.is_empty();
        Delivered {
            notification,
            ok,
            error: (!ok).then(|| clawfleet_shared::strict::cut(&errors.join("; "), 1024)),
        }
    }

    /// Sends `alerts` (firing and recently resolved, as the book has them)
    /// to each Alertmanager, with retries; the errors of those that did not
    /// take them.
    pub async fn forward(
        &self,
        alertmanagers: &[String],
        alerts: &[ActiveAlert],
        valid_for: Duration,
    ) -> Vec<String> {
        let body = webhook::alertmanager_alerts(
            alerts,
            clawfleet_shared::timefmt::now(),
            valid_for,
            |a: &ActiveAlert| {
                format!(
                    "{}/#/alerts?fingerprint={}",
                    self.external_url.trim_end_matches('/'),
                    a.fingerprint()
                )
            },
        );
        let mut errors = Vec::new();
        for base in alertmanagers {
            let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
            if let Err(e) = self.post(&url, &body, Duration::from_secs(10)).await {
                errors.push(format!("{url}: {e}"));
            }
        }
        errors
    }

    async fn post<T: serde::Serialize>(
        &self,
        url: &str,
        body: &T,
        timeout: Duration,
    ) -> Result<(), String> {
        let mut delay = FIRST_RETRY;
        let mut last = String::new();
        for attempt in 1..=TRIES {
            match self.http.post(url).timeout(timeout).json(body).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    last = format!(
                        "HTTP {status}: {}",
                        clawfleet_shared::strict::cut(&text, MAX_ERROR_BYTES)
                    );
                    // A client error will not change by trying again.
                    if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS
                    {
                        return Err(last);
                    }
                }
                Err(e) => last = e.to_string(),
            }
            if attempt < TRIES {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        Err(last)
    }
}

/// The record of a delivery, as `clawfleet.events.alert.notified.<receiver>` carries it.
pub fn record(d: &Delivered) -> NotificationRecord {
    let n = &d.notification;
    NotificationRecord {
        receiver: n.receiver.clone(),
        group_key: n.group_key.clone(),
        status: if n.firing.is_empty() {
            "resolved"
        } else {
            "firing"
        }
        .to_string(),
        firing: n.firing.iter().map(|a| a.fingerprint.clone()).collect(),
        resolved: n.resolved.iter().map(|a| a.fingerprint.clone()).collect(),
        delivered: d.ok,
        error: d.error.clone(),
        time: timefmt::now(),
    }
}

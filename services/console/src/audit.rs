//! The audit log: every mutating call, who made it, on what, when, and how
//! it ended, on `clawfleet.events.audit.<action>` (stored in
//! `CLAWFLEET_EVENTS`, so it is kept and replayable like every event).

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use clawfleet_shared::timefmt::{self, Timestamp};
use clawfleet_shared::{subjects, ErrorBody, ErrorCode};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::api::ApiError;
use crate::auth::Principal;

/// Wildcard of the audit subjects.
pub const AUDIT_ALL: &str = "clawfleet.events.audit.>";

/// One audited call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When.
    #[serde(with = "timefmt")]
    pub time: Timestamp,
    /// The token's name.
    pub who: String,
    /// Its role.
    pub role: String,
    /// Its tenant, for a tenant token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// What: `task.submit`, `task.cancel`...
    pub action: String,
    /// On what (a task id), when known.
    pub target: String,
    /// `ok`, or the error code.
    pub result: String,
}

/// Writes and reads the audit log.
pub struct Audit {
    pub(crate) js: jetstream::Context,
}

impl Audit {
    /// Records a call, waiting for the stream to store it. A failure is
    /// logged at ERROR: the call itself has already happened.
    pub async fn record<T>(
        &self,
        who: &Principal,
        action: &str,
        target: String,
        outcome: &Result<T, ApiError>,
    ) {
        let entry = AuditEntry {
            time: timefmt::now(),
            who: who.name.clone(),
            role: who.role.as_str().to_string(),
            tenant: who.tenant.clone(),
            action: action.to_string(),
            target,
            result: match outcome {
                Ok(_) => "ok".to_string(),
                Err(e) => e.0.code.as_str().to_string(),
            },
        };
        let subject = format!("clawfleet.events.audit.{action}");
        let body = serde_json::to_vec(&entry).expect("audit entries encode");
        let stored = match self.js.publish(subject, body.into()).await {
            Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = stored {
            tracing::error!(error = %e, who = %entry.who, action, "could not store an audit entry");
        }
    }

    /// The latest `limit` entries of the last `since`, oldest first.
    pub async fn read(&self, since: Duration, limit: usize) -> Result<Vec<AuditEntry>, ApiError> {
        let unavailable = |e: &dyn std::fmt::Display| {
            ApiError(ErrorBody::new(
                ErrorCode::Unavailable,
                format!("audit log: {e}"),
            ))
        };
        let stream = self
            .js
            .get_stream(subjects::STREAM_EVENTS)
            .await
            .map_err(|e| unavailable(&e))?;
        let last = stream.cached_info().state.last_sequence;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: AUDIT_ALL.to_string(),
                deliver_policy: consumer::DeliverPolicy::ByStartTime {
                    start_time: timefmt::now() - since,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&e))?;
        let pending = consumer.cached_info().num_pending;
        let mut messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
        let mut out = std::collections::VecDeque::new();
        for _ in 0..pending {
            let Ok(Some(Ok(msg))) =
                tokio::time::timeout(Duration::from_secs(5), messages.next()).await
            else {
                break;
            };
            if msg.info().is_ok_and(|i| i.stream_sequence > last) {
                break;
            }
            if let Ok(entry) = serde_json::from_slice::<AuditEntry>(&msg.payload) {
                out.push_back(entry);
                if out.len() > limit {
                    out.pop_front();
                }
            }
        }
        Ok(out.into())
    }
}

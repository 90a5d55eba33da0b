//! `clawfleet.api.alerts.*`: alerts, rules and silences.
//!
//! Every replica answers, from the state the leader stores (alerts, rule
//! values) and the silences in the bucket, so the answer does not depend on
//! which replica a request reaches. Replies are bounded like every list in
//! clawfleet ([`clawfleet_shared::api::reply_budget`]).

use std::time::Duration;

use async_nats::Message;
use bytes::Bytes;
use clawfleet_shared::alerts::{
    AlertsReply, ExpireRequest, RulesReply, SilenceInfo, SilenceRequest, SilencesReply, TestReply,
    TestRequest,
};
use clawfleet_shared::api::{fit_budget, reply_budget};
use clawfleet_shared::error::ErrorReply;
use clawfleet_shared::strict;
use clawfleet_shared::{subjects, timefmt, ErrorBody, ErrorCode};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::engine::alerts::{AlertBook, AlertState};
use crate::engine::labels::Labels;
use crate::engine::matcher::Matcher;
use crate::engine::silences::{Silence, SilenceState};
use crate::store::{self, Store};
use crate::Live;

/// Longest a silence may last.
const MAX_SILENCE: Duration = Duration::from_secs(366 * 24 * 3600);

/// The API's handler.
pub(crate) struct Api {
    pub(crate) client: async_nats::Client,
    pub(crate) store: Store,
    pub(crate) live: Live,
}

type Reply = Result<Bytes, ErrorBody>;

impl Api {
    pub(crate) async fn serve(
        self,
        mut requests: futures::stream::SelectAll<async_nats::Subscriber>,
        stop: CancellationToken,
    ) {
        loop {
            let msg = tokio::select! {
                m = requests.next() => match m { Some(m) => m, None => return },
                _ = stop.cancelled() => return,
            };
            self.handle(msg).await;
        }
    }

    async fn handle(&self, msg: Message) {
        let Some(reply_to) = msg.reply.clone() else {
            return;
        };
        let reply = match msg.subject.as_str() {
            subjects::API_ALERTS_LIST => self.alerts().await,
            subjects::API_ALERTS_RULES => self.rules().await,
            subjects::API_ALERTS_TEST => self.test(&msg.payload).await,
            subjects::API_ALERTS_SILENCES => self.silences().await,
            subjects::API_ALERTS_SILENCE => self.silence(&msg.payload).await,
            subjects::API_ALERTS_EXPIRE => self.expire(&msg.payload).await,
            other => Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("unknown API subject {}", strict::echo(other)),
            )),
        };
        let body = reply.unwrap_or_else(|error| {
            serde_json::to_vec(&ErrorReply { error })
                .expect("error reply encodes")
                .into()
        });
        if let Err(e) = self.client.publish(reply_to, body).await {
            tracing::warn!(error = %e, "could not send API reply");
        }
    }

    fn budget(&self) -> usize {
        reply_budget(self.client.server_info().max_payload)
    }

    async fn alerts(&self) -> Reply {
        let book: AlertBook = self
            .store
            .get(store::ALERTS)
            .await
            .map_err(unavailable)?
            .unwrap_or_default();
        let silences = self.store.silences().await.map_err(unavailable)?;
        let inhibit_rules = self.live.read().expect("live lock").inhibit_rules.clone();
        let now = timefmt::now();
        let firing: Vec<&Labels> = book
            .alerts()
            .filter(|a| a.state == AlertState::Firing)
            .map(|a| &a.labels)
            .collect();
        let mut alerts: Vec<_> = book
            .alerts()
            .map(|a| {
                let silenced_by: Vec<String> = silences
                    .iter()
                    .filter(|s| s.mutes(&a.labels, now))
                    .map(|s| s.id.clone())
                    .collect();
                let inhibited = a.state == AlertState::Firing
                    && crate::engine::inhibit::inhibited(&inhibit_rules, &a.labels, &firing);
                crate::alert_info(a, &silenced_by, inhibited)
            })
            .collect();
        let rank = |s: &str| match s {
            "firing" => 0,
            "pending" => 1,
            _ => 2,
        };
        alerts.sort_by(|a, b| (rank(&a.state), &a.labels).cmp(&(rank(&b.state), &b.labels)));
        let (alerts, truncated) = fit_budget(alerts, self.budget().saturating_sub(512));
        let rules: Option<RulesReply> = self.store.get(store::RULES).await.ok().flatten();
        encode(&AlertsReply {
            alerts,
            evaluated_at: rules.and_then(|r| r.evaluated_at),
            leader: self
                .store
                .lease()
                .await
                .filter(|l| l.until > now)
                .map(|l| l.holder),
            truncated,
        })
    }

    async fn rules(&self) -> Reply {
        let stored: Option<RulesReply> = self.store.get(store::RULES).await.map_err(unavailable)?;
        encode(&stored.unwrap_or(RulesReply {
            rules: Vec::new(),
            evaluated_at: None,
        }))
    }

    /// Evaluates one rule now, changing nothing: its values and the alerts
    /// its groups would be, marked as a notification would treat them.
    async fn test(&self, body: &[u8]) -> Reply {
        let request: TestRequest = strict::object(body).map_err(|e| {
            ErrorBody::new(ErrorCode::InvalidRequest, format!("bad test request: {e}"))
        })?;
        let config = self.live.read().expect("live lock").clone();
        let Some(rule) = config.rules.iter().find(|r| r.name == request.rule) else {
            return Err(ErrorBody::new(
                ErrorCode::NotFound,
                format!("no rule {}", strict::echo(&request.rule)),
            ));
        };
        let mut sources = crate::Sources {
            client: self.client.clone(),
            js: clawfleet_shared::nats::jetstream(self.client.clone()),
            timeout: config.request_timeout,
            dlq_history: Default::default(),
        };
        let now = timefmt::now();
        let read = sources
            .read(&rule.signal, &mut crate::signals::Cycle::default(), now)
            .await;
        let (status, samples) = crate::judge(rule, read);
        let silences = self.store.silences().await.map_err(unavailable)?;
        let book: AlertBook = self
            .store
            .get(store::ALERTS)
            .await
            .map_err(unavailable)?
            .unwrap_or_default();
        let firing: Vec<&Labels> = book
            .alerts()
            .filter(|a| a.state == AlertState::Firing)
            .map(|a| &a.labels)
            .collect();
        let alerts = samples
            .unwrap_or_default()
            .into_iter()
            .take(200)
            .map(|s| clawfleet_shared::alerts::AlertInfo {
                fingerprint: crate::engine::labels::fingerprint(&s.labels),
                silenced_by: silences
                    .iter()
                    .filter(|x| x.mutes(&s.labels, now))
                    .map(|x| x.id.clone())
                    .collect(),
                inhibited: crate::engine::inhibit::inhibited(
                    &config.inhibit_rules,
                    &s.labels,
                    &firing,
                ),
                labels: s.labels,
                annotations: s.annotations,
                state: if rule.for_.is_zero() {
                    "firing"
                } else {
                    "pending"
                }
                .to_string(),
                value: s.value,
                active_at: now,
                fired_at: None,
                resolved_at: None,
            })
            .collect();
        encode(&TestReply {
            rule: status,
            alerts,
        })
    }

    async fn silences(&self) -> Reply {
        let now = timefmt::now();
        let mut all: Vec<SilenceInfo> = self
            .store
            .silences()
            .await
            .map_err(unavailable)?
            .iter()
            .map(|s| silence_info(s, now))
            .collect();
        let rank = |s: &str| match s {
            "active" => 0,
            "pending" => 1,
            _ => 2,
        };
        all.sort_by(|a, b| {
            (rank(&a.state), std::cmp::Reverse(a.ends_at))
                .cmp(&(rank(&b.state), std::cmp::Reverse(b.ends_at)))
        });
        let (silences, _) = fit_budget(all, self.budget().saturating_sub(512));
        encode(&SilencesReply { silences })
    }

    async fn silence(&self, body: &[u8]) -> Reply {
        let request: SilenceRequest = strict::object(body).map_err(|e| {
            ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("bad silence request: {e}"),
            )
        })?;
        let invalid = |m: String| ErrorBody::new(ErrorCode::InvalidRequest, m);
        let matchers = request
            .matchers
            .iter()
            .take(64)
            .map(|m| {
                Matcher::parse(m).map_err(|e| invalid(format!("matcher {}: {e}", strict::echo(m))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let now = timefmt::now();
        let starts_at = request.starts_at.unwrap_or(now).max(now);
        let ends_at = match (request.ends_at, request.duration.as_deref()) {
            (Some(end), None) => end,
            (None, Some(d)) => {
                let d = humantime::parse_duration(d)
                    .map_err(|e| invalid(format!("duration {}: {e}", strict::echo(d))))?;
                if d > MAX_SILENCE {
                    return Err(invalid("a silence lasts at most a year".to_string()));
                }
                starts_at + d
            }
            _ => return Err(invalid("give either ends_at or duration".to_string())),
        };
        if self.store.silences().await.map_err(unavailable)?.len() >= store::MAX_SILENCES {
            return Err(ErrorBody::new(
                ErrorCode::Unavailable,
                format!(
                    "at most {} silences are kept; expire some first",
                    store::MAX_SILENCES
                ),
            ));
        }
        let silence = Silence {
            id: ulid::Ulid::new().to_string(),
            matchers,
            starts_at,
            ends_at,
            created_by: request.created_by,
            comment: request.comment,
            updated_at: now,
        };
        silence.validate().map_err(|e| invalid(e.to_string()))?;
        self.store
            .put_silence(&silence)
            .await
            .map_err(unavailable)?;
        tracing::info!(silence = %silence.id, created_by = %strict::echo(&silence.created_by), matchers = %silence.matchers.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(","), "silence created");
        encode(&silence_info(&silence, now))
    }

    async fn expire(&self, body: &[u8]) -> Reply {
        let request: ExpireRequest = strict::object(body).map_err(|e| {
            ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("bad expire request: {e}"),
            )
        })?;
        let key = format!("{}{}", store::SILENCE_PREFIX, request.id);
        let valid_id =
            request.id.len() <= 64 && request.id.chars().all(|c| c.is_ascii_alphanumeric());
        let found: Option<Silence> = if valid_id {
            self.store.get(&key).await.map_err(unavailable)?
        } else {
            None
        };
        let Some(mut silence) = found else {
            return Err(ErrorBody::new(
                ErrorCode::NotFound,
                format!("no silence {}", strict::echo(&request.id)),
            ));
        };
        let now = timefmt::now();
        silence
            .expire(now)
            .map_err(|e| ErrorBody::new(ErrorCode::InvalidRequest, e.to_string()))?;
        self.store
            .put_silence(&silence)
            .await
            .map_err(unavailable)?;
        tracing::info!(silence = %silence.id, "silence expired");
        encode(&silence_info(&silence, now))
    }
}

fn silence_info(s: &Silence, now: timefmt::Timestamp) -> SilenceInfo {
    SilenceInfo {
        id: s.id.clone(),
        matchers: s.matchers.iter().map(|m| m.to_string()).collect(),
        starts_at: s.starts_at,
        ends_at: s.ends_at,
        created_by: s.created_by.clone(),
        comment: s.comment.clone(),
        state: match s.state(now) {
            SilenceState::Pending => "pending",
            SilenceState::Active => "active",
            SilenceState::Expired => "expired",
        }
        .to_string(),
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Reply {
    Ok(serde_json::to_vec(v).expect("replies encode").into())
}

fn unavailable(e: store::StoreError) -> ErrorBody {
    ErrorBody::new(ErrorCode::Unavailable, e.to_string())
}

//! The request/reply API served on `clawfleet.api.*` (queue group
//! `clawfleet-dispatcher`, so any number of dispatchers share it).

use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use clawfleet_shared::agent::{AgentInfo, QueueEntry, RunningSet};
use clawfleet_shared::api::{
    AgentsReply, ListRequest, PauseRule, PausedReply, QueueDepth, QueuesReply, SubmitReply,
    TaskGetRequest, TenantRunning,
};
use clawfleet_shared::error::ErrorReply;
use clawfleet_shared::names::{Capability, Tenant};
use clawfleet_shared::strict::{self, echo};
use clawfleet_shared::{subjects, ErrorBody, ErrorCode, Priority, TaskRecord, TaskStatus};
use futures::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use ulid::Ulid;

use crate::admission::Admission;
use crate::validate::{self, Bounds, Draft};

/// Most pause rules in force at once (they are listed in every queues reply).
const MAX_PAUSE_RULES: usize = 256;

/// Requests handled at once per dispatcher; more wait in the subscription.
const MAX_CONCURRENT_REQUESTS: usize = 1024;

/// What the API handlers need.
pub struct Api {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) tasks: kv::Store,
    pub(crate) agents: kv::Store,
    pub(crate) queues: kv::Store,
    pub(crate) running: kv::Store,
    pub(crate) admission: Arc<Admission>,
    pub(crate) bounds: Bounds,
}

pub(crate) type Reply = Result<Bytes, ErrorBody>;

pub(crate) fn ok<T: Serialize>(body: &T) -> Reply {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()))
}

/// Decodes a request body strictly: one JSON object, no repeated keys
/// (see [`strict`]); `what` names the request in the error.
pub(crate) fn request<T: DeserializeOwned>(what: &str, payload: &[u8]) -> Result<T, ErrorBody> {
    strict::object(payload).map_err(|e| bad_request(what, e))
}

/// Like [`request`], for requests whose every field is optional: an empty
/// body takes every default.
pub(crate) fn request_or_empty<T: DeserializeOwned + Default>(
    what: &str,
    payload: &[u8],
) -> Result<T, ErrorBody> {
    strict::object_or_empty(payload).map_err(|e| bad_request(what, e))
}

pub(crate) fn bad_request(what: &str, e: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::InvalidRequest,
        format!("bad {what} request: {e}"),
    )
}

pub(crate) fn internal(context: &str, e: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(ErrorCode::Unavailable, format!("{context}: {e}"))
}

impl Api {
    /// Subscribes to every API subject and serves until `cancel`; in-flight
    /// requests are answered before this returns.
    ///
    /// `ready` receives the outcome of subscribing, before any request is served.
    pub async fn serve_with_ready(
        self: Arc<Self>,
        cancel: CancellationToken,
        ready: tokio::sync::oneshot::Sender<Result<(), async_nats::SubscribeError>>,
    ) -> Result<(), async_nats::SubscribeError> {
        let group = subjects::DISPATCHER_QUEUE_GROUP.to_string();
        let mut subs = Vec::new();
        for subject in subjects::DISPATCHER_API {
            match self.client.queue_subscribe(subject, group.clone()).await {
                Ok(sub) => subs.push(sub),
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return Ok(());
                }
            }
        }
        // Make sure the server has the subscriptions before we report ready.
        // A flush only empties our socket buffer; the answer to a request on
        // the same connection comes after the server has handled everything
        // sent before it, subscriptions included.
        if let Err(e) = self.js.query_account().await {
            tracing::warn!(error = %e, "could not confirm the API subscriptions");
        }
        let _ = ready.send(Ok(()));
        let mut requests = futures::stream::select_all(subs);
        let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
        let tracker = TaskTracker::new();
        loop {
            let msg = tokio::select! {
                m = requests.next() => match m { Some(m) => m, None => break },
                _ = cancel.cancelled() => break,
            };
            let Ok(permit) = limit.clone().acquire_owned().await else {
                break;
            };
            let this = self.clone();
            tracker.spawn(async move {
                this.handle(msg).await;
                drop(permit);
            });
        }
        // Dropping the subscriptions unsubscribes; then answer what we took.
        drop(requests);
        tracker.close();
        tracker.wait().await;
        Ok(())
    }

    async fn handle(&self, msg: Message) {
        let Some(reply_to) = msg.reply.clone() else {
            tracing::debug!(subject = %msg.subject, "API message without reply subject ignored");
            return;
        };
        let reply = match msg.subject.as_str() {
            subjects::API_SUBMIT => self.submit(&msg.payload).await,
            subjects::API_TASK_GET => self.task_get(&msg.payload).await,
            subjects::API_AGENTS_LIST => self.agents_list(&msg.payload).await,
            subjects::API_QUEUES_LIST => self.queues_list(&msg.payload).await,
            subjects::API_DLQ_LIST => self.dlq_list(&msg.payload).await,
            subjects::API_QUEUES_PAUSE => self.pause(&msg.payload, true).await,
            subjects::API_QUEUES_RESUME => self.pause(&msg.payload, false).await,
            subjects::API_TASK_CANCEL => self.task_cancel(&msg.payload).await,
            subjects::API_DLQ_GET => self.dlq_get(&msg.payload).await,
            subjects::API_DLQ_REPLAY => self.dlq_replay(&msg.payload).await,
            other => Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("unknown API subject {other}"),
            )),
        };
        if let (subjects::API_SUBMIT, Err(error)) = (msg.subject.as_str(), &reply) {
            metrics::counter!(crate::metrics::TASKS_REJECTED, "code" => error.code.as_str())
                .increment(1);
        }
        let body = reply.unwrap_or_else(|error| {
            serde_json::to_vec(&ErrorReply { error })
                .expect("error reply encodes")
                .into()
        });
        if let Err(e) = self.client.publish(reply_to, body).await {
            tracing::warn!(error = %e, "could not send API reply");
        }
    }

    async fn submit(&self, payload: &[u8]) -> Reply {
        let draft = validate::parse(payload, None, &self.bounds)?;
        ok(&self.submit_draft(draft).await?)
    }

    /// Checks a validated task against admission (catalogue, quotas) and the
    /// records, then stores it in intake (the pipeline records and routes it
    /// from there). Shared by `api.submit` and `api.dlq.replay`.
    pub(crate) async fn submit_draft(&self, draft: Draft) -> Result<SubmitReply, ErrorBody> {
        self.admission.admit(&draft.spec, false).await?;
        if let Some(id) = &draft.id {
            if let Some(record) = self.record(id).await? {
                if record.spec.tenant != draft.spec.tenant {
                    return Err(ErrorBody::new(
                        ErrorCode::IdConflict,
                        format!("id {id:?} is already used by another tenant"),
                    ));
                }
                return Ok(SubmitReply {
                    id: id.clone(),
                    status: record.status,
                    duplicate: true,
                });
            }
        }
        let spec = draft.into_spec(|| Ulid::new().to_string());
        let body = serde_json::to_vec(&spec).expect("task encodes");
        // Scoped by tenant so that another tenant's in-flight submission of the
        // same id is never answered with this tenant's task (the intake
        // pipeline then refuses it with `id_conflict`).
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            format!("{}/{}", spec.tenant, spec.id).as_str(),
        );
        headers.insert(subjects::HEADER_ADMITTED, "1");
        let ack = self
            .js
            .publish_with_headers(subjects::intake(&spec.tenant), headers, body.into())
            .await
            .map_err(|e| internal("while submitting", e))?
            .await
            .map_err(|e| internal("while submitting", e))?;
        Ok(SubmitReply {
            id: spec.id,
            status: TaskStatus::Queued,
            duplicate: ack.duplicate,
        })
    }

    pub(crate) async fn record(&self, id: &str) -> Result<Option<TaskRecord>, ErrorBody> {
        match self.tasks.get(id).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                ErrorBody::new(ErrorCode::Internal, format!("unreadable record {id}: {e}"))
            }),
            Ok(None) => Ok(None),
            Err(e) => Err(internal("while reading task", e)),
        }
    }

    async fn task_get(&self, payload: &[u8]) -> Reply {
        let req: TaskGetRequest = request("task.get (expected {\"id\": \"...\"})", payload)?;
        let not_found = || {
            ErrorBody::new(
                ErrorCode::NotFound,
                format!("no task with id {}", echo(&req.id)),
            )
        };
        // An id that no task can have (and that could be a key wildcard).
        if !validate::is_id(&req.id) {
            return Err(not_found());
        }
        let record = self.record(&req.id).await?.ok_or_else(not_found)?;
        if req
            .tenant
            .as_ref()
            .is_some_and(|t| *t != record.spec.tenant)
        {
            return Err(not_found());
        }
        ok(&record)
    }

    /// Adds (`pause`) or removes a pause rule; replies with the rules in force.
    async fn pause(&self, payload: &[u8], pause: bool) -> Reply {
        let what = if pause {
            "queues.pause"
        } else {
            "queues.resume"
        };
        let rule: PauseRule = request(what, payload)?;
        if let Some(t) = rule.tenant.as_deref() {
            Tenant::parse(t).map_err(|e| bad_request(what, e))?;
        }
        if let Some(c) = rule.capability.as_deref() {
            Capability::parse(c).map_err(|e| bad_request(what, e))?;
        }
        // A rule for every queue must say so: an empty body is a mistake
        // far more often than a wish to stop the whole fleet.
        match (rule.is_everything(), rule.all) {
            (true, false) => {
                return Err(bad_request(
                    what,
                    "name the queues (tenant, priority, capability), or every queue with {\"all\": true}",
                ))
            }
            (false, true) => {
                return Err(bad_request(
                    what,
                    "\"all\": true covers every queue; it takes no tenant, priority or capability",
                ))
            }
            _ => {}
        }
        if pause
            && self.pause_rules().await?.len() >= MAX_PAUSE_RULES
            && !self.has_rule(&rule).await
        {
            return Err(bad_request(
                what,
                format!("at most {MAX_PAUSE_RULES} pause rules may be in force; resume some first"),
            ));
        }
        if pause {
            let bytes = serde_json::to_vec(&rule).expect("rule encodes");
            self.queues
                .put(rule.key(), bytes.into())
                .await
                .map_err(|e| internal("while pausing", e))?;
            tracing::info!(rule = %rule, "queues paused");
        } else {
            let key = rule.key();
            let exists = matches!(self.queues.get(&key).await, Ok(Some(_)));
            if !exists {
                return Err(ErrorBody::new(
                    ErrorCode::NotFound,
                    "no pause rule with exactly these fields is in force",
                ));
            }
            self.queues
                .delete(&key)
                .await
                .map_err(|e| internal("while resuming", e))?;
            tracing::info!(rule = %rule, "queues resumed");
        }
        ok(&PausedReply {
            paused: self.pause_rules().await?,
        })
    }

    async fn has_rule(&self, rule: &PauseRule) -> bool {
        matches!(self.queues.get(rule.key()).await, Ok(Some(_)))
    }

    /// The pause rules in force (the only values of the queue registry
    /// that read as one: queue entries and preemption claims do not).
    async fn pause_rules(&self) -> Result<Vec<PauseRule>, ErrorBody> {
        read_bucket(&self.queues).await
    }

    async fn agents_list(&self, payload: &[u8]) -> Reply {
        let req: ListRequest = request_or_empty("agents.list", payload)?;
        let mut agents: Vec<AgentInfo> = read_bucket(&self.agents).await?;
        agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        if let Some(after) = &req.cursor {
            agents.retain(|a| a.agent_id > *after);
        }
        let (agents, more) = clawfleet_shared::api::fit_budget(agents, self.budget());
        let next_cursor = more
            .then(|| agents.last().map(|a| a.agent_id.clone()))
            .flatten();
        ok(&AgentsReply {
            agents,
            next_cursor,
        })
    }

    /// The byte budget of a list reply on this connection's server.
    fn budget(&self) -> usize {
        clawfleet_shared::api::reply_budget(self.client.server_info().max_payload)
    }

    async fn queues_list(&self, payload: &[u8]) -> Reply {
        let req: ListRequest = request_or_empty("queues.list", payload)?;
        let entries: Vec<QueueEntry> = read_bucket(&self.queues).await?;
        let paused = self.pause_rules().await?;
        let stream = self
            .js
            .get_stream_no_info(subjects::STREAM_QUEUE)
            .await
            .map_err(|e| internal("while opening queue stream", e))?;
        // What agents hold, by queue consumer, from their heartbeats: the
        // rest of a consumer's unacknowledged messages wait out a delay.
        let agents: Vec<AgentInfo> = read_bucket(&self.agents).await?;
        let mut held: std::collections::HashMap<String, u64> = Default::default();
        for lease in agents.iter().flat_map(|a| &a.running) {
            if let Some(consumer) = subjects::consumer_of_ack(&lease.ack) {
                *held.entry(consumer.to_string()).or_default() += 1;
            }
        }
        let mut queues = Vec::new();
        let mut capped = std::collections::BTreeMap::new();
        for entry in entries {
            if let Some(max) = entry.max_running {
                capped.insert(entry.tenant.clone(), max);
            }
            for priority in Priority::ALL {
                let name = subjects::queue_consumer(priority, &entry.key);
                let Ok(info) = stream.consumer_info(&name).await else {
                    continue;
                };
                let unacked = info.num_ack_pending as u64;
                let running = held.get(&name).copied().unwrap_or(0).min(unacked);
                let subject = subjects::queue(
                    priority,
                    entry.region.as_deref(),
                    &entry.requires,
                    &entry.tenant,
                );
                // The first message past what the consumer has delivered is
                // the oldest task no agent has taken yet.
                let oldest_waiting_at = if info.num_pending > 0 {
                    stream
                        .direct_get_next_for_subject(
                            subject.as_str(),
                            Some(info.delivered.stream_sequence + 1),
                        )
                        .await
                        .ok()
                        .map(|m| m.time)
                } else {
                    None
                };
                queues.push(QueueDepth {
                    subject,
                    tenant: entry.tenant.clone(),
                    priority,
                    region: entry.region.clone(),
                    requires: entry.requires.clone(),
                    waiting: info.num_pending,
                    running,
                    delayed: unacked - running,
                    paused: paused.iter().any(|r| r.matches(&entry, priority)),
                    oldest_waiting_at,
                });
            }
        }
        queues.sort_by(|a, b| (a.priority, &a.subject).cmp(&(b.priority, &b.subject)));
        if let Some(after) = &req.cursor {
            queues.retain(|q| q.subject > *after);
        }
        let (queues, more) =
            clawfleet_shared::api::fit_budget(queues, self.budget().saturating_sub(16 * 1024));
        let next_cursor = more
            .then(|| queues.last().map(|q| q.subject.clone()))
            .flatten();
        let intake_pending = match self.js.get_stream_no_info(subjects::STREAM_INTAKE).await {
            Ok(s) => s
                .consumer_info(subjects::CONSUMER_DISPATCHER)
                .await
                .map(|i| i.num_pending + i.num_ack_pending as u64)
                .unwrap_or(0),
            Err(_) => 0,
        };
        let mut tenants = Vec::new();
        for (tenant, max_running) in capped {
            let running = match self.running.get(&tenant).await {
                Ok(Some(bytes)) => serde_json::from_slice::<RunningSet>(&bytes)
                    .map(|set| set.tasks.len() as u64)
                    .unwrap_or(0),
                _ => 0,
            };
            tenants.push(TenantRunning {
                tenant,
                running,
                max_running,
            });
        }
        ok(&QueuesReply {
            queues,
            next_cursor,
            paused,
            intake_pending,
            capped: tenants,
        })
    }
}

async fn read_bucket<T: serde::de::DeserializeOwned>(
    bucket: &kv::Store,
) -> Result<Vec<T>, ErrorBody> {
    let keys: Vec<String> = bucket
        .keys()
        .await
        .map_err(|e| internal("while listing", e))?
        .try_collect()
        .await
        .map_err(|e| internal("while listing", e))?;
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        if let Ok(Some(bytes)) = bucket.get(&key).await {
            if let Ok(v) = serde_json::from_slice(&bytes) {
                out.push(v);
            }
        }
    }
    Ok(out)
}

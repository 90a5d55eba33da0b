//! The dead-letter API: `dlq.list`, `dlq.get` and `dlq.replay`.
//!
//! Replaying submits a dead letter again as a new task, through the same
//! checks as `api.submit` (validation, the profile catalogue, the id), so a
//! replay is refused for the same reasons a submission would be, and says
//! so in its reply instead of producing another dead letter.
//!
//! - A `failed` entry holds the validated task: it is submitted again with
//!   its spec (priority, requires, region, payload, timeout, max_attempts,
//!   labels, retry), a fresh `submitted_at` and no `not_before`.
//! - A `rejected` (or `poison`) entry holds the raw body as it was
//!   published: that body is validated again, with the tenant of the intake
//!   subject it arrived on, so a cause fixed since (an agent with the
//!   missing capability has joined, say) lets it through.
//!
//! The new task's id is `<original id>-r<seq>` (`dlq-r<seq>` when the entry
//! had no id; the original part is shortened to keep within 64 bytes), and
//! its `replay_of` field names the original id and the entry's sequence. As
//! the id depends only on the entry, replaying an entry again finds that
//! task (a duplicate) instead of creating another.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::consumer;
use async_nats::jetstream::stream::DirectGetErrorKind;
use clawfleet_shared::api::{
    reply_budget, DlqEntry, DlqGetRequest, DlqListReply, DlqListRequest, DlqReason, DlqReplayReply,
    DlqReplayRequest, ReplayedEntry, DLQ_LIST_TASK_MAX_BYTES,
};
use clawfleet_shared::names::Tenant;
use clawfleet_shared::strict::{self, echo};
use clawfleet_shared::task::ReplayOf;
use clawfleet_shared::timefmt::Timestamp;
use clawfleet_shared::{subjects, ErrorBody, ErrorCode, TaskSpec};
use futures::StreamExt;
use serde_json::Value;

use crate::api::{bad_request, internal, ok, request, request_or_empty, Api, Reply};
use crate::validate::{self, MAX_ID_LEN};

/// Default and largest number of entries `dlq.list` returns and
/// `dlq.replay` selects by filter (or takes by sequence).
const DLQ_DEFAULT_LIMIT: usize = 100;
const DLQ_MAX_LIMIT: usize = 1000;
/// Longest error message of one entry of a `dlq.replay` reply.
const REPLAY_MESSAGE_BYTES: usize = 200;
/// Longest a request spends reading the dead-letter stream.
const READ_BUDGET: Duration = Duration::from_secs(5);

/// Which entries a request selects.
struct Filter<'a> {
    tenant: Option<&'a str>,
    reason: Option<DlqReason>,
    since: Option<Timestamp>,
    /// Only entries older than this sequence (the cursor of a next page).
    before: Option<u64>,
}

impl Filter<'_> {
    fn check(&self) -> Result<(), ErrorBody> {
        if let Some(tenant) = self.tenant {
            // `_` holds entries with no valid tenant (poison and unreadable intake).
            if tenant != subjects::ANY {
                Tenant::parse(tenant)
                    .map_err(|e| ErrorBody::new(ErrorCode::InvalidTenant, e.to_string()))?;
            }
        }
        Ok(())
    }

    fn matches(&self, entry: &DlqEntry) -> bool {
        self.tenant.is_none_or(|t| t == entry.tenant)
            && self.reason.is_none_or(|r| r == entry.reason)
            && self.since.is_none_or(|s| entry.time >= s)
    }
}

/// A `cursor` of `dlq.list`: the sequence of the last entry listed.
fn cursor(text: Option<&str>) -> Result<Option<u64>, ErrorBody> {
    text.map(|c| {
        c.parse::<u64>().ok().filter(|seq| *seq > 0).ok_or_else(|| {
            bad_request(
                "dlq.list",
                format!("cursor {} is not one of this API's cursors", echo(c)),
            )
        })
    })
    .transpose()
}

impl Api {
    pub(crate) async fn dlq_list(&self, payload: &[u8]) -> Reply {
        let req: DlqListRequest = request_or_empty("dlq.list", payload)?;
        let filter = Filter {
            tenant: req.tenant.as_deref(),
            reason: req.reason,
            since: req.since,
            before: cursor(req.cursor.as_deref())?,
        };
        filter.check()?;
        let limit = req
            .limit
            .unwrap_or(DLQ_DEFAULT_LIMIT)
            .clamp(1, DLQ_MAX_LIMIT);
        // One more than asked, to know whether another page follows.
        let mut found = self.read_dead_letters(&filter, limit + 1).await?;
        let more = found.len() > limit;
        found.truncate(limit);
        let budget = reply_budget(self.client.server_info().max_payload);
        let mut used = 64;
        let mut entries = Vec::with_capacity(found.len());
        let mut truncated = false;
        for entry in found {
            let size = serde_json::to_vec(&entry).map_or(usize::MAX, |v| v.len()) + 1;
            if used + size > budget {
                truncated = true;
                break;
            }
            used += size;
            entries.push(entry);
        }
        let next_cursor = (more || truncated)
            .then(|| entries.last().and_then(|e| e.seq))
            .flatten()
            .map(|seq| seq.to_string());
        ok(&DlqListReply {
            entries,
            next_cursor,
            truncated,
        })
    }

    pub(crate) async fn dlq_get(&self, payload: &[u8]) -> Reply {
        let req: DlqGetRequest = request("dlq.get (expected {\"seq\": N})", payload)?;
        if req.seq == 0 {
            return Err(bad_request("dlq.get", "seq starts at 1"));
        }
        match self.dead_letter(req.seq).await? {
            Some(entry) if req.tenant.as_ref().is_none_or(|t| *t == entry.tenant) => ok(&entry),
            _ => Err(not_found(req.seq)),
        }
    }

    pub(crate) async fn dlq_replay(&self, payload: &[u8]) -> Reply {
        let req: DlqReplayRequest = request("dlq.replay", payload)?;
        let filter = Filter {
            tenant: req.tenant.as_deref(),
            reason: req.reason,
            since: req.since,
            before: None,
        };
        filter.check()?;
        let mut selected: Vec<Result<DlqEntry, u64>> = Vec::new();
        if req.seqs.is_empty() {
            // Replaying the whole dead-letter stream by accident is too easy otherwise.
            if filter.tenant.is_none() && filter.reason.is_none() && filter.since.is_none() {
                return Err(ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    "name the entries (seqs) or give at least one filter (tenant, reason, since)",
                ));
            }
            let limit = req
                .limit
                .unwrap_or(DLQ_DEFAULT_LIMIT)
                .clamp(1, DLQ_MAX_LIMIT);
            selected.extend(
                self.read_dead_letters(&filter, limit)
                    .await?
                    .into_iter()
                    .map(Ok),
            );
        } else {
            let seqs: BTreeSet<u64> = req.seqs.iter().copied().collect();
            if seqs.len() > DLQ_MAX_LIMIT {
                return Err(ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    format!("at most {DLQ_MAX_LIMIT} entries per replay"),
                ));
            }
            for seq in seqs {
                match self.dead_letter(seq).await? {
                    Some(entry) if filter.matches(&entry) => selected.push(Ok(entry)),
                    _ => selected.push(Err(seq)),
                }
            }
        }
        // Oldest first, so replayed tasks queue in their original order.
        selected.sort_by_key(|s| match s {
            Ok(entry) => entry.seq.unwrap_or_default(),
            Err(seq) => *seq,
        });
        let mut entries = Vec::with_capacity(selected.len());
        for item in selected {
            // A listed entry may have left its task out; read it whole.
            let item = match item {
                Ok(entry) if entry.task_omitted => {
                    let seq = entry.seq.unwrap_or_default();
                    self.dead_letter(seq).await?.ok_or(seq)
                }
                other => other,
            };
            entries.push(match item {
                Ok(entry) => self.replay(entry, req.dry_run).await,
                Err(seq) => ReplayedEntry {
                    seq,
                    reason: None,
                    tenant: None,
                    original_id: None,
                    id: None,
                    status: None,
                    duplicate: false,
                    error: Some(not_found(seq)),
                },
            });
        }
        ok(&DlqReplayReply {
            dry_run: req.dry_run,
            entries,
        })
    }

    /// Submits one dead letter again (or, with `dry_run`, only checks it).
    async fn replay(&self, entry: DlqEntry, dry_run: bool) -> ReplayedEntry {
        let seq = entry.seq.unwrap_or_default();
        let original_id = entry.id.clone().or_else(|| {
            entry
                .task
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| validate::is_id(id))
                .map(str::to_string)
        });
        let new_id = replay_id(original_id.as_deref(), seq);
        let mut report = ReplayedEntry {
            seq,
            reason: Some(entry.reason),
            tenant: Some(entry.tenant.clone()),
            original_id: original_id.clone(),
            id: None,
            status: None,
            duplicate: false,
            error: None,
        };
        let link = ReplayOf {
            id: original_id,
            dlq_seq: seq,
        };
        if let Some(body) = &entry.body {
            report.error = Some(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!(
                    "this dead letter keeps only the first bytes and the digest of its {}-byte task, which cannot run again",
                    body.bytes
                ),
            ));
            return report;
        }
        let (body, subject_tenant) = replay_body(&entry, &new_id, &link);
        let outcome = async {
            let draft = validate::parse(&body, subject_tenant.as_deref(), &self.bounds)?;
            if dry_run {
                self.admission.runnable(&draft.spec).await?;
                let id = draft.id.clone().unwrap_or(new_id.clone());
                let existing = self.record(&id).await?;
                return Ok((id, existing.map(|r| r.status), true));
            }
            let reply = self.submit_draft(draft).await?;
            Ok::<_, ErrorBody>((reply.id, Some(reply.status), reply.duplicate))
        }
        .await;
        match outcome {
            Ok((id, status, duplicate)) => {
                report.id = Some(id);
                // A dry run reports a duplicate only when the task exists.
                report.duplicate = if dry_run { status.is_some() } else { duplicate };
                report.status = status;
                tracing::info!(
                    seq,
                    id = report.id.as_deref().unwrap_or(""),
                    dry_run,
                    duplicate = report.duplicate,
                    "dead letter replayed"
                );
            }
            // Up to 1000 entries share one reply: each says why briefly.
            Err(mut error) => {
                strict::cut_in_place(&mut error.message, REPLAY_MESSAGE_BYTES);
                report.error = Some(error);
            }
        }
        report
    }

    /// One entry by sequence; `None` when there is none (or it is not a dead letter).
    async fn dead_letter(&self, seq: u64) -> Result<Option<DlqEntry>, ErrorBody> {
        let stream = self
            .js
            .get_stream_no_info(subjects::STREAM_DLQ)
            .await
            .map_err(|e| internal("while opening DLQ stream", e))?;
        let msg = match stream.direct_get(seq).await {
            Ok(msg) => msg,
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(internal("while reading DLQ", e)),
        };
        Ok(serde_json::from_slice::<DlqEntry>(&msg.payload)
            .ok()
            .map(|mut entry| {
                entry.seq = Some(seq);
                entry
            }))
    }

    /// Up to `limit` matching entries, newest first. An entry's task larger
    /// than [`DLQ_LIST_TASK_MAX_BYTES`] is left out (`task_omitted`; read
    /// the entry by sequence for it), which bounds what this holds in memory.
    async fn read_dead_letters(
        &self,
        filter: &Filter<'_>,
        limit: usize,
    ) -> Result<Vec<DlqEntry>, ErrorBody> {
        let subject = subjects::dlq(
            filter.reason.map_or("*", |r| r.as_str()),
            filter.tenant.unwrap_or("*"),
        );
        let deliver_policy = match filter.since {
            Some(start_time) => consumer::DeliverPolicy::ByStartTime { start_time },
            None => consumer::DeliverPolicy::All,
        };
        let stream = self
            .js
            .get_stream_no_info(subjects::STREAM_DLQ)
            .await
            .map_err(|e| internal("while opening DLQ stream", e))?;
        let mut consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subject,
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| internal("while reading DLQ", e))?;
        let pending = consumer
            .info()
            .await
            .map(|i| i.num_pending)
            .map_err(|e| internal("while reading DLQ", e))?;
        let mut entries = std::collections::VecDeque::with_capacity(limit.min(1024));
        if pending > 0 {
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| internal("while reading DLQ", e))?;
            let deadline = tokio::time::Instant::now() + READ_BUDGET;
            while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, messages.next()).await {
                let info = msg.info().ok().map(|i| (i.stream_sequence, i.pending));
                if info.is_some_and(|(seq, _)| filter.before.is_some_and(|b| seq >= b)) {
                    break;
                }
                if let Ok(mut entry) = serde_json::from_slice::<DlqEntry>(&msg.payload) {
                    entry.seq = info.map(|i| i.0);
                    if filter.matches(&entry) {
                        if msg.payload.len() > DLQ_LIST_TASK_MAX_BYTES {
                            omit_large_task(&mut entry);
                        }
                        if entries.len() == limit {
                            entries.pop_front();
                        }
                        entries.push_back(entry);
                    }
                }
                if info.is_none_or(|i| i.1 == 0) {
                    break;
                }
            }
        }
        Ok(entries.into_iter().rev().collect())
    }
}

/// Leaves a large task out of a listed entry.
fn omit_large_task(entry: &mut DlqEntry) {
    let size = serde_json::to_vec(&entry.task).map_or(usize::MAX, |v| v.len());
    if size > DLQ_LIST_TASK_MAX_BYTES {
        entry.task = Value::Null;
        entry.task_omitted = true;
    }
}

fn not_found(seq: u64) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::NotFound,
        format!("no dead letter with sequence {seq}"),
    )
}

/// `<original>-r<seq>`, or `dlq-r<seq>` without an original id; the original
/// part is cut short when the whole would exceed the longest id.
pub fn replay_id(original: Option<&str>, seq: u64) -> String {
    let suffix = format!("-r{seq}");
    let base = original.unwrap_or("dlq");
    // Task ids are ASCII, so any byte index is a character boundary.
    let keep = base.len().min(MAX_ID_LEN - suffix.len());
    format!("{}{suffix}", &base[..keep])
}

/// The body to submit for a dead letter, and the intake tenant to validate
/// it with (the tenant of the intake subject a rejected body arrived on).
fn replay_body(entry: &DlqEntry, new_id: &str, link: &ReplayOf) -> (Vec<u8>, Option<String>) {
    let link = serde_json::to_value(link).expect("a link encodes");
    // A validated task (failed entries, and `id_conflict` refusals); any
    // other refusal holds the body as published, which is checked again as is.
    let validated =
        entry.reason == DlqReason::Failed || entry.failure.code == ErrorCode::IdConflict;
    if let Some(spec) = validated
        .then(|| serde_json::from_value::<TaskSpec>(entry.task.clone()).ok())
        .flatten()
    {
        let mut task = serde_json::to_value(&spec).expect("a task encodes");
        if let Value::Object(obj) = &mut task {
            obj.insert("id".into(), Value::from(new_id));
            obj.insert("replay_of".into(), link);
            obj.remove("submitted_at");
            obj.remove("not_before");
        }
        return (serde_json::to_vec(&task).expect("JSON encodes"), None);
    }
    let subject_tenant = subjects::tenant_of_intake(&entry.subject)
        .filter(|t| validate::is_tenant(t))
        .map(str::to_string);
    let body = match &entry.task {
        Value::Object(obj) => {
            let mut obj = obj.clone();
            // An invalid id is left alone, to be refused as it was.
            let id_usable = match obj.get("id") {
                None | Some(Value::Null) => true,
                Some(Value::String(id)) => validate::is_id(id),
                Some(_) => false,
            };
            if id_usable {
                obj.insert("id".into(), Value::from(new_id));
                obj.insert("replay_of".into(), link);
            }
            serde_json::to_vec(&obj).expect("JSON encodes")
        }
        // A body that was not JSON is kept as text.
        Value::String(raw) => raw.clone().into_bytes(),
        other => serde_json::to_vec(other).expect("JSON encodes"),
    };
    (body, subject_tenant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_ids_link_to_the_original_and_fit_the_id_limit() {
        assert_eq!(replay_id(Some("report-42"), 7), "report-42-r7");
        assert_eq!(replay_id(None, 12), "dlq-r12");
        let long = "x".repeat(MAX_ID_LEN);
        let id = replay_id(Some(&long), 123_456);
        assert_eq!(id.len(), MAX_ID_LEN);
        assert!(id.ends_with("-r123456") && validate::is_id(&id), "{id}");
    }
}

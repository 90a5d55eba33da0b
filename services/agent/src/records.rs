//! Compare-and-set updates of task records.
//!
//! An agent is not the only writer of a record (a dispatcher creates it, and
//! a task may move between agents), so every change is a read-modify-write
//! on the record's revision, retried on conflict.

use async_nats::jetstream::kv;
use clawfleet_shared::TaskRecord;

/// Conflicting writers are rare; this many retries means something is wrong.
pub(crate) const MAX_CONFLICTS: usize = 16;

/// Errors while updating a record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The record does not exist (expired, or never created).
    #[error("task record {0} not found")]
    Missing(String),
    /// The stored record cannot be decoded.
    #[error("task record {id} is unreadable: {source}")]
    Corrupt {
        /// Task id.
        id: String,
        /// Cause.
        source: serde_json::Error,
    },
    /// The record changed since the revision an update was based on.
    #[error("task record {0} changed meanwhile")]
    Conflict(String),
    /// NATS trouble.
    #[error("while accessing task record: {0}")]
    Nats(String),
}

/// A record and the revision it was read at.
#[derive(Debug, Clone)]
pub struct Versioned {
    /// The record.
    pub record: TaskRecord,
    /// Its KV revision.
    pub revision: u64,
}

/// Reads a record.
pub async fn read(tasks: &kv::Store, id: &str) -> Result<Versioned, RecordError> {
    let entry = tasks
        .entry(id)
        .await
        .map_err(|e| RecordError::Nats(e.to_string()))?
        .filter(|e| e.operation == kv::Operation::Put)
        .ok_or_else(|| RecordError::Missing(id.to_string()))?;
    let record = serde_json::from_slice(&entry.value).map_err(|source| RecordError::Corrupt {
        id: id.to_string(),
        source,
    })?;
    Ok(Versioned {
        record,
        revision: entry.revision,
    })
}

/// Writes `record` at `revision`, once: [`RecordError::Conflict`] if the
/// stored record is at another revision.
pub async fn write_at(
    tasks: &kv::Store,
    id: &str,
    record: TaskRecord,
    revision: u64,
) -> Result<Versioned, RecordError> {
    let bytes = serde_json::to_vec(&record).expect("task record encodes");
    match tasks.update(id, bytes.into(), revision).await {
        Ok(revision) => Ok(Versioned { record, revision }),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
            Err(RecordError::Conflict(id.to_string()))
        }
        Err(e) => Err(RecordError::Nats(e.to_string())),
    }
}

/// Applies `change` to the record, starting from `current` when given (saving
/// a read), re-reading and re-applying on conflict. `change` returns `false`
/// to leave the record as it is.
pub async fn update(
    tasks: &kv::Store,
    id: &str,
    current: Option<Versioned>,
    mut change: impl FnMut(&mut TaskRecord) -> bool,
) -> Result<Versioned, RecordError> {
    let mut current = match current {
        Some(c) => c,
        None => read(tasks, id).await?,
    };
    for _ in 0..MAX_CONFLICTS {
        let mut record = current.record.clone();
        if !change(&mut record) {
            return Ok(current);
        }
        let bytes = serde_json::to_vec(&record).expect("task record encodes");
        match tasks.update(id, bytes.into(), current.revision).await {
            Ok(revision) => return Ok(Versioned { record, revision }),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                current = read(tasks, id).await?;
            }
            Err(e) => return Err(RecordError::Nats(e.to_string())),
        }
    }
    Err(RecordError::Nats(format!(
        "too many concurrent updates of task {id}"
    )))
}

//! What the alerter keeps in JetStream (bucket `clawfleet-alerter`), so a
//! restart, or another replica taking over, neither forgets a firing alert
//! nor notifies it again.
//!
//! | key | what |
//! |---|---|
//! | `leader` | the lease: which replica evaluates and notifies, until when |
//! | `alerts` | the alert book: pending, firing and recently resolved alerts |
//! | `nflog` | the notification log: what each group last sent, when |
//! | `rules` | the rules' latest values, for `alerts rules` |
//! | `silence.<id>` | one silence each |
//!
//! The leader writes `alerts` and `rules` after every evaluation and
//! `nflog` after every notification delivered, before anything else: a
//! leader killed between delivering and recording can make its successor
//! send that one notification again (at least once, as Alertmanager), never
//! lose it.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use clawfleet_shared::subjects;
use clawfleet_shared::timefmt::{self, Timestamp};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::engine::silences::Silence;

/// Key of the leader lease.
pub const LEADER: &str = "leader";
/// Key of the alert book.
pub const ALERTS: &str = "alerts";
/// Key of the notification log.
pub const NFLOG: &str = "nflog";
/// Key of the rules' latest values.
pub const RULES: &str = "rules";
/// Prefix of the silences' keys.
pub const SILENCE_PREFIX: &str = "silence.";
/// Most silences kept (expired ones are deleted past their retention).
pub const MAX_SILENCES: usize = 10_000;
/// How long an expired silence is still listed.
pub const EXPIRED_SILENCE_RETENTION: Duration = Duration::from_secs(5 * 24 * 3600);

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bucket could not be created or opened.
    #[error("while opening bucket clawfleet-alerter: {0}")]
    Open(String),
    /// A read or write failed.
    #[error("{0}")]
    Io(String),
    /// Another writer changed the key first.
    #[error("changed meanwhile")]
    Conflict,
}

/// The alerter's bucket.
#[derive(Clone)]
pub struct Store {
    pub(crate) kv: kv::Store,
    /// The connection, to fail at once while it is down.
    pub(crate) client: async_nats::Client,
    /// Longest any one operation may take: a leader that lost NATS must go
    /// on evaluating (and notifying that NATS is gone), not wait on it.
    pub(crate) timeout: Duration,
}

/// The leader lease's value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    /// The replica holding it.
    pub holder: String,
    /// Until when, unless renewed.
    #[serde(with = "timefmt")]
    pub until: Timestamp,
}

impl Store {
    /// Creates the bucket if it does not exist, and opens it; every later
    /// operation gives up after `timeout`.
    pub async fn open(
        js: &jetstream::Context,
        client: async_nats::Client,
        timeout: Duration,
    ) -> Result<Store, StoreError> {
        let kv = match js.get_key_value(subjects::BUCKET_ALERTER).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: subjects::BUCKET_ALERTER.to_string(),
                    description: "clawfleet alerter: alerts, notification log, silences, leader"
                        .to_string(),
                    history: 1,
                    max_value_size: 1024 * 1024,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| StoreError::Open(e.to_string()))?,
        };
        Ok(Store {
            kv,
            client,
            timeout,
        })
    }

    /// Reads a JSON value; `None` when absent or unreadable (logged).
    async fn get_inner<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.kv.get(key).await {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(v) => Ok(Some(v)),
                Err(e) => {
                    tracing::warn!(key, error = %e, "unreadable alerter state; starting that part afresh");
                    Ok(None)
                }
            },
            Ok(None) => Ok(None),
            Err(e) => Err(StoreError::Io(e.to_string())),
        }
    }

    /// Writes a JSON value.
    async fn put_inner<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Io(e.to_string()))?;
        self.kv
            .put(key, bytes.into())
            .await
            .map(drop)
            .map_err(|e| StoreError::Io(e.to_string()))
    }

    /// Takes or renews the leader lease for `replica` for `lease`, if it is
    /// free, expired, or already this replica's. `Ok(true)`: this replica leads.
    async fn hold_lease_inner(
        &self,
        replica: &str,
        lease: Duration,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let value = serde_json::to_vec(&Lease {
            holder: replica.to_string(),
            until: now + lease,
        })
        .expect("lease encodes");
        let entry = self
            .kv
            .entry(LEADER)
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?;
        let written = match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let current: Option<Lease> = serde_json::from_slice(&entry.value).ok();
                let ours = current.as_ref().is_some_and(|l| l.holder == replica);
                let expired = current.as_ref().is_none_or(|l| l.until <= now);
                if !ours && !expired {
                    return Ok(false);
                }
                self.kv
                    .update(LEADER, value.into(), entry.revision)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            _ => self
                .kv
                .create(LEADER, value.into())
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        // A failed compare-and-set: another replica took it first.
        Ok(written.is_ok())
    }

    /// Reads a JSON value; `None` when absent or unreadable (logged).
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.bounded(self.get_inner(key)).await
    }

    /// Writes a JSON value.
    pub async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.bounded(self.put_inner(key, value)).await
    }

    /// Takes or renews the leader lease for `replica` for `lease`, if it is
    /// free, expired, or already this replica's. `Ok(true)`: this replica leads.
    pub async fn hold_lease(
        &self,
        replica: &str,
        lease: Duration,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.bounded(self.hold_lease_inner(replica, lease, now))
            .await
    }

    /// Every silence.
    pub async fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        self.bounded(self.silences_inner()).await
    }

    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if !connected(&self.client) {
            return Err(StoreError::Io("not connected to NATS".into()));
        }
        tokio::time::timeout(self.timeout, op)
            .await
            .unwrap_or_else(|_| Err(StoreError::Io("no answer from JetStream in time".into())))
    }

    /// Gives the lease up (on shutdown), if this replica holds it.
    pub async fn release_lease(&self, replica: &str) {
        if let Ok(Some(entry)) = self.kv.entry(LEADER).await {
            let ours =
                serde_json::from_slice::<Lease>(&entry.value).is_ok_and(|l| l.holder == replica);
            if ours {
                let _ = self
                    .kv
                    .delete_expect_revision(LEADER, Some(entry.revision))
                    .await;
            }
        }
    }

    /// The lease as it stands.
    pub async fn lease(&self) -> Option<Lease> {
        self.get(LEADER).await.ok().flatten()
    }

    /// Every silence.
    async fn silences_inner(&self) -> Result<Vec<Silence>, StoreError> {
        let mut keys = self
            .kv
            .keys()
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| StoreError::Io(e.to_string()))?;
            if !key.starts_with(SILENCE_PREFIX) {
                continue;
            }
            if out.len() >= MAX_SILENCES {
                break;
            }
            if let Some(s) = self.get::<Silence>(&key).await? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Stores a silence.
    pub async fn put_silence(&self, silence: &Silence) -> Result<(), StoreError> {
        self.put(&format!("{SILENCE_PREFIX}{}", silence.id), silence)
            .await
    }

    /// Deletes a silence (past its retention).
    pub async fn delete_silence(&self, id: &str) {
        let _ = self.kv.delete(format!("{SILENCE_PREFIX}{id}")).await;
    }
}

/// Whether the client is connected now (while it is not, requests would
/// only wait for their timeout).
pub fn connected(client: &async_nats::Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

//! Which (capability set, region) combinations the fleet can run.
//!
//! A task is accepted only if some profile covers it: a profile from config,
//! or one an agent has offered (agents refresh theirs in the profiles bucket
//! on every heartbeat; an entry outlives the agent by `limits.profile_ttl`,
//! so work for a fleet that is briefly down still queues). Rejecting early
//! is what keeps a task from waiting forever for an agent that cannot exist.
//!
//! The catalogue is a cache refreshed every [`REFRESH`] and, on a miss, read
//! again before saying no, so an agent that has just joined is honoured.
//! Concurrent misses share one re-read.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use clawfleet_shared::agent::ProfileEntry;
use clawfleet_shared::{ErrorBody, ErrorCode};
use futures::TryStreamExt;
use tokio::sync::{Mutex, RwLock};

/// How often the cache is refreshed in the background.
pub const REFRESH: Duration = Duration::from_secs(2);

/// The capability catalogue.
#[derive(Clone)]
pub struct Catalogue {
    inner: Arc<Inner>,
}

struct Inner {
    bucket: kv::Store,
    fixed: Vec<ProfileEntry>,
    offered: RwLock<Vec<ProfileEntry>>,
    /// Number of completed reads; guarded so that re-reads are serialised.
    reads: Mutex<u64>,
}

impl Catalogue {
    /// A catalogue over the profiles bucket plus the profiles from config.
    pub fn new(bucket: kv::Store, fixed: Vec<ProfileEntry>) -> Self {
        Self {
            inner: Arc::new(Inner {
                bucket,
                fixed,
                offered: RwLock::new(Vec::new()),
                reads: Mutex::new(0),
            }),
        }
    }

    /// Re-reads the profiles bucket.
    pub async fn refresh(&self) {
        let mut reads = self.inner.reads.lock().await;
        self.read_bucket().await;
        *reads += 1;
    }

    async fn read_bucket(&self) {
        let mut offered = Vec::new();
        let mut keys = match self.inner.bucket.keys().await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(error = %e, "could not list capability profiles");
                return;
            }
        };
        while let Ok(Some(key)) = keys.try_next().await {
            if let Ok(Some(bytes)) = self.inner.bucket.get(&key).await {
                match serde_json::from_slice::<ProfileEntry>(&bytes) {
                    Ok(p) => offered.push(p),
                    Err(e) => tracing::warn!(key, error = %e, "ignoring unreadable profile"),
                }
            }
        }
        *self.inner.offered.write().await = offered;
    }

    async fn covered(&self, task: &Wanted<'_>) -> Coverage {
        let offered = self.inner.offered.read().await;
        let mut capable = false;
        for p in self.inner.fixed.iter().chain(offered.iter()) {
            if p.covers(task.requires, task.region, task.tenant, task.restricted) {
                return Coverage::Yes;
            }
            capable |= p.covers(
                task.requires,
                p.region.as_deref(),
                task.tenant,
                task.restricted,
            );
        }
        if capable {
            Coverage::WrongRegion
        } else {
            Coverage::No
        }
    }

    /// Accepts `tenant`'s (capability set, region) if the fleet can run it,
    /// or explains why not; `restricted`: only agents dedicated to the
    /// tenant count.
    pub async fn check(
        &self,
        requires: &[String],
        region: Option<&str>,
        tenant: &str,
        restricted: bool,
    ) -> Result<(), ErrorBody> {
        let task = Wanted {
            requires,
            region,
            tenant,
            restricted,
        };
        let seen = *self.inner.reads.lock().await;
        let mut coverage = self.covered(&task).await;
        if coverage != Coverage::Yes {
            let mut reads = self.inner.reads.lock().await;
            // Someone else re-read after our miss: their view is fresh enough.
            if *reads == seen {
                self.read_bucket().await;
                *reads += 1;
            }
            drop(reads);
            coverage = self.covered(&task).await;
        }
        let only = if restricted {
            format!(" dedicated to tenant {tenant:?} (it may use only its own agents)")
        } else {
            String::new()
        };
        match coverage {
            Coverage::Yes => Ok(()),
            Coverage::WrongRegion => Err(ErrorBody::new(
                ErrorCode::UnknownRegion,
                format!(
                    "no agent profile{only} with capabilities [{}] serves region {:?}",
                    requires.join(", "),
                    region.unwrap_or_default()
                ),
            )),
            Coverage::No => Err(ErrorBody::new(
                ErrorCode::UnknownCapability,
                format!(
                    "no registered agent profile{only} offers all of [{}]; start an agent with them or declare a profile",
                    requires.join(", ")
                ),
            )),
        }
    }
}

struct Wanted<'a> {
    requires: &'a [String],
    region: Option<&'a str>,
    tenant: &'a str,
    restricted: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Coverage {
    Yes,
    WrongRegion,
    No,
}

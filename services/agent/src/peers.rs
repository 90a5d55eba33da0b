//! The other agents, as their heartbeats describe them: used to decide
//! whether a task that just failed here has somewhere else to go.
//!
//! Read on demand, not followed: every agent following every heartbeat
//! would cost the server agents² messages (a thousand agents beating every
//! two seconds, each delivered to a thousand watchers, is half a million
//! messages a second), and the question is only asked after a failure. A
//! snapshot of the agents bucket (the last heartbeat of each) is read when
//! asked and kept for [`SNAPSHOT_TTL`].

use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use clawfleet_shared::agent::{is_subset, region_allows, tenant_allows, AgentInfo, AgentState};
use clawfleet_shared::TaskSpec;
use futures::StreamExt;
use tokio::sync::Mutex;

/// How long a snapshot of the agents bucket answers questions.
const SNAPSHOT_TTL: Duration = Duration::from_secs(1);
/// How long reading a snapshot may take.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Every agent's last heartbeat, with how old it was when read.
type Heartbeats = Vec<(AgentInfo, Duration)>;

/// The agents bucket, read when asked.
pub struct Peers {
    agents: kv::Store,
    /// The last snapshot, with when it was read.
    snapshot: Mutex<Option<(Instant, Heartbeats)>>,
}

impl Peers {
    /// Peers as the `agents` bucket tells them.
    pub fn new(agents: kv::Store) -> Peers {
        Peers {
            agents,
            snapshot: Mutex::new(None),
        }
    }

    /// Whether an agent other than `me`, beating recently and taking work,
    /// could run `spec`. `false` when the bucket cannot be read: the task
    /// then runs here rather than wait for an agent nobody knows of.
    pub async fn another_can_run(&self, spec: &TaskSpec, me: &str) -> bool {
        let mut snapshot = self.snapshot.lock().await;
        if snapshot
            .as_ref()
            .is_none_or(|(read, _)| read.elapsed() > SNAPSHOT_TTL)
        {
            match tokio::time::timeout(READ_TIMEOUT, read(&self.agents)).await {
                Ok(Ok(agents)) => *snapshot = Some((Instant::now(), agents)),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "could not read the agents bucket");
                    return false;
                }
                Err(_) => {
                    tracing::debug!("reading the agents bucket took too long");
                    return false;
                }
            }
        }
        let Some((_, agents)) = snapshot.as_ref() else {
            return false;
        };
        // Fresh as of the snapshot: a snapshot younger than the heartbeat
        // window would otherwise age every agent out of it.
        agents.iter().any(|(a, age)| {
            let fresh =
                *age < Duration::from_millis(a.heartbeat_interval_ms.max(100)).saturating_mul(3);
            a.agent_id != me
                && fresh
                && a.state == AgentState::Ready
                && a.pulling
                && is_subset(&spec.requires, &a.capabilities)
                && region_allows(a.region.as_deref(), spec.region.as_deref())
                && (a.tenants.is_empty() || tenant_allows(&a.tenants, &spec.tenant, false))
        })
    }
}

/// Every agent's last heartbeat, with its age.
async fn read(agents: &kv::Store) -> anyhow::Result<Heartbeats> {
    let mut out = Vec::new();
    // Fresh stream state: `kv::Store::status` answers from the info
    // cached when the bucket was opened.
    let mut stream = agents.stream.clone();
    if stream.info().await?.state.messages == 0 {
        return Ok(out);
    }
    let mut entries = agents.watch_with_history(">").await?;
    let wall = time::OffsetDateTime::now_utc();
    while let Some(entry) = entries.next().await {
        let entry = entry?;
        if entry.operation == kv::Operation::Put {
            if let Ok(info) = serde_json::from_slice::<AgentInfo>(&entry.value) {
                let age = (wall - entry.created).max(time::Duration::ZERO);
                out.push((info, Duration::try_from(age).unwrap_or_default()));
            }
        }
        if entry.delta == 0 {
            break;
        }
    }
    Ok(out)
}

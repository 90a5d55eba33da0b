//! Admission: whether a valid task may enter the fleet now.
//!
//! After validation, in this order:
//! 1. the profile catalogue: some agent profile can run it (for a tenant
//!    restricted to its dedicated agents, one dedicated to it);
//! 2. `quota.max_queued`: the tenant's queues hold fewer waiting tasks than
//!    its limit (`quota_exceeded`);
//! 3. `quota.submit_rate`: the tenant's token bucket has a token
//!    (`rate_limited`);
//! 4. the tenant's hard cost budget: no alerter has found it spent
//!    (`budget_exceeded`, from the `clawfleet-budgets` bucket, which
//!    [`Admission::follow_budgets`] keeps in memory: nothing is read on the
//!    way of a submission).
//!
//! Request/reply submissions get the error in the reply; intake submissions
//! are dead-lettered as `rejected` with it. Never a silent drop.
//!
//! The token buckets live in each dispatcher; with N dispatchers running,
//! each bucket holds 1/N of the tenant's rate and burst (see
//! [`crate::peers`]). Queue depths come from the queue stream's consumer
//! list, read at most every [`DEPTH_TTL`].

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use clawfleet_shared::alerts::BudgetExceeded;
use clawfleet_shared::{subjects, ErrorBody, ErrorCode, TaskSpec};
use futures::TryStreamExt;
use governor::{DefaultDirectRateLimiter, Quota as Rate, RateLimiter};
use tokio::sync::Mutex;

use crate::catalogue::Catalogue;
use crate::peers::Dispatchers;
use crate::validate::{Quota, TenantConfig};

/// How stale a tenant's queue depth may be.
pub const DEPTH_TTL: Duration = Duration::from_millis(500);
/// Most budget entries kept (one per tenant over its budget).
const MAX_BUDGET_ENTRIES: usize = 100_000;

/// The admission checks.
pub struct Admission {
    catalogue: Catalogue,
    js: jetstream::Context,
    tenants: Arc<BTreeMap<String, TenantConfig>>,
    /// Per tenant with a `submit_rate`: its bucket, and the number of
    /// dispatchers it was sized for.
    limiters: std::sync::Mutex<HashMap<String, (u32, DefaultDirectRateLimiter)>>,
    dispatchers: Arc<Dispatchers>,
    depths: Mutex<Option<(Instant, HashMap<String, u64>)>>,
    budgets: kv::Store,
    /// Tenants over their budget, as the budgets bucket says now.
    over_budget: std::sync::RwLock<HashMap<String, BudgetExceeded>>,
}

/// A token bucket holding `1/dispatchers` of the quota's rate and burst
/// (at least one token); `None` without a `submit_rate`.
fn limiter(quota: &Quota, dispatchers: u32) -> Option<DefaultDirectRateLimiter> {
    let rate = quota.submit_rate?;
    let burst = quota
        .submit_burst
        .unwrap_or_else(|| rate.ceil().max(1.0) as u32);
    let burst = (burst / dispatchers).max(1);
    let period = Duration::from_secs_f64(f64::from(dispatchers) / rate);
    let quota =
        Rate::with_period(period)?.allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
    Some(RateLimiter::direct(quota))
}

impl Admission {
    /// Admission over the catalogue and the tenants' policies, sharing the
    /// submission rates among `dispatchers`.
    pub fn new(
        catalogue: Catalogue,
        js: jetstream::Context,
        tenants: Arc<BTreeMap<String, TenantConfig>>,
        dispatchers: Arc<Dispatchers>,
        budgets: kv::Store,
    ) -> Self {
        let n = dispatchers.count();
        let limiters = tenants
            .iter()
            .filter_map(|(name, t)| Some((name.clone(), (n, limiter(&t.quota, n)?))))
            .collect();
        Self {
            catalogue,
            js,
            tenants,
            limiters: std::sync::Mutex::new(limiters),
            dispatchers,
            depths: Mutex::new(None),
            budgets,
            over_budget: Default::default(),
        }
    }

    /// Takes a token from `tenant`'s bucket, resized first if the number of
    /// dispatchers changed. `Err`: how long until the next token.
    fn take_token(&self, tenant: &str, quota: &Quota) -> Result<(), Duration> {
        let n = self.dispatchers.count();
        let mut limiters = self.limiters.lock().expect("limiters lock");
        let Some(entry) = limiters.get_mut(tenant) else {
            return Ok(());
        };
        if entry.0 != n {
            if let Some(resized) = limiter(quota, n) {
                *entry = (n, resized);
            }
        }
        entry.1.check().map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        })
    }

    /// Whether some agent profile can run `spec` (the first check of
    /// [`Admission::admit`], which takes no quota).
    pub async fn runnable(&self, spec: &TaskSpec) -> Result<(), ErrorBody> {
        let restricted = self
            .tenants
            .get(&spec.tenant)
            .is_some_and(|t| t.dedicated_only);
        self.catalogue
            .check(
                &spec.requires,
                spec.region.as_deref(),
                &spec.tenant,
                restricted,
            )
            .await
    }

    /// Whether `spec` may enter; `rate_checked`: a dispatcher already took
    /// its token (a request/reply submission on its way through intake).
    pub async fn admit(&self, spec: &TaskSpec, rate_checked: bool) -> Result<(), ErrorBody> {
        let policy = self.tenants.get(&spec.tenant);
        self.runnable(spec).await?;
        self.within_budget(&spec.tenant)?;
        let Some(policy) = policy else {
            return Ok(());
        };
        if let Some(max) = policy.quota.max_queued {
            let queued = self.queued(&spec.tenant).await;
            if queued >= max {
                return Err(ErrorBody::new(
                    ErrorCode::QuotaExceeded,
                    format!(
                        "tenant {:?} has {queued} tasks queued; its limit (quota.max_queued) is {max}",
                        spec.tenant
                    ),
                ));
            }
        }
        if !rate_checked {
            if let Err(wait) = self.take_token(&spec.tenant, &policy.quota) {
                return Err(ErrorBody::new(
                    ErrorCode::RateLimited,
                    format!(
                        "tenant {:?} is over its submission rate of {}/s; retry in {} ms",
                        spec.tenant,
                        policy.quota.submit_rate.unwrap_or_default(),
                        wait.as_millis().max(1)
                    ),
                ));
            }
            if policy.quota.max_queued.is_some() {
                // Count it until the next read of the depths, so a burst
                // of submissions cannot all pass on one stale depth.
                if let Some((_, depths)) = self.depths.lock().await.as_mut() {
                    *depths.entry(spec.tenant.clone()).or_insert(0) += 1;
                }
            }
        }
        Ok(())
    }

    /// `budget_exceeded` when an alerter found `tenant` over a hard budget
    /// whose period has not ended.
    fn within_budget(&self, tenant: &str) -> Result<(), ErrorBody> {
        let over_budget = self.over_budget.read().expect("budgets lock");
        let Some(over) = over_budget.get(tenant) else {
            return Ok(());
        };
        if over.until <= clawfleet_shared::timefmt::now() {
            return Ok(());
        }
        Err(ErrorBody::new(
            ErrorCode::BudgetExceeded,
            format!(
                "tenant {:?} spent {:.2} {} of its {} budget of {:.2}; new tasks are refused until {}",
                tenant,
                over.spend,
                over.currency,
                if over.period == "day" { "daily" } else { "monthly" },
                over.budget,
                clawfleet_shared::timefmt::format(over.until),
            ),
        ))
    }

    /// Keeps the tenants over their budget in memory, following the
    /// budgets bucket until `stop`.
    pub async fn follow_budgets(
        self: std::sync::Arc<Self>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let budgets = self.budgets.clone();
        clawfleet_shared::watch::follow(&budgets, ">", true, &stop, |entry| {
            let mut over = self.over_budget.write().expect("budgets lock");
            let parsed = (entry.operation == kv::Operation::Put)
                .then(|| serde_json::from_slice::<BudgetExceeded>(&entry.value).ok())
                .flatten()
                .filter(|b| b.tenant == entry.key);
            match parsed {
                Some(b) if over.len() < MAX_BUDGET_ENTRIES || over.contains_key(&b.tenant) => {
                    over.insert(b.tenant.clone(), b);
                }
                Some(_) => tracing::warn!(key = %entry.key, "too many tenants over their budget; ignoring one"),
                None => {
                    over.remove(&entry.key);
                }
            }
            std::future::ready(())
        })
        .await;
    }

    /// Tasks waiting in `tenant`'s queues (all priorities, capability sets, regions).
    async fn queued(&self, tenant: &str) -> u64 {
        let mut cache = self.depths.lock().await;
        let fresh = cache
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < DEPTH_TTL);
        if !fresh {
            match self.read_depths().await {
                Ok(d) => *cache = Some((Instant::now(), d)),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read queue depths; using the last ones")
                }
            }
        }
        cache
            .as_ref()
            .and_then(|(_, d)| d.get(tenant).copied())
            .unwrap_or(0)
    }

    async fn read_depths(&self) -> Result<HashMap<String, u64>, String> {
        let mut depths = HashMap::new();
        for q in queue_consumers(&self.js).await? {
            *depths.entry(q.tenant).or_insert(0) += q.waiting;
        }
        Ok(depths)
    }
}

/// One queue consumer's state, as the queue stream reports it.
pub(crate) struct QueueState {
    /// Its tenant.
    pub tenant: String,
    /// Its priority's wire name.
    pub priority: String,
    /// Tasks waiting.
    pub waiting: u64,
    /// Tasks delivered and not yet acknowledged.
    pub running: u64,
}

/// Every queue's state, in one paged read of the queue stream's consumers.
pub(crate) async fn queue_consumers(js: &jetstream::Context) -> Result<Vec<QueueState>, String> {
    let stream = js
        .get_stream_no_info(subjects::STREAM_QUEUE)
        .await
        .map_err(|e| e.to_string())?;
    let mut infos = stream.consumers();
    let mut out = Vec::new();
    while let Some(info) = infos.try_next().await.map_err(|e| e.to_string())? {
        let subject = &info.config.filter_subject;
        let (Some(tenant), Some(priority)) = (
            subjects::tenant_of_queue(subject),
            subject
                .strip_prefix("clawfleet.queue.")
                .and_then(|r| r.split('.').next()),
        ) else {
            continue;
        };
        out.push(QueueState {
            tenant: tenant.to_string(),
            priority: priority.to_string(),
            waiting: info.num_pending,
            running: info.num_ack_pending as u64,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(rate: f64, burst: Option<u32>) -> Quota {
        Quota {
            submit_rate: Some(rate),
            submit_burst: burst,
            ..Default::default()
        }
    }

    /// Tokens a fresh bucket hands out at once.
    fn burst_of(l: &DefaultDirectRateLimiter) -> usize {
        (0..100).take_while(|_| l.check().is_ok()).count()
    }

    #[test]
    fn dispatchers_split_the_burst_and_keep_at_least_one_token() {
        let q = quota(10.0, Some(9));
        assert_eq!(burst_of(&limiter(&q, 1).unwrap()), 9);
        assert_eq!(burst_of(&limiter(&q, 2).unwrap()), 4);
        assert_eq!(burst_of(&limiter(&q, 3).unwrap()), 3);
        assert_eq!(burst_of(&limiter(&q, 20).unwrap()), 1);
        // Without a burst, one second's worth, split too.
        assert_eq!(burst_of(&limiter(&quota(6.0, None), 2).unwrap()), 3);
        assert!(limiter(&Quota::default(), 1).is_none());
    }
}

//! The clawfleet alerter: fleet-level alert rules over what the fleet
//! already records, with Alertmanager's lifecycle and notifications.
//!
//! Every `evaluation_interval` the leader (one replica, by a lease in KV,
//! see [`store`]) reads each rule's signal ([`signals`]), feeds the groups
//! whose condition holds to the alert book (inactive → pending → firing →
//! resolved, with `for` and `keep_firing_for`, [`engine::alerts`]), publishes
//! every transition on `clawfleet.events.alert.<state>.<alertname>`, mutes
//! what silences and inhibition rules say, and hands the rest to the
//! notifier, which groups alerts by route and sends at `group_wait`,
//! `group_interval` and `repeat_interval` ([`engine::routing`]). Deliveries
//! run beside the loop ([`notify`]); only a delivered notification enters
//! the notification log. The alert book, the log and the silences live in
//! JetStream, so a restarted or replacing leader carries on where the last
//! one stopped.
//!
//! Any replica answers the API (`clawfleet.api.alerts.*`) from the stored
//! state; silences are written by whichever replica gets the request.

pub mod api;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod notify;
pub mod signals;
pub mod store;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use clawfleet_shared::alerts::{AlertInfo, RuleStatus, RuleValue};
use clawfleet_shared::config::ConfigError;
use clawfleet_shared::nats::{self, ConnectError};
use clawfleet_shared::subjects;
use clawfleet_shared::timefmt::{self, Timestamp};
pub(crate) use signals::Sources;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
use engine::alerts::{AlertBook, AlertState, RuleTiming, Sample, Transition, TransitionTo};
use engine::labels::Labels;
use engine::routing::{AlertView, Notifier};
use engine::silences::Silence;
use store::Store;

/// Errors that stop the alerter from starting.
#[derive(Debug, thiserror::Error)]
pub enum AlerterError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// NATS unreachable.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The alerter's bucket could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A subscription failed.
    #[error("while subscribing: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// The metrics endpoint could not be started.
    #[error(transparent)]
    Metrics(#[from] clawfleet_shared::observe::ServeError),
}

/// Reads the configuration again (on SIGHUP), for [`run`].
pub type Reload = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// A started alerter.
pub struct Running {
    done: tokio::task::JoinHandle<()>,
    metrics_addr: Option<std::net::SocketAddr>,
    stats: Arc<EvalStats>,
}

/// What the evaluations have cost so far (this replica's, while leading).
#[derive(Debug, Default)]
pub struct EvalStats {
    /// Evaluations run.
    pub cycles: std::sync::atomic::AtomicU64,
    /// Their summed wall time, microseconds.
    pub total_micros: std::sync::atomic::AtomicU64,
    /// The longest one, microseconds.
    pub max_micros: std::sync::atomic::AtomicU64,
}

impl Running {
    /// What the evaluations have cost so far.
    pub fn stats(&self) -> Arc<EvalStats> {
        self.stats.clone()
    }

    /// Where `/metrics` and `/healthz` are served, if they are.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// Waits until the alerter has stopped (after its shutdown token fires).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Runs the alerter until `shutdown` fires; `reload`, when given, is called
/// on SIGHUP and its configuration replaces the rules, routes, receivers
/// and inhibition rules without losing any alert's state.
pub async fn run(
    config: Config,
    reload: Option<Reload>,
    shutdown: CancellationToken,
) -> Result<(), AlerterError> {
    start(config, reload, shutdown).await?.wait().await;
    Ok(())
}

/// The configuration in force, which a reload replaces; shared with the
/// API. Readers take the `Arc` and let go of the lock at once.
pub(crate) type Live = Arc<std::sync::RwLock<Arc<Config>>>;

/// Starts the alerter; returns once it serves its API.
pub async fn start(
    config: Config,
    reload: Option<Reload>,
    shutdown: CancellationToken,
) -> Result<Running, AlerterError> {
    config.validate()?;
    let client = nats::connect(
        &config.nats_url,
        "clawfleet-alerter",
        config.connect_timeout,
        &shutdown,
    )
    .await?;
    clawfleet_shared::logship::attach(&client, "alerter", None);
    let js = nats::jetstream(client.clone());
    let store = Store::open(&js, client.clone(), config.request_timeout).await?;
    let replica = config.replica.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "alerter".to_string()),
            std::process::id()
        )
    });
    let live: Live = Arc::new(std::sync::RwLock::new(Arc::new(config.clone())));

    let group = subjects::ALERTER_QUEUE_GROUP.to_string();
    let mut subs = Vec::new();
    for subject in subjects::ALERTER_API {
        subs.push(client.queue_subscribe(subject, group.clone()).await?);
    }
    if let Err(e) = js.query_account().await {
        tracing::warn!(error = %e, "could not confirm the subscriptions");
    }
    let tracker = TaskTracker::new();
    let api = api::Api {
        client: client.clone(),
        store: store.clone(),
        live: live.clone(),
    };
    tracker.spawn(api.serve(futures::stream::select_all(subs), shutdown.clone()));
    let metrics_addr = match config.metrics_addr {
        Some(addr) => Some(
            clawfleet_shared::observe::serve(
                addr,
                clawfleet_shared::observe::nats_connected(client.clone()),
                shutdown.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let stats = Arc::new(EvalStats::default());
    let notifier = Notifier::new(
        config
            .route
            .resolve()
            .map_err(|e| ConfigError::invalid("route", e.to_string()))?,
    );
    let evaluator = Evaluator {
        sources: signals::Sources {
            client: client.clone(),
            js: js.clone(),
            timeout: config.request_timeout,
            dlq_history: VecDeque::new(),
        },
        deliverer: notify::Deliverer::new(config.external_url.clone()),
        client,
        store,
        replica,
        live,
        book: AlertBook::new(),
        notifier,
        leading: false,
        lease_until: None,
        budgets_kv: None,
        enforced: std::collections::HashMap::new(),
        silences: Vec::new(),
        in_flight: HashSet::new(),
        tracker: tracker.clone(),
        stats: stats.clone(),
        forwarded_at: None,
        forwarding: Arc::default(),
        forward_failed: Arc::default(),
    };
    tracing::info!(
        rules = config.rules.len(),
        evaluation_interval = %humantime::format_duration(config.evaluation_interval),
        "alerter started"
    );
    tracker.spawn(evaluator.run(reload, shutdown.clone()));
    tracker.close();
    let done = tokio::spawn(async move { tracker.wait().await });
    Ok(Running {
        done,
        metrics_addr,
        stats,
    })
}

/// The leader's loop and what it keeps between evaluations.
struct Evaluator {
    client: async_nats::Client,
    store: Store,
    replica: String,
    live: Live,
    sources: signals::Sources,
    deliverer: notify::Deliverer,
    book: AlertBook,
    notifier: Notifier,
    leading: bool,
    /// Until when this replica's lease holds, as last written.
    lease_until: Option<Timestamp>,
    /// The silences as last read.
    silences: Vec<Silence>,
    /// Notifications being delivered: (group key, receiver).
    in_flight: HashSet<(String, String)>,
    stats: Arc<EvalStats>,
    /// When the alerts were last sent to the Alertmanagers.
    forwarded_at: Option<Timestamp>,
    /// Whether a send to the Alertmanagers is under way.
    forwarding: Arc<std::sync::atomic::AtomicBool>,
    /// Whether the last send failed (tried again at the next evaluation).
    forward_failed: Arc<std::sync::atomic::AtomicBool>,
    /// The bucket of tenants over a hard budget, once a dispatcher made it.
    budgets_kv: Option<async_nats::jetstream::kv::Store>,
    /// The entries this leader wrote there, by tenant.
    enforced: std::collections::HashMap<String, Vec<u8>>,
    tracker: TaskTracker,
}

impl Evaluator {
    async fn run(mut self, reload: Option<Reload>, stop: CancellationToken) {
        let interval = self.config().evaluation_interval;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<notify::Delivered>(1024);
        let mut hangups = hangups();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(done) = rx.recv() => {
                    self.delivered(done).await;
                    continue;
                }
                Some(()) = hangups.recv() => {
                    self.reload(reload.as_ref());
                    continue;
                }
                _ = stop.cancelled() => break,
            }
            let now = timefmt::now();
            if !self.lead(now).await {
                continue;
            }
            let started = std::time::Instant::now();
            self.evaluate(now, &tx).await;
            let took = started.elapsed();
            ::metrics::histogram!(crate::metrics::EVALUATION_SECONDS).record(took.as_secs_f64());
            use std::sync::atomic::Ordering::Relaxed;
            let micros = took.as_micros() as u64;
            self.stats.cycles.fetch_add(1, Relaxed);
            self.stats.total_micros.fetch_add(micros, Relaxed);
            self.stats.max_micros.fetch_max(micros, Relaxed);
        }
        // Deliveries under way finish (bounded by their timeouts and tries);
        // what they delivered is recorded before the lease is given up.
        drop(tx);
        while let Some(done) = rx.recv().await {
            self.delivered(done).await;
        }
        if self.leading {
            self.store.release_lease(&self.replica).await;
        }
    }

    fn config(&self) -> Arc<Config> {
        self.live.read().expect("live lock").clone()
    }

    /// Takes or renews the lease; loads the stored state on becoming leader.
    async fn lead(&mut self, now: Timestamp) -> bool {
        let lease = self.config().lease;
        match self.store.hold_lease(&self.replica, lease, now).await {
            Ok(true) => {
                self.lease_until = Some(now + lease);
                if !self.leading {
                    self.take_over().await;
                }
                true
            }
            Ok(false) => {
                if self.leading {
                    tracing::warn!(replica = %self.replica, "another replica holds the lease; standing by");
                    ::metrics::gauge!(crate::metrics::LEADER).set(0.0);
                }
                self.leading = false;
                false
            }
            Err(e) => {
                // NATS trouble. A leader keeps evaluating (and notifying
                // what it can, NATS unreachable among it): no other replica
                // can take the lease without NATS either.
                tracing::warn!(error = %e, "could not renew the leader lease");
                self.leading
            }
        }
    }

    async fn take_over(&mut self) {
        let book = self.store.get::<AlertBook>(store::ALERTS).await;
        let log = self.store.get(store::NFLOG).await;
        match (book, log) {
            (Ok(book), Ok(log)) => {
                self.book = book.unwrap_or_else(AlertBook::new);
                if let Some(log) = log {
                    self.notifier.restore(log);
                }
                self.leading = true;
                ::metrics::gauge!(crate::metrics::LEADER).set(1.0);
                tracing::info!(replica = %self.replica, alerts = self.book.len(), "leading: evaluating rules and notifying");
            }
            (Err(e), _) | (_, Err(e)) => {
                // Leading without the stored state would notify again what
                // was notified: wait for the next cycle.
                tracing::warn!(error = %e, "could not load the stored alerts; not leading yet");
            }
        }
    }

    async fn evaluate(
        &mut self,
        now: Timestamp,
        tx: &tokio::sync::mpsc::Sender<notify::Delivered>,
    ) {
        let config = self.config();
        let mut cycle = signals::Cycle::default();
        let mut statuses = Vec::with_capacity(config.rules.len());
        let mut transitions: Vec<Transition> = Vec::new();
        for rule in &config.rules {
            let read = self.sources.read(&rule.signal, &mut cycle, now).await;
            let (status, samples) = judge(rule, read);
            match samples {
                Some(samples) => {
                    let timing = RuleTiming {
                        for_: rule.for_,
                        keep_firing_for: rule.keep_firing_for,
                    };
                    transitions.extend(self.book.observe(&rule.name, &timing, samples, now));
                }
                None => {
                    ::metrics::counter!(crate::metrics::SIGNAL_ERRORS, "rule" => rule.name.clone())
                        .increment(1);
                    tracing::debug!(rule = %rule.name, error = status.error.as_deref().unwrap_or(""), "signal unavailable; the rule's alerts keep their state");
                }
            }
            statuses.push(status);
        }
        self.sources.end_cycle(&cycle, now, longest_window(&config));
        let mut budget_values = Vec::new();
        if let Some(samples) = self.budgets(&config, now, &mut budget_values).await {
            let timing = RuleTiming {
                for_: Duration::ZERO,
                keep_firing_for: Duration::ZERO,
            };
            transitions.extend(self.book.observe(BUDGET_RULE, &timing, samples, now));
        }
        if !config.budgets.is_empty() {
            statuses.push(RuleStatus {
                name: BUDGET_RULE.to_string(),
                signal: "cost_budget".to_string(),
                condition: "spend / budget >= alert_at".to_string(),
                severity: "warning, critical from 1".to_string(),
                error: (budget_values.is_empty()).then(|| "spend unavailable".to_string()),
                values: budget_values,
            });
        }
        self.book.prune_resolved(config.resolved_retention, now);
        for t in &transitions {
            self.announce(t).await;
        }

        match self.store.silences().await {
            Ok(s) => self.silences = s,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the silences; using the last ones read")
            }
        }
        let views = self.views(&config, now);
        ::metrics::gauge!(crate::metrics::FIRING).set(
            self.book
                .alerts()
                .filter(|a| a.state == AlertState::Firing)
                .count() as f64,
        );
        for n in self.notifier.tick(&views, now) {
            let key = (n.group_key.clone(), n.receiver.clone());
            if self.in_flight.contains(&key) {
                continue;
            }
            let Some(receiver) = config
                .receivers
                .iter()
                .find(|r| r.name == n.receiver)
                .cloned()
            else {
                tracing::error!(receiver = %n.receiver, "route names an unknown receiver");
                continue;
            };
            self.in_flight.insert(key);
            let deliverer = self.deliverer.clone();
            let tx = tx.clone();
            self.tracker.spawn(async move {
                let done = deliverer.deliver(&receiver, n).await;
                let _ = tx.send(done).await;
            });
        }

        self.forward(&config, !transitions.is_empty(), now);
        if let Err(e) = self.store.put(store::ALERTS, &self.book).await {
            tracing::warn!(error = %e, "could not store the alerts");
        }
        let rules = clawfleet_shared::alerts::RulesReply {
            rules: statuses,
            evaluated_at: Some(now),
        };
        if let Err(e) = self.store.put(store::RULES, &rules).await {
            tracing::debug!(error = %e, "could not store the rules' values");
        }
    }

    /// The budget alerts' samples (`None` when a spend could not be read:
    /// their alerts keep their state), recording the tenants over a hard
    /// budget for the dispatchers on the way.
    async fn budgets(
        &mut self,
        config: &Config,
        now: Timestamp,
        values: &mut Vec<RuleValue>,
    ) -> Option<Vec<Sample>> {
        if config.budgets.is_empty() && self.enforced.is_empty() {
            return Some(Vec::new());
        }
        let mut samples = Vec::new();
        let mut over: Vec<clawfleet_shared::alerts::BudgetExceeded> = Vec::new();
        for budget in &config.budgets {
            for (period, limit, (since, until)) in [
                ("day", budget.daily, day_bounds(now)),
                ("month", budget.monthly, month_bounds(now)),
            ] {
                let Some(limit) = limit else { continue };
                let (spend, currency) = match self.sources.spend(&budget.tenant, since, now).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(tenant = %budget.tenant, error = %e, "could not read a tenant's spend");
                        return None;
                    }
                };
                let used = spend / limit;
                values.push(RuleValue {
                    labels: Labels::from([
                        ("tenant".to_string(), budget.tenant.clone()),
                        ("period".to_string(), period.to_string()),
                    ]),
                    value: used,
                    holds: budget.alert_at.iter().any(|f| used >= *f),
                });
                for fraction in budget.alert_at.iter().filter(|f| used >= **f) {
                    let labels = Labels::from([
                        ("alertname".to_string(), BUDGET_RULE.to_string()),
                        ("tenant".to_string(), budget.tenant.clone()),
                        ("period".to_string(), period.to_string()),
                        (
                            "threshold".to_string(),
                            format!("{}%", (fraction * 100.0).round()),
                        ),
                        (
                            "severity".to_string(),
                            if *fraction >= 1.0 {
                                "critical"
                            } else {
                                "warning"
                            }
                            .to_string(),
                        ),
                    ]);
                    let summary = format!(
                        "tenant {} spent {:.0}% of its {} budget ({:.2} of {:.2} {currency})",
                        budget.tenant,
                        used * 100.0,
                        if period == "day" { "daily" } else { "monthly" },
                        spend,
                        limit
                    );
                    samples.push(Sample {
                        labels,
                        annotations: Labels::from([("summary".to_string(), summary)]),
                        value: used,
                    });
                }
                if budget.enforce && used >= 1.0 {
                    over.push(clawfleet_shared::alerts::BudgetExceeded {
                        tenant: budget.tenant.clone(),
                        period: period.to_string(),
                        spend,
                        budget: limit,
                        currency,
                        until,
                    });
                }
            }
        }
        let enforcing = config.budgets.iter().any(|b| b.enforce) || !self.enforced.is_empty();
        if enforcing {
            let timeout = config.request_timeout;
            if tokio::time::timeout(timeout * 4, self.enforce(over))
                .await
                .is_err()
            {
                tracing::warn!(
                    "could not update the spent budgets in time; trying again next cycle"
                );
            }
        }
        Some(samples)
    }

    /// Makes the budgets bucket say exactly which tenants are over a hard budget.
    async fn enforce(&mut self, over: Vec<clawfleet_shared::alerts::BudgetExceeded>) {
        if self.budgets_kv.is_none() {
            match self
                .sources
                .js
                .get_key_value(subjects::BUCKET_BUDGETS)
                .await
            {
                Ok(kv) => self.budgets_kv = Some(kv),
                Err(e) => {
                    if !over.is_empty() {
                        tracing::warn!(error = %e, "no budgets bucket (no dispatcher yet?); budgets not enforced");
                    }
                    return;
                }
            }
        }
        let kv = self.budgets_kv.as_ref().expect("opened above");
        let wanted: HashSet<String> = over.iter().map(|o| o.tenant.clone()).collect();
        for entry in &over {
            // One per tenant: the later period (month) wins when both are spent.
            let value = serde_json::to_vec(entry).expect("budget entry encodes");
            let unchanged = self
                .enforced
                .get(&entry.tenant)
                .is_some_and(|v| *v == value);
            if unchanged {
                continue;
            }
            match kv.put(&entry.tenant, value.clone().into()).await {
                Ok(_) => {
                    if !self.enforced.contains_key(&entry.tenant) {
                        tracing::warn!(tenant = %entry.tenant, period = %entry.period, spend = entry.spend, budget = entry.budget, "tenant over its hard budget: its new tasks are refused");
                    }
                    self.enforced.insert(entry.tenant.clone(), value);
                }
                Err(e) => {
                    tracing::warn!(tenant = %entry.tenant, error = %e, "could not record a spent budget")
                }
            }
        }
        let mut stale: Vec<String> = self
            .enforced
            .keys()
            .filter(|t| !wanted.contains(*t))
            .cloned()
            .collect();
        // Entries another leader wrote before this one took over.
        if let Ok(mut keys) = kv.keys().await {
            use futures::StreamExt;
            while let Some(Ok(key)) = keys.next().await {
                if !wanted.contains(&key) && !stale.contains(&key) {
                    stale.push(key);
                }
                if stale.len() > 100_000 {
                    break;
                }
            }
        }
        for tenant in stale {
            if kv.delete(&tenant).await.is_ok() && self.enforced.remove(&tenant).is_some() {
                tracing::info!(tenant = %tenant, "tenant within its budgets again: its tasks are accepted");
            }
        }
    }

    /// Sends the alerts to the configured Alertmanagers, as Prometheus does:
    /// at once when some alert changed, else every `alertmanager_resend`,
    /// with an `endsAt` far enough ahead (four resends) that Alertmanager
    /// resolves them by itself only when this alerter stops sending.
    fn forward(&mut self, config: &Config, changed: bool, now: Timestamp) {
        if config.alertmanagers.is_empty() {
            return;
        }
        let due = changed
            || self
                .forward_failed
                .load(std::sync::atomic::Ordering::Relaxed)
            || self
                .forwarded_at
                .is_none_or(|at| now - at >= config.alertmanager_resend);
        if !due || self.forwarding.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let alerts: Vec<_> = self
            .book
            .alerts()
            .filter(|a| a.state != AlertState::Pending)
            .cloned()
            .collect();
        if alerts.is_empty() && self.forwarded_at.is_none() {
            return;
        }
        self.forwarded_at = Some(now);
        let busy = self.forwarding.clone();
        let failed = self.forward_failed.clone();
        busy.store(true, std::sync::atomic::Ordering::Relaxed);
        let deliverer = self.deliverer.clone();
        let targets = config.alertmanagers.clone();
        let valid_for = config.alertmanager_resend.max(config.evaluation_interval) * 4;
        self.tracker.spawn(async move {
            let errors = deliverer.forward(&targets, &alerts, valid_for).await;
            for e in &errors {
                tracing::warn!(error = %e, "could not forward alerts to an Alertmanager; sending again at the next change or resend");
            }
            failed.store(!errors.is_empty(), std::sync::atomic::Ordering::Relaxed);
            let outcome = if errors.is_empty() { "delivered" } else { "failed" };
            ::metrics::counter!(crate::metrics::NOTIFICATIONS, "receiver" => "alertmanager", "outcome" => outcome).increment(1);
            busy.store(false, std::sync::atomic::Ordering::Relaxed);
        });
    }

    /// The alerts the notifier sees: firing and resolved ones, each marked
    /// muted when a silence or an inhibition rule says so.
    fn views(&self, config: &Config, now: Timestamp) -> Vec<AlertView> {
        let firing: Vec<&Labels> = self
            .book
            .alerts()
            .filter(|a| a.state == AlertState::Firing)
            .map(|a| &a.labels)
            .collect();
        self.book
            .alerts()
            .filter_map(|a| {
                let silenced = self.silences.iter().any(|s| s.mutes(&a.labels, now));
                let inhibited = a.state == AlertState::Firing
                    && engine::inhibit::inhibited(&config.inhibit_rules, &a.labels, &firing);
                AlertView::from_alert(a, silenced || inhibited)
            })
            .collect()
    }

    async fn delivered(&mut self, done: notify::Delivered) {
        let n = &done.notification;
        self.in_flight
            .remove(&(n.group_key.clone(), n.receiver.clone()));
        let record = notify::record(&done);
        if done.ok {
            self.notifier.sent(n, timefmt::now());
            if let Err(e) = self.store.put(store::NFLOG, &self.notifier.log()).await {
                tracing::warn!(error = %e, "could not store the notification log");
            }
            ::metrics::counter!(crate::metrics::NOTIFICATIONS, "receiver" => n.receiver.clone(), "outcome" => "delivered").increment(1);
        } else {
            ::metrics::counter!(crate::metrics::NOTIFICATIONS, "receiver" => n.receiver.clone(), "outcome" => "failed").increment(1);
            tracing::warn!(receiver = %n.receiver, group = %n.group_key, error = record.error.as_deref().unwrap_or(""), "notification not delivered; the group tries again at its next interval");
        }
        let subject = subjects::alert_notified(&token(&n.receiver));
        if let Ok(body) = serde_json::to_vec(&record) {
            self.publish(subject, body).await;
        }
    }

    /// Publishes an event, unless NATS is down: then the event is lost
    /// either way, and a publish would wait for room in the client's buffer
    /// (which the service's own log lines fill during an outage), holding up
    /// the very notification the outage calls for.
    async fn publish(&self, subject: String, body: Vec<u8>) {
        if !store::connected(&self.client) {
            tracing::debug!(%subject, "NATS is down; event not published");
            return;
        }
        let timeout = self.sources.timeout;
        if tokio::time::timeout(timeout, self.client.publish(subject, body.into()))
            .await
            .is_err()
        {
            tracing::debug!("event not published in time");
        }
    }

    async fn announce(&self, t: &Transition) {
        let state = match t.to {
            TransitionTo::Pending => "pending",
            TransitionTo::Firing => "firing",
            TransitionTo::Resolved => "resolved",
            TransitionTo::Dropped => "inactive",
        };
        tracing::info!(alert = %t.rule, fingerprint = %t.fingerprint, state, value = t.value, labels = ?t.labels, "alert {state}");
        let info = match self.book.get(&t.rule, &t.fingerprint) {
            Some(alert) => alert_info(alert, &[], false),
            // Gone (a pending alert whose condition cleared): what is known.
            None => AlertInfo {
                fingerprint: t.fingerprint.clone(),
                labels: t.labels.clone(),
                annotations: Labels::new(),
                state: state.to_string(),
                value: t.value,
                active_at: t.at,
                fired_at: None,
                resolved_at: None,
                silenced_by: Vec::new(),
                inhibited: false,
            },
        };
        let subject = subjects::alert_event(state, &token(&t.rule));
        if let Ok(body) = serde_json::to_vec(&info) {
            self.publish(subject, body).await;
        }
    }

    fn reload(&mut self, reload: Option<&Reload>) {
        let Some(reload) = reload else { return };
        let config = match reload().and_then(|c| c.validate().map(|()| c)) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "configuration not reloaded; keeping the current one");
                return;
            }
        };
        let route = match config.route.resolve() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "configuration not reloaded; keeping the current one");
                return;
            }
        };
        let names: HashSet<&str> = config.rules.iter().map(|r| r.name.as_str()).collect();
        let gone: Vec<String> = self
            .config()
            .rules
            .iter()
            .filter(|r| !names.contains(r.name.as_str()))
            .map(|r| r.name.clone())
            .collect();
        for rule in gone {
            // Its alerts resolve (and say so), rather than vanish.
            let _ = self.book.remove_rule(&rule, timefmt::now());
        }
        self.notifier.set_route(route);
        tracing::info!(rules = config.rules.len(), "configuration reloaded");
        *self.live.write().expect("live lock") = Arc::new(config);
    }
}

/// The name of the budget alerts.
pub const BUDGET_RULE: &str = "cost_budget";

/// The UTC day around `now`: its start and the next day's.
fn day_bounds(now: Timestamp) -> (Timestamp, Timestamp) {
    let start = now.replace_time(time::Time::MIDNIGHT);
    (start, start + time::Duration::days(1))
}

/// The UTC calendar month around `now`: its start and the next month's.
fn month_bounds(now: Timestamp) -> (Timestamp, Timestamp) {
    let start = now
        .replace_time(time::Time::MIDNIGHT)
        .replace_day(1)
        .expect("every month has a first day");
    let (year, month) = match start.month() {
        time::Month::December => (start.year() + 1, time::Month::January),
        m => (start.year(), m.next()),
    };
    let next = start
        .replace_year(year)
        .and_then(|d| d.replace_month(month))
        .unwrap_or(start + time::Duration::days(31));
    (start, next)
}

/// A rule's status and, when its signal could be read, the samples of the
/// groups that meet its condition.
pub(crate) fn judge(
    rule: &config::RuleConfig,
    read: Result<Vec<(Labels, f64)>, signals::SignalError>,
) -> (RuleStatus, Option<Vec<Sample>>) {
    let mut status = RuleStatus {
        name: rule.name.clone(),
        signal: signal_kind(&rule.signal).to_string(),
        condition: format!(
            "{} {}{}",
            rule.op.as_str(),
            rule.threshold,
            if rule.for_.is_zero() {
                String::new()
            } else {
                format!(" for {}", humantime::format_duration(rule.for_))
            }
        ),
        severity: rule.severity.clone(),
        values: Vec::new(),
        error: None,
    };
    let values = match read {
        Ok(values) => values,
        Err(e) => {
            status.error = Some(clawfleet_shared::strict::cut(&e.to_string(), 512));
            return (status, None);
        }
    };
    let mut samples = Vec::new();
    for (group, value) in values {
        let holds = rule.op.holds(value, rule.threshold);
        if holds {
            samples.push(sample(rule, group.clone(), value));
        }
        status.values.push(RuleValue {
            labels: group,
            value,
            holds,
        });
    }
    status.values.sort_by(|a, b| b.value.total_cmp(&a.value));
    status.values.truncate(50);
    (status, Some(samples))
}

/// The alert's labels, annotations and value for one group.
fn sample(rule: &config::RuleConfig, group: Labels, value: f64) -> Sample {
    let mut labels = group;
    for (k, v) in &rule.labels {
        labels.insert(k.clone(), v.clone());
    }
    labels.insert("alertname".to_string(), rule.name.clone());
    labels.insert("severity".to_string(), rule.severity.clone());
    let annotations = rule
        .annotations
        .iter()
        .map(|(k, t)| (k.clone(), engine::template::render(t, &labels, value)))
        .collect();
    Sample {
        labels,
        annotations,
        value,
    }
}

/// An alert as the API shows it.
pub(crate) fn alert_info(
    a: &engine::alerts::ActiveAlert,
    silenced_by: &[String],
    inhibited: bool,
) -> AlertInfo {
    AlertInfo {
        fingerprint: engine::labels::fingerprint(&a.labels),
        labels: a.labels.clone(),
        annotations: a.annotations.clone(),
        state: match a.state {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
        .to_string(),
        value: a.value,
        active_at: a.active_at,
        fired_at: a.fired_at,
        resolved_at: a.resolved_at,
        silenced_by: silenced_by.to_vec(),
        inhibited,
    }
}

fn signal_kind(s: &config::Signal) -> &'static str {
    use config::Signal::*;
    match s {
        ErrorRate { .. } => "error_rate",
        LatencyP95 { .. } => "latency_p95",
        QueueDepth => "queue_depth",
        OldestQueuedAge => "oldest_queued_age",
        HealthyAgents { .. } => "healthy_agents",
        QuarantinedAgent => "quarantined_agent",
        EscalatedAgent => "escalated_agent",
        DeadLetters { .. } => "dead_letters",
        Cost { .. } => "cost",
        NatsUnreachable => "nats_unreachable",
        LatencyVsBaseline { .. } => "latency_vs_baseline",
        LogLinesDropped { .. } => "log_lines_dropped",
        LogIndexLag { .. } => "log_index_lag",
    }
}

/// The longest dead-letter window, for how much count history to keep.
fn longest_window(config: &Config) -> Duration {
    config
        .rules
        .iter()
        .filter_map(|r| match r.signal {
            config::Signal::DeadLetters { window } => Some(window),
            _ => None,
        })
        .max()
        .unwrap_or(Duration::ZERO)
}

/// A name as one subject token: characters a subject cannot hold become `_`.
fn token(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// SIGHUPs, as a channel (never fires where there are none).
fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    #[cfg(not(unix))]
    drop(tx);
    rx
}

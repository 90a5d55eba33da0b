//! Shipping structured log events to NATS, without ever slowing the work
//! that logs them.
//!
//! [`ShipLayer`] is a `tracing_subscriber` layer. For each event it builds a
//! [`LogLine`] (level, message, fields, and `task_id`, `tenant`, `agent_id`,
//! `capability` taken from the event or from the spans it happened in) and
//! puts it in a bounded in-memory buffer. That is all the logging call
//! pays: no I/O, no waiting. A background task publishes the buffer on
//! `clawfleet.logs.<service>.<level>.<agent_id>` with core NATS publishes
//! (the `CLAWFLEET_LOGS` stream stores them; nothing waits for the stream's
//! ack).
//!
//! The NATS client exists only once a service has connected, so the layer
//! is installed at start-up ([`crate::telemetry::init_with_shipping`]) and
//! buffers until the service calls [`attach`] with its client.
//!
//! When the buffer is full (NATS is slow or unreachable, or a program
//! floods its stderr), lines are dropped by importance: the oldest TRACE
//! and DEBUG lines first, then the oldest INFO lines, and WARN and ERROR
//! lines only when nothing else is left; a new line that is less important
//! than everything buffered is the one dropped. Every drop is counted per
//! level ([`Shipper::stats`]), and once the pressure eases a WARN line
//! saying how many were dropped is shipped (at most one per
//! [`DROP_REPORT_INTERVAL`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Record};
use tracing::{Event, Id, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::ConfigError;
use crate::logs::{Level, LogLine, EXECUTOR_OUTPUT_TARGET};
use crate::timefmt;

pub use crate::logs::{MAX_FIELD_BYTES, MAX_MESSAGE_BYTES};
/// At most one "lines dropped" report per this interval.
pub const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// Lines published between two looks at the buffer.
const SEND_BATCH: usize = 256;

/// Log shipping settings (the `log_shipping` table of a service's config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogShipping {
    /// Which events are shipped, in `RUST_LOG` syntax; `"off"` ships
    /// nothing. Independent of what the service prints on its stderr.
    pub level: String,
    /// Lines buffered at most while NATS is slow or not connected yet.
    pub buffer_lines: usize,
    /// Bytes buffered at most (estimated size of the lines).
    pub buffer_bytes: usize,
}

/// The default shipping filter: clawfleet's own DEBUG lines (each step of a
/// task) and everything else from INFO. They are the first to go when the
/// buffer is full.
pub const DEFAULT_LEVEL: &str = "info,clawfleet=debug,async_nats=warn";

impl Default for LogShipping {
    fn default() -> Self {
        LogShipping {
            level: DEFAULT_LEVEL.to_string(),
            buffer_lines: 10_000,
            buffer_bytes: 8 * 1024 * 1024,
        }
    }
}

impl LogShipping {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.filter()?;
        if !(16..=1_000_000).contains(&self.buffer_lines) {
            return Err(ConfigError::invalid(
                "log_shipping.buffer_lines",
                "must be between 16 and 1000000",
            ));
        }
        if !(64 * 1024..=1024 * 1024 * 1024).contains(&self.buffer_bytes) {
            return Err(ConfigError::invalid(
                "log_shipping.buffer_bytes",
                "must be between 65536 and 1073741824",
            ));
        }
        Ok(())
    }

    /// The filter deciding which events are shipped.
    pub fn filter(&self) -> Result<EnvFilter, ConfigError> {
        EnvFilter::builder()
            .parse(&self.level)
            .map_err(|e| ConfigError::invalid("log_shipping.level", e.to_string()))
    }

    /// Whether anything is shipped at all.
    pub fn enabled(&self) -> bool {
        self.level.trim() != "off"
    }
}

/// Counters of a shipper.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShipStats {
    /// Lines published.
    pub shipped: u64,
    /// Lines waiting in the buffer.
    pub buffered: usize,
    /// Lines dropped under back-pressure, per level (levels with none are left out).
    pub dropped: BTreeMap<Level, u64>,
}

impl ShipStats {
    /// Lines dropped, all levels together.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }
}

/// Who is logging: filled into lines that do not say it themselves.
#[derive(Debug, Clone, Default)]
struct Identity {
    service: String,
    agent_id: Option<String>,
}

/// Buffer of lines, one queue per importance class, so the least important
/// and oldest line is always at the front of the first non-empty queue.
#[derive(Default)]
struct Buffer {
    /// 0: trace and debug, 1: info, 2: warn and error.
    queues: [VecDeque<Entry>; 3],
    lines: usize,
    bytes: usize,
    next_seq: u64,
}

struct Entry {
    seq: u64,
    size: usize,
    line: LogLine,
}

fn class(level: Level) -> usize {
    match level {
        Level::Trace | Level::Debug => 0,
        Level::Info => 1,
        Level::Warn | Level::Error => 2,
    }
}

impl Buffer {
    /// Adds a line, dropping by importance to stay within the limits;
    /// returns the levels of the lines dropped (possibly the new one).
    fn push(&mut self, line: LogLine, max_lines: usize, max_bytes: usize) -> Vec<Level> {
        let size = estimated_size(&line);
        let class = class(line.level);
        let mut dropped = Vec::new();
        while self.lines + 1 > max_lines || self.bytes + size > max_bytes {
            match (0..3).find(|c| !self.queues[*c].is_empty()) {
                Some(victim) if victim <= class => {
                    let e = self.queues[victim].pop_front().expect("non-empty queue");
                    self.lines -= 1;
                    self.bytes -= e.size;
                    dropped.push(e.line.level);
                }
                _ => {
                    dropped.push(line.level);
                    return dropped;
                }
            }
        }
        self.lines += 1;
        self.bytes += size;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queues[class].push_back(Entry { seq, size, line });
        dropped
    }

    /// Takes up to `n` lines, oldest first across the queues.
    fn take(&mut self, n: usize) -> Vec<LogLine> {
        let mut out = Vec::with_capacity(n.min(self.lines));
        while out.len() < n {
            let next = (0..3)
                .filter_map(|c| self.queues[c].front().map(|e| (e.seq, c)))
                .min();
            let Some((_, c)) = next else { break };
            let e = self.queues[c].pop_front().expect("non-empty queue");
            self.lines -= 1;
            self.bytes -= e.size;
            out.push(e.line);
        }
        out
    }
}

/// Bytes a line takes in the buffer, roughly (its JSON is about this long).
fn estimated_size(line: &LogLine) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, |s| s.len() + 16);
    let fields: usize = line
        .fields
        .iter()
        .map(|(k, v)| {
            k.len()
                + 6
                + match v {
                    Value::String(s) => s.len(),
                    _ => 16,
                }
        })
        .sum();
    96 + line.service.len()
        + line.message.len()
        + opt(&line.agent_id)
        + opt(&line.task_id)
        + opt(&line.tenant)
        + opt(&line.capability)
        + fields
}

struct Inner {
    buffer: Mutex<Buffer>,
    max_lines: usize,
    max_bytes: usize,
    wake: Notify,
    identity: RwLock<Identity>,
    attached: AtomicBool,
    flushes: Mutex<Option<mpsc::UnboundedSender<oneshot::Sender<()>>>>,
    shipped: AtomicU64,
    dropped: [AtomicU64; 5],
}

/// The shipping end of a [`ShipLayer`]: its buffer, counters and (once
/// attached) the task publishing to NATS. Cheap to clone.
#[derive(Clone)]
pub struct Shipper {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Shipper {
    /// A shipper for `service` (`""` when the service is only known at
    /// [`Shipper::attach`]) with the buffer bounds of `config`.
    pub fn new(service: &str, config: &LogShipping) -> Shipper {
        Shipper {
            inner: Arc::new(Inner {
                buffer: Mutex::new(Buffer::default()),
                max_lines: config.buffer_lines,
                max_bytes: config.buffer_bytes,
                wake: Notify::new(),
                identity: RwLock::new(Identity {
                    service: service.to_string(),
                    agent_id: None,
                }),
                attached: AtomicBool::new(false),
                flushes: Mutex::new(None),
                shipped: AtomicU64::new(0),
                dropped: Default::default(),
            }),
        }
    }

    /// The tracing layer feeding this shipper. Give it a filter
    /// ([`LogShipping::filter`]) with `Layer::with_filter`.
    pub fn layer(&self) -> ShipLayer {
        ShipLayer {
            shipper: self.clone(),
        }
    }

    /// Starts publishing with `client`, as `service` (and `agent_id`, for
    /// an agent): lines that do not name their own service or agent get
    /// these. Must be called inside a Tokio runtime; the publishing task
    /// lives on it. Only the first call starts a task; later calls only
    /// update the identity.
    pub fn attach(&self, client: &async_nats::Client, service: &str, agent_id: Option<&str>) {
        {
            let mut identity = self.inner.identity.write().expect("identity lock");
            identity.service = service.to_string();
            identity.agent_id = agent_id.map(str::to_string);
        }
        if self.inner.attached.swap(true, Ordering::SeqCst) {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        *self.inner.flushes.lock().expect("flush lock") = Some(tx);
        tokio::spawn(send_loop(self.inner.clone(), client.clone(), rx));
    }

    /// Adds a line to the buffer (what the layer does for each event).
    /// Never blocks on I/O.
    pub fn ship(&self, line: LogLine) {
        let dropped = self.inner.buffer.lock().expect("log buffer lock").push(
            line,
            self.inner.max_lines,
            self.inner.max_bytes,
        );
        for level in dropped {
            self.inner.dropped[level.rank() as usize].fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::metrics::LOG_LINES_DROPPED, "level" => level.as_str())
                .increment(1);
        }
        self.inner.wake.notify_one();
    }

    /// Counters: lines shipped, buffered and dropped.
    pub fn stats(&self) -> ShipStats {
        let buffered = self.inner.buffer.lock().expect("log buffer lock").lines;
        let dropped = Level::ALL
            .iter()
            .filter_map(|l| {
                let n = self.inner.dropped[l.rank() as usize].load(Ordering::Relaxed);
                (n > 0).then_some((*l, n))
            })
            .collect();
        ShipStats {
            shipped: self.inner.shipped.load(Ordering::Relaxed),
            buffered,
            dropped,
        }
    }

    /// Waits (up to `timeout`) until every buffered line is published and
    /// flushed to the server. Returns whether it got there; without an
    /// attached client there is nothing to flush to, and it returns `false`.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        let sent = match &*self.inner.flushes.lock().expect("flush lock") {
            Some(flushes) => flushes.send(tx).is_ok(),
            None => false,
        };
        sent && matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(())))
    }

    fn take(&self, n: usize) -> Vec<LogLine> {
        self.inner.buffer.lock().expect("log buffer lock").take(n)
    }
}

/// The shipper of the current tracing dispatcher (the global one, or the
/// one a thread has set as its default), if it has a [`ShipLayer`].
pub fn current() -> Option<Shipper> {
    tracing::dispatcher::get_default(|d| d.downcast_ref::<ShipLayer>().map(|l| l.shipper.clone()))
}

/// Attaches `client` to the current shipper (see [`Shipper::attach`]).
/// Does nothing when no [`ShipLayer`] is installed, e.g. when a service
/// runs embedded in a program with its own logging.
pub fn attach(client: &async_nats::Client, service: &str, agent_id: Option<&str>) {
    if let Some(shipper) = current() {
        shipper.attach(client, service, agent_id);
    }
}

/// Flushes the current shipper (see [`Shipper::flush`]); call it before
/// exiting so the last lines are not lost.
pub async fn flush(timeout: Duration) {
    if let Some(shipper) = current() {
        shipper.flush(timeout).await;
    }
}

async fn send_loop(
    inner: Arc<Inner>,
    client: async_nats::Client,
    mut flushes: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    let shipper = Shipper { inner };
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut reported = 0u64;
    let mut last_report: Option<Instant> = None;
    loop {
        let batch = shipper.take(SEND_BATCH);
        if batch.is_empty() {
            if !waiting.is_empty() {
                let _ = client.flush().await;
                for done in waiting.drain(..) {
                    let _ = done.send(());
                }
            }
            // Pressure has eased: say what was lost, once in a while.
            let dropped = shipper.stats().dropped_total();
            if dropped > reported && last_report.is_none_or(|t| t.elapsed() >= DROP_REPORT_INTERVAL)
            {
                shipper.ship(drop_report(&shipper.stats(), dropped - reported));
                reported = dropped;
                last_report = Some(Instant::now());
                continue;
            }
            tokio::select! {
                _ = shipper.inner.wake.notified() => {}
                f = flushes.recv() => match f {
                    Some(done) => waiting.push(done),
                    None => return,
                },
                // Retry a due drop report even when nothing else is logged.
                _ = tokio::time::sleep(DROP_REPORT_INTERVAL), if dropped > reported => {}
            }
            continue;
        }
        let identity = shipper
            .inner
            .identity
            .read()
            .expect("identity lock")
            .clone();
        for mut line in batch {
            if line.service.is_empty() {
                line.service = if identity.service.is_empty() {
                    "unknown".to_string()
                } else {
                    identity.service.clone()
                };
            }
            if line.agent_id.is_none() {
                line.agent_id = identity.agent_id.clone();
            }
            let Ok(body) = serde_json::to_vec(&line) else {
                continue;
            };
            // Waits only when the client's own outgoing buffer is full;
            // meanwhile the layer keeps buffering (and dropping) on its own.
            if client.publish(line.subject(), body.into()).await.is_ok() {
                shipper.inner.shipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn drop_report(stats: &ShipStats, since_last: u64) -> LogLine {
    let mut line = LogLine::new(
        Level::Warn,
        "",
        format!("log shipping dropped {since_last} lines under back-pressure"),
    );
    line.fields
        .insert("dropped_since_last_report".into(), since_last.into());
    for (level, n) in &stats.dropped {
        line.fields
            .insert(format!("dropped_{}_total", level.as_str()), (*n).into());
    }
    line
}

/// The layer: turns events into [`LogLine`]s for its [`Shipper`].
pub struct ShipLayer {
    shipper: Shipper,
}

impl ShipLayer {
    /// Its shipper.
    pub fn shipper(&self) -> &Shipper {
        &self.shipper
    }
}

/// The four fields lifted out of events and spans into a line's own keys.
#[derive(Debug, Clone, Default)]
struct Scope {
    agent_id: Option<String>,
    task_id: Option<String>,
    tenant: Option<String>,
    capability: Option<String>,
}

impl Scope {
    fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        match name {
            "agent_id" => Some(&mut self.agent_id),
            "task_id" => Some(&mut self.task_id),
            "tenant" => Some(&mut self.tenant),
            "capability" => Some(&mut self.capability),
            _ => None,
        }
    }

    fn merge(&mut self, other: &Scope) {
        for (mine, theirs) in [
            (&mut self.agent_id, &other.agent_id),
            (&mut self.task_id, &other.task_id),
            (&mut self.tenant, &other.tenant),
            (&mut self.capability, &other.capability),
        ] {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.agent_id.is_none()
            && self.task_id.is_none()
            && self.tenant.is_none()
            && self.capability.is_none()
    }
}

impl Visit for Scope {
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(slot) = self.slot(field.name()) {
            *slot = Some(truncate(value.to_string(), MAX_FIELD_BYTES));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if let Some(slot) = self.slot(field.name()) {
            *slot = Some(truncate(format!("{value:?}"), MAX_FIELD_BYTES));
        }
    }
}

/// Collects an event's message and fields.
struct EventVisitor<'a> {
    scope: &'a mut Scope,
    message: String,
    fields: BTreeMap<String, Value>,
}

impl EventVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if name == "message" {
            self.message = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
        } else if let Some(slot) = self.scope.slot(name) {
            *slot = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            // `log` records forwarded into tracing carry these; they add nothing.
            if name.starts_with("log.") {
                return;
            }
            self.fields.insert(name.to_string(), value);
        }
    }
}

impl Visit for EventVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let limit = if field.name() == "message" {
            MAX_MESSAGE_BYTES
        } else {
            MAX_FIELD_BYTES
        };
        self.put(field, Value::String(truncate(value.to_string(), limit)));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(
            field,
            Value::String(truncate(value.to_string(), MAX_FIELD_BYTES)),
        );
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let limit = if field.name() == "message" {
            MAX_MESSAGE_BYTES
        } else {
            MAX_FIELD_BYTES
        };
        self.put(field, Value::String(truncate(format!("{value:?}"), limit)));
    }
}

/// Cuts `s` to at most `max` bytes (plus the `…` that marks the cut).
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

impl<S> Layer<S> for ShipLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut scope = Scope::default();
        attrs.record(&mut scope);
        if scope.is_empty() {
            return;
        }
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(scope);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<Scope>() {
            Some(scope) => values.record(scope),
            None => {
                let mut scope = Scope::default();
                values.record(&mut scope);
                if !scope.is_empty() {
                    extensions.insert(scope);
                }
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut scope = Scope::default();
        if let Some(spans) = ctx.event_scope(event) {
            for span in spans.from_root() {
                if let Some(s) = span.extensions().get::<Scope>() {
                    scope.merge(s);
                }
            }
        }
        let mut visitor = EventVisitor {
            scope: &mut scope,
            message: String::new(),
            fields: BTreeMap::new(),
        };
        event.record(&mut visitor);
        let EventVisitor {
            message,
            mut fields,
            ..
        } = visitor;
        if event.metadata().target() == EXECUTOR_OUTPUT_TARGET && !fields.contains_key("stream") {
            fields.insert("stream".into(), Value::from("output"));
        }
        self.shipper.ship(LogLine {
            time: timefmt::now(),
            level: Level::from(*event.metadata().level()),
            service: String::new(),
            agent_id: scope.agent_id,
            task_id: scope.task_id,
            tenant: scope.tenant,
            capability: scope.capability,
            message,
            fields,
        });
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn shipper(lines: usize) -> Shipper {
        Shipper::new(
            "test",
            &LogShipping {
                buffer_lines: lines,
                ..Default::default()
            },
        )
    }

    fn buffered(s: &Shipper) -> Vec<(Level, String)> {
        s.take(usize::MAX)
            .into_iter()
            .map(|l| (l.level, l.message))
            .collect()
    }

    #[test]
    fn under_back_pressure_debug_goes_first_then_info_and_every_drop_is_counted() {
        let s = shipper(4);
        let subscriber = tracing_subscriber::registry().with(s.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("info 1");
            tracing::debug!("debug 1");
            tracing::info!("info 2");
            tracing::debug!("debug 2");
            // Full. Each new line pushes out the oldest debug line first.
            tracing::warn!("warn 1");
            tracing::info!("info 3");
            // Only info and warn left: the oldest info line goes.
            tracing::error!("error 1");
            // A debug line is less important than everything buffered: it is dropped.
            tracing::debug!("debug 3");
        });
        let stats = s.stats();
        assert_eq!(stats.dropped.get(&Level::Debug), Some(&3));
        assert_eq!(stats.dropped.get(&Level::Info), Some(&1));
        assert_eq!(stats.dropped_total(), 4);
        assert_eq!(stats.buffered, 4);
        assert_eq!(
            buffered(&s),
            [
                (Level::Info, "info 2".to_string()),
                (Level::Warn, "warn 1".to_string()),
                (Level::Info, "info 3".to_string()),
                (Level::Error, "error 1".to_string()),
            ],
            "the rest is kept, oldest first"
        );
    }

    #[test]
    fn warn_and_error_lines_give_way_only_to_each_other_oldest_first() {
        let s = shipper(16);
        let subscriber = tracing_subscriber::registry().with(s.layer());
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..20 {
                tracing::error!("error {i}");
            }
        });
        let kept = buffered(&s);
        assert_eq!(kept.len(), 16);
        assert_eq!(kept[0].1, "error 4");
        assert_eq!(s.stats().dropped.get(&Level::Error), Some(&4));
    }

    #[test]
    fn task_tenant_agent_and_capability_come_from_the_event_or_its_spans() {
        let s = shipper(100);
        let subscriber = tracing_subscriber::registry().with(s.layer());
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("agent", agent_id = "a1");
            let _o = outer.enter();
            let task = tracing::info_span!(
                "task",
                task_id = %"t-1",
                tenant = "acme",
                capability = tracing::field::Empty
            );
            task.record("capability", "code");
            let _t = task.enter();
            tracing::info!(attempt = 2, ok = true, error = %"disk on fire", "attempt {} failed", 2);
            tracing::info!(task_id = "t-2", "about another task");
        });
        let lines = s.take(10);
        let line = &lines[0];
        assert_eq!(line.message, "attempt 2 failed");
        assert_eq!(line.agent_id.as_deref(), Some("a1"));
        assert_eq!(line.task_id.as_deref(), Some("t-1"));
        assert_eq!(line.tenant.as_deref(), Some("acme"));
        assert_eq!(line.capability.as_deref(), Some("code"));
        assert_eq!(line.fields["attempt"], 2);
        assert_eq!(line.fields["ok"], true);
        assert_eq!(line.fields["error"], "disk on fire");
        assert_eq!(lines[1].task_id.as_deref(), Some("t-2"), "the event wins");
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let cut = truncate("é".repeat(10), 5);
        assert_eq!(cut, "éé…");
    }

    #[test]
    fn the_shipper_is_found_through_the_dispatcher() {
        let s = shipper(100);
        let config = LogShipping::default();
        let subscriber =
            tracing_subscriber::registry().with(s.layer().with_filter(config.filter().unwrap()));
        tracing::subscriber::with_default(subscriber, || {
            let found = current().expect("the layer is found");
            tracing::info!("hello");
            assert_eq!(found.stats().buffered, 1);
        });
        assert!(current().is_none());
    }

    #[test]
    fn bad_settings_name_their_key() {
        let bad = LogShipping {
            level: "info,=[".into(),
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("log_shipping.level"));
        let small = LogShipping {
            buffer_lines: 1,
            ..Default::default()
        };
        assert!(small
            .validate()
            .unwrap_err()
            .to_string()
            .contains("log_shipping.buffer_lines"));
        assert!(LogShipping::default().validate().is_ok());
    }
}

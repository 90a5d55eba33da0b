//! [`Notifier`]: aggregation groups, their timing, and the notification log.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use time::OffsetDateTime;

use super::nflog::{needs_update, LogEntry, NotificationLog, LOG_RETENTION, MAX_LOG_ENTRIES};
use super::route::ResolvedRoute;
use super::view::{AlertStatus, AlertView, Notification};
use crate::engine::clock::{add, elapsed_at_least};
use crate::engine::labels::{alert_order, Labels};

/// Most aggregation groups a notifier keeps. With `group_by = ["..."]` and a
/// label of unbounded values every alert is a group; past the cap new groups
/// are refused (and counted) rather than exhausting memory.
pub const MAX_GROUPS: usize = 50_000;

/// A group is identified by its route (ids tell apart siblings with equal
/// matchers, which share a route key) and its group key.
type GroupId = (usize, String);
/// Log entries are per group key and receiver, as in Alertmanager.
type LogKey = (String, String);

#[derive(Debug, Clone)]
struct Group {
    route_id: usize,
    group_key: String,
    labels: Labels,
    receiver: String,
    group_interval: Duration,
    repeat_interval: Duration,
    /// The alerts the group holds, by fingerprint: what the service last
    /// passed in, plus resolved alerts kept until notified.
    alerts: BTreeMap<String, AlertView>,
    next_flush: OffsetDateTime,
}

/// The alerts of one tick bound for one group.
struct Incoming<'a> {
    route: &'a ResolvedRoute,
    labels: Labels,
    alerts: Vec<&'a AlertView>,
    fingerprints: BTreeSet<&'a str>,
}

/// Alertmanager's dispatcher and notification log, driven by the caller.
///
/// The service calls [`Notifier::tick`] regularly (every second, say) with
/// every firing and recently resolved alert, delivers the notifications it
/// returns, and reports each delivered one with [`Notifier::sent`]. The
/// rules, as in Alertmanager:
///
/// - a group is created when a non-muted firing alert routes to it, and
///   first notifies `group_wait` later, so alerts that start together are
///   sent together;
/// - after that the group is looked at every `group_interval`, and notifies
///   when the receiver was not yet told about a firing alert, when alerts
///   resolved since it was told (for receivers that want resolutions), when
///   everything it was told about has resolved, or when `repeat_interval`
///   has passed since it was last told;
/// - muted alerts are left out; a group with nothing but muted alerts sends
///   nothing;
/// - a group whose alerts have all resolved and been notified is removed.
///
/// Only [`Notifier::sent`] writes the log: a notification that was not
/// delivered is offered again at the next `group_interval`. The log is
/// persisted with [`Notifier::log`] and loaded with [`Notifier::restore`];
/// groups need no persisting, they are rebuilt from the alerts, and a
/// rebuilt group whose receiver has been told about firing alerts neither
/// waits `group_wait` again nor repeats itself before `repeat_interval`.
#[derive(Debug, Clone)]
pub struct Notifier {
    root: ResolvedRoute,
    groups: BTreeMap<GroupId, Group>,
    log: BTreeMap<LogKey, LogEntry>,
    without_resolved: BTreeSet<String>,
    groups_refused: u64,
}

impl Notifier {
    /// A notifier for a routing tree (route ids are renumbered depth-first,
    /// so they match the tree).
    pub fn new(mut root: ResolvedRoute) -> Self {
        renumber(&mut root, &mut 0);
        Notifier {
            root,
            groups: BTreeMap::new(),
            log: BTreeMap::new(),
            without_resolved: BTreeSet::new(),
            groups_refused: 0,
        }
    }

    /// Says whether a receiver wants resolved alerts (`send_resolved`; the
    /// default is yes). One that does not is not notified just because some
    /// of its alerts resolved while others still fire, as in Alertmanager.
    pub fn set_send_resolved(&mut self, receiver: &str, send_resolved: bool) {
        if send_resolved {
            self.without_resolved.remove(receiver);
        } else {
            self.without_resolved.insert(receiver.to_owned());
        }
    }

    /// Replaces the routing tree (configuration reload), as Alertmanager's
    /// reload does: the groups are dropped and rebuilt from the alerts at the
    /// next tick, the log is kept. A rebuilt group whose key and receiver
    /// are unchanged therefore neither waits `group_wait` again nor repeats
    /// itself; a group whose key changed (new matchers, new `group_by`)
    /// starts afresh, and the old one is not reported resolved.
    pub fn set_route(&mut self, mut root: ResolvedRoute) {
        renumber(&mut root, &mut 0);
        self.root = root;
        self.groups.clear();
    }

    /// The routing tree.
    pub fn route(&self) -> &ResolvedRoute {
        &self.root
    }

    /// Takes in the current alerts (all firing and recently resolved ones,
    /// every time: a firing alert a group holds that is no longer passed in
    /// is taken as resolved now) and returns the notifications due at `now`,
    /// in group order.
    pub fn tick(&mut self, alerts: &[AlertView], now: OffsetDateTime) -> Vec<Notification> {
        let incoming = route_alerts(&self.root, alerts);

        for (id, group) in &mut self.groups {
            let present = incoming.get(id).map(|inc| &inc.fingerprints);
            for (fp, view) in &mut group.alerts {
                let passed_in = present.is_some_and(|fps| fps.contains(fp.as_str()));
                if view.state == AlertStatus::Firing && !passed_in {
                    view.state = AlertStatus::Resolved;
                    view.ends_at = Some(now);
                }
            }
        }

        for (id, inc) in incoming {
            let entry = self.log.get(&(id.1.clone(), inc.route.receiver.clone()));
            let told_firing = |fp: &str| entry.is_some_and(|e| e.firing.contains(fp));
            if !self.groups.contains_key(&id) {
                let wanted = inc.alerts.iter().any(|a| match a.state {
                    AlertStatus::Firing => !a.muted,
                    AlertStatus::Resolved => told_firing(&a.fingerprint),
                });
                if !wanted {
                    continue;
                }
                if self.groups.len() >= MAX_GROUPS {
                    self.groups_refused += 1;
                    continue;
                }
                let next_flush = match entry {
                    // The receiver knows this group: carry on its rhythm.
                    Some(e) if !e.firing.is_empty() => {
                        add(e.sent_at, inc.route.group_interval).max(now)
                    }
                    _ => add(now, inc.route.group_wait),
                };
                self.groups.insert(
                    id.clone(),
                    Group {
                        route_id: inc.route.id,
                        group_key: id.1.clone(),
                        labels: inc.labels.clone(),
                        receiver: inc.route.receiver.clone(),
                        group_interval: inc.route.group_interval,
                        repeat_interval: inc.route.repeat_interval,
                        alerts: BTreeMap::new(),
                        next_flush,
                    },
                );
            }
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            for alert in inc.alerts {
                // A resolved alert matters only to a group that holds it or
                // whose receiver was told it fires; otherwise it was already
                // notified (or never was, having fired and resolved unseen).
                let keep = alert.state == AlertStatus::Firing
                    || group.alerts.contains_key(&alert.fingerprint)
                    || told_firing(&alert.fingerprint);
                if keep {
                    group
                        .alerts
                        .insert(alert.fingerprint.clone(), alert.clone());
                }
            }
        }

        let mut notifications = Vec::new();
        let mut finished = Vec::new();
        for (id, group) in &mut self.groups {
            if group.next_flush > now {
                continue;
            }
            group.next_flush = following_flush(group.next_flush, group.group_interval, now);
            let visible = |status: AlertStatus| {
                let mut out: Vec<AlertView> = group
                    .alerts
                    .values()
                    .filter(|a| a.state == status && !a.muted)
                    .cloned()
                    .collect();
                out.sort_by(|a, b| alert_order(&a.labels, &b.labels));
                out
            };
            let firing = visible(AlertStatus::Firing);
            let resolved = visible(AlertStatus::Resolved);
            let firing_set = fingerprints(&firing);
            let resolved_set = fingerprints(&resolved);
            let entry = self
                .log
                .get(&(group.group_key.clone(), group.receiver.clone()));
            let send_resolved = !self.without_resolved.contains(&group.receiver);
            let notify = !(firing.is_empty() && resolved.is_empty())
                && needs_update(
                    entry,
                    &firing_set,
                    &resolved_set,
                    group.repeat_interval,
                    send_resolved,
                    now,
                );
            if notify {
                notifications.push(Notification {
                    receiver: group.receiver.clone(),
                    group_key: group.group_key.clone(),
                    group_labels: group.labels.clone(),
                    firing,
                    resolved,
                    route_id: group.route_id,
                });
            } else {
                // Nothing to tell: the resolved alerts are dealt with.
                group.alerts.retain(|_, a| a.state == AlertStatus::Firing);
                if group.alerts.is_empty() {
                    finished.push(id.clone());
                }
            }
        }
        for id in finished {
            self.groups.remove(&id);
        }
        self.prune_log(now);
        notifications
    }

    /// Records that `notification` was delivered at `now`: the log now says
    /// its receiver knows these firing and resolved alerts, and the group
    /// forgets the resolved ones (unless they changed since). A receiver that
    /// does not want resolved alerts may have been given nothing to send
    /// (see [`crate::engine::webhook::webhook_message`]); report it anyway,
    /// so the log knows the resolution was dealt with.
    pub fn sent(&mut self, notification: &Notification, now: OffsetDateTime) {
        let key = (
            notification.group_key.clone(),
            notification.receiver.clone(),
        );
        if self.log.get(&key).is_some_and(|e| e.sent_at > now) {
            // A later delivery is already recorded.
            return;
        }
        if !self.log.contains_key(&key) && self.log.len() >= MAX_LOG_ENTRIES {
            self.evict_oldest_entry();
        }
        self.log.insert(
            key,
            LogEntry {
                group_key: notification.group_key.clone(),
                receiver: notification.receiver.clone(),
                firing: fingerprints(&notification.firing),
                resolved: fingerprints(&notification.resolved),
                sent_at: now,
            },
        );
        let id = (notification.route_id, notification.group_key.clone());
        if let Some(group) = self.groups.get_mut(&id) {
            for told in &notification.resolved {
                let unchanged = group.alerts.get(&told.fingerprint).is_some_and(|held| {
                    held.state == AlertStatus::Resolved && held.ends_at == told.ends_at
                });
                if unchanged {
                    group.alerts.remove(&told.fingerprint);
                }
            }
            if group.alerts.is_empty() {
                self.groups.remove(&id);
            }
        }
    }

    /// The notification log, for persisting.
    pub fn log(&self) -> NotificationLog {
        NotificationLog {
            entries: self.log.values().cloned().collect(),
        }
    }

    /// Loads a persisted log (at start-up), keeping for each group key and
    /// receiver the most recent entry of the two.
    pub fn restore(&mut self, log: NotificationLog) {
        for entry in log.entries {
            let key = (entry.group_key.clone(), entry.receiver.clone());
            match self.log.get(&key) {
                Some(existing) if existing.sent_at >= entry.sent_at => {}
                Some(_) => {
                    self.log.insert(key, entry);
                }
                None if self.log.len() < MAX_LOG_ENTRIES => {
                    self.log.insert(key, entry);
                }
                None => {}
            }
        }
    }

    /// How many aggregation groups exist.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// How many times a group could not be created because of
    /// [`MAX_GROUPS`].
    pub fn groups_refused(&self) -> u64 {
        self.groups_refused
    }

    /// Forgets entries older than [`LOG_RETENTION`] whose group is gone.
    fn prune_log(&mut self, now: OffsetDateTime) {
        let live: BTreeSet<(&str, &str)> = self
            .groups
            .values()
            .map(|g| (g.group_key.as_str(), g.receiver.as_str()))
            .collect();
        self.log.retain(|(key, receiver), entry| {
            live.contains(&(key.as_str(), receiver.as_str()))
                || !elapsed_at_least(entry.sent_at, now, LOG_RETENTION)
        });
    }

    fn evict_oldest_entry(&mut self) {
        let live: BTreeSet<(&str, &str)> = self
            .groups
            .values()
            .map(|g| (g.group_key.as_str(), g.receiver.as_str()))
            .collect();
        let oldest = self
            .log
            .iter()
            .filter(|((key, receiver), _)| !live.contains(&(key.as_str(), receiver.as_str())))
            .min_by_key(|(_, entry)| entry.sent_at)
            .map(|(k, _)| k.clone());
        if let Some(key) = oldest {
            self.log.remove(&key);
        }
    }
}

/// Sends every alert down the tree and collects, per group, what arrived.
fn route_alerts<'a>(
    root: &'a ResolvedRoute,
    alerts: &'a [AlertView],
) -> BTreeMap<GroupId, Incoming<'a>> {
    let mut incoming: BTreeMap<GroupId, Incoming<'a>> = BTreeMap::new();
    for alert in alerts {
        for route in root.match_routes(&alert.labels) {
            let labels = route.group_by.group_labels(&alert.labels);
            let key = route.group_key(&labels);
            let inc = incoming.entry((route.id, key)).or_insert_with(|| Incoming {
                route,
                labels,
                alerts: Vec::new(),
                fingerprints: BTreeSet::new(),
            });
            if inc.fingerprints.insert(alert.fingerprint.as_str()) {
                inc.alerts.push(alert);
            }
        }
    }
    incoming
}

/// The flush after one due at `due`: one interval on, or one interval after
/// `now` when ticks fell behind by more than an interval.
fn following_flush(due: OffsetDateTime, interval: Duration, now: OffsetDateTime) -> OffsetDateTime {
    let next = add(due, interval);
    if next > now {
        next
    } else {
        add(now, interval)
    }
}

fn fingerprints(alerts: &[AlertView]) -> BTreeSet<String> {
    alerts.iter().map(|a| a.fingerprint.clone()).collect()
}

fn renumber(route: &mut ResolvedRoute, next: &mut usize) {
    route.id = *next;
    *next += 1;
    for child in &mut route.routes {
        renumber(child, next);
    }
}

//! The routing tree: which receiver hears about an alert, grouped how, and
//! how often.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::engine::gofmt::quote;
use crate::engine::labels::{validate_name, LabelError, Labels};
use crate::engine::matcher::{all_match, list_string, Matcher};

/// Alertmanager's default `group_wait`: how long a new group waits for more
/// alerts before its first notification.
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
/// Alertmanager's default `group_interval`: how often a group is looked at
/// again after its first notification.
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Alertmanager's default `repeat_interval`: how long before an unchanged
/// firing group is notified again.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 60 * 60);
/// The `group_by` value meaning "every label": each distinct alert is its own
/// group.
pub const GROUP_BY_ALL: &str = "...";

const MAX_DEPTH: usize = 16;
const MAX_ROUTES: usize = 1024;
const MAX_ROUTE_MATCHERS: usize = 32;
const MAX_GROUP_BY: usize = 32;
const MAX_RECEIVER_LEN: usize = 128;

/// One node of the routing tree as configured. Unset fields are inherited
/// from the parent (the root's defaults are Alertmanager's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Who is notified; required at the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<String>,
    /// What an alert must match to take this route; none at the root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matchers: Vec<Matcher>,
    /// The labels that split alerts into groups (`["..."]`: every label).
    /// An empty list puts all the route's alerts in one group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<Vec<String>>,
    /// See [`DEFAULT_GROUP_WAIT`].
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub group_wait: Option<Duration>,
    /// See [`DEFAULT_GROUP_INTERVAL`].
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub group_interval: Option<Duration>,
    /// See [`DEFAULT_REPEAT_INTERVAL`].
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub repeat_interval: Option<Duration>,
    /// Whether later siblings may take an alert this route took.
    #[serde(
        default,
        rename = "continue",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub continue_: bool,
    /// Child routes, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

/// How a route groups its alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// By every label (`group_by = ["..."]`).
    All,
    /// By these labels (sorted, distinct); empty: one group for the route.
    Labels(Vec<String>),
}

impl GroupBy {
    /// The labels that identify an alert's group: those of the grouping
    /// labels the alert has.
    pub fn group_labels(&self, labels: &Labels) -> Labels {
        match self {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => names
                .iter()
                .filter_map(|name| labels.get(name).map(|v| (name.clone(), v.clone())))
                .collect(),
        }
    }
}

/// A checked routing node with everything inherited filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRoute {
    /// Position in a depth-first walk of the tree (the root is 0): tells
    /// apart siblings whose matchers are the same.
    pub id: usize,
    /// Alertmanager's route key: the matchers of every node from the root,
    /// e.g. `{}/{severity="page"}`.
    pub key: String,
    /// Who is notified.
    pub receiver: String,
    /// The matchers, sorted as Alertmanager sorts them (name, value, op).
    pub matchers: Vec<Matcher>,
    /// How alerts are grouped.
    pub group_by: GroupBy,
    /// See [`DEFAULT_GROUP_WAIT`].
    pub group_wait: Duration,
    /// See [`DEFAULT_GROUP_INTERVAL`].
    pub group_interval: Duration,
    /// See [`DEFAULT_REPEAT_INTERVAL`].
    pub repeat_interval: Duration,
    /// Whether later siblings may take an alert this route took.
    pub continue_: bool,
    /// Child routes, in order.
    pub routes: Vec<ResolvedRoute>,
}

/// Why a routing tree was refused, and where.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("route {path}: {kind}")]
pub struct RouteError {
    /// Where in the tree: `root`, `root.routes[1].routes[0]`…
    pub path: String,
    /// What is wrong.
    pub kind: RouteErrorKind,
}

/// What is wrong with a route.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouteErrorKind {
    /// The root names no receiver, so some alerts would go nowhere.
    #[error("the root route needs a receiver")]
    RootWithoutReceiver,
    /// The root has matchers; it must take every alert.
    #[error("the root route cannot have matchers")]
    RootWithMatchers,
    /// The root has `continue`; it has no siblings.
    #[error("the root route cannot have continue")]
    RootWithContinue,
    /// An empty or too long receiver name.
    #[error("receiver names are 1 to {MAX_RECEIVER_LEN} bytes")]
    BadReceiver,
    /// `...` with other labels.
    #[error("group_by \"...\" cannot be combined with other labels")]
    GroupByAllWithOthers,
    /// A `group_by` label given twice.
    #[error("group_by lists {0:?} twice")]
    DuplicateGroupBy(String),
    /// A `group_by` entry that is not a label name.
    #[error("group_by: {0}")]
    GroupByLabel(LabelError),
    /// Zero `group_interval`.
    #[error("group_interval cannot be zero")]
    ZeroGroupInterval,
    /// Zero `repeat_interval`.
    #[error("repeat_interval cannot be zero")]
    ZeroRepeatInterval,
    /// More than 32 matchers or `group_by` labels.
    #[error(
        "a route has at most {MAX_ROUTE_MATCHERS} matchers and {MAX_GROUP_BY} group_by labels"
    )]
    TooLarge,
    /// Nested deeper than 16.
    #[error("routes nest at most {MAX_DEPTH} deep")]
    TooDeep,
    /// More than 1024 routes.
    #[error("a routing tree has at most {MAX_ROUTES} routes")]
    TooMany,
}

/// What a node hands down to its children.
struct Inherited {
    receiver: Option<String>,
    group_by: GroupBy,
    group_wait: Duration,
    group_interval: Duration,
    repeat_interval: Duration,
}

impl Route {
    /// Checks the tree (this node being the root) and fills in inherited
    /// settings.
    pub fn resolve(&self) -> Result<ResolvedRoute, RouteError> {
        let root_error = |kind| RouteError {
            path: "root".to_owned(),
            kind,
        };
        if self.receiver.is_none() {
            return Err(root_error(RouteErrorKind::RootWithoutReceiver));
        }
        if !self.matchers.is_empty() {
            return Err(root_error(RouteErrorKind::RootWithMatchers));
        }
        if self.continue_ {
            return Err(root_error(RouteErrorKind::RootWithContinue));
        }
        let defaults = Inherited {
            receiver: None,
            group_by: GroupBy::Labels(Vec::new()),
            group_wait: DEFAULT_GROUP_WAIT,
            group_interval: DEFAULT_GROUP_INTERVAL,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
        };
        let mut count = 0;
        resolve_node(self, &defaults, None, "root", 0, &mut count)
    }
}

fn resolve_node(
    route: &Route,
    parent: &Inherited,
    parent_key: Option<&str>,
    path: &str,
    depth: usize,
    count: &mut usize,
) -> Result<ResolvedRoute, RouteError> {
    let error = |kind| RouteError {
        path: path.to_owned(),
        kind,
    };
    if depth > MAX_DEPTH {
        return Err(error(RouteErrorKind::TooDeep));
    }
    let id = *count;
    *count += 1;
    if *count > MAX_ROUTES {
        return Err(error(RouteErrorKind::TooMany));
    }
    if route.matchers.len() > MAX_ROUTE_MATCHERS {
        return Err(error(RouteErrorKind::TooLarge));
    }
    let receiver = match &route.receiver {
        Some(r) if r.is_empty() || r.len() > MAX_RECEIVER_LEN => {
            return Err(error(RouteErrorKind::BadReceiver))
        }
        Some(r) => r.clone(),
        None => parent
            .receiver
            .clone()
            .ok_or_else(|| error(RouteErrorKind::RootWithoutReceiver))?,
    };
    let group_by = match &route.group_by {
        Some(names) => parse_group_by(names).map_err(error)?,
        None => parent.group_by.clone(),
    };
    let group_wait = route.group_wait.unwrap_or(parent.group_wait);
    let group_interval = route.group_interval.unwrap_or(parent.group_interval);
    let repeat_interval = route.repeat_interval.unwrap_or(parent.repeat_interval);
    if group_interval.is_zero() {
        return Err(error(RouteErrorKind::ZeroGroupInterval));
    }
    if repeat_interval.is_zero() {
        return Err(error(RouteErrorKind::ZeroRepeatInterval));
    }
    let mut matchers = route.matchers.clone();
    matchers.sort_by(|a, b| (a.name(), a.value(), a.op()).cmp(&(b.name(), b.value(), b.op())));
    let own = list_string(&matchers);
    let key = match parent_key {
        Some(parent_key) => format!("{parent_key}/{own}"),
        None => own,
    };
    let inherited = Inherited {
        receiver: Some(receiver.clone()),
        group_by: group_by.clone(),
        group_wait,
        group_interval,
        repeat_interval,
    };
    let mut routes = Vec::with_capacity(route.routes.len());
    for (i, child) in route.routes.iter().enumerate() {
        let child_path = format!("{path}.routes[{i}]");
        routes.push(resolve_node(
            child,
            &inherited,
            Some(&key),
            &child_path,
            depth + 1,
            count,
        )?);
    }
    Ok(ResolvedRoute {
        id,
        key,
        receiver,
        matchers,
        group_by,
        group_wait,
        group_interval,
        repeat_interval,
        continue_: route.continue_,
        routes,
    })
}

fn parse_group_by(names: &[String]) -> Result<GroupBy, RouteErrorKind> {
    if names.len() > MAX_GROUP_BY {
        return Err(RouteErrorKind::TooLarge);
    }
    if names.iter().any(|n| n == GROUP_BY_ALL) {
        return if names.len() == 1 {
            Ok(GroupBy::All)
        } else {
            Err(RouteErrorKind::GroupByAllWithOthers)
        };
    }
    let mut seen = BTreeSet::new();
    for name in names {
        validate_name(name).map_err(RouteErrorKind::GroupByLabel)?;
        if !seen.insert(name.clone()) {
            return Err(RouteErrorKind::DuplicateGroupBy(name.clone()));
        }
    }
    Ok(GroupBy::Labels(seen.into_iter().collect()))
}

impl ResolvedRoute {
    /// The routes an alert with these labels takes, in tree order:
    /// depth-first, the first matching child wins unless it has `continue`,
    /// and a node whose children all fail to match takes the alert itself.
    /// Empty only when this node's own matchers fail.
    pub fn match_routes(&self, labels: &Labels) -> Vec<&ResolvedRoute> {
        let mut out = Vec::new();
        self.collect(labels, &mut out);
        out
    }

    fn collect<'a>(&'a self, labels: &Labels, out: &mut Vec<&'a ResolvedRoute>) -> bool {
        if !all_match(&self.matchers, labels) {
            return false;
        }
        let before = out.len();
        for child in &self.routes {
            if child.collect(labels, out) && !child.continue_ {
                break;
            }
        }
        if out.len() == before {
            out.push(self);
        }
        true
    }

    /// Alertmanager's group key for a group of this route:
    /// `{route key}:{group labels}`, e.g. `{}:{alertname="x"}`, with labels
    /// printed as Go prints a `model.LabelSet`.
    pub fn group_key(&self, group_labels: &Labels) -> String {
        format!("{}:{}", self.key, label_set_string(group_labels))
    }

    /// Every receiver the tree names, so the service can check that each
    /// exists.
    pub fn receivers(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        self.walk(&mut |r| {
            out.insert(r.receiver.as_str());
        });
        out
    }

    /// Visits every node, depth-first.
    pub fn walk<'a>(&'a self, visit: &mut dyn FnMut(&'a ResolvedRoute)) {
        visit(self);
        for child in &self.routes {
            child.walk(visit);
        }
    }
}

/// `{a="1", b="2"}`: Go's `model.LabelSet.String` (pairs sorted as strings).
fn label_set_string(labels: &Labels) -> String {
    let mut pairs: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}={}", quote(value)))
        .collect();
    pairs.sort();
    format!("{{{}}}", pairs.join(", "))
}

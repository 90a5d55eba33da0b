//! Routing and notification, as Alertmanager's dispatcher and notification
//! log do them.
//!
//! - [`Route`] is the routing tree as configured; [`Route::resolve`] checks
//!   it and fills in what children inherit, giving a [`ResolvedRoute`].
//! - An alert goes down the tree depth-first: the first matching child takes
//!   it (unless that child has `continue`, then later siblings may too), and
//!   a node no child of which matches takes it itself.
//! - At each route, alerts with the same values for the route's `group_by`
//!   labels form an aggregation group; a [`Notifier`] keeps the groups, says
//!   when each must notify its receiver, and remembers what each receiver
//!   was last told (the notification log), so nothing is sent twice and
//!   nothing is forgotten across a restart.

mod nflog;
mod notifier;
mod route;
mod view;

pub use nflog::{LogEntry, NotificationLog, LOG_RETENTION, MAX_LOG_ENTRIES};
pub use notifier::{Notifier, MAX_GROUPS};
pub use route::{
    GroupBy, ResolvedRoute, Route, RouteError, RouteErrorKind, DEFAULT_GROUP_INTERVAL,
    DEFAULT_GROUP_WAIT, DEFAULT_REPEAT_INTERVAL, GROUP_BY_ALL,
};
pub use view::{AlertStatus, AlertView, Notification};

//! The alerting core: Prometheus's rule lifecycle and Alertmanager's
//! silences, inhibition, routing, grouping, deduplication and webhook
//! payloads, as pure functions of their inputs and of `now`.
//!
//! Everything here follows the semantics of Prometheus and Alertmanager, so
//! that an operator's habits carry over: the same matcher syntax, the same
//! `for` / `keep_firing_for` lifecycle, the same routing tree with
//! `continue` and inheritance, the same `group_wait` / `group_interval` /
//! `repeat_interval` timing, the same notification-log deduplication, and
//! the same webhook payload (version 4). Where this module departs from them
//! the item's docs say so.
//!
//! Nothing here does I/O, reads the clock or spawns anything: the service
//! evaluates rules, passes the results in with the current time, and
//! delivers what comes out. That keeps every decision unit-testable and
//! replayable.
//!
//! The pieces, in the order an alert meets them:
//! - [`labels`]: label sets and their Prometheus fingerprint;
//! - [`alerts`]: the pending → firing → resolved state machine ([`AlertBook`]);
//! - [`silences`] and [`inhibit`]: what mutes an alert;
//! - [`routing`]: the route tree, aggregation groups and the notification
//!   log ([`Notifier`]);
//! - [`webhook`]: the Alertmanager webhook body, and the body for forwarding
//!   alerts to an existing Alertmanager;
//! - [`template`]: annotation templates (`{{ $value }}`, `{{ $labels.x }}`…).

pub mod alerts;
mod clock;
mod gofmt;
pub mod inhibit;
pub mod labels;
pub mod matcher;
pub mod routing;
pub mod silences;
pub mod template;
pub mod webhook;

#[cfg(test)]
mod tests;

pub use alerts::{
    ActiveAlert, AlertBook, AlertState, RuleTiming, Sample, Transition, TransitionTo,
};
pub use inhibit::{inhibited, InhibitError, InhibitRule};
pub use labels::{fingerprint, validate, LabelError, Labels};
pub use matcher::{all_match, MatchOp, Matcher, MatcherError};
pub use routing::{
    AlertStatus, AlertView, GroupBy, LogEntry, Notification, NotificationLog, Notifier,
    ResolvedRoute, Route, RouteError,
};
pub use silences::{Silence, SilenceError, SilenceState};
pub use template::TemplateError;
pub use webhook::{
    alertmanager_alerts, webhook_message, PostableAlert, WebhookAlert, WebhookMessage,
};

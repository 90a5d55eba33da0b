//! The clawfleet wire contract and the plumbing every service shares.
//!
//! Everything that crosses a process boundary is defined here exactly once:
//! subject, stream, consumer and bucket names ([`subjects`]), the task and its
//! record ([`task`]), API requests and replies ([`api`]), lifecycle events
//! ([`events`]), log lines and the log search API ([`logs`]), the stable
//! error codes ([`error`]), the names that travel ([`names`]) and the strict
//! decoding every request body goes through ([`strict`]). Services and clients
//! link this crate instead of spelling a subject or a JSON shape themselves.
//!
//! It also holds the small amount of start-up plumbing that would otherwise be
//! repeated in every `main.rs`: layered config loading ([`config`]), tracing
//! set-up ([`telemetry`]) with log shipping to NATS ([`logship`]), the NATS connection helper ([`nats`]) and the
//! JetStream topology ([`topology`]).

pub mod agent;
pub mod alerts;
pub mod analytics;
pub mod api;
pub mod config;
pub mod emit;
pub mod error;
pub mod events;
pub mod health;
pub mod lifecycle;
pub mod logs;
pub mod logship;
pub mod metrics;
pub mod names;
pub mod nats;
pub mod observe;
pub mod results;
pub mod signals;
pub mod strict;
pub mod subjects;
pub mod task;
pub mod telemetry;
pub mod timefmt;
pub mod topology;
pub mod watch;

pub use error::{ErrorBody, ErrorCode};
pub use task::{Priority, TaskRecord, TaskResult, TaskSpec, TaskStatus};

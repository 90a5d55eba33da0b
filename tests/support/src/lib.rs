//! Test support: a real `nats-server` per test and polling helpers.
//!
//! Every test gets its own server on a free loopback port with its own
//! temporary store, so tests run in parallel without sharing state. Nothing
//! here mocks NATS.

pub mod client;
pub mod fake_llm;
pub mod openclaw;
pub mod openclaw_tools;
mod process;
mod server;
mod services;
pub mod webhook;

use std::future::Future;
use std::time::Duration;

pub use process::{workspace_binary, AgentProcess, ProcessOptions};
pub use server::{nats_server_binary, NatsServer};
pub use services::{
    agent_config, alerter_config, dispatcher_config, log_aggregator_config, monitor_config,
    start_agent, start_alerter, start_alerter_with_reload, start_console, start_dispatcher,
    start_health_monitor, start_log_aggregator, Service,
};

/// Installs a test subscriber when `TEST_LOG=1`; tests are silent otherwise.
/// (Services started here print through their own subscriber, with the
/// same settings.)
pub fn init_tracing() {
    if test_log_enabled() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(test_log_filter())
            .with_test_writer()
            .try_init();
    }
}

/// Whether `TEST_LOG=1`.
fn test_log_enabled() -> bool {
    std::env::var_os("TEST_LOG").is_some_and(|v| v == "1")
}

/// `RUST_LOG`, default `info`.
fn test_log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what`
/// after `timeout`. Tests wait with this, never with a bare sleep.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

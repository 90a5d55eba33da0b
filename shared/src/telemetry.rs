//! Tracing set-up shared by every binary.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::logship::{LogShipping, Shipper};

/// The stderr filter when `RUST_LOG` is not set. The client logs each
/// reconnect attempt at info; an executor's own output is shipped, not
/// printed (see [`crate::logs::EXECUTOR_OUTPUT_TARGET`]).
pub const DEFAULT_STDERR_FILTER: &str = "info,async_nats=warn,clawfleet_executor_output=off";

/// Installs the global subscriber: human-readable on a terminal, JSON lines
/// otherwise (for log shippers). The filter comes from `RUST_LOG`, default
/// [`DEFAULT_STDERR_FILTER`]. Calling it twice is harmless.
pub fn init(service: &'static str) {
    install(service, None);
}

/// Like [`init`], and also ships events to NATS as `shipping` says (see
/// [`crate::logship`]): the service then calls
/// [`crate::logship::attach`] once it has a NATS client. `shipping` must
/// have been validated.
pub fn init_with_shipping(service: &'static str, shipping: &LogShipping) {
    install(service, Some(shipping));
}

fn install(service: &'static str, shipping: Option<&LogShipping>) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_STDERR_FILTER));
    let stderr: Box<dyn Layer<Registry> + Send + Sync> = if std::io::stderr().is_terminal() {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed()
    };
    let ship = shipping.filter(|s| s.enabled()).and_then(|s| {
        Some(
            Shipper::new(service, s)
                .layer()
                .with_filter(s.filter().ok()?),
        )
    });
    let result = tracing_subscriber::registry()
        .with(stderr.with_filter(filter))
        .with(ship)
        .try_init();
    if result.is_ok() {
        tracing::debug!(service, "telemetry initialised");
    }
}

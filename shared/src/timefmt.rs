//! Timestamps on the wire are RFC 3339 strings in UTC.

use time::OffsetDateTime;

/// A wire timestamp.
pub type Timestamp = OffsetDateTime;

/// The current time in UTC.
pub fn now() -> Timestamp {
    OffsetDateTime::now_utc()
}

/// Milliseconds between two timestamps (0 if `to` is before `from`).
pub fn millis_between(from: Timestamp, to: Timestamp) -> u64 {
    let ms = (to - from).whole_milliseconds();
    if ms < 0 {
        0
    } else {
        ms as u64
    }
}

/// A timestamp as its RFC 3339 text (for messages and logs).
pub fn format(t: Timestamp) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Serde helpers for `Option<Timestamp>` as RFC 3339.
pub mod option {
    pub use time::serde::rfc3339::option::{deserialize, serialize};
}

pub use time::serde::rfc3339::{deserialize, serialize};

//! Time arithmetic that cannot panic.
//!
//! Durations come from configuration and can be absurd (`repeat_interval =
//! "1000000y"`); `OffsetDateTime + Duration` panics on overflow, so every
//! addition and comparison here saturates instead: an interval too long to
//! represent simply never elapses.

use std::time::Duration;

use time::{OffsetDateTime, PrimitiveDateTime};

/// Whether at least `d` has passed from `since` to `now` (false when the
/// clock went backwards or `d` is too long to represent).
pub(crate) fn elapsed_at_least(since: OffsetDateTime, now: OffsetDateTime, d: Duration) -> bool {
    match time::Duration::try_from(d) {
        Ok(d) => now - since >= d,
        Err(_) => false,
    }
}

/// `t + d`, saturating at the latest representable instant.
pub(crate) fn add(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    time::Duration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d))
        .unwrap_or_else(|| PrimitiveDateTime::MAX.assume_utc())
}

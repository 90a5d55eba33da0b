//! Behaviour tests for the engine, one file per part.

mod alerts;
mod inhibit;
mod labels;
mod matcher;
mod notifier;
mod routing;
mod silences;
mod template;
mod webhook;

use time::macros::datetime;
use time::OffsetDateTime;

use super::labels::Labels;

/// A fixed instant plus `secs` seconds.
pub(super) fn at(secs: i64) -> OffsetDateTime {
    datetime!(2025-03-01 12:00 UTC) + time::Duration::seconds(secs)
}

/// A label set from pairs.
pub(super) fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

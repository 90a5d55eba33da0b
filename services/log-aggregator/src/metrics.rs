//! The log aggregator's metric names (see `docs/metrics.md`).

use crate::analytics::store::Row;

/// Counter: log lines indexed.
pub const LOG_LINES_INDEXED: &str = "clawfleet_log_lines_indexed_total";
/// Counter: log lines removed by retention; label `reason` (`age`, `size`).
pub const LOG_LINES_REMOVED: &str = "clawfleet_log_lines_removed_total";
/// Counter: attempt reports recorded; labels `tenant`, `agent`, `outcome`.
pub const ATTEMPTS_RECORDED: &str = "clawfleet_attempts_recorded_total";
/// Counter: cost of recorded attempts in millionths of the price table's
/// currency; labels `tenant`, `agent`.
pub const COST_MICROS: &str = "clawfleet_cost_micros_total";
/// Counter: tokens used by recorded attempts; labels `tenant`, `agent`,
/// `direction` (`in`, `out`).
pub const TOKENS: &str = "clawfleet_tokens_total";

/// Counts the attempts of `rows` that were new (`added[i]`).
pub fn attempts_recorded(rows: &[Row], added: Vec<bool>) {
    for (r, new) in rows.iter().zip(added) {
        if !new {
            continue;
        }
        let labels = [("tenant", r.tenant.clone()), ("agent", r.agent.clone())];
        metrics::counter!(
            ATTEMPTS_RECORDED,
            "tenant" => r.tenant.clone(),
            "agent" => r.agent.clone(),
            "outcome" => r.outcome.clone()
        )
        .increment(1);
        metrics::counter!(COST_MICROS, &labels).increment(r.cost_micros.max(0) as u64);
        if r.tokens_in > 0 || r.tokens_out > 0 {
            metrics::counter!(TOKENS, "tenant" => r.tenant.clone(), "agent" => r.agent.clone(), "direction" => "in")
                .increment(r.tokens_in);
            metrics::counter!(TOKENS, "tenant" => r.tenant.clone(), "agent" => r.agent.clone(), "direction" => "out")
                .increment(r.tokens_out);
        }
    }
}

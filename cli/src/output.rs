//! How results are shown: tables for people, JSON for programs.
//!
//! Tables are drawn with borders on a terminal and as plain, aligned
//! columns otherwise (easy to `grep` and `awk`). Times are shown in UTC.

use std::io::IsTerminal;
use std::time::Duration;

use clawfleet_shared::timefmt::{self, Timestamp};
use comfy_table::{modifiers, presets, ContentArrangement};
use serde::Serialize;
use time::macros::format_description;

/// Narrowest terminal, in columns, that table cells are wrapped to fit.
const MIN_WRAP_WIDTH: u16 = 60;

/// Whether stdout is a terminal (a person is reading).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A table of text cells.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column names.
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (one cell per column).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Prints the table on stdout.
    pub fn print(&self) {
        if stdout_is_terminal() {
            let mut table = comfy_table::Table::new();
            table
                .load_preset(presets::UTF8_FULL_CONDENSED)
                .apply_modifier(modifiers::UTF8_ROUND_CORNERS)
                .set_header(&self.header);
            // Wrap cells to the terminal's width only when it is known and
            // sane; a pseudo-terminal may report 0 columns.
            if table.width().is_some_and(|w| w >= MIN_WRAP_WIDTH) {
                table.set_content_arrangement(ContentArrangement::Dynamic);
            }
            for row in &self.rows {
                table.add_row(row);
            }
            println!("{table}");
        } else {
            print!("{}", self.plain());
        }
    }

    /// Columns separated by two spaces, padded to the widest cell.
    fn plain(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `2026-11-25 05:34:14` (UTC).
pub fn datetime(ts: Timestamp) -> String {
    ts.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]"
    ))
    .unwrap_or_else(|_| ts.to_string())
}

/// `05:34:14.368` (UTC).
pub fn clock(ts: Timestamp) -> String {
    ts.format(format_description!(
        "[hour]:[minute]:[second].[subsecond digits:3]"
    ))
    .unwrap_or_else(|_| ts.to_string())
}

/// How long ago `ts` was, coarsely: `2s ago`, `3m ago`, `1h ago`.
pub fn ago(ts: Timestamp) -> String {
    let secs = timefmt::millis_between(ts, timefmt::now()) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// A duration for people: `3ms`, `1.25s`, `2m 5s`.
pub fn duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.2}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// A list for people: `a, b`, or `-` when empty.
pub fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(", ")
    }
}

/// An optional value for people: the value, or `-`.
pub fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tables_align_columns_and_trim_trailing_space() {
        let mut t = Table::new(&["id", "state"]);
        t.row(vec!["general-1".into(), "ready".into()]);
        t.row(vec!["a".into(), "draining".into()]);
        assert_eq!(
            t.plain(),
            "id         state\ngeneral-1  ready\na          draining\n"
        );
    }

    #[test]
    fn ages_are_coarse() {
        let now = timefmt::now();
        assert_eq!(ago(now - Duration::from_secs(2)), "2s ago");
        assert_eq!(ago(now - Duration::from_secs(125)), "2m ago");
        assert_eq!(ago(now + Duration::from_secs(5)), "0s ago");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(Duration::from_millis(3)), "3ms");
        assert_eq!(duration(Duration::from_millis(1250)), "1.25s");
        assert_eq!(duration(Duration::from_secs(125)), "2m 5s");
    }
}

//! Go's formatting of floats, times and quoted strings.
//!
//! Prometheus and Alertmanager are Go programs, and what they print shows up
//! in annotations, group keys and webhook bodies that operators read and
//! that receivers parse. Printing the same way keeps those byte-for-byte
//! comparable: `{{ $value }}` of a million is `1e+06`, a group key quotes its
//! values like `strconv.Quote`, and a webhook time is RFC 3339 with
//! nanoseconds and no trailing zeros.

use std::fmt::Write;

use time::{OffsetDateTime, UtcOffset};

/// Go's `%v` (`strconv.FormatFloat(v, 'g', -1, 64)`): the shortest digits
/// that read back to `v`, in exponent form when the decimal exponent is
/// below -4 or at least 6 (so `1e+06` but `100000`).
pub(crate) fn float_v(v: f64) -> String {
    if let Some(special) = non_finite(v) {
        return special.to_owned();
    }
    let (digits, exp) = decompose(&format!("{v:e}"));
    if !(-4..6).contains(&exp) {
        exponent_form(v.is_sign_negative(), &digits, exp)
    } else {
        format!("{v}")
    }
}

/// Go's `%.{precision}g`: `precision` significant digits, trailing zeros
/// dropped, exponent form when the exponent is below -4 or at least
/// `precision`.
pub(crate) fn float_g(v: f64, precision: usize) -> String {
    if let Some(special) = non_finite(v) {
        return special.to_owned();
    }
    let precision = precision.max(1);
    let (digits, exp) = decompose(&format!("{:.*e}", precision - 1, v));
    let exp_limit = i32::try_from(precision).unwrap_or(i32::MAX);
    if exp < -4 || exp >= exp_limit {
        exponent_form(v.is_sign_negative(), &digits, exp)
    } else {
        let integer_digits = i64::from(exp) + 1;
        let decimals = (i64::try_from(digits.len()).unwrap_or(0) - integer_digits).max(0);
        format!("{:.*}", usize::try_from(decimals).unwrap_or(0), v)
    }
}

/// `NaN`, `+Inf`, `-Inf` as Go prints them.
fn non_finite(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some("NaN")
    } else if v == f64::INFINITY {
        Some("+Inf")
    } else if v == f64::NEG_INFINITY {
        Some("-Inf")
    } else {
        None
    }
}

/// Splits Rust's `{:e}` output (`-1.2340e3`) into significant digits without
/// trailing zeros (`"1234"`, at least one digit) and the decimal exponent.
fn decompose(sci: &str) -> (String, i32) {
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let mut digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    (digits, exp.parse().unwrap_or(0))
}

/// `d.ddde±XX`, Go's exponent form (at least two exponent digits).
fn exponent_form(negative: bool, digits: &str, exp: i32) -> String {
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    let (first, rest) = digits.split_at(1.min(digits.len()));
    out.push_str(first);
    if !rest.is_empty() {
        out.push('.');
        out.push_str(rest);
    }
    let sign = if exp < 0 { '-' } else { '+' };
    let _ = write!(out, "e{sign}{:02}", exp.unsigned_abs());
    out
}

/// RFC 3339 in UTC with nanoseconds, trailing zeros dropped: Go's
/// `time.RFC3339Nano`, which is how Alertmanager's JSON carries times (the
/// zero time is `0001-01-01T00:00:00Z`).
pub(crate) fn rfc3339_nano(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let nanos = t.nanosecond();
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Go's `strconv.Quote` for the characters labels contain: `"` and `\`
/// escaped, the usual short escapes for control characters, `\xNN` for other
/// ASCII controls and `\uNNNN` for other control characters.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Serde for times in Go's JSON form ([`rfc3339_nano`]); reads any RFC 3339.
pub(crate) mod go_time {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    pub(crate) fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339_nano(*t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)
    }
}

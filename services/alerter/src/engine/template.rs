//! Annotation templates: the small part of Prometheus's template language
//! that alert annotations use.
//!
//! Supported, with Prometheus's output:
//! - `{{ $value }}` (or `{{ .Value }}`): the value, printed as Go prints a
//!   float (`0.5`, `1e+06`);
//! - `{{ $labels.name }}` (or `{{ .Labels.name }}`): a label's value, empty
//!   when the alert lacks it;
//! - `{{ humanize $value }}`: SI prefixes, 4 significant digits (`1.235M`,
//!   `500m`);
//! - `{{ humanizePercentage $value }}`: `0.123` → `12.3%`;
//! - `{{ humanizeDuration $value }}`: seconds → `1m 30s`, `2d 3h 0m 0s`;
//! - the functions also as pipes: `{{ $value | humanize }}`.
//!
//! Anything else inside `{{ }}` is refused by [`check`], which the service
//! runs when it loads rules, so a typo is a configuration error rather than
//! a broken annotation at 3 a.m.

use thiserror::Error;

use super::gofmt::{float_g, float_v};
use super::labels::{excerpt, is_valid_name, truncate, Labels};

/// Longest template accepted, in bytes.
pub const MAX_TEMPLATE_LEN: usize = 16 * 1024;
/// Longest rendered output, in bytes; longer output is cut.
pub const MAX_RENDERED_LEN: usize = 4096;

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    /// Longer than [`MAX_TEMPLATE_LEN`].
    #[error("template is {len} bytes, at most {MAX_TEMPLATE_LEN} are allowed")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// A `{{` without its `}}`.
    #[error("unclosed {{{{ at byte {at}")]
    Unclosed {
        /// Where the `{{` is.
        at: usize,
    },
    /// An expression this template language does not have.
    #[error("unsupported template expression {{{{ {expr} }}}}: use $value, $labels.<name>, or humanize / humanizePercentage / humanizeDuration $value")]
    Unknown {
        /// The expression (its first bytes, if it was long).
        expr: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    Value,
    Label(String),
    Humanize,
    HumanizePercentage,
    HumanizeDuration,
}

#[derive(Debug)]
enum Piece<'a> {
    Text(&'a str),
    Expr(Expr),
}

/// Checks a template without rendering it.
pub fn check(template: &str) -> Result<(), TemplateError> {
    parse(template).map(|_| ())
}

/// Renders a template for an alert's labels and value, cut to
/// [`MAX_RENDERED_LEN`] bytes. A template that [`check`] would refuse
/// renders as `<error expanding template: …>`, as Prometheus does, so the
/// problem shows where the text should have been.
pub fn render(template: &str, labels: &Labels, value: f64) -> String {
    let pieces = match parse(template) {
        Ok(pieces) => pieces,
        Err(e) => {
            let mut out = format!("<error expanding template: {e}>");
            truncate(&mut out, MAX_RENDERED_LEN);
            return out;
        }
    };
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Expr(Expr::Value) => out.push_str(&float_v(value)),
            Piece::Expr(Expr::Label(name)) => {
                out.push_str(labels.get(&name).map_or("", String::as_str));
            }
            Piece::Expr(Expr::Humanize) => out.push_str(&humanize(value)),
            Piece::Expr(Expr::HumanizePercentage) => {
                out.push_str(&humanize_percentage(value));
            }
            Piece::Expr(Expr::HumanizeDuration) => out.push_str(&humanize_duration(value)),
        }
        if out.len() > MAX_RENDERED_LEN {
            break;
        }
    }
    truncate(&mut out, MAX_RENDERED_LEN);
    out
}

fn parse(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    if template.len() > MAX_TEMPLATE_LEN {
        return Err(TemplateError::TooLong {
            len: template.len(),
        });
    }
    let mut pieces = Vec::new();
    let mut rest = template;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            pieces.push(Piece::Text(&rest[..start]));
        }
        let inner = &rest[start + 2..];
        let end = inner
            .find("}}")
            .ok_or(TemplateError::Unclosed { at: offset + start })?;
        pieces.push(Piece::Expr(parse_expr(&inner[..end])?));
        let consumed = start + 2 + end + 2;
        rest = &rest[consumed..];
        offset += consumed;
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

fn parse_expr(text: &str) -> Result<Expr, TemplateError> {
    let unknown = || TemplateError::Unknown {
        expr: excerpt(text.trim()),
    };
    let is_value = |token: &str| token == "$value" || token == ".Value";
    let function = |name: &str| match name {
        "humanize" => Ok(Expr::Humanize),
        "humanizePercentage" => Ok(Expr::HumanizePercentage),
        "humanizeDuration" => Ok(Expr::HumanizeDuration),
        _ => Err(unknown()),
    };
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    match tokens.as_slice() {
        [token] if is_value(token) => Ok(Expr::Value),
        [token] => {
            let name = token
                .strip_prefix("$labels.")
                .or_else(|| token.strip_prefix(".Labels."))
                .filter(|name| is_valid_name(name))
                .ok_or_else(unknown)?;
            Ok(Expr::Label(name.to_owned()))
        }
        [name, token] if is_value(token) => function(name),
        [token, "|", name] if is_value(token) => function(name),
        _ => Err(unknown()),
    }
}

const LARGE_PREFIXES: [&str; 8] = ["k", "M", "G", "T", "P", "E", "Z", "Y"];
const SMALL_PREFIXES: [&str; 8] = ["m", "u", "n", "p", "f", "a", "z", "y"];

/// Prometheus's `humanize`.
fn humanize(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return float_g(v, 4);
    }
    let (v, prefix) = scale(v);
    format!("{}{prefix}", float_g(v, 4))
}

/// Scales by 1000s into `[1, 1000)` where a prefix exists; returns the
/// prefix.
fn scale(mut v: f64) -> (f64, &'static str) {
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in LARGE_PREFIXES {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in SMALL_PREFIXES {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    (v, prefix)
}

/// Prometheus's `humanizePercentage`.
fn humanize_percentage(v: f64) -> String {
    format!("{}%", float_g(v * 100.0, 4))
}

/// Prometheus's `humanizeDuration` (the value is seconds).
fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return float_g(v, 4);
    }
    if v == 0.0 {
        return format!("{}s", float_g(v, 4));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let v = v.abs();
        // Saturating float-to-int conversion: absurd values stay finite.
        let total = v as i64;
        let seconds = total % 60;
        let minutes = (total / 60) % 60;
        let hours = (total / 3600) % 24;
        let days = total / 86_400;
        return if days != 0 {
            format!("{sign}{days}d {hours}h {minutes}m {seconds}s")
        } else if hours != 0 {
            format!("{sign}{hours}h {minutes}m {seconds}s")
        } else if minutes != 0 {
            format!("{sign}{minutes}m {seconds}s")
        } else {
            format!("{sign}{}s", float_g(v, 4))
        };
    }
    let (v, prefix) = scale(v);
    format!("{}{prefix}s", float_g(v, 4))
}

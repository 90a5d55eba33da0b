//! Label matchers, in Alertmanager's syntax and with its semantics.
//!
//! `name=value`, `name!=value`, `name=~regex`, `name!~regex`; the value may be
//! double-quoted (`severity=~"critical|page"`), with `\"`, `\\` and `\n`
//! escapes, and whitespace around the operator is ignored. Regexes are
//! anchored at both ends (`^(?:regex)$`), so `=~crit` does not match
//! `critical`. A label an alert does not have matches as the empty string:
//! `team=""` selects alerts without a `team` label, `team!=""` alerts with
//! one. That is how silences, inhibit rules and routes already behave in
//! Alertmanager, so a matcher copied from an Alertmanager config means the
//! same thing here.
//!
//! In configuration (TOML, JSON) a matcher is its string form.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use super::labels::{excerpt, validate_name, LabelError, Labels, MAX_VALUE_LEN};

/// Bound on the compiled size of one matcher's regex (and its lazy DFA
/// cache): a pathological pattern in a silence must not cost the process
/// megabytes per matcher.
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024;
/// Longest matcher text accepted by [`Matcher::parse`], in bytes: a name, an
/// operator and a quoted value with every character escaped.
const MAX_INPUT_LEN: usize = 4 * MAX_VALUE_LEN;

/// How a matcher compares a label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchOp {
    /// `=`: the value equals.
    Equal,
    /// `!=`: the value differs.
    NotEqual,
    /// `=~`: the whole value matches the regex.
    Regex,
    /// `!~`: the whole value does not match the regex.
    NotRegex,
}

impl MatchOp {
    /// The operator as written: `=`, `!=`, `=~` or `!~`.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }

    fn is_regex(self) -> bool {
        matches!(self, MatchOp::Regex | MatchOp::NotRegex)
    }
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a matcher was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MatcherError {
    /// Not `name`, an operator and a value.
    #[error("bad matcher format {input:?}: expected a label name, one of = != =~ !~, and a value")]
    Syntax {
        /// The input (its first bytes, if it was long).
        input: String,
    },
    /// The label name is invalid or too long.
    #[error(transparent)]
    Name(#[from] LabelError),
    /// The value is longer than [`MAX_VALUE_LEN`] bytes.
    #[error("matcher value is longer than {MAX_VALUE_LEN} bytes")]
    ValueTooLong,
    /// A `"` inside the value that is neither escaped nor the closing quote.
    #[error("matcher value contains an unescaped double quote")]
    UnescapedQuote,
    /// The value opens a quote it never closes.
    #[error("matcher value opens a double quote it does not close")]
    UnterminatedQuote,
    /// The regex does not compile, or compiles too big.
    #[error("invalid regex {value:?}: {reason}")]
    Regex {
        /// The pattern (its first bytes, if it was long).
        value: String,
        /// What the regex engine said.
        reason: String,
    },
}

/// One label matcher. Build it with [`Matcher::new`] or [`Matcher::parse`];
/// the fields are private because a regex matcher keeps its compiled form.
#[derive(Clone)]
pub struct Matcher {
    name: String,
    op: MatchOp,
    value: String,
    regex: Option<Regex>,
}

impl Matcher {
    /// A matcher from its parts; compiles (anchors) the regex for `=~`/`!~`.
    pub fn new(
        name: impl Into<String>,
        op: MatchOp,
        value: impl Into<String>,
    ) -> Result<Self, MatcherError> {
        let name = name.into();
        let value = value.into();
        validate_name(&name)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(MatcherError::ValueTooLong);
        }
        let regex = if op.is_regex() {
            let anchored = format!("^(?:{value})$");
            let compiled = RegexBuilder::new(&anchored)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| MatcherError::Regex {
                    value: excerpt(&value),
                    reason: e.to_string(),
                })?;
            Some(compiled)
        } else {
            None
        };
        Ok(Matcher {
            name,
            op,
            value,
            regex,
        })
    }

    /// Parses `name=value`, `name!=value`, `name=~regex` or `name!~regex`
    /// as Alertmanager does: whitespace around the operator and at the ends
    /// is ignored, and a value wrapped in double quotes is unquoted (`\"`,
    /// `\\` and `\n` are escapes; any other backslash is kept as is).
    pub fn parse(input: &str) -> Result<Self, MatcherError> {
        let syntax = || MatcherError::Syntax {
            input: excerpt(input),
        };
        if input.len() > MAX_INPUT_LEN {
            return Err(syntax());
        }
        let s = input.trim_matches(|c: char| c.is_ascii_whitespace());
        let name_end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let (name, rest) = s.split_at(name_end);
        if name.is_empty() {
            return Err(syntax());
        }
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
        // Same order as Alertmanager's `(=~|=|!=|!~)`.
        let (op, raw) = [
            MatchOp::Regex,
            MatchOp::Equal,
            MatchOp::NotEqual,
            MatchOp::NotRegex,
        ]
        .into_iter()
        .find_map(|op| rest.strip_prefix(op.as_str()).map(|raw| (op, raw)))
        .ok_or_else(syntax)?;
        let raw = raw.trim_start_matches(|c: char| c.is_ascii_whitespace());
        let value = unquote(raw)?;
        Matcher::new(name, op, value)
    }

    /// The label name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operator.
    pub fn op(&self) -> MatchOp {
        self.op
    }

    /// The value or (unanchored) regex, as given.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether a label value satisfies the matcher.
    pub fn matches_value(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            // `new` compiles a regex for every regex operator.
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }

    /// Whether a label set satisfies the matcher; an absent label counts as
    /// the empty string.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.name).map_or("", String::as_str))
    }

    /// Whether the matcher accepts the empty string, i.e. also alerts that
    /// lack the label. A silence made only of such matchers would mute
    /// everything, which is why silences refuse it.
    pub fn matches_empty(&self) -> bool {
        self.matches_value("")
    }
}

/// Whether every matcher matches (true for no matchers, as in Alertmanager).
pub fn all_match(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// `{m1,m2}`: how Alertmanager prints a matcher list (in route keys).
pub(crate) fn list_string(matchers: &[Matcher]) -> String {
    let parts: Vec<String> = matchers.iter().map(Matcher::to_string).collect();
    format!("{{{}}}", parts.join(","))
}

/// Undoes the quoting of a matcher value.
fn unquote(raw: &str) -> Result<String, MatcherError> {
    let (body, quoted) = match raw.strip_prefix('"') {
        Some(body) => (body, true),
        None => (raw, false),
    };
    let mut out = String::with_capacity(body.len());
    let mut closed = false;
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                // A backslash at the very end is a literal backslash.
                None => out.push('\\'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, escaped @ ('"' | '\\'))) => out.push(escaped),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
            },
            '"' if quoted && i + 1 == body.len() => closed = true,
            '"' => return Err(MatcherError::UnescapedQuote),
            other => out.push(other),
        }
    }
    if quoted && !closed {
        return Err(MatcherError::UnterminatedQuote);
    }
    Ok(out)
}

/// Prints `name op "value"` with the value quoted and escaped the way
/// Alertmanager prints matchers; [`Matcher::parse`] reads it back.
impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}\"", self.name, self.op)?;
        for c in self.value.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                other => write!(f, "{other}")?,
            }
        }
        f.write_str("\"")
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Matcher({self})")
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Eq for Matcher {}

impl Hash for Matcher {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.op.hash(state);
        self.value.hash(state);
    }
}

impl FromStr for Matcher {
    type Err = MatcherError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Matcher::parse(s)
    }
}

impl Serialize for Matcher {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Matcher::parse(&text).map_err(serde::de::Error::custom)
    }
}

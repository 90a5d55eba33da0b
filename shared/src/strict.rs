//! Strict decoding of request bodies, and bounded quoting of client input.
//!
//! Every body that arrives over the network is decoded here, so the same
//! rules hold on every subject:
//!
//! - a request is one JSON **object**: an array, a string, a number or
//!   `null` is refused, never read as "every field left out" (serde's
//!   derived structs otherwise accept `[]` as an empty struct);
//! - a key appears **once** per object, at every depth. RFC 8259 leaves
//!   duplicates to the parser, and two parsers that pick different copies of
//!   `"tenant"` disagree about whose task it is, so they are refused;
//! - error messages quote client input only through [`echo`] and
//!   [`echo_value`], cut to [`MAX_ECHO_BYTES`], and every message is cut to
//!   [`MAX_MESSAGE_BYTES`] (see [`crate::ErrorBody::new`]), so an error
//!   reply stays small whatever the request held.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Most bytes of client input an error message quotes.
pub const MAX_ECHO_BYTES: usize = 64;
/// Longest error message, in bytes; longer ones are cut with `…`.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all (or trailing bytes after the value).
    #[error("body is not valid JSON: {0}")]
    Syntax(String),
    /// Valid JSON, but not an object.
    #[error("the body must be a JSON object, not {0}")]
    NotObject(&'static str),
    /// An object has the same key twice.
    #[error("key {0} appears more than once in one object")]
    DuplicateKey(String),
    /// An object, but not of the expected shape (a field of the wrong type,
    /// an unknown field).
    #[error("{0}")]
    Shape(String),
}

/// Decodes `body` as one JSON object of type `T`, refusing non-objects and
/// duplicate keys.
pub fn object<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    check(body)?;
    serde_json::from_slice(body).map_err(|e| DecodeError::Shape(cut(&e.to_string(), 300)))
}

/// Like [`object`], but an empty (or all-whitespace) body means `T::default()`:
/// for requests whose every field is optional.
pub fn object_or_empty<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    object(body)
}

/// Checks that `body` is one JSON object without duplicate keys, at any depth.
pub fn check(body: &[u8]) -> Result<(), DecodeError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(body);
    let kind = de
        .deserialize_any(Unique(&duplicate))
        .map_err(|e| match duplicate.take() {
            Some(key) => DecodeError::DuplicateKey(key),
            None => DecodeError::Syntax(cut(&e.to_string(), 200)),
        })?;
    de.end()
        .map_err(|e| DecodeError::Syntax(cut(&e.to_string(), 200)))?;
    match kind {
        Kind::Object => Ok(()),
        other => Err(DecodeError::NotObject(other.name())),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Object => "an object",
            Kind::Array => "an array",
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Bool => "a boolean",
            Kind::Null => "null",
        }
    }
}

/// Walks any JSON value, failing on the first object with a repeated key
/// (which it leaves in the cell, to tell that failure from a syntax error).
struct Unique<'a>(&'a RefCell<Option<String>>);

impl<'de> Visitor<'de> for Unique<'_> {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Kind, E> {
        Ok(Kind::Bool)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }
    fn visit_str<E>(self, _: &str) -> Result<Kind, E> {
        Ok(Kind::String)
    }
    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_none<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        while seq.next_element_seed(UniqueSeed(self.0))?.is_some() {}
        Ok(Kind::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                *self.0.borrow_mut() = Some(echo(&key));
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(UniqueSeed(self.0))?;
            seen.insert(key);
        }
        Ok(Kind::Object)
    }
}

struct UniqueSeed<'a>(&'a RefCell<Option<String>>);

impl<'de> de::DeserializeSeed<'de> for UniqueSeed<'_> {
    type Value = Kind;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(Unique(self.0))
    }
}

/// `s` quoted for an error message: at most [`MAX_ECHO_BYTES`] of it, and
/// its full size when it was cut (`"abc…" (1048576 bytes)`).
pub fn echo(s: &str) -> String {
    if s.len() <= MAX_ECHO_BYTES {
        return format!("{s:?}");
    }
    let head = &s[..floor_char_boundary(s, MAX_ECHO_BYTES)];
    format!("{:?}… ({} bytes)", head, s.len())
}

/// A JSON value for an error message: its encoding, cut like [`echo`].
pub fn echo_value(v: &Value) -> String {
    match v {
        Value::String(s) => echo(s),
        Value::Array(items) if items.len() > 8 => format!("a list of {} items", items.len()),
        Value::Object(obj) if obj.len() > 8 => format!("an object of {} keys", obj.len()),
        other => {
            let text = other.to_string();
            if text.len() <= MAX_ECHO_BYTES {
                text
            } else {
                format!(
                    "{}… ({} bytes)",
                    &text[..floor_char_boundary(&text, MAX_ECHO_BYTES)],
                    text.len()
                )
            }
        }
    }
}

/// `s` cut to at most `max` bytes (on a character boundary), with `…`
/// appended when it was cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let keep = floor_char_boundary(s, max.saturating_sub('…'.len_utf8()));
    format!("{}…", &s[..keep])
}

/// Cuts `s` in place like [`cut`].
pub fn cut_in_place(s: &mut String, max: usize) {
    if s.len() > max {
        let keep = floor_char_boundary(s, max.saturating_sub('…'.len_utf8()));
        s.truncate(keep);
        s.push('…');
    }
}

/// The largest index `<= i` that is a character boundary of `s`.
pub fn floor_char_boundary(s: &str, i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    let mut i = i;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Rule {
        #[serde(default)]
        tenant: Option<String>,
    }

    #[test]
    fn only_objects_are_requests() {
        for (body, kind) in [
            ("[]", "an array"),
            ("[\"acme\"]", "an array"),
            ("\"acme\"", "a string"),
            ("3", "a number"),
            ("null", "null"),
            ("true", "a boolean"),
        ] {
            assert_eq!(
                object::<Rule>(body.as_bytes()),
                Err(DecodeError::NotObject(kind)),
                "{body}"
            );
        }
        assert_eq!(object::<Rule>(b"{}"), Ok(Rule::default()));
        assert_eq!(object_or_empty::<Rule>(b"  \n"), Ok(Rule::default()));
        assert!(matches!(
            object_or_empty::<Rule>(b"[]"),
            Err(DecodeError::NotObject(_))
        ));
    }

    #[test]
    fn a_key_may_appear_once_at_any_depth() {
        let e = object::<Value>(br#"{"tenant":"a","tenant":"b"}"#).unwrap_err();
        assert_eq!(e, DecodeError::DuplicateKey("\"tenant\"".into()));
        let e = object::<Value>(br#"{"x":[{"k":1,"k":2}]}"#).unwrap_err();
        assert_eq!(e, DecodeError::DuplicateKey("\"k\"".into()));
        // Escapes are decoded before comparing: "t" and "\u0074" are one key.
        let e = object::<Value>(br#"{"t":1,"\u0074":2}"#).unwrap_err();
        assert!(matches!(e, DecodeError::DuplicateKey(_)), "{e:?}");
        assert!(object::<Value>(br#"{"a":{"k":1},"b":{"k":1}}"#).is_ok());
    }

    #[test]
    fn syntax_errors_and_trailing_bytes_are_syntax_errors() {
        assert!(matches!(
            object::<Value>(b"{\"a\":"),
            Err(DecodeError::Syntax(_))
        ));
        assert!(matches!(
            object::<Value>(b"{} {}"),
            Err(DecodeError::Syntax(_))
        ));
        assert!(matches!(
            object::<Value>(&[0xff, 0xfe, b'{']),
            Err(DecodeError::Syntax(_))
        ));
    }

    #[test]
    fn shape_errors_quote_little_of_the_input() {
        let body = format!(r#"{{"tenant": 1, "{}": 2}}"#, "k".repeat(100_000));
        let e = object::<Rule>(body.as_bytes()).unwrap_err();
        assert!(matches!(e, DecodeError::Shape(_)));
        assert!(e.to_string().len() <= 400, "{}", e.to_string().len());
        let body = format!(r#"{{"{}": 1, "{0}": 2}}"#, "k".repeat(100_000));
        let e = object::<Value>(body.as_bytes()).unwrap_err();
        assert!(e.to_string().len() < 200, "{e}");
    }

    #[test]
    fn echoes_are_short_and_say_how_long_the_input_was() {
        assert_eq!(echo("acme"), "\"acme\"");
        let long = "é".repeat(1000);
        let e = echo(&long);
        assert!(e.len() < MAX_ECHO_BYTES + 30, "{e}");
        assert!(e.ends_with("(2000 bytes)"), "{e}");
        assert_eq!(
            echo_value(&Value::Array(vec![Value::Null; 100])),
            "a list of 100 items"
        );
        assert_eq!(cut("abcdef", 4), "a…");
        assert_eq!(cut("abc", 4), "abc");
    }
}

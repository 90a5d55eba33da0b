//! Names that travel: tenants, task ids, capabilities, regions.
//!
//! Each is a newtype that can only be built by parsing, so code holding a
//! [`Tenant`] never checks it again, and the rule of each name and the
//! error that quotes a bad one (bounded, see [`crate::strict::echo`]) are
//! written once, here. They are also subject tokens, which is why they are
//! so narrow: a `.`, `*` or `>` in a tenant would change which subjects a
//! message lands on.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

use crate::config::is_token;
use crate::strict::echo;

/// Longest tenant name.
pub const MAX_TENANT_LEN: usize = 64;
/// Longest task id.
pub const MAX_ID_LEN: usize = 64;
/// Longest capability or region name.
pub const MAX_NAME_LEN: usize = 32;

/// A name that did not parse; its message says the rule and quotes (a
/// bounded prefix of) the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must match {rule}, got {got}")]
pub struct NameError {
    /// Which kind of name: `tenant`, `id`, `capability`, `region`.
    pub what: &'static str,
    /// The rule, as a pattern.
    pub rule: &'static str,
    /// The bounded quote of the input.
    pub got: String,
    /// Whether the input was only too long (otherwise well-formed).
    pub too_long: bool,
}

macro_rules! name {
    ($(#[$doc:meta])* $ty:ident, $what:literal, $rule:literal, $max:expr, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// The rule, as a pattern (for messages and docs).
            pub const RULE: &'static str = $rule;

            /// Parses a name, or says what is wrong with it.
            pub fn parse(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                let check: fn(&str) -> bool = $check;
                if check(&s) {
                    return Ok(Self(s));
                }
                let too_long = s.len() > $max && check(&s[..crate::strict::floor_char_boundary(&s, $max)]);
                Err(NameError {
                    what: $what,
                    rule: $rule,
                    got: echo(&s),
                    too_long,
                })
            }

            /// Whether `s` is a valid name of this kind.
            pub fn is_valid(s: &str) -> bool {
                let check: fn(&str) -> bool = $check;
                check(s)
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<String> for $ty {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    };
}

name!(
    /// A tenant: `[a-z0-9][a-z0-9_-]{0,63}`.
    Tenant,
    "tenant",
    "[a-z0-9][a-z0-9_-]{0,63}",
    MAX_TENANT_LEN,
    |s| is_token(s, MAX_TENANT_LEN)
);

name!(
    /// A task id: `[A-Za-z0-9_-]{1,64}`.
    TaskId,
    "id",
    "[A-Za-z0-9_-]{1,64}",
    MAX_ID_LEN,
    |s| !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
);

name!(
    /// A capability: `[a-z0-9][a-z0-9_-]{0,31}`.
    Capability,
    "capability",
    "[a-z0-9][a-z0-9_-]{0,31}",
    MAX_NAME_LEN,
    |s| is_token(s, MAX_NAME_LEN)
);

name!(
    /// A region: `[a-z0-9][a-z0-9_-]{0,31}`.
    Region,
    "region",
    "[a-z0-9][a-z0-9_-]{0,31}",
    MAX_NAME_LEN,
    |s| is_token(s, MAX_NAME_LEN)
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_once_and_say_what_is_wrong_in_bounded_words() {
        assert_eq!(Tenant::parse("acme").unwrap().as_str(), "acme");
        assert!(Tenant::parse("a.b").is_err());
        assert!(Tenant::parse("").is_err());
        let e = Tenant::parse("x".repeat(1_000_000)).unwrap_err();
        assert!(e.too_long);
        assert!(e.to_string().len() < 200, "{e}");
        let e = TaskId::parse("a b").unwrap_err();
        assert!(!e.too_long);
        assert_eq!(
            e.to_string(),
            "id must match [A-Za-z0-9_-]{1,64}, got \"a b\""
        );
        assert!(TaskId::is_valid("Report-42_x"));
        assert!(Capability::parse("Code").is_err());
        assert!(Region::parse("eu-west").is_ok());
    }

    #[test]
    fn names_decode_only_when_valid() {
        let t: Tenant = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(t, *"acme");
        assert!(serde_json::from_str::<Tenant>("\"ACME\"").is_err());
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"acme\"");
    }
}

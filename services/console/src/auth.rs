//! Who is calling, and what they may do.
//!
//! A call carries `Authorization: Bearer <token>`. The console hashes the
//! token with SHA-256 and compares the hash with every configured one in
//! constant time (all of them, every time), so neither the comparison nor
//! the position of a match tells anything about a token. A missing or
//! unknown token is `401 unauthorized`; an address that fails too often is
//! refused with `429 rate_limited` for a while, before its token is even
//! looked at.
//!
//! | role | may |
//! |---|---|
//! | `admin` | everything |
//! | `operator` | every tenant's tasks, agents, queues, alerts; mutations too |
//! | `tenant` | its own tasks only (another tenant's task is `404`), submit and cancel them |
//! | `read_only` | read everything an operator reads; no mutation |

use std::net::IpAddr;
use std::num::NonZeroU32;

use clawfleet_shared::{ErrorBody, ErrorCode};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Token;

/// A token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// All tenants' work, no configuration.
    Operator,
    /// One tenant's own tasks.
    Tenant,
    /// Reads only.
    ReadOnly,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Tenant => "tenant",
            Role::ReadOnly => "read_only",
        }
    }
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// For a tenant token, its tenant.
    pub tenant: Option<String>,
}

impl Principal {
    /// `forbidden` unless the caller may change things.
    pub fn may_mutate(&self, read_only_console: bool) -> Result<(), ErrorBody> {
        if read_only_console {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                "this console is read-only",
            ));
        }
        if self.role == Role::ReadOnly {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                format!("token {:?} is read-only", self.name),
            ));
        }
        Ok(())
    }

    /// `forbidden` for a tenant token: the fleet-wide views are not a tenant's.
    pub fn fleet_wide(&self) -> Result<(), ErrorBody> {
        if self.role == Role::Tenant {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                "a tenant token sees its own tasks only",
            ));
        }
        Ok(())
    }
}

/// The configured tokens, and the failed attempts per address.
pub struct Tokens {
    known: Vec<([u8; 32], Token)>,
    failures: DefaultKeyedRateLimiter<IpAddr>,
}

impl Tokens {
    /// From the configuration (already validated).
    pub fn new(tokens: &[Token], failures_per_minute: u32) -> Tokens {
        let known = tokens
            .iter()
            .filter_map(|t| Some((parse_hash(&t.sha256)?, t.clone())))
            .collect();
        let per_minute = NonZeroU32::new(failures_per_minute).unwrap_or(NonZeroU32::MIN);
        Tokens {
            known,
            failures: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }
    }

    /// Who presents `header` (the `Authorization` value) from `from`.
    pub fn check(&self, header: Option<&str>, from: IpAddr) -> Result<Principal, ErrorBody> {
        let presented = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 512);
        let matched = presented.and_then(|token| {
            let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            // Every known hash is compared, in constant time each.
            let mut found = None;
            for (known, t) in &self.known {
                if constant_time_eq(known, &hash) {
                    found = Some(t);
                }
            }
            found
        });
        match matched {
            Some(t) => Ok(Principal {
                name: t.name.clone(),
                role: t.role,
                tenant: t.tenant.clone(),
            }),
            None => {
                if self.failures.check_key(&from).is_err() {
                    return Err(ErrorBody::new(
                        ErrorCode::RateLimited,
                        "too many failed authentications from this address; wait a minute",
                    ));
                }
                Err(ErrorBody::new(
                    ErrorCode::Unauthorized,
                    if presented.is_some() {
                        "unknown API token"
                    } else {
                        "an API token is required: Authorization: Bearer <token>"
                    },
                ))
            }
        }
    }

    /// Forgets addresses whose failures are long past (bounded memory).
    pub fn retain_recent(&self) {
        self.failures.retain_recent();
    }
}

/// A 64-hex-digit SHA-256.
pub fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// The SHA-256 of a token as the configuration holds it.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(
            &[
                Token {
                    name: "ops".into(),
                    sha256: hash_token("s3cret"),
                    role: Role::Operator,
                    tenant: None,
                },
                Token {
                    name: "acme".into(),
                    sha256: hash_token("acme-token"),
                    role: Role::Tenant,
                    tenant: Some("acme".into()),
                },
            ],
            3,
        )
    }

    #[test]
    fn a_known_token_names_its_holder_and_anything_else_is_unauthorized() {
        let t = tokens();
        let ip: IpAddr = [127, 0, 0, 1].into();
        let p = t.check(Some("Bearer acme-token"), ip).unwrap();
        assert_eq!((p.role, p.tenant.as_deref()), (Role::Tenant, Some("acme")));
        assert_eq!(
            t.check(Some("Bearer s3cret"), ip).unwrap().role,
            Role::Operator
        );
        let bad = [
            None,
            Some("Bearer"),
            Some("Basic s3cret"),
            Some("Bearer S3CRET"),
        ];
        for (i, header) in bad.into_iter().enumerate() {
            let from: IpAddr = [10, 0, 0, i as u8].into();
            assert_eq!(
                t.check(header, from).unwrap_err().code,
                ErrorCode::Unauthorized,
                "{header:?}"
            );
        }
    }

    #[test]
    fn an_address_that_keeps_failing_is_held_off_but_others_are_not() {
        let t = tokens();
        let bad: IpAddr = [192, 0, 2, 1].into();
        for _ in 0..3 {
            assert_eq!(
                t.check(Some("Bearer x"), bad).unwrap_err().code,
                ErrorCode::Unauthorized
            );
        }
        assert_eq!(
            t.check(Some("Bearer x"), bad).unwrap_err().code,
            ErrorCode::RateLimited
        );
        // A valid token still works, and another address is not held off.
        assert!(t.check(Some("Bearer s3cret"), bad).is_ok());
        assert_eq!(
            t.check(Some("Bearer x"), [192, 0, 2, 2].into())
                .unwrap_err()
                .code,
            ErrorCode::Unauthorized
        );
    }

    #[test]
    fn hashes_parse_from_hex_only() {
        assert!(parse_hash(&hash_token("a")).is_some());
        assert!(parse_hash("zz").is_none());
        assert!(parse_hash(&"g".repeat(64)).is_none());
    }
}

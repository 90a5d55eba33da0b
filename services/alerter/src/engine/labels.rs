//! Label sets: the identity of an alert.
//!
//! An alert *is* its labels: two results with the same label set are the same
//! alert, and the set's fingerprint is its key everywhere (the alert book,
//! aggregation groups, the notification log, webhook payloads). The
//! fingerprint is computed the way Prometheus computes
//! `model.LabelSet.Fingerprint`, so the fingerprint in a clawfleet webhook is
//! the one Alertmanager would show for the same labels.
//!
//! Labels can come from what agents report, so they are bounded: a label set
//! that is too large or malformed is refused rather than stored.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use thiserror::Error;

/// A label set (or an annotation set): name → value, kept sorted by name so
/// that hashing, printing and comparing need no extra sort.
pub type Labels = BTreeMap<String, String>;

/// Most labels one alert may carry. Prometheus has no limit; a bound keeps a
/// hostile or buggy source from making single alerts arbitrarily large.
pub const MAX_LABELS: usize = 32;
/// Longest label name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest label value, in bytes.
pub const MAX_VALUE_LEN: usize = 1024;
/// Longest annotation value, in bytes: annotations are rendered templates,
/// which [`crate::engine::template::render`] bounds to the same size.
pub const MAX_ANNOTATION_LEN: usize = 4096;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Prometheus's `model.SeparatorByte`: it cannot occur in UTF-8 text, so
/// `{a="bc"}` and `{ab="c"}` hash differently.
const SEPARATOR: u8 = 0xff;

/// Why a label set was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LabelError {
    /// More than [`MAX_LABELS`] labels.
    #[error("{count} labels, at most {MAX_LABELS} are allowed")]
    TooMany {
        /// How many labels the set had.
        count: usize,
    },
    /// A name outside Prometheus's label-name syntax.
    #[error("invalid label name {name:?}: names match [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidName {
        /// The name (its first bytes, if it was long).
        name: String,
    },
    /// A name longer than [`MAX_NAME_LEN`].
    #[error("label name {name:?}… is longer than {MAX_NAME_LEN} bytes")]
    NameTooLong {
        /// The name's first bytes.
        name: String,
    },
    /// A value longer than [`MAX_VALUE_LEN`].
    #[error("the value of label {name:?} is longer than {MAX_VALUE_LEN} bytes")]
    ValueTooLong {
        /// The label whose value is too long.
        name: String,
    },
}

/// The 64-bit fingerprint of a label set: FNV-1a over `name 0xff value 0xff`
/// for every pair in name order, exactly as Prometheus's
/// `model.LabelSet.Fingerprint`. The empty set hashes to the FNV offset basis.
pub fn fingerprint_u64(labels: &Labels) -> u64 {
    let mut hash = FNV_OFFSET_BASIS;
    let mut add = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
    };
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[SEPARATOR]);
        add(value.as_bytes());
        add(&[SEPARATOR]);
    }
    hash
}

/// The fingerprint as Prometheus and Alertmanager print it: 16 lowercase hex
/// digits (`%016x`).
pub fn fingerprint(labels: &Labels) -> String {
    format!("{:016x}", fingerprint_u64(labels))
}

/// Whether `name` follows Prometheus's label-name syntax
/// `[a-zA-Z_][a-zA-Z0-9_]*` (length is checked by [`validate_name`]).
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(first) if first.is_ascii_alphabetic() || first == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks one label name: syntax and length.
pub fn validate_name(name: &str) -> Result<(), LabelError> {
    if name.len() > MAX_NAME_LEN {
        return Err(LabelError::NameTooLong {
            name: excerpt(name),
        });
    }
    if !is_valid_name(name) {
        return Err(LabelError::InvalidName {
            name: excerpt(name),
        });
    }
    Ok(())
}

/// Checks a label set against the syntax and the bounds: at most
/// [`MAX_LABELS`] labels, names valid and at most [`MAX_NAME_LEN`] bytes,
/// values at most [`MAX_VALUE_LEN`] bytes. Empty values are allowed (and, as
/// in Prometheus, mean the same as an absent label to matchers).
pub fn validate(labels: &Labels) -> Result<(), LabelError> {
    if labels.len() > MAX_LABELS {
        return Err(LabelError::TooMany {
            count: labels.len(),
        });
    }
    for (name, value) in labels {
        validate_name(name)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(LabelError::ValueTooLong { name: name.clone() });
        }
    }
    Ok(())
}

/// Brings an annotation set within bounds instead of refusing it: entries
/// with invalid names are left out, at most [`MAX_LABELS`] are kept, and
/// values are cut to [`MAX_ANNOTATION_LEN`] bytes. Annotations only describe
/// an alert, so a long description should shorten, not silence, the alert.
pub fn bound_annotations(annotations: Labels) -> Labels {
    annotations
        .into_iter()
        .filter(|(name, _)| validate_name(name).is_ok())
        .take(MAX_LABELS)
        .map(|(name, mut value)| {
            truncate(&mut value, MAX_ANNOTATION_LEN);
            (name, value)
        })
        .collect()
}

/// The order Alertmanager gives the alerts of a notification
/// (`types.AlertSlice`): by `job`, then by `instance` (alerts having the
/// label first), then by label set (smaller sets first, then by the first
/// label name where the sets differ).
pub fn alert_order(a: &Labels, b: &Labels) -> Ordering {
    for key in ["job", "instance"] {
        match (a.get(key), b.get(key)) {
            (None, None) => {}
            (None, Some(_)) => return Ordering::Greater,
            (Some(_), None) => return Ordering::Less,
            (Some(x), Some(y)) if x != y => return x.cmp(y),
            (Some(_), Some(_)) => {}
        }
    }
    match a.len().cmp(&b.len()) {
        Ordering::Equal => {}
        unequal => return unequal,
    }
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        match (a.get(name), b.get(name)) {
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x != y => return x.cmp(y),
            (Some(_), Some(_)) => {}
        }
    }
    Ordering::Equal
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
pub(crate) fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// The first bytes of a possibly hostile string, for error messages.
pub(crate) fn excerpt(s: &str) -> String {
    let mut out = s.to_owned();
    truncate(&mut out, 64);
    out
}

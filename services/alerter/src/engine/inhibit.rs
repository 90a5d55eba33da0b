//! Inhibition: a firing alert muting related ones, as in Alertmanager.
//!
//! The classic use: while `severity="critical"` fires for a cluster, mute its
//! `severity="warning"` alerts. An inhibit rule says which alerts can mute
//! (`source_matchers`), which can be muted (`target_matchers`) and which
//! labels the two must share (`equal`, e.g. `["cluster"]`). Like silences,
//! inhibition only keeps alerts out of notifications.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::labels::{validate_name, LabelError, Labels};
use super::matcher::{all_match, Matcher};

/// Most matchers on either side of a rule, and most `equal` labels.
pub const MAX_INHIBIT_MATCHERS: usize = 32;

/// One inhibit rule (`inhibit_rules` entries in Alertmanager's config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRule {
    /// What a firing alert must match to mute others.
    #[serde(default)]
    pub source_matchers: Vec<Matcher>,
    /// What an alert must match to be muted.
    #[serde(default)]
    pub target_matchers: Vec<Matcher>,
    /// Labels source and target must have equal values for (both lacking a
    /// label counts as equal).
    #[serde(default)]
    pub equal: Vec<String>,
}

/// Why an inhibit rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InhibitError {
    /// More than [`MAX_INHIBIT_MATCHERS`] matchers on a side, or `equal`
    /// labels.
    #[error("an inhibit rule has at most {MAX_INHIBIT_MATCHERS} matchers per side and {MAX_INHIBIT_MATCHERS} equal labels")]
    TooLarge,
    /// An `equal` entry is not a valid label name.
    #[error("equal: {0}")]
    EqualLabel(#[from] LabelError),
}

impl InhibitRule {
    /// Checks a rule before accepting it.
    pub fn validate(&self) -> Result<(), InhibitError> {
        if self.source_matchers.len() > MAX_INHIBIT_MATCHERS
            || self.target_matchers.len() > MAX_INHIBIT_MATCHERS
            || self.equal.len() > MAX_INHIBIT_MATCHERS
        {
            return Err(InhibitError::TooLarge);
        }
        for name in &self.equal {
            validate_name(name)?;
        }
        Ok(())
    }

    /// Whether this rule mutes `target`, given the labels of the alerts
    /// firing now.
    ///
    /// As in Alertmanager, when the target matches the source side too, a
    /// source that also matches the target side cannot mute it: two alerts
    /// that each match both sides would otherwise mute each other (and an
    /// alert would mute itself).
    pub fn inhibits(&self, target: &Labels, firing: &[&Labels]) -> bool {
        if !all_match(&self.target_matchers, target) {
            return false;
        }
        let two_sided = all_match(&self.source_matchers, target);
        firing.iter().any(|source| {
            all_match(&self.source_matchers, source)
                && self.equal.iter().all(|name| {
                    source.get(name).map_or("", String::as_str)
                        == target.get(name).map_or("", String::as_str)
                })
                && !(two_sided && all_match(&self.target_matchers, source))
        })
    }
}

/// Whether any rule mutes `target`, given the labels of the alerts firing
/// now (muted ones included: a silenced critical alert still inhibits its
/// warnings, as in Alertmanager).
pub fn inhibited(rules: &[InhibitRule], target: &Labels, firing: &[&Labels]) -> bool {
    rules.iter().any(|rule| rule.inhibits(target, firing))
}

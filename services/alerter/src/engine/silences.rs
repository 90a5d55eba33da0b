//! Silences: operator-made, time-bounded mutes, as in Alertmanager.
//!
//! A silence mutes every alert that all its matchers match while it is
//! active (from `starts_at` until `ends_at`). Silences are never deleted,
//! only expired (their end moved to now), so their history stays readable.
//! A silenced alert still fires and is still tracked; it is only left out of
//! notifications.

use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;

use super::labels::Labels;
use super::matcher::{all_match, Matcher};

/// Most matchers one silence may have.
pub const MAX_SILENCE_MATCHERS: usize = 32;
/// Longest silence id, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest `created_by`, in bytes.
pub const MAX_CREATED_BY_LEN: usize = 128;
/// Longest comment, in bytes.
pub const MAX_COMMENT_LEN: usize = 1024;

/// One silence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// Its id, chosen by the service (a ULID, say).
    pub id: String,
    /// The alerts it mutes: those all of these match.
    pub matchers: Vec<Matcher>,
    /// When it starts muting.
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    /// When it stops muting.
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    /// Who made it.
    pub created_by: String,
    /// Why (a ticket, an incident…).
    pub comment: String,
    /// When it was last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Where a silence is in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    /// Not started yet.
    Pending,
    /// Muting.
    Active,
    /// Over (ended or expired).
    Expired,
}

/// Why a silence was refused, or could not be expired.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SilenceError {
    /// No id, or one over [`MAX_ID_LEN`] bytes.
    #[error("a silence needs an id of 1 to {MAX_ID_LEN} bytes")]
    BadId,
    /// No matcher.
    #[error("a silence needs at least one matcher")]
    NoMatchers,
    /// More than [`MAX_SILENCE_MATCHERS`] matchers.
    #[error("{count} matchers, at most {MAX_SILENCE_MATCHERS} are allowed")]
    TooManyMatchers {
        /// How many it had.
        count: usize,
    },
    /// Every matcher accepts the empty string, so the silence would mute
    /// every alert (Alertmanager refuses these too).
    #[error("at least one matcher must not match the empty string, or the silence would mute every alert")]
    MatchesEverything,
    /// `ends_at` is not after `starts_at`.
    #[error("a silence must end after it starts")]
    EndNotAfterStart,
    /// `created_by` is empty or over [`MAX_CREATED_BY_LEN`] bytes.
    #[error("created_by must be 1 to {MAX_CREATED_BY_LEN} bytes")]
    BadCreatedBy,
    /// The comment is empty or over [`MAX_COMMENT_LEN`] bytes.
    #[error("the comment must be 1 to {MAX_COMMENT_LEN} bytes")]
    BadComment,
    /// Expiring a silence that is already over.
    #[error("silence already expired")]
    AlreadyExpired,
}

impl Silence {
    /// Checks a silence before accepting it.
    pub fn validate(&self) -> Result<(), SilenceError> {
        if self.id.is_empty() || self.id.len() > MAX_ID_LEN {
            return Err(SilenceError::BadId);
        }
        if self.matchers.is_empty() {
            return Err(SilenceError::NoMatchers);
        }
        if self.matchers.len() > MAX_SILENCE_MATCHERS {
            return Err(SilenceError::TooManyMatchers {
                count: self.matchers.len(),
            });
        }
        if self.matchers.iter().all(Matcher::matches_empty) {
            return Err(SilenceError::MatchesEverything);
        }
        if self.ends_at <= self.starts_at {
            return Err(SilenceError::EndNotAfterStart);
        }
        if self.created_by.is_empty() || self.created_by.len() > MAX_CREATED_BY_LEN {
            return Err(SilenceError::BadCreatedBy);
        }
        if self.comment.is_empty() || self.comment.len() > MAX_COMMENT_LEN {
            return Err(SilenceError::BadComment);
        }
        Ok(())
    }

    /// Where the silence is at `now`: active from `starts_at` (included) to
    /// `ends_at` (excluded).
    pub fn state(&self, now: OffsetDateTime) -> SilenceState {
        if now < self.starts_at {
            SilenceState::Pending
        } else if now < self.ends_at {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }

    /// Whether the silence mutes an alert with these labels at `now`.
    pub fn mutes(&self, labels: &Labels, now: OffsetDateTime) -> bool {
        self.state(now) == SilenceState::Active && all_match(&self.matchers, labels)
    }

    /// Ends the silence now, as Alertmanager's expire does: an active
    /// silence ends at `now`; a pending one is moved to start and end at
    /// `now`, so it never mutes. An expired silence cannot be expired again.
    pub fn expire(&mut self, now: OffsetDateTime) -> Result<(), SilenceError> {
        match self.state(now) {
            SilenceState::Expired => return Err(SilenceError::AlreadyExpired),
            SilenceState::Active => self.ends_at = now,
            SilenceState::Pending => {
                self.starts_at = now;
                self.ends_at = now;
            }
        }
        self.updated_at = now;
        Ok(())
    }
}

/// The ids of the silences muting an alert with these labels at `now`
/// (what Alertmanager's API shows as `silencedBy`); empty when none does.
pub fn silenced_by<'a>(
    silences: &'a [Silence],
    labels: &Labels,
    now: OffsetDateTime,
) -> Vec<&'a str> {
    silences
        .iter()
        .filter(|s| s.mutes(labels, now))
        .map(|s| s.id.as_str())
        .collect()
}

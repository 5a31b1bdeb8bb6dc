//! Per-user behaviour: the profile the caller keeps between assessments.
//!
//! State in, state out: the guard reads the profile from the context and returns the updated
//! one; it stores nothing. This first version counts; the behaviour analysis builds on the same
//! record.

use serde::{Deserialize, Serialize};

use crate::contract::{Action, Level};
use crate::time::Timestamp;

/// The profile format this guard writes.
pub const PROFILE_VERSION: u32 = 1;

/// What the guard remembers about one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Format version.
    pub version: u32,
    /// Assessments of this user's input so far.
    pub assessments: u64,
    /// Of those, how many were quarantined or blocked.
    pub stopped: u64,
    /// Of those, how many reached `medium` or above.
    pub elevated: u64,
    /// Time of the last assessment, RFC 3339 UTC.
    pub last_seen: Option<String>,
    /// Level of the last assessment.
    pub last_level: Option<Level>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            version: PROFILE_VERSION,
            assessments: 0,
            stopped: 0,
            elevated: 0,
            last_seen: None,
            last_level: None,
        }
    }
}

impl Profile {
    /// The profile after one more assessment. `now` is kept only if it is not earlier than the
    /// last time seen, so a replayed old request cannot move the clock back.
    pub fn updated(&self, level: Level, action: Action, now: Option<Timestamp>) -> Profile {
        let last = self
            .last_seen
            .as_deref()
            .and_then(|s| Timestamp::parse(s).ok());
        let last_seen = match (now, last) {
            (Some(now), Some(last)) if now < last => self.last_seen.clone(),
            (Some(now), _) => Some(now.to_string()),
            (None, _) => self.last_seen.clone(),
        };
        Profile {
            version: PROFILE_VERSION,
            assessments: self.assessments.saturating_add(1),
            stopped: self.stopped.saturating_add(u64::from(action.stops())),
            elevated: self
                .elevated
                .saturating_add(u64::from(level >= Level::Medium)),
            last_seen,
            last_level: Some(level),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_keeps_the_latest_time() {
        let now = Timestamp::parse("2026-12-03T10:00:00Z").ok();
        let earlier = Timestamp::parse("2026-12-01T10:00:00Z").ok();
        let p = Profile::default().updated(Level::High, Action::Quarantine, now);
        assert_eq!((p.assessments, p.stopped, p.elevated), (1, 1, 1));
        let q = p.updated(Level::VeryLow, Action::Allow, earlier);
        assert_eq!((q.assessments, q.stopped, q.elevated), (2, 1, 1));
        assert_eq!(q.last_seen.as_deref(), Some("2026-12-03T10:00:00Z"));
    }
}

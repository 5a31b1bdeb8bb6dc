//! Per-user behaviour: the profile the caller keeps between assessments, and the signals it
//! gives.
//!
//! State in, state out: [`observe`] takes a profile and one event (when, a sketch of the text,
//! how the content alone scored) and returns the new profile and the behaviour signals; the
//! guard stores nothing. The profile holds counts, exponentially decaying rates, inter-arrival
//! statistics and the sketches of a few recently flagged prompts — never text.
//!
//! Signals feed the fused risk with a bounded weight ([`BehaviourPolicy::max_weight`]): together
//! they add at most that much evidence, so behaviour can lift a medium prompt to high but never
//! makes an innocent prompt critical by itself. A prompt counts as flagged by its content alone
//! (before behaviour), so behaviour never feeds on its own verdicts.

mod sketch;

use serde::{Deserialize, Serialize};

pub use sketch::{Sketch, Sketcher, BINS as SKETCH_BINS, SKETCH_BYTES};

use crate::contract::{Action, Level, Signal};
use crate::risk::round4;
use crate::time::Timestamp;

/// The profile format this guard writes.
pub const PROFILE_VERSION: u32 = 2;

/// Flagged prompts whose sketches a profile keeps, newest last.
pub const MAX_FLAGGED: usize = 8;

/// Half-life of the per-minute rate, in seconds.
const MINUTE: f64 = 60.0;
/// Half-life of the hourly counts, in seconds.
const HOUR: f64 = 3_600.0;
/// A request this many seconds or more before the last one seen means the last time was wrong.
const MAX_SKEW: i64 = 3_600;

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
    /// Time of the first assessment, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    /// Time of the last assessment, RFC 3339 UTC.
    pub last_seen: Option<String>,
    /// Level of the last assessment.
    pub last_level: Option<Level>,
    /// Requests, decayed with a one-minute half-life.
    #[serde(default)]
    pub rate_minute: f64,
    /// Requests, decayed with a one-hour half-life.
    #[serde(default)]
    pub rate_hour: f64,
    /// Flagged requests (content at `medium` or above), decayed with a one-hour half-life.
    #[serde(default)]
    pub flagged_hour: f64,
    /// Flagged requests, decayed with the policy's memory half-life (hours).
    #[serde(default)]
    pub flagged_memory: f64,
    /// Flagged requests in a row, up to now.
    #[serde(default)]
    pub streak: u32,
    /// Moving mean of the seconds between requests.
    #[serde(default)]
    pub gap_mean: f64,
    /// Moving variance of the seconds between requests.
    #[serde(default)]
    pub gap_var: f64,
    /// Gaps seen (capped).
    #[serde(default)]
    pub gaps: u32,
    /// The last flagged prompts: in JSON one base64url string of 43 bytes each (sketch, time,
    /// level), which a profile read on every request parses far faster than as objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "flagged_codec")]
    pub flagged: Vec<FlaggedPrompt>,
}

/// A flagged prompt as a profile remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlaggedPrompt {
    /// Its sketch.
    pub sketch: Sketch,
    /// When, Unix seconds.
    pub at: i64,
    /// The level its content alone reached.
    pub level: Level,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            version: PROFILE_VERSION,
            assessments: 0,
            stopped: 0,
            elevated: 0,
            first_seen: None,
            last_seen: None,
            last_level: None,
            rate_minute: 0.0,
            rate_hour: 0.0,
            flagged_hour: 0.0,
            flagged_memory: 0.0,
            streak: 0,
            gap_mean: 0.0,
            gap_var: 0.0,
            gaps: 0,
            flagged: Vec::new(),
        }
    }
}

/// The flagged prompts of a profile as one string: for each, the sketch (32 bins and a 2-byte
/// count of 4-grams), the time as 8 bytes big-endian, and the level as one byte (0 `very_low`
/// to 4 `critical`).
mod flagged_codec {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    use super::{FlaggedPrompt, Level, Sketch, MAX_FLAGGED, SKETCH_BYTES};

    const ENTRY: usize = SKETCH_BYTES + 8 + 1;

    pub(super) fn serialize<S: serde::Serializer>(
        flagged: &[FlaggedPrompt],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(flagged.len() * ENTRY);
        for f in flagged {
            bytes.extend_from_slice(&f.sketch.to_bytes());
            bytes.extend_from_slice(&f.at.to_be_bytes());
            let level = Level::ALL.iter().position(|l| *l == f.level).unwrap_or(0);
            bytes.push(level as u8);
        }
        serializer.serialize_str(&URL_SAFE_NO_PAD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<FlaggedPrompt>, D::Error> {
        use serde::de::Error as _;
        let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
        if text.len() > (MAX_FLAGGED * ENTRY).div_ceil(3) * 4 {
            return Err(D::Error::custom("`flagged` holds more than 8 prompts"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(|_| D::Error::custom("`flagged` is not unpadded base64url"))?;
        if bytes.len() % ENTRY != 0 {
            return Err(D::Error::custom("`flagged` is not whole entries"));
        }
        bytes
            .chunks_exact(ENTRY)
            .map(|entry| {
                let (sketch, rest) = entry.split_at(SKETCH_BYTES);
                let (at, level) = rest.split_at(8);
                let sketch = Sketch::from_bytes(sketch)
                    .ok_or_else(|| D::Error::custom("`flagged` has a bad sketch"))?;
                let at = i64::from_be_bytes(
                    at.try_into()
                        .map_err(|_| D::Error::custom("`flagged` has a bad time"))?,
                );
                let level = level
                    .first()
                    .and_then(|l| Level::ALL.get(usize::from(*l)))
                    .copied()
                    .ok_or_else(|| D::Error::custom("`flagged` has a bad level"))?;
                Ok(FlaggedPrompt { sketch, at, level })
            })
            .collect()
    }
}

/// How behaviour is judged: `policy.behaviour`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BehaviourPolicy {
    /// Whether behaviour signals count at all (the profile is kept either way).
    pub enabled: bool,
    /// The most evidence all signals together may add, in [0, 0.8].
    pub max_weight: f64,
    /// Requests per minute from which a burst is signalled.
    pub burst_per_minute: f64,
    /// Requests per hour from which volume is signalled.
    pub volume_per_hour: f64,
    /// Gaps between requests needed before timing is judged.
    pub min_gaps: u32,
    /// Timing this regular (standard deviation over mean of the gaps) or more looks scripted.
    pub regular_cv: f64,
    /// Flagged requests in a row from which a streak is signalled.
    pub streak: u32,
    /// Similarity from which a prompt is a variation of a flagged one.
    pub probe_similarity: f64,
    /// Half-life, in hours, of the memory of flagged requests (slow, patient attempts).
    pub memory_hours: f64,
    /// Decayed flagged requests in memory from which persistence is signalled.
    pub persistence: f64,
}

impl Default for BehaviourPolicy {
    fn default() -> Self {
        BehaviourPolicy {
            enabled: true,
            max_weight: 0.5,
            burst_per_minute: 20.0,
            volume_per_hour: 600.0,
            min_gaps: 8,
            regular_cv: 0.15,
            streak: 3,
            probe_similarity: 0.45,
            memory_hours: 6.0,
            persistence: 1.5,
        }
    }
}

impl BehaviourPolicy {
    /// Checks every bound; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let within = |name: &str, v: f64, lo: f64, hi: f64| {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("`{name}` {v} is not within [{lo}, {hi}]"))
            }
        };
        within("max_weight", self.max_weight, 0.0, 0.8)?;
        within("burst_per_minute", self.burst_per_minute, 1.0, 1e6)?;
        within("volume_per_hour", self.volume_per_hour, 1.0, 1e8)?;
        within("regular_cv", self.regular_cv, 0.0, 1.0)?;
        within("probe_similarity", self.probe_similarity, 0.1, 1.0)?;
        within("memory_hours", self.memory_hours, 0.1, 720.0)?;
        within("persistence", self.persistence, 1.0, 100.0)?;
        if !(2..=1000).contains(&self.min_gaps) {
            return Err(format!(
                "`min_gaps` {} is not within [2, 1000]",
                self.min_gaps
            ));
        }
        if !(2..=1000).contains(&self.streak) {
            return Err(format!("`streak` {} is not within [2, 1000]", self.streak));
        }
        Ok(())
    }
}

/// One request, as behaviour sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    /// When (none: the clock was unreadable; rates and timing are left as they were).
    pub now: Option<Timestamp>,
    /// A sketch of the text, if it was long enough.
    pub sketch: Option<Sketch>,
    /// The level the content alone reached (rules and model, before behaviour).
    pub content_level: Level,
}

/// What [`observe`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The profile with the event in it.
    pub profile: Profile,
    /// The signals, strongest first, weights scaled so that together they add at most
    /// [`BehaviourPolicy::max_weight`].
    pub signals: Vec<Signal>,
}

/// `value` decayed over `seconds` with `half_life` seconds.
fn decay(value: f64, seconds: f64, half_life: f64) -> f64 {
    value * libm::exp2(-seconds / half_life)
}

/// A number from a profile the caller handed back: finite, not negative, not absurd.
fn sane(x: f64) -> f64 {
    if x.is_finite() {
        x.clamp(0.0, 1e12)
    } else {
        0.0
    }
}

/// A number for a message: rounded to a whole one, which prints cheaply and the same everywhere.
fn whole(x: f64) -> u64 {
    let x = sane(x);
    libm::round(x) as u64
}

/// Rounds what is stored, so profiles print the same everywhere and stay short.
fn stored(x: f64) -> f64 {
    round4(sane(x))
}

/// The profile after `event`, and the signals it gives. Pure: the same profile and event give
/// the same answer on every face.
pub fn observe(profile: &Profile, event: &Event, policy: &BehaviourPolicy) -> Observation {
    let last = profile
        .last_seen
        .as_deref()
        .and_then(|s| Timestamp::parse(s).ok());
    // A request a little older than the last one seen (out of order, a skewed clock) moves no
    // clock back, decays nothing and gives no gap. One far older means the last time seen was
    // wrong (a clock far ahead once): the profile's clock starts again from this request, or a
    // single future timestamp would freeze its rates for good.
    let behind = match (event.now, last) {
        (Some(now), Some(last)) => last.unix_seconds().saturating_sub(now.unix_seconds()),
        _ => 0,
    };
    let clock_reset = behind > MAX_SKEW;
    let (now, elapsed) = match (event.now, last) {
        (Some(now), Some(last)) if now >= last => (
            Some(now),
            Some(now.unix_seconds().saturating_sub(last.unix_seconds()) as f64),
        ),
        (Some(now), Some(_)) if clock_reset => (Some(now), None),
        (Some(_), Some(last)) => (Some(last), None),
        (Some(now), None) => (Some(now), None),
        (None, last) => (last, None),
    };
    let since = elapsed.unwrap_or(0.0);
    let memory_half_life = policy.memory_hours * HOUR;
    let flagged_now = event.content_level >= Level::Medium;
    let flag = f64::from(u8::from(flagged_now));

    let mut next = profile.clone();
    next.version = PROFILE_VERSION;
    next.assessments = profile.assessments.saturating_add(1);
    next.rate_minute = decay(sane(profile.rate_minute), since, MINUTE) + 1.0;
    next.rate_hour = decay(sane(profile.rate_hour), since, HOUR) + 1.0;
    next.flagged_hour = decay(sane(profile.flagged_hour), since, HOUR) + flag;
    next.flagged_memory = decay(sane(profile.flagged_memory), since, memory_half_life) + flag;
    next.streak = if flagged_now {
        profile.streak.saturating_add(1)
    } else {
        0
    };
    if let Some(gap) = elapsed {
        // Exponentially weighted mean and variance (West's update), so old habits fade.
        const ALPHA: f64 = 0.2;
        let mean = sane(profile.gap_mean);
        let var = sane(profile.gap_var);
        if profile.gaps == 0 {
            next.gap_mean = gap;
            next.gap_var = 0.0;
        } else {
            let diff = gap - mean;
            let increment = ALPHA * diff;
            next.gap_mean = mean + increment;
            next.gap_var = (1.0 - ALPHA) * (var + diff * increment);
        }
        next.gaps = profile.gaps.saturating_add(1).min(10_000);
    }
    if let Some(now) = now {
        next.last_seen = Some(now.to_string());
        if profile.first_seen.is_none() {
            next.first_seen = Some(now.to_string());
        }
    }
    if clock_reset {
        // Times recorded from the wrong clock are no guide to what is recent.
        let now = now.map_or(i64::MIN, Timestamp::unix_seconds);
        next.flagged.retain(|f| f.at <= now);
    }

    // Variations of earlier flagged prompts, judged against the profile as it was.
    let mut similar = 0usize;
    let mut closest: f64 = 0.0;
    let window = (4.0 * memory_half_life) as i64;
    if let (Some(sketch), Some(now)) = (&event.sketch, now) {
        // Only recent flagged prompts: a user is not a prober forever for one old attempt.
        let recent = next
            .flagged
            .iter()
            .filter(|f| now.unix_seconds().saturating_sub(f.at) <= window);
        for earlier in recent {
            if let Some(s) = sketch.resemblance(&earlier.sketch) {
                if s >= policy.probe_similarity {
                    similar += 1;
                    closest = closest.max(s);
                }
            }
        }
    }
    // Only the newest are kept.
    if let (true, Some(sketch), Some(now)) = (flagged_now, event.sketch, now) {
        next.flagged.push(FlaggedPrompt {
            sketch,
            at: now.unix_seconds(),
            level: event.content_level,
        });
    }
    let excess = next.flagged.len().saturating_sub(MAX_FLAGGED);
    next.flagged.drain(..excess);

    let mut signals = Vec::new();
    let mut signal = |id: &str, weight: f64, detail: String| {
        signals.push(Signal {
            id: id.to_string(),
            weight,
            detail,
        })
    };
    // A decayed count at a steady rate r settles at about r * half-life / ln 2, but only after a
    // few half-lives; the mean gap tells a steady sender's rate after a few requests.
    let settled = next.rate_minute * core::f64::consts::LN_2;
    // Eight gaps at least: a person sending a thought in a few quick lines is no burst.
    let from_gaps = if next.gaps >= 8 {
        MINUTE / next.gap_mean.max(0.5)
    } else {
        0.0
    };
    let per_minute = settled.max(from_gaps);
    if per_minute >= policy.burst_per_minute {
        let over = (per_minute / policy.burst_per_minute - 1.0).min(2.0) / 2.0;
        signal(
            "behaviour.burst",
            0.25 + 0.15 * over,
            format!("about {} requests a minute", whole(per_minute)),
        );
    }
    let per_hour = next.rate_hour * core::f64::consts::LN_2;
    if per_hour >= policy.volume_per_hour {
        let over = (per_hour / policy.volume_per_hour - 1.0).min(2.0) / 2.0;
        signal(
            "behaviour.volume",
            0.2 + 0.15 * over,
            format!("about {} requests an hour", whole(per_hour)),
        );
    }
    if next.gaps >= policy.min_gaps && next.gap_mean >= 1.0 && next.gap_mean <= 600.0 {
        let cv = libm::sqrt(sane(next.gap_var)) / next.gap_mean;
        if cv <= policy.regular_cv {
            signal(
                "behaviour.regular-timing",
                0.25,
                format!(
                    "requests every {} s with a spread of {}%: scripted",
                    whole(next.gap_mean),
                    whole(cv * 100.0)
                ),
            );
        }
    }
    if next.streak >= policy.streak {
        let more = f64::from(next.streak - policy.streak).min(4.0) / 4.0;
        signal(
            "behaviour.flagged-streak",
            0.2 + 0.2 * more,
            format!("{} flagged requests in a row", next.streak),
        );
    }
    // History of attempts weighs on a request that itself carries some risk, not on every
    // ordinary question in between.
    let some_risk = event.content_level >= Level::Low;
    if some_risk && next.flagged_hour >= 3.0 {
        let share = next.flagged_hour / next.rate_hour;
        if share >= 0.5 {
            signal(
                "behaviour.flagged-share",
                0.2 + 0.2 * ((share - 0.5) / 0.5).min(1.0),
                format!("{}% of recent requests were flagged", whole(share * 100.0)),
            );
        }
    }
    if similar > 0 {
        signal(
            "behaviour.probing",
            match similar {
                1 => 0.4,
                2 => 0.45,
                _ => 0.5,
            },
            format!(
                "a variation of {similar} earlier flagged prompt{} ({}% alike)",
                if similar == 1 { "" } else { "s" },
                whole(closest * 100.0)
            ),
        );
    }
    if some_risk && next.flagged_memory >= policy.persistence {
        let more = ((next.flagged_memory - policy.persistence) / 3.0).min(1.0);
        signal(
            "behaviour.persistence",
            0.3 + 0.15 * more,
            format!(
                "flagged attempts keep coming ({} in memory, half-life {} h)",
                whole(next.flagged_memory),
                whole(policy.memory_hours)
            ),
        );
    }
    // Rising severity: each of the last three flagged prompts worse than the one before, within
    // one memory half-life.
    if let (true, Some(now)) = (flagged_now, now) {
        let recent: Vec<Level> = next
            .flagged
            .iter()
            .rev()
            .take_while(|f| now.unix_seconds().saturating_sub(f.at) as f64 <= memory_half_life)
            .take(3)
            .map(|f| f.level)
            .collect();
        if recent.len() == 3 && recent.windows(2).all(|w| matches!(w, [a, b] if a > b)) {
            signal(
                "behaviour.escalation",
                0.2,
                "each flagged request more severe than the last".to_string(),
            );
        }
    }
    if !policy.enabled {
        signals.clear();
    }
    bound(&mut signals, policy.max_weight);

    for f in [
        &mut next.rate_minute,
        &mut next.rate_hour,
        &mut next.flagged_hour,
        &mut next.flagged_memory,
        &mut next.gap_mean,
        &mut next.gap_var,
    ] {
        *f = stored(*f);
    }
    Observation {
        profile: next,
        signals,
    }
}

/// Scales the weights so their noisy-or is at most `cap`: each `w` becomes `1 - (1 - w)^k`,
/// which keeps their order and proportions in log space.
fn bound(signals: &mut [Signal], cap: f64) {
    let keep: f64 = signals.iter().map(|s| 1.0 - s.weight).product();
    let total = 1.0 - keep;
    if total > cap && total > 0.0 {
        let k = libm::log(1.0 - cap) / libm::log(keep);
        for s in signals.iter_mut() {
            s.weight = 1.0 - libm::pow(1.0 - s.weight, k);
        }
    }
    for s in signals.iter_mut() {
        s.weight = round4(s.weight);
    }
    signals.sort_by(|a, b| b.weight.total_cmp(&a.weight).then_with(|| a.id.cmp(&b.id)));
}

impl Profile {
    /// Records the final decision (content and behaviour together).
    pub fn note_decision(&mut self, level: Level, action: Action) {
        self.stopped = self.stopped.saturating_add(u64::from(action.stops()));
        self.elevated = self
            .elevated
            .saturating_add(u64::from(level >= Level::Medium));
        self.last_level = Some(level);
    }
}

/// The request of [`crate::Guard::observe_json`]: one event for a profile, outside an
/// assessment (a host replaying events, or updating a profile that changed under it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserveRequest {
    /// The profile as last returned; none starts a new one.
    #[serde(default)]
    pub profile: Option<Profile>,
    /// When, RFC 3339 UTC.
    pub now: String,
    /// The text, to sketch for probing (dropped after); none: no sketch.
    #[serde(default)]
    pub text: Option<String>,
    /// The level the content alone reached.
    pub content_level: Level,
    /// The final decision, if one was made, to count.
    #[serde(default)]
    pub decision: Option<ObservedDecision>,
}

/// A decision to record in a profile.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservedDecision {
    /// Level.
    pub level: Level,
    /// Action.
    pub action: Action,
}

/// The answer of [`crate::Guard::observe_json`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObserveResponse {
    /// The new profile.
    pub profile: Profile,
    /// The signals the event gives.
    pub signals: Vec<Signal>,
}

/// Why an observe request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ObserveError {
    /// Not JSON of the request's shape.
    #[error("observe request is malformed: {0}")]
    Malformed(String),
    /// `now` is not RFC 3339 UTC.
    #[error("observe request `now`: {0}")]
    Time(String),
    /// The profile is of a format this guard does not read.
    #[error("profile version {0} is not {PROFILE_VERSION}")]
    ProfileVersion(u32),
}

/// [`observe`] from and to JSON, with the text sketched as an assessment would.
pub fn observe_json(request: &str, policy: &BehaviourPolicy) -> Result<String, ObserveError> {
    let request: ObserveRequest =
        serde_json::from_str(request).map_err(|e| ObserveError::Malformed(e.to_string()))?;
    let now = Timestamp::parse(&request.now).map_err(|e| ObserveError::Time(e.to_string()))?;
    let profile = match request.profile {
        Some(p) if p.version == PROFILE_VERSION || p.version == 1 => p,
        Some(p) => return Err(ObserveError::ProfileVersion(p.version)),
        None => Profile::default(),
    };
    let sketch = request.text.as_deref().and_then(|text| {
        let mut sketcher = Sketcher::default();
        sketcher.add(crate::text::normalize(text).text());
        sketcher.finish()
    });
    let observation = observe(
        &profile,
        &Event {
            now: Some(now),
            sketch,
            content_level: request.content_level,
        },
        policy,
    );
    let mut profile = observation.profile;
    if let Some(d) = request.decision {
        profile.note_decision(d.level, d.action);
    }
    serde_json::to_string(&ObserveResponse {
        profile,
        signals: observation.signals,
    })
    .map_err(|e| ObserveError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_keeps_the_latest_time() {
        let now = Timestamp::parse("2026-12-03T10:00:00Z").ok();
        let a_little_earlier = Timestamp::parse("2026-12-03T09:59:00Z").ok();
        let days_earlier = Timestamp::parse("2026-12-01T10:00:00Z").ok();
        let step = |p: &Profile, level, action, now| {
            let mut next = observe(
                p,
                &Event {
                    now,
                    sketch: None,
                    content_level: level,
                },
                &BehaviourPolicy::default(),
            )
            .profile;
            next.note_decision(level, action);
            next
        };
        let p = step(&Profile::default(), Level::High, Action::Quarantine, now);
        assert_eq!((p.assessments, p.stopped, p.elevated), (1, 1, 1));
        // Out of order by a minute: counted, the clock kept, no gap recorded.
        let q = step(&p, Level::VeryLow, Action::Allow, a_little_earlier);
        assert_eq!((q.assessments, q.stopped, q.elevated), (2, 1, 1));
        assert_eq!(q.last_seen.as_deref(), Some("2026-12-03T10:00:00Z"));
        assert_eq!(q.gaps, 0);
        // Days behind: the last time seen was wrong, and the clock starts again from here, so
        // one timestamp far ahead cannot freeze a profile.
        let r = step(&q, Level::VeryLow, Action::Allow, days_earlier);
        assert_eq!(r.last_seen.as_deref(), Some("2026-12-01T10:00:00Z"));
        assert!(r.flagged.is_empty());
    }

    #[test]
    fn the_bound_caps_the_sum_and_keeps_the_order() {
        let mut signals: Vec<Signal> = [("a", 0.45), ("b", 0.3), ("c", 0.25)]
            .iter()
            .map(|(id, w)| Signal {
                id: (*id).into(),
                weight: *w,
                detail: String::new(),
            })
            .collect();
        bound(&mut signals, 0.5);
        let total = 1.0 - signals.iter().map(|s| 1.0 - s.weight).product::<f64>();
        assert!((total - 0.5).abs() < 1e-3, "{total}");
        assert!(signals[0].weight > signals[1].weight && signals[1].weight > signals[2].weight);
    }

    #[test]
    fn hostile_numbers_in_a_profile_do_no_harm() {
        let p = Profile {
            rate_minute: f64::MAX,
            gap_var: -5.0,
            gaps: u32::MAX,
            flagged: vec![
                FlaggedPrompt {
                    sketch: Sketch::from_bytes(&[7; SKETCH_BYTES]).unwrap(),
                    at: i64::MIN,
                    level: Level::Critical,
                };
                MAX_FLAGGED * 4
            ],
            ..Profile::default()
        };
        let o = observe(
            &p,
            &Event {
                now: Timestamp::parse("2026-12-03T10:00:00Z").ok(),
                sketch: None,
                content_level: Level::High,
            },
            &BehaviourPolicy::default(),
        );
        assert!(o.profile.rate_minute <= 1e12 + 1.0);
        assert!(o.profile.flagged.len() <= MAX_FLAGGED);
        assert!(o.signals.iter().all(|s| s.weight.is_finite()));
    }
}

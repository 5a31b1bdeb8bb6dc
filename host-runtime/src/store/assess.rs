//! One assessment with the user's stored profile: load, assess, save with compare-and-swap (and
//! assess again when another instance changed the profile meanwhile), record the detection.

use std::sync::Arc;

use guard_core::time::Timestamp;
use guard_core::{Assessment, AssessmentInput};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{detection, BoxError, DetectionOptions, ProfileKey, ProfileStore, StoreError, Update};
use crate::engine::{EngineError, GuardEngine};

/// A store and what to record in it: what `sigil serve --store` runs with.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Where profiles and detections live.
    pub store: Arc<dyn ProfileStore>,
    /// Which assessments are recorded, and how.
    pub detections: DetectionOptions,
}

/// Why an assessment with a stored profile failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssessError {
    /// The guard could not answer.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The store refused or failed; nothing was written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The guard's answer is not the contract's shape.
    #[error("the guard's answer could not be read: {0}")]
    Answer(String),
}

/// The guard's answer, with the profile left as the JSON text the guard wrote.
#[derive(Deserialize)]
struct Answer<'a> {
    assessment: Assessment,
    #[serde(borrow)]
    profile: &'a RawValue,
}

/// Assesses `input` and returns guard-core's `{assessment, profile}` JSON.
///
/// When the input names a user and carries no profile, the user's stored profile (none for a new
/// user) is given to the guard, the profile the guard returns is stored with compare-and-swap,
/// and the assessment is recorded as a detection when it reaches the configured level. If
/// another writer changed the profile in between, the assessment is made again with the fresh
/// profile, so the answer always matches the stored state. `now` is the host's clock, used for
/// retention. Any other input is assessed as it is, and nothing is stored.
pub fn assess_with_store(
    engine: &GuardEngine,
    behaviour: &Behaviour,
    input: &AssessmentInput,
    now: Timestamp,
) -> Result<String, AssessError> {
    let Some(user) = &input.context.user else {
        let plain = serde_json::to_string(input).map_err(|e| AssessError::Answer(e.to_string()))?;
        return Ok(engine.assess_json(&plain)?);
    };
    // The store keeps this user's history, so the store decides what it is and when this is: a
    // profile or a time sent with the request would let a client reset or age its own record.
    let mut owned = input.clone();
    owned.context.profile = None;
    owned.context.now = now.to_string();
    let input = &owned;
    let plain = serde_json::to_string(input).map_err(|e| AssessError::Answer(e.to_string()))?;
    let key = ProfileKey::new(input.context.tenant.as_deref(), user)?;
    let base = serde_json::to_value(input).map_err(|e| AssessError::Answer(e.to_string()))?;
    let mut answer = String::new();
    let result = behaviour.store.update(&key, now, &mut |current| {
        let assessed = match current.and_then(|p| with_profile(&base, p)) {
            Some(request) => match engine.assess_json(&request) {
                Err(EngineError::Input(_)) => {
                    // Only the guard writes profiles, so this is one written by another version
                    // of the guard: the user starts afresh rather than being refused for ever.
                    eprintln!("a stored behaviour profile was refused by the guard; starting a new one");
                    engine.assess_json(&plain)
                }
                other => other,
            },
            None => engine.assess_json(&plain),
        }
        .map_err(|e| Box::new(e) as BoxError)?;
        let parsed: Answer<'_> = serde_json::from_str(&assessed)
            .map_err(|e| Box::new(AssessError::Answer(e.to_string())) as BoxError)?;
        let update = Update {
            profile: parsed.profile.get().to_string(),
            detection: detection(&input.segments, &parsed.assessment, &behaviour.detections),
        };
        answer = assessed;
        Ok(update)
    });
    match result {
        Ok(_) => Ok(answer),
        Err(StoreError::Update(inner)) => Err(match inner.downcast::<EngineError>() {
            Ok(engine_error) => AssessError::Engine(*engine_error),
            Err(other) => match other.downcast::<AssessError>() {
                Ok(assess_error) => *assess_error,
                Err(other) => AssessError::Answer(other.to_string()),
            },
        }),
        Err(e) => Err(AssessError::Store(e)),
    }
}

/// The request with `context.profile` set to a stored profile; `None` when the stored text is
/// not JSON (a damaged row: the user starts afresh).
fn with_profile(base: &serde_json::Value, profile: &str) -> Option<String> {
    let profile: serde_json::Value = serde_json::from_str(profile).ok()?;
    let mut request = base.clone();
    request
        .as_object_mut()?
        .get_mut("context")?
        .as_object_mut()?
        .insert("profile".into(), profile);
    Some(request.to_string())
}

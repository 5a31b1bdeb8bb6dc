//! One assessment with the user's stored profile: load, assess, save with compare-and-swap (and
//! assess again when another instance changed the profile meanwhile), record the detection.

use std::sync::Arc;

use guard_core::time::Timestamp;
use guard_core::{Assessment, AssessmentInput};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    detection, BoxError, Detection, DetectionOptions, ProfileKey, ProfileStore, SegmentDigest,
    StoreError, Update,
};
use crate::engine::{EngineError, GuardEngine};
use crate::vault::{RecordContext, Vault};

/// A store and what to record in it: what `sigil serve --store` runs with.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Where profiles and detections live.
    pub store: Arc<dyn ProfileStore>,
    /// Which assessments are recorded, and how.
    pub detections: DetectionOptions,
    /// Seals excerpts under the user's key. Without one no excerpt is kept, whatever the
    /// options say: an excerpt is the user's text and is never stored in the clear.
    pub vault: Option<Arc<Vault>>,
}

/// The record kind excerpts are sealed as.
pub const EXCERPT_KIND: &str = "detection-excerpt";

/// The id an excerpt is sealed for: the digests of the texts it was taken from, so it opens
/// only on the detection it belongs to.
pub fn excerpt_record_id(digests: &[SegmentDigest]) -> String {
    let mut id = String::from("segments");
    for d in digests {
        id.push(':');
        id.push_str(&d.sha256);
    }
    id
}

/// `detection`'s excerpt sealed for `key`'s user, or dropped when there is no vault or sealing
/// fails (the detection is still recorded).
fn seal_excerpt(detection: &mut Detection, key: &ProfileKey, vault: Option<&Vault>) {
    let Some(excerpt) = detection.excerpt.take() else {
        return;
    };
    let Some(vault) = vault else {
        return;
    };
    let id = excerpt_record_id(&detection.digests);
    let ctx = RecordContext {
        tenant: key.tenant().unwrap_or(""),
        subject: key.subject(),
        kind: EXCERPT_KIND,
        id: &id,
    };
    match vault.seal(&ctx, excerpt.as_bytes()) {
        Ok(sealed) => detection.excerpt = Some(sealed),
        Err(e) => {
            tracing::warn!(error = %e, "an excerpt could not be sealed; the detection is kept without it")
        }
    }
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
    /// The guard refused the template of a guarded call; nothing was stored.
    #[error("the template was refused ({}): {}", .0.code, .0.message)]
    Refused(crate::engine::TemplateRefusal),
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
    let key = ProfileKey::new(input.context.tenant.as_deref(), user)?;
    let base = serde_json::to_value(input).map_err(|e| AssessError::Answer(e.to_string()))?;
    call_with_store(behaviour, &key, now, &input.segments, &mut |profile| {
        let request = with_profile(&base, &["context"], profile)
            .ok_or_else(|| AssessError::Answer("the request could not be built".into()))?;
        Ok(engine.assess_json(&request)?)
    })
}

/// Runs one guard call with `key`'s stored profile and stores the profile it returns.
///
/// `call` is given the stored profile (`None` for a new user) and answers JSON with the
/// contract's `assessment` and `profile` at its top level (an assessment or a guarded call). A
/// profile the guard refuses as input is one written by another version of the guard: the call
/// is made again without it, and the user starts afresh. The store retries `call` when another
/// writer changed the profile meanwhile, so the answer always matches the stored state.
/// `segments` are what a detection record digests.
pub fn call_with_store(
    behaviour: &Behaviour,
    key: &ProfileKey,
    now: Timestamp,
    segments: &[guard_core::Segment],
    call: &mut dyn FnMut(Option<&serde_json::Value>) -> Result<String, AssessError>,
) -> Result<String, AssessError> {
    let mut answer = String::new();
    let result = behaviour.store.update(key, now, &mut |current| {
        let stored = current.and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok());
        let assessed = match stored.as_ref() {
            Some(profile) => match call(Some(profile)) {
                Err(AssessError::Engine(EngineError::Input(_))) => {
                    tracing::warn!("a stored behaviour profile was refused by the guard; starting a new one");
                    call(None)
                }
                other => other,
            },
            None => call(None),
        }
        .map_err(|e| Box::new(e) as BoxError)?;
        let parsed: Answer<'_> = serde_json::from_str(&assessed)
            .map_err(|e| Box::new(AssessError::Answer(e.to_string())) as BoxError)?;
        let mut detection = detection(segments, &parsed.assessment, &behaviour.detections);
        if let Some(detection) = detection.as_mut() {
            seal_excerpt(detection, key, behaviour.vault.as_deref());
        }
        let update = Update {
            profile: parsed.profile.get().to_string(),
            detection,
        };
        answer = assessed;
        Ok(update)
    });
    match result {
        Ok(_) => Ok(answer),
        Err(StoreError::Update(inner)) => Err(match inner.downcast::<AssessError>() {
            Ok(assess_error) => *assess_error,
            Err(other) => AssessError::Answer(other.to_string()),
        }),
        Err(e) => Err(AssessError::Store(e)),
    }
}

/// The request with the object at `path` given `profile` (or left without one), as JSON text;
/// `None` when `path` does not name an object.
pub fn with_profile(
    base: &serde_json::Value,
    path: &[&str],
    profile: Option<&serde_json::Value>,
) -> Option<String> {
    let Some(profile) = profile else {
        return Some(base.to_string());
    };
    let mut request = base.clone();
    let mut at = &mut request;
    for key in path {
        at = at.as_object_mut()?.get_mut(*key)?;
    }
    at.as_object_mut()?
        .insert("profile".into(), profile.clone());
    Some(request.to_string())
}

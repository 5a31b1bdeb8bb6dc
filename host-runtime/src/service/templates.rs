//! The templates `/v1/guard` verifies: fetched from the registry and kept for a moment, so a
//! guarded call does not queue on the registry's connection. The guard verifies each call's
//! envelope against the keyring and policy fetched with it, at the call's own time.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::{AppError, AppState};
use crate::registry::Session;

/// How long a fetched template, keyring and policy are used before they are fetched again: the
/// longest a withdrawal, revocation or new version waits to reach `/v1/guard`.
pub const TEMPLATE_TTL: Duration = Duration::from_secs(1);

/// Templates remembered at most.
const MAX_TEMPLATES: usize = 4096;

/// A template ready for the guard.
#[derive(Debug)]
pub struct CachedTemplate {
    /// The verification request (envelope, text, keyring, policy) as JSON, without its `now`.
    pub request: String,
    /// The variable schema, JSON.
    pub variables_schema: String,
    /// The version this is, as the registry answered.
    pub version: Option<u64>,
}

impl CachedTemplate {
    /// The verification request at `now` (a JSON string value).
    pub fn request_at(&self, now: &serde_json::Value) -> String {
        let body = self.request.trim_start_matches('{');
        if body.trim_start().starts_with('}') {
            return format!("{{\"now\":{now}}}");
        }
        format!("{{\"now\":{now},{body}")
    }
}

/// A template's id and version (`None` for the active one).
type TemplateKey = (String, Option<u64>);

/// Templates by id and version, with when each was fetched.
#[derive(Debug, Default)]
pub struct TemplateCache {
    entries: RwLock<HashMap<TemplateKey, (Arc<CachedTemplate>, Instant)>>,
}

impl TemplateCache {
    /// The template, from memory or the registry. Every identity may read what verifiers are
    /// handed, so one caller's fetch serves the next.
    pub async fn get(
        &self,
        state: &AppState,
        session: &Session,
        template_id: &str,
        version: Option<u64>,
    ) -> Result<Arc<CachedTemplate>, AppError> {
        let key = (template_id.to_string(), version);
        if let Ok(entries) = self.entries.read() {
            if let Some((template, at)) = entries.get(&key) {
                if at.elapsed() < TEMPLATE_TTL {
                    return Ok(template.clone());
                }
            }
        }
        let access = state.access.clone();
        let session = session.clone();
        let id = template_id.to_string();
        let now = (state.clock)();
        let fetched = tokio::task::spawn_blocking(move || {
            access.with_registry(|registry, _| {
                let now = guard_core::time::Timestamp::parse(&now)
                    .map_err(|e| AppError::internal(&e.to_string()))?;
                let mut request = registry.verification_request(&session, &id, version, now)?;
                let stored = registry.show(&session, &id, version)?;
                if let Some(object) = request.as_object_mut() {
                    object.remove("now");
                }
                Ok(CachedTemplate {
                    request: request.to_string(),
                    variables_schema: stored.variables_schema,
                    version: Some(stored.info.version),
                })
            })
        })
        .await
        .map_err(|_| AppError::internal("template lookup failed"))??;
        let fetched = Arc::new(fetched);
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= MAX_TEMPLATES {
                entries.clear();
            }
            entries.insert(key, (fetched.clone(), Instant::now()));
        }
        Ok(fetched)
    }

    /// Forgets every template (after a change made through the service).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }
}

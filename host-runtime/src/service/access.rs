//! API keys: who is calling, and whether their roles let them call this endpoint.
//!
//! A key is a registry identity's token (`sigil_…`), sent as `Authorization: Bearer`. The
//! registry stores only its SHA-256. Remembered sessions are found by the first half of a
//! token's digest and then the whole digest is compared in constant time, so response times say
//! nothing about how much of a guessed key was right. Sessions are kept in memory for [`SESSION_TTL`], so the hot
//! endpoints do not queue on the registry's connection; a role removed or a key disabled counts
//! within that time for them, and at once for every registry operation, which checks the roles
//! again inside its own transaction.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

use super::routes::route_roles;
use super::{AppError, AppState};
use crate::registry::{Registry, Role, Session};
use crate::signer::Signer;

/// How long an authenticated key is trusted without asking the registry again.
pub const SESSION_TTL: Duration = Duration::from_secs(2);

/// Sessions remembered at most; past this the memory is cleared and refilled.
const MAX_SESSIONS: usize = 10_000;

struct Remembered {
    digest: [u8; 32],
    session: Session,
    at: Instant,
}

fn key_of(digest: &[u8; 32]) -> [u8; 16] {
    let mut key = [0u8; 16];
    for (k, d) in key.iter_mut().zip(digest) {
        *k = *d;
    }
    key
}

/// The registry the service answers for, and its keys.
pub struct Access {
    registry: Mutex<Registry>,
    log_signer: Box<dyn Signer>,
    sessions: RwLock<HashMap<[u8; 16], Remembered>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").finish_non_exhaustive()
    }
}

impl Access {
    /// Access through `registry`, whose audit checkpoints `log_signer` signs.
    pub fn new(registry: Registry, log_signer: Box<dyn Signer>) -> Self {
        Access {
            registry: Mutex::new(registry),
            log_signer,
            sessions: RwLock::new(HashMap::new()),
        }
    }

    /// The identity whose token this is (blocking: may read the registry).
    pub fn authenticate(&self, token: &str) -> Result<Session, AppError> {
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        if let Ok(sessions) = self.sessions.read() {
            if let Some(known) = sessions.get(&key_of(&digest)) {
                let same =
                    aws_lc_rs::constant_time::verify_slices_are_equal(&known.digest, &digest)
                        .is_ok();
                if same && known.at.elapsed() < SESSION_TTL {
                    return Ok(known.session.clone());
                }
            }
        }
        let session = {
            let registry = self
                .registry
                .lock()
                .map_err(|_| AppError::internal("registry lock poisoned"))?;
            registry.authenticate(token)?
        };
        if let Ok(mut sessions) = self.sessions.write() {
            if sessions.len() >= MAX_SESSIONS {
                sessions.clear();
            }
            sessions.insert(
                key_of(&digest),
                Remembered {
                    digest,
                    session: session.clone(),
                    at: Instant::now(),
                },
            );
        }
        Ok(session)
    }

    /// Runs `f` with the registry and the log's signer (blocking).
    pub fn with_registry<T>(
        &self,
        f: impl FnOnce(&mut Registry, &dyn Signer) -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        let mut registry = self
            .registry
            .lock()
            .map_err(|_| AppError::internal("registry lock poisoned"))?;
        f(&mut registry, self.log_signer.as_ref())
    }

    /// Forgets remembered sessions (after a change to identities made through the service).
    pub fn forget_sessions(&self) {
        if let Ok(mut sessions) = self.sessions.write() {
            sessions.clear();
        }
    }
}

fn bearer(request: &Request) -> Result<&str, AppError> {
    let unauthenticated = |m: &str| AppError::new(StatusCode::UNAUTHORIZED, "unauthenticated", m);
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthenticated("send an API key: `Authorization: Bearer sigil_…`"))?;
    let value = value
        .to_str()
        .map_err(|_| unauthenticated("the Authorization header is not text"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| unauthenticated("the Authorization header is `Bearer <key>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(unauthenticated(
            "the Authorization header is `Bearer <key>`",
        ));
    }
    Ok(token.trim())
}

/// Middleware on every route: public routes pass; the rest need a key whose identity holds one
/// of the route's roles. The session goes to the handler as a request extension.
pub(super) async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let Some(roles) = path
        .as_deref()
        .and_then(|p| route_roles(request.method(), p))
    else {
        // A route missing from the table is refused rather than left open.
        return AppError::internal("this endpoint has no access rule").into_response();
    };
    let Some(roles) = roles else {
        return next.run(request).await;
    };
    let token = match bearer(&request) {
        Ok(token) => token.to_string(),
        Err(e) => return e.into_response(),
    };
    let access = state.access.clone();
    let session = tokio::task::spawn_blocking(move || access.authenticate(&token))
        .await
        .unwrap_or_else(|_| Err(AppError::internal("authentication failed")));
    let session = match session {
        Ok(session) => session,
        Err(e) => return e.into_response(),
    };
    if !roles.iter().any(|r| session.roles().contains(r)) {
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        return AppError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "`{}` may not call this endpoint: that needs the {} role",
                session.name(),
                names.join(" or ")
            ),
        )
        .into_response();
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// Every role: endpoints any identity may call.
pub(super) const ANY_ROLE: &[Role] = &Role::ALL;

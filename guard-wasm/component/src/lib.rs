//! guard-core behind the `sigil:guard` WIT world. Translation only: every decision is
//! guard-core's, and every answer is guard-core's own JSON string.
//!
//! One instance holds one compiled policy, set once by `init`. Nothing else survives between
//! calls.

// The canonical-ABI glue that wit-bindgen generates is unsafe; this crate writes none by hand.
#![allow(unsafe_code)]

use std::sync::OnceLock;

use guard_core::{
    AssessmentInput, Context, Guard, PinnedKey, Profile, Role, Scheme, Segment, Trust,
};

mod bindings {
    #![allow(missing_docs, clippy::all)]
    wit_bindgen::generate!({ world: "guard", path: "../wit" });
}

use bindings::{GuardError, VerifyError};

static GUARD: OnceLock<Guard> = OnceLock::new();

fn guard() -> Result<&'static Guard, GuardError> {
    GUARD.get().ok_or(GuardError::NotInitialized)
}

struct Component;

impl bindings::Guest for Component {
    fn init(policy_json: String) -> Result<(), GuardError> {
        if GUARD.get().is_some() {
            return Err(GuardError::AlreadyInitialized);
        }
        let compiled = Guard::from_policy_json(&policy_json)
            .map_err(|e| GuardError::InvalidPolicy(e.to_string()))?;
        // The host meters each call; compiling rules here, under the larger allowance `init`
        // gets, keeps that work out of the calls and their latency.
        compiled.compile_all_rules();
        GUARD
            .set(compiled)
            .map_err(|_| GuardError::AlreadyInitialized)
    }

    fn assess(
        segments: Vec<bindings::Segment>,
        context: bindings::Context,
    ) -> Result<String, GuardError> {
        let guard = guard()?;
        let profile = match context.profile {
            Some(json) => Some(
                serde_json::from_str::<Profile>(&json)
                    .map_err(|e| GuardError::InvalidInput(format!("profile is malformed: {e}")))?,
            ),
            None => None,
        };
        let input = AssessmentInput {
            segments: segments.into_iter().map(segment).collect(),
            context: Context {
                tenant: context.tenant,
                user: context.user,
                now: context.now,
                profile,
            },
        };
        Ok(guard.assess(&input).to_json())
    }

    fn assess_json(request: String) -> Result<String, GuardError> {
        guard()?
            .assess_json(&request)
            .map_err(|e| GuardError::InvalidInput(e.to_string()))
    }

    fn verify_template(
        envelope: Vec<u8>,
        template: Vec<u8>,
        public_key: Vec<u8>,
        scheme: bindings::Scheme,
        now: Option<String>,
    ) -> Result<String, VerifyError> {
        let scheme = match scheme {
            bindings::Scheme::RsassaPkcs1v15Sha256 => Scheme::RsassaPkcs1v15Sha256,
            bindings::Scheme::RsassaPssSha256 => Scheme::RsassaPssSha256,
        };
        let refusal = |e: guard_core::VerifyError| VerifyError {
            code: e.code().to_string(),
            message: e.to_string(),
        };
        let key = PinnedKey::from_spki(&public_key, scheme).map_err(refusal)?;
        let verified = guard_core::verify_template(&envelope, &template, &key, now.as_deref())
            .map_err(refusal)?;
        serde_json::to_string(&verified.report()).map_err(|e| VerifyError {
            code: "internal".into(),
            message: e.to_string(),
        })
    }

    fn verify_json(request: String) -> Result<String, VerifyError> {
        guard_core::verify_request_json(request.as_bytes()).map_err(|e| VerifyError {
            code: e.code().to_string(),
            message: e.to_string(),
        })
    }

    fn verify_bundle_json(request: String) -> Result<String, VerifyError> {
        guard_core::transparency::verify_bundle_json(request.as_bytes()).map_err(|e| VerifyError {
            code: e.code().to_string(),
            message: e.to_string(),
        })
    }

    fn guard_json(request: String) -> Result<String, VerifyError> {
        let guard = guard().map_err(|_| VerifyError {
            code: "not_initialized".into(),
            message: "`init` has not run in this instance".into(),
        })?;
        guard.guard_json(&request).map_err(|e| VerifyError {
            code: e.code().to_string(),
            message: e.to_string(),
        })
    }

    fn observe_json(request: String) -> Result<String, GuardError> {
        guard()?
            .observe_json(&request)
            .map_err(|e| GuardError::InvalidInput(e.to_string()))
    }

    fn rule_count() -> Result<u32, GuardError> {
        Ok(u32::try_from(guard()?.rule_count()).unwrap_or(u32::MAX))
    }
}

fn segment(s: bindings::Segment) -> Segment {
    Segment {
        text: s.text,
        trust: match s.trust {
            bindings::Trust::Trusted => Trust::Trusted,
            bindings::Trust::Untrusted => Trust::Untrusted,
        },
        role: s.role.map(|r| match r {
            bindings::Role::System => Role::System,
            bindings::Role::User => Role::User,
            bindings::Role::Assistant => Role::Assistant,
            bindings::Role::Tool => Role::Tool,
            bindings::Role::Document => Role::Document,
        }),
        source: s.source,
    }
}

bindings::export!(Component with_types_in bindings);

//! guard-core for JavaScript. Translation only: every decision is guard-core's and every answer
//! is guard-core's own JSON string, byte for byte what the other faces return.
//!
//! JavaScript strings may hold lone surrogates, which UTF-8 cannot. They are refused with a
//! typed error rather than silently replaced, so what is assessed is what was sent.

// wasm-bindgen's generated glue is unsafe; this crate writes none by hand.
#![allow(unsafe_code)]

use guard_core::{AssessmentInput, PinnedKey, Scheme};
use js_sys::{Array, JsString, Reflect};
use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
/** One piece of a prompt. */
export interface Segment {
  text: string;
  trust: "trusted" | "untrusted";
  role?: "system" | "user" | "assistant" | "tool" | "document";
  source?: string;
}
/** Who sends the prompt, and when (RFC 3339 UTC). */
export interface Context {
  tenant?: string;
  user?: string;
  now: string;
  profile?: Profile;
}
export interface AssessmentInput {
  segments: Segment[];
  context: Context;
}
export type Level = "very_low" | "low" | "medium" | "high" | "critical";
export type Action = "allow" | "warn" | "quarantine" | "block";
/** A behaviour signal: what it is, how much it adds, why. */
export interface Signal {
  id: string;
  weight: number;
  detail: string;
}
export interface Span {
  segment: number;
  byte_start: number;
  byte_end: number;
  utf16_start: number;
  utf16_end: number;
}
export interface Finding {
  id: string;
  category: string;
  source: "rule" | "model" | "behaviour";
  weight: number;
  span: Span;
  excerpt: string;
  obfuscations: string[];
  encodings: string[];
}
export interface Explanation {
  level: Level;
  threshold: number | null;
  next_threshold: number | null;
  contributions: { id: string; weight: number }[];
  summary: string;
}
export interface Assessment {
  score: number;
  level: Level;
  action: Action;
  findings: Finding[];
  signals: Signal[];
  explanation: Explanation;
  errors: { code: string; message: string; segment?: number }[];
}
export interface Profile {
  version: number;
  assessments: number;
  stopped: number;
  elevated: number;
  first_seen?: string;
  last_seen: string | null;
  last_level: Level | null;
  rate_minute?: number;
  rate_hour?: number;
  flagged_hour?: number;
  flagged_memory?: number;
  streak?: number;
  gap_mean?: number;
  gap_var?: number;
  gaps?: number;
  /** Recently flagged prompts' sketches, times and levels, packed (base64url). */
  flagged?: string;
}
/** The request of `Guard.observeJson`, as JSON text. */
export interface ObserveRequest {
  profile?: Profile;
  now: string;
  text?: string;
  content_level: Level;
  decision?: { level: Level; action: Action };
}
/** The answer of `Guard.observeJson`, as JSON text. */
export interface ObserveResponse {
  profile: Profile;
  signals: Signal[];
}
export interface AssessmentOutput {
  assessment: Assessment;
  profile: Profile;
}
export type Scheme = "rsassa-pkcs1v15-sha256" | "rsassa-pss-sha256";
"#;

/// An `Error` with a stable `code` property.
fn error(code: &str, message: &str) -> JsValue {
    let e = js_sys::Error::new(message);
    // Setting a property on a fresh Error cannot fail.
    let _ = Reflect::set(&e, &JsValue::from_str("code"), &JsValue::from_str(code));
    e.into()
}

/// Refuses texts with lone surrogates, naming the segment.
fn check_segments(input: &JsValue) -> Result<(), JsValue> {
    let Ok(segments) = Reflect::get(input, &JsValue::from_str("segments")) else {
        return Ok(());
    };
    if !Array::is_array(&segments) {
        return Ok(());
    }
    for (index, segment) in Array::from(&segments).iter().enumerate() {
        let text = Reflect::get(&segment, &JsValue::from_str("text")).unwrap_or(JsValue::UNDEFINED);
        if let Some(text) = text.dyn_ref::<JsString>() {
            if !text.is_valid_utf16() {
                return Err(error(
                    "lone_surrogate",
                    &format!("segment {index}: text has a lone surrogate and is not valid Unicode"),
                ));
            }
        }
    }
    Ok(())
}

/// A compiled policy. Build once, assess many times.
#[wasm_bindgen]
pub struct Guard {
    inner: guard_core::Guard,
}

#[wasm_bindgen]
impl Guard {
    /// Compiles a policy given as JSON (`{}` or nothing for the default).
    #[wasm_bindgen(constructor)]
    pub fn new(policy_json: Option<String>) -> Result<Guard, JsValue> {
        let json = policy_json.unwrap_or_else(|| "{}".to_string());
        let inner = guard_core::Guard::from_policy_json(&json)
            .map_err(|e| error("invalid_policy", &e.to_string()))?;
        Ok(Guard { inner })
    }

    /// Assesses `{segments, context}`; returns the `AssessmentOutput` as a JSON string.
    pub fn assess(
        &self,
        #[wasm_bindgen(unchecked_param_type = "AssessmentInput")] input: JsValue,
    ) -> Result<String, JsValue> {
        check_segments(&input)?;
        let input: AssessmentInput = serde_wasm_bindgen::from_value(input).map_err(|e| {
            error(
                "invalid_input",
                &format!("assessment input is malformed: {e}"),
            )
        })?;
        Ok(self.inner.assess(&input).to_json())
    }

    /// One guarded call from a JSON request `{template, variables_schema, variables, context}`:
    /// verifies the template, checks and renders its variables, and assesses the result. Returns
    /// `{template, rendered?, assessment, profile}` as JSON; throws an `Error` with a `code` when
    /// the template, the schema, a variable or the request is refused.
    #[wasm_bindgen(js_name = guardJson)]
    pub fn guard_json(&self, request: JsString) -> Result<String, JsValue> {
        let request = well_formed(request, "request")?;
        self.inner
            .guard_json(&request)
            .map_err(|e| error(e.code(), &e.to_string()))
    }

    /// One behaviour event for a profile outside an assessment: `{profile?, now, text?,
    /// content_level, decision?}` in, `{profile, signals}` out, as JSON strings. Throws an
    /// `Error` with code `invalid_input` when the request is refused.
    #[wasm_bindgen(js_name = observeJson)]
    pub fn observe_json(&self, request: JsString) -> Result<String, JsValue> {
        let request = well_formed(request, "request")?;
        self.inner
            .observe_json(&request)
            .map_err(|e| error("invalid_input", &e.to_string()))
    }

    /// Assesses a request given as JSON text; returns the `AssessmentOutput` as a JSON string.
    #[wasm_bindgen(js_name = assessJson)]
    pub fn assess_json(&self, request: JsString) -> Result<String, JsValue> {
        let request = well_formed(request, "request")?;
        self.inner
            .assess_json(&request)
            .map_err(|e| error("invalid_input", &e.to_string()))
    }

    /// Assesses plain text as one untrusted segment.
    #[wasm_bindgen(js_name = assessText)]
    pub fn assess_text(&self, text: JsString, now: JsString) -> Result<String, JsValue> {
        let text = well_formed(text, "text")?;
        let now = well_formed(now, "now")?;
        Ok(self
            .inner
            .assess(&AssessmentInput::from_text(text, now))
            .to_json())
    }

    /// Number of rules the compiled policy runs.
    #[wasm_bindgen(getter, js_name = ruleCount)]
    pub fn rule_count(&self) -> usize {
        self.inner.rule_count()
    }
}

/// Verifies a signed template against a pinned SPKI public key (PEM text or DER bytes).
///
/// Returns the verification report as JSON; throws an `Error` with a `code` on refusal.
#[wasm_bindgen(js_name = verifyTemplate)]
pub fn verify_template(
    envelope: &[u8],
    template: &[u8],
    public_key: &[u8],
    #[wasm_bindgen(unchecked_param_type = "Scheme | undefined")] scheme: Option<String>,
    now: Option<String>,
) -> Result<String, JsValue> {
    let scheme = match scheme.as_deref() {
        None | Some("rsassa-pkcs1v15-sha256") => Scheme::RsassaPkcs1v15Sha256,
        Some("rsassa-pss-sha256") => Scheme::RsassaPssSha256,
        Some(other) => {
            return Err(error(
                "invalid_scheme",
                &format!("unknown scheme `{other}`"),
            ))
        }
    };
    let refuse = |e: guard_core::VerifyError| error(e.code(), &e.to_string());
    let key = PinnedKey::from_spki(public_key, scheme).map_err(refuse)?;
    let verified =
        guard_core::verify_template(envelope, template, &key, now.as_deref()).map_err(refuse)?;
    serde_json::to_string(&verified.report()).map_err(|e| error("internal", &e.to_string()))
}

/// Verifies a template against a keyring, the template's policy and its high-water mark, given as
/// one JSON request `{envelope, template, keyring, template_policy?, template_id?, version?,
/// high_water?, now, max_skew_seconds?}`.
///
/// Returns the verification report as JSON (with `approvals` and the new `high_water`); throws an
/// `Error` with a `code` on refusal.
#[wasm_bindgen(js_name = verifyJson)]
pub fn verify_json(request: JsString) -> Result<String, JsValue> {
    let request = well_formed(request, "request")?;
    guard_core::verify_request_json(request.as_bytes()).map_err(|e| error(e.code(), &e.to_string()))
}

/// Checks an offline bundle with no network: the log's signed checkpoint, the entry and its
/// inclusion proof, then the template against the caller's keyring and template policy. The
/// request is `{bundle, log: {origin, spki, scheme}, template}`, `template` being a
/// verification request (as for `verifyJson`) without its envelope; returns `{template, log}` as
/// JSON, and throws an `Error` with a `code` on refusal.
#[wasm_bindgen(js_name = verifyBundleJson)]
pub fn verify_bundle_json(request: JsString) -> Result<String, JsValue> {
    let request = well_formed(request, "request")?;
    guard_core::transparency::verify_bundle_json(request.as_bytes())
        .map_err(|e| error(e.code(), &e.to_string()))
}

/// A JavaScript string as Rust text, refused when it holds a lone surrogate: converting it would
/// silently turn the surrogate into U+FFFD, and what is assessed or verified must be what was
/// given.
fn well_formed(text: JsString, what: &str) -> Result<String, JsValue> {
    // The declared type is not checked at the boundary: JavaScript may pass anything.
    let value: &JsValue = text.as_ref();
    if !value.is_string() {
        return Err(error("invalid_input", &format!("{what} must be a string")));
    }
    if !text.is_valid_utf16() {
        return Err(error(
            "lone_surrogate",
            &format!("{what} has a lone surrogate and is not valid Unicode"),
        ));
    }
    text.as_string()
        .ok_or_else(|| error("invalid_input", &format!("{what} must be a string")))
}

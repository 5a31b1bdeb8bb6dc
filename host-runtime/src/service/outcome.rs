//! What happened in one assessed call, and what the service does about it: metrics, and for
//! `high` and `critical` assessments and template refusals an incident (and for `quarantine`
//! and `block`, the item held for review).

use std::time::{Duration, Instant};

use guard_core::Assessment;

pub use crate::telemetry::Endpoint;

/// How the call ended.
#[derive(Debug)]
pub enum Call<'a> {
    /// The guard assessed it.
    Assessed {
        /// Its assessment.
        assessment: &'a Assessment,
        /// The template and version of a guarded call.
        template: Option<(&'a str, Option<u64>)>,
        /// What a reviewer needs to release the item: the request and the answer.
        context: serde_json::Value,
    },
    /// The guard refused the template.
    Refused {
        /// The refusal code.
        code: &'a str,
        /// The template asked for.
        template_id: &'a str,
        /// The version asked for.
        version: Option<u64>,
    },
}

/// One call's outcome.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// The tenant named.
    pub tenant: Option<String>,
    /// The user named.
    pub subject: Option<String>,
    /// The host's time of the call.
    pub now: String,
    /// The request's id.
    pub request_id: String,
    /// How it ended.
    pub call: Call<'a>,
    /// Time spent fetching and verifying the template.
    pub verify_time: Option<Duration>,
    /// Time spent in the guard.
    pub assess_time: Option<Duration>,
    /// When the request arrived.
    pub started: Instant,
}

/// What the service kept of a call.
#[derive(Debug, Default)]
pub struct Kept {
    /// The incident opened or updated.
    pub incident_id: Option<String>,
    /// The item held for review.
    pub quarantine_id: Option<String>,
}

impl Kept {
    /// A JSON object answer with the kept ids added, when there are any.
    pub fn decorate(&self, answer: String) -> String {
        let mut extra = String::new();
        for (key, value) in [
            ("incident_id", &self.incident_id),
            ("quarantine_id", &self.quarantine_id),
        ] {
            if let Some(value) = value {
                extra.push_str(&format!(
                    ",\"{key}\":{}",
                    serde_json::Value::from(value.as_str())
                ));
            }
        }
        if extra.is_empty() {
            return answer;
        }
        match answer.trim_end().strip_suffix('}') {
            Some(open) if open.trim_end().ends_with('{') => {
                format!("{open}{}}}", extra.get(1..).unwrap_or_default())
            }
            Some(open) => format!("{open}{extra}}}"),
            None => answer,
        }
    }
}

//! A template's policy: the lowest version that may still be used, withdrawn versions, and the
//! approvals a version needs. Also the high-water mark a verifier keeps per template.

use serde::{Deserialize, Serialize};

use super::{is_sha256_hex, MAX_ENVELOPE_SIGNATURES};

/// Most versions a policy may list as withdrawn.
pub const MAX_WITHDRAWN_VERSIONS: usize = 4096;

/// Why a template policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplatePolicyError {
    /// Not JSON of the policy's shape.
    #[error("template policy is malformed: {0}")]
    Malformed(String),
    /// A field has a valid type but an invalid value.
    #[error("template policy field `{field}` is invalid: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// `{min_version, approvals: {threshold, of}, withdrawn}`, kept and signed by the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct TemplatePolicy {
    /// Versions below this are refused, pinned or not. Raised when a version is withdrawn.
    #[serde(default = "one")]
    pub min_version: u64,
    /// Signatures a version needs. Without it, one signature by any key of the keyring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<Approvals>,
    /// Versions that may never be used again, whatever `min_version` says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withdrawn: Vec<u64>,
}

/// `threshold` signatures by distinct signers among the keys `of`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Approvals {
    /// How many distinct signers must have signed.
    pub threshold: u32,
    /// Fingerprints of the keys whose signatures count.
    pub of: Vec<String>,
}

fn one() -> u64 {
    1
}

impl Default for TemplatePolicy {
    fn default() -> Self {
        TemplatePolicy {
            min_version: 1,
            approvals: None,
            withdrawn: Vec::new(),
        }
    }
}

impl TemplatePolicy {
    /// Parses and checks a policy. Integers only, no unknown or duplicate fields.
    pub fn from_json(bytes: &[u8]) -> Result<Self, TemplatePolicyError> {
        let policy: TemplatePolicy = serde_json::from_slice(bytes)
            .map_err(|e| TemplatePolicyError::Malformed(e.to_string()))?;
        policy.check()?;
        Ok(policy)
    }

    /// Checks the values: a threshold that can be met, fingerprints that are fingerprints.
    pub fn check(&self) -> Result<(), TemplatePolicyError> {
        let field = |field, reason: String| TemplatePolicyError::Field { field, reason };
        if self.min_version == 0 {
            return Err(field("min_version", "must be at least 1".into()));
        }
        if self.withdrawn.len() > MAX_WITHDRAWN_VERSIONS {
            return Err(field(
                "withdrawn",
                format!("lists more than {MAX_WITHDRAWN_VERSIONS} versions"),
            ));
        }
        if self.withdrawn.contains(&0) {
            return Err(field("withdrawn", "versions start at 1".into()));
        }
        if let Some(approvals) = &self.approvals {
            if let Some(bad) = approvals.of.iter().find(|f| !is_sha256_hex(f)) {
                return Err(field(
                    "approvals",
                    format!("`{}` is not a key fingerprint", shorten(bad)),
                ));
            }
            let distinct = self.distinct_approvers().len();
            if approvals.threshold == 0 {
                return Err(field("approvals", "threshold must be at least 1".into()));
            }
            if approvals.threshold as usize > distinct {
                return Err(field(
                    "approvals",
                    format!(
                        "threshold {} cannot be met by {distinct} distinct keys",
                        approvals.threshold
                    ),
                ));
            }
            if approvals.threshold as usize > MAX_ENVELOPE_SIGNATURES {
                return Err(field(
                    "approvals",
                    format!("threshold is over the {MAX_ENVELOPE_SIGNATURES} signatures an envelope may carry"),
                ));
            }
        }
        Ok(())
    }

    /// The approvers' fingerprints, each once.
    pub fn distinct_approvers(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for f in self.approvals.iter().flat_map(|a| &a.of) {
            if !out.contains(&f.as_str()) {
                out.push(f);
            }
        }
        out
    }

    /// How many distinct signers a version needs.
    pub fn threshold(&self) -> usize {
        self.approvals.as_ref().map_or(1, |a| a.threshold as usize)
    }
}

/// The highest version of a template a verifier has accepted, and its digest. The caller keeps
/// it per template and hands it back; only an accepted record advances it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct HighWater {
    /// Version.
    pub version: u64,
    /// Hex SHA-256 of that version's template.
    pub digest: String,
}

fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

crate::json::objects_only!(TemplatePolicy, Approvals, HighWater);

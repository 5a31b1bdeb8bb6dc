//! The v1 template statement, parsed strictly.

use serde::{Deserialize, Deserializer, Serialize};

use crate::time::Timestamp;

/// What a signer asserts about one version of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Statement {
    /// Template slug: lowercase ASCII letters, digits and `-_./`.
    pub template_id: String,
    /// Version, from 1.
    pub version: u64,
    /// Digest of the exact template bytes.
    pub digest: Digest,
    /// Hex SHA-256 of the canonical JSON of the variable schema.
    pub variables_digest: String,
    /// Hex SHA-256 of the previous version's template; null for version 1.
    #[serde(deserialize_with = "present_nullable")]
    pub prev_digest: Option<String>,
    /// Who signed (a person, a pipeline, a KMS key alias).
    pub signer: String,
    /// When, RFC 3339 UTC.
    pub signed_at: String,
    /// Until when the signature is good, RFC 3339 UTC.
    pub not_after: String,
    /// Hex SHA-256 of the validation report; null where no pipeline ran.
    #[serde(deserialize_with = "present_nullable")]
    pub validation_digest: Option<String>,
}

/// A content digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct Digest {
    /// Lower-case hex SHA-256.
    pub sha256: String,
}

/// Nullable fields must still be present: a missing field is an error, not a default.
fn present_nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// Why a statement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatementError {
    /// Not JSON of the statement's shape (also unknown, duplicate or missing fields).
    #[error("statement is malformed: {0}")]
    Malformed(String),
    /// A field has a valid type but an invalid value.
    #[error("statement field `{field}` is invalid: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Whether `s` is a lower-case hex SHA-256.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `s` is a valid template id.
pub fn is_template_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/'))
        && !s.starts_with(['/', '.'])
        && !s
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
}

impl Statement {
    /// Parses and checks a statement. Integers only, no unknown or duplicate fields.
    pub fn parse(bytes: &[u8]) -> Result<Self, StatementError> {
        let statement: Statement =
            serde_json::from_slice(bytes).map_err(|e| StatementError::Malformed(e.to_string()))?;
        statement.check()?;
        Ok(statement)
    }

    /// Checks the values of a statement's fields.
    pub fn check(&self) -> Result<(), StatementError> {
        let field = |field, reason: &str| StatementError::Field {
            field,
            reason: reason.to_string(),
        };
        if !is_template_id(&self.template_id) {
            return Err(field(
                "template_id",
                "must be 1 to 128 of a-z 0-9 - _ . / in non-empty path parts",
            ));
        }
        if self.version == 0 {
            return Err(field("version", "must be at least 1"));
        }
        if !is_sha256_hex(&self.digest.sha256) {
            return Err(field("digest", "sha256 must be 64 lower-case hex digits"));
        }
        if !is_sha256_hex(&self.variables_digest) {
            return Err(field(
                "variables_digest",
                "must be 64 lower-case hex digits",
            ));
        }
        match (&self.prev_digest, self.version) {
            (None, 1) => {}
            (Some(_), 1) => return Err(field("prev_digest", "must be null for version 1")),
            (None, _) => return Err(field("prev_digest", "is required after version 1")),
            (Some(d), _) if !is_sha256_hex(d) => {
                return Err(field("prev_digest", "must be 64 lower-case hex digits"))
            }
            (Some(_), _) => {}
        }
        if let Some(d) = &self.validation_digest {
            if !is_sha256_hex(d) {
                return Err(field(
                    "validation_digest",
                    "must be 64 lower-case hex digits",
                ));
            }
        }
        if self.signer.trim().is_empty() || self.signer.len() > 256 {
            return Err(field("signer", "must be 1 to 256 characters"));
        }
        // It is shown to people: no line breaks or escape sequences.
        if self.signer.chars().any(char::is_control) {
            return Err(field("signer", "must not hold control characters"));
        }
        let signed_at =
            Timestamp::parse(&self.signed_at).map_err(|e| field("signed_at", &e.to_string()))?;
        let not_after =
            Timestamp::parse(&self.not_after).map_err(|e| field("not_after", &e.to_string()))?;
        if not_after <= signed_at {
            return Err(field("not_after", "must be later than signed_at"));
        }
        Ok(())
    }
}

crate::json::objects_only!(Statement, Digest);

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "template_id": "support/answer",
            "version": 1,
            "digest": {"sha256": HEX},
            "variables_digest": HEX,
            "prev_digest": null,
            "signer": "dev",
            "signed_at": "2026-12-01T00:00:00Z",
            "not_after": "2027-12-01T00:00:00Z",
            "validation_digest": null
        })
    }

    #[test]
    fn parses_a_valid_statement() {
        let s = Statement::parse(valid().to_string().as_bytes()).unwrap();
        assert_eq!(s.template_id, "support/answer");
    }

    #[test]
    fn refuses_loose_statements() {
        let mut cases = Vec::new();
        let mut v = valid();
        v["version"] = serde_json::json!(1.0);
        cases.push(v.to_string());
        let mut v = valid();
        v["version"] = serde_json::json!(0);
        cases.push(v.to_string());
        let mut v = valid();
        v["extra"] = serde_json::json!(true);
        cases.push(v.to_string());
        let mut v = valid();
        v.as_object_mut().unwrap().remove("prev_digest");
        cases.push(v.to_string());
        let mut v = valid();
        v["template_id"] = serde_json::json!("../etc");
        cases.push(v.to_string());
        let mut v = valid();
        v["digest"]["sha256"] = serde_json::json!(HEX.to_uppercase());
        cases.push(v.to_string());
        let mut v = valid();
        v["not_after"] = serde_json::json!("2025-01-01T00:00:00Z");
        cases.push(v.to_string());
        let mut v = valid();
        v["version"] = serde_json::json!(2);
        cases.push(v.to_string());
        // A duplicate key, which serde_json::Value cannot hold.
        cases.push(
            valid()
                .to_string()
                .replacen("\"version\":1", "\"version\":1,\"version\":1", 1),
        );
        for case in &cases {
            assert!(
                Statement::parse(case.as_bytes()).is_err(),
                "accepted {case}"
            );
        }
        assert_eq!(cases.len(), 9);
    }
}

//! Roles, identities and their tokens.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// The roles of the contract (`DESIGN.md`, "Roles").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Keys, roles and configuration (template policies, withdrawals).
    Admin,
    /// Submits and publishes templates.
    Publisher,
    /// Approves templates.
    Reviewer,
    /// Calls the guard; reads what verification needs (keyring, policies, active templates).
    Scanner,
    /// Reads the audit log, the registry and reports.
    Auditor,
}

impl Role {
    /// Every role, in order.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Publisher,
        Role::Reviewer,
        Role::Scanner,
        Role::Auditor,
    ];

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Publisher => "publisher",
            Role::Reviewer => "reviewer",
            Role::Scanner => "scanner",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a role (admin, publisher, reviewer, scanner, auditor)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| UnknownRole(s.chars().take(40).collect()))
    }
}

/// Roles as stored: sorted names joined by commas.
pub(super) fn roles_to_text(roles: &BTreeSet<Role>) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Stored roles back; an unknown name means the row was not written by us.
pub(super) fn roles_from_text(text: &str) -> Option<BTreeSet<Role>> {
    if text.is_empty() {
        return Some(BTreeSet::new());
    }
    text.split(',').map(|r| r.parse().ok()).collect()
}

/// An identity that presented a valid token. Only [`super::Registry::authenticate`] makes one;
/// every registry operation takes it and checks its roles again inside its own transaction, so
/// a role removed meanwhile counts at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub(super) id: i64,
    pub(super) name: String,
    pub(super) roles: BTreeSet<Role>,
}

impl Session {
    /// The identity's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its roles when it authenticated.
    pub fn roles(&self) -> &BTreeSet<Role> {
        &self.roles
    }
}

/// The prefix of every token, so a leaked one is easy to find in logs and repositories.
pub const TOKEN_PREFIX: &str = "sigil_";

/// A new token: the prefix and 32 random bytes, base64url.
pub(super) fn new_token() -> Result<String, aws_lc_rs::error::Unspecified> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes)?;
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// A new key for an identity's pseudonym in audit entries.
pub(super) fn new_pseudonym_key() -> Result<[u8; 32], aws_lc_rs::error::Unspecified> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes)?;
    Ok(bytes)
}

/// What is stored of a token: its SHA-256. Tokens carry 256 random bits, so a plain hash is
/// enough to make the stored value useless to whoever reads the database.
pub(super) fn token_hash(token: &str) -> String {
    guard_core::provenance::sha256_hex(token.as_bytes())
}

/// Identity names: 1 to 64 of `a-z0-9._-`, starting with a letter or digit.
pub fn is_identity_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

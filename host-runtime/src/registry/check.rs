//! Whether the registry's tables say what its audit log says.
//!
//! The log is signed and verifiable; the tables are what the registry serves. Someone with the
//! database file can change the tables around the triggers, so [`Registry::check`] replays the
//! log against them: every approved version's text and envelope are the ones recorded as
//! published, every policy is the one recorded last, every key, revocation, role and disabled
//! identity is one the log recorded.

use std::collections::{BTreeMap, BTreeSet};

use guard_core::provenance::sha256_hex;
use guard_core::transparency::{envelope_digest, AuditEntry, EntryKind};

use super::roles::roles_to_text;
use super::{pseudonym_of, store, Registry, RegistryError, VersionState};

/// What the log recorded, gathered in one pass.
#[derive(Default)]
struct Recorded {
    /// `(template, version)` → (envelope digest, template digest) of `template.published`.
    published: BTreeMap<(String, u64), (String, String)>,
    /// Template id → digest of the last policy recorded.
    policies: BTreeMap<String, String>,
    /// Fingerprints added (directly or by rotation).
    keys_added: BTreeSet<String>,
    /// Fingerprint prefixes revoked.
    revoked: BTreeSet<String>,
    /// Pseudonym → last roles recorded.
    roles: BTreeMap<String, String>,
    /// Pseudonyms disabled.
    disabled: BTreeSet<String>,
    /// Audit entries of signatures: seq → (kind, subject).
    signing_entries: BTreeMap<u64, (EntryKind, String)>,
}

impl Recorded {
    fn add(&mut self, entry: AuditEntry) {
        let subject = entry.subject.clone().unwrap_or_default();
        match entry.kind {
            EntryKind::TemplatePublished => {
                if let Some((id, version)) = subject
                    .rsplit_once('@')
                    .and_then(|(id, v)| Some((id.to_string(), v.parse::<u64>().ok()?)))
                {
                    let envelope = entry.digests.get("envelope").cloned().unwrap_or_default();
                    let template = entry.digests.get("template").cloned().unwrap_or_default();
                    self.published.insert((id, version), (envelope, template));
                }
                self.signing_entries
                    .insert(entry.seq, (entry.kind, subject.clone()));
            }
            EntryKind::TemplateSubmitted | EntryKind::Approval => {
                self.signing_entries
                    .insert(entry.seq, (entry.kind, subject.clone()));
            }
            EntryKind::KeyRotated => {
                for name in ["key", "new_key"] {
                    if let Some(fp) = entry.digests.get(name) {
                        if subject.ends_with(" added") || subject.ends_with(" rotated") {
                            self.keys_added.insert(fp.clone());
                        }
                    }
                }
                if subject.ends_with(" revoked") {
                    if let Some(fp) = entry.digests.get("key") {
                        self.revoked.insert(fp.clone());
                    }
                }
            }
            EntryKind::Admin => {
                if let Some(id) = subject.strip_suffix(" policy") {
                    if let Some(digest) = entry.digests.get("policy") {
                        self.policies.insert(id.to_string(), digest.clone());
                    }
                } else if let Some(rest) = subject.strip_prefix("identity ") {
                    if let Some((psn, roles)) = rest.split_once(" roles ") {
                        self.roles.insert(psn.to_string(), roles.to_string());
                    } else if let Some(psn) = rest.strip_suffix(" disabled") {
                        self.disabled.insert(psn.to_string());
                    }
                }
            }
            _ => {}
        }
    }
}

impl Registry {
    /// The ways the registry's tables disagree with its audit log (empty: they agree). The log
    /// itself is checked by [`crate::audit::AuditLog::verify`]; this trusts its entries and
    /// checks the tables against them.
    pub fn check(&self) -> Result<Vec<String>, RegistryError> {
        let conn = self.log_conn();
        let mut recorded = Recorded::default();
        let mut unreadable = 0u64;
        self.log.for_each_entry(|_, bytes| {
            match AuditEntry::from_leaf_bytes(bytes) {
                Ok(entry) => recorded.add(entry),
                Err(_) => unreadable += 1,
            }
            Ok(())
        })?;
        let mut problems = Vec::new();
        if unreadable > 0 {
            problems.push(format!(
                "{unreadable} log entries cannot be read (see `sigil audit verify`)"
            ));
        }
        let names: BTreeMap<i64, String> = store::principals(conn)?
            .into_iter()
            .map(|p| (p.id, p.name))
            .collect();

        // Versions: what is served as approved is what was recorded as published.
        for template_id in store::template_ids(conn)? {
            for v in store::versions(conn, &template_id)? {
                let at = format!("`{template_id}` v{}", v.version);
                if sha256_hex(&v.template) != v.digest {
                    problems.push(format!("{at}: the stored text is not the one signed"));
                }
                let envelope: Result<guard_core::Envelope, _> = serde_json::from_str(&v.envelope);
                let envelope_hex = envelope
                    .ok()
                    .and_then(|e| envelope_digest(&e).ok())
                    .unwrap_or_default();
                let logged = recorded.published.get(&(template_id.clone(), v.version));
                match (v.state, logged) {
                    (VersionState::Approved | VersionState::Withdrawn, Some((env, text)))
                        if v.approved_at.is_some() =>
                    {
                        if *text != v.digest {
                            problems.push(format!("{at}: the log published another text"));
                        }
                        if *env != envelope_hex {
                            problems.push(format!("{at}: the log published another envelope"));
                        }
                    }
                    (VersionState::Approved, None) => {
                        problems.push(format!("{at} is approved, but the log never published it"));
                    }
                    (VersionState::Pending, Some(_)) => {
                        problems.push(format!("{at} is pending, but the log published it"));
                    }
                    _ => {}
                }
                for s in store::signatures(conn, &template_id, v.version)? {
                    let subject = format!("{template_id}@{}", v.version);
                    match recorded.signing_entries.get(&s.audit_seq) {
                        Some((_, logged)) if *logged == subject => {}
                        _ => problems.push(format!(
                            "{at}: the signature by `{}` has no entry in the log",
                            names.get(&s.principal).map_or("?", String::as_str)
                        )),
                    }
                }
            }
            // Policies: the stored one is the last one recorded.
            if let Some(policy) = store::policy(conn, &template_id)? {
                match recorded.policies.get(&template_id) {
                    Some(digest) if *digest == sha256_hex(policy.as_bytes()) => {}
                    Some(_) => problems.push(format!(
                        "`{template_id}`'s policy is not the one the log recorded last"
                    )),
                    None => problems.push(format!(
                        "`{template_id}` has a policy the log never recorded"
                    )),
                }
            }
        }

        // Keys: each one added through the log, revoked only as the log says.
        for key in store::keys(conn)? {
            let short = key.fingerprint.get(..16).unwrap_or(&key.fingerprint);
            if !recorded.keys_added.contains(&key.fingerprint) {
                problems.push(format!(
                    "key {short} is in the keyring, but the log never added it"
                ));
            }
            let logged_revoked = recorded.revoked.contains(&key.fingerprint);
            if key.revoked_at.is_some() != logged_revoked {
                problems.push(format!(
                    "key {short}'s revocation is not what the log recorded"
                ));
            }
        }

        // Identities: roles and disabling as recorded.
        for p in store::principals(conn)? {
            let psn = pseudonym_of(&p.pseudonym_key, &p.name);
            let roles = if p.roles.is_empty() {
                "none".to_string()
            } else {
                roles_to_text(&p.roles)
            };
            match recorded.roles.get(&psn) {
                Some(logged) if *logged == roles => {}
                Some(_) => problems.push(format!(
                    "`{}` has roles the log did not record ({roles})",
                    p.name
                )),
                None => problems.push(format!("`{}` was never recorded in the log", p.name)),
            }
            if p.disabled_at.is_some() != recorded.disabled.contains(&psn) {
                problems.push(format!(
                    "`{}`'s disabling is not what the log recorded",
                    p.name
                ));
            }
        }
        Ok(problems)
    }
}

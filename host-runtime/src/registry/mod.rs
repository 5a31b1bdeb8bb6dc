//! The template registry: versioned, append-only templates with their envelopes, the keyring,
//! template policies and the identities allowed to change them, in the audit log's database.
//!
//! Every change is one SQLite transaction that also appends its audit entries and signs the new
//! checkpoint: a change that returned is durable and in the log,
//! one that did not return left nothing, so a crash never leaves a template the log does not
//! know. Every operation takes a [`Session`] and checks the identity's roles inside that
//! transaction (the store layer, not only the command line, enforces them).
//!
//! Publishing runs the validation pipeline, signs the version with the publisher's own key and
//! then asks the guard whether the envelope verifies against the registry's keyring and the
//! template's policy. If it does, the version is approved at once; if it lacks approvals it
//! waits as `pending` until reviewers add their signatures over the same envelope
//! ([`Registry::approve`]). The active version is the highest approved one that is not
//! withdrawn.

mod check;
mod publish;
mod roles;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use guard_core::provenance::{sha256_hex, Approvals, KeyRecord, TemplatePolicy};
use guard_core::time::Timestamp;
use guard_core::transparency::{EntryKind, OfflineBundle};
use guard_core::{Envelope, Scheme};
use rusqlite::TransactionBehavior;

pub use roles::{is_identity_name, Role, Session, UnknownRole, TOKEN_PREFIX};
use store::{KeyRow, PrincipalRow, VersionRow};

use crate::audit::{self, Appended, AuditError, AuditLog, NewEntry, SignedCheckpoint};
use crate::engine::{EngineError, GuardEngine};
use crate::signer::{fingerprint, SignError, Signer};
use crate::template::TemplateSignError;
use crate::validate::{ValidationOptions, ValidationReport};

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The database could not be read or written.
    #[error("registry database: {0}")]
    Store(#[from] rusqlite::Error),
    /// The audit log refused or failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// No identity has this token, or it is disabled.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// The identity lacks the role the operation needs.
    #[error("`{identity}` may not {action}: that needs the {role} role")]
    Forbidden {
        /// Who asked.
        identity: String,
        /// What they asked for.
        action: &'static str,
        /// The role it needs.
        role: Role,
    },
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change contradicts what is stored (a version pending, a name taken, a second
    /// approval by one person).
    #[error("{0}")]
    Conflict(String),
    /// An argument is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The validation pipeline refused the template; the report says why and was recorded.
    #[error("the validation pipeline refused the template (report sha256:{})", .0.digest())]
    Validation(Box<ValidationReport>),
    /// The guard refused the signed envelope.
    #[error("the guard refused the envelope ({code}): {message}")]
    Refused {
        /// The refusal code (`docs/contract.md`).
        code: String,
        /// What it means here.
        message: String,
    },
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The statement could not be made.
    #[error(transparent)]
    Template(#[from] TemplateSignError),
    /// The guard module failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A stored row is not what this version of Sigil writes.
    #[error("the registry holds a malformed record: {0}")]
    Corrupt(String),
    /// The system's random generator failed.
    #[error("no randomness for a token")]
    Random,
}

impl From<aws_lc_rs::error::Unspecified> for RegistryError {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        RegistryError::Random
    }
}

/// Where a version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    /// Signed by its publisher, waiting for approvals.
    Pending,
    /// Approved: it verifies against the keyring and the template's policy.
    Approved,
    /// Withdrawn: never to be used again.
    Withdrawn,
}

impl VersionState {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Pending => "pending",
            VersionState::Approved => "approved",
            VersionState::Withdrawn => "withdrawn",
        }
    }
}

/// An identity as listed (its token is never stored, only its hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IdentityInfo {
    /// Name.
    pub name: String,
    /// Roles.
    pub roles: Vec<String>,
    /// When it was made.
    pub created_at: String,
    /// When it was disabled.
    pub disabled_at: Option<String>,
}

/// A key as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    /// The keyring record verifiers get.
    #[serde(flatten)]
    pub record: KeyRecord,
    /// The identity whose key it is.
    pub owner: String,
    /// When it was added.
    pub added_at: String,
}

/// One signature on a version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignatureInfo {
    /// Who signed.
    pub identity: String,
    /// With which key.
    pub fingerprint: String,
    /// When.
    pub signed_at: String,
    /// The audit entry that recorded it.
    pub audit_seq: u64,
}

/// A version as listed in a history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VersionInfo {
    /// Template id.
    pub template_id: String,
    /// Version.
    pub version: u64,
    /// State.
    pub state: VersionState,
    /// Whether it is the active version.
    pub active: bool,
    /// Hex SHA-256 of the template.
    pub digest: String,
    /// Hex SHA-256 of its validation report.
    pub validation_digest: Option<String>,
    /// Who published it.
    pub publisher: String,
    /// When it was submitted.
    pub submitted_at: String,
    /// When it was approved.
    pub approved_at: Option<String>,
    /// When it was withdrawn.
    pub withdrawn_at: Option<String>,
    /// The `template.published` entry of its final envelope.
    pub published_seq: Option<u64>,
    /// Its signatures: the publisher's first, then the approvals.
    pub signatures: Vec<SignatureInfo>,
}

/// A stored version with its text and envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    /// What a history lists.
    pub info: VersionInfo,
    /// The exact template bytes.
    pub template: Vec<u8>,
    /// The variable schema, canonical JSON.
    pub variables_schema: String,
    /// The envelope with every signature so far.
    pub envelope: Envelope,
}

/// A template as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TemplateSummary {
    /// Template id.
    pub template_id: String,
    /// Highest version stored.
    pub latest: Option<u64>,
    /// The active version.
    pub active: Option<u64>,
    /// A version waiting for approvals.
    pub pending: Option<u64>,
    /// The template's policy.
    pub policy: TemplatePolicy,
}

/// What to publish.
#[derive(Debug, Clone, Copy)]
pub struct PublishRequest<'a> {
    /// Template id.
    pub template_id: &'a str,
    /// The exact template bytes.
    pub template: &'a [u8],
    /// The variable schema (JSON).
    pub variables_schema: &'a [u8],
    /// How long the signature stays good, in days.
    pub valid_days: u32,
    /// The pipeline's options (its `now` is the publication time).
    pub validation: ValidationOptions,
}

/// What a change recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The audit entries appended.
    pub entries: Vec<Appended>,
    /// The checkpoint signed over them.
    pub checkpoint: SignedCheckpoint,
}

/// What publishing or approving did.
#[derive(Debug, Clone)]
pub struct Publication {
    /// Template id.
    pub template_id: String,
    /// Version.
    pub version: u64,
    /// Its state now.
    pub state: VersionState,
    /// The envelope with every signature so far.
    pub envelope: Envelope,
    /// Why it is still pending, when it is (the guard's refusal message).
    pub waiting_for: Option<String>,
    /// The validation report (publishing only).
    pub report: Option<ValidationReport>,
    /// The audit entries and checkpoint.
    pub recorded: Recorded,
}

/// The template registry. See the module documentation.
#[derive(Debug)]
pub struct Registry {
    log: AuditLog,
}

/// Keys in a keyring at most (`guard_core::provenance::MAX_KEYRING_KEYS`).
const MAX_KEYS: usize = 64;

impl Registry {
    /// Opens the registry in the database at `path`, creating it (and its audit log) if needed.
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        Self::open_with_origin(path, None)
    }

    /// Opens or creates the registry; a new audit log gets `origin`, an existing one must
    /// have it.
    pub fn open_with_origin(path: &Path, origin: Option<&str>) -> Result<Self, RegistryError> {
        let mut log = AuditLog::open_with_origin(path, origin)?;
        store::init(log.connection())?;
        Ok(Registry { log })
    }

    /// The audit log the registry records into.
    pub fn audit_log(&self) -> &AuditLog {
        &self.log
    }

    /// Whether the log's database holds a registry with identities.
    pub fn is_registry(log: &AuditLog) -> Result<bool, RegistryError> {
        let conn = log.connection_ref();
        let tables: i64 = conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'registry_principals'",
            [],
            |r| r.get(0),
        )?;
        Ok(tables > 0 && store::principal_count(conn)? > 0)
    }

    /// Makes the first identity, an admin, and returns its token. Refused once any identity
    /// exists: after that only an admin makes identities.
    pub fn bootstrap(
        &mut self,
        name: &str,
        now: Timestamp,
        log_signer: &dyn Signer,
    ) -> Result<String, RegistryError> {
        let roles = BTreeSet::from([Role::Admin]);
        self.add_unattended(name, &roles, now, log_signer, |tx| {
            if store::principal_count(tx)? > 0 {
                return Err(RegistryError::Conflict(
                    "the registry already has identities; an admin adds more with `sigil identity add`"
                        .into(),
                ));
            }
            Ok(())
        })
    }

    /// Adds an identity with `roles` for whoever can write the database itself (the operator of
    /// `sigil apikey create`, who needs no token: file access is the authority), and returns its
    /// token. The audit entry names the actor `role:system`, as for the first admin.
    pub fn add_identity_locally(
        &mut self,
        name: &str,
        roles: &BTreeSet<Role>,
        now: Timestamp,
        log_signer: &dyn Signer,
    ) -> Result<String, RegistryError> {
        self.add_unattended(name, roles, now, log_signer, |tx| {
            check_clock(tx, now)?;
            if store::principal_by_name(tx, name)?.is_some() {
                return Err(RegistryError::Conflict(format!("identity `{name}` exists")));
            }
            Ok(())
        })
    }

    /// Adds an identity with no identity acting (`role:system` in the audit entry), after
    /// `check` passes inside the same transaction, and returns its token.
    fn add_unattended(
        &mut self,
        name: &str,
        roles: &BTreeSet<Role>,
        now: Timestamp,
        log_signer: &dyn Signer,
        check: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(), RegistryError>,
    ) -> Result<String, RegistryError> {
        check_identity_name(name)?;
        let origin = self.log.origin().to_string();
        let tx = self
            .log
            .connection()
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        check(&tx)?;
        let token = roles::new_token()?;
        let key = roles::new_pseudonym_key()?;
        store::insert_principal(
            &tx,
            name,
            roles,
            &roles::token_hash(&token),
            &key,
            &now.to_string(),
        )?;
        let entry = admin_entry(
            now,
            "role:system".into(),
            format!(
                "identity {} roles {}",
                pseudonym_of(&key, name),
                roles_list(roles)
            ),
        );
        audit::record_in(&tx, &origin, vec![entry], log_signer)?;
        tx.commit()?;
        Ok(token)
    }

    /// The identity a token belongs to.
    pub fn authenticate(&self, token: &str) -> Result<Session, RegistryError> {
        let token = token.trim();
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Err(RegistryError::Unauthenticated(format!(
                "a token starts with `{TOKEN_PREFIX}`"
            )));
        }
        let conn = self.log_conn();
        let row = store::principal_by_token(conn, &roles::token_hash(token))?
            .ok_or_else(|| RegistryError::Unauthenticated("unknown token".into()))?;
        if row.disabled_at.is_some() {
            return Err(RegistryError::Unauthenticated(format!(
                "identity `{}` is disabled",
                row.name
            )));
        }
        Ok(Session {
            id: row.id,
            name: row.name,
            roles: row.roles,
        })
    }

    /// Adds an identity with `roles` and returns its token (admin).
    pub fn add_identity(
        &mut self,
        session: &Session,
        name: &str,
        roles: &BTreeSet<Role>,
        now: Timestamp,
        log_signer: &dyn Signer,
    ) -> Result<String, RegistryError> {
        check_identity_name(name)?;
        let token = roles::new_token()?;
        let key = roles::new_pseudonym_key()?;
        self.change(
            session,
            Role::Admin,
            "add identities",
            now,
            log_signer,
            |tx, actor| {
                if store::principal_by_name(tx, name)?.is_some() {
                    return Err(RegistryError::Conflict(format!("identity `{name}` exists")));
                }
                store::insert_principal(
                    tx,
                    name,
                    roles,
                    &roles::token_hash(&token),
                    &key,
                    &now.to_string(),
                )?;
                Ok(vec![admin_entry(
                    now,
                    actor,
                    format!(
                        "identity {} roles {}",
                        pseudonym_of(&key, name),
                        roles_list(roles)
                    ),
                )])
            },
        )?;
        Ok(token)
    }

    /// Replaces an identity's roles (admin). The last admin cannot give up the role.
    pub fn set_roles(
        &mut self,
        session: &Session,
        name: &str,
        roles: &BTreeSet<Role>,
        now: Timestamp,
        log_signer: &dyn Signer,
    ) -> Result<Recorded, RegistryError> {
        self.change(
            session,
            Role::Admin,
            "change roles",
            now,
            log_signer,
            |tx, actor| {
                let row = identity(tx, name)?;
                if row.roles.contains(&Role::Admin)
                    && !roles.contains(&Role::Admin)
                    && row.disabled_at.is_none()
                    && store::count_with_role(tx, Role::Admin)? <= 1
                {
                    return Err(RegistryError::Conflict(format!(
                        "`{name}` is the last admin; make another admin first"
                    )));
                }
                store::set_roles(tx, row.id, roles)?;
                Ok(vec![admin_entry(
                    now,
                    actor,
                    format!(
                        "identity {} roles {}",
                        pseudonym_of(&row.pseudonym_key, &row.name),
                        roles_list(roles)
                    ),
                )])
            },
        )
    }

    /// Disables an identity (admin): its token stops working. The last admin cannot be
    /// disabled.
    pub fn disable_identity(
        &mut self,
        session: &Session,
        name: &str,
        now: Timestamp,
        log_signer: &dyn Signer,
    ) -> Result<Recorded, RegistryError> {
        self.change(
            session,
            Role::Admin,
            "disable identities",
            now,
            log_signer,
            |tx, actor| {
                let row = identity(tx, name)?;
                if row.disabled_at.is_some() {
                    return Err(RegistryError::Conflict(format!(
                        "`{name}` is already disabled"
                    )));
                }
                if row.roles.contains(&Role::Admin) && store::count_with_role(tx, Role::Admin)? <= 1
                {
                    return Err(RegistryError::Conflict(format!(
                        "`{name}` is the last admin; make another admin first"
                    )));
                }
                store::disable_principal(tx, row.id, &now.to_string())?;
                Ok(vec![admin_entry(
                    now,
                    actor,
                    format!(
                        "identity {} disabled",
                        pseudonym_of(&row.pseudonym_key, &row.name)
                    ),
                )])
            },
        )
    }

    /// Gives an identity a new token and returns it; the old one stops working (admin).
    pub fn reissue_token(
        &mut self,
        session: &Session,
        name: &str,
        now: Timestamp,
        log_signer: &dyn Signer,
    ) -> Result<String, RegistryError> {
        let token = roles::new_token()?;
        self.change(
            session,
            Role::Admin,
            "issue tokens",
            now,
            log_signer,
            |tx, actor| {
                let row = identity(tx, name)?;
                if row.disabled_at.is_some() {
                    return Err(RegistryError::Conflict(format!(
                        "`{name}` is disabled; a token for it would not work"
                    )));
                }
                store::set_token(tx, row.id, &roles::token_hash(&token))?;
                Ok(vec![admin_entry(
                    now,
                    actor,
                    format!(
                        "identity {} token reissued",
                        pseudonym_of(&row.pseudonym_key, &row.name)
                    ),
                )])
            },
        )?;
        Ok(token)
    }

    /// Every identity (admin or auditor).
    pub fn identities(&self, session: &Session) -> Result<Vec<IdentityInfo>, RegistryError> {
        let conn = self.log_conn();
        authorize_any(
            conn,
            session,
            &[Role::Admin, Role::Auditor],
            "list identities",
        )?;
        Ok(store::principals(conn)?
            .into_iter()
            .map(|p| IdentityInfo {
                name: p.name,
                roles: p.roles.iter().map(|r| r.as_str().to_string()).collect(),
                created_at: p.created_at,
                disabled_at: p.disabled_at,
            })
            .collect())
    }

    /// Adds a public key for `owner` to the keyring (admin). The key is checked as the verifier
    /// checks it.
    #[allow(clippy::too_many_arguments)]
    pub fn add_key(
        &mut self,
        session: &Session,
        owner: &str,
        spki: &[u8],
        scheme: Scheme,
        valid_from: Timestamp,
        valid_until: Option<Timestamp>,
        now: Timestamp,
        log_signer: &dyn Signer,
    ) -> Result<String, RegistryError> {
        let fp = fingerprint(spki);
        guard_core::PinnedKey::from_spki(spki, scheme).map_err(|e| {
            RegistryError::Invalid(format!("the verifier would refuse this key: {e}"))
        })?;
        if valid_until.is_some_and(|until| until <= valid_from) {
            return Err(RegistryError::Invalid(
                "the key's end must be later than its start".into(),
            ));
        }
        self.change(
            session,
            Role::Admin,
            "add keys",
            now,
            log_signer,
            |tx, actor| {
                let owner = identity(tx, owner)?;
                if owner.disabled_at.is_some() {
                    return Err(RegistryError::Conflict(format!(
                        "`{}` is disabled; keys are added for active identities",
                        owner.name
                    )));
                }
                insert_key(
                    tx,
                    &fp,
                    spki,
                    scheme,
                    owner.id,
                    valid_from,
                    valid_until,
                    now,
                )?;
                Ok(vec![key_entry(now, actor, &fp, "added", BTreeMap::new())])
            },
        )?;
        Ok(fp)
    }

    /// Revokes a key from `at` on (admin): from then on none of its signatures counts,
    /// whenever made.
    pub fn revoke_key(
        &mut self,
        session: &Session,
        fingerprint: &str,
        at: Timestamp,
        now: Timestamp,
        log_signer: &dyn Signer,
    ) -> Result<Recorded, RegistryError> {
        self.change(
            session,
            Role::Admin,
            "revoke keys",
            now,
            log_signer,
            |tx, actor| {
                let key = stored_key(tx, fingerprint)?;
                if let Some(revoked) = &key.revoked_at {
                    return Err(RegistryError::Conflict(format!(
                        "key {fingerprint} is revoked already (from {revoked})"
                    )));
                }
                store::set_key_end(
                    tx,
                    fingerprint,
                    key.valid_until.as_deref(),
                    Some(&at.to_string()),
                )?;
                Ok(vec![key_entry(
                    now,
                    actor,
                    fingerprint,
                    "revoked",
                    BTreeMap::new(),
                )])
            },
        )
    }

    /// Rotates a key (admin): the new key joins the keyring for the old key's owner from now
    /// on, and the old key is retired at `retire_old_at` (signatures by it stop counting then;
    /// without it, the old key stays until retired or revoked later).
    #[allow(clippy::too_many_arguments)]
    pub fn rotate_key(
        &mut self,
        session: &Session,
        old_fingerprint: &str,
        new_spki: &[u8],
        scheme: Scheme,
        retire_old_at: Option<Timestamp>,
        now: Timestamp,
        log_signer: &dyn Signer,
    ) -> Result<String, RegistryError> {
        let new_fp = fingerprint(new_spki);
        guard_core::PinnedKey::from_spki(new_spki, scheme).map_err(|e| {
            RegistryError::Invalid(format!("the verifier would refuse the new key: {e}"))
        })?;
        self.change(
            session,
            Role::Admin,
            "rotate keys",
            now,
            log_signer,
            |tx, actor| {
                let old = stored_key(tx, old_fingerprint)?;
                if old.revoked_at.is_some() {
                    return Err(RegistryError::Conflict(format!(
                        "key {old_fingerprint} is revoked; add a new key instead of rotating it"
                    )));
                }
                if let Some(retire) = retire_old_at {
                    let from = parse_stored_time(&old.valid_from)?;
                    if retire <= from {
                        return Err(RegistryError::Invalid(
                            "the old key would retire before it became valid".into(),
                        ));
                    }
                    store::set_key_end(tx, old_fingerprint, Some(&retire.to_string()), None)?;
                }
                insert_key(tx, &new_fp, new_spki, scheme, old.owner, now, None, now)?;
                let digests = BTreeMap::from([
                    ("old_key".to_string(), old_fingerprint.to_string()),
                    ("new_key".to_string(), new_fp.clone()),
                ]);
                let mut entries = vec![key_entry(now, actor.clone(), &new_fp, "rotated", digests)];
                // Policies that count the old key count the new one beside it, so approvals
                // made before the rotation keep counting until the old key retires.
                for template_id in store::template_ids(tx)? {
                    let mut policy = template_policy(tx, &template_id)?;
                    let Some(approvals) = policy.approvals.as_mut() else {
                        continue;
                    };
                    if approvals.of.iter().any(|fp| fp == old_fingerprint)
                        && !approvals.of.contains(&new_fp)
                    {
                        approvals.of.push(new_fp.clone());
                        entries.push(store_policy(tx, &template_id, &policy, now, actor.clone())?);
                    }
                }
                Ok(entries)
            },
        )?;
        Ok(new_fp)
    }

    /// Every key, with its owner (any role).
    pub fn keys(&self, session: &Session) -> Result<Vec<KeyInfo>, RegistryError> {
        let conn = self.log_conn();
        authorize_any(conn, session, &Role::ALL, "read the keyring")?;
        key_infos(conn)
    }

    /// The keyring verifiers pin: `{keys: [...]}` (any role).
    pub fn keyring(&self, session: &Session) -> Result<Vec<KeyRecord>, RegistryError> {
        Ok(self.keys(session)?.into_iter().map(|k| k.record).collect())
    }

    /// A template's policy; the default (one signature by any key) when none was set (any
    /// role).
    pub fn template_policy(
        &self,
        session: &Session,
        template_id: &str,
    ) -> Result<TemplatePolicy, RegistryError> {
        let conn = self.log_conn();
        authorize_any(conn, session, &Role::ALL, "read template policies")?;
        template_policy(conn, template_id)
    }

    /// Sets how many distinct signers, among which keys, a template's versions need (admin).
    /// `None` goes back to one signature by any key.
    ///
    /// Every key named must be in the keyring and not revoked, each once, and no two may be one
    /// person's (an offline verifier counts keys, not people) unless one of them is retiring.
    /// A version pending under the old policy that verifies under the new one is approved and
    /// recorded as published in the same change.
    #[allow(clippy::too_many_arguments)]
    pub fn set_approvals(
        &mut self,
        session: &Session,
        template_id: &str,
        approvals: Option<Approvals>,
        now: Timestamp,
        log_signer: &dyn Signer,
        engine: &GuardEngine,
    ) -> Result<TemplatePolicy, RegistryError> {
        check_template_id(template_id)?;
        let mut result = None;
        self.change(
            session,
            Role::Admin,
            "set template policies",
            now,
            log_signer,
            |tx, actor| {
                let mut policy = template_policy(tx, template_id)?;
                if let Some(approvals) = &approvals {
                    check_approvers(tx, approvals, now)?;
                }
                policy.approvals = approvals.clone();
                let mut entries = vec![store_policy(tx, template_id, &policy, now, actor.clone())?];
                let seq = audit::next_seq_in(tx)?;
                if let Some(published) =
                    promote_pending(tx, engine, template_id, &policy, now, seq + 1, actor)?
                {
                    entries.push(published);
                }
                result = Some(policy);
                Ok(entries)
            },
        )?;
        result.ok_or_else(|| RegistryError::Corrupt("policy not set".into()))
    }

    /// Withdraws a version (admin): it is never to be used again, and an approved one raises
    /// the template's `min_version` above it, so neither it nor anything older can be pinned.
    pub fn withdraw(
        &mut self,
        session: &Session,
        template_id: &str,
        version: u64,
        now: Timestamp,
        log_signer: &dyn Signer,
    ) -> Result<TemplatePolicy, RegistryError> {
        let mut result = None;
        self.change(
            session,
            Role::Admin,
            "withdraw templates",
            now,
            log_signer,
            |tx, actor| {
                let mut row = stored_version(tx, template_id, version)?;
                if row.state == VersionState::Withdrawn {
                    return Err(RegistryError::Conflict(format!(
                        "`{template_id}` v{version} is withdrawn already"
                    )));
                }
                let mut policy = template_policy(tx, template_id)?;
                if row.state == VersionState::Approved {
                    policy.min_version = policy.min_version.max(version.saturating_add(1));
                }
                if !policy.withdrawn.contains(&version) {
                    policy.withdrawn.push(version);
                    policy.withdrawn.sort_unstable();
                }
                row.state = VersionState::Withdrawn;
                row.withdrawn_at = Some(now.to_string());
                store::update_version(tx, &row)?;
                let entry = store_policy(tx, template_id, &policy, now, actor)?;
                result = Some(policy);
                Ok(vec![entry])
            },
        )?;
        result.ok_or_else(|| RegistryError::Corrupt("policy not set".into()))
    }

    /// Every template, with its latest, active and pending versions (any role).
    pub fn list(&self, session: &Session) -> Result<Vec<TemplateSummary>, RegistryError> {
        let conn = self.log_conn();
        authorize_any(conn, session, &Role::ALL, "list templates")?;
        store::template_ids(conn)?
            .into_iter()
            .map(|id| {
                let versions = store::versions(conn, &id)?;
                let policy = template_policy(conn, &id)?;
                Ok(TemplateSummary {
                    latest: versions.last().map(|v| v.version),
                    active: active_version(&versions, &policy).map(|v| v.version),
                    pending: versions
                        .iter()
                        .find(|v| v.state == VersionState::Pending)
                        .map(|v| v.version),
                    template_id: id,
                    policy,
                })
            })
            .collect()
    }

    /// Every version of a template, oldest first (any role).
    pub fn history(
        &self,
        session: &Session,
        template_id: &str,
    ) -> Result<Vec<VersionInfo>, RegistryError> {
        let conn = self.log_conn();
        authorize_any(conn, session, &Role::ALL, "read template history")?;
        let versions = store::versions(conn, template_id)?;
        if versions.is_empty() {
            return Err(RegistryError::NotFound(format!(
                "no template `{}`",
                shorten(template_id)
            )));
        }
        let policy = template_policy(conn, template_id)?;
        let active = active_version(&versions, &policy).map(|v| v.version);
        versions
            .iter()
            .map(|v| version_info(conn, v, active))
            .collect()
    }

    /// One version with its text and envelope; without a version, the active one (any role).
    pub fn show(
        &self,
        session: &Session,
        template_id: &str,
        version: Option<u64>,
    ) -> Result<StoredVersion, RegistryError> {
        let conn = self.log_conn();
        authorize_any(conn, session, &Role::ALL, "read templates")?;
        let versions = store::versions(conn, template_id)?;
        let policy = template_policy(conn, template_id)?;
        let active = active_version(&versions, &policy).map(|v| v.version);
        let row = match version {
            Some(version) => versions.iter().find(|v| v.version == version),
            None => versions.iter().find(|v| Some(v.version) == active),
        }
        .ok_or_else(|| {
            RegistryError::NotFound(match version {
                Some(v) => format!("no version {v} of `{}`", shorten(template_id)),
                None => format!("`{}` has no active version", shorten(template_id)),
            })
        })?;
        Ok(StoredVersion {
            info: version_info(conn, row, active)?,
            template: row.template.clone(),
            variables_schema: row.variables_schema.clone(),
            envelope: serde_json::from_str(&row.envelope)
                .map_err(|e| RegistryError::Corrupt(format!("stored envelope: {e}")))?,
        })
    }

    /// A stored validation report by its digest (any role).
    pub fn report(&self, session: &Session, digest: &str) -> Result<String, RegistryError> {
        let conn = self.log_conn();
        authorize_any(conn, session, &Role::ALL, "read validation reports")?;
        store::report(conn, digest)?
            .ok_or_else(|| RegistryError::NotFound(format!("no report {}", shorten(digest))))
    }

    /// An offline bundle for an approved version: its final envelope, the `template.published`
    /// entry, an inclusion proof and the latest checkpoint (any role).
    pub fn bundle(
        &self,
        session: &Session,
        template_id: &str,
        version: Option<u64>,
    ) -> Result<OfflineBundle, RegistryError> {
        let stored = self.show(session, template_id, version)?;
        let seq = stored.info.published_seq.ok_or_else(|| {
            RegistryError::Conflict(format!(
                "`{template_id}` v{} is not approved; only approved versions have bundles",
                stored.info.version
            ))
        })?;
        let policy = template_policy(self.log_conn(), template_id)?;
        let policy =
            serde_json::to_value(policy).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        Ok(self.log.offline_bundle(seq, &stored.envelope, policy)?)
    }

    /// A verification request for the active version (or `version`), with the registry's
    /// keyring and the template's policy: what a verifier is handed (any role).
    pub fn verification_request(
        &self,
        session: &Session,
        template_id: &str,
        version: Option<u64>,
        now: Timestamp,
    ) -> Result<serde_json::Value, RegistryError> {
        let stored = self.show(session, template_id, version)?;
        if stored.info.state == VersionState::Pending {
            return Err(RegistryError::Conflict(format!(
                "`{}` v{} is waiting for approvals; it is not handed to verifiers",
                shorten(template_id),
                stored.info.version
            )));
        }
        let conn = self.log_conn();
        let policy = template_policy(conn, template_id)?;
        let keys: Vec<KeyRecord> = key_infos(conn)?.into_iter().map(|k| k.record).collect();
        let text = String::from_utf8(stored.template)
            .map_err(|_| RegistryError::Corrupt("stored template is not UTF-8".into()))?;
        Ok(serde_json::json!({
            "envelope": stored.envelope,
            "template": text,
            "keyring": {"keys": keys},
            "template_policy": policy,
            "template_id": template_id,
            "version": version,
            "now": now.to_string(),
        }))
    }

    fn log_conn(&self) -> &rusqlite::Connection {
        self.log.connection_ref()
    }

    /// The audit actor for an identity: its keyed pseudonym.
    fn actor(&self, session: &Session) -> Result<String, RegistryError> {
        let row = store::principal_by_id(self.log_conn(), session.id)?
            .ok_or_else(|| RegistryError::Unauthenticated("identity is gone".into()))?;
        Ok(pseudonym_of(&row.pseudonym_key, &row.name))
    }

    /// Runs an admin-style change: authorizes inside the transaction, lets `f` write and name
    /// its entries, and records them with a signed checkpoint before committing.
    #[allow(clippy::too_many_arguments)]
    fn change(
        &mut self,
        session: &Session,
        role: Role,
        action: &'static str,
        now: Timestamp,
        log_signer: &dyn Signer,
        f: impl FnOnce(&rusqlite::Transaction<'_>, String) -> Result<Vec<NewEntry>, RegistryError>,
    ) -> Result<Recorded, RegistryError> {
        self.change_with(session, role, action, now, log_signer, |tx, actor| {
            Ok(((), f(tx, actor)?))
        })
        .map(|((), recorded)| recorded)
    }

    /// As `change`, for changes made outside the registry's own tables (the behaviour store's
    /// erasures): `f` writes in the registry's transaction, returns its result and the entries
    /// to record, and everything commits together or not at all.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn change_with<T, E: From<RegistryError>>(
        &mut self,
        session: &Session,
        role: Role,
        action: &'static str,
        now: Timestamp,
        log_signer: &dyn Signer,
        f: impl FnOnce(&rusqlite::Transaction<'_>, String) -> Result<(T, Vec<NewEntry>), E>,
    ) -> Result<(T, Recorded), E> {
        let origin = self.log.origin().to_string();
        let tx = self
            .log
            .connection()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(RegistryError::from)?;
        let caller = authorize(&tx, session, role, action)?;
        check_clock(&tx, now).map_err(E::from)?;
        let actor = pseudonym_of(&caller.pseudonym_key, &caller.name);
        let (value, entries) = f(&tx, actor)?;
        let (entries, checkpoint) =
            audit::record_in(&tx, &origin, entries, log_signer).map_err(RegistryError::from)?;
        tx.commit().map_err(RegistryError::from)?;
        Ok((
            value,
            Recorded {
                entries,
                checkpoint,
            },
        ))
    }

    /// As `change_with`, for changes no identity made (the service's own: incidents it opened,
    /// items it held): `f` writes in the registry's transaction and returns the entries to
    /// record as `role:system`; nothing is signed when there are none.
    pub(crate) fn record_unattended<T, E: From<RegistryError>>(
        &mut self,
        now: Timestamp,
        log_signer: &dyn Signer,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(T, Vec<NewEntry>), E>,
    ) -> Result<(T, Option<Recorded>), E> {
        let origin = self.log.origin().to_string();
        let tx = self
            .log
            .connection()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(RegistryError::from)?;
        check_clock(&tx, now).map_err(E::from)?;
        let (value, entries) = f(&tx)?;
        let recorded = if entries.is_empty() {
            None
        } else {
            let (entries, checkpoint) =
                audit::record_in(&tx, &origin, entries, log_signer).map_err(RegistryError::from)?;
            Some(Recorded {
                entries,
                checkpoint,
            })
        };
        tx.commit().map_err(RegistryError::from)?;
        Ok((value, recorded))
    }

    /// Checks, against the stored identity, that the session holds one of `roles` (for
    /// operations on data kept outside the registry, such as the behaviour store's).
    pub fn authorize(
        &self,
        session: &Session,
        roles: &[Role],
        action: &'static str,
    ) -> Result<(), RegistryError> {
        authorize_any(self.log_conn(), session, roles, action).map(|_| ())
    }
}

/// The highest approved version that is not withdrawn and not below `min_version`.
fn active_version<'a>(
    versions: &'a [VersionRow],
    policy: &TemplatePolicy,
) -> Option<&'a VersionRow> {
    versions
        .iter()
        .filter(|v| {
            v.state == VersionState::Approved
                && v.version >= policy.min_version
                && !policy.withdrawn.contains(&v.version)
        })
        .max_by_key(|v| v.version)
}

fn version_info(
    conn: &rusqlite::Connection,
    row: &VersionRow,
    active: Option<u64>,
) -> Result<VersionInfo, RegistryError> {
    let names = identity_names(conn)?;
    let name = |id: i64| names.get(&id).cloned().unwrap_or_else(|| format!("#{id}"));
    Ok(VersionInfo {
        template_id: row.template_id.clone(),
        version: row.version,
        state: row.state,
        active: active == Some(row.version),
        digest: row.digest.clone(),
        validation_digest: row.report_digest.clone(),
        publisher: name(row.publisher),
        submitted_at: row.submitted_at.clone(),
        approved_at: row.approved_at.clone(),
        withdrawn_at: row.withdrawn_at.clone(),
        published_seq: row.published_seq,
        signatures: store::signatures(conn, &row.template_id, row.version)?
            .into_iter()
            .map(|s| SignatureInfo {
                identity: name(s.principal),
                fingerprint: s.fingerprint,
                signed_at: s.signed_at,
                audit_seq: s.audit_seq,
            })
            .collect(),
    })
}

fn identity_names(conn: &rusqlite::Connection) -> Result<BTreeMap<i64, String>, RegistryError> {
    Ok(store::principals(conn)?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect())
}

fn key_infos(conn: &rusqlite::Connection) -> Result<Vec<KeyInfo>, RegistryError> {
    let names = identity_names(conn)?;
    store::keys(conn)?
        .into_iter()
        .map(|k| {
            let scheme = parse_scheme(&k.scheme)?;
            Ok(KeyInfo {
                owner: names
                    .get(&k.owner)
                    .cloned()
                    .unwrap_or_else(|| format!("#{}", k.owner)),
                added_at: k.added_at,
                record: KeyRecord {
                    fingerprint: k.fingerprint,
                    spki: STANDARD.encode(&k.spki),
                    scheme,
                    valid_from: k.valid_from,
                    valid_until: k.valid_until,
                    revoked_at: k.revoked_at,
                },
            })
        })
        .collect()
}

/// The caller's row, if it is enabled and holds `role`.
fn authorize(
    conn: &rusqlite::Connection,
    session: &Session,
    role: Role,
    action: &'static str,
) -> Result<PrincipalRow, RegistryError> {
    authorize_any(conn, session, &[role], action)
}

fn authorize_any(
    conn: &rusqlite::Connection,
    session: &Session,
    roles: &[Role],
    action: &'static str,
) -> Result<PrincipalRow, RegistryError> {
    let row = store::principal_by_id(conn, session.id)?
        .ok_or_else(|| RegistryError::Unauthenticated("identity is gone".into()))?;
    if row.disabled_at.is_some() {
        return Err(RegistryError::Unauthenticated(format!(
            "identity `{}` is disabled",
            row.name
        )));
    }
    if roles.iter().any(|r| row.roles.contains(r)) {
        return Ok(row);
    }
    Err(RegistryError::Forbidden {
        identity: row.name,
        action,
        role: roles.first().copied().unwrap_or(Role::Admin),
    })
}

/// The signer's key must be in the keyring, owned by the caller, valid now and not revoked:
/// a signature is a person's, so nobody signs with another's key.
fn check_signing_key(
    conn: &rusqlite::Connection,
    session: &Session,
    signer: &dyn Signer,
    now: Timestamp,
) -> Result<String, RegistryError> {
    let fp = fingerprint(signer.public_key_der());
    let key = store::key(conn, &fp)?.ok_or_else(|| {
        RegistryError::Invalid(format!(
            "key {fp} is not in the keyring; an admin adds it with `sigil template add-key`"
        ))
    })?;
    if key.owner != session.id {
        return Err(RegistryError::Invalid(format!(
            "key {fp} is not `{}`'s; sign with your own key",
            session.name()
        )));
    }
    if key.scheme != scheme_name(signer.scheme()) {
        return Err(RegistryError::Invalid(format!(
            "key {fp} is pinned for {}, but the signer uses {}",
            key.scheme,
            scheme_name(signer.scheme())
        )));
    }
    if let Some(revoked) = &key.revoked_at {
        if parse_stored_time(revoked)? <= now {
            return Err(RegistryError::Invalid(format!(
                "key {fp} is revoked (from {revoked})"
            )));
        }
    }
    let from = parse_stored_time(&key.valid_from)?;
    let until = key
        .valid_until
        .as_deref()
        .map(parse_stored_time)
        .transpose()?;
    if now < from || until.is_some_and(|u| now >= u) {
        return Err(RegistryError::Invalid(format!(
            "key {fp} may sign only within [{}, {})",
            key.valid_from,
            key.valid_until.as_deref().unwrap_or("")
        )));
    }
    Ok(fp)
}

fn parse_scheme(name: &str) -> Result<Scheme, RegistryError> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| RegistryError::Corrupt(format!("key scheme `{}`", shorten(name))))
}

fn scheme_name(scheme: Scheme) -> String {
    serde_json::to_value(scheme)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
fn insert_key(
    tx: &rusqlite::Transaction<'_>,
    fp: &str,
    spki: &[u8],
    scheme: Scheme,
    owner: i64,
    valid_from: Timestamp,
    valid_until: Option<Timestamp>,
    now: Timestamp,
) -> Result<(), RegistryError> {
    if store::key(tx, fp)?.is_some() {
        return Err(RegistryError::Conflict(format!(
            "key {fp} is in the keyring already"
        )));
    }
    // The same modulus under another encoding would be one signer under two fingerprints.
    let new_key = guard_core::PinnedKey::from_spki(spki, scheme)
        .map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let existing = store::keys(tx)?;
    if existing.len() >= MAX_KEYS {
        return Err(RegistryError::Conflict(format!(
            "the keyring holds {MAX_KEYS} keys, the most a verifier accepts"
        )));
    }
    for other in &existing {
        let same = parse_scheme(&other.scheme)
            .ok()
            .and_then(|s| guard_core::PinnedKey::from_spki(&other.spki, s).ok())
            .is_some_and(|k| k.same_modulus(&new_key));
        if same {
            return Err(RegistryError::Conflict(format!(
                "the keyring has this key already, as {}",
                other.fingerprint
            )));
        }
    }
    store::insert_key(
        tx,
        &KeyRow {
            fingerprint: fp.to_string(),
            spki: spki.to_vec(),
            scheme: scheme_name(scheme),
            owner,
            valid_from: valid_from.to_string(),
            valid_until: valid_until.map(|t| t.to_string()),
            revoked_at: None,
            added_at: now.to_string(),
        },
    )
}

/// The keys of an approvals policy: known, not revoked, each once, one per person unless one of
/// a person's keys is retiring.
fn check_approvers(
    conn: &rusqlite::Connection,
    approvals: &Approvals,
    now: Timestamp,
) -> Result<(), RegistryError> {
    let mut owners: BTreeMap<i64, (String, bool)> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for fp in &approvals.of {
        if !seen.insert(fp.as_str()) {
            return Err(RegistryError::Invalid(format!(
                "key {} is listed twice",
                shorten(fp)
            )));
        }
        let key = stored_key(conn, fp)?;
        if key.revoked_at.is_some() {
            return Err(RegistryError::Invalid(format!(
                "key {} is revoked",
                shorten(fp)
            )));
        }
        let retiring = key.valid_until.is_some();
        if let Some(until) = key
            .valid_until
            .as_deref()
            .map(parse_stored_time)
            .transpose()?
        {
            if until <= now {
                return Err(RegistryError::Invalid(format!(
                    "key {} is retired",
                    shorten(fp)
                )));
            }
        }
        if let Some((other, other_retiring)) = owners.get(&key.owner) {
            if !retiring && !other_retiring {
                let names = identity_names(conn)?;
                return Err(RegistryError::Invalid(format!(
                    "keys {} and {} are both `{}`'s: one person, one approval",
                    shorten(other),
                    shorten(fp),
                    names.get(&key.owner).map_or("?", String::as_str)
                )));
            }
        }
        owners.insert(key.owner, (fp.clone(), retiring));
    }
    Ok(())
}

/// Approves the template's pending version if it verifies under `policy`, returning its
/// `template.published` entry (to be appended at `seq`).
fn promote_pending(
    tx: &rusqlite::Transaction<'_>,
    engine: &GuardEngine,
    template_id: &str,
    policy: &TemplatePolicy,
    now: Timestamp,
    seq: u64,
    actor: String,
) -> Result<Option<NewEntry>, RegistryError> {
    let history = store::versions(tx, template_id)?;
    let Some(mut pending) = history
        .iter()
        .find(|v| v.state == VersionState::Pending)
        .cloned()
    else {
        return Ok(None);
    };
    let envelope: Envelope = serde_json::from_str(&pending.envelope)
        .map_err(|e| RegistryError::Corrupt(format!("stored envelope: {e}")))?;
    match publish::evaluate(
        tx,
        engine,
        &envelope,
        &pending.template,
        template_id,
        policy,
        &history,
        now,
    )? {
        publish::Verdict::Verified => {}
        publish::Verdict::NeedsApprovals(_) => return Ok(None),
    }
    pending.state = VersionState::Approved;
    pending.approved_at = Some(now.to_string());
    pending.published_seq = Some(seq);
    store::update_version(tx, &pending)?;
    let envelope_hex =
        guard_core::transparency::envelope_digest(&envelope).map_err(AuditError::from)?;
    Ok(Some(published_entry(now, actor, &pending, envelope_hex)))
}

fn template_policy(
    conn: &rusqlite::Connection,
    template_id: &str,
) -> Result<TemplatePolicy, RegistryError> {
    match store::policy(conn, template_id)? {
        Some(json) => TemplatePolicy::from_json(json.as_bytes())
            .map_err(|e| RegistryError::Corrupt(format!("policy of `{template_id}`: {e}"))),
        None => Ok(TemplatePolicy::default()),
    }
}

fn store_policy(
    tx: &rusqlite::Transaction<'_>,
    template_id: &str,
    policy: &TemplatePolicy,
    now: Timestamp,
    actor: String,
) -> Result<NewEntry, RegistryError> {
    policy
        .check()
        .map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let json = serde_json::to_string(policy).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
    store::set_policy(tx, template_id, &json)?;
    Ok(NewEntry {
        time: now.to_string(),
        kind: EntryKind::Admin,
        actor,
        subject: Some(format!("{template_id} policy")),
        digests: BTreeMap::from([("policy".to_string(), sha256_hex(json.as_bytes()))]),
    })
}

fn stored_version(
    conn: &rusqlite::Connection,
    template_id: &str,
    version: u64,
) -> Result<VersionRow, RegistryError> {
    store::versions(conn, template_id)?
        .into_iter()
        .find(|v| v.version == version)
        .ok_or_else(|| {
            RegistryError::NotFound(format!(
                "no version {version} of `{}`",
                shorten(template_id)
            ))
        })
}

fn stored_key(conn: &rusqlite::Connection, fingerprint: &str) -> Result<KeyRow, RegistryError> {
    store::key(conn, fingerprint)?.ok_or_else(|| {
        RegistryError::NotFound(format!("no key {} in the keyring", shorten(fingerprint)))
    })
}

fn identity(conn: &rusqlite::Connection, name: &str) -> Result<PrincipalRow, RegistryError> {
    store::principal_by_name(conn, name)?
        .ok_or_else(|| RegistryError::NotFound(format!("no identity `{}`", shorten(name))))
}

fn admin_entry(now: Timestamp, actor: String, subject: String) -> NewEntry {
    NewEntry {
        time: now.to_string(),
        kind: EntryKind::Admin,
        actor,
        subject: Some(subject),
        digests: BTreeMap::new(),
    }
}

fn key_entry(
    now: Timestamp,
    actor: String,
    fingerprint: &str,
    what: &str,
    mut digests: BTreeMap<String, String>,
) -> NewEntry {
    digests
        .entry("key".to_string())
        .or_insert_with(|| fingerprint.to_string());
    NewEntry {
        time: now.to_string(),
        kind: EntryKind::KeyRotated,
        actor,
        subject: Some(format!("key {} {what}", short_fp(fingerprint))),
        digests,
    }
}

fn short_fp(fp: &str) -> &str {
    fp.get(..16).unwrap_or(fp)
}

fn pseudonym_of(key: &[u8], name: &str) -> String {
    audit::pseudonym(key, name)
}

fn roles_list(roles: &BTreeSet<Role>) -> String {
    if roles.is_empty() {
        "none".into()
    } else {
        roles::roles_to_text(roles)
    }
}

fn parse_stored_time(text: &str) -> Result<Timestamp, RegistryError> {
    Timestamp::parse(text).map_err(|_| RegistryError::Corrupt(format!("time `{}`", shorten(text))))
}

fn check_identity_name(name: &str) -> Result<(), RegistryError> {
    if is_identity_name(name) {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "identity name `{}` must be 1 to 64 of a-z 0-9 . _ -, starting with a letter or digit",
            shorten(name)
        )))
    }
}

fn check_template_id(id: &str) -> Result<(), RegistryError> {
    if guard_core::provenance::is_template_id(id) {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "template id `{}` must be 1 to 128 of a-z 0-9 - _ . / in non-empty path parts",
            shorten(id)
        )))
    }
}

/// At most 80 characters of user input in a message, control characters escaped.
fn shorten(s: &str) -> String {
    s.chars().take(80).flat_map(char::escape_debug).collect()
}

/// The log's entries are in time order: a change may not be dated before the last one, which a
/// wrong clock or a backdated `now` would do.
pub(super) fn check_clock(
    conn: &rusqlite::Connection,
    now: Timestamp,
) -> Result<(), RegistryError> {
    let size = audit::next_seq_in(conn)?;
    let Some(last) = size.checked_sub(1) else {
        return Ok(());
    };
    // An entry that does not parse is tampering, which appending finds and refuses (the log
    // signs nothing on top of what it cannot verify); the clock is judged by sound entries.
    let Ok(entry) = audit::entry_in(conn, last) else {
        return Ok(());
    };
    let at = parse_stored_time(&entry.time)?;
    if now < at {
        return Err(RegistryError::Invalid(format!(
            "the time given, {now}, is before the audit log's last entry ({at}); check the clock"
        )));
    }
    Ok(())
}

/// The `template.published` entry of a version approved with the envelope of digest
/// `envelope_hex`.
fn published_entry(
    now: Timestamp,
    actor: String,
    version: &VersionRow,
    envelope_hex: String,
) -> NewEntry {
    let mut digests = BTreeMap::from([
        ("envelope".to_string(), envelope_hex),
        ("template".to_string(), version.digest.clone()),
    ]);
    if let Some(report) = &version.report_digest {
        digests.insert("validation".to_string(), report.clone());
    }
    NewEntry {
        time: now.to_string(),
        kind: EntryKind::TemplatePublished,
        actor,
        subject: Some(format!("{}@{}", version.template_id, version.version)),
        digests,
    }
}

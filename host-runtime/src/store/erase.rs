//! A user's requests (erase, export) and the retention purge, done by a registry identity with
//! the admin role and recorded in the registry's audit log. Entries name the user only by the
//! keyed pseudonym of their subject id, never the id itself.

use std::collections::BTreeMap;

use guard_core::provenance::sha256_hex;
use guard_core::time::Timestamp;
use guard_core::transparency::EntryKind;

use super::{
    check_subject, check_tenant, sqlite, Erased, Export, ProfileStore, Purged, Retention,
    StoreError,
};
use crate::audit::NewEntry;
use crate::registry::{Recorded, Registry, RegistryError, Role, Session};
use crate::signer::Signer;

/// Where an erasure happens.
#[derive(Debug, Clone, Copy)]
pub enum EraseTarget<'a> {
    /// The behaviour tables are in the registry's own SQLite database: the erasure and its audit
    /// entry commit in one transaction.
    RegistryDatabase,
    /// Another store (PostgreSQL, or another SQLite file): the erasure commits there first, then
    /// the entry is recorded.
    Store(&'a dyn ProfileStore),
}

/// Why a user request or a purge failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersError {
    /// The registry refused (authentication, role) or failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The user's incidents and quarantined items could not be cleared; nothing was erased.
    #[error(transparent)]
    Incidents(#[from] crate::incidents::IncidentError),
    /// The user's keys could not be destroyed; nothing was erased.
    #[error("the user's keys could not be destroyed, so nothing was erased: {0}")]
    Keys(#[from] crate::vault::VaultError),
    /// The user's sealed records could not be opened for an export; nothing was exported.
    #[error("the user's sealed records could not be opened, so nothing was exported: {0}")]
    Sealed(crate::vault::VaultError),
    /// The data was erased in a separate store, but the audit entry could not be recorded.
    #[error("the user's data was erased ({} profiles, {} detections) but the audit entry could not be recorded: {source}", .erased.profiles, .erased.detections)]
    NotRecorded {
        /// What was erased.
        erased: Erased,
        /// Why recording failed.
        source: RegistryError,
    },
}

fn check_ids(subject: &str, tenant: Option<&str>) -> Result<(), StoreError> {
    check_subject(subject)?;
    tenant.map(check_tenant).transpose()?;
    Ok(())
}

fn tenant_digests(tenant: Option<&str>) -> BTreeMap<String, String> {
    tenant
        .map(|t| ("tenant".to_string(), sha256_hex(t.as_bytes())))
        .into_iter()
        .collect()
}

fn scope(tenant: Option<&str>) -> &'static str {
    if tenant.is_some() {
        " in one tenant"
    } else {
        ""
    }
}

fn erase_entry(
    now: Timestamp,
    actor: String,
    erased: &Erased,
    tenant: Option<&str>,
    keys: u64,
) -> NewEntry {
    NewEntry {
        time: now.to_string(),
        kind: EntryKind::Admin,
        actor,
        subject: Some(format!(
            "user {} erased{}: {} profiles, {} detections, {keys} encryption keys destroyed",
            erased.pseudonym,
            scope(tenant),
            erased.profiles,
            erased.detections
        )),
        digests: tenant_digests(tenant),
    }
}

/// Erases the user's profiles and detections (in every tenant, or in `tenant`) as `session`,
/// which needs the admin role, and records an `admin` entry naming the user by pseudonym.
///
/// With a `vault`, the user's encryption keys are destroyed first (crypto-shredding): every
/// copy of what was sealed for them (quarantined input, excerpts), in backups and dumps too,
/// becomes unreadable. If that fails, nothing is erased.
#[allow(clippy::too_many_arguments)]
pub fn erase_user(
    registry: &mut Registry,
    session: &Session,
    target: EraseTarget<'_>,
    vault: Option<&crate::vault::Vault>,
    subject: &str,
    tenant: Option<&str>,
    now: Timestamp,
    log_signer: &dyn Signer,
) -> Result<(Erased, Recorded), UsersError> {
    const ACTION: &str = "erase user data";
    check_ids(subject, tenant)?;
    registry.authorize(session, &[Role::Admin], ACTION)?;
    // Keys first: should the rest fail, what is left can no longer be read.
    let keys = match vault {
        Some(vault) => vault.shred_subject(subject, tenant)?,
        None => 0,
    };
    match target {
        EraseTarget::RegistryDatabase => {
            let done = registry.change_with(
                session,
                Role::Admin,
                ACTION,
                now,
                log_signer,
                |tx, actor| {
                    sqlite::init_in(tx)?;
                    let erased = sqlite::erase_in(tx, subject, tenant)?;
                    // Incidents stop naming the user and what they sent leaves quarantine, in
                    // the same transaction.
                    crate::incidents::init_in(tx)?;
                    crate::incidents::erase_subject_in(tx, subject, tenant, now)?;
                    let entry = erase_entry(now, actor, &erased, tenant, keys);
                    Ok::<_, UsersError>((erased, vec![entry]))
                },
            )?;
            sqlite::checkpoint(registry.audit_log().connection_ref())?;
            Ok(done)
        }
        EraseTarget::Store(store) => {
            let erased = store.erase(subject, tenant)?;
            let recorded = registry.change_with(
                session,
                Role::Admin,
                ACTION,
                now,
                log_signer,
                |tx, actor| {
                    crate::incidents::init_in(tx)?;
                    crate::incidents::erase_subject_in(tx, subject, tenant, now)?;
                    Ok::<_, UsersError>(((), vec![erase_entry(now, actor, &erased, tenant, keys)]))
                },
            );
            match recorded {
                Ok(((), recorded)) => Ok((erased, recorded)),
                Err(UsersError::Registry(source)) => {
                    Err(UsersError::NotRecorded { erased, source })
                }
                Err(other) => Err(UsersError::NotRecorded {
                    erased,
                    source: RegistryError::Corrupt(other.to_string()),
                }),
            }
        }
    }
}

/// Everything the store holds about the user, read as `session` (admin), with an `admin` entry
/// recording that it was exported. Nothing is returned unless the entry was recorded.
///
/// Sealed excerpts are opened with `vault`; the export fails rather than hand out a sealed or
/// partial record when the key backend is unavailable.
#[allow(clippy::too_many_arguments)]
pub fn export_user(
    registry: &mut Registry,
    session: &Session,
    store: &dyn ProfileStore,
    vault: Option<&crate::vault::Vault>,
    subject: &str,
    tenant: Option<&str>,
    now: Timestamp,
    log_signer: &dyn Signer,
) -> Result<(Export, Recorded), UsersError> {
    const ACTION: &str = "export user data";
    check_ids(subject, tenant)?;
    registry.authorize(session, &[Role::Admin], ACTION)?;
    let mut export = store.export(subject, tenant)?;
    open_excerpts(&mut export, vault)?;
    let pseudonym = store.pseudonym(subject)?;
    let ((), recorded) =
        registry.change_with(session, Role::Admin, ACTION, now, log_signer, |_, actor| {
            Ok::<_, UsersError>((
                (),
                vec![NewEntry {
                    time: now.to_string(),
                    kind: EntryKind::Admin,
                    actor,
                    subject: Some(format!(
                        "user {pseudonym} exported{}: {} profiles, {} detections",
                        scope(tenant),
                        export.profiles.len(),
                        export.detections.len()
                    )),
                    digests: tenant_digests(tenant),
                }],
            ))
        })?;
    Ok((export, recorded))
}

/// Runs the retention purge as `session` (admin) and records what it removed.
pub fn purge_recorded(
    registry: &mut Registry,
    session: &Session,
    store: &dyn ProfileStore,
    now: Timestamp,
    retention: Retention,
    log_signer: &dyn Signer,
) -> Result<(Purged, Recorded), UsersError> {
    const ACTION: &str = "purge behaviour data";
    registry.authorize(session, &[Role::Admin], ACTION)?;
    let purged = store.purge(now, retention)?;
    let ((), recorded) =
        registry.change_with(session, Role::Admin, ACTION, now, log_signer, |_, actor| {
            Ok::<_, UsersError>((
                (),
                vec![NewEntry {
                    time: now.to_string(),
                    kind: EntryKind::Admin,
                    actor,
                    subject: Some(format!(
                        "behaviour purge: {} detections over {} days, {} profiles unseen for {} days",
                        purged.detections,
                        retention.detections_days,
                        purged.profiles,
                        retention.profiles_days
                    )),
                    digests: BTreeMap::new(),
                }],
            ))
        })?;
    Ok((purged, recorded))
}

/// The export's sealed excerpts opened in place. An excerpt that does not open where it is
/// (moved from another record) is left out and logged; an outage fails the export.
fn open_excerpts(
    export: &mut Export,
    vault: Option<&crate::vault::Vault>,
) -> Result<(), UsersError> {
    use crate::vault::{is_sealed, RecordContext, VaultError};
    for record in &mut export.detections {
        let Some(excerpt) = record.excerpt.take() else {
            continue;
        };
        if !is_sealed(&excerpt) {
            // Written before excerpts were sealed.
            record.excerpt = Some(excerpt);
            continue;
        }
        let Some(vault) = vault else {
            return Err(UsersError::Sealed(VaultError::Config(
                "the export holds sealed excerpts and no vault was given to open them".into(),
            )));
        };
        let id = super::assess::excerpt_record_id(&record.digests);
        let ctx = RecordContext {
            tenant: record.tenant.as_deref().unwrap_or(""),
            subject: &record.subject,
            kind: super::assess::EXCERPT_KIND,
            id: &id,
        };
        match vault.open_text(&ctx, &excerpt) {
            Ok(text) => record.excerpt = Some(text.as_str().to_string()),
            Err(e @ (VaultError::Unavailable(_) | VaultError::NoKey(_) | VaultError::Store(_))) => {
                return Err(UsersError::Sealed(e))
            }
            Err(e) => {
                tracing::error!(error = %e, "a stored excerpt does not open in its record; it is left out of the export")
            }
        }
    }
    Ok(())
}

//! Sensitive data at rest, encrypted under keys the customer owns.
//!
//! Three layers of keys, so that no KMS call sits on the guarded-call path and erasing a user
//! destroys every copy of what they sent:
//!
//! 1. The **master key** lives in AWS KMS, an HSM over PKCS#11, or (for development) a local
//!    key file ([`MasterKey`]). It only ever wraps tenant keys.
//! 2. A **tenant key** is a data key from the master key (`GenerateDataKey`), bound to the
//!    tenant in the KMS encryption context, stored wrapped in the key store and cached in
//!    memory for a bounded time and number of uses. It wraps subject keys.
//! 3. A **subject key** is one user's own key, stored (wrapped by a tenant key) in the key
//!    store, a database kept apart from the data. Deleting it is the crypto-shredding of
//!    `sigil users erase`.
//!
//! Each record gets a fresh data key, wrapped under the subject key and stored beside the
//! record's AES-256-GCM ciphertext; both are bound to the record's context (tenant, user,
//! record kind, record id) as associated data, so a ciphertext moved to another row or tenant
//! does not decrypt.

pub mod master;

pub use master::{context_bytes, DataKeyBytes, KeyContext, MasterKey, NewDataKey, WrappedKey};

/// Why the vault could not encrypt, decrypt or manage keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The key backend cannot be reached (network, region outage, token missing). Nothing was
    /// stored in the clear.
    #[error("the key backend is unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the credentials or the operation.
    #[error("the key backend refused: {0}")]
    Denied(String),
    /// The master key (version) is disabled, retired or pending deletion.
    #[error("the master key is disabled: {0}")]
    Disabled(String),
    /// The named key does not exist.
    #[error("key not found: {0}")]
    NotFound(String),
    /// The key was destroyed with the user it belonged to: what it protected is gone for good.
    #[error("the key of this record was destroyed (the user was erased): {0}")]
    Shredded(String),
    /// A ciphertext or wrapped key does not open with the context it is read with: it was
    /// changed, or moved to another row, user or tenant.
    #[error("does not decrypt: {0}")]
    WrongContext(String),
    /// Stored data is not in the vault's format.
    #[error("corrupt sealed data: {0}")]
    Corrupt(String),
    /// A write would need a new key while the backend is down and the cached keys are spent.
    #[error("no usable data key: {0}")]
    NoKey(String),
    /// The vault or its backend is configured wrongly.
    #[error("vault configuration: {0}")]
    Config(String),
    /// The operation is not allowed (retiring the current key, a bad id).
    #[error("{0}")]
    Invalid(String),
    /// The key store failed.
    #[error("key store: {0}")]
    Store(#[from] rusqlite::Error),
    /// The system's random generator failed.
    #[error("the system random generator failed")]
    Random,
}

impl From<aws_lc_rs::error::Unspecified> for VaultError {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        VaultError::Random
    }
}

pub mod aws_kms;
mod cache;
pub mod keystore;
pub mod local;
pub mod pkcs11;

use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use zeroize::Zeroizing;

pub use aws_kms::AwsKmsMasterKey;
use cache::{CachedKey, KeyCache};
pub use keystore::KeyStore;
use keystore::{SubjectKeyRow, TenantKeyRow};
pub use local::LocalMasterKey;
pub use pkcs11::{Pkcs11MasterKey, Pkcs11MasterOptions};

/// What a sealed record starts with (no JSON value or plain text the host stores does).
pub const SEALED_PREFIX: &str = "sigil:v1:";

/// Where a record lives: bound to its ciphertext, so it opens only in this place.
#[derive(Debug, Clone, Copy)]
pub struct RecordContext<'a> {
    /// The tenant (`""` for the default one).
    pub tenant: &'a str,
    /// The user the record is about; their key encrypts it. `""` for records of the service
    /// itself (stored secrets).
    pub subject: &'a str,
    /// What kind of record (`quarantine`, `incident-evidence`, `detection-excerpt`, …).
    pub kind: &'a str,
    /// The record's id.
    pub id: &'a str,
}

/// Limits on how long and how often a key is used from memory before the key store (and, for
/// tenant keys, the master key) is asked again.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    /// How long an unwrapped key stays in memory.
    pub max_age: Duration,
    /// How many records (subject keys) or subject keys (tenant keys) a cached key serves
    /// before it is unwrapped again.
    pub max_uses: u64,
    /// How many keys of each layer the cache holds.
    pub capacity: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_age: Duration::from_secs(300),
            max_uses: 100_000,
            capacity: 10_000,
        }
    }
}

/// How many subject keys one tenant key wraps before the tenant gets a new one (far below
/// the 2^32 random nonces AES-GCM allows under one key).
const TENANT_KEY_WRAPS: u64 = 1 << 24;

/// The vault's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VaultStats {
    /// Records sealed.
    pub sealed: u64,
    /// Records opened.
    pub opened: u64,
    /// Calls the master key's backend made (KMS requests, token operations).
    pub backend_calls: u64,
    /// Region switches of the master key's backend.
    pub failovers: u64,
    /// Keys found in the cache.
    pub cache_hits: u64,
    /// Keys that had to be unwrapped or made.
    pub cache_misses: u64,
}

/// Encrypts and decrypts records under per-user keys, wrapped by tenant keys, wrapped by the
/// master key.
pub struct Vault {
    master: Arc<dyn MasterKey>,
    store: KeyStore,
    tenant_keys: KeyCache,
    subject_keys: KeyCache,
    sealed: AtomicU64,
    opened: AtomicU64,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("master", &self.master.describe())
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

fn random_id(prefix: &str) -> Result<String, VaultError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes)?;
    let mut id = String::with_capacity(prefix.len() + 32);
    id.push_str(prefix);
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    Ok(id)
}

fn check_key_id(id: &str, prefix: &str) -> Result<(), VaultError> {
    let ok = id.len() == prefix.len() + 32
        && id.starts_with(prefix)
        && id
            .bytes()
            .skip(prefix.len())
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(VaultError::Corrupt(
            "a sealed record names no valid key".into(),
        ))
    }
}

/// The KMS encryption context of a tenant key.
fn tenant_key_context(tenant: &str, id: &str) -> KeyContext {
    [
        ("sigil:purpose".to_string(), "tenant-key".to_string()),
        ("sigil:tenant".to_string(), tenant.to_string()),
        ("sigil:key".to_string(), id.to_string()),
    ]
    .into()
}

fn subject_key_aad(row_id: &str, tenant: &str, subject: &str, tenant_key_id: &str) -> Vec<u8> {
    context_bytes(
        &[
            ("sigil:purpose".to_string(), "subject-key".to_string()),
            ("sigil:tenant".to_string(), tenant.to_string()),
            ("sigil:subject".to_string(), subject.to_string()),
            ("sigil:key".to_string(), row_id.to_string()),
            ("sigil:tenant-key".to_string(), tenant_key_id.to_string()),
        ]
        .into(),
    )
}

fn record_aad(ctx: &RecordContext<'_>, subject_key_id: &str) -> Vec<u8> {
    context_bytes(
        &[
            ("sigil:purpose".to_string(), "record".to_string()),
            ("sigil:tenant".to_string(), ctx.tenant.to_string()),
            ("sigil:subject".to_string(), ctx.subject.to_string()),
            ("sigil:kind".to_string(), ctx.kind.to_string()),
            ("sigil:id".to_string(), ctx.id.to_string()),
            ("sigil:key".to_string(), subject_key_id.to_string()),
        ]
        .into(),
    )
}

fn aead_key(bytes: &[u8; 32]) -> Result<LessSafeKey, VaultError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| VaultError::Config("not an AES-256 key".into()))
}

/// `plain` sealed under `key` with `aad`: nonce, ciphertext and tag.
fn seal_with(key: &LessSafeKey, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, VaultError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce)?;
    let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + AES_256_GCM.tag_len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            out.get_mut(NONCE_LEN..).unwrap_or_default(),
        )
        .map_err(|_| VaultError::Random)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// What [`seal_with`] sealed, if `aad` is the same.
fn open_with(
    key: &LessSafeKey,
    aad: &[u8],
    sealed: &[u8],
    what: &str,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(VaultError::Corrupt(format!("{what} is truncated")));
    }
    let (nonce, data) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| VaultError::Corrupt(format!("{what} is truncated")))?;
    let mut data = Zeroizing::new(data.to_vec());
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut data,
        )
        .map_err(|_| {
            VaultError::WrongContext(format!(
                "{what} was changed, or moved to another row, user or tenant"
            ))
        })?
        .len();
    data.truncate(len);
    Ok(data)
}

fn key_bytes(plain: &[u8], what: &str) -> Result<DataKeyBytes, VaultError> {
    let mut key = Zeroizing::new([0u8; 32]);
    if plain.len() != 32 {
        return Err(VaultError::Corrupt(format!("{what} is not 32 bytes")));
    }
    key.copy_from_slice(plain);
    Ok(key)
}

/// Whether `text` is a sealed record.
pub fn is_sealed(text: &str) -> bool {
    text.starts_with(SEALED_PREFIX)
}

/// A sealed record's parts.
struct Sealed<'a> {
    subject_key_id: &'a str,
    wrapped_record_key: Vec<u8>,
    ciphertext: Vec<u8>,
}

fn parse_sealed(text: &str) -> Result<Sealed<'_>, VaultError> {
    let rest = text
        .strip_prefix(SEALED_PREFIX)
        .ok_or_else(|| VaultError::Corrupt("not a sealed record".into()))?;
    let mut parts = rest.splitn(3, ':');
    let (Some(subject_key_id), Some(wrapped), Some(ciphertext)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(VaultError::Corrupt(
            "a sealed record has too few parts".into(),
        ));
    };
    check_key_id(subject_key_id, "sk_")?;
    let decode = |part: &str| {
        STANDARD_NO_PAD
            .decode(part)
            .map_err(|_| VaultError::Corrupt("a sealed record is not base64".into()))
    };
    Ok(Sealed {
        subject_key_id,
        wrapped_record_key: decode(wrapped)?,
        ciphertext: decode(ciphertext)?,
    })
}

impl Vault {
    /// A vault over `master`, with its key store at `key_store`.
    pub fn open(
        master: Arc<dyn MasterKey>,
        key_store: &std::path::Path,
        limits: CacheLimits,
    ) -> Result<Self, VaultError> {
        Ok(Vault {
            master,
            store: KeyStore::open(key_store)?,
            tenant_keys: KeyCache::new(limits),
            subject_keys: KeyCache::new(limits),
            sealed: AtomicU64::new(0),
            opened: AtomicU64::new(0),
        })
    }

    /// The master key.
    pub fn master(&self) -> &dyn MasterKey {
        self.master.as_ref()
    }

    /// The key store.
    pub fn key_store(&self) -> &KeyStore {
        &self.store
    }

    /// The vault's counters.
    pub fn stats(&self) -> VaultStats {
        let (th, tm) = self.tenant_keys.counts();
        let (sh, sm) = self.subject_keys.counts();
        VaultStats {
            sealed: self.sealed.load(Ordering::Relaxed),
            opened: self.opened.load(Ordering::Relaxed),
            backend_calls: self.master.backend_calls(),
            failovers: self.master.failovers(),
            cache_hits: th + sh,
            cache_misses: tm + sm,
        }
    }

    /// `plain` encrypted for `ctx`: a fresh record key encrypts it, the user's key wraps the
    /// record key, and both are bound to `ctx`.
    pub fn seal(&self, ctx: &RecordContext<'_>, plain: &[u8]) -> Result<String, VaultError> {
        let subject_key = self.subject_key_for_write(ctx.tenant, ctx.subject)?;
        let aad = record_aad(ctx, &subject_key.id);
        let mut record_key = Zeroizing::new([0u8; 32]);
        SystemRandom::new().fill(record_key.as_mut())?;
        let wrapped = seal_with(&subject_key.aead, &aad, record_key.as_ref())?;
        let ciphertext = seal_with(&aead_key(&record_key)?, &aad, plain)?;
        let mut out = String::with_capacity(
            SEALED_PREFIX.len() + 40 + (wrapped.len() + ciphertext.len()) * 4 / 3 + 4,
        );
        out.push_str(SEALED_PREFIX);
        out.push_str(&subject_key.id);
        out.push(':');
        STANDARD_NO_PAD.encode_string(&wrapped, &mut out);
        out.push(':');
        STANDARD_NO_PAD.encode_string(&ciphertext, &mut out);
        self.sealed.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }

    /// What [`Vault::seal`] sealed for `ctx`. Fails with [`VaultError::WrongContext`] when the
    /// record was sealed for another place, and [`VaultError::Shredded`] when its user's key
    /// was destroyed.
    pub fn open_record(
        &self,
        ctx: &RecordContext<'_>,
        sealed: &str,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let parts = parse_sealed(sealed)?;
        let subject_key = self.subject_key_by_id(parts.subject_key_id)?;
        if subject_key.tenant != ctx.tenant || subject_key.subject != ctx.subject {
            return Err(VaultError::WrongContext(
                "the record was sealed for another user or tenant".into(),
            ));
        }
        let aad = record_aad(ctx, parts.subject_key_id);
        let record_key = open_with(
            &subject_key.aead,
            &aad,
            &parts.wrapped_record_key,
            "a record key",
        )?;
        let record_key = key_bytes(&record_key, "a record key")?;
        let plain = open_with(&aead_key(&record_key)?, &aad, &parts.ciphertext, "a record")?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(plain)
    }

    /// [`Vault::open_record`] for text.
    pub fn open_text(
        &self,
        ctx: &RecordContext<'_>,
        sealed: &str,
    ) -> Result<Zeroizing<String>, VaultError> {
        let plain = self.open_record(ctx, sealed)?;
        std::str::from_utf8(&plain)
            .map(|s| Zeroizing::new(s.to_string()))
            .map_err(|_| VaultError::Corrupt("a sealed text is not UTF-8".into()))
    }

    /// Destroys the user's keys (in `tenant`, or in every tenant): every record sealed for
    /// them, wherever a copy of it is, no longer opens. Answers how many keys were destroyed.
    pub fn shred_subject(&self, subject: &str, tenant: Option<&str>) -> Result<u64, VaultError> {
        if subject.is_empty() {
            return Err(VaultError::Invalid(
                "the service's own key is not a user's".into(),
            ));
        }
        let ids = self.store.destroy_subject_keys(subject, tenant)?;
        for id in &ids {
            self.subject_keys.remove(id);
        }
        self.subject_keys.remove_where(|name| {
            name.split_once('\u{0}')
                .is_some_and(|(t, s)| s == subject && tenant.is_none_or(|tenant| tenant == t))
        });
        Ok(ids.len() as u64)
    }

    /// The user's key for writing, made on first use.
    fn subject_key_for_write(
        &self,
        tenant: &str,
        subject: &str,
    ) -> Result<Arc<CachedKey>, VaultError> {
        let name = format!("{tenant}\u{0}{subject}");
        if let Some(key) = self.subject_keys.get(&name) {
            // A key destroyed by another process (an erasure from the CLI) is not written with.
            if self.store.subject_key_exists(&key.id)? {
                return Ok(key);
            }
            self.subject_keys.remove(&name);
        }
        let row = match self.store.subject_key(tenant, subject)? {
            Some(row) => row,
            None => self.new_subject_key(tenant, subject)?,
        };
        let key = self.unwrap_subject_key(&row)?;
        self.subject_keys.insert(name, key.clone());
        self.subject_keys.insert(row.id.clone(), key.clone());
        Ok(key)
    }

    fn subject_key_by_id(&self, id: &str) -> Result<Arc<CachedKey>, VaultError> {
        if let Some(key) = self.subject_keys.get(id) {
            return Ok(key);
        }
        let row = self
            .store
            .subject_key_by_id(id)?
            .ok_or_else(|| VaultError::Shredded(format!("subject key {id} no longer exists")))?;
        let key = self.unwrap_subject_key(&row)?;
        self.subject_keys.insert(row.id.clone(), key.clone());
        Ok(key)
    }

    fn new_subject_key(&self, tenant: &str, subject: &str) -> Result<SubjectKeyRow, VaultError> {
        let tenant_key = self.tenant_key_for_write(tenant)?;
        let id = random_id("sk_")?;
        let mut bytes = Zeroizing::new([0u8; 32]);
        SystemRandom::new().fill(bytes.as_mut())?;
        let aad = subject_key_aad(&id, tenant, subject, &tenant_key.id);
        let row = SubjectKeyRow {
            wrapped: seal_with(&tenant_key.aead, &aad, bytes.as_ref())?,
            id,
            tenant: tenant.to_string(),
            subject: subject.to_string(),
            tenant_key_id: tenant_key.id.clone(),
        };
        self.store.count_wraps(&tenant_key.id, 1)?;
        // Another writer may have made the user's key first: theirs is the one.
        self.store.insert_subject_key(&row)
    }

    fn unwrap_subject_key(&self, row: &SubjectKeyRow) -> Result<Arc<CachedKey>, VaultError> {
        let tenant_key = self.tenant_key_by_id(&row.tenant_key_id)?;
        if tenant_key.tenant != row.tenant {
            return Err(VaultError::WrongContext(format!(
                "subject key {} names a tenant key of another tenant",
                row.id
            )));
        }
        let aad = subject_key_aad(&row.id, &row.tenant, &row.subject, &row.tenant_key_id);
        let plain = open_with(&tenant_key.aead, &aad, &row.wrapped, "a subject key")?;
        let bytes = key_bytes(&plain, "a subject key")?;
        Ok(Arc::new(CachedKey::new(
            row.id.clone(),
            row.tenant.clone(),
            row.subject.clone(),
            &bytes,
        )?))
    }

    /// The tenant's current tenant key, made when it has none or it has wrapped its share.
    fn tenant_key_for_write(&self, tenant: &str) -> Result<Arc<CachedKey>, VaultError> {
        let row = match self.store.current_tenant_key(tenant)? {
            Some(row) if row.wraps < TENANT_KEY_WRAPS => row,
            _ => return self.new_tenant_key(tenant),
        };
        self.tenant_key_from_row(&row)
    }

    fn tenant_key_by_id(&self, id: &str) -> Result<Arc<CachedKey>, VaultError> {
        if let Some(key) = self.tenant_keys.get(id) {
            return Ok(key);
        }
        let row = self
            .store
            .tenant_key(id)?
            .ok_or_else(|| VaultError::NotFound(format!("tenant key {id}")))?;
        self.tenant_key_from_row(&row)
    }

    fn tenant_key_from_row(&self, row: &TenantKeyRow) -> Result<Arc<CachedKey>, VaultError> {
        if let Some(key) = self.tenant_keys.get(&row.id) {
            return Ok(key);
        }
        let bytes = self
            .master
            .decrypt_data_key(&row.wrapped, &tenant_key_context(&row.tenant, &row.id))?;
        let key = Arc::new(CachedKey::new(
            row.id.clone(),
            row.tenant.clone(),
            String::new(),
            &bytes,
        )?);
        self.tenant_keys.insert(row.id.clone(), key.clone());
        Ok(key)
    }

    fn new_tenant_key(&self, tenant: &str) -> Result<Arc<CachedKey>, VaultError> {
        let id = random_id("tk_")?;
        let fresh = self
            .master
            .generate_data_key(&tenant_key_context(tenant, &id))?;
        self.store.insert_tenant_key(&TenantKeyRow {
            id: id.clone(),
            tenant: tenant.to_string(),
            wrapped: fresh.wrapped,
            wraps: 0,
        })?;
        let key = Arc::new(CachedKey::new(
            id.clone(),
            tenant.to_string(),
            String::new(),
            &fresh.plaintext,
        )?);
        self.tenant_keys.insert(id, key.clone());
        Ok(key)
    }

    /// Wraps every tenant key again under the current master key (`sigil keys rewrap`),
    /// without touching the data: `progress(done, total)` after each key. Each key commits on
    /// its own, so a rewrap stopped anywhere is finished by running it again.
    pub fn rewrap(&self, mut progress: impl FnMut(u64, u64)) -> Result<RewrapReport, VaultError> {
        let current = self.master.current_key_id()?;
        let total = self
            .store
            .tenant_keys_by_master()?
            .iter()
            .filter(|(id, _)| *id != current)
            .map(|(_, n)| n)
            .sum::<u64>();
        let mut report = RewrapReport {
            current_master_key: current.clone(),
            ..RewrapReport::default()
        };
        progress(0, total);
        loop {
            let batch = self.store.tenant_keys_not_under(&current, 256)?;
            if batch.is_empty() {
                break;
            }
            for row in batch {
                let context = tenant_key_context(&row.tenant, &row.id);
                let new = self.master.rewrap(&row.wrapped, &context)?;
                if new.master_key_id != current {
                    return Err(VaultError::Invalid(format!(
                        "the master key rewrapped under {} while {current} is current",
                        new.master_key_id
                    )));
                }
                if self.store.replace_wrapped(&row.id, &row.wrapped, &new)? {
                    report.rewrapped += 1;
                } else {
                    report.changed_meanwhile += 1;
                }
                progress(
                    report.rewrapped + report.changed_meanwhile,
                    total.max(report.rewrapped),
                );
            }
        }
        Ok(report)
    }

    /// Unwraps every key in the key store (tenant keys through the master key, subject keys
    /// through their tenant key), without the cache, so a retired master key is noticed.
    pub fn check_keys(&self) -> Result<KeyCheck, VaultError> {
        let mut check = KeyCheck::default();
        let mut tenant = std::collections::HashMap::new();
        for row in self.store.tenant_keys()? {
            let bytes = self
                .master
                .decrypt_data_key(&row.wrapped, &tenant_key_context(&row.tenant, &row.id))?;
            tenant.insert(row.id.clone(), (row.tenant.clone(), aead_key(&bytes)?));
            check.tenant_keys += 1;
        }
        for row in self.store.subject_keys()? {
            let (owner, key) = tenant.get(&row.tenant_key_id).ok_or_else(|| {
                VaultError::NotFound(format!(
                    "tenant key {} of subject key {}",
                    row.tenant_key_id, row.id
                ))
            })?;
            if *owner != row.tenant {
                return Err(VaultError::WrongContext(format!("subject key {}", row.id)));
            }
            let aad = subject_key_aad(&row.id, &row.tenant, &row.subject, &row.tenant_key_id);
            key_bytes(
                &open_with(key, &aad, &row.wrapped, "a subject key")?,
                "a subject key",
            )?;
            check.subject_keys += 1;
        }
        Ok(check)
    }

    /// Forgets every cached key (after a rotation, or to make the next use go to the key
    /// store and master key again).
    pub fn clear_cache(&self) {
        self.tenant_keys.clear();
        self.subject_keys.clear();
    }
}

/// What [`Vault::rewrap`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// The master key everything is wrapped under now.
    pub current_master_key: String,
    /// Tenant keys wrapped again.
    pub rewrapped: u64,
    /// Tenant keys another rewrap changed first.
    pub changed_meanwhile: u64,
}

/// What [`Vault::check_keys`] unwrapped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyCheck {
    /// Tenant keys, through the master key.
    pub tenant_keys: u64,
    /// Subject keys, through their tenant keys.
    pub subject_keys: u64,
}

/// Checks a master key spec without opening anything (for configuration checks).
pub fn check_spec(spec: &str) -> Result<(), VaultError> {
    match spec.split_once(':') {
        Some(("local", path)) if !path.is_empty() => Ok(()),
        Some(("pkcs11", _)) => Pkcs11MasterOptions::from_str(spec).map(|_| ()),
        Some(("aws-kms", _)) => crate::signer::SignerSpec::from_str(spec)
            .map(|_| ())
            .map_err(|e| VaultError::Config(e.to_string())),
        _ => Err(VaultError::Config(format!(
            "`{spec}` names no master key; use `local:PATH`, `aws-kms:KEY;…` or `pkcs11:module=…;token=…;key=…`"
        ))),
    }
}

/// Opens the master key `spec` names for the key store at `key_store`, refusing what would
/// lose keys: a local key file is made only while the key store holds no keys (keys another
/// file wrapped would not open under a new one), and the key store may not be the data's own
/// database `data_db` (erasure relies on the two being apart).
pub fn open_master_for(
    spec: &str,
    key_store: &std::path::Path,
    data_db: &std::path::Path,
) -> Result<Arc<dyn MasterKey>, VaultError> {
    let same = key_store == data_db
        || matches!(
            (std::fs::canonicalize(key_store), std::fs::canonicalize(data_db)),
            (Ok(a), Ok(b)) if a == b
        );
    if same {
        return Err(VaultError::Config(format!(
            "the key store `{}` is the data's own database; keep it apart so that erasure reaches the data's backups",
            key_store.display()
        )));
    }
    if let Some(("local", path)) = spec.split_once(':') {
        let path = std::path::Path::new(path);
        if !path.exists() && KeyStore::holds_keys(key_store)? {
            return Err(VaultError::Config(format!(
                "the master key file `{}` does not exist, and the key store `{}` holds keys another master key wrapped; name the key file they were made with",
                path.display(),
                key_store.display()
            )));
        }
    }
    open_master(spec)
}

/// Opens the master key `spec` names: `local:PATH` (made when missing), `aws-kms:KEY;…` or
/// `pkcs11:module=…;token=…;key=…` (the signer spec syntax of [`crate::signer::SignerSpec`]).
/// An AWS KMS master key should be named by alias, with its replica regions if it has any; in
/// a PKCS#11 token, version 1 is made when the token has none, unless `create=no`.
///
/// ```no_run
/// let master = host_runtime::vault::open_master(
///     "aws-kms:alias/sigil-vault;region=us-east-1;replicas=eu-west-1",
/// )?;
/// println!("{} wraps under {}", master.describe(), master.current_key_id()?);
/// # Ok::<(), host_runtime::vault::VaultError>(())
/// ```
pub fn open_master(spec: &str) -> Result<Arc<dyn MasterKey>, VaultError> {
    check_spec(spec)?;
    match spec.split_once(':') {
        Some(("local", path)) => Ok(Arc::new(LocalMasterKey::open_or_create(
            std::path::Path::new(path),
        )?)),
        Some(("pkcs11", _)) => Ok(Arc::new(Pkcs11MasterKey::open(
            &Pkcs11MasterOptions::from_str(spec)?,
        )?)),
        Some(("aws-kms", _)) => match crate::signer::SignerSpec::from_str(spec) {
            Ok(crate::signer::SignerSpec::AwsKms(options)) => {
                Ok(Arc::new(AwsKmsMasterKey::open(&options)?))
            }
            Ok(_) => Err(VaultError::Config(format!(
                "`{spec}` is not an AWS KMS spec"
            ))),
            Err(e) => Err(VaultError::Config(e.to_string())),
        },
        _ => Err(VaultError::Config(format!(
            "the master key backend of `{spec}` is not available in this build"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_master_key_specs_are_checked_with_their_replicas() {
        for good in [
            "aws-kms:alias/sigil-vault",
            "aws-kms:alias/sigil-vault;region=us-east-1;replicas=eu-west-1,ap-southeast-2@https://kms.example:8443;failback=60s",
        ] {
            assert!(check_spec(good).is_ok(), "{good}");
        }
        for bad in [
            "aws-kms:alias/sigil-vault;replicas=eu-west-1",
            "aws-kms:alias/sigil-vault;region=us-east-1;replicas=us-east-1",
            "aws-kms:alias/sigil-vault;region=us-east-1;replica=eu-west-1",
            "aws-kms:",
        ] {
            assert!(
                matches!(check_spec(bad), Err(VaultError::Config(_))),
                "{bad}"
            );
        }
    }
}

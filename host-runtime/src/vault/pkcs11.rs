//! The master key in an HSM over PKCS#11: AES-256 key versions that never leave the token
//! (`CKA_SENSITIVE`, not `CKA_EXTRACTABLE`), wrapping data keys with `CKM_AES_GCM` and the key
//! context ([`context_bytes`]) as associated data.
//!
//! Versions are token objects labelled `LABEL/v1`, `LABEL/v2`, …; the highest is current. Each
//! version also gets a random `CKA_ID`, which is part of its key id
//! (`pkcs11:LABEL/v2:0f1e…`), so a version made again under a number that was used before (a
//! restored backup, a second token) is never mistaken for the key that wrapped older data.
//!
//! Why `C_Encrypt`/`C_Decrypt` with `CKM_AES_GCM` rather than `C_WrapKey`: SoftHSM2's
//! `C_WrapKey` takes `CKM_AES_KEY_WRAP[_PAD]`, CBC and RSA mechanisms but not GCM, and none of
//! those binds associated data, so the tenant context would need a second key (an HMAC) per
//! version. The data key is handed to the vault in the clear anyway (it encrypts on the host),
//! so wrapping its bytes with GCM inside the token exposes nothing a `C_WrapKey` would protect,
//! and binds the context the same way KMS's encryption context does. Data keys and IVs come
//! from the token's random generator.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState};
use cryptoki::types::Ulong;
use zeroize::Zeroizing;

use super::master::{context_bytes, DataKeyBytes, KeyContext, MasterKey, NewDataKey, WrappedKey};
use super::VaultError;
use crate::pkcs11_token::{self, PinSource, TokenAccess, TokenError};
use crate::signer::spec::{self, spec_error};
use crate::signer::SignError;

/// The GCM IV stored at the front of a wrapped key.
const IV_LEN: usize = 12;
/// The GCM tag at its end.
const TAG_LEN: usize = 16;
/// An AES-256 key.
const KEY_LEN: usize = 32;
/// The random `CKA_ID` of each version.
const VERSION_TAG_LEN: usize = 8;

/// Which master key on which token, parsed from `pkcs11:module=…;token=…;key=…` (the syntax of
/// [`crate::signer::SignerSpec`], whose documentation lists the attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11MasterOptions {
    /// The token's PKCS#11 library.
    pub module: PathBuf,
    /// Token label; without it (and without `slot`), the module's only token.
    pub token: Option<String>,
    /// Slot id, for modules whose tokens share a label.
    pub slot: Option<u64>,
    /// The label the key's versions are named after (`LABEL/v1`, …).
    pub key_label: String,
    /// Where the user PIN comes from.
    pub pin: PinSource,
    /// Whether the first use makes version 1 when the token holds none (`create=no` refuses).
    pub create: bool,
}

impl FromStr for Pkcs11MasterOptions {
    type Err = VaultError;

    fn from_str(text: &str) -> Result<Self, VaultError> {
        parse_options(text).map_err(|e| match e {
            SignError::Spec(m) => {
                VaultError::Config(format!("the master key spec is invalid: {m}"))
            }
            other => VaultError::Config(other.to_string()),
        })
    }
}

fn parse_options(text: &str) -> Result<Pkcs11MasterOptions, SignError> {
    let (backend, positional, mut attributes) = spec::split(text)?;
    if backend != "pkcs11" {
        return Err(spec_error(format!("`{backend}:` is not a PKCS#11 key")));
    }
    if let Some(value) = positional {
        return Err(spec_error(format!(
            "`pkcs11:` takes `name=value` attributes, not `{value}`"
        )));
    }
    let token = attributes.token()?;
    let key_label = attributes
        .take("key")
        .or_else(|| attributes.take("object"))
        .filter(|label| !label.is_empty())
        .ok_or_else(|| {
            spec_error("a master key on a token needs `key=LABEL` (its versions are `LABEL/v1`, `LABEL/v2`, …)")
        })?;
    let create = match attributes.take("create").as_deref() {
        None | Some("yes" | "true") => true,
        Some("no" | "false") => false,
        Some(other) => {
            return Err(spec_error(format!(
                "`create={other}`; use `create=yes` or `create=no`"
            )))
        }
    };
    for name in ["id", "type", "scheme", "mechanism"] {
        if attributes.take(name).is_some() {
            return Err(spec_error(format!(
                "`{name}=` names a signing key; a master key is named by `key=LABEL` alone"
            )));
        }
    }
    attributes.finish("pkcs11")?;
    Ok(Pkcs11MasterOptions {
        module: token.module,
        token: token.token,
        slot: token.slot,
        key_label,
        pin: token.pin,
        create,
    })
}

/// One version of the master key: a secret-key object on the token.
struct Version {
    number: u32,
    id: String,
    handle: ObjectHandle,
}

struct State {
    // A session may not be used from two threads at once.
    session: Session,
    /// The versions found on the token, lowest first.
    versions: Vec<Version>,
}

/// An AES-256 master key, in versions, on a PKCS#11 token.
pub struct Pkcs11MasterKey {
    state: Mutex<State>,
    label: String,
    token: String,
    /// What it was opened with, to open a new session when the token drops this one.
    options: Pkcs11MasterOptions,
    calls: AtomicU64,
    /// Set when a call failed because the session or the login is gone.
    session_lost: AtomicBool,
}

impl std::fmt::Debug for Pkcs11MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11MasterKey")
            .field("label", &self.label)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl From<TokenError> for VaultError {
    fn from(error: TokenError) -> Self {
        match error {
            // To the vault, a module or token that is not there is an outage: records are not
            // written in the clear and reads fail until the token is back.
            TokenError::Module(m) | TokenError::NoToken(m) | TokenError::Unavailable(m) => {
                VaultError::Unavailable(m)
            }
            TokenError::Backend(m) => VaultError::Unavailable(m),
            TokenError::Config(m) | TokenError::Key(m) => VaultError::Config(m),
            TokenError::PinFile { context, source } => {
                VaultError::Config(format!("{context}: {source}"))
            }
            TokenError::Denied(m) => VaultError::Denied(m),
            TokenError::NotFound(m) => VaultError::NotFound(m),
        }
    }
}

fn ulong(n: usize) -> Result<Ulong, VaultError> {
    Ulong::try_from(n).map_err(|e| VaultError::Config(format!("{n} is not a CK_ULONG: {e}")))
}

/// `digits` as a version number: decimal, from 1, without leading zeros (so every version has
/// one label).
fn version_number(digits: &str) -> Option<u32> {
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    canonical.then(|| digits.parse().ok()).flatten()
}

impl Pkcs11MasterKey {
    /// Logs in to the token and finds the key's versions; makes version 1 inside the token when
    /// there is none and `options.create` allows it.
    ///
    /// ```no_run
    /// use host_runtime::vault::{MasterKey as _, Pkcs11MasterKey, Pkcs11MasterOptions};
    ///
    /// let options: Pkcs11MasterOptions =
    ///     "pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=vault;key=sigil-master".parse()?;
    /// let master = Pkcs11MasterKey::open(&options)?;
    /// let context = [("sigil:tenant".to_string(), "acme".to_string())].into();
    /// let key = master.generate_data_key(&context)?;
    /// assert_eq!(*master.decrypt_data_key(&key.wrapped, &context)?, *key.plaintext);
    /// # Ok::<(), host_runtime::vault::VaultError>(())
    /// ```
    pub fn open(options: &Pkcs11MasterOptions) -> Result<Self, VaultError> {
        let opened = pkcs11_token::open_session(
            &TokenAccess {
                module: &options.module,
                token: options.token.as_deref(),
                slot: options.slot,
                pin: &options.pin,
            },
            true,
        )?;
        let offered = opened
            .pkcs11
            .get_mechanism_list(opened.slot)
            .map_err(|e| pkcs11_token::classify("cannot list the token's mechanisms", e))?;
        for needed in [MechanismType::AES_KEY_GEN, MechanismType::AES_GCM] {
            if !offered.contains(&needed) {
                return Err(VaultError::Config(format!(
                    "token `{}` does not offer {needed}, which the master key needs",
                    opened.label
                )));
            }
        }
        let key = Pkcs11MasterKey {
            state: Mutex::new(State {
                session: opened.session,
                versions: Vec::new(),
            }),
            label: options.key_label.clone(),
            token: opened.label,
            options: options.clone(),
            calls: AtomicU64::new(1),
            session_lost: AtomicBool::new(false),
        };
        {
            let mut state = key.lock()?;
            key.refresh(&mut state)?;
            if state.versions.is_empty() {
                if !options.create {
                    return Err(VaultError::NotFound(format!(
                        "no master key `{}/v1` (or later) on token `{}`, and the spec says `create=no`",
                        key.label, key.token
                    )));
                }
                key.create_version(&mut state, 1)?;
            }
        }
        Ok(key)
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, VaultError> {
        self.state
            .lock()
            .map_err(|_| VaultError::Config("the master key's session lock is poisoned".into()))
    }

    /// Counts one call to the token.
    fn call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    fn error(&self, what: &str, error: P11Error) -> VaultError {
        if let P11Error::Pkcs11(
            RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::UserNotLoggedIn
            | RvError::DeviceRemoved
            | RvError::TokenNotPresent,
            _,
        ) = error
        {
            self.session_lost.store(true, Ordering::Relaxed);
        }
        pkcs11_token::classify(&format!("{what} on token `{}`", self.token), error).into()
    }

    /// Runs `op` in the session; when the token dropped the session or the login (it was
    /// restarted or reset), opens a new session and runs `op` once more. A token still away
    /// answers the first error.
    fn with_session<T>(
        &self,
        op: impl Fn(&mut State) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let mut state = self.lock()?;
        self.session_lost.store(false, Ordering::Relaxed);
        match op(&mut state) {
            Err(error) if self.session_lost.swap(false, Ordering::Relaxed) => {
                if self.reopen(&mut state).is_err() {
                    return Err(error);
                }
                op(&mut state)
            }
            other => other,
        }
    }

    fn reopen(&self, state: &mut State) -> Result<(), VaultError> {
        let opened = pkcs11_token::open_session(
            &TokenAccess {
                module: &self.options.module,
                token: self.options.token.as_deref(),
                slot: self.options.slot,
                pin: &self.options.pin,
            },
            true,
        )?;
        state.session = opened.session;
        // Object handles need not survive a new session on every token.
        self.refresh(state)
    }

    /// Reads the versions from the token again (another process may have rotated or retired).
    fn refresh(&self, state: &mut State) -> Result<(), VaultError> {
        // Logged out (the token was reset), the key's private objects are invisible: that is
        // a lost login, not a key with no versions.
        self.call();
        let info = state
            .session
            .get_session_info()
            .map_err(|e| self.error("cannot read the session's state", e))?;
        if !matches!(
            info.session_state(),
            SessionState::RwUser | SessionState::RoUser
        ) {
            self.session_lost.store(true, Ordering::Relaxed);
            return Err(VaultError::Unavailable(format!(
                "the session on token `{}` is no longer logged in",
                self.token
            )));
        }
        self.call();
        let handles = state
            .session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(true),
            ])
            .map_err(|e| self.error("cannot search for the master key", e))?;
        let prefix = format!("{}/v", self.label);
        let mut versions = Vec::new();
        for handle in handles {
            self.call();
            let attributes = state
                .session
                .get_attributes(handle, &[AttributeType::Label, AttributeType::Id])
                .map_err(|e| self.error("cannot read a key's label", e))?;
            let (mut label, mut tag) = (None, Vec::new());
            for attribute in attributes {
                match attribute {
                    Attribute::Label(l) => label = Some(l),
                    Attribute::Id(i) => tag = i,
                    _ => {}
                }
            }
            let number = label
                .as_deref()
                .and_then(|l| std::str::from_utf8(l).ok())
                .and_then(|l| l.strip_prefix(&prefix))
                .and_then(version_number);
            if let Some(number) = number {
                versions.push(Version {
                    number,
                    id: format!(
                        "pkcs11:{}/v{number}:{}",
                        self.label,
                        guard_core::provenance::hex(&tag)
                    ),
                    handle,
                });
            }
        }
        // Two processes making version 1 at once leave two; both unwrap what they wrapped,
        // and the order between them is fixed so every process agrees which one is current.
        versions.sort_by(|a, b| (a.number, &a.id).cmp(&(b.number, &b.id)));
        state.versions = versions;
        Ok(())
    }

    /// Makes version `number` inside the token and returns its id.
    fn create_version(&self, state: &mut State, number: u32) -> Result<String, VaultError> {
        let mut tag = [0u8; VERSION_TAG_LEN];
        self.call();
        state
            .session
            .generate_random_slice(&mut tag)
            .map_err(|e| self.error("cannot draw random bytes", e))?;
        let label = format!("{}/v{number}", self.label);
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(ulong(KEY_LEN)?),
            Attribute::Token(true),
            Attribute::Private(true),
            // The key never leaves the token, in the clear or wrapped.
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            // It encrypts and decrypts data keys, and does nothing else.
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::Label(label.clone().into_bytes()),
            Attribute::Id(tag.to_vec()),
        ];
        self.call();
        let handle = state
            .session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|e| self.error(&format!("cannot make master key `{label}`"), e))?;
        let id = format!(
            "pkcs11:{}/v{number}:{}",
            self.label,
            guard_core::provenance::hex(&tag)
        );
        state.versions.push(Version {
            number,
            id: id.clone(),
            handle,
        });
        state
            .versions
            .sort_by(|a, b| (a.number, &a.id).cmp(&(b.number, &b.id)));
        Ok(id)
    }

    fn current<'s>(&self, state: &'s State) -> Result<&'s Version, VaultError> {
        state.versions.last().ok_or_else(|| {
            VaultError::Disabled(format!(
                "no version of master key `{}` is left on token `{}`",
                self.label, self.token
            ))
        })
    }

    fn random(&self, session: &Session, out: &mut [u8]) -> Result<(), VaultError> {
        self.call();
        session
            .generate_random_slice(out)
            .map_err(|e| self.error("cannot draw random bytes", e))
    }

    /// `key` wrapped under `version` with `context`: IV, then ciphertext and tag.
    fn wrap_with(
        &self,
        session: &Session,
        version: &Version,
        key: &[u8; KEY_LEN],
        context: &KeyContext,
    ) -> Result<WrappedKey, VaultError> {
        let mut iv = [0u8; IV_LEN];
        self.random(session, &mut iv)?;
        let aad = context_bytes(context);
        let sealed = {
            let params = GcmParams::new(&mut iv, &aad, ulong(TAG_LEN * 8)?)
                .map_err(|e| self.error("cannot set up AES-GCM", e))?;
            self.call();
            session
                .encrypt(&Mechanism::AesGcm(params), version.handle, key)
                .map_err(|e| self.error(&format!("cannot wrap under {}", version.id), e))?
        };
        if sealed.len() != KEY_LEN + TAG_LEN {
            return Err(VaultError::Unavailable(format!(
                "token `{}` returned {} bytes for a wrapped key, not {}",
                self.token,
                sealed.len(),
                KEY_LEN + TAG_LEN
            )));
        }
        // The IV as the token used it (a token may fill in its own).
        let mut blob = iv.to_vec();
        blob.extend_from_slice(&sealed);
        Ok(WrappedKey {
            master_key_id: version.id.clone(),
            blob,
        })
    }

    fn unwrap_with(
        &self,
        state: &mut State,
        wrapped: &WrappedKey,
        context: &KeyContext,
    ) -> Result<DataKeyBytes, VaultError> {
        let find = |state: &State| {
            state
                .versions
                .iter()
                .find(|v| v.id == wrapped.master_key_id)
                .map(|v| v.handle)
        };
        let handle = match find(&*state) {
            Some(handle) => handle,
            None => {
                // Made by another process (a rotation from the command line) since we looked.
                self.refresh(state)?;
                find(&*state).ok_or_else(|| self.retired(&wrapped.master_key_id))?
            }
        };
        if wrapped.blob.len() != IV_LEN + KEY_LEN + TAG_LEN {
            return Err(VaultError::Corrupt(
                "a wrapped data key has the wrong length".into(),
            ));
        }
        let (iv, sealed) = wrapped.blob.split_at(IV_LEN);
        let mut iv: [u8; IV_LEN] = iv
            .try_into()
            .map_err(|_| VaultError::Corrupt("a wrapped data key has the wrong length".into()))?;
        let aad = context_bytes(context);
        let params = GcmParams::new(&mut iv, &aad, ulong(TAG_LEN * 8)?)
            .map_err(|e| self.error("cannot set up AES-GCM", e))?;
        self.call();
        let plain = match state
            .session
            .decrypt(&Mechanism::AesGcm(params), handle, sealed)
        {
            Ok(plain) => Zeroizing::new(plain),
            // PKCS#11 says a tag that does not verify is CKR_ENCRYPTED_DATA_INVALID; SoftHSM2
            // before 2.7 answers CKR_GENERAL_ERROR. Either way the blob or its context is not
            // what was wrapped.
            Err(P11Error::Pkcs11(
                rv @ (RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::GeneralError),
                _,
            )) => {
                return Err(VaultError::WrongContext(format!(
                    "a data key does not unwrap with its context (the token answered {rv:?})"
                )))
            }
            // Destroyed by a retirement in another process.
            Err(P11Error::Pkcs11(RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid, _)) => {
                self.refresh(state)?;
                return Err(self.retired(&wrapped.master_key_id));
            }
            Err(e) => {
                return Err(self.error(&format!("cannot unwrap under {}", wrapped.master_key_id), e))
            }
        };
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if plain.len() != KEY_LEN {
            return Err(VaultError::Corrupt(
                "a wrapped data key is not 32 bytes".into(),
            ));
        }
        key.copy_from_slice(&plain);
        Ok(key)
    }

    fn retired(&self, key_id: &str) -> VaultError {
        VaultError::Disabled(format!(
            "master key {key_id} is not on token `{}` (retired, or another token)",
            self.token
        ))
    }
}

impl MasterKey for Pkcs11MasterKey {
    fn describe(&self) -> String {
        format!(
            "PKCS#11 key `{}` on token `{}` ({})",
            self.label,
            self.token,
            self.options.module.display()
        )
    }

    fn current_key_id(&self) -> Result<String, VaultError> {
        self.with_session(|state| {
            self.refresh(state)?;
            self.current(state).map(|v| v.id.clone())
        })
    }

    fn generate_data_key(&self, context: &KeyContext) -> Result<NewDataKey, VaultError> {
        self.with_session(|state| {
            // A rotation from another process makes new keys go under the new version.
            self.refresh(state)?;
            let mut plaintext = Zeroizing::new([0u8; KEY_LEN]);
            self.random(&state.session, plaintext.as_mut())?;
            let current = self.current(state)?;
            let wrapped = self.wrap_with(&state.session, current, &plaintext, context)?;
            Ok(NewDataKey { plaintext, wrapped })
        })
    }

    fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &KeyContext,
    ) -> Result<DataKeyBytes, VaultError> {
        self.with_session(|state| self.unwrap_with(state, wrapped, context))
    }

    /// Unwraps and wraps again in one locked session; the data key is on the host for that
    /// moment only (see the module's note on why not `C_WrapKey`). The current version is the
    /// one [`MasterKey::current_key_id`] last read from the token.
    fn rewrap(&self, wrapped: &WrappedKey, context: &KeyContext) -> Result<WrappedKey, VaultError> {
        self.with_session(|state| {
            let key = self.unwrap_with(state, wrapped, context)?;
            let current = self.current(state)?;
            self.wrap_with(&state.session, current, &key, context)
        })
    }

    fn rotate(&self) -> Result<String, VaultError> {
        self.with_session(|state| {
            self.refresh(state)?;
            let next = self.current(state)?.number.checked_add(1).ok_or_else(|| {
                VaultError::Invalid("the master key has no version numbers left".into())
            })?;
            self.create_version(state, next)
        })
    }

    fn retire(&self, key_id: &str) -> Result<(), VaultError> {
        self.with_session(|state| self.retire_in(state, key_id))
    }

    fn backend_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Pkcs11MasterKey {
    fn retire_in(&self, state: &mut State, key_id: &str) -> Result<(), VaultError> {
        self.refresh(state)?;
        let index = state
            .versions
            .iter()
            .position(|v| v.id == key_id)
            .ok_or_else(|| VaultError::NotFound(format!("master key {key_id}")))?;
        if index + 1 == state.versions.len() {
            return Err(VaultError::Invalid(format!(
                "{key_id} is the current master key; rotate first"
            )));
        }
        let handle = state
            .versions
            .get(index)
            .map(|v| v.handle)
            .ok_or_else(|| VaultError::NotFound(format!("master key {key_id}")))?;
        self.call();
        state
            .session
            .destroy_object(handle)
            .map_err(|e| self.error(&format!("cannot destroy {key_id}"), e))?;
        state.versions.remove(index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        match text.parse::<Pkcs11MasterOptions>() {
            Err(VaultError::Config(message)) => message,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn master_key_specs_name_a_label_and_may_refuse_to_create() {
        let options: Pkcs11MasterOptions =
            "pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=vault;key=sigil-master"
                .parse()
                .unwrap();
        assert_eq!(options.key_label, "sigil-master");
        assert_eq!(options.token.as_deref(), Some("vault"));
        assert!(options.create);
        assert_eq!(
            options.pin,
            PinSource::Env(crate::signer::DEFAULT_PIN_ENV.into())
        );
        let options: Pkcs11MasterOptions =
            "pkcs11:object=m%2Fk;create=no;slot-id=3?module-path=/opt/p11.so&pin-source=file:/run/pin"
                .parse()
                .unwrap();
        assert_eq!(options.key_label, "m/k");
        assert_eq!(options.slot, Some(3));
        assert!(!options.create);
        assert_eq!(options.pin, PinSource::File("/run/pin".into()));

        assert!(refused("pkcs11:module=m.so;token=t").contains("key=LABEL"));
        assert!(refused("pkcs11:module=m.so;key=").contains("key=LABEL"));
        assert!(refused("pkcs11:module=m.so;key=k;create=maybe").contains("create=maybe"));
        assert!(refused("pkcs11:module=m.so;key=k;id=01").contains("`id=`"));
        assert!(refused("pkcs11:module=m.so;key=k;scheme=pss").contains("`scheme=`"));
        assert!(refused("pkcs11:module=m.so;key=k;pin-value=1").contains("pin-env"));
        assert!(refused("pkcs11:module=m.so;key=k;regoin=x").contains("`regoin`"));
        assert!(refused("pkcs11:key=k").contains("module=PATH"));
        assert!(refused("pkcs11:module=m.so;key=k;key=k2").contains("given twice"));
        assert!(refused("pkcs11:module=m.so;key=%zz").contains("%XX"));
        assert!(refused("aws-kms:alias/x").contains("not a PKCS#11 key"));
    }

    #[test]
    fn configuration_checks_read_master_key_specs_as_master_keys() {
        use crate::vault::check_spec;
        check_spec("pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=t;key=k;create=no")
            .unwrap();
        // A signer's spec is not a master key's: `scheme=` has no meaning here.
        assert!(matches!(
            check_spec("pkcs11:module=m.so;token=t;key=k;scheme=pss"),
            Err(VaultError::Config(_))
        ));
        assert!(matches!(
            check_spec("pkcs11:module=m.so;token=t"),
            Err(VaultError::Config(_))
        ));
    }

    #[test]
    fn version_numbers_have_one_spelling() {
        assert_eq!(version_number("1"), Some(1));
        assert_eq!(version_number("42"), Some(42));
        for bad in ["", "0", "01", "+1", "1a", "99999999999", "-1"] {
            assert_eq!(version_number(bad), None, "{bad}");
        }
    }
}

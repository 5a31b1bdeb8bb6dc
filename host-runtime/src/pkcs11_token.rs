//! What the PKCS#11 signer and the PKCS#11 vault master key share: loading a token's module,
//! finding the token, reading the PIN, logging in, and sorting PKCS#11 failures by what the
//! operator has to do about them.
//!
//! A module is loaded and initialized once per process and never finalized: PKCS#11 allows one
//! `C_Initialize` per process, and a finalize would pull the module from under every other user
//! of it (a signer and the vault may share one token).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

/// Where the token's user PIN comes from. Never a command-line argument: those are visible to
/// every user of the machine and end up in shell history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// An environment variable.
    Env(String),
    /// A file (its first line; mode 0600 is advisable).
    File(PathBuf),
}

/// Which token, and how to log in to it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenAccess<'a> {
    /// The token's PKCS#11 library.
    pub module: &'a Path,
    /// Token label; without it (and without `slot`), the module's only token.
    pub token: Option<&'a str>,
    /// Slot id, for modules whose tokens share a label.
    pub slot: Option<u64>,
    /// Where the user PIN comes from.
    pub pin: &'a PinSource,
}

/// A logged-in session on a token.
pub(crate) struct OpenToken {
    pub pkcs11: Pkcs11,
    pub slot: Slot,
    /// The token's label, for messages.
    pub label: String,
    pub session: Session,
}

/// Why a token could not be used, before the signer or the vault gives it its own meaning
/// (a missing token is a configuration mistake to a signer and an outage to the vault).
#[derive(Debug)]
pub(crate) enum TokenError {
    /// The module file is missing, or cannot be loaded or initialized.
    Module(String),
    /// The spec or the token's contents are ambiguous or unusable as configured.
    Config(String),
    /// The PIN file cannot be read.
    PinFile {
        context: String,
        source: std::io::Error,
    },
    /// No (initialized) token matches.
    NoToken(String),
    /// The PIN is wrong, locked or expired.
    Denied(String),
    /// An object the operation names does not exist (any more).
    NotFound(String),
    /// The key may not be used this way.
    Key(String),
    /// The token was removed, failed, or the session was lost.
    Unavailable(String),
    /// Any other failure of the token.
    Backend(String),
}

/// The PIN `source` names.
pub(crate) fn read_pin(source: &PinSource) -> Result<Zeroizing<String>, TokenError> {
    match source {
        PinSource::Env(var) => std::env::var(var).map(Zeroizing::new).map_err(|_| {
            TokenError::Config(format!(
                "the token PIN is read from the environment variable `{var}`, which is not set"
            ))
        }),
        PinSource::File(path) => {
            let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
                TokenError::PinFile {
                    context: format!("cannot read the token PIN from `{}`", path.display()),
                    source,
                }
            })?);
            Ok(Zeroizing::new(
                text.lines().next().unwrap_or_default().to_string(),
            ))
        }
    }
}

/// The module at `path`, loaded and initialized once for the whole process.
pub(crate) fn module(path: &Path) -> Result<Pkcs11, TokenError> {
    static MODULES: OnceLock<Mutex<BTreeMap<PathBuf, Pkcs11>>> = OnceLock::new();
    if !path.is_file() {
        return Err(TokenError::Module(format!(
            "PKCS#11 module `{}` does not exist (SoftHSM2's is /usr/lib/softhsm/libsofthsm2.so, from the softhsm2 package)",
            path.display()
        )));
    }
    let mut modules = MODULES
        .get_or_init(Mutex::default)
        .lock()
        .map_err(|_| TokenError::Backend("the PKCS#11 module table was poisoned".into()))?;
    if let Some(pkcs11) = modules.get(path) {
        return Ok(pkcs11.clone());
    }
    let pkcs11 = Pkcs11::new(path).map_err(|e| {
        TokenError::Module(format!(
            "`{}` cannot be loaded as a PKCS#11 module ({e})",
            path.display()
        ))
    })?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(TokenError::Module(format!(
                "PKCS#11 module `{}` cannot be initialized ({e})",
                path.display()
            )))
        }
    }
    modules.insert(path.to_path_buf(), pkcs11.clone());
    Ok(pkcs11)
}

/// The one slot whose token matches `access`, and the token's label.
pub(crate) fn find_slot(
    pkcs11: &Pkcs11,
    access: &TokenAccess<'_>,
) -> Result<(Slot, String), TokenError> {
    let slots = pkcs11
        .get_slots_with_initialized_token()
        .map_err(|e| classify("cannot list the module's tokens", e))?;
    let mut found = Vec::new();
    let mut labels = Vec::new();
    for slot in slots {
        let info = pkcs11
            .get_token_info(slot)
            .map_err(|e| classify("cannot read a token's label", e))?;
        let label = info.label().trim_end().to_string();
        labels.push(format!("`{label}` (slot {})", slot.id()));
        let by_slot = access.slot.is_none_or(|id| id == slot.id());
        let by_label = access.token.is_none_or(|t| t == label);
        if by_slot && by_label {
            found.push((slot, label));
        }
    }
    let wanted = match (access.token, access.slot) {
        (Some(label), _) => format!("token `{label}`"),
        (None, Some(id)) => format!("slot {id}"),
        (None, None) => "an initialized token".to_string(),
    };
    let listed = if labels.is_empty() {
        "none".to_string()
    } else {
        labels.join(", ")
    };
    match found.len() {
        1 => found
            .pop()
            .ok_or_else(|| TokenError::NoToken(wanted.clone())),
        0 => Err(TokenError::NoToken(format!(
            "no {wanted} in `{}` (tokens: {listed})",
            access.module.display()
        ))),
        _ => Err(TokenError::Config(format!(
            "more than one {wanted} in `{}` ({listed}); name it with `token=` or `slot-id=`",
            access.module.display()
        ))),
    }
}

/// Loads the module, finds the token, reads the PIN and logs in, in that order: a missing
/// library is a more basic mistake than a missing PIN. `read_write` sessions may create and
/// destroy token objects.
pub(crate) fn open_session(
    access: &TokenAccess<'_>,
    read_write: bool,
) -> Result<OpenToken, TokenError> {
    let pkcs11 = module(access.module)?;
    let pin = read_pin(access.pin)?;
    let (slot, label) = find_slot(&pkcs11, access)?;
    let session = if read_write {
        pkcs11.open_rw_session(slot)
    } else {
        pkcs11.open_ro_session(slot)
    }
    .map_err(|e| classify(&format!("cannot open a session on token `{label}`"), e))?;
    match session.login(UserType::User, Some(&AuthPin::new(pin.as_str().into()))) {
        // Login state is per token and process: another user of this token logged in.
        Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => return Err(classify(&format!("cannot log in to token `{label}`"), e)),
    }
    Ok(OpenToken {
        pkcs11,
        slot,
        label,
        session,
    })
}

/// A PKCS#11 failure, sorted by what the operator has to do about it.
pub(crate) fn classify(what: &str, error: P11Error) -> TokenError {
    let message = format!("{what} ({error})");
    match error {
        P11Error::Pkcs11(rv, _) => match rv {
            RvError::PinIncorrect => TokenError::Denied(format!("{what}: the PIN is wrong")),
            RvError::PinLocked => TokenError::Denied(format!(
                "{what}: the PIN is locked after too many wrong tries"
            )),
            RvError::PinExpired | RvError::PinInvalid | RvError::PinLenRange => {
                TokenError::Denied(message)
            }
            RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid => {
                TokenError::NotFound(message)
            }
            RvError::KeyFunctionNotPermitted | RvError::KeyTypeInconsistent => {
                TokenError::Key(message)
            }
            RvError::TokenNotPresent
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::SessionClosed
            | RvError::SessionHandleInvalid
            | RvError::SessionCount
            | RvError::UserNotLoggedIn
            | RvError::CryptokiNotInitialized => TokenError::Unavailable(message),
            _ => TokenError::Backend(message),
        },
        _ => TokenError::Backend(message),
    }
}

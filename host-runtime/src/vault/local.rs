//! The development master key: AES-256 key versions in one local file (readable by its owner
//! only), wrapping with AES-256-GCM and the key context as associated data. It stands in for
//! KMS or an HSM on a laptop and in the demo; production keeps its master key in one of those.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::Zeroizing;

use super::master::{context_bytes, DataKeyBytes, KeyContext, MasterKey, NewDataKey, WrappedKey};
use super::VaultError;

/// The first line of a key file.
const HEADER: &str = "sigil-local-master-key v1";
/// Larger files are not key files.
const MAX_FILE: u64 = 64 * 1024;

/// One version of the local master key.
struct Version {
    number: u32,
    id: String,
    key: LessSafeKey,
    bytes: Zeroizing<[u8; 32]>,
}

/// Master key versions kept in a local file: `sigil-local-master-key v1`, then one line
/// `VERSION BASE64` per version; the highest version is current.
pub struct LocalMasterKey {
    path: PathBuf,
    versions: Mutex<Vec<Version>>,
}

impl std::fmt::Debug for LocalMasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMasterKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn version_of(number: u32, bytes: [u8; 32]) -> Result<Version, VaultError> {
    let bytes = Zeroizing::new(bytes);
    let key = UnboundKey::new(&AES_256_GCM, bytes.as_ref())
        .map_err(|_| VaultError::Config("not an AES-256 key".into()))?;
    let digest = guard_core::provenance::sha256_hex(bytes.as_ref());
    Ok(Version {
        number,
        id: format!("local:{number}:{}", digest.get(..16).unwrap_or(&digest)),
        key: LessSafeKey::new(key),
        bytes,
    })
}

fn random_key() -> Result<[u8; 32], VaultError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes)?;
    Ok(bytes)
}

impl LocalMasterKey {
    /// The key file at `path`, made with a first version (readable by its owner only) when it
    /// does not exist.
    pub fn open_or_create(path: &Path) -> Result<Self, VaultError> {
        match std::fs::metadata(path) {
            Ok(_) => Self::open(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = LocalMasterKey {
                    path: path.to_path_buf(),
                    versions: Mutex::new(vec![version_of(1, random_key()?)?]),
                };
                key.save(&key.lock()?, true)?;
                Ok(key)
            }
            Err(e) => Err(file_error(path, "cannot read", e)),
        }
    }

    /// The key file at `path`, which must exist.
    pub fn open(path: &Path) -> Result<Self, VaultError> {
        Ok(LocalMasterKey {
            path: path.to_path_buf(),
            versions: Mutex::new(read_versions(path)?),
        })
    }

    /// The versions as the file holds them now: another process (`sigil keys rotate`, `retire`)
    /// may have changed it since this one read it.
    fn refresh(&self, versions: &mut Vec<Version>) -> Result<(), VaultError> {
        *versions = read_versions(&self.path)?;
        Ok(())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Vec<Version>>, VaultError> {
        self.versions
            .lock()
            .map_err(|_| VaultError::Config("the master key's lock is poisoned".into()))
    }

    /// Writes the versions: to a new file, or through a temporary file renamed over the old
    /// one, so a crash leaves either file whole.
    fn save(&self, versions: &[Version], new: bool) -> Result<(), VaultError> {
        use std::io::Write as _;
        let mut text = Zeroizing::new(format!("{HEADER}\n"));
        for v in versions {
            text.push_str(&format!(
                "{} {}\n",
                v.number,
                STANDARD.encode(v.bytes.as_ref())
            ));
        }
        let target = if new {
            self.path.clone()
        } else {
            self.path.with_extension("key.new")
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        if !new {
            // A leftover from a crash in the middle of a rotation.
            let _ = std::fs::remove_file(&target);
        }
        let mut file = options
            .open(&target)
            .map_err(|e| file_error(&target, "cannot create", e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| file_error(&target, "cannot write", e))?;
        if !new {
            std::fs::rename(&target, &self.path)
                .map_err(|e| file_error(&self.path, "cannot replace", e))?;
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }

    fn wrap_with(
        version: &Version,
        key: &[u8; 32],
        context: &KeyContext,
    ) -> Result<WrappedKey, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce)?;
        let mut data = key.to_vec();
        version
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context_bytes(context)),
                &mut data,
            )
            .map_err(|_| VaultError::Random)?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&data);
        Ok(WrappedKey {
            master_key_id: version.id.clone(),
            blob,
        })
    }

    fn unwrap_with(
        versions: &[Version],
        wrapped: &WrappedKey,
        context: &KeyContext,
    ) -> Result<DataKeyBytes, VaultError> {
        let version = versions
            .iter()
            .find(|v| v.id == wrapped.master_key_id)
            .ok_or_else(|| {
                VaultError::Disabled(format!(
                    "master key {} is not in the key file (retired, or another file)",
                    wrapped.master_key_id
                ))
            })?;
        if wrapped.blob.len() != NONCE_LEN + 32 + AES_256_GCM.tag_len() {
            return Err(VaultError::Corrupt(
                "a wrapped data key has the wrong length".into(),
            ));
        }
        let (nonce, sealed) = wrapped.blob.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| VaultError::Corrupt("a wrapped data key has the wrong length".into()))?;
        let mut data = Zeroizing::new(sealed.to_vec());
        let plain = version
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context_bytes(context)),
                &mut data,
            )
            .map_err(|_| {
                VaultError::WrongContext("a data key does not unwrap with its context".into())
            })?;
        let mut key = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(VaultError::Corrupt(
                "a wrapped data key is not 32 bytes".into(),
            ));
        }
        key.copy_from_slice(plain);
        Ok(key)
    }
}

/// The versions of the key file at `path`: a regular file of at most [`MAX_FILE`] bytes, its
/// owner's only.
fn read_versions(path: &Path) -> Result<Vec<Version>, VaultError> {
    let bad = |what: &str| {
        VaultError::Config(format!(
            "`{}` is not a master key file: {what}",
            path.display()
        ))
    };
    let meta = std::fs::metadata(path).map_err(|e| file_error(path, "cannot read", e))?;
    if !meta.is_file() {
        return Err(bad("not a regular file"));
    }
    if meta.len() > MAX_FILE {
        return Err(bad("too large"));
    }
    // Read at most the limit: a file may grow between the check and the read.
    let mut text = Zeroizing::new(String::new());
    std::fs::File::open(path)
        .and_then(|f| {
            use std::io::Read as _;
            f.take(MAX_FILE + 1).read_to_string(&mut text)
        })
        .map_err(|e| file_error(path, "cannot read", e))?;
    if text.len() as u64 > MAX_FILE {
        return Err(bad("too large"));
    }
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some(HEADER) {
        return Err(bad("no header line"));
    }
    let mut versions: Vec<Version> = Vec::new();
    for line in lines.map(str::trim).filter(|l| !l.is_empty()) {
        let (number, encoded) = line
            .split_once(' ')
            .ok_or_else(|| bad("a line is not `VERSION BASE64`"))?;
        let number: u32 = number
            .parse()
            .map_err(|_| bad("a version is not a number"))?;
        let bytes = Zeroizing::new(
            STANDARD
                .decode(encoded.trim())
                .map_err(|_| bad("a key is not base64"))?,
        );
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| bad("a key is not 32 bytes"))?;
        if versions.iter().any(|v| v.number == number) {
            return Err(bad("a version appears twice"));
        }
        versions.push(version_of(number, bytes)?);
    }
    if versions.is_empty() {
        return Err(bad("no key versions"));
    }
    versions.sort_by_key(|v| v.number);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(bad(
                "others may read or write it; make it its owner's only (chmod 600)",
            ));
        }
    }
    Ok(versions)
}

fn file_error(path: &Path, what: &str, e: std::io::Error) -> VaultError {
    VaultError::Config(format!("master key file `{}`: {what}: {e}", path.display()))
}

impl MasterKey for LocalMasterKey {
    fn describe(&self) -> String {
        format!("local key file {}", self.path.display())
    }

    fn current_key_id(&self) -> Result<String, VaultError> {
        let mut versions = self.lock()?;
        self.refresh(&mut versions)?;
        versions
            .last()
            .map(|v| v.id.clone())
            .ok_or_else(|| VaultError::Config("the master key file has no versions".into()))
    }

    fn generate_data_key(&self, context: &KeyContext) -> Result<NewDataKey, VaultError> {
        let plaintext = Zeroizing::new(random_key()?);
        let mut versions = self.lock()?;
        // Rare (a new tenant, or a key past its cache limits), and the file decides which
        // version is current: never wrap under one another process has retired.
        self.refresh(&mut versions)?;
        let current = versions
            .last()
            .ok_or_else(|| VaultError::Config("the master key file has no versions".into()))?;
        let wrapped = Self::wrap_with(current, &plaintext, context)?;
        Ok(NewDataKey { plaintext, wrapped })
    }

    fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &KeyContext,
    ) -> Result<DataKeyBytes, VaultError> {
        let mut versions = self.lock()?;
        if !versions.iter().any(|v| v.id == wrapped.master_key_id) {
            // Wrapped under a version another process made (a rewrap while this one runs).
            self.refresh(&mut versions)?;
        }
        Self::unwrap_with(&versions, wrapped, context)
    }

    fn rewrap(&self, wrapped: &WrappedKey, context: &KeyContext) -> Result<WrappedKey, VaultError> {
        let mut versions = self.lock()?;
        self.refresh(&mut versions)?;
        let key = Self::unwrap_with(&versions, wrapped, context)?;
        let current = versions
            .last()
            .ok_or_else(|| VaultError::Config("the master key file has no versions".into()))?;
        Self::wrap_with(current, &key, context)
    }

    fn rotate(&self) -> Result<String, VaultError> {
        let mut versions = self.lock()?;
        // Saving a stale list would drop what another process added.
        self.refresh(&mut versions)?;
        let next = versions.last().map_or(1, |v| v.number.saturating_add(1));
        versions.push(version_of(next, random_key()?)?);
        if let Err(e) = self.save(&versions, false) {
            versions.pop();
            return Err(e);
        }
        self.current_key_id_of(&versions)
    }

    fn retire(&self, key_id: &str) -> Result<(), VaultError> {
        let mut versions = self.lock()?;
        self.refresh(&mut versions)?;
        let index = versions
            .iter()
            .position(|v| v.id == key_id)
            .ok_or_else(|| VaultError::NotFound(format!("master key {key_id}")))?;
        if index + 1 == versions.len() {
            return Err(VaultError::Invalid(format!(
                "{key_id} is the current master key; rotate first"
            )));
        }
        let removed = versions.remove(index);
        if let Err(e) = self.save(&versions, false) {
            versions.insert(index, removed);
            return Err(e);
        }
        Ok(())
    }
}

impl LocalMasterKey {
    fn current_key_id_of(&self, versions: &[Version]) -> Result<String, VaultError> {
        versions
            .last()
            .map(|v| v.id.clone())
            .ok_or_else(|| VaultError::Config("the master key file has no versions".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(tenant: &str) -> KeyContext {
        [("sigil:tenant".to_string(), tenant.to_string())].into()
    }

    #[test]
    fn keys_unwrap_only_with_their_context_and_survive_rotation_until_retired(
    ) -> Result<(), VaultError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let master = LocalMasterKey::open_or_create(&path)?;
        let first = master.generate_data_key(&context("acme"))?;
        assert_eq!(
            *master.decrypt_data_key(&first.wrapped, &context("acme"))?,
            *first.plaintext
        );
        assert!(matches!(
            master.decrypt_data_key(&first.wrapped, &context("other")),
            Err(VaultError::WrongContext(_))
        ));

        let old_id = master.current_key_id()?;
        let new_id = master.rotate()?;
        assert_ne!(old_id, new_id);
        // The file was rewritten whole: a second opening sees both versions.
        let reopened = LocalMasterKey::open(&path)?;
        assert_eq!(reopened.current_key_id()?, new_id);
        assert_eq!(
            *reopened.decrypt_data_key(&first.wrapped, &context("acme"))?,
            *first.plaintext
        );

        let rewrapped = master.rewrap(&first.wrapped, &context("acme"))?;
        assert_eq!(rewrapped.master_key_id, new_id);
        assert!(matches!(
            master.retire(&new_id),
            Err(VaultError::Invalid(_))
        ));
        master.retire(&old_id)?;
        assert_eq!(
            *master.decrypt_data_key(&rewrapped, &context("acme"))?,
            *first.plaintext
        );
        assert!(matches!(
            master.decrypt_data_key(&first.wrapped, &context("acme")),
            Err(VaultError::Disabled(_))
        ));
        assert!(matches!(
            LocalMasterKey::open(&path)?.decrypt_data_key(&first.wrapped, &context("acme")),
            Err(VaultError::Disabled(_))
        ));
        Ok(())
    }

    #[test]
    fn files_that_are_not_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "",
            "sigil-local-master-key v1\n",
            "hello\n1 AAAA\n",
            "sigil-local-master-key v1\n1 AAAA\n",
        ] {
            let path = dir.path().join("k");
            std::fs::write(&path, text).unwrap();
            assert!(
                matches!(LocalMasterKey::open(&path), Err(VaultError::Config(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_running_key_follows_rotation_and_retirement_by_another_process() -> Result<(), VaultError>
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        // The service's copy, opened before the CLI rotates.
        let service = LocalMasterKey::open_or_create(&path)?;
        let first = service.generate_data_key(&context("acme"))?;
        let cli = LocalMasterKey::open(&path)?;
        let old_id = cli.current_key_id()?;
        let new_id = cli.rotate()?;
        let rewrapped = cli.rewrap(&first.wrapped, &context("acme"))?;
        // A key the CLI rewrapped opens in the service, which never saw the new version.
        assert_eq!(
            *service.decrypt_data_key(&rewrapped, &context("acme"))?,
            *first.plaintext
        );
        cli.retire(&old_id)?;
        // New keys in the service are wrapped under what the file says is current.
        let later = service.generate_data_key(&context("beta"))?;
        assert_eq!(later.wrapped.master_key_id, new_id);
        assert!(matches!(
            service.decrypt_data_key(&first.wrapped, &context("acme")),
            Err(VaultError::Disabled(_))
        ));
        // A rotation by the service keeps the version the CLI made.
        let third = service.rotate()?;
        let versions = LocalMasterKey::open(&path)?;
        assert_eq!(versions.current_key_id()?, third);
        assert_eq!(
            *versions.decrypt_data_key(&later.wrapped, &context("beta"))?,
            *later.plaintext
        );
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn key_files_others_can_read_or_that_are_not_files_are_refused() -> Result<(), VaultError> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        LocalMasterKey::open_or_create(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = LocalMasterKey::open(&path).map(|_| ());
        assert!(
            matches!(&refused, Err(VaultError::Config(m)) if m.contains("chmod 600")),
            "{refused:?}"
        );
        for special in ["/dev/zero", "/proc/self/mem"] {
            let refused = LocalMasterKey::open(Path::new(special)).map(|_| ());
            assert!(matches!(refused, Err(VaultError::Config(_))), "{special}");
        }
        Ok(())
    }
}

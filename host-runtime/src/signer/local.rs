//! A local RSA key for development signing, in constant-time code (aws-lc-rs).
//!
//! The `rsa` crate's private-key operations are not constant time (RUSTSEC-2023-0071); they are
//! never used here. Keys are PKCS#8 PEM files readable by their owner only.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RSA_PSS_SHA256};
use guard_core::Scheme;

use super::{check_public_key, fingerprint, SignError, Signer};

const PRIVATE_LABEL: &str = "PRIVATE KEY";
const PUBLIC_LABEL: &str = "PUBLIC KEY";

/// An RSA key pair held in this process.
pub struct LocalSigner {
    key: KeyPair,
    public_der: Vec<u8>,
    scheme: Scheme,
}

impl std::fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSigner")
            .field("fingerprint", &fingerprint(&self.public_der))
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

/// Paths of a key pair written by [`LocalSigner::generate_files`].
#[derive(Debug, Clone)]
pub struct KeyFiles {
    /// PKCS#8 PEM, mode 0600.
    pub private_key: PathBuf,
    /// SubjectPublicKeyInfo PEM.
    pub public_key: PathBuf,
    /// Hex SHA-256 of the SPKI DER.
    pub fingerprint: String,
}

fn key_error(e: impl std::fmt::Display) -> SignError {
    SignError::Key(e.to_string())
}

impl LocalSigner {
    /// A new key pair of 2048, 3072 or 4096 bits.
    pub fn generate(bits: u32) -> Result<Self, SignError> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            other => {
                return Err(SignError::Key(format!(
                    "{other} bits; use 2048, 3072 or 4096"
                )))
            }
        };
        Self::from_key(KeyPair::generate(size).map_err(key_error)?)
    }

    fn from_key(key: KeyPair) -> Result<Self, SignError> {
        let public: PublicKeyX509Der<'static> = key.public_key().as_der().map_err(key_error)?;
        let public_der = public.as_ref().to_vec();
        // The verifier accepts 2048 to 4096 bits; refuse here what it would refuse later.
        check_public_key(&public_der, Scheme::RsassaPkcs1v15Sha256)?;
        Ok(LocalSigner {
            key,
            public_der,
            scheme: Scheme::RsassaPkcs1v15Sha256,
        })
    }

    /// The same key signing with `scheme` (keys are read and generated as PKCS#1 v1.5 signers).
    /// PSS signatures use SHA-256, MGF1-SHA-256 and a 32-byte salt, as the verifier expects.
    pub fn with_scheme(mut self, scheme: Scheme) -> Result<Self, SignError> {
        check_public_key(&self.public_der, scheme)?;
        self.scheme = scheme;
        Ok(self)
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn from_pem_file(path: &Path) -> Result<Self, SignError> {
        let text = fs::read_to_string(path).map_err(|source| SignError::Io {
            context: format!("cannot read signing key `{}`", path.display()),
            source,
        })?;
        Self::from_pem(&text)
    }

    /// Parses a PKCS#8 PEM private key.
    pub fn from_pem(text: &str) -> Result<Self, SignError> {
        let (label, der) = pem_rfc7468::decode_vec(text.trim().as_bytes())
            .map_err(|e| SignError::Key(format!("not a PEM `{PRIVATE_LABEL}` block ({e})")))?;
        if label != PRIVATE_LABEL {
            return Err(SignError::Key(format!(
                "expected a `{PRIVATE_LABEL}` PEM block, found `{label}`"
            )));
        }
        let key = KeyPair::from_pkcs8(&der).map_err(|e| {
            SignError::Key(format!(
                "not an RSA private key of 2048 to 4096 bits in PKCS#8 ({e})"
            ))
        })?;
        Self::from_key(key)
    }

    /// The private key as PKCS#8 PEM.
    pub fn private_pem(&self) -> Result<String, SignError> {
        let der: Pkcs8V1Der<'static> = self.key.as_der().map_err(key_error)?;
        pem_rfc7468::encode_string(PRIVATE_LABEL, pem_rfc7468::LineEnding::LF, der.as_ref())
            .map_err(key_error)
    }

    /// The public key as SPKI PEM.
    pub fn public_pem(&self) -> Result<String, SignError> {
        public_pem(&self.public_der)
    }

    /// Generates a key pair into `dir` as `<name>.pem` (mode 0600) and `<name>.pub.pem`.
    /// Refuses to overwrite unless `force`.
    pub fn generate_files(
        dir: &Path,
        name: &str,
        bits: u32,
        force: bool,
    ) -> Result<(Self, KeyFiles), SignError> {
        // A name, not a path: the files stay in `dir`.
        let plain = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if name.is_empty() || name.starts_with('.') || !plain {
            return Err(SignError::Key(format!(
                "key name `{name}` must be letters, digits, `-`, `_` or `.`, not starting with `.`"
            )));
        }
        let signer = Self::generate(bits)?;
        let io = |context: String| move |source| SignError::Io { context, source };
        fs::create_dir_all(dir).map_err(io(format!("cannot create `{}`", dir.display())))?;
        let private_key = dir.join(format!("{name}.pem"));
        let public_key = dir.join(format!("{name}.pub.pem"));
        // Either half of an existing pair is kept unless --force: nothing is written if one is there.
        if !force {
            if let Some(existing) = [&private_key, &public_key].into_iter().find(|p| p.exists()) {
                return Err(SignError::Io {
                    context: format!(
                        "cannot create `{}` (use --force to replace a key)",
                        existing.display()
                    ),
                    source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                });
            }
        }
        let mut options = OpenOptions::new();
        options.write(true);
        if force {
            options.create(true).truncate(true);
        } else {
            options.create_new(true);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&private_key).map_err(io(format!(
            "cannot create `{}` (use --force to replace a key)",
            private_key.display()
        )))?;
        #[cfg(unix)]
        {
            // `mode` applies only to new files; a replaced one is narrowed too.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&private_key, fs::Permissions::from_mode(0o600))
                .map_err(io(format!("cannot restrict `{}`", private_key.display())))?;
        }
        file.write_all(signer.private_pem()?.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io(format!("cannot write `{}`", private_key.display())))?;
        let public_pem = signer.public_pem()?;
        let mut public_options = OpenOptions::new();
        public_options.write(true).create(true).truncate(true);
        public_options
            .open(&public_key)
            .and_then(|mut f| f.write_all(public_pem.as_bytes()))
            .map_err(io(format!("cannot write `{}`", public_key.display())))?;
        let fingerprint = fingerprint(&signer.public_der);
        Ok((
            signer,
            KeyFiles {
                private_key,
                public_key,
                fingerprint,
            },
        ))
    }
}

/// SPKI DER as PEM.
pub fn public_pem(der: &[u8]) -> Result<String, SignError> {
    pem_rfc7468::encode_string(PUBLIC_LABEL, pem_rfc7468::LineEnding::LF, der).map_err(key_error)
}

impl Signer for LocalSigner {
    fn public_key_der(&self) -> &[u8] {
        &self.public_der
    }

    fn scheme(&self) -> Scheme {
        self.scheme
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        // aws-lc-rs's PSS encoding uses a salt as long as the digest: 32 bytes for SHA-256.
        let padding = match self.scheme {
            Scheme::RsassaPkcs1v15Sha256 => &RSA_PKCS1_SHA256,
            Scheme::RsassaPssSha256 => &RSA_PSS_SHA256,
        };
        self.key
            .sign(padding, &SystemRandom::new(), message, &mut signature)
            .map_err(|e| SignError::Backend(e.to_string()))?;
        Ok(signature)
    }
}

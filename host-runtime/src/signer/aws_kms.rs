//! AWS KMS: asymmetric RSA keys that sign the SHA-256 of the pre-authentication encoding
//! (`MessageType=DIGEST`), so no template size meets KMS's 4096-byte limit on RAW messages.
//!
//! The SDK is async and [`Signer`] is not: each [`AwsKmsSigner`] runs the SDK on a private
//! runtime (see `crate::kms`), so it works the same from the CLI, a plain thread and inside the
//! runtime of `sigil serve`.
//!
//! With replica regions in [`KmsOptions::replicas`], keys are multi-Region keys: the same key
//! material, the same public key, in every region. When the primary region cannot be reached the
//! signer signs in a replica, and its signatures verify under the same pinned public key.
//!
//! A signer opened on an alias resolves it once, at [`AwsKmsSigner::open`], and signs with the
//! key the alias named then: its public key and its signatures stay one pair even if the alias is
//! moved meanwhile. [`AwsKmsSigner::rotate`] is manual rotation: a new key, the alias moved to it,
//! and the old key left enabled so its signatures still verify until it is retired.

use std::time::Duration;

use aws_sdk_kms::config::Credentials;
use aws_sdk_kms::operation::get_public_key::GetPublicKeyOutput;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use guard_core::Scheme;

use super::{check_public_key, check_signature_len, fingerprint, sha256, SignError, Signer};
use crate::kms::{alias_name, arn_in_region, kms_error, KmsError, KmsErrorKind, Regions};

/// A replica region of a multi-Region key, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsReplica {
    /// The replica's AWS region.
    pub region: String,
    /// Endpoint URL in place of AWS's for that region.
    pub endpoint: Option<String>,
}

/// Where a KMS key is and how to reach it.
#[derive(Debug, Clone)]
pub struct KmsOptions {
    /// Key id, key ARN, alias (`alias/…`) or alias ARN.
    pub key: String,
    /// AWS region (the primary one when there are replicas); without it, the usual AWS
    /// environment (`AWS_REGION`, profile files).
    pub region: Option<String>,
    /// Endpoint URL in place of AWS's (a KMS-compatible server, a VPC endpoint).
    pub endpoint: Option<String>,
    /// Regions the key is replicated to, tried in this order when the primary cannot be reached.
    pub replicas: Vec<KmsReplica>,
    /// How long a replica serves before the primary is tried again (doubled after each failed
    /// try, up to ten minutes).
    pub failback: Duration,
    /// The scheme to sign with.
    pub scheme: Scheme,
    /// The longest any one KMS operation may take in one region, retries included.
    pub timeout: Duration,
    /// Fixed credentials (for tests and local servers); without them, the SDK's default chain.
    pub credentials: Option<Credentials>,
}

impl KmsOptions {
    /// PKCS#1 v1.5, the environment's region and credentials, AWS's endpoint, no replicas,
    /// 10 s per operation, 30 s before a failed-over backend tries its primary again.
    pub fn new(key: impl Into<String>) -> Self {
        KmsOptions {
            key: key.into(),
            region: None,
            endpoint: None,
            replicas: Vec::new(),
            failback: Duration::from_secs(30),
            scheme: Scheme::RsassaPkcs1v15Sha256,
            timeout: Duration::from_secs(10),
            credentials: None,
        }
    }
}

/// A KMS key as the keyring needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsKey {
    /// The key's ARN in the primary region (never an alias).
    pub key_arn: String,
    /// Its SubjectPublicKeyInfo, DER.
    pub public_key_der: Vec<u8>,
    /// Hex SHA-256 of the SPKI: its fingerprint in keyrings.
    pub fingerprint: String,
}

/// What a manual rotation did: the alias now names `current`; `previous` is still enabled, and
/// stays in keyrings to verify what it signed until it is retired.
#[derive(Debug)]
pub struct KmsRotation {
    /// The alias that was moved (`alias/…`).
    pub alias: String,
    /// The key the alias named before.
    pub previous: KmsKey,
    /// The new key the alias names now.
    pub current: KmsKey,
    /// A signer on the new key.
    pub signer: AwsKmsSigner,
}

/// A KMS key that signs templates.
pub struct AwsKmsSigner {
    regions: Regions,
    key: KmsKey,
    scheme: Scheme,
}

impl std::fmt::Debug for AwsKmsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKmsSigner")
            .field("key_arn", &self.key.key_arn)
            .field("fingerprint", &self.key.fingerprint)
            .field("scheme", &self.scheme)
            .field("regions", &self.regions.names())
            .finish_non_exhaustive()
    }
}

impl From<KmsError> for SignError {
    fn from(e: KmsError) -> Self {
        match e.kind {
            KmsErrorKind::Unreachable | KmsErrorKind::Busy => SignError::Unavailable(e.message),
            KmsErrorKind::Config => SignError::Config(e.message),
            KmsErrorKind::NotFound => SignError::NotFound(e.message),
            KmsErrorKind::Disabled => SignError::Disabled(e.message),
            KmsErrorKind::Denied => SignError::Denied(e.message),
            KmsErrorKind::KeyUsage => SignError::Key(e.message),
            KmsErrorKind::InvalidCiphertext | KmsErrorKind::Other => SignError::Backend(e.message),
        }
    }
}

impl AwsKmsSigner {
    /// Resolves the key (an alias to the key it names now), fetches its public key with
    /// GetPublicKey, and checks that it is an enabled RSA signing key the verifier accepts. A
    /// replica answers when the primary region cannot be reached.
    pub fn open(options: &KmsOptions) -> Result<Self, SignError> {
        let regions = Regions::connect(options)?;
        let name = options.key.clone();
        let output = regions
            .call(move |client, region| get_public_key(client, arn_in_region(&name, &region)))?;
        let key = checked_key(output, &options.key, options.scheme, regions.primary())?;
        Ok(AwsKmsSigner {
            regions,
            key,
            scheme: options.scheme,
        })
    }

    /// Creates a new RSA signing key of `bits` (2048, 3072 or 4096), replicated to every replica
    /// region, and, when `options.key` is an alias, creates that alias for it in every region.
    /// Returns a signer on the new key.
    pub fn create(options: &KmsOptions, bits: u32) -> Result<Self, SignError> {
        let spec = key_spec(bits)?;
        let regions = Regions::connect(options)?;
        let arn = regions.create_key(
            KeyUsageType::SignVerify,
            spec,
            "Sigil template signing key".into(),
        )?;
        if let Some(alias) = alias_name(&options.key) {
            regions.point_alias(&alias, &arn, false)?;
        }
        let key = fetch_key_in_primary(&regions, &arn, options.scheme)?;
        Ok(AwsKmsSigner {
            regions,
            key,
            scheme: options.scheme,
        })
    }

    /// Manual rotation of the alias `options.key`: creates a key of the same size (replicated
    /// like the old one), moves the alias to it in every region, and leaves the old key enabled,
    /// so that signatures it made still verify against its pinned public key until it is retired
    /// (disabled or scheduled for deletion once no keyring lists it). Returns both keys and a
    /// signer on the new one. Rotation is administration: every region must be reachable.
    ///
    /// ```no_run
    /// use host_runtime::signer::{AwsKmsSigner, KmsOptions, Signer};
    ///
    /// let rotation = AwsKmsSigner::rotate(&KmsOptions::new("alias/sigil-templates"))?;
    /// // Pin the new key beside the old one; give the old one a `valid_until`.
    /// println!("{} -> {}", rotation.previous.fingerprint, rotation.current.fingerprint);
    /// let signature = rotation.signer.sign(b"the DSSE pre-authentication encoding")?;
    /// # Ok::<(), host_runtime::signer::SignError>(())
    /// ```
    pub fn rotate(options: &KmsOptions) -> Result<KmsRotation, SignError> {
        let alias = alias_name(&options.key).ok_or_else(|| {
            SignError::Config(format!(
                "`{}` is not an alias; rotation moves an alias (`alias/…`) to a new key",
                options.key
            ))
        })?;
        let regions = Regions::connect(options)?;
        let previous = fetch_key_in_primary(&regions, &options.key, options.scheme)?;
        let bits = check_public_key(&previous.public_key_der, options.scheme)?;
        let spec = key_spec(u32::try_from(bits).unwrap_or(0))?;
        let description = format!("Sigil template signing key after {}", previous.key_arn);
        let arn = regions.create_key(KeyUsageType::SignVerify, spec, description)?;
        regions.point_alias(&alias, &arn, true)?;
        let current = fetch_key_in_primary(&regions, &arn, options.scheme)?;
        let signer = AwsKmsSigner {
            regions,
            key: current.clone(),
            scheme: options.scheme,
        };
        Ok(KmsRotation {
            alias,
            previous,
            current,
            signer,
        })
    }

    /// The key this signer signs with.
    pub fn key(&self) -> &KmsKey {
        &self.key
    }

    /// How many times the signer switched region (to a replica, or back to the primary).
    pub fn failovers(&self) -> u64 {
        self.regions.failovers()
    }

    /// How many requests KMS answered for this signer.
    pub fn backend_calls(&self) -> u64 {
        self.regions.calls()
    }

    /// Signs a SHA-256 digest with `MessageType=DIGEST`, in the primary region or, while it
    /// cannot be reached, in a replica (the same key material).
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, SignError> {
        let (arn, scheme) = (self.key.key_arn.clone(), self.scheme);
        let digest = digest.to_vec();
        let signature = self.regions.call(move |client, region| {
            let arn = arn_in_region(&arn, &region);
            let request = client
                .sign()
                .key_id(&arn)
                .message(Blob::new(digest.clone()))
                .message_type(MessageType::Digest)
                .signing_algorithm(algorithm(scheme));
            async move {
                let output = request
                    .send()
                    .await
                    .map_err(|e| kms_error(&format!("KMS cannot sign with `{arn}`"), e))?;
                output.signature.map(Blob::into_inner).ok_or_else(|| {
                    KmsError::new(
                        KmsErrorKind::Other,
                        format!("KMS returned no signature for `{arn}`"),
                    )
                })
            }
        })?;
        check_signature_len(signature, &self.key.public_key_der, self.scheme)
    }
}

impl Signer for AwsKmsSigner {
    fn public_key_der(&self) -> &[u8] {
        &self.key.public_key_der
    }

    fn scheme(&self) -> Scheme {
        self.scheme
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.sign_digest(&sha256(message))
    }
}

/// GetPublicKey of `key` in the primary region only (administration).
fn fetch_key_in_primary(regions: &Regions, key: &str, scheme: Scheme) -> Result<KmsKey, SignError> {
    let name = key.to_string();
    let output = regions.call_in(0, 1, move |client, _| get_public_key(client, name))?;
    checked_key(output, key, scheme, regions.primary())
}

async fn get_public_key(
    client: aws_sdk_kms::Client,
    key: String,
) -> Result<GetPublicKeyOutput, KmsError> {
    client
        .get_public_key()
        .key_id(&key)
        .send()
        .await
        .map_err(|e| kms_error(&format!("KMS cannot read the public key of `{key}`"), e))
}

/// The checks KMS's GetPublicKey answer allows: an RSA signing key of an accepted size that
/// offers the scheme's algorithm, and a public key the verifier accepts.
fn checked_key(
    output: GetPublicKeyOutput,
    key: &str,
    scheme: Scheme,
    primary: &str,
) -> Result<KmsKey, SignError> {
    if let Some(usage) = output.key_usage() {
        if *usage != KeyUsageType::SignVerify {
            return Err(SignError::Key(format!(
                "KMS key `{key}` has key usage {}; template signing needs SIGN_VERIFY",
                usage.as_str()
            )));
        }
    }
    // Without a KeySpec, the public key's own check below still refuses what is not RSA.
    if let Some(spec) = output.key_spec() {
        if !matches!(spec, KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096) {
            return Err(SignError::Key(format!(
                "KMS key `{key}` is {}; template signing needs RSA_2048, RSA_3072 or RSA_4096",
                spec.as_str()
            )));
        }
    }
    let wanted = algorithm(scheme);
    let offered = output.signing_algorithms();
    if !offered.is_empty() && !offered.contains(&wanted) {
        return Err(SignError::Key(format!(
            "KMS key `{key}` does not offer {}",
            wanted.as_str()
        )));
    }
    let public_key_der = output
        .public_key
        .map(Blob::into_inner)
        .ok_or_else(|| SignError::Backend(format!("KMS returned no public key for `{key}`")))?;
    check_public_key(&public_key_der, scheme)
        .map_err(|e| SignError::Key(format!("KMS key `{key}`: {e}")))?;
    // Whichever region answered, the key is named as the primary names it.
    let key_arn = arn_in_region(output.key_id.as_deref().unwrap_or(key), primary);
    Ok(KmsKey {
        key_arn,
        fingerprint: fingerprint(&public_key_der),
        public_key_der,
    })
}

fn key_spec(bits: u32) -> Result<KeySpec, SignError> {
    match bits {
        2048 => Ok(KeySpec::Rsa2048),
        3072 => Ok(KeySpec::Rsa3072),
        4096 => Ok(KeySpec::Rsa4096),
        other => Err(SignError::Key(format!(
            "{other} bits; use 2048, 3072 or 4096"
        ))),
    }
}

fn algorithm(scheme: Scheme) -> SigningAlgorithmSpec {
    match scheme {
        Scheme::RsassaPkcs1v15Sha256 => SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
        Scheme::RsassaPssSha256 => SigningAlgorithmSpec::RsassaPssSha256,
    }
}

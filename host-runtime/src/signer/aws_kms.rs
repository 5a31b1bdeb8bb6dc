//! AWS KMS: asymmetric RSA keys that sign the SHA-256 of the pre-authentication encoding
//! (`MessageType=DIGEST`), so no template size meets KMS's 4096-byte limit on RAW messages.
//!
//! The SDK is async and [`Signer`] is not. Each [`AwsKmsSigner`] owns a small tokio runtime (one
//! worker thread) on which every SDK call runs; a caller waits for the answer on a channel with a
//! deadline. Nothing here enters a runtime from the calling thread (`block_on`) or blocks one
//! while dropping, so the signer works the same from the CLI, from a plain thread, and from inside
//! the runtime of `sigil serve` — where, as any blocking call, it belongs in `spawn_blocking`.
//!
//! A signer opened on an alias resolves it once, at [`AwsKmsSigner::open`], and signs with the
//! key the alias named then: its public key and its signatures stay one pair even if the alias is
//! moved meanwhile. [`AwsKmsSigner::rotate`] is manual rotation: a new key, the alias moved to it,
//! and the old key left enabled so its signatures still verify until it is retired.

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_kms::config::Credentials;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use aws_sdk_kms::Client;
use guard_core::Scheme;

use super::{check_public_key, check_signature_len, fingerprint, sha256, SignError, Signer};

/// Where a KMS key is and how to reach it.
#[derive(Debug, Clone)]
pub struct KmsOptions {
    /// Key id, key ARN, alias (`alias/…`) or alias ARN.
    pub key: String,
    /// AWS region; without it, the usual AWS environment (`AWS_REGION`, profile files).
    pub region: Option<String>,
    /// Endpoint URL in place of AWS's (a KMS-compatible server, a VPC endpoint).
    pub endpoint: Option<String>,
    /// The scheme to sign with.
    pub scheme: Scheme,
    /// The longest any one KMS operation may take, retries included.
    pub timeout: Duration,
    /// Fixed credentials (for tests and local servers); without them, the SDK's default chain.
    pub credentials: Option<Credentials>,
}

impl KmsOptions {
    /// PKCS#1 v1.5, the environment's region and credentials, AWS's endpoint, 10 s per operation.
    pub fn new(key: impl Into<String>) -> Self {
        KmsOptions {
            key: key.into(),
            region: None,
            endpoint: None,
            scheme: Scheme::RsassaPkcs1v15Sha256,
            timeout: Duration::from_secs(10),
            credentials: None,
        }
    }
}

/// A KMS key as the keyring needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsKey {
    /// The key's ARN (never an alias).
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
    worker: Worker,
    client: Client,
    key: KmsKey,
    scheme: Scheme,
    timeout: Duration,
}

impl std::fmt::Debug for AwsKmsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKmsSigner")
            .field("key_arn", &self.key.key_arn)
            .field("fingerprint", &self.key.fingerprint)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl AwsKmsSigner {
    /// Resolves the key (an alias to the key it names now), fetches its public key with
    /// GetPublicKey, and checks that it is an enabled RSA signing key the verifier accepts.
    pub fn open(options: &KmsOptions) -> Result<Self, SignError> {
        let worker = Worker::new()?;
        let client = worker.run(options.timeout, connect(options.clone()))?;
        let key = worker.run(
            options.timeout,
            fetch_key(client.clone(), options.key.clone(), options.scheme),
        )?;
        Ok(AwsKmsSigner {
            worker,
            client,
            key,
            scheme: options.scheme,
            timeout: options.timeout,
        })
    }

    /// Creates a new RSA signing key of `bits` (2048, 3072 or 4096) and, when `options.key` is an
    /// alias, creates that alias for it. Returns a signer on the new key.
    pub fn create(options: &KmsOptions, bits: u32) -> Result<Self, SignError> {
        let spec = key_spec(bits)?;
        let alias = alias_name(&options.key);
        let worker = Worker::new()?;
        let client = worker.run(options.timeout, connect(options.clone()))?;
        let (c, scheme) = (client.clone(), options.scheme);
        // Three operations in a row, each with its own timeout.
        let key = worker.run(options.timeout * 3, async move {
            let arn = create_key(&c, spec, "Sigil template signing key".into()).await?;
            if let Some(alias) = alias {
                c.create_alias()
                    .alias_name(&alias)
                    .target_key_id(&arn)
                    .send()
                    .await
                    .map_err(|e| {
                        kms_error(
                            &format!("cannot create `{alias}` for the new key `{arn}`"),
                            e,
                        )
                    })?;
            }
            fetch_key(c, arn, scheme).await
        })?;
        Ok(AwsKmsSigner {
            worker,
            client,
            key,
            scheme: options.scheme,
            timeout: options.timeout,
        })
    }

    /// Manual rotation of the alias `options.key`: creates a key of the same size, moves the
    /// alias to it, and leaves the old key enabled, so that signatures it made still verify
    /// against its pinned public key until it is retired (disabled or scheduled for deletion
    /// once no keyring lists it). Returns both keys and a signer on the new one.
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
        let worker = Worker::new()?;
        let client = worker.run(options.timeout, connect(options.clone()))?;
        let (c, scheme, alias_moved) = (client.clone(), options.scheme, alias.clone());
        let from = options.key.clone();
        // Four operations in a row, each with its own timeout.
        let (previous, current) = worker.run(options.timeout * 4, async move {
            let previous = fetch_key(c.clone(), from, scheme).await?;
            let bits = check_public_key(&previous.public_key_der, scheme)?;
            let spec = key_spec(u32::try_from(bits).unwrap_or(0))?;
            let description = format!("Sigil template signing key after {}", previous.key_arn);
            let arn = create_key(&c, spec, description).await?;
            c.update_alias()
                .alias_name(&alias_moved)
                .target_key_id(&arn)
                .send()
                .await
                .map_err(|e| {
                    let what = format!(
                        "created `{arn}` but cannot move `{alias_moved}` to it \
                         (retry, or schedule that key's deletion)"
                    );
                    kms_error(&what, e)
                })?;
            let current = fetch_key(c, arn, scheme).await?;
            Ok((previous, current))
        })?;
        let signer = AwsKmsSigner {
            worker,
            client,
            key: current.clone(),
            scheme: options.scheme,
            timeout: options.timeout,
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

    /// Signs a SHA-256 digest with `MessageType=DIGEST`.
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, SignError> {
        let request = self
            .client
            .sign()
            .key_id(&self.key.key_arn)
            .message(Blob::new(digest.to_vec()))
            .message_type(MessageType::Digest)
            .signing_algorithm(algorithm(self.scheme));
        let arn = self.key.key_arn.clone();
        let signature = self.worker.run(self.timeout, async move {
            let output = request
                .send()
                .await
                .map_err(|e| kms_error(&format!("KMS cannot sign with `{arn}`"), e))?;
            output
                .signature
                .map(Blob::into_inner)
                .ok_or_else(|| SignError::Backend(format!("KMS returned no signature for `{arn}`")))
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

/// A one-thread runtime for the SDK's futures. Dropped without waiting, so dropping a signer
/// inside an async task is fine.
struct Worker {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Worker {
    fn new() -> Result<Self, SignError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sigil-kms")
            .enable_all()
            .build()
            .map_err(|e| {
                SignError::Backend(format!("cannot start the KMS client's runtime: {e}"))
            })?;
        Ok(Worker {
            runtime: Some(runtime),
        })
    }

    /// Runs `future` on the worker and waits for it, at most a little longer than `timeout` (the
    /// SDK enforces `timeout` itself; this is the backstop for anything that does not).
    fn run<T: Send + 'static>(
        &self,
        timeout: Duration,
        future: impl Future<Output = Result<T, SignError>> + Send + 'static,
    ) -> Result<T, SignError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| SignError::Backend("the KMS client's runtime has stopped".into()))?;
        let (sender, receiver) = mpsc::sync_channel(1);
        runtime.spawn(async move {
            // The receiver is gone only if the caller gave up waiting.
            let _ = sender.send(future.await);
        });
        receiver
            .recv_timeout(timeout + Duration::from_secs(5))
            .map_err(|_| {
                SignError::Unavailable(format!(
                    "KMS did not answer within {} s",
                    timeout.as_secs() + 5
                ))
            })?
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn connect(options: KmsOptions) -> Result<Client, SignError> {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(options.timeout.min(Duration::from_secs(3)))
        .operation_attempt_timeout(options.timeout)
        .operation_timeout(options.timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(3));
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &options.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(credentials) = options.credentials {
        loader = loader.credentials_provider(credentials);
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(SignError::Config(
            "no AWS region: set AWS_REGION, a profile's region, or `region=` in the signer spec"
                .into(),
        ));
    }
    Ok(Client::new(&config))
}

/// GetPublicKey, with the checks KMS's answer allows: an RSA signing key of an accepted size that
/// offers the scheme's algorithm, and a public key the verifier accepts.
async fn fetch_key(client: Client, key: String, scheme: Scheme) -> Result<KmsKey, SignError> {
    let output = client
        .get_public_key()
        .key_id(&key)
        .send()
        .await
        .map_err(|e| kms_error(&format!("KMS cannot read the public key of `{key}`"), e))?;
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
    let key_arn = output.key_id.unwrap_or(key);
    Ok(KmsKey {
        key_arn,
        fingerprint: fingerprint(&public_key_der),
        public_key_der,
    })
}

async fn create_key(
    client: &Client,
    spec: KeySpec,
    description: String,
) -> Result<String, SignError> {
    let output = client
        .create_key()
        .key_usage(KeyUsageType::SignVerify)
        .key_spec(spec)
        .description(description)
        .send()
        .await
        .map_err(|e| kms_error("KMS cannot create a signing key", e))?;
    output
        .key_metadata
        .and_then(|m| m.arn)
        .ok_or_else(|| SignError::Backend("KMS created a key but returned no ARN".into()))
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

/// `alias/NAME` from an alias or an alias ARN; `None` for key ids and key ARNs.
fn alias_name(key: &str) -> Option<String> {
    if key.starts_with("alias/") {
        return Some(key.to_string());
    }
    key.split_once(":alias/")
        .map(|(_, name)| format!("alias/{name}"))
}

/// KMS's error, sorted by what the operator has to do about it.
fn kms_error<E, R>(what: &str, error: SdkError<E, R>) -> SignError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let detail = match &error {
        SdkError::ServiceError(service) => {
            let e = service.err();
            format!(
                "{}: {}",
                e.code().unwrap_or("error"),
                e.message().unwrap_or("(no message)")
            )
        }
        other => causes(other),
    };
    let message = format!("{what} ({detail})");
    // Credentials are resolved while the request is dispatched: their failure is not the network's.
    if let Some(credentials) = find_cause::<CredentialsError>(&error) {
        return match credentials {
            CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
                SignError::Config(format!(
                    "{what}: no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with a role) ({detail})"
                ))
            }
            CredentialsError::ProviderTimedOut(_) => SignError::Unavailable(message),
            _ => SignError::Denied(message),
        };
    }
    match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => SignError::Unavailable(message),
        SdkError::ServiceError(service) => match service.err().code() {
            Some("NotFoundException") => SignError::NotFound(message),
            Some("DisabledException" | "KMSInvalidStateException" | "KeyUnavailableException") => {
                SignError::Disabled(message)
            }
            Some("InvalidKeyUsageException") => SignError::Key(message),
            Some(
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException"
                | "IncompleteSignature",
            ) => SignError::Denied(message),
            Some("DependencyTimeoutException" | "KMSInternalException" | "ThrottlingException") => {
                SignError::Unavailable(message)
            }
            _ => SignError::Backend(message),
        },
        _ => SignError::Backend(message),
    }
}

/// The messages of an error and its sources, each said once.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

fn find_cause<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_told_from_key_ids() {
        assert_eq!(alias_name("alias/sigil").as_deref(), Some("alias/sigil"));
        assert_eq!(
            alias_name("arn:aws:kms:eu-west-1:111122223333:alias/sigil/templates").as_deref(),
            Some("alias/sigil/templates")
        );
        assert_eq!(alias_name("1234abcd-12ab-34cd-56ef-1234567890ab"), None);
        assert_eq!(
            alias_name(
                "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
            ),
            None
        );
    }
}

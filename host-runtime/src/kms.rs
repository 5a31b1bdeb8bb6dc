//! What the AWS KMS backends (the template signer and the vault's master key) share: a private
//! runtime for the SDK, one client per region, KMS's errors sorted by what the caller does about
//! them, and failover from the primary region to its replicas.
//!
//! The SDK is async and both backends are synchronous. A [`Regions`] owns a small tokio runtime
//! (one worker thread) on which every SDK call runs; the caller waits for the answer on a channel
//! with a deadline. Nothing here enters a runtime from the calling thread (`block_on`) or blocks
//! one while dropping, so the backends work the same from the CLI, from a plain thread, and from
//! inside the runtime of `sigil serve` — where, as any blocking call, they belong in
//! `spawn_blocking`.
//!
//! **Failover.** A spec may name replica regions beside the primary one (multi-Region keys share
//! their key id and key material in every region). A call goes to the region in use; when that
//! region cannot be reached (no connection, or no answer within the timeout — never when KMS
//! answers with a refusal) it goes to the next region, the switch is logged and counted, and the
//! region that answered stays in use. While a replica is in use, the primary is tried again after
//! a back-off (the spec's `failback=`, doubled after each failed probe up to
//! [`MAX_PROBE_INTERVAL`]); the first call that reaches it switches back. A call thus waits for
//! at most one timeout per region before it fails as unreachable.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use aws_sdk_kms::Client;

use crate::signer::KmsOptions;

/// The longest the primary is left alone while a replica serves.
pub(crate) const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(600);

/// What went wrong with a KMS operation, sorted by what the caller does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KmsErrorKind {
    /// No connection, or no answer in time: another region may serve.
    Unreachable,
    /// KMS answered that it cannot serve now (throttling, an internal error): not a reason to
    /// leave the region.
    Busy,
    /// No credentials, no region: the operator's to fix.
    Config,
    /// The key or alias does not exist (in this region).
    NotFound,
    /// The key is disabled or pending deletion.
    Disabled,
    /// The credentials were refused, or the key policy forbids the operation.
    Denied,
    /// The ciphertext does not decrypt: changed, another key, or another encryption context.
    InvalidCiphertext,
    /// The key is not of the kind the operation needs.
    KeyUsage,
    /// Anything else KMS or the SDK answered.
    Other,
}

/// A KMS operation's failure, with a message that says what was being done.
#[derive(Debug, Clone)]
pub(crate) struct KmsError {
    pub kind: KmsErrorKind,
    pub message: String,
}

impl KmsError {
    pub(crate) fn new(kind: KmsErrorKind, message: impl Into<String>) -> Self {
        KmsError {
            kind,
            message: message.into(),
        }
    }
}

/// KMS's error, sorted by what the operator has to do about it.
pub(crate) fn kms_error<E, R>(what: &str, error: SdkError<E, R>) -> KmsError
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
                KmsError::new(KmsErrorKind::Config, format!(
                    "{what}: no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with a role) ({detail})"
                ))
            }
            CredentialsError::ProviderTimedOut(_) => KmsError::new(KmsErrorKind::Busy, message),
            _ => KmsError::new(KmsErrorKind::Denied, message),
        };
    }
    let kind = match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => KmsErrorKind::Unreachable,
        SdkError::ServiceError(service) => match service.err().code() {
            Some("NotFoundException") => KmsErrorKind::NotFound,
            Some("DisabledException" | "KMSInvalidStateException" | "KeyUnavailableException") => {
                KmsErrorKind::Disabled
            }
            Some("InvalidKeyUsageException") => KmsErrorKind::KeyUsage,
            Some("InvalidCiphertextException" | "IncorrectKeyException") => {
                KmsErrorKind::InvalidCiphertext
            }
            Some(
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException"
                | "IncompleteSignature",
            ) => KmsErrorKind::Denied,
            Some("DependencyTimeoutException" | "KMSInternalException" | "ThrottlingException") => {
                KmsErrorKind::Busy
            }
            _ => KmsErrorKind::Other,
        },
        _ => KmsErrorKind::Other,
    };
    KmsError::new(kind, message)
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

/// `alias/NAME` from an alias or an alias ARN; `None` for key ids and key ARNs.
pub(crate) fn alias_name(key: &str) -> Option<String> {
    if key.starts_with("alias/") {
        return Some(key.to_string());
    }
    key.split_once(":alias/")
        .map(|(_, name)| format!("alias/{name}"))
}

/// A key ARN (`arn:PARTITION:kms:REGION:ACCOUNT:key/ID`) with its region replaced: the same
/// multi-Region key as another region names it. Anything else comes back unchanged.
pub(crate) fn arn_in_region(arn: &str, region: &str) -> String {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "kms", _, account, resource] => {
            format!("arn:{partition}:kms:{region}:{account}:{resource}")
        }
        _ => arn.to_string(),
    }
}

/// A one-thread runtime for the SDK's futures. Dropped without waiting, so dropping a backend
/// inside an async task is fine.
struct Worker {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Worker {
    fn new() -> Result<Self, KmsError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sigil-kms")
            .enable_all()
            .build()
            .map_err(|e| {
                KmsError::new(
                    KmsErrorKind::Other,
                    format!("cannot start the KMS client's runtime: {e}"),
                )
            })?;
        Ok(Worker {
            runtime: Some(runtime),
        })
    }

    /// Runs `future` on the worker and waits for it, at most a little longer than `timeout` (the
    /// SDK enforces `timeout` itself; this is the backstop for anything that does not).
    fn run<T, E>(
        &self,
        timeout: Duration,
        future: impl Future<Output = Result<T, E>> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<KmsError> + Send + 'static,
    {
        let runtime = self.runtime.as_ref().ok_or_else(|| {
            KmsError::new(KmsErrorKind::Other, "the KMS client's runtime has stopped")
        })?;
        let (sender, receiver) = mpsc::sync_channel(1);
        runtime.spawn(async move {
            // The receiver is gone only if the caller gave up waiting.
            let _ = sender.send(future.await);
        });
        let backstop = timeout + Duration::from_secs(5);
        receiver.recv_timeout(backstop).map_err(|_| {
            E::from(KmsError::new(
                KmsErrorKind::Unreachable,
                format!("KMS did not answer within {} s", backstop.as_secs()),
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

/// A KMS region and its client.
struct RegionClient {
    region: String,
    client: Client,
}

/// Which region serves, and when the primary is tried again.
#[derive(Debug)]
struct Route {
    /// Index of the region in use (0: the primary).
    active: usize,
    /// While a replica serves: when the primary is probed next.
    next_probe: Instant,
    /// The wait before the probe after next.
    probe_interval: Duration,
}

/// The KMS clients of a primary region and its replicas, with failover between them.
pub(crate) struct Regions {
    worker: Worker,
    regions: Vec<RegionClient>,
    route: Mutex<Route>,
    timeout: Duration,
    failback: Duration,
    calls: AtomicU64,
    failovers: AtomicU64,
}

impl std::fmt::Debug for Regions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Regions")
            .field(
                "regions",
                &self.regions.iter().map(|r| &r.region).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Regions {
    /// A client for the primary region and one for each replica of `options`. Nothing is sent.
    pub(crate) fn connect(options: &KmsOptions) -> Result<Self, KmsError> {
        if !options.replicas.is_empty() && options.region.is_none() {
            return Err(KmsError::new(
                KmsErrorKind::Config,
                "replica regions need the primary region named too (`region=`)",
            ));
        }
        let worker = Worker::new()?;
        let mut regions = Vec::with_capacity(1 + options.replicas.len());
        let targets = std::iter::once((options.region.clone(), options.endpoint.clone())).chain(
            options
                .replicas
                .iter()
                .map(|r| (Some(r.region.clone()), r.endpoint.clone())),
        );
        for (region, endpoint) in targets {
            let future = client_for(
                region,
                endpoint,
                options.timeout,
                options.credentials.clone(),
            );
            regions.push(worker.run(options.timeout, future)?);
        }
        Ok(Regions {
            worker,
            regions,
            route: Mutex::new(Route {
                active: 0,
                next_probe: Instant::now(),
                probe_interval: options.failback,
            }),
            timeout: options.timeout,
            failback: options.failback,
            calls: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
        })
    }

    /// The primary region's name.
    pub(crate) fn primary(&self) -> &str {
        self.regions.first().map_or("", |r| r.region.as_str())
    }

    /// Every region's name, the primary first.
    pub(crate) fn names(&self) -> Vec<String> {
        self.regions.iter().map(|r| r.region.clone()).collect()
    }

    /// Requests KMS answered (successes and refusals; not attempts that reached no one).
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Switches between regions so far.
    pub(crate) fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// Runs `operation` in region `index` only (administration that must happen in one region:
    /// creating keys, moving aliases). `steps` operations in a row get a timeout each.
    pub(crate) fn call_in<T, F, Fut>(
        &self,
        index: usize,
        steps: u32,
        operation: F,
    ) -> Result<T, KmsError>
    where
        T: Send + 'static,
        F: FnOnce(Client, String) -> Fut,
        Fut: Future<Output = Result<T, KmsError>> + Send + 'static,
    {
        let region = self.regions.get(index).ok_or_else(|| {
            KmsError::new(KmsErrorKind::Other, format!("no region number {index}"))
        })?;
        let answer = self.worker.run(
            self.timeout * steps.max(1),
            operation(region.client.clone(), region.region.clone()),
        );
        self.count(&answer);
        answer
    }

    /// Runs `operation` in the region in use, failing over to the next region while one cannot
    /// be reached, and back to the primary when a probe finds it again.
    pub(crate) fn call<T, F, Fut>(&self, operation: F) -> Result<T, KmsError>
    where
        T: Send + 'static,
        F: Fn(Client, String) -> Fut,
        Fut: Future<Output = Result<T, KmsError>> + Send + 'static,
    {
        let (start, probing) = self.plan()?;
        let mut unreachable = Vec::new();
        for index in self.attempt_order(start, probing) {
            let Some(region) = self.regions.get(index) else {
                continue;
            };
            let answer = self.worker.run(
                self.timeout,
                operation(region.client.clone(), region.region.clone()),
            );
            self.count(&answer);
            match answer {
                Err(e) if e.kind == KmsErrorKind::Unreachable => {
                    if probing && index == 0 {
                        self.probe_failed();
                    }
                    unreachable.push(format!("{}: {}", region.region, e.message));
                }
                answer => {
                    self.arrived(index, &unreachable);
                    return answer;
                }
            }
        }
        Err(KmsError::new(
            KmsErrorKind::Unreachable,
            format!("no KMS region answered ({})", unreachable.join("; ")),
        ))
    }

    /// The regions one call tries, in order: from the one in use round to the one before it;
    /// a call that probes tries the primary first, and then not again.
    fn attempt_order(&self, start: usize, probing: bool) -> Vec<usize> {
        let round = (start..self.regions.len()).chain(0..start);
        if probing {
            std::iter::once(0)
                .chain(round.filter(|&i| i != 0))
                .collect()
        } else {
            round.collect()
        }
    }

    /// The replica regions (every region but the primary).
    fn replicas(&self) -> &[RegionClient] {
        self.regions.get(1..).unwrap_or_default()
    }

    /// Where a call starts, and whether it first probes the primary.
    fn plan(&self) -> Result<(usize, bool), KmsError> {
        let mut route = self.lock()?;
        if route.active == 0 {
            return Ok((0, false));
        }
        let now = Instant::now();
        if now < route.next_probe {
            return Ok((route.active, false));
        }
        // This call probes; the others meanwhile keep to the replica.
        route.next_probe = now + route.probe_interval;
        Ok((route.active, true))
    }

    fn probe_failed(&self) {
        if let Ok(mut route) = self.lock() {
            route.probe_interval = (route.probe_interval * 2).min(MAX_PROBE_INTERVAL);
            route.next_probe = Instant::now() + route.probe_interval;
        }
    }

    /// Region `index` answered: it is the one in use from now on.
    fn arrived(&self, index: usize, unreachable: &[String]) {
        let Ok(mut route) = self.lock() else {
            return;
        };
        if route.active == index {
            return;
        }
        let from = self.name(route.active);
        let to = self.name(index);
        if index == 0 {
            tracing::warn!(
                from,
                to,
                "KMS: the primary region answers again; back to it"
            );
        } else {
            tracing::warn!(
                from,
                to,
                errors = unreachable.join("; "),
                "KMS: region unreachable; failing over to a replica"
            );
        }
        route.active = index;
        route.probe_interval = self.failback;
        route.next_probe = Instant::now() + self.failback;
        self.failovers.fetch_add(1, Ordering::Relaxed);
    }

    /// Creates a key of `usage` and `spec` in the primary region and replicates it to every
    /// replica region (as a multi-Region key when there are replicas). Returns its ARN in the
    /// primary region.
    pub(crate) fn create_key(
        &self,
        usage: KeyUsageType,
        spec: KeySpec,
        description: String,
    ) -> Result<String, KmsError> {
        let multi_region = self.regions.len() > 1;
        let arn = self.call_in(0, 1, move |client, _| async move {
            let output = client
                .create_key()
                .key_usage(usage)
                .key_spec(spec)
                .multi_region(multi_region)
                .description(description)
                .send()
                .await
                .map_err(|e| kms_error("KMS cannot create a key", e))?;
            output.key_metadata.and_then(|m| m.arn).ok_or_else(|| {
                KmsError::new(KmsErrorKind::Other, "KMS created a key but returned no ARN")
            })
        })?;
        for replica in self.replicas() {
            let (key, to) = (arn.clone(), replica.region.clone());
            // ReplicateKey is a request to the primary region.
            self.call_in(0, 1, move |client, _| async move {
                client
                    .replicate_key()
                    .key_id(&key)
                    .replica_region(&to)
                    .send()
                    .await
                    .map_err(|e| {
                        let what = format!(
                            "created `{key}` but cannot replicate it to {to} \
                             (retry, or schedule that key's deletion)"
                        );
                        kms_error(&what, e)
                    })
                    .map(|_| ())
            })?;
        }
        Ok(arn)
    }

    /// Points `alias` at the key `arn` in every region (aliases are regional): creates it, or,
    /// with `move_existing`, moves it where it exists and creates it where it does not.
    pub(crate) fn point_alias(
        &self,
        alias: &str,
        arn: &str,
        move_existing: bool,
    ) -> Result<(), KmsError> {
        for index in 0..self.regions.len() {
            let alias = alias.to_string();
            let target = arn.to_string();
            self.call_in(index, 2, move |client, region| async move {
                let target = arn_in_region(&target, &region);
                let failed = |e| {
                    let what = format!(
                        "cannot point `{alias}` at `{target}` in {region} \
                         (retry; the key exists already)"
                    );
                    kms_error(&what, e)
                };
                if move_existing {
                    match client
                        .update_alias()
                        .alias_name(&alias)
                        .target_key_id(&target)
                        .send()
                        .await
                    {
                        Ok(_) => return Ok(()),
                        Err(e)
                            if e.as_service_error()
                                .is_some_and(|s| s.is_not_found_exception()) => {}
                        Err(e) => return Err(failed(e)),
                    }
                }
                client
                    .create_alias()
                    .alias_name(&alias)
                    .target_key_id(&target)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        let what = format!(
                            "cannot create `{alias}` for `{target}` in {region} \
                             (retry; the key exists already)"
                        );
                        kms_error(&what, e)
                    })
            })?;
        }
        Ok(())
    }

    fn name(&self, index: usize) -> &str {
        self.regions.get(index).map_or("", |r| r.region.as_str())
    }

    fn count<T>(&self, answer: &Result<T, KmsError>) {
        if !matches!(answer, Err(e) if e.kind == KmsErrorKind::Unreachable) {
            self.calls.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Route>, KmsError> {
        self.route
            .lock()
            .map_err(|_| KmsError::new(KmsErrorKind::Other, "the KMS route's lock is poisoned"))
    }
}

async fn client_for(
    region: Option<String>,
    endpoint: Option<String>,
    timeout: Duration,
    credentials: Option<aws_sdk_kms::config::Credentials>,
) -> Result<RegionClient, KmsError> {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(timeout.min(Duration::from_secs(3)))
        .operation_attempt_timeout(timeout)
        .operation_timeout(timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(3));
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    let config = loader.load().await;
    let region = config.region().map(|r| r.to_string()).ok_or_else(|| {
        KmsError::new(
            KmsErrorKind::Config,
            "no AWS region: set AWS_REGION, a profile's region, or `region=` in the spec",
        )
    })?;
    Ok(RegionClient {
        region,
        client: Client::new(&config),
    })
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

    #[test]
    fn arns_move_between_regions_and_other_names_stay() {
        assert_eq!(
            arn_in_region("arn:aws:kms:us-east-1:111122223333:key/mrk-1a", "eu-west-1"),
            "arn:aws:kms:eu-west-1:111122223333:key/mrk-1a"
        );
        for other in ["mrk-1a", "alias/x", "arn:aws:s3:::bucket", "", ":::::::"] {
            assert_eq!(arn_in_region(other, "eu-west-1"), other);
        }
    }
}

//! The AWS KMS signer against a KMS-compatible server on 127.0.0.1: moto, started by
//! `scripts/kms-server` with its KMS model corrected to behave as AWS KMS does where signing
//! depends on it (DIGEST messages, the 4096-byte RAW limit, digest lengths, disabled keys).
//! Every signature the server returns is verified independently with guard-core.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use guard_core::Scheme;
use host_runtime::signer::{self, AwsKmsSigner, KmsOptions, SignError, Signer};

use crate::signing::{sign, sign_and_verify, verify, verify_at};
use crate::workspace;

/// The server, killed when dropped.
pub(crate) struct KmsServer {
    child: Child,
    pub(crate) endpoint: String,
}

impl KmsServer {
    pub(crate) fn start() -> Self {
        let port = free_port();
        let mut child = Command::new(workspace().join("scripts/kms-server"))
            .args(["--port", &port.to_string(), "--exit-with-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("scripts/kms-server cannot start (run scripts/setup)");
        let stdout = child.stdout.take().unwrap();
        let (ready, wait) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = ready.send(line);
        });
        let server = KmsServer {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        // The first run of a fresh machine installs moto (scripts/setup normally has).
        let line = wait.recv_timeout(Duration::from_secs(180)).unwrap();
        assert_eq!(
            line.trim(),
            format!("ready {port}"),
            "the KMS server did not start"
        );
        server
    }

    fn options(&self, key: &str) -> KmsOptions {
        let mut options = KmsOptions::new(key);
        options.endpoint = Some(self.endpoint.clone());
        options.region = Some("us-east-1".into());
        options.credentials = Some(test_credentials());
        options
    }

    /// The SDK itself, for what the signer does not do (other kinds of keys, disabling, the
    /// server's own refusals).
    pub(crate) fn admin(&self) -> (tokio::runtime::Runtime, aws_sdk_kms::Client) {
        self.admin_in("us-east-1")
    }

    /// [`KmsServer::admin`] in `region` (all of moto's regions are one server).
    pub(crate) fn admin_in(&self, region: &str) -> (tokio::runtime::Runtime, aws_sdk_kms::Client) {
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(test_credentials())
            .build();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (runtime, aws_sdk_kms::Client::from_conf(config))
    }
}

impl Drop for KmsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const TEMPLATE: &[u8] = b"You answer questions about {{product}}. Question: {{q}}\n";

#[test]
fn kms_signs_the_digest_and_guard_core_verifies_it() {
    let server = KmsServer::start();
    let signer = AwsKmsSigner::create(&server.options("alias/sigil-templates"), 2048).unwrap();
    assert!(signer.key().key_arn.contains(":key/"), "{:?}", signer.key());
    sign_and_verify(&signer, TEMPLATE);

    // A template far over KMS's 4096-byte RAW limit signs the same way: only its digest travels.
    let large = "Summarise the following report for the board. ".repeat(20_000);
    assert!(large.len() > 900_000);
    sign_and_verify(&signer, large.as_bytes());

    // The same key opened through a spec string, as `--signer` does.
    let spec = format!(
        "aws-kms:alias/sigil-templates;endpoint={};region=us-east-1",
        server.endpoint
    );
    let mut options = match spec.parse().unwrap() {
        signer::SignerSpec::AwsKms(options) => options,
        other => panic!("{other:?}"),
    };
    options.credentials = Some(test_credentials());
    let reopened = signer::open(&signer::SignerSpec::AwsKms(options)).unwrap();
    assert_eq!(reopened.public_key_der(), signer.public_key_der());
}

#[test]
fn kms_server_refuses_what_kms_refuses() {
    // These are the corrections the launcher makes to moto; without them the DIGEST tests above
    // would pass against a server that hashes twice or signs anything.
    let server = KmsServer::start();
    let signer = AwsKmsSigner::create(&server.options("alias/raw"), 2048).unwrap();
    let arn = signer.key().key_arn.clone();
    let (runtime, client) = server.admin();
    // The signature, or KMS's error code and message.
    let sign = |message: Vec<u8>, kind: MessageType| {
        use aws_sdk_kms::error::ProvideErrorMetadata;
        let answer = runtime.block_on(
            client
                .sign()
                .key_id(&arn)
                .message(Blob::new(message))
                .message_type(kind)
                .signing_algorithm(SigningAlgorithmSpec::RsassaPkcs1V15Sha256)
                .send(),
        );
        match answer {
            Ok(output) => Ok(output.signature.unwrap().into_inner()),
            Err(e) => {
                let e = e.into_service_error();
                Err((
                    e.code().unwrap_or("").to_string(),
                    e.message().unwrap_or("").to_string(),
                ))
            }
        }
    };
    let code = |r: Result<Vec<u8>, (String, String)>| r.unwrap_err();
    assert!(sign(vec![7; 4096], MessageType::Raw).is_ok());
    let (c, m) = code(sign(vec![7; 4097], MessageType::Raw));
    assert_eq!(c, "ValidationException");
    assert!(m.contains("4096"), "{m}");
    for len in [31, 33, 64] {
        let (c, m) = code(sign(vec![7; len], MessageType::Digest));
        assert_eq!(c, "ValidationException", "{len}");
        assert!(m.contains("invalid length"), "{m}");
    }

    // A RAW signature over the message and a DIGEST signature over its SHA-256 are the same
    // PKCS#1 v1.5 signature: the server signs the digest as given, not its hash.
    let message = b"pre-authentication encoding".to_vec();
    let digest = host_runtime_sha256(&message);
    let raw = sign(message.clone(), MessageType::Raw).unwrap();
    let by_digest = sign(digest.clone(), MessageType::Digest).unwrap();
    assert_eq!(raw, by_digest);

    // A failed Verify is an error, as in KMS, not `SignatureValid=false`.
    let mut bad = by_digest;
    bad[0] ^= 1;
    let verified = runtime.block_on(
        client
            .verify()
            .key_id(&arn)
            .message(Blob::new(digest))
            .message_type(MessageType::Digest)
            .signature(Blob::new(bad))
            .signing_algorithm(SigningAlgorithmSpec::RsassaPkcs1V15Sha256)
            .send(),
    );
    let e = verified.unwrap_err().into_service_error();
    assert!(e.is_kms_invalid_signature_exception(), "{e:?}");

    let public = runtime
        .block_on(client.get_public_key().key_id(&arn).send())
        .unwrap();
    assert_eq!(public.key_spec(), Some(&KeySpec::Rsa2048));
}

fn host_runtime_sha256(message: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(message).to_vec()
}

#[test]
fn kms_aliases_arns_and_key_ids_name_the_same_key() {
    let server = KmsServer::start();
    let created = AwsKmsSigner::create(&server.options("alias/sigil/names"), 3072).unwrap();
    let arn = created.key().key_arn.clone();
    let key_id = arn.rsplit('/').next().unwrap().to_string();
    let alias_arn = arn.replace(&format!("key/{key_id}"), "alias/sigil/names");
    for name in [&arn, &key_id, &alias_arn, &"alias/sigil/names".to_string()] {
        let signer = AwsKmsSigner::open(&server.options(name)).unwrap();
        assert_eq!(signer.key().key_arn, arn, "{name}");
        assert_eq!(
            signer.key().fingerprint,
            created.key().fingerprint,
            "{name}"
        );
    }
    match AwsKmsSigner::open(&server.options("alias/nobody")) {
        Err(SignError::NotFound(m)) => assert!(m.contains("alias/nobody"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn kms_rotation_moves_the_alias_and_old_signatures_still_verify() {
    let server = KmsServer::start();
    let alias = "alias/sigil-rotating";
    let old = AwsKmsSigner::create(&server.options(alias), 2048).unwrap();
    let old_spki = old.public_key_der().to_vec();
    let before = sign_and_verify(&old, TEMPLATE);

    let rotation = AwsKmsSigner::rotate(&server.options(alias)).unwrap();
    assert_eq!(rotation.alias, alias);
    assert_eq!(rotation.previous, *old.key());
    assert_ne!(rotation.current.fingerprint, rotation.previous.fingerprint);
    assert_ne!(rotation.current.key_arn, rotation.previous.key_arn);
    assert_eq!(rotation.signer.key(), &rotation.current);

    // The alias names the new key now; what it signs verifies under the new pinned key only.
    let reopened = AwsKmsSigner::open(&server.options(alias)).unwrap();
    assert_eq!(reopened.key(), &rotation.current);
    let after = sign_and_verify(&reopened, TEMPLATE);
    assert!(verify(&after, TEMPLATE, &old_spki, Scheme::RsassaPkcs1v15Sha256).is_err());
    // The old envelope still verifies under the old pinned key, and the old key still exists.
    verify(&before, TEMPLATE, &old_spki, Scheme::RsassaPkcs1v15Sha256).unwrap();
    let retained = AwsKmsSigner::open(&server.options(&rotation.previous.key_arn)).unwrap();
    assert_eq!(retained.public_key_der(), old_spki);
    // A signer opened before the rotation keeps signing with the key it resolved.
    let late = sign(&old, TEMPLATE);
    verify(&late, TEMPLATE, &old_spki, Scheme::RsassaPkcs1v15Sha256).unwrap();

    match AwsKmsSigner::rotate(&server.options(&rotation.current.key_arn)) {
        Err(SignError::Config(m)) => assert!(m.contains("not an alias"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn kms_disabled_keys_cannot_sign() {
    let server = KmsServer::start();
    let signer = AwsKmsSigner::create(&server.options("alias/disabled"), 2048).unwrap();
    let (runtime, client) = server.admin();
    // By key id: moto's DisableKey does not resolve ARNs (KMS's does; the signer needs neither).
    let key_id = signer.key().key_arn.rsplit('/').next().unwrap().to_string();
    runtime
        .block_on(client.disable_key().key_id(key_id).send())
        .unwrap();
    match signer.sign(b"message") {
        Err(e @ SignError::Disabled(_)) => {
            let m = e.to_string();
            assert!(
                m.contains("disabled") && m.contains(&signer.key().key_arn),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        AwsKmsSigner::open(&server.options("alias/disabled")),
        Err(SignError::Disabled(_))
    ));
}

#[test]
fn kms_pss_keys_sign_pss() {
    let server = KmsServer::start();
    let mut options = server.options("alias/pss");
    options.scheme = Scheme::RsassaPssSha256;
    for bits in [3072, 4096] {
        let signer = AwsKmsSigner::create(&options, bits).unwrap();
        assert_eq!(signer.scheme(), Scheme::RsassaPssSha256);
        sign_and_verify(&signer, TEMPLATE);
        options.key = format!("alias/pss-{bits}");
    }
}

#[test]
fn kms_refuses_keys_that_cannot_sign_templates() {
    let server = KmsServer::start();
    let (runtime, client) = server.admin();
    let create = |usage: KeyUsageType, spec: KeySpec| {
        runtime
            .block_on(client.create_key().key_usage(usage).key_spec(spec).send())
            .unwrap()
            .key_metadata
            .unwrap()
            .arn
            .unwrap()
    };
    let encrypting = create(KeyUsageType::EncryptDecrypt, KeySpec::Rsa2048);
    match AwsKmsSigner::open(&server.options(&encrypting)) {
        Err(SignError::Key(m)) => assert!(
            m.contains("ENCRYPT_DECRYPT") && m.contains("SIGN_VERIFY"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    let ec = create(KeyUsageType::SignVerify, KeySpec::EccNistP256);
    match AwsKmsSigner::open(&server.options(&ec)) {
        Err(SignError::Key(m)) => {
            assert!(m.contains("ECC_NIST_P256") && m.contains("RSA_2048"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn kms_unreachable_endpoints_fail_fast_and_clearly() {
    // Nothing listens: connection refused, retried, then a clear error.
    let closed = free_port();
    let mut options = KmsOptions::new("alias/x");
    options.endpoint = Some(format!("http://127.0.0.1:{closed}"));
    options.region = Some("us-east-1".into());
    options.credentials = Some(test_credentials());
    options.timeout = Duration::from_secs(3);
    let start = Instant::now();
    match AwsKmsSigner::open(&options) {
        Err(e @ SignError::Unavailable(_)) => {
            assert!(e.to_string().contains("unreachable"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );

    // Something listens and never answers: the operation timeout ends it.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    options.endpoint = Some(format!("http://{}", silent.local_addr().unwrap()));
    let start = Instant::now();
    assert!(matches!(
        AwsKmsSigner::open(&options),
        Err(SignError::Unavailable(_))
    ));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn kms_signer_works_inside_a_tokio_runtime() {
    // `sigil serve` signs from inside its runtime: opening, signing and dropping there must
    // neither panic nor deadlock.
    let server = KmsServer::start();
    let options = server.options("alias/served");
    AwsKmsSigner::create(&options, 2048).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let envelope = runtime.block_on(async move {
        let signer = AwsKmsSigner::open(&options).unwrap();
        let envelope = sign(&signer, TEMPLATE);
        let spki = signer.public_key_der().to_vec();
        drop(signer);
        (envelope, spki)
    });
    verify(
        &envelope.0,
        TEMPLATE,
        &envelope.1,
        Scheme::RsassaPkcs1v15Sha256,
    )
    .unwrap();
}

#[test]
fn kms_cli_signs_with_a_signer_spec() {
    let server = KmsServer::start();
    let signer = AwsKmsSigner::create(&server.options("alias/cli"), 2048).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.txt"), TEMPLATE).unwrap();
    let spec = format!(
        "aws-kms:alias/cli;endpoint={};region=us-east-1",
        server.endpoint
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["template", "sign", "--no-validate", "--template"])
        .arg(dir.path().join("t.txt"))
        .args(["--id", "qa/answer", "--signer", &spec, "--out"])
        .arg(dir.path().join("t.env.json"))
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let envelope = std::fs::read(dir.path().join("t.env.json")).unwrap();
    verify_at(
        &envelope,
        TEMPLATE,
        signer.public_key_der(),
        Scheme::RsassaPkcs1v15Sha256,
        None,
    )
    .unwrap();

    // No credentials anywhere is a configuration error that says where credentials come from,
    // not an unreachable server.
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["template", "sign", "--no-validate", "--template"])
        .arg(dir.path().join("t.txt"))
        .args(["--id", "qa/answer", "--signer", &spec])
        .env("HOME", home.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not configured") && stderr.contains("no AWS credentials"),
        "{stderr}"
    );

    // A misspelt option is refused before anything is signed, with the reason.
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["template", "sign", "--no-validate", "--template"])
        .arg(dir.path().join("t.txt"))
        .args([
            "--id",
            "qa/answer",
            "--signer",
            "aws-kms:alias/cli;regoin=x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`regoin`"));
}

pub(crate) fn test_credentials() -> Credentials {
    Credentials::new("AKIDTEST", "secret", None, None, "tests")
}

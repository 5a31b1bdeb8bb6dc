//! Median time to sign a template through each backend, in one run:
//! `cargo bench --package host-runtime --bench signing`.
//!
//! Each sample is one `sign_template` call (statement, DSSE encoding, signature, envelope) for a
//! 1 KiB template. KMS is the corrected moto server of `scripts/kms-server` on 127.0.0.1, so its
//! figures are a local round trip plus moto's Python RSA, not AWS's latency; SoftHSM2 runs in
//! process. Both are made here, as the tests make them (scripts/setup installs what they need).

// A benchmark fails loudly: unwrapping is how it says what it expects.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kms::config::Credentials;
use guard_core::time::Timestamp;
use guard_core::Scheme;
use host_runtime::signer::{
    AwsKmsSigner, KmsOptions, LocalSigner, PinSource, Pkcs11Mechanism, Pkcs11Options, Pkcs11Signer,
    Signer,
};
use host_runtime::template::{sign_template, SignRequest};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4711";

fn median(samples: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..3 {
        f();
    }
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn sign_once(signer: &dyn Signer, template: &[u8]) {
    let schema = serde_json::json!({});
    let signed_at = Timestamp::parse("2026-12-03T12:00:00Z").unwrap();
    let request = SignRequest {
        template_id: "bench/signing",
        version: 1,
        template,
        variables_schema: &schema,
        prev_digest: None,
        signer: "bench",
        signed_at,
        not_after: Timestamp::from_unix_seconds(signed_at.unix_seconds() + 86_400),
        validation_digest: None,
    };
    black_box(sign_template(&request, signer).unwrap());
}

struct KmsServer(Child, String);

impl KmsServer {
    fn start(workspace: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(workspace.join("scripts/kms-server"))
            .args(["--port", &port.to_string(), "--exit-with-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("scripts/kms-server cannot start (run scripts/setup)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), format!("ready {port}"));
        KmsServer(child, format!("http://127.0.0.1:{port}"))
    }

    fn options(&self, alias: &str, scheme: Scheme) -> KmsOptions {
        let mut options = KmsOptions::new(alias);
        options.endpoint = Some(self.1.clone());
        options.region = Some("us-east-1".into());
        options.credentials = Some(Credentials::new("AKIDTEST", "secret", None, None, "bench"));
        options.scheme = scheme;
        options
    }
}

impl Drop for KmsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A SoftHSM2 token in a private folder with keys `rsa2048`, `rsa3072`, `rsa4096`.
fn softhsm_token(dir: &Path) {
    let conf = dir.join("softhsm2.conf");
    std::fs::create_dir(dir.join("tokens")).unwrap();
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    // Read when the module is initialized, which has not happened yet in this process; nothing
    // else runs then, so setting the variable races with nothing.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let run = |program: &str, args: &[&str]| {
        let out = Command::new(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        "softhsm2-util",
        &[
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--so-pin",
            "12345678",
            "--pin",
            PIN,
        ],
    );
    for bits in [2048, 3072, 4096] {
        run(
            "pkcs11-tool",
            &[
                "--module",
                MODULE,
                "--token-label",
                "bench",
                "--login",
                "--pin",
                PIN,
                "--keypairgen",
                "--key-type",
                &format!("rsa:{bits}"),
                "--label",
                &format!("rsa{bits}"),
            ],
        );
    }
    std::fs::write(dir.join("pin"), PIN).unwrap();
}

fn main() {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let template = "Answer the customer's question about {{product}} in two sentences. "
        .repeat(16)
        .into_bytes();
    let template = &template[..1024];
    let schemes = [
        (Scheme::RsassaPkcs1v15Sha256, "PKCS#1 v1.5"),
        (Scheme::RsassaPssSha256, "PSS"),
    ];
    let mut rows: Vec<(String, Duration)> = Vec::new();

    for bits in [2048, 3072, 4096] {
        let pem = LocalSigner::generate(bits).unwrap().private_pem().unwrap();
        for (scheme, name) in schemes {
            let signer = LocalSigner::from_pem(&pem)
                .unwrap()
                .with_scheme(scheme)
                .unwrap();
            rows.push((
                format!("local (aws-lc-rs), RSA-{bits} {name}"),
                median(101, || sign_once(&signer, template)),
            ));
        }
    }

    let server = KmsServer::start(&workspace);
    for bits in [2048, 3072, 4096] {
        for (scheme, name) in schemes {
            let alias = format!("alias/bench-{bits}-{}", scheme.as_str());
            let signer = AwsKmsSigner::create(&server.options(&alias, scheme), bits).unwrap();
            rows.push((
                format!("aws-kms (moto on 127.0.0.1), RSA-{bits} {name}"),
                median(31, || sign_once(&signer, template)),
            ));
        }
    }
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    softhsm_token(dir.path());
    for bits in [2048, 3072, 4096] {
        for (scheme, name) in schemes {
            let (hashing, bare) = match scheme {
                Scheme::RsassaPkcs1v15Sha256 => {
                    ("CKM_SHA256_RSA_PKCS", "CKM_RSA_PKCS over the DigestInfo")
                }
                Scheme::RsassaPssSha256 => (
                    "CKM_SHA256_RSA_PKCS_PSS",
                    "CKM_RSA_PKCS_PSS over the digest",
                ),
            };
            for (mechanism, how) in [
                (Pkcs11Mechanism::Sha256Rsa, hashing),
                (Pkcs11Mechanism::Rsa, bare),
            ] {
                let signer = Pkcs11Signer::open(&Pkcs11Options {
                    module: PathBuf::from(MODULE),
                    token: Some("bench".into()),
                    slot: None,
                    key_label: Some(format!("rsa{bits}")),
                    key_id: None,
                    pin: PinSource::File(dir.path().join("pin")),
                    scheme,
                    mechanism,
                })
                .unwrap();
                rows.push((
                    format!("pkcs11 (SoftHSM2), RSA-{bits} {name}, {how}"),
                    median(31, || sign_once(&signer, template)),
                ));
            }
        }
    }

    println!("| signing a 1 KiB template | median |");
    println!("|---|---|");
    for (label, time) in rows {
        println!("| {label} | {:.2} ms |", time.as_secs_f64() * 1e3);
    }
}

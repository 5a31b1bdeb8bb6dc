//! The PKCS#11 signer against SoftHSM2 (keys made with `pkcs11-tool`), each test with a private
//! token directory ([`crate::softhsm`]).

use std::path::PathBuf;
use std::process::Command;

use guard_core::Scheme;
use host_runtime::signer::{
    self, PinSource, Pkcs11Mechanism, Pkcs11Options, Pkcs11Signer, SignError,
};

use crate::signing::{sign_and_verify, verify_at};
use crate::softhsm::{in_child, SoftHsm, MODULE, PIN};

const TOKEN: &str = "sigil";
const TEMPLATE: &[u8] = b"You answer questions about {{product}}. Question: {{q}}\n";

/// A SoftHSM2 token of its own, with RSA keys `rsa2048` (id 01), `rsa3072` (id 02) and
/// `rsa1024` (id 03, too small for the verifier).
fn new_token() -> (tempfile::TempDir, SoftHsm) {
    let (temp, token) = SoftHsm::new(TOKEN);
    for (label, id, bits) in [
        ("rsa2048", "01", 2048),
        ("rsa3072", "02", 3072),
        ("rsa1024", "03", 1024),
    ] {
        token.run(
            "pkcs11-tool",
            &[
                "--module",
                MODULE,
                "--token-label",
                TOKEN,
                "--login",
                "--pin",
                PIN,
                "--keypairgen",
                "--key-type",
                &format!("rsa:{bits}"),
                "--label",
                label,
                "--id",
                id,
            ],
        );
    }
    (temp, token)
}

fn options(
    token: &SoftHsm,
    key: &str,
    scheme: Scheme,
    mechanism: Pkcs11Mechanism,
) -> Pkcs11Options {
    let pin = token.dir.join("pin");
    std::fs::write(&pin, format!("{PIN}\n")).unwrap();
    Pkcs11Options {
        module: PathBuf::from(MODULE),
        token: Some(TOKEN.into()),
        slot: None,
        key_label: Some(key.into()),
        key_id: None,
        pin: PinSource::File(pin),
        scheme,
        mechanism,
    }
}

/// Runs `body` in a child process with a fresh token (see [`in_child`]).
fn with_token(test: &str, body: impl FnOnce(&SoftHsm)) {
    in_child(&format!("signer_pkcs11::{test}"), new_token, body);
}

#[test]
fn pkcs11_signs_with_either_mechanism_and_scheme() {
    with_token("pkcs11_signs_with_either_mechanism_and_scheme", |token| {
        for key in ["rsa2048", "rsa3072"] {
            for scheme in [Scheme::RsassaPkcs1v15Sha256, Scheme::RsassaPssSha256] {
                let mut signatures = Vec::new();
                for mechanism in [Pkcs11Mechanism::Sha256Rsa, Pkcs11Mechanism::Rsa] {
                    let signer =
                        Pkcs11Signer::open(&options(token, key, scheme, mechanism)).unwrap();
                    assert_eq!(
                        signer.hashes_on_token(),
                        mechanism == Pkcs11Mechanism::Sha256Rsa
                    );
                    let envelope = sign_and_verify(&signer, TEMPLATE);
                    let value: serde_json::Value = serde_json::from_slice(&envelope).unwrap();
                    signatures.push(value["signatures"][0]["sig"].as_str().unwrap().to_string());
                }
                // PKCS#1 v1.5 is deterministic: the token's hashing mechanism and the bare one
                // over our DigestInfo give the very same signature. PSS salts are random.
                if scheme == Scheme::RsassaPkcs1v15Sha256 {
                    assert_eq!(signatures[0], signatures[1], "{key}");
                } else {
                    assert_ne!(signatures[0], signatures[1], "{key}");
                }
            }
        }
        // Auto picks the hashing mechanism SoftHSM offers.
        let auto = Pkcs11Signer::open(&options(
            token,
            "rsa2048",
            Scheme::RsassaPkcs1v15Sha256,
            Pkcs11Mechanism::Auto,
        ))
        .unwrap();
        assert!(auto.hashes_on_token());
    });
}

#[test]
fn pkcs11_specs_open_by_label_or_id_with_the_pin_from_the_environment() {
    with_token(
        "pkcs11_specs_open_by_label_or_id_with_the_pin_from_the_environment",
        |token| {
            let by_label = format!(
                "pkcs11:module={MODULE};token={TOKEN};key=rsa3072;pin-env=SIGIL_TEST_PIN;scheme=pss"
            );
            let by_id = format!(
                "pkcs11:token={TOKEN};id=%02;type=private?module-path={MODULE}&pin-source=file:{}",
                token.dir.join("pin").display()
            );
            std::fs::write(token.dir.join("pin"), PIN).unwrap();
            // The child process is this test alone, so setting a variable races with nothing.
            std::env::set_var("SIGIL_TEST_PIN", PIN);
            let a = signer::open(&by_label.parse().unwrap()).unwrap();
            let b = signer::open(&by_id.parse().unwrap()).unwrap();
            assert_eq!(a.public_key_der(), b.public_key_der());
            assert_eq!(a.scheme(), Scheme::RsassaPssSha256);
            sign_and_verify(a.as_ref(), TEMPLATE);
            // The SPKI built from the token's attributes is the one pkcs11-tool exports.
            let exported = token.dir.join("pub.der");
            token.run(
                "pkcs11-tool",
                &[
                    "--module",
                    MODULE,
                    "--token-label",
                    TOKEN,
                    "--read-object",
                    "--type",
                    "pubkey",
                    "--id",
                    "02",
                    "--output-file",
                    exported.to_str().unwrap(),
                ],
            );
            assert_eq!(std::fs::read(exported).unwrap(), a.public_key_der());
        },
    );
}

#[test]
fn pkcs11_wrong_pin_missing_key_and_missing_token_are_told_apart() {
    with_token(
        "pkcs11_wrong_pin_missing_key_and_missing_token_are_told_apart",
        |token| {
            let options = options(
                token,
                "rsa2048",
                Scheme::RsassaPkcs1v15Sha256,
                Pkcs11Mechanism::Auto,
            );
            let wrong = token.dir.join("wrong-pin");
            std::fs::write(&wrong, "0000").unwrap();
            let mut bad_pin = options.clone();
            bad_pin.pin = PinSource::File(wrong);
            match Pkcs11Signer::open(&bad_pin) {
                Err(SignError::Denied(m)) => assert!(m.contains("PIN is wrong"), "{m}"),
                other => panic!("{other:?}"),
            }
            let mut no_key = options.clone();
            no_key.key_label = Some("nope".into());
            match Pkcs11Signer::open(&no_key) {
                Err(SignError::NotFound(m)) => {
                    assert!(m.contains("`nope`") && m.contains(TOKEN), "{m}")
                }
                other => panic!("{other:?}"),
            }
            let mut no_token = options.clone();
            no_token.token = Some("elsewhere".into());
            match Pkcs11Signer::open(&no_token) {
                Err(SignError::NotFound(m)) => {
                    assert!(m.contains("`elsewhere`") && m.contains("`sigil`"), "{m}")
                }
                other => panic!("{other:?}"),
            }
            let mut unset = options.clone();
            unset.pin = PinSource::Env("SIGIL_TEST_UNSET_PIN".into());
            match Pkcs11Signer::open(&unset) {
                Err(SignError::Config(m)) => assert!(m.contains("SIGIL_TEST_UNSET_PIN"), "{m}"),
                other => panic!("{other:?}"),
            }
            // A key the verifier would refuse is refused when opened, before it signs anything.
            let mut small = options.clone();
            small.key_label = Some("rsa1024".into());
            match Pkcs11Signer::open(&small) {
                Err(SignError::Key(m)) => assert!(m.contains("1024 bits"), "{m}"),
                other => panic!("{other:?}"),
            }
            // After all that, the right PIN still works (a wrong try does not lock SoftHSM).
            Pkcs11Signer::open(&options).unwrap();
        },
    );
}

#[test]
fn pkcs11_missing_or_invalid_modules_are_configuration_errors() {
    // No token is needed: nothing is loaded.
    let mut options = Pkcs11Options {
        module: PathBuf::from("/nonexistent/libpkcs11.so"),
        token: Some(TOKEN.into()),
        slot: None,
        key_label: Some("k".into()),
        key_id: None,
        pin: PinSource::Env("SIGIL_TEST_UNSET_PIN_TOO".into()),
        scheme: Scheme::RsassaPkcs1v15Sha256,
        mechanism: Pkcs11Mechanism::Auto,
    };
    // The PIN variable is unset too: the module is what is reported.
    match Pkcs11Signer::open(&options) {
        Err(SignError::Config(m)) => {
            assert!(
                m.contains("/nonexistent/libpkcs11.so") && m.contains("does not exist"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let not_a_module = dir.path().join("libnot.so");
    std::fs::write(&not_a_module, "not a shared library").unwrap();
    options.module = not_a_module;
    match Pkcs11Signer::open(&options) {
        Err(SignError::Config(m)) => assert!(m.contains("cannot be loaded"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn pkcs11_cli_signs_with_a_signer_spec() {
    let (_temp, token) = new_token();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.txt"), TEMPLATE).unwrap();
    let spec = format!("pkcs11:module={MODULE};token={TOKEN};key=rsa2048");
    let sigil = |pin: &str| {
        Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["template", "sign", "--no-validate", "--template"])
            .arg(dir.path().join("t.txt"))
            .args(["--id", "qa/answer", "--signer", &spec, "--out"])
            .arg(dir.path().join("t.env.json"))
            .env("SOFTHSM2_CONF", token.conf())
            .env("SIGIL_PKCS11_PIN", pin)
            .output()
            .unwrap()
    };
    let wrong = sigil("0000");
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("PIN is wrong"));
    let out = sigil(PIN);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = token.dir.join("pub.der");
    token.run(
        "pkcs11-tool",
        &[
            "--module",
            MODULE,
            "--token-label",
            TOKEN,
            "--read-object",
            "--type",
            "pubkey",
            "--label",
            "rsa2048",
            "--output-file",
            exported.to_str().unwrap(),
        ],
    );
    let envelope = std::fs::read(dir.path().join("t.env.json")).unwrap();
    verify_at(
        &envelope,
        TEMPLATE,
        &std::fs::read(exported).unwrap(),
        Scheme::RsassaPkcs1v15Sha256,
        None,
    )
    .unwrap();
}

//! The template verification vectors, natively.

use guard_core::{verify_template, PinnedKey, Scheme};
use serde::Deserialize;

use crate::workspace;

/// Inside the validity window of the vectors in `tests/vectors/templates`.
const VALID_AT: &str = "2027-01-01T00:00:00Z";

#[derive(Deserialize)]
struct Vectors {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    envelope: String,
    template: String,
    key: String,
    scheme: Scheme,
    now: String,
    expect: String,
}

fn verify(v: &Vector) -> Result<String, String> {
    let dir = workspace().join("tests/vectors/templates");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let key = PinnedKey::from_spki(&read(&v.key), v.scheme).map_err(|e| e.code().to_string())?;
    verify_template(&read(&v.envelope), &read(&v.template), &key, Some(&v.now))
        .map(|t| t.statement().template_id.clone())
        .map_err(|e| e.code().to_string())
}

#[test]
fn every_vector_gives_its_expected_result() {
    let text =
        std::fs::read_to_string(workspace().join("tests/vectors/templates/vectors.json")).unwrap();
    let vectors: Vectors = serde_json::from_str(&text).unwrap();
    let mut ran = 0;
    for v in &vectors.vectors {
        let got = match verify(v) {
            Ok(_) => "ok".to_string(),
            Err(code) => code,
        };
        assert_eq!(got, v.expect, "vector `{}`", v.name);
        ran += 1;
    }
    assert!(ran >= 20, "only {ran} vectors ran");
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(workspace().join("tests/vectors/templates").join(name)).unwrap()
}

fn pkcs1_key(name: &str) -> PinnedKey {
    PinnedKey::from_spki(&fixture(name), Scheme::RsassaPkcs1v15Sha256).unwrap()
}

#[test]
fn verified_template_carries_the_signed_statement() {
    let key = pkcs1_key("signer.pub.pem");
    let der_key = pkcs1_key("signer.pub.der");
    // PEM and DER of one key have one fingerprint.
    assert_eq!(key.fingerprint(), der_key.fingerprint());
    let template = fixture("template.txt");
    let t = verify_template(&fixture("envelope.json"), &template, &key, Some(VALID_AT)).unwrap();
    assert_eq!(t.statement().template_id, "demo/support");
    assert_eq!(t.statement().version, 1);
    assert_eq!(t.text().as_bytes(), template.as_slice());
    assert_eq!(t.key_fingerprint(), key.fingerprint());
}

#[test]
fn every_truncation_of_a_signature_is_refused() {
    let key = pkcs1_key("signer.pub.pem");
    let template = fixture("template.txt");
    let envelope: serde_json::Value = serde_json::from_slice(&fixture("envelope.json")).unwrap();
    let sig = envelope["signatures"][0]["sig"]
        .as_str()
        .unwrap()
        .to_string();
    for cut in (0..sig.len()).step_by(7) {
        let mut e = envelope.clone();
        e["signatures"][0]["sig"] = serde_json::Value::String(sig[..cut].to_string());
        let result = verify_template(e.to_string().as_bytes(), &template, &key, Some(VALID_AT));
        assert!(
            result.is_err(),
            "signature cut to {cut} characters verified"
        );
    }
}

#[test]
fn a_malformed_entry_does_not_veto_a_good_signature() {
    let key = pkcs1_key("signer.pub.pem");
    let template = fixture("template.txt");
    let mut envelope: serde_json::Value =
        serde_json::from_slice(&fixture("envelope.json")).unwrap();
    let good = envelope["signatures"][0].clone();
    envelope["signatures"] = serde_json::json!([{"keyid": "junk", "sig": "AAAA"}, good]);
    assert!(verify_template(
        envelope.to_string().as_bytes(),
        &template,
        &key,
        Some(VALID_AT)
    )
    .is_ok());
    // A well-formed signature that fails outranks a malformed one.
    let other = pkcs1_key("other.pub.pem");
    let err = verify_template(
        envelope.to_string().as_bytes(),
        &template,
        &other,
        Some(VALID_AT),
    )
    .unwrap_err();
    assert_eq!(err.code(), "unknown_key");
    // Named as the pinned key's, it is a bad signature.
    envelope["signatures"][1]["keyid"] = serde_json::json!(other.fingerprint());
    let err = verify_template(
        envelope.to_string().as_bytes(),
        &template,
        &other,
        Some(VALID_AT),
    )
    .unwrap_err();
    assert_eq!(err.code(), "bad_signature");
}

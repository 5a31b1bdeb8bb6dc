//! Keyrings, approvals, revocation, rollback and strict parsing, as data-driven vectors
//! (`tests/vectors/keyring/`), and RSA verification against Wycheproof-style vectors
//! (`tests/vectors/rsa/`).

use guard_core::provenance::{verify_request_json, Keyring, PinnedKey, Scheme};
use serde::Deserialize;
use serde_json::Value;

use crate::workspace;

#[derive(Deserialize)]
struct Vectors {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    request: Value,
    expect: String,
}

fn keyring_vectors() -> Vec<Vector> {
    let text = std::fs::read_to_string(workspace().join("tests/vectors/keyring/vectors.json"))
        .expect("keyring vectors");
    serde_json::from_str::<Vectors>(&text)
        .expect("vectors parse")
        .vectors
}

#[test]
fn every_keyring_vector_gives_its_expected_result() {
    let vectors = keyring_vectors();
    let mut codes = std::collections::BTreeSet::new();
    for v in &vectors {
        let got = match verify_request_json(v.request.to_string().as_bytes()) {
            Ok(_) => "ok".to_string(),
            Err(e) => e.code().to_string(),
        };
        assert_eq!(got, v.expect, "vector `{}`", v.name);
        codes.insert(got);
    }
    assert!(vectors.len() >= 60, "only {} vectors ran", vectors.len());
    // Every refusal the vectors are meant to show is shown.
    for code in [
        "ok",
        "digest_mismatch",
        "unknown_key",
        "bad_signature",
        "revoked_key",
        "expired",
        "rollback",
        "malformed_envelope",
        "payload_type",
        "malformed_statement",
        "not_enough_approvals",
        "outside_key_window",
        "not_yet_valid",
        "below_min_version",
        "withdrawn",
        "equivocation",
        "history_mismatch",
        "invalid_keyring",
        "expired_key",
        "invalid_request",
    ] {
        assert!(codes.contains(code), "no vector shows `{code}`");
    }
}

#[test]
fn accepted_vectors_report_approvals_and_the_new_high_water_mark() {
    for v in keyring_vectors().iter().filter(|v| v.expect == "ok") {
        let report: Value =
            serde_json::from_str(&verify_request_json(v.request.to_string().as_bytes()).unwrap())
                .unwrap();
        let threshold = v.request["template_policy"]["approvals"]["threshold"]
            .as_u64()
            .unwrap_or(1);
        let approvals = report["approvals"].as_array().unwrap();
        assert!(approvals.len() as u64 >= threshold, "vector `{}`", v.name);
        let version = report["version"].as_u64().unwrap();
        let before = v.request["high_water"]["version"].as_u64().unwrap_or(0);
        assert_eq!(
            report["high_water"]["version"].as_u64().unwrap(),
            version.max(before),
            "vector `{}`",
            v.name
        );
    }
}

/// A refused record never advances the mark: the request is refused as a whole.
#[test]
fn a_refused_version_leaves_the_mark_where_it_was() {
    let vectors = keyring_vectors();
    let rollback = vectors.iter().find(|v| v.expect == "rollback").unwrap();
    let err = verify_request_json(rollback.request.to_string().as_bytes()).unwrap_err();
    assert_eq!(err.code(), "rollback");
    // And the version that was refused as active is accepted when pinned at or above the
    // minimum, without moving the mark down.
    let mut pinned = rollback.request.clone();
    pinned["version"] = serde_json::json!(6);
    let report: Value =
        serde_json::from_str(&verify_request_json(pinned.to_string().as_bytes()).unwrap()).unwrap();
    assert_eq!(report["high_water"], rollback.request["high_water"]);
}

#[test]
fn hostile_requests_get_typed_refusals() {
    let base = keyring_vectors()
        .into_iter()
        .find(|v| v.expect == "ok")
        .unwrap()
        .request;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let mut cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\xff\xfe".to_vec(),
        b"null".to_vec(),
        deep.into_bytes(),
        br#"{"envelope": {}, "template": "\ud800", "keyring": {"keys": []}, "now": "x"}"#.to_vec(),
    ];
    let mut wrong_type = base.clone();
    wrong_type["keyring"] = serde_json::json!("keys");
    cases.push(wrong_type.to_string().into_bytes());
    let mut extra = base.clone();
    extra["trust_me"] = serde_json::json!(true);
    cases.push(extra.to_string().into_bytes());
    let mut huge = base.clone();
    huge["template"] = Value::String("a".repeat(40 << 20));
    cases.push(huge.to_string().into_bytes());
    let mut many = base.clone();
    let sig = many["envelope"]["signatures"][0].clone();
    many["envelope"]["signatures"] = Value::Array(vec![sig; 17]);
    cases.push(many.to_string().into_bytes());
    let mut keys = base.clone();
    let key = keys["keyring"]["keys"][0].clone();
    keys["keyring"]["keys"] = Value::Array(vec![key; 65]);
    cases.push(keys.to_string().into_bytes());
    let mut empty = base.clone();
    empty["keyring"]["keys"] = Value::Array(Vec::new());
    cases.push(empty.to_string().into_bytes());
    let mut control = base;
    control["template"] = Value::String("\u{0}\u{1b}[2J".into());
    cases.push(control.to_string().into_bytes());
    let expected = [
        "invalid_request",
        "invalid_request",
        "invalid_request",
        "invalid_request",
        "invalid_request",
        "invalid_keyring",
        "invalid_request",
        "invalid_request",
        "too_many_signatures",
        "invalid_keyring",
        "malformed_signature",
        "digest_mismatch",
    ];
    assert_eq!(cases.len(), expected.len());
    for (case, expect) in cases.iter().zip(expected) {
        let err = verify_request_json(case).unwrap_err();
        assert_eq!(
            err.code(),
            expect,
            "{}",
            String::from_utf8_lossy(&case[..case.len().min(80)])
        );
    }
}

#[test]
fn a_keyring_file_is_parsed_strictly() {
    let v = keyring_vectors().into_iter().next().unwrap();
    let ring = v.request["keyring"].to_string();
    assert!(!Keyring::from_json(ring.as_bytes()).unwrap().is_empty());
    let first = &v.request["keyring"]["keys"][0];
    let dup = ring.replacen("\"keys\":", &format!("\"keys\":[{first}],\"keys\":"), 1);
    assert!(
        Keyring::from_json(dup.as_bytes()).is_err(),
        "duplicate field accepted"
    );
    let case = ring.replacen("\"valid_from\"", "\"Valid_From\"", 1);
    assert!(
        Keyring::from_json(case.as_bytes()).is_err(),
        "case-variant field accepted"
    );
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RsaFile {
    algorithm: String,
    number_of_tests: usize,
    test_groups: Vec<RsaGroup>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RsaGroup {
    public_key_der: String,
    #[serde(default)]
    key_result: Option<String>,
    tests: Vec<RsaTest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RsaTest {
    tc_id: usize,
    comment: String,
    msg: String,
    sig: String,
    result: String,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn rsa_verification_passes_every_wycheproof_style_vector() {
    let dir = workspace().join("tests/vectors/rsa");
    let mut ran = 0;
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        files += 1;
        let file: RsaFile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let scheme = match file.algorithm.as_str() {
            "RSASSA-PKCS1-v1_5" => Scheme::RsassaPkcs1v15Sha256,
            "RSASSA-PSS" => Scheme::RsassaPssSha256,
            other => panic!("unknown algorithm {other} in {}", path.display()),
        };
        let mut in_file = 0;
        for group in &file.test_groups {
            let key = PinnedKey::from_spki_der(&unhex(&group.public_key_der), scheme);
            if group.key_result.as_deref() == Some("invalid") {
                assert!(
                    key.is_err(),
                    "{}: an invalid key was accepted",
                    path.display()
                );
                in_file += group.tests.len();
                continue;
            }
            let key = key.unwrap();
            for t in &group.tests {
                let ok = key.verifies(&unhex(&t.msg), &unhex(&t.sig));
                let want = t.result == "valid";
                assert_eq!(
                    ok,
                    want,
                    "{} tcId {} ({})",
                    path.display(),
                    t.tc_id,
                    t.comment
                );
                in_file += 1;
            }
        }
        assert_eq!(in_file, file.number_of_tests, "{}", path.display());
        ran += in_file;
    }
    assert!(
        files >= 2 && ran >= 40,
        "only {ran} RSA vectors in {files} files ran"
    );
}

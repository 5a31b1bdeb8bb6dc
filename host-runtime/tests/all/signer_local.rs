//! The local signer: every key size and both schemes, verified independently.

use guard_core::Scheme;
use host_runtime::signer::{self, LocalSigner, SignError, Signer, SignerSpec};

use crate::signing::sign_and_verify;

#[test]
fn local_keys_of_every_size_sign_both_schemes() {
    for bits in [2048, 3072, 4096] {
        let key = LocalSigner::generate(bits).unwrap();
        let pem = key.private_pem().unwrap();
        for scheme in [Scheme::RsassaPkcs1v15Sha256, Scheme::RsassaPssSha256] {
            let signer = LocalSigner::from_pem(&pem)
                .unwrap()
                .with_scheme(scheme)
                .unwrap();
            assert_eq!(signer.scheme(), scheme);
            let envelope = sign_and_verify(&signer, b"Answer the question: {{q}}\n");
            let sig = serde_json::from_slice::<serde_json::Value>(&envelope).unwrap()["signatures"]
                [0]["sig"]
                .as_str()
                .unwrap()
                .len();
            // Base64 of a modulus-sized signature.
            assert_eq!(
                sig,
                (bits as usize / 8).div_ceil(3) * 4,
                "{bits} {scheme:?}"
            );
        }
    }
}

#[test]
fn local_specs_open_the_key_file_with_its_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let (_, files) = LocalSigner::generate_files(dir.path(), "k", 2048, false).unwrap();
    let text = format!("local:{};scheme=pss", files.private_key.display());
    let signer = signer::open(&text.parse::<SignerSpec>().unwrap()).unwrap();
    assert_eq!(signer.scheme(), Scheme::RsassaPssSha256);
    assert_eq!(signer.key_id(), files.fingerprint);
    sign_and_verify(signer.as_ref(), b"t");

    let missing = format!("local:{}", dir.path().join("nope.pem").display());
    match signer::open(&missing.parse().unwrap()) {
        Err(SignError::Io { context, .. }) => assert!(context.contains("nope.pem"), "{context}"),
        other => panic!("{other:?}"),
    }
}

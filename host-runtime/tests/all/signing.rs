//! What every signing backend's tests share: sign a template through the `Signer` trait and
//! verify the envelope independently, with guard-core's verifier and a pinned public key.

use guard_core::time::Timestamp;
use guard_core::{PinnedKey, Scheme, VerifiedTemplate, VerifyError};
use host_runtime::signer::Signer;
use host_runtime::template::{sign_template, SignRequest};

use crate::NOW;

/// The envelope (JSON) of `template` signed by `signer`.
pub fn sign(signer: &dyn Signer, template: &[u8]) -> Vec<u8> {
    let schema = serde_json::json!({});
    let signed_at = Timestamp::parse(NOW).unwrap();
    let request = SignRequest {
        template_id: "tests/signing",
        version: 1,
        template,
        variables_schema: &schema,
        prev_digest: None,
        signer: "tests",
        signed_at,
        not_after: Timestamp::from_unix_seconds(signed_at.unix_seconds() + 86_400),
        validation_digest: None,
    };
    serde_json::to_vec(&sign_template(&request, signer).unwrap()).unwrap()
}

/// Verifies an envelope against a pinned key, as the guard does, at [`NOW`].
pub fn verify(
    envelope: &[u8],
    template: &[u8],
    spki: &[u8],
    scheme: Scheme,
) -> Result<VerifiedTemplate, VerifyError> {
    verify_at(envelope, template, spki, scheme, Some(NOW))
}

/// Verifies an envelope at `now` (`None`: no validity check, for envelopes the CLI signed now).
pub fn verify_at(
    envelope: &[u8],
    template: &[u8],
    spki: &[u8],
    scheme: Scheme,
    now: Option<&str>,
) -> Result<VerifiedTemplate, VerifyError> {
    let key = PinnedKey::from_spki(spki, scheme)?;
    // Without a time given, the time the envelopes were made: now.
    let current = host_runtime::cli::now_utc();
    guard_core::verify_template(envelope, template, &key, Some(now.unwrap_or(&current)))
}

/// Signs, verifies under the signer's own key and scheme, and checks that the verifier is not
/// fooled: another template, or the same key pinned with the other scheme, is refused.
pub fn sign_and_verify(signer: &dyn Signer, template: &[u8]) -> Vec<u8> {
    let envelope = sign(signer, template);
    let spki = signer.public_key_der();
    let verified = verify(&envelope, template, spki, signer.scheme()).unwrap();
    assert_eq!(
        verified.key_fingerprint(),
        host_runtime::signer::fingerprint(spki)
    );
    let mut changed = template.to_vec();
    changed.push(b'!');
    assert!(matches!(
        verify(&envelope, &changed, spki, signer.scheme()),
        Err(VerifyError::DigestMismatch { .. })
    ));
    let other = match signer.scheme() {
        Scheme::RsassaPkcs1v15Sha256 => Scheme::RsassaPssSha256,
        Scheme::RsassaPssSha256 => Scheme::RsassaPkcs1v15Sha256,
    };
    assert!(matches!(
        verify(&envelope, template, spki, other),
        Err(VerifyError::BadSignature { .. })
    ));
    envelope
}

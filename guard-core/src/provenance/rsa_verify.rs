//! RSA signature verification (RFC 8017): the public-key operation in Montgomery form, then
//! EMSA-PKCS1-v1_5 by encoding the expected message and comparing, or EMSA-PSS-VERIFY.
//!
//! Verification handles public values only, so variable time is fine here. The Montgomery
//! parameters are computed once per pinned key; with e = 65537 a verification is 16 squarings
//! and one multiplication.

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Odd};
use sha2::{Digest as _, Sha256};

/// DER of `DigestInfo` for SHA-256, up to the digest itself (RFC 8017, section 9.2, note 1).
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const HASH_LEN: usize = 32;
/// The salt length this project signs and accepts with PSS.
const PSS_SALT_LEN: usize = 32;

/// An RSA public key with exponent 65537, ready for repeated verification.
#[derive(Clone)]
pub(super) struct RsaVerifier {
    modulus: BoxedUint,
    params: BoxedMontyParams,
    /// Modulus length in bytes: the length of every signature.
    len: usize,
    /// Modulus length in bits.
    bits: usize,
}

impl std::fmt::Debug for RsaVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaVerifier")
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

impl PartialEq for RsaVerifier {
    fn eq(&self, other: &Self) -> bool {
        self.modulus == other.modulus
    }
}

impl Eq for RsaVerifier {}

impl RsaVerifier {
    /// From the big-endian modulus; `None` unless it is odd and longer than one byte.
    pub(super) fn new(modulus_be: &[u8]) -> Option<Self> {
        let trimmed = modulus_be
            .get(modulus_be.iter().position(|&b| b != 0)?..)
            .unwrap_or_default();
        let len = trimmed.len();
        let bits = len * 8 - trimmed.first().map_or(8, |b| b.leading_zeros() as usize);
        let precision = u32::try_from(len * 8).ok()?;
        let modulus = BoxedUint::from_be_slice(trimmed, precision).ok()?;
        let odd: Option<Odd<BoxedUint>> = Odd::new(modulus.clone()).into();
        let params = BoxedMontyParams::new_vartime(odd?);
        Some(RsaVerifier {
            modulus,
            params,
            len,
            bits,
        })
    }

    /// Signature length in bytes.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// `signature^65537 mod n` as `len` big-endian bytes; `None` when the signature is not an
    /// integer below the modulus of exactly the modulus's length (RFC 8017, RSAVP1).
    fn public_op(&self, signature: &[u8]) -> Option<Vec<u8>> {
        if signature.len() != self.len {
            return None;
        }
        let precision = self.modulus.bits_precision();
        let s = BoxedUint::from_be_slice(signature, precision).ok()?;
        if s >= self.modulus {
            return None;
        }
        let base = BoxedMontyForm::new(s, &self.params);
        let mut power = base.clone();
        for _ in 0..16 {
            power = power.square();
        }
        let m = power.mul(&base).retrieve();
        let bytes = m.to_be_bytes();
        // The precision may round up to whole limbs: keep the low `len` bytes.
        let start = bytes.len().checked_sub(self.len)?;
        if bytes.get(..start)?.iter().any(|&b| b != 0) {
            return None;
        }
        bytes.get(start..).map(<[u8]>::to_vec)
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256: the expected encoding, built and compared whole, so no
    /// parser of the padding can be fooled.
    pub(super) fn verify_pkcs1v15_sha256(&self, message: &[u8], signature: &[u8]) -> bool {
        let Some(em) = self.public_op(signature) else {
            return false;
        };
        let t_len = SHA256_DIGEST_INFO.len() + HASH_LEN;
        let Some(ps_len) = self.len.checked_sub(t_len + 3) else {
            return false;
        };
        if ps_len < 8 {
            return false;
        }
        let mut expected = Vec::with_capacity(self.len);
        expected.extend_from_slice(&[0x00, 0x01]);
        expected.resize(2 + ps_len, 0xff);
        expected.push(0x00);
        expected.extend_from_slice(&SHA256_DIGEST_INFO);
        expected.extend_from_slice(&Sha256::digest(message));
        em == expected
    }

    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt (RFC 8017, EMSA-PSS-VERIFY).
    pub(super) fn verify_pss_sha256(&self, message: &[u8], signature: &[u8]) -> bool {
        let Some(em) = self.public_op(signature) else {
            return false;
        };
        let em_bits = self.bits - 1;
        let em_len = em_bits.div_ceil(8);
        // When the modulus is one bit past a byte, EM is one byte shorter than the signature.
        let Some(em) = em.get(em.len().saturating_sub(em_len)..) else {
            return false;
        };
        if em.len() < HASH_LEN + PSS_SALT_LEN + 2 || em.last() != Some(&0xbc) {
            return false;
        }
        let db_len = em_len - HASH_LEN - 1;
        let (Some(masked_db), Some(h)) = (em.get(..db_len), em.get(db_len..em_len - 1)) else {
            return false;
        };
        let unused_bits = 8 * em_len - em_bits;
        let top_mask = 0xffu8 >> unused_bits;
        if masked_db.first().is_some_and(|&b| b & !top_mask != 0) {
            return false;
        }
        let mut db = mgf1_sha256(h, db_len);
        for (d, m) in db.iter_mut().zip(masked_db) {
            *d ^= m;
        }
        if let Some(first) = db.first_mut() {
            *first &= top_mask;
        }
        let zeros = db_len - PSS_SALT_LEN - 1;
        let (Some(padding), Some(&one), Some(salt)) =
            (db.get(..zeros), db.get(zeros), db.get(zeros + 1..))
        else {
            return false;
        };
        if padding.iter().any(|&b| b != 0) || one != 0x01 {
            return false;
        }
        let mut hasher = Sha256::new();
        hasher.update([0u8; 8]);
        hasher.update(Sha256::digest(message));
        hasher.update(salt);
        hasher.finalize().as_slice() == h
    }
}

/// MGF1 with SHA-256 (RFC 8017, appendix B.2.1).
fn mgf1_sha256(seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + HASH_LEN);
    let mut counter = 0u32;
    while out.len() < len {
        let mut hasher = Sha256::new();
        hasher.update(seed);
        hasher.update(counter.to_be_bytes());
        out.extend_from_slice(&hasher.finalize());
        counter = counter.wrapping_add(1);
    }
    out.truncate(len);
    out
}

//! RSA signature verification (RFC 8017): the public-key operation in Montgomery form, then
//! EMSA-PKCS1-v1_5 by encoding the expected message and comparing, or EMSA-PSS-VERIFY.
//!
//! Verification handles public values only, so variable time is fine here. The Montgomery
//! constants are computed once per pinned key; with e = 65537 a verification is 16 squarings
//! and two multiplications.

use sha2::{Digest as _, Sha256};

// wasm32 multiplies 64 by 64 bits only to the low half, so there the limbs are narrower (28 bits,
// each column of a product summed without carries); elsewhere crypto-bigint's 64-bit limbs with
// 128-bit products take several times fewer multiplies.
#[cfg(target_arch = "wasm32")]
use guard_montgomery::Modulus;
#[cfg(not(target_arch = "wasm32"))]
use native::Modulus;

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
    modulus: Modulus,
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
        if len < 2 {
            return None;
        }
        let bits = len * 8 - trimmed.first().map_or(8, |b| b.leading_zeros() as usize);
        Some(RsaVerifier {
            modulus: Modulus::new(trimmed)?,
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
        self.modulus.pow_65537(signature)
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

/// `x^65537 mod n` with crypto-bigint, for targets with a 128-bit product.
#[cfg(not(target_arch = "wasm32"))]
mod native {
    use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
    use crypto_bigint::{BoxedUint, Odd};

    #[derive(Clone)]
    pub(super) struct Modulus {
        modulus: BoxedUint,
        params: BoxedMontyParams,
        len: usize,
    }

    impl PartialEq for Modulus {
        fn eq(&self, other: &Self) -> bool {
            self.modulus == other.modulus
        }
    }

    impl Modulus {
        /// From big-endian bytes without leading zeros; `None` unless the modulus is odd.
        pub(super) fn new(be: &[u8]) -> Option<Self> {
            let len = be.len();
            let modulus = BoxedUint::from_be_slice(be, u32::try_from(len * 8).ok()?).ok()?;
            let odd: Option<Odd<BoxedUint>> = Odd::new(modulus.clone()).into();
            let params = BoxedMontyParams::new_vartime(odd?);
            Some(Modulus {
                modulus,
                params,
                len,
            })
        }

        /// `x^65537 mod n` as `len` big-endian bytes; `None` unless `x` has the modulus's length
        /// and is below it.
        pub(super) fn pow_65537(&self, x: &[u8]) -> Option<Vec<u8>> {
            if x.len() != self.len {
                return None;
            }
            let x = BoxedUint::from_be_slice(x, self.modulus.bits_precision()).ok()?;
            if x >= self.modulus {
                return None;
            }
            let base = BoxedMontyForm::new(x, &self.params);
            let mut power = base.clone();
            for _ in 0..16 {
                power = power.square();
            }
            let bytes = power.mul(&base).retrieve().to_be_bytes();
            // The precision may round up to whole limbs: keep the low `len` bytes.
            let start = bytes.len().checked_sub(self.len)?;
            if bytes.get(..start)?.iter().any(|&b| b != 0) {
                return None;
            }
            bytes.get(start..).map(<[u8]>::to_vec)
        }
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

#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod tests {
    use proptest::prelude::*;

    /// An odd modulus of exactly `bits` bits from arbitrary bytes.
    fn modulus(bits: usize, mut bytes: Vec<u8>) -> Vec<u8> {
        bytes.resize(bits.div_ceil(8), 0x5a);
        let top = (bits - 1) % 8;
        bytes[0] = (bytes[0] & (0xffu16 >> (7 - top)) as u8) | 1 << top;
        if let Some(last) = bytes.last_mut() {
            *last |= 1;
        }
        bytes
    }

    fn both(n: &[u8], x: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let native = super::native::Modulus::new(n).unwrap();
        let wasm = guard_montgomery::Modulus::new(n).unwrap();
        (native.pow_65537(x), wasm.pow_65537(x))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The wasm32 arithmetic and the native one give the same answers, so every face does.
        #[test]
        fn the_wasm_arithmetic_agrees_with_the_native_one(
            bits in prop_oneof![Just(2048usize), Just(2056), Just(3072), Just(4096), 2048usize..=4096],
            n in proptest::collection::vec(any::<u8>(), 512),
            x in proptest::collection::vec(any::<u8>(), 513),
            edge in 0usize..6,
        ) {
            let n = modulus(bits, n);
            let len = n.len();
            let mut x = x[..len].to_vec();
            match edge {
                0 => x.fill(0),
                1 => { x.fill(0); x[len - 1] = 1; }
                2 => { x.clone_from(&n); x[len - 1] -= 1; }
                3 => x.clone_from(&n),
                4 => { x[..len / 2].fill(0); }
                _ => {}
            }
            let (native, wasm) = both(&n, &x);
            prop_assert_eq!(&native, &wasm);
            // Below the modulus exactly when an answer comes.
            prop_assert_eq!(native.is_some(), x < n);
        }
    }
}

//! Just enough DER to write an RSA SubjectPublicKeyInfo from a token's modulus and exponent.

/// `SEQUENCE { SEQUENCE { rsaEncryption, NULL }, BIT STRING { RSAPublicKey } }`.
pub(crate) fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    // 1.2.840.113549.1.1.1 and its NULL parameters.
    const ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut integers = unsigned_integer(modulus);
    integers.extend(unsigned_integer(exponent));
    let public_key = tlv(0x30, &integers);
    let mut bits = vec![0u8];
    bits.extend(public_key);
    let mut body = ALGORITHM.to_vec();
    body.extend(tlv(0x03, &bits));
    tlv(0x30, &body)
}

/// A non-negative INTEGER from big-endian bytes: leading zeros dropped, one added when the high
/// bit is set so the value stays positive.
fn unsigned_integer(bytes: &[u8]) -> Vec<u8> {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let digits = bytes.get(first..).unwrap_or_default();
    let mut content = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(digits);
    tlv(0x02, &content)
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let be = len.to_be_bytes();
        let skip = be.iter().position(|&b| b != 0).unwrap_or(be.len() - 1);
        let digits = be.get(skip..).unwrap_or_default();
        out.push(0x80 | digits.len() as u8);
        out.extend_from_slice(digits);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_keys_spki_is_rebuilt_byte_for_byte() {
        use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
        use aws_lc_rs::rsa::{KeyPair, KeySize};
        use aws_lc_rs::signature::KeyPair as _;
        for size in [KeySize::Rsa2048, KeySize::Rsa3072] {
            let key = KeyPair::generate(size).unwrap();
            let spki: PublicKeyX509Der<'static> = key.public_key().as_der().unwrap();
            let public = key.public_key();
            let n = public.modulus().big_endian_without_leading_zero();
            let e = public.exponent().big_endian_without_leading_zero();
            assert_eq!(rsa_spki(n, e), spki.as_ref());
            // Leading zeros, as some tokens return them, change nothing.
            let mut padded = vec![0, 0];
            padded.extend_from_slice(n);
            assert_eq!(rsa_spki(&padded, e), spki.as_ref());
        }
    }
}

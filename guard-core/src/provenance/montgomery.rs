//! Montgomery arithmetic modulo a public RSA modulus, just enough for `s^65537 mod n`.
//!
//! Written for verification, where every value is public: variable time is fine, and speed in
//! wasm32 is what matters. Limbs are the target's word, so wasm multiplies 32 × 32 → 64 bits
//! natively; squarings, 16 of the 17 products, use the cheaper square-then-reduce form.

#[cfg(target_pointer_width = "64")]
type Limb = u64;
#[cfg(target_pointer_width = "64")]
type Wide = u128;
#[cfg(not(target_pointer_width = "64"))]
type Limb = u32;
#[cfg(not(target_pointer_width = "64"))]
type Wide = u64;

const BITS: u32 = Limb::BITS;
const LIMB_BYTES: usize = (Limb::BITS / 8) as usize;

/// An odd modulus with its Montgomery constants, computed once.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Modulus {
    /// Little-endian limbs.
    n: Vec<Limb>,
    /// `-n^-1 mod 2^BITS`.
    n0: Limb,
    /// `R^2 mod n`, where `R = 2^(BITS * limbs)`.
    r2: Vec<Limb>,
}

impl Modulus {
    /// From big-endian bytes without leading zeros; `None` unless odd and at least one limb.
    pub(super) fn new(be: &[u8]) -> Option<Self> {
        let n = limbs_from_be(be, be.len().div_ceil(LIMB_BYTES))?;
        let low = *n.first()?;
        if low & 1 == 0 {
            return None;
        }
        // Newton's iteration for the inverse modulo 2^BITS: each step doubles the correct bits.
        let mut inv: Limb = 1;
        for _ in 0..7 {
            inv = inv.wrapping_mul((2 as Limb).wrapping_sub(low.wrapping_mul(inv)));
        }
        let n0 = inv.wrapping_neg();
        // R^2 mod n by doubling 1 modulo n, 2 * BITS * limbs times: slow, but once per key.
        let mut r2 = vec![0 as Limb; n.len()];
        *r2.first_mut()? = 1;
        for _ in 0..2 * BITS as usize * n.len() {
            double_mod(&mut r2, &n);
        }
        Some(Modulus { n, n0, r2 })
    }

    /// Limbs of the modulus.
    fn limbs(&self) -> usize {
        self.n.len()
    }

    /// `s^65537 mod n` as `len` big-endian bytes; `None` unless `s < n`.
    pub(super) fn pow_65537(&self, s_be: &[u8], len: usize) -> Option<Vec<u8>> {
        let k = self.limbs();
        let s = limbs_from_be(s_be, k)?;
        if !less_than(&s, &self.n) {
            return None;
        }
        let mut base = vec![0 as Limb; k];
        mont_mul(&s, &self.r2, self, &mut base);
        let mut x = base.clone();
        let mut scratch = vec![0 as Limb; 2 * k + 1];
        let mut y = vec![0 as Limb; k];
        for _ in 0..16 {
            mont_square(&x, self, &mut scratch, &mut y);
            std::mem::swap(&mut x, &mut y);
        }
        mont_mul(&x, &base, self, &mut y);
        // Out of Montgomery form: multiply by 1.
        let mut one = vec![0 as Limb; k];
        *one.first_mut()? = 1;
        mont_mul(&y, &one, self, &mut x);
        Some(limbs_to_be(&x, len))
    }
}

/// Little-endian limbs of a big-endian number, exactly `limbs` long; `None` if it does not fit.
fn limbs_from_be(be: &[u8], limbs: usize) -> Option<Vec<Limb>> {
    if be.len() > limbs * LIMB_BYTES {
        return None;
    }
    let mut out = vec![0 as Limb; limbs];
    for (i, chunk) in be.rchunks(LIMB_BYTES).enumerate() {
        let mut word: Limb = 0;
        for &b in chunk {
            word = (word << 8) | Limb::from(b);
        }
        *out.get_mut(i)? = word;
    }
    Some(out)
}

/// The low `len` bytes of a little-endian number, big-endian.
fn limbs_to_be(limbs: &[Limb], len: usize) -> Vec<u8> {
    let mut out: Vec<u8> = limbs.iter().rev().flat_map(|l| l.to_be_bytes()).collect();
    let extra = out.len().saturating_sub(len);
    out.drain(..extra);
    out
}

fn less_than(a: &[Limb], b: &[Limb]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// `a -= b`, returning the borrow.
fn sub_in_place(a: &mut [Limb], b: &[Limb]) -> bool {
    let mut borrow = false;
    for (x, &y) in a.iter_mut().zip(b) {
        let (d1, b1) = x.overflowing_sub(y);
        let (d2, b2) = d1.overflowing_sub(Limb::from(borrow));
        *x = d2;
        borrow = b1 || b2;
    }
    borrow
}

/// `x = 2x mod n`, for `x < n`.
fn double_mod(x: &mut [Limb], n: &[Limb]) {
    let mut carry: Limb = 0;
    for limb in x.iter_mut() {
        let next = *limb >> (BITS - 1);
        *limb = (*limb << 1) | carry;
        carry = next;
    }
    if carry == 1 || !less_than(x, n) {
        sub_in_place(x, n);
    }
}

/// `out = a * b * R^-1 mod n` (coarsely integrated operand scanning), for `a, b < n`.
#[expect(
    clippy::indexing_slicing,
    reason = "every index is below the modulus's limb count, checked on entry"
)]
fn mont_mul(a: &[Limb], b: &[Limb], m: &Modulus, out: &mut [Limb]) {
    let n = &m.n[..];
    let k = n.len();
    if a.len() != k || b.len() != k || out.len() != k {
        return;
    }
    let t = &mut out[..k];
    t.fill(0);
    let mut t_k: Limb = 0;
    for &bi in b {
        let mut carry: Wide = 0;
        for (tj, &aj) in t.iter_mut().zip(a) {
            let s = Wide::from(*tj) + Wide::from(aj) * Wide::from(bi) + carry;
            *tj = s as Limb;
            carry = s >> BITS;
        }
        let s = Wide::from(t_k) + carry;
        t_k = s as Limb;
        let t_k1 = (s >> BITS) as Limb;

        let q = t[0].wrapping_mul(m.n0);
        let mut carry = (Wide::from(t[0]) + Wide::from(q) * Wide::from(n[0])) >> BITS;
        for j in 1..k {
            let s = Wide::from(t[j]) + Wide::from(q) * Wide::from(n[j]) + carry;
            t[j - 1] = s as Limb;
            carry = s >> BITS;
        }
        let s = Wide::from(t_k) + carry;
        t[k - 1] = s as Limb;
        t_k = t_k1.wrapping_add((s >> BITS) as Limb);
    }
    if t_k != 0 || !less_than(t, n) {
        sub_in_place(t, n);
    }
}

/// `out = a^2 * R^-1 mod n`: the square first (each cross product once, then doubled), then
/// Montgomery reduction. `scratch` holds `2k + 1` limbs.
#[expect(
    clippy::indexing_slicing,
    reason = "every index is below 2k + 1, the scratch length checked on entry"
)]
fn mont_square(a: &[Limb], m: &Modulus, scratch: &mut [Limb], out: &mut [Limb]) {
    let n = &m.n[..];
    let k = n.len();
    if a.len() != k || out.len() != k || scratch.len() != 2 * k + 1 {
        return;
    }
    let p = scratch;
    p.fill(0);
    // Cross products a_i * a_j, i < j.
    for i in 0..k {
        let ai = Wide::from(a[i]);
        let mut carry: Wide = 0;
        for j in i + 1..k {
            let s = Wide::from(p[i + j]) + ai * Wide::from(a[j]) + carry;
            p[i + j] = s as Limb;
            carry = s >> BITS;
        }
        p[i + k] = carry as Limb;
    }
    // Doubled, plus the squares a_i^2.
    let mut top: Limb = 0;
    for limb in p[..2 * k].iter_mut() {
        let next = *limb >> (BITS - 1);
        *limb = (*limb << 1) | top;
        top = next;
    }
    let mut carry: Wide = 0;
    for i in 0..k {
        let sq = Wide::from(a[i]) * Wide::from(a[i]);
        let lo = Wide::from(p[2 * i]) + (sq & Wide::from(Limb::MAX)) + carry;
        p[2 * i] = lo as Limb;
        let hi = Wide::from(p[2 * i + 1]) + (sq >> BITS) + (lo >> BITS);
        p[2 * i + 1] = hi as Limb;
        carry = hi >> BITS;
    }
    // Reduction: add q * n at limb i for each i, so the low k limbs vanish.
    p[2 * k] = 0;
    for i in 0..k {
        let q = p[i].wrapping_mul(m.n0);
        let mut carry: Wide = 0;
        for j in 0..k {
            let s = Wide::from(p[i + j]) + Wide::from(q) * Wide::from(n[j]) + carry;
            p[i + j] = s as Limb;
            carry = s >> BITS;
        }
        let mut at = i + k;
        while carry != 0 && at <= 2 * k {
            let s = Wide::from(p[at]) + carry;
            p[at] = s as Limb;
            carry = s >> BITS;
            at += 1;
        }
    }
    out.copy_from_slice(&p[k..2 * k]);
    if p[2 * k] != 0 || !less_than(out, n) {
        sub_in_place(out, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::BigUint;

    /// A deterministic stream of bytes (SplitMix64), so the test needs no randomness source.
    fn bytes(seed: &mut u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = *seed;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)) as u8
            })
            .collect()
    }

    #[test]
    fn agrees_with_a_general_modular_power() {
        let mut seed = 7;
        let e = BigUint::from(65_537u32);
        for len in [8, 9, 31, 64, 128, 256, 257, 384, 512] {
            for _ in 0..8 {
                let mut n = bytes(&mut seed, len);
                n[0] |= 0x80;
                *n.last_mut().unwrap() |= 1;
                let modulus = Modulus::new(&n).unwrap();
                let n_big = BigUint::from_bytes_be(&n);
                for _ in 0..4 {
                    let mut s = bytes(&mut seed, len);
                    s[0] &= 0x7f;
                    let expected = BigUint::from_bytes_be(&s).modpow(&e, &n_big);
                    let got = modulus.pow_65537(&s, len).unwrap();
                    assert_eq!(BigUint::from_bytes_be(&got), expected, "len {len}");
                    assert_eq!(got.len(), len);
                }
                // Edge values: 0, 1, n - 1; and n itself is refused.
                let mut n_minus_1 = n.clone();
                *n_minus_1.last_mut().unwrap() -= 1;
                for s in [
                    vec![0u8; len],
                    {
                        let mut one = vec![0u8; len];
                        *one.last_mut().unwrap() = 1;
                        one
                    },
                    n_minus_1,
                ] {
                    let expected = BigUint::from_bytes_be(&s).modpow(&e, &n_big);
                    let got = modulus.pow_65537(&s, len).unwrap();
                    assert_eq!(BigUint::from_bytes_be(&got), expected);
                }
                assert!(modulus.pow_65537(&n, len).is_none());
            }
        }
        assert!(Modulus::new(&[0x80, 0x00]).is_none(), "an even modulus");
    }
}

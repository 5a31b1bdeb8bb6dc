//! `x^65537 mod n` for RSA signature verification, in Montgomery form, shaped for WebAssembly.
//!
//! wasm32 multiplies 64 by 64 bits only to the low 64 bits, so a product of two limbs takes one
//! multiply only if limbs are at most 32 bits; with 32-bit limbs, though, every step must also
//! carry. Limbs here are narrower (28 bits for moduli up to 3584 bits, 27 up to 4096) so that a
//! whole column of limb products, from the multiplication and from the reduction, adds up in one
//! `u64` without overflow: each step of the inner loop is one multiply and one add, and carrying
//! happens once per column (product scanning with interleaved reduction, the "FIPS" method of
//! Koç, Acar and Kaliski, 1996). Squarings sum each cross product once and double it.
//!
//! On 64-bit hosts, 64-bit limbs with a 128-bit product are several times fewer multiplies; this
//! crate is for targets without them.
//!
//! It is a crate of its own because Cargo sets optimisation per crate: the guard module is built
//! for size, and at that setting these loops ran at half the speed.
//!
//! Verification handles public values only, so the code is variable time. It never panics:
//! inputs it cannot take give `None`.
//!
//! ```
//! use guard_montgomery::Modulus;
//!
//! // 3233 = 61 * 53; 65 = 0x41.
//! let n = Modulus::new(&[0x0c, 0xa1]).unwrap();
//! let y = n.pow_65537(&[0x00, 0x41]).unwrap();
//! assert_eq!(u16::from_be_bytes([y[0], y[1]]), 2790);
//! ```

use num_bigint_dig::BigUint;

/// An odd modulus with its Montgomery constants, for `R = 2^(width * limbs)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modulus {
    /// Bits per limb.
    width: u32,
    /// `2^width - 1`.
    mask: u64,
    /// The modulus, little-endian limbs of `width` bits.
    n: Vec<u32>,
    /// `-n^-1 mod 2^width`.
    neg_inv: u64,
    /// `R^2 mod n`, to bring a value into Montgomery form with one multiplication.
    r2: Vec<u32>,
    /// The modulus as big-endian bytes without leading zeros.
    be: Vec<u8>,
}

/// The widest limb, and the number of limbs, for which the sum of a column's products plus the
/// carry from the column before stays below `2^64`. A column holds at most `2 * limbs` products.
fn limb_layout(bits: usize) -> Option<(u32, usize)> {
    (16..=30u32).rev().find_map(|width| {
        let limbs = bits.div_ceil(width as usize);
        let product = ((1u128 << width) - 1).pow(2);
        let column = product
            .checked_mul(2 * limbs as u128)?
            .checked_add(1u128 << (64 - width))?;
        (column < 1u128 << 64).then_some((width, limbs))
    })
}

/// Big-endian bytes as `limbs` limbs of `width` bits; `None` when the value needs more.
fn to_limbs(be: &[u8], width: u32, limbs: usize) -> Option<Vec<u32>> {
    let mask = (1u64 << width) - 1;
    let mut out = vec![0u32; limbs];
    let mut slots = out.iter_mut();
    let mut acc = 0u64;
    let mut have = 0u32;
    for &byte in be.iter().rev() {
        acc |= u64::from(byte) << have;
        have += 8;
        if have >= width {
            *slots.next()? = (acc & mask) as u32;
            acc >>= width;
            have -= width;
        }
    }
    if acc != 0 {
        *slots.next()? = acc as u32;
    }
    Some(out)
}

/// Limbs of `width` bits as `len` big-endian bytes; `None` when the value needs more.
fn to_be_bytes(limbs: &[u32], width: u32, len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; len];
    let mut slots = out.iter_mut().rev();
    let mut acc = 0u64;
    let mut have = 0u32;
    for &limb in limbs {
        acc |= u64::from(limb) << have;
        have += width;
        while have >= 8 {
            match slots.next() {
                Some(slot) => *slot = acc as u8,
                None if acc as u8 == 0 => {}
                None => return None,
            }
            acc >>= 8;
            have -= 8;
        }
    }
    if acc != 0 {
        *slots.next()? = acc as u8;
    }
    Some(out)
}

/// `sum x[i] * y[len - 1 - i]`: one column of a product. Unrolled by hand because the module
/// is built for size, where the compiler unrolls nothing.
#[inline(always)]
fn column(x: &[u32], y: &[u32]) -> u64 {
    let xs = x.chunks_exact(4);
    let ys = y.rchunks_exact(4);
    let mut sum = xs
        .remainder()
        .iter()
        .zip(ys.remainder().iter().rev())
        .map(|(&a, &b)| u64::from(a) * u64::from(b))
        .sum::<u64>();
    for (a, b) in xs.zip(ys) {
        if let (Ok([a0, a1, a2, a3]), Ok([b0, b1, b2, b3])) =
            (<[u32; 4]>::try_from(a), <[u32; 4]>::try_from(b))
        {
            sum += u64::from(a0) * u64::from(b3)
                + u64::from(a1) * u64::from(b2)
                + u64::from(a2) * u64::from(b1)
                + u64::from(a3) * u64::from(b0);
        }
    }
    sum
}

impl Modulus {
    /// From big-endian bytes without leading zeros; `None` unless the modulus is odd and above 1.
    pub fn new(be: &[u8]) -> Option<Self> {
        let first = *be.first()?;
        if first == 0 || be.last()? & 1 == 0 || be == [1] {
            return None;
        }
        let bits = be.len() * 8 - first.leading_zeros() as usize;
        let (width, limbs) = limb_layout(bits)?;
        let n = to_limbs(be, width, limbs)?;
        let n0 = u64::from(*n.first()?);
        // Newton's iteration doubles the correct low bits of the inverse each round: 1, 2, 4, …
        // 64 after six.
        let mut inv = 1u64;
        for _ in 0..6 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(n0.wrapping_mul(inv)));
        }
        let mask = (1u64 << width) - 1;
        let mut modulus = Modulus {
            width,
            mask,
            n,
            neg_inv: inv.wrapping_neg() & mask,
            r2: Vec::new(),
            be: be.to_vec(),
        };
        modulus.r2 = modulus.r_squared()?;
        Some(modulus)
    }

    /// Modulus length in bytes: the length `pow_65537` takes and gives.
    pub fn len(&self) -> usize {
        self.be.len()
    }

    /// Always false: a modulus has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.be.is_empty()
    }

    /// `R^2 mod n`, by long division: once per key, and several times faster than reaching it by
    /// Montgomery squarings and doublings.
    fn r_squared(&self) -> Option<Vec<u32>> {
        let log_r = self.width as usize * self.n.len();
        let r2 = (BigUint::from(1u32) << (2 * log_r)) % BigUint::from_bytes_be(&self.be);
        to_limbs(&r2.to_bytes_be(), self.width, self.n.len())
    }

    /// `x^65537 mod n` as big-endian bytes of the modulus's length; `None` unless `x` has that
    /// length and is below the modulus.
    pub fn pow_65537(&self, x: &[u8]) -> Option<Vec<u8>> {
        // Equal lengths compare as numbers.
        if x.len() != self.be.len() || x >= self.be.as_slice() {
            return None;
        }
        let limbs = self.n.len();
        let base = to_limbs(x, self.width, limbs)?;
        let mut scratch = vec![0u32; limbs];
        let mut a = vec![0u32; limbs];
        let mut b = vec![0u32; limbs];
        // x R, squared 16 times to x^65536 R; the last product by x itself (not x R) leaves
        // Montgomery form.
        self.mul(&base, &self.r2, &mut scratch, &mut a)?;
        for _ in 0..8 {
            self.square(&a, &mut scratch, &mut b)?;
            self.square(&b, &mut scratch, &mut a)?;
        }
        self.mul(&a, &base, &mut scratch, &mut b)?;
        to_be_bytes(&b, self.width, self.be.len())
    }

    /// `out = a b / R mod n` for `a, b < n`; `m` is scratch for the reduction's quotient limbs.
    fn mul(&self, a: &[u32], b: &[u32], m: &mut [u32], out: &mut [u32]) -> Option<()> {
        let limbs = self.n.len();
        let n = self.n.as_slice();
        let n0 = u64::from(*n.first()?);
        let mut acc = 0u64;
        for k in 0..limbs {
            acc += column(a.get(..=k)?, b.get(..=k)?);
            acc += column(m.get(..k)?, n.get(1..=k)?);
            let q = acc.wrapping_mul(self.neg_inv) & self.mask;
            *m.get_mut(k)? = q as u32;
            acc = (acc + q * n0) >> self.width;
        }
        for k in limbs..2 * limbs - 1 {
            let low = k + 1 - limbs;
            acc += column(a.get(low..)?, b.get(low..)?);
            acc += column(m.get(low..)?, n.get(low..)?);
            *out.get_mut(k - limbs)? = (acc & self.mask) as u32;
            acc >>= self.width;
        }
        self.finish(acc, out)
    }

    /// `out = a^2 / R mod n` for `a < n`; `m` as for [`Modulus::mul`].
    fn square(&self, a: &[u32], m: &mut [u32], out: &mut [u32]) -> Option<()> {
        let limbs = self.n.len();
        let n = self.n.as_slice();
        let n0 = u64::from(*n.first()?);
        let mut acc = 0u64;
        for k in 0..2 * limbs - 1 {
            // Pairs (i, k - i) with low <= i < k - i <= limbs - 1, then the square of a[k / 2].
            let low = (k + 1).saturating_sub(limbs);
            let half = k.div_ceil(2);
            acc += 2 * column(a.get(low..half)?, a.get(k + 1 - half..=k - low)?);
            if k % 2 == 0 {
                let middle = u64::from(*a.get(k / 2)?);
                acc += middle * middle;
            }
            if k < limbs {
                acc += column(m.get(..k)?, n.get(1..=k)?);
                let q = acc.wrapping_mul(self.neg_inv) & self.mask;
                *m.get_mut(k)? = q as u32;
                acc = (acc + q * n0) >> self.width;
            } else {
                acc += column(m.get(low..)?, n.get(low..)?);
                *out.get_mut(k - limbs)? = (acc & self.mask) as u32;
                acc >>= self.width;
            }
        }
        self.finish(acc, out)
    }

    /// Stores the top limb; the result is below `2n`, so one subtraction of `n` at most.
    fn finish(&self, acc: u64, out: &mut [u32]) -> Option<()> {
        *out.last_mut()? = (acc & self.mask) as u32;
        let carry = acc >> self.width;
        if carry != 0 || !below(out, &self.n) {
            self.subtract_n(out);
        }
        Some(())
    }

    /// `v -= n` for `n <= v < 2n`, where `v` may have a carry beyond its top limb: the borrow
    /// out of the top limb cancels it.
    fn subtract_n(&self, v: &mut [u32]) {
        let mut borrow = 0u64;
        for (x, &y) in v.iter_mut().zip(&self.n) {
            let d = u64::from(*x).wrapping_sub(u64::from(y) + borrow);
            *x = (d & self.mask) as u32;
            borrow = d >> 63;
        }
    }
}

/// Whether `a < b`, both little-endian limbs of one length.
fn below(a: &[u32], b: &[u32]) -> bool {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .find(|(x, y)| x != y)
        .is_some_and(|(x, y)| x < y)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use proptest::prelude::*;

    fn reference(x: &[u8], n: &[u8]) -> Vec<u8> {
        let n = BigUint::from_bytes_be(n);
        let y = BigUint::from_bytes_be(x).modpow(&BigUint::from(65537u32), &n);
        let y = y.to_bytes_be();
        let mut out = vec![0u8; x.len() - y.len().min(x.len())];
        out.extend_from_slice(&y);
        out
    }

    /// An odd modulus of exactly `bits` bits from arbitrary bytes.
    fn modulus(bits: usize, mut bytes: Vec<u8>) -> Vec<u8> {
        bytes.resize(bits.div_ceil(8), 0x5a);
        let top = (bits - 1) % 8;
        bytes[0] = (bytes[0] & ((1u16 << (top + 1)) - 1) as u8) | 1 << top;
        *bytes.last_mut().unwrap() |= 1;
        bytes
    }

    /// `x mod n` at the modulus's length.
    fn below_n(x: &[u8], n: &[u8]) -> Vec<u8> {
        let r = (BigUint::from_bytes_be(x) % BigUint::from_bytes_be(n)).to_bytes_be();
        let mut out = vec![0u8; n.len() - r.len()];
        out.extend_from_slice(&r);
        out
    }

    fn check(n: &[u8], x: &[u8]) {
        let m = Modulus::new(n).unwrap();
        assert_eq!(
            m.pow_65537(x).unwrap(),
            reference(x, n),
            "n = {n:02x?}, x = {x:02x?}"
        );
    }

    #[test]
    fn limb_layouts_keep_columns_below_two_to_the_64() {
        assert_eq!(limb_layout(2048), Some((28, 74)));
        assert_eq!(limb_layout(3072), Some((28, 110)));
        assert_eq!(limb_layout(4096), Some((27, 152)));
        for bits in 2..=4096 {
            let (width, limbs) = limb_layout(bits).unwrap();
            assert!(width as usize * limbs >= bits);
        }
    }

    #[test]
    fn edge_values_agree_with_the_reference() {
        for bits in [2048, 2049, 2055, 2056, 3072, 3584, 3585, 4095, 4096] {
            for fill in [0xffu8, 0x80, 0x01] {
                let n = modulus(bits, vec![fill; bits.div_ceil(8)]);
                let len = n.len();
                let mut n_minus = n.clone();
                n_minus[len - 1] -= 1;
                let mut one = vec![0u8; len];
                one[len - 1] = 1;
                let mut two = one.clone();
                two[len - 1] = 2;
                let mut small = vec![0u8; len];
                small[len - 3..].copy_from_slice(&[0x12, 0x34, 0x56]);
                for x in [vec![0u8; len], one, two, small, n_minus] {
                    check(&n, &x);
                }
                let m = Modulus::new(&n).unwrap();
                assert_eq!(m.pow_65537(&n), None, "x = n");
                assert_eq!(m.pow_65537(&vec![0xff; len]), None, "x > n");
                assert_eq!(m.pow_65537(&n[1..]), None, "shorter");
                assert_eq!(m.pow_65537(&[&[0][..], &n].concat()), None, "longer");
            }
        }
    }

    #[test]
    fn moduli_that_are_not_odd_or_not_above_one_are_refused() {
        assert!(Modulus::new(&[]).is_none());
        assert!(Modulus::new(&[1]).is_none());
        assert!(Modulus::new(&[0, 3]).is_none());
        assert!(Modulus::new(&[3, 4]).is_none());
        assert!(Modulus::new(&[3]).is_some());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_values_agree_with_the_reference(
            bits in prop_oneof![Just(2048usize), Just(3072), Just(4096), 2048usize..=4096],
            n in proptest::collection::vec(any::<u8>(), 512),
            x in proptest::collection::vec(any::<u8>(), 512),
        ) {
            let n = modulus(bits, n);
            let x = below_n(&x[..n.len()], &n);
            check(&n, &x);
        }

        #[test]
        fn small_moduli_agree_with_the_reference(
            n in proptest::collection::vec(any::<u8>(), 1..40),
            x in proptest::collection::vec(any::<u8>(), 40),
        ) {
            let bits = (n.len() * 8).max(2);
            let n = modulus(bits, n);
            let x = below_n(&x[..n.len()], &n);
            check(&n, &x);
        }
    }
}

//! Hashed n-gram features of folded text, the same for training and for scoring.
//!
//! Two families, each hashed into one table of `2^bits` buckets:
//! - character n-grams of each whitespace-separated token padded with a space on both sides
//!   (`" ign"`, `"gnor"`, `"ore "`), which see through inflection, typos and scripts written
//!   without spaces;
//! - word unigrams and bigrams over runs of letters and digits, which see phrasing.
//!
//! [`FeatureCounts`] counts the occurrences of each bucket; the model weighs a bucket seen `c`
//! times by `1 + ln c` times its IDF and scales the vector to unit length, as training did.

use serde::{Deserialize, Serialize};

/// Which features a model reads. Stored in the model file, so a model scores text the way it
/// was trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// The table has `2^bits` buckets.
    pub bits: u8,
    /// Shortest character n-gram.
    pub char_min: u8,
    /// Longest character n-gram.
    pub char_max: u8,
    /// Longest word n-gram (1 = unigrams only, 2 = also bigrams).
    pub word_max: u8,
}

impl FeatureSpec {
    /// Table sizes a model may use: big enough to matter, small enough for a sandbox.
    pub const BITS: std::ops::RangeInclusive<u8> = 10..=22;
    /// Longest n-gram either family may use.
    pub const MAX_N: u8 = 8;

    /// Buckets in the table.
    pub fn buckets(&self) -> usize {
        1usize << self.bits
    }

    /// Whether the spec is one a model may use.
    pub fn is_valid(&self) -> bool {
        Self::BITS.contains(&self.bits)
            && (1..=self.char_max).contains(&self.char_min)
            && self.char_max <= Self::MAX_N
            && (1..=Self::MAX_N).contains(&self.word_max)
    }
}

impl Default for FeatureSpec {
    fn default() -> Self {
        FeatureSpec {
            bits: 18,
            char_min: 2,
            char_max: 5,
            word_max: 2,
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Separates the word family from the character family, so "ab" the word and "ab" the bigram of
/// characters land in different buckets.
const WORD_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

fn fnv_step(hash: u64, byte: u8) -> u64 {
    (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
}

/// The bucket of a 64-bit hash: the top bits after a final mix, which FNV's low bits need.
fn bucket(hash: u64, bits: u8) -> u32 {
    let mixed = (hash ^ (hash >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let kept = mixed
        .checked_shr(64u32.saturating_sub(u32::from(bits)))
        .unwrap_or(0);
    // At most `FeatureSpec::BITS` bits are kept, so the value fits.
    u32::try_from(kept).unwrap_or(u32::MAX)
}

/// Occurrences of each bucket in one text, in the order first seen, so sums over them run in
/// the same order on every platform.
#[derive(Debug, Default, Clone)]
pub struct FeatureCounts {
    /// Open addressing, one word a slot: `bucket + 1` in the high half and the count in the low
    /// half; 0 when empty.
    slots: Vec<u64>,
    /// Slots in the order their buckets were first seen.
    order: Vec<u32>,
}

impl FeatureCounts {
    /// Counts the features of `text`, replacing what was counted before.
    pub fn count(&mut self, text: &str, spec: &FeatureSpec) {
        self.clear();
        for_each_feature(text, spec, |bucket| self.add(bucket));
    }

    /// Distinct buckets seen.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Each bucket seen and how often, in the order first seen.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.order.iter().filter_map(|&slot| {
            let entry = *self.slots.get(slot as usize)?;
            let key = u32::try_from(entry >> 32).ok()?.checked_sub(1)?;
            Some((key, entry as u32))
        })
    }

    fn clear(&mut self) {
        for &slot in &self.order {
            if let Some(entry) = self.slots.get_mut(slot as usize) {
                *entry = 0;
            }
        }
        self.order.clear();
    }

    fn add(&mut self, bucket: u32) {
        // Half full at most, so probes stay short.
        if (self.order.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let key = u64::from(bucket) + 1;
        // Buckets are already the top bits of a mixed hash: their low bits spread well.
        let mut slot = bucket as usize & mask;
        while let Some(entry) = self.slots.get_mut(slot) {
            if *entry == 0 {
                *entry = (key << 32) | 1;
                self.order.push(slot as u32);
                return;
            }
            if *entry >> 32 == key {
                if *entry & 0xffff_ffff != 0xffff_ffff {
                    *entry += 1;
                }
                return;
            }
            slot = (slot + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let seen: Vec<u64> = self
            .order
            .iter()
            .filter_map(|&slot| self.slots.get(slot as usize).copied())
            .collect();
        let size = (self.slots.len() * 2).max(1024);
        self.slots = vec![0; size];
        self.order.clear();
        let mask = size - 1;
        for entry in seen {
            let mut slot = ((entry >> 32) - 1) as usize & mask;
            while self.slots.get(slot).is_some_and(|e| *e != 0) {
                slot = (slot + 1) & mask;
            }
            if let Some(e) = self.slots.get_mut(slot) {
                *e = entry;
                self.order.push(slot as u32);
            }
        }
    }
}

/// Calls `emit` with the bucket of every feature occurrence in `text`, in a fixed order: token
/// by token, its character n-grams and then the words it ends.
///
/// Characters are hashed as code points (FNV-1a over 32-bit values), in one pass over the text.
pub fn for_each_feature(text: &str, spec: &FeatureSpec, mut emit: impl FnMut(u32)) {
    let mut token = Token::default();
    let mut words = WordChain::new(usize::from(spec.word_max));
    let bits = spec.bits;
    let mut flush = |token: &mut Token, words: &mut WordChain| {
        if token.codes.is_empty() {
            return;
        }
        token.codes.push(SPACE);
        token.alnum.push(false);
        token.char_ngrams(spec, &mut |h| emit(bucket(h, bits)));
        token.words(words, &mut |h| emit(bucket(h, bits)));
        token.codes.clear();
        token.alnum.clear();
    };
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        let (code, alnum, space, len) = if byte.is_ascii() {
            (
                u32::from(byte),
                byte.is_ascii_alphanumeric(),
                byte.is_ascii_whitespace() || byte == 0x0b,
                1,
            )
        } else {
            let c = text.get(at..).and_then(|t| t.chars().next()).unwrap_or(' ');
            (
                u32::from(c),
                c.is_alphanumeric(),
                c.is_whitespace(),
                c.len_utf8(),
            )
        };
        at += len;
        if space {
            flush(&mut token, &mut words);
        } else {
            if token.codes.is_empty() {
                token.codes.push(SPACE);
                token.alnum.push(false);
            }
            token.codes.push(code);
            token.alnum.push(alnum);
        }
    }
    flush(&mut token, &mut words);
}

/// One whitespace-separated token, as code points, padded with a space on both sides.
#[derive(Default)]
struct Token {
    codes: Vec<u32>,
    alnum: Vec<bool>,
}

const SPACE: u32 = b' ' as u32;

fn fnv_code(hash: u64, code: u32) -> u64 {
    (hash ^ u64::from(code)).wrapping_mul(FNV_PRIME)
}

impl Token {
    /// Character n-grams of the padded token.
    fn char_ngrams(&self, spec: &FeatureSpec, emit: &mut impl FnMut(u64)) {
        let min = spec.char_min.into();
        let max = spec.char_max.into();
        let codes = &self.codes;
        for first in 0..codes.len() {
            let mut hash = FNV_OFFSET;
            for (n, &code) in codes
                .get(first..)
                .unwrap_or_default()
                .iter()
                .take(max)
                .enumerate()
            {
                hash = fnv_code(hash, code);
                if n + 1 >= min {
                    emit(hash);
                }
            }
        }
    }

    /// The words in the token (runs of two or more letters or digits), chained to the words
    /// before them for n-grams.
    fn words(&self, chain: &mut WordChain, emit: &mut impl FnMut(u64)) {
        let mut start = None;
        for i in 0..=self.codes.len() {
            let alnum = self.alnum.get(i).copied().unwrap_or(false);
            match (alnum, start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    start = None;
                    if i - s >= 2 {
                        let hash = self
                            .codes
                            .get(s..i)
                            .unwrap_or_default()
                            .iter()
                            .fold(FNV_OFFSET ^ WORD_SEED, |h, &c| fnv_code(h, c));
                        chain.push(hash, emit);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The hashes of the last words, for word n-grams up to `max`.
struct WordChain {
    max: usize,
    recent: Vec<u64>,
}

impl WordChain {
    fn new(max: usize) -> Self {
        WordChain {
            max,
            recent: Vec::with_capacity(max),
        }
    }

    fn push(&mut self, hash: u64, emit: &mut impl FnMut(u64)) {
        emit(hash);
        // Each longer n-gram ends at this word and starts further back.
        let mut combined = hash;
        for previous in self.recent.iter().rev() {
            combined = fnv_step(combined.rotate_left(17) ^ previous, b' ');
            emit(combined);
        }
        if self.max > 1 {
            if self.recent.len() + 1 >= self.max {
                self.recent.remove(0);
            }
            self.recent.push(hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(text: &str, spec: &FeatureSpec) -> Vec<u32> {
        let mut out = Vec::new();
        for_each_feature(text, spec, |b| out.push(b));
        out
    }

    #[test]
    fn counts_follow_the_definition() {
        let spec = FeatureSpec::default();
        // " ab " has 4 characters: 3 bigrams, 2 trigrams, 1 four-gram; one word, no bigram.
        assert_eq!(features("ab", &spec).len(), 3 + 2 + 1 + 1);
        // Two tokens of " ab " plus 2 words and 1 word bigram.
        assert_eq!(features("ab ab", &spec).len(), 2 * 6 + 2 + 1);
        // One-letter words are not words, but they are characters.
        assert_eq!(features("a", &spec).len(), 2 + 1);
        assert!(features("", &spec).is_empty());
        assert!(features(" \n\t ", &spec).is_empty());
    }

    #[test]
    fn multibyte_characters_count_as_one() {
        let spec = FeatureSpec::default();
        // " 忽略 " is 4 characters, like " ab ".
        assert_eq!(features("忽略", &spec).len(), 7);
    }

    #[test]
    fn buckets_stay_in_the_table_and_words_differ_from_characters() {
        let spec = FeatureSpec {
            bits: 10,
            ..FeatureSpec::default()
        };
        let all = features("ignore all previous instructions 忽略 ab", &spec);
        assert!(all.iter().all(|&b| (b as usize) < spec.buckets()));
        // The same text as word and as characters hashes apart.
        let wide = FeatureSpec {
            bits: 22,
            ..FeatureSpec::default()
        };
        let ab = features("ab", &wide);
        let (word, characters) = ab.split_last().expect("features");
        assert!(!characters.is_empty() && !characters.contains(word));
    }

    #[test]
    fn word_order_matters_for_bigrams_only() {
        let spec = FeatureSpec {
            bits: 22,
            ..FeatureSpec::default()
        };
        let mut a = features("ignore rules", &spec);
        let mut b = features("rules ignore", &spec);
        assert_ne!(a.last(), b.last());
        a.pop();
        b.pop();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
    }

    #[test]
    fn counts_are_per_bucket_in_first_seen_order() {
        let spec = FeatureSpec::default();
        let mut counts = FeatureCounts::default();
        counts.count("ab ab", &spec);
        let all = features("ab ab", &spec);
        assert_eq!(
            counts.iter().map(|(_, c)| c as usize).sum::<usize>(),
            all.len()
        );
        let mut first_seen = Vec::new();
        for b in &all {
            if !first_seen.contains(b) {
                first_seen.push(*b);
            }
        }
        assert_eq!(
            counts.iter().map(|(b, _)| b).collect::<Vec<_>>(),
            first_seen
        );
        // Counting again forgets the last text, across growth too.
        let long = "word ".repeat(5000) + "other";
        counts.count(&long, &spec);
        let total: usize = counts.iter().map(|(_, c)| c as usize).sum();
        assert_eq!(total, features(&long, &spec).len());
        counts.count("", &spec);
        assert!(counts.is_empty());
    }

    #[test]
    fn specs_are_checked() {
        assert!(FeatureSpec::default().is_valid());
        for bad in [
            FeatureSpec {
                bits: 30,
                ..FeatureSpec::default()
            },
            FeatureSpec {
                char_min: 0,
                ..FeatureSpec::default()
            },
            FeatureSpec {
                char_min: 6,
                char_max: 5,
                ..FeatureSpec::default()
            },
            FeatureSpec {
                word_max: 0,
                ..FeatureSpec::default()
            },
        ] {
            assert!(!bad.is_valid(), "{bad:?}");
        }
    }
}

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
    /// Open addressing: `bucket + 1` per slot, 0 when empty.
    keys: Vec<u32>,
    counts: Vec<u32>,
    /// Slots in the order their buckets were first seen.
    order: Vec<u32>,
    /// Occurrences counted, repeats included.
    total: usize,
}

impl FeatureCounts {
    /// Counts the features of `text`, replacing what was counted before.
    pub fn count(&mut self, text: &str, spec: &FeatureSpec) {
        self.clear();
        for_each_feature(text, spec, |bucket| self.add(bucket));
    }

    /// Occurrences counted, repeats included: how much evidence the text holds.
    pub fn total(&self) -> usize {
        self.total
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
            let slot = slot as usize;
            let key = self.keys.get(slot)?.checked_sub(1)?;
            Some((key, *self.counts.get(slot)?))
        })
    }

    fn clear(&mut self) {
        for &slot in &self.order {
            if let Some(key) = self.keys.get_mut(slot as usize) {
                *key = 0;
            }
        }
        self.order.clear();
        self.total = 0;
    }

    fn add(&mut self, bucket: u32) {
        self.total += 1;
        // Half full at most, so probes stay short.
        if (self.order.len() + 1) * 2 > self.keys.len() {
            self.grow();
        }
        let mask = self.keys.len() - 1;
        let key = bucket.wrapping_add(1);
        let mut slot = (bucket.wrapping_mul(0x9e37_79b1) as usize) & mask;
        loop {
            match self.keys.get(slot).copied() {
                Some(0) => {
                    if let (Some(k), Some(c)) = (self.keys.get_mut(slot), self.counts.get_mut(slot))
                    {
                        *k = key;
                        *c = 1;
                    }
                    self.order.push(slot as u32);
                    return;
                }
                Some(k) if k == key => {
                    if let Some(c) = self.counts.get_mut(slot) {
                        *c = c.saturating_add(1);
                    }
                    return;
                }
                Some(_) => slot = (slot + 1) & mask,
                None => return,
            }
        }
    }

    fn grow(&mut self) {
        let seen: Vec<(u32, u32)> = self.iter().collect();
        let size = (self.keys.len() * 2).max(1024);
        self.keys = vec![0; size];
        self.counts = vec![0; size];
        self.order.clear();
        let total = self.total;
        for (bucket, count) in seen {
            self.add(bucket);
            if let Some(&slot) = self.order.last() {
                if let Some(c) = self.counts.get_mut(slot as usize) {
                    *c = count;
                }
            }
        }
        self.total = total;
    }
}

/// Calls `emit` with the bucket of every feature occurrence in `text`, in a fixed order.
pub fn for_each_feature(text: &str, spec: &FeatureSpec, mut emit: impl FnMut(u32)) {
    let bits = spec.bits;
    char_ngrams(text, spec, &mut |h| emit(bucket(h, bits)));
    word_ngrams(text, spec, &mut |h| emit(bucket(h, bits)));
}

/// Character n-grams of each token padded with spaces, `n` counted in characters.
fn char_ngrams(text: &str, spec: &FeatureSpec, emit: &mut impl FnMut(u64)) {
    let min = usize::from(spec.char_min);
    let max = usize::from(spec.char_max);
    // Byte offsets where each character of the padded token starts, and its end.
    let mut starts: Vec<usize> = Vec::with_capacity(64);
    let mut padded: Vec<u8> = Vec::with_capacity(64);
    for token in text.split(|c: char| c.is_whitespace()) {
        if token.is_empty() {
            continue;
        }
        padded.clear();
        starts.clear();
        padded.push(b' ');
        padded.extend_from_slice(token.as_bytes());
        padded.push(b' ');
        starts.push(0);
        starts.extend(token.char_indices().map(|(i, _)| i + 1));
        starts.push(token.len() + 1);
        let chars = starts.len();
        starts.push(padded.len());
        for first in 0..chars {
            let mut hash = FNV_OFFSET;
            let mut at = starts.get(first).copied().unwrap_or(padded.len());
            for n in 1..=max.min(chars - first) {
                let end = starts.get(first + n).copied().unwrap_or(padded.len());
                for &byte in padded.get(at..end).unwrap_or_default() {
                    hash = fnv_step(hash, byte);
                }
                at = end;
                if n >= min {
                    emit(hash);
                }
            }
        }
    }
}

/// Word n-grams: a word is a run of two or more letters or digits.
fn word_ngrams(text: &str, spec: &FeatureSpec, emit: &mut impl FnMut(u64)) {
    let max = usize::from(spec.word_max);
    // The hashes of the last `max - 1` words, newest last.
    let mut recent: Vec<u64> = Vec::with_capacity(max);
    let words = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().nth(1).is_some());
    for word in words {
        let hash = word.bytes().fold(FNV_OFFSET ^ WORD_SEED, fnv_step);
        emit(hash);
        // Each longer n-gram ends at this word and starts further back.
        let mut combined = hash;
        for previous in recent.iter().rev() {
            combined = fnv_step(combined.rotate_left(17) ^ previous, b' ');
            emit(combined);
        }
        if max > 1 {
            if recent.len() + 1 >= max {
                recent.remove(0);
            }
            recent.push(hash);
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
        let word = ab.last().copied();
        assert!(ab.iter().rev().skip(1).all(|&b| Some(b) != word));
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

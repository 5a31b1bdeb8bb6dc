//! Text handling: normalization with an offset map, decoders, and span arithmetic.

pub mod decode;
pub mod normalize;

pub use normalize::{normalize, Normalized};

/// Longest excerpt in a finding, in bytes of the original text.
pub const MAX_EXCERPT_BYTES: usize = 200;

/// UTF-16 offsets of byte offsets into `text`, in one pass over the text.
///
/// `byte_offsets` may be in any order; offsets past the end or inside a character map to the
/// offset of the next character boundary.
pub fn utf16_offsets(text: &str, byte_offsets: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..byte_offsets.len()).collect();
    order.sort_by_key(|&i| byte_offsets.get(i).copied().unwrap_or(0));
    let mut result = vec![0; byte_offsets.len()];
    let mut chars = text.char_indices().peekable();
    let mut utf16 = 0;
    for i in order {
        let target = byte_offsets.get(i).copied().unwrap_or(0);
        while let Some(&(at, c)) = chars.peek() {
            if at >= target {
                break;
            }
            utf16 += c.len_utf16();
            chars.next();
        }
        if let Some(slot) = result.get_mut(i) {
            *slot = utf16;
        }
    }
    result
}

/// The largest character boundary of `text` at or before `at`.
pub fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The smallest character boundary of `text` at or after `at`.
pub fn ceil_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// The original text of a span, cut at a character boundary if longer than the limit.
pub fn excerpt(text: &str, start: usize, end: usize) -> String {
    let Some(span) = text.get(start..end) else {
        return String::new();
    };
    if span.len() <= MAX_EXCERPT_BYTES {
        return span.to_string();
    }
    let mut cut = MAX_EXCERPT_BYTES;
    while !span.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut short = span.get(..cut).unwrap_or_default().to_string();
    short.push('…');
    short
}

/// ROT13 of the ASCII letters; everything else, and every byte offset, unchanged.
pub fn rot13(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'a'..='m' | 'A'..='M' => char::from(c as u8 + 13),
            'n'..='z' | 'N'..='Z' => char::from(c as u8 - 13),
            _ => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_offsets_count_surrogate_pairs() {
        let text = "a😀b é";
        // bytes: a=0, 😀=1..5, b=5, space=6, é=7..9
        assert_eq!(utf16_offsets(text, &[9, 0, 5, 1, 7]), vec![6, 0, 3, 1, 5]);
    }

    #[test]
    fn excerpt_cuts_on_char_boundary() {
        let long = "é".repeat(300);
        let e = excerpt(&long, 0, long.len());
        assert!(e.ends_with('…'));
        assert!(e.len() <= MAX_EXCERPT_BYTES + '…'.len_utf8());
        assert_eq!(excerpt("abc", 2, 1), "");
    }
}

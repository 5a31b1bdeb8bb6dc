//! Every decoder on any text: payload ranges lie inside the text on character boundaries, and
//! one budget bounds what all of them decode together.
#![no_main]

use guard_core::text::decode::{self, Budget, Decoded};
use libfuzzer_sys::fuzz_target;

fn check(text: &str, found: &[Decoded]) -> usize {
    for d in found {
        assert!(d.range.start < d.range.end && d.range.end <= text.len());
        assert!(text.is_char_boundary(d.range.start) && text.is_char_boundary(d.range.end));
    }
    found.iter().map(|d| d.text.len()).sum()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut budget = Budget::default();
    let mut decoded = 0;
    decoded += check(text, &decode::base64_payloads(text, &mut budget));
    decoded += check(text, &decode::hex_payloads(text, &mut budget));
    decoded += check(text, &decode::percent_payloads(text, &mut budget));
    decoded += check(text, &decode::selector_payloads(text, &mut budget));
    decoded += check(text, &decode::escape_payloads(text, &mut budget));
    assert!(decoded <= decode::MAX_DECODED_BYTES);
    check(text, &decode::tag_payloads(text));
    check(text, &decode::split_payloads(text));
    let _ = guard_core::text::rot13(text);
});

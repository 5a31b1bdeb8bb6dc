//! The whole assessment on any text and any request JSON: never a panic, and every finding's
//! span lies on character boundaries of its segment, in bytes and in UTF-16 units.
#![no_main]

use std::sync::OnceLock;

use guard_core::{AssessmentInput, Guard, Policy};
use libfuzzer_sys::fuzz_target;

fn guard() -> &'static Guard {
    static GUARD: OnceLock<Guard> = OnceLock::new();
    GUARD.get_or_init(|| Guard::new(Policy::default()).expect("the default policy compiles"))
}

fuzz_target!(|data: &[u8]| {
    let _ = guard().assess_json(&String::from_utf8_lossy(data));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let output = guard().assess(&AssessmentInput::from_text(text, "2026-12-03T12:00:00Z"));
    let assessment = output.assessment;
    assert!((0.0..=1.0).contains(&assessment.score));
    for f in &assessment.findings {
        let span = f.span;
        assert!(span.byte_start <= span.byte_end && span.byte_end <= text.len());
        assert!(text.is_char_boundary(span.byte_start) && text.is_char_boundary(span.byte_end));
        let utf16 = |at: usize| text[..at].encode_utf16().count();
        assert_eq!(span.utf16_start, utf16(span.byte_start));
        assert_eq!(span.utf16_end, utf16(span.byte_end));
    }
});

//! The normalizer on any text: every range of the folded view maps back to a range of the
//! original that lies on character boundaries, and the folded view is never much longer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let folded = guard_core::text::normalize(text);
    let view = folded.text();
    // NFKC can expand a character, but only by a bounded factor.
    assert!(
        view.len() <= text.len() * 18 + 4,
        "{} -> {}",
        text.len(),
        view.len()
    );
    let boundaries: Vec<usize> = view
        .char_indices()
        .map(|(at, _)| at)
        .chain([view.len()])
        .collect();
    for (i, &start) in boundaries.iter().enumerate().step_by(7) {
        for &end in boundaries.iter().skip(i).step_by(5).take(8) {
            let range = folded.original_range(start..end);
            assert!(range.start <= range.end && range.end <= text.len());
            assert!(text.is_char_boundary(range.start) && text.is_char_boundary(range.end));
            let _ = folded.obfuscations_in(start..end);
        }
    }
});

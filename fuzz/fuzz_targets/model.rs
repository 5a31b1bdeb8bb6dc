//! Any bytes as a model file: refused with a typed error or read back to the same bytes; a model
//! that loads scores any text to a finite logit within its bounds, in a window of that text.
#![no_main]

use guard_core::model::{FeatureCounts, Model, MAX_LOGIT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first bytes pick a text to score; the rest are the model file.
    let (text, file) = data.split_at(data.len().min(64));
    if let Ok(model) = Model::from_bytes(file) {
        assert_eq!(model.to_bytes().as_deref().ok(), Some(file));
        let text = String::from_utf8_lossy(text);
        let score = model.score(&text, &mut FeatureCounts::default());
        assert!(score.logit.is_finite() && score.logit.abs() <= MAX_LOGIT);
        assert!(score.window.end <= text.len() && text.is_char_boundary(score.window.start));
    }
    // Real model bytes with damage are refused, never misread: the checksum covers them all.
    if let Ok(builtin) = Model::builtin() {
        if let Ok(mut bytes) = builtin.to_bytes() {
            if let (Some(&at), Some(&flip)) = (data.first(), data.get(1)) {
                let at = usize::from(at) * bytes.len() / 256;
                if flip != 0 {
                    if let Some(b) = bytes.get_mut(at) {
                        *b ^= flip;
                    }
                    assert!(Model::from_bytes(&bytes).is_err());
                }
            }
        }
    }
});

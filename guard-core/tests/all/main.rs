//! guard-core's integration tests: one binary, one module per concern.

// Tests fail loudly: unwrapping and indexing are how a test says what it expects.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod behaviour;
mod cases;
mod decoding;
mod hostile;
mod keyring;
mod keywords;
mod languages;
mod model;
mod obfuscation;
mod properties;
mod provenance;
mod segments;
mod templates;
mod transparency;

use std::path::PathBuf;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The project's shared data (`../shared` beside the clone, or `$SIGIL_SHARED_DIR`).
pub fn shared() -> PathBuf {
    let dir = std::env::var_os("SIGIL_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared"));
    assert!(
        dir.join("cases/prompts.jsonl").is_file(),
        "shared data not found at {}: clone next to `shared/` or set SIGIL_SHARED_DIR",
        dir.display()
    );
    dir
}

/// A fixed time for assessments.
pub const NOW: &str = "2026-12-03T12:00:00Z";

/// `text` in Unicode tag characters: invisible, and read by a model.
pub fn hide_in_tags(text: &str) -> String {
    text.chars()
        .map(|c| char::from_u32(0xE0000 + c as u32).unwrap())
        .collect()
}

/// The bytes of `text` as variation selectors: VS1 to VS16 for 0 to 15, VS17 to VS256 above.
pub fn hide_in_selectors(text: &str) -> String {
    text.bytes()
        .map(|b| {
            let code = if b < 16 {
                0xFE00 + u32::from(b)
            } else {
                0xE0100 + u32::from(b) - 16
            };
            char::from_u32(code).unwrap()
        })
        .collect()
}

//! guard-core's integration tests: one binary, one module per concern.

// Tests fail loudly: unwrapping and indexing are how a test says what it expects.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod cases;
mod hostile;
mod properties;
mod provenance;

use std::path::PathBuf;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fixed time for assessments.
pub const NOW: &str = "2026-12-03T12:00:00Z";

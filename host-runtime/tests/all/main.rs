//! host-runtime's integration tests: the engine under wasmtime, the HTTP service, the binary.

// Tests fail loudly: unwrapping and indexing are how a test says what it expects.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod audit;
mod behaviour;
mod cli;
mod config;
mod deploy;
mod engine;
mod incidents;
mod registry;
mod service;
mod service_api;
mod service_e2e;
mod signer_kms;
mod signer_local;
mod signer_pkcs11;
mod signing;
mod softhsm;
mod telemetry;
mod validate;
mod vault;
mod vault_kms;
mod vault_pkcs11;

use std::path::PathBuf;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fixed time for assessments.
pub const NOW: &str = "2026-12-03T12:00:00Z";

//! The host side of Sigil: runs the guard module under wasmtime and does what a sandbox cannot,
//! signing templates and serving HTTP.
//!
//! Every decision (assessment, template verification) is made inside the wasm guard through
//! [`engine::GuardEngine`]; this crate reads files, holds keys and talks to the network. It also
//! measures the guard: [`metrics`] (pure functions over scored rows) and [`plot`] serve
//! `sigil eval`. It keeps the tamper-evident [`audit`] log, whose proofs guard-core checks, the template
//! [`registry`] that records into it, and the behaviour [`store`] of users' profiles and
//! detection records (SQLite or PostgreSQL), whose contents it never interprets. The service reads
//! its [`config`] from TOML and the environment and reports through [`telemetry`] (Prometheus and
//! CloudWatch EMF metrics, structured logs).

pub mod audit;
pub mod cli;
pub mod config;
pub mod engine;
pub mod incidents;
mod kms;
pub mod metrics;
mod pkcs11_token;
pub mod plot;
pub mod registry;
pub mod service;
pub mod signer;
mod sqlite;
pub mod store;
pub mod telemetry;
pub mod template;
pub mod train;
pub mod validate;
pub mod vault;

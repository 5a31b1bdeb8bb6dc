//! Medians of the audit log's operations on a log of 100,000 entries:
//! `cargo bench --package host-runtime --bench audit`.

// A benchmark fails loudly: unwrapping and indexing are how it says what it expects.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod timing;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use guard_core::transparency::{
    leaf_hash, verify_checkpoint, verify_consistency, verify_inclusion, EntryKind,
};
use guard_core::{PinnedKey, Scheme};
use host_runtime::audit::{AuditLog, NewEntry};
use host_runtime::signer::{LocalSigner, Signer};

use timing::{median, show};

const SIZE: u64 = 100_000;

fn entry(i: u64) -> NewEntry {
    let mut digests = BTreeMap::new();
    digests.insert(
        "record".to_string(),
        guard_core::provenance::sha256_hex(&i.to_be_bytes()),
    );
    NewEntry {
        time: "2026-12-03T12:00:00Z".into(),
        kind: EntryKind::Refusal,
        actor: "role:scanner".into(),
        subject: Some(format!("support/answer@{}", i % 50 + 1)),
        digests,
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let signer = LocalSigner::generate(3072).unwrap();
    let mut log = AuditLog::open(&db).unwrap();
    let t = Instant::now();
    for chunk in 0..SIZE / 10_000 {
        log.append_batch((chunk * 10_000..(chunk + 1) * 10_000).map(entry))
            .unwrap();
    }
    let batch = t.elapsed() / SIZE as u32;
    log.sign_checkpoint(&signer).unwrap();
    println!("| operation (log of {SIZE} entries, SQLite WAL, synchronous=FULL) | median |");
    println!("|---|---|");
    show("append in a batch of 10,000, per entry", batch);
    let mut next = SIZE;
    show(
        "append, one durable transaction",
        median(200, |_| {
            log.append(entry(next)).unwrap();
            next += 1;
        }),
    );
    show(
        "append and sign its checkpoint (local RSA-3072)",
        median(100, |_| {
            log.append_and_checkpoint(entry(next), &signer).unwrap();
            next += 1;
        }),
    );
    let size = log.size().unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut pick = |below: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % below
    };
    let indexes: Vec<u64> = (0..1000).map(|_| pick(size)).collect();
    show(
        "root from stored nodes",
        median(1000, |_| {
            black_box(log.root(size).unwrap());
        }),
    );
    show(
        "inclusion proof",
        median(1000, |i| {
            black_box(log.inclusion_proof(indexes[i], size).unwrap());
        }),
    );
    show(
        "consistency proof",
        median(1000, |i| {
            black_box(log.consistency_proof(indexes[i].max(1), size).unwrap());
        }),
    );
    let root = log.root(size).unwrap();
    let proofs: Vec<_> = indexes
        .iter()
        .map(|&i| {
            (
                i,
                leaf_hash(&log.entry_bytes(i).unwrap()),
                log.inclusion_proof(i, size).unwrap(),
            )
        })
        .collect();
    show(
        "verify an inclusion proof (guard-core, native)",
        median(1000, |i| {
            let (index, leaf, proof) = &proofs[i];
            verify_inclusion(*index, size, leaf, proof, &root).unwrap();
        }),
    );
    let old = log.root(indexes[0].max(1)).unwrap();
    let consistency = log.consistency_proof(indexes[0].max(1), size).unwrap();
    show(
        "verify a consistency proof (guard-core, native)",
        median(1000, |_| {
            verify_consistency(indexes[0].max(1), size, &consistency, &old, &root).unwrap();
        }),
    );
    let signed = log.sign_checkpoint(&signer).unwrap();
    let key = PinnedKey::from_spki(signer.public_key_der(), Scheme::RsassaPkcs1v15Sha256).unwrap();
    let verifier = log.verifier(key).unwrap();
    show(
        "verify a signed checkpoint (RSA-3072)",
        median(200, |_| {
            verify_checkpoint(signed.note.as_bytes(), &verifier).unwrap();
        }),
    );
    let t = Instant::now();
    let report = log.verify(&verifier, Some(signed.note.as_bytes())).unwrap();
    let whole = t.elapsed();
    assert!(report.intact());
    println!(
        "| `verify` of the whole log, per entry ({} entries in {:.2} s) | {:.1} µs |",
        report.entries,
        whole.as_secs_f64(),
        whole.as_secs_f64() * 1e6 / report.entries as f64
    );
}

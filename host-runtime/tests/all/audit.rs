//! The audit log: proofs through guard-core's verifier, every kind of tampering found by
//! `verify` and by `sigil audit verify`'s exit code, a crash in the middle of appends, and
//! hostile files.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use guard_core::transparency::{
    inclusion_proof, leaf_hash, verify_checkpoint, verify_consistency, verify_inclusion, EntryKind,
    MemoryTree, NoteVerifier, OfflineBundle,
};
use guard_core::{Envelope, PinnedKey, Scheme};
use host_runtime::audit::{pseudonym, AuditError, AuditLog, NewEntry, Problem};
use host_runtime::signer::{LocalSigner, Signer};
use rusqlite::params;

use crate::workspace;

struct Fixture {
    _dir: tempfile::TempDir,
    data: PathBuf,
    db: PathBuf,
    signer: LocalSigner,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (signer, _) =
            LocalSigner::generate_files(&data.join("keys"), "signing-key", 2048, false).unwrap();
        let db = data.join("sigil.db");
        Fixture {
            _dir: dir,
            data,
            db,
            signer,
        }
    }

    fn log(&self) -> AuditLog {
        AuditLog::open(&self.db).unwrap()
    }

    fn verifier(&self) -> NoteVerifier {
        let key = PinnedKey::from_spki(self.signer.public_key_der(), Scheme::RsassaPkcs1v15Sha256)
            .unwrap();
        self.log().verifier(key).unwrap()
    }

    /// `n` entries, each appended with its checkpoint.
    fn with_entries(n: u64) -> Self {
        let f = Fixture::new();
        let mut log = f.log();
        for i in 0..n {
            log.append_and_checkpoint(entry(i), &f.signer).unwrap();
        }
        f
    }

    fn raw(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db).unwrap()
    }

    fn problems(&self, external: Option<&[u8]>) -> Vec<Problem> {
        self.log()
            .verify(&self.verifier(), external)
            .unwrap()
            .problems
    }

    fn cli_verify(&self, extra: &[&str]) -> Output {
        let mut args = vec!["audit", "verify", "--data-dir", self.data.to_str().unwrap()];
        args.extend_from_slice(extra);
        sigil(&args)
    }

    fn note_at(&self, size: u64) -> String {
        self.log().checkpoint_at(size).unwrap().unwrap().note
    }
}

fn sigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn entry(i: u64) -> NewEntry {
    let kinds = [
        EntryKind::TemplatePublished,
        EntryKind::KeyRotated,
        EntryKind::Approval,
        EntryKind::Refusal,
    ];
    let mut digests = BTreeMap::new();
    digests.insert(
        "record".to_string(),
        guard_core::provenance::sha256_hex(&i.to_be_bytes()),
    );
    NewEntry {
        time: format!("2026-12-03T12:{:02}:{:02}Z", (i / 60) % 60, i % 60),
        kind: kinds[(i % 4) as usize],
        actor: if i % 3 == 0 {
            "role:publisher".into()
        } else {
            pseudonym(b"per-user key", &format!("user-{i}@example.com"))
        },
        subject: Some(format!("support/answer@{}", i + 1)),
        digests,
    }
}

fn assert_tampered(f: &Fixture, external: Option<&str>, expect: impl Fn(&Problem) -> bool) {
    let problems = f.problems(external.map(str::as_bytes));
    assert!(
        problems.iter().any(&expect),
        "expected problem not found in {problems:?}"
    );
    let out = match external {
        Some(note) => {
            let path = f.data.join("kept.note");
            std::fs::write(&path, note).unwrap();
            f.cli_verify(&["--checkpoint", path.to_str().unwrap()])
        }
        None => f.cli_verify(&[]),
    };
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("log TAMPERED"));
}

#[test]
fn appends_and_proofs_round_trip_through_the_guard_core_verifier() {
    let f = Fixture::new();
    let mut log = f.log();
    let mut leaves = Vec::new();
    let mut notes = BTreeMap::new();
    for i in 0..40u64 {
        let appended = if i % 3 == 0 {
            let (a, signed) = log.append_and_checkpoint(entry(i), &f.signer).unwrap();
            notes.insert(a.tree_size, signed.note);
            a
        } else {
            // An entry appended alone is signed before anything is appended on top of it.
            let a = log.append(entry(i)).unwrap();
            log.sign_checkpoint(&f.signer).unwrap();
            a
        };
        assert_eq!(appended.seq, i);
        // The leaf is the hash of the stored bytes, which are the entry's one serialization.
        let bytes = log.entry_bytes(i).unwrap();
        assert_eq!(leaf_hash(&bytes), appended.leaf_hash);
        assert_eq!(log.entry(i).unwrap().seq, i);
        leaves.push(appended.leaf_hash);
    }
    let signed = log.sign_checkpoint(&f.signer).unwrap();
    notes.insert(40, signed.note);
    let tree = MemoryTree::from_leaves(leaves.iter().copied());
    let verifier = f.verifier();
    let mut proofs = 0;
    for (&size, note) in &notes {
        let cp = verify_checkpoint(note.as_bytes(), &verifier).unwrap();
        assert_eq!(cp.size, size);
        assert_eq!(cp.root, log.root(size).unwrap());
        assert_eq!(cp.origin, log.origin());
        for index in 0..size {
            let proof = log.inclusion_proof(index, size).unwrap();
            assert_eq!(proof, inclusion_proof(&tree, index, size).unwrap());
            verify_inclusion(index, size, &leaves[index as usize], &proof, &cp.root).unwrap();
            proofs += 1;
        }
        for (&older, older_note) in notes.range(..=size) {
            let old = verify_checkpoint(older_note.as_bytes(), &verifier).unwrap();
            let proof = log.consistency_proof(older, size).unwrap();
            verify_consistency(older, size, &proof, &old.root, &cp.root).unwrap();
            proofs += 1;
        }
    }
    assert!(proofs > 300, "{proofs} proofs checked");
    assert!(log.inclusion_proof(40, 40).is_err());
    assert!(log.inclusion_proof(0, 41).is_err());
    let report = log.verify(&verifier, None).unwrap();
    assert!(report.intact(), "{:?}", report.problems);
    assert_eq!((report.entries, report.latest_checkpoint), (40, Some(40)));
    // Reopened, it is the same log.
    drop(log);
    let again = f.log();
    assert_eq!(again.size().unwrap(), 40);
    assert_eq!(again.root(40).unwrap(), tree.root());
}

#[test]
fn old_checkpoints_are_kept_sparsely_and_batches_are_atomic() {
    let f = Fixture::with_entries(40);
    let sizes: Vec<u64> = (0..=40)
        .filter(|&s| f.log().checkpoint_at(s).unwrap().is_some())
        .collect();
    assert_eq!(sizes, (24..=40).collect::<Vec<_>>());
    let mut log = f.log();
    let appended = log.append_batch((40..50).map(entry)).unwrap();
    assert_eq!(appended.last().unwrap().seq, 49);
    // One invalid entry and none of the batch is kept.
    let mut bad = entry(50);
    bad.actor = "alice@example.com".into();
    assert!(log.append_batch([entry(50), bad]).is_err());
    assert_eq!(log.size().unwrap(), 50);
    log.sign_checkpoint(&f.signer).unwrap();
    let report = log.verify(&f.verifier(), None).unwrap();
    assert!(report.intact(), "{:?}", report.problems);
    assert_eq!(report.latest_checkpoint, Some(50));
}

#[test]
fn an_offline_bundle_from_the_log_verifies_in_guard_core() {
    let f = Fixture::with_entries(6);
    let envelope_bytes =
        std::fs::read(workspace().join("tests/vectors/templates/envelope.json")).unwrap();
    let envelope: Envelope = serde_json::from_slice(&envelope_bytes).unwrap();
    let mut log = f.log();
    let published = NewEntry::template_published(&envelope, "role:publisher", crate::NOW).unwrap();
    let (appended, _) = log.append_and_checkpoint(published, &f.signer).unwrap();
    log.append_and_checkpoint(entry(99), &f.signer).unwrap();
    let bundle = log
        .offline_bundle(
            appended.seq,
            &envelope,
            serde_json::json!({"min_version": 1}),
        )
        .unwrap();
    let json = serde_json::to_vec(&bundle).unwrap();
    let logged = OfflineBundle::from_json(&json)
        .unwrap()
        .verify_log(&f.verifier())
        .unwrap();
    assert_eq!(logged.entry().seq, appended.seq);
    assert_eq!(logged.checkpoint().size, 8);
    assert_eq!(logged.entry().subject.as_deref(), Some("demo/support@1"));
    // Not an entry for this envelope.
    assert!(log
        .offline_bundle(2, &envelope, serde_json::Value::Null)
        .is_err());
    // The CLI writes the same bundle.
    let out = sigil(&[
        "audit",
        "bundle",
        "--data-dir",
        f.data.to_str().unwrap(),
        "--index",
        "6",
        "--envelope",
        workspace()
            .join("tests/vectors/templates/envelope.json")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    OfflineBundle::from_json(&out.stdout)
        .unwrap()
        .verify_log(&f.verifier())
        .unwrap();
}

#[test]
fn an_intact_log_verifies_and_the_cli_says_so() {
    let f = Fixture::with_entries(12);
    assert!(f.problems(None).is_empty());
    let out = f.cli_verify(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("log intact"));
    // An earlier checkpoint kept elsewhere is consistent with it.
    let kept = f.note_at(5);
    let path = f.data.join("kept.note");
    std::fs::write(&path, &kept).unwrap();
    let out = f.cli_verify(&["--checkpoint", path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["intact"], true);
    assert_eq!(report["external_checkpoint"], 5);
    // `show`, `proof` and `checkpoint` read it.
    let dir = f.data.to_str().unwrap();
    let show = sigil(&["audit", "show", "--data-dir", dir]);
    assert_eq!(
        text(&show.stdout)
            .lines()
            .filter(|l| l.contains("2026-12-03"))
            .count(),
        12
    );
    let page = sigil(&[
        "audit",
        "show",
        "--data-dir",
        dir,
        "--json",
        "--from",
        "4",
        "--limit",
        "3",
    ]);
    let seqs: Vec<u64> = text(&page.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [4, 5, 6]);
    let proof = sigil(&["audit", "proof", "--data-dir", dir, "--index", "3"]);
    let proof: serde_json::Value = serde_json::from_slice(&proof.stdout).unwrap();
    assert_eq!(proof["tree_size"], 12);
    assert_eq!(proof["inclusion_proof"].as_array().unwrap().len(), 4);
    let cp = sigil(&["audit", "checkpoint", "--data-dir", dir]);
    assert_eq!(text(&cp.stdout), f.note_at(12));
    let consistency = sigil(&["audit", "proof", "--data-dir", dir, "--from", "5"]);
    assert_eq!(consistency.status.code(), Some(0));
}

/// A sequence number rewritten to something that is not one is tampering (exit 1), not an error.
#[test]
fn a_rewritten_sequence_number_is_tampering() {
    for value in ["-1", "2.5", "'x'", "NULL"] {
        let f = Fixture::with_entries(4);
        let conn = f.raw();
        conn.execute(
            &format!("UPDATE audit_entries SET seq = {value} WHERE seq = 2"),
            [],
        )
        .unwrap();
        drop(conn);
        assert_tampered(&f, None, |p| matches!(p, Problem::InvalidRow { .. }));
    }
}

#[test]
fn an_edited_entry_is_detected() {
    let f = Fixture::with_entries(8);
    let conn = f.raw();
    let bytes: Vec<u8> = conn
        .query_row("SELECT entry FROM audit_entries WHERE seq = 3", [], |r| {
            r.get(0)
        })
        .unwrap();
    let edited = text(&bytes).replace("support/answer@4", "support/answer@9");
    assert_ne!(edited.as_bytes(), bytes.as_slice());
    conn.execute(
        "UPDATE audit_entries SET entry = ?1 WHERE seq = 3",
        params![edited.as_bytes()],
    )
    .unwrap();
    drop(conn);
    assert_tampered(&f, None, |p| {
        matches!(p, Problem::LeafHashMismatch { seq: 3 })
    });
    assert_tampered(&f, None, |p| {
        matches!(p, Problem::CheckpointMismatch { size: 8 })
    });
}

#[test]
fn an_edited_entry_with_its_leaf_and_nodes_recomputed_is_still_detected() {
    let f = Fixture::with_entries(8);
    let conn = f.raw();
    let bytes: Vec<u8> = conn
        .query_row("SELECT entry FROM audit_entries WHERE seq = 6", [], |r| {
            r.get(0)
        })
        .unwrap();
    let edited = text(&bytes).replace("approval", "refusal");
    let leaf = leaf_hash(edited.as_bytes());
    conn.execute(
        "UPDATE audit_entries SET entry = ?1, leaf_hash = ?2 WHERE seq = 6",
        params![edited.as_bytes(), leaf.as_slice()],
    )
    .unwrap();
    conn.execute(
        "UPDATE audit_nodes SET hash = ?1 WHERE level = 0 AND idx = 6",
        params![leaf.as_slice()],
    )
    .unwrap();
    drop(conn);
    assert_tampered(&f, None, |p| {
        matches!(p, Problem::CheckpointMismatch { size: 8 })
    });
    assert_tampered(&f, None, |p| matches!(p, Problem::NodesMismatch));
}

#[test]
fn a_corrupted_interior_node_is_detected_though_the_root_is_unchanged() {
    // Nodes that are not on the path to the current root still serve proofs.
    for (level, idx) in [(1, 3), (0, 2), (2, 0)] {
        let f = Fixture::with_entries(12);
        f.raw()
            .execute(
                "UPDATE audit_nodes SET hash = zeroblob(32) WHERE level = ?1 AND idx = ?2",
                params![level, idx],
            )
            .unwrap();
        assert_tampered(&f, None, |p| matches!(p, Problem::NodesMismatch));
    }
    // A node that should not exist, or one missing, is as wrong.
    let f = Fixture::with_entries(12);
    f.raw()
        .execute("DELETE FROM audit_nodes WHERE level = 1 AND idx = 5", [])
        .unwrap();
    assert_tampered(&f, None, |p| matches!(p, Problem::NodesMismatch));
    let f = Fixture::with_entries(12);
    f.raw()
        .execute(
            "INSERT INTO audit_nodes (level, idx, hash) VALUES (3, 1, zeroblob(32))",
            [],
        )
        .unwrap();
    assert_tampered(&f, None, |p| matches!(p, Problem::NodesMismatch));
    // And an untouched log has none of it.
    let f = Fixture::with_entries(12);
    assert!(f.problems(None).is_empty());
}

#[test]
fn two_swapped_rows_are_detected() {
    let f = Fixture::with_entries(8);
    let conn = f.raw();
    let row = |seq: i64| -> (Vec<u8>, Vec<u8>) {
        conn.query_row(
            "SELECT entry, leaf_hash FROM audit_entries WHERE seq = ?1",
            [seq],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    let (a, b) = (row(2), row(5));
    for (seq, (entry, leaf)) in [(2, &b), (5, &a)] {
        conn.execute(
            "UPDATE audit_entries SET entry = ?1, leaf_hash = ?2 WHERE seq = ?3",
            params![entry, leaf, seq],
        )
        .unwrap();
    }
    drop(conn);
    assert_tampered(&f, None, |p| {
        matches!(p, Problem::SequenceMismatch { row: 2, entry: 5 })
    });
    assert_tampered(&f, None, |p| {
        matches!(p, Problem::CheckpointMismatch { size: 8 })
    });
}

#[test]
fn a_deleted_middle_row_is_detected() {
    let f = Fixture::with_entries(8);
    f.raw()
        .execute("DELETE FROM audit_entries WHERE seq = 4", [])
        .unwrap();
    assert_tampered(&f, None, |p| {
        matches!(
            p,
            Problem::Gap {
                expected: 4,
                found: 5
            }
        )
    });
    assert_tampered(&f, None, |p| {
        matches!(p, Problem::CheckpointMismatch { .. })
    });
}

#[test]
fn the_last_two_entries_deleted_are_detected() {
    let f = Fixture::with_entries(8);
    f.raw()
        .execute("DELETE FROM audit_entries WHERE seq >= 6", [])
        .unwrap();
    assert_tampered(&f, None, |p| {
        matches!(
            p,
            Problem::Truncated {
                size: 8,
                entries: 6
            }
        )
    });
}

#[test]
fn the_last_two_entries_deleted_with_their_checkpoints_are_detected_against_a_kept_checkpoint() {
    let f = Fixture::with_entries(8);
    let kept = f.note_at(8);
    let conn = f.raw();
    conn.execute("DELETE FROM audit_entries WHERE seq >= 6", [])
        .unwrap();
    conn.execute("DELETE FROM audit_nodes WHERE (idx + 1) << level > 6", [])
        .unwrap();
    conn.execute("DELETE FROM audit_checkpoints WHERE tree_size > 6", [])
        .unwrap();
    drop(conn);
    // Alone, the log is an intact log of six entries: this is what no verifier can see
    // without a checkpoint kept elsewhere.
    assert!(f.problems(None).is_empty());
    assert_eq!(f.cli_verify(&[]).status.code(), Some(0));
    assert_tampered(&f, Some(&kept), |p| {
        matches!(
            p,
            Problem::Truncated {
                size: 8,
                entries: 6
            }
        )
    });
}

#[test]
fn a_rewritten_tail_signed_again_is_detected_against_a_kept_checkpoint() {
    let f = Fixture::with_entries(8);
    let kept = f.note_at(8);
    let conn = f.raw();
    conn.execute("DELETE FROM audit_entries WHERE seq >= 6", [])
        .unwrap();
    conn.execute("DELETE FROM audit_nodes WHERE (idx + 1) << level > 6", [])
        .unwrap();
    conn.execute("DELETE FROM audit_checkpoints WHERE tree_size > 6", [])
        .unwrap();
    drop(conn);
    // Someone with the signing key writes two other entries and signs them.
    let mut log = f.log();
    log.append_and_checkpoint(entry(100), &f.signer).unwrap();
    log.append_and_checkpoint(entry(101), &f.signer).unwrap();
    drop(log);
    assert!(f.problems(None).is_empty());
    assert_tampered(&f, Some(&kept), |p| {
        matches!(p, Problem::ExternalMismatch { size: 8 })
    });
}

#[test]
fn invalid_entries_and_checkpoints_are_reported() {
    let f = Fixture::with_entries(6);
    let conn = f.raw();
    conn.execute(
        "UPDATE audit_entries SET entry = ?1 WHERE seq = 1",
        params![b"{\"seq\":1,".as_slice()],
    )
    .unwrap();
    conn.execute(
        "UPDATE audit_entries SET entry = ?1 WHERE seq = 2",
        params![b"\xff\xfe not utf-8".as_slice()],
    )
    .unwrap();
    conn.execute("UPDATE audit_entries SET entry = 42 WHERE seq = 3", [])
        .unwrap();
    conn.execute(
        "UPDATE audit_checkpoints SET note = replace(note, char(10) || '4' || char(10), char(10) || '5' || char(10)) WHERE tree_size = 4",
        [],
    )
    .unwrap();
    drop(conn);
    for seq in 1..=3 {
        assert_tampered(
            &f,
            None,
            |p| matches!(p, Problem::InvalidEntry { seq: s, .. } if *s == seq),
        );
    }
    assert_tampered(&f, None, |p| {
        matches!(p, Problem::InvalidCheckpoint { size: 4, .. })
    });
}

#[test]
fn deleted_checkpoints_are_reported() {
    let f = Fixture::with_entries(3);
    f.raw()
        .execute("DELETE FROM audit_checkpoints", [])
        .unwrap();
    assert_tampered(&f, None, |p| {
        matches!(p, Problem::NoCheckpoint { entries: 3 })
    });
}

/// An entry no checkpoint covers is reported, and nothing is signed on top of it: a row forged
/// after the latest checkpoint can neither pass as intact nor be signed by the next publish.
#[test]
fn an_unsigned_tail_is_reported_and_never_signed_over() {
    let f = Fixture::with_entries(3);
    let mut log = f.log();
    log.append(entry(3)).unwrap();
    let report = log.verify(&f.verifier(), None).unwrap();
    assert!(
        report.problems.iter().any(|p| matches!(
            p,
            Problem::UnsignedEntries {
                size: 3,
                entries: 1
            }
        )),
        "{:?}",
        report.problems
    );
    let refused = log.append_and_checkpoint(entry(4), &f.signer).unwrap_err();
    assert!(
        matches!(refused, AuditError::Unsigned { size: 4, signed: 3 }),
        "{refused:?}"
    );
    assert_eq!(log.size().unwrap(), 4, "nothing was appended");
}

#[test]
fn a_checkpoint_signed_by_another_key_is_refused() {
    let f = Fixture::with_entries(3);
    let other = LocalSigner::generate(2048).unwrap();
    let mut log = f.log();
    log.append(entry(3)).unwrap();
    log.sign_checkpoint(&other).unwrap();
    drop(log);
    assert_tampered(&f, None, |p| {
        matches!(p, Problem::InvalidCheckpoint { size: 4, .. })
    });
}

#[test]
fn checkpoints_from_before_a_key_rotation_verify_with_the_old_key_given_too() {
    let f = Fixture::with_entries(4);
    let kept = f.note_at(4);
    let old_public = f.data.join("keys/old.pub.pem");
    std::fs::copy(f.data.join("keys/signing-key.pub.pem"), &old_public).unwrap();
    let (new_signer, _) =
        LocalSigner::generate_files(&f.data.join("keys"), "signing-key", 2048, true).unwrap();
    let mut log = f.log();
    log.append_and_checkpoint(entry(4), &new_signer).unwrap();
    drop(log);
    let kept_path = f.data.join("kept.note");
    std::fs::write(&kept_path, &kept).unwrap();
    let kept_arg = kept_path.to_str().unwrap();
    // The new key alone refuses the old checkpoints; with the old key named too, all verify.
    let out = f.cli_verify(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let new_public = f.data.join("keys/signing-key.pub.pem");
    let out = f.cli_verify(&[
        "--key",
        new_public.to_str().unwrap(),
        "--key",
        old_public.to_str().unwrap(),
        "--checkpoint",
        kept_arg,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The child of `a_crash_loses_no_acknowledged_entry`: appends until killed, printing each
/// acknowledged sequence number. Does nothing unless run by that test.
#[test]
#[ignore = "the crash test runs this as its child process"]
fn crash_child() {
    let (Some(db), Some(key)) = (
        std::env::var_os("SIGIL_AUDIT_CRASH_DB"),
        std::env::var_os("SIGIL_AUDIT_CRASH_KEY"),
    ) else {
        return;
    };
    use std::io::Write as _;
    let signer = LocalSigner::from_pem_file(Path::new(&key)).unwrap();
    let mut log = AuditLog::open(Path::new(&db)).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0..1_000_000u64 {
        let (appended, _) = log.append_and_checkpoint(entry(i), &signer).unwrap();
        writeln!(out, "ack {}", appended.seq).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn a_crash_loses_no_acknowledged_entry() {
    let f = Fixture::new();
    let key = f.data.join("keys/signing-key.pem");
    let mut acked = Vec::new();
    for round in 0..3u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["audit::crash_child", "--exact", "--ignored", "--nocapture"])
            .env("SIGIL_AUDIT_CRASH_DB", &f.db)
            .env("SIGIL_AUDIT_CRASH_KEY", &key)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut this_round = 0;
        // Kill at a different point each round, mid-append as likely as not.
        let stop_after = 25 + round * 17;
        while let Some(Ok(line)) = lines.next() {
            if let Some(seq) = line.strip_prefix("ack ") {
                acked.push(seq.parse::<u64>().unwrap());
                this_round += 1;
                if this_round == stop_after {
                    std::thread::sleep(std::time::Duration::from_millis(round * 3));
                    child.kill().unwrap(); // SIGKILL
                    break;
                }
            }
        }
        child.wait().unwrap();
        // Acknowledgements already in the pipe count too.
        for line in lines.map_while(Result::ok) {
            if let Some(seq) = line.strip_prefix("ack ") {
                acked.push(seq.parse().unwrap());
            }
        }
        assert!(
            this_round >= stop_after,
            "the child stopped early in round {round}"
        );
        let log = f.log();
        let size = log.size().unwrap();
        for &seq in &acked {
            assert!(seq < size, "acknowledged entry {seq} lost (log has {size})");
            assert_eq!(log.entry(seq).unwrap().seq, seq);
        }
        let report = log.verify(&f.verifier(), None).unwrap();
        assert!(report.intact(), "round {round}: {:?}", report.problems);
        assert_eq!(report.unsigned_tail, 0);
    }
    // Sequence numbers were never reused across crashes.
    let mut sorted = acked.clone();
    sorted.dedup();
    assert_eq!(sorted, acked);
    assert!(acked.len() >= 25 + 42 + 59);
}

#[test]
fn hostile_files_are_errors_not_panics() {
    let f = Fixture::with_entries(40);
    let pub_key = f.data.join("keys/signing-key.pub.pem");
    let key = pub_key.to_str().unwrap();
    let dir = f.data.clone();
    let verify = |db: &Path, extra: &[&str]| {
        let mut args = vec![
            "audit",
            "verify",
            "--db",
            db.to_str().unwrap(),
            "--key",
            key,
        ];
        args.extend_from_slice(extra);
        let out = sigil(&args);
        assert!(
            !text(&out.stderr).contains("panicked"),
            "{}",
            text(&out.stderr)
        );
        out
    };
    // Not SQLite.
    let junk = dir.join("junk.db");
    std::fs::write(&junk, "this is not a database\n".repeat(400)).unwrap();
    let out = verify(&junk, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("error"), "{}", text(&out.stderr));
    // An empty file, and a SQLite database that is not an audit log.
    let empty = dir.join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(verify(&empty, &[]).status.code(), Some(2));
    let other = dir.join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
        .unwrap();
    let out = verify(&other, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a Sigil audit log"));
    // Missing: an error, and no file is created.
    let missing = dir.join("missing.db");
    assert_eq!(verify(&missing, &[]).status.code(), Some(2));
    assert!(!missing.exists());
    // Truncated to half: refused, never reported intact.
    let bytes = std::fs::read(&f.db).unwrap();
    assert!(bytes.len() > 8192, "{} bytes", bytes.len());
    let truncated = dir.join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let code = verify(&truncated, &[]).status.code();
    assert!(matches!(code, Some(1) | Some(2)), "{code:?}");
    let cut = dir.join("cut.db");
    std::fs::write(&cut, &bytes[..100]).unwrap();
    assert_eq!(verify(&cut, &[]).status.code(), Some(2));
    // Checkpoint files: 10 MB, not UTF-8, not a note.
    let big = dir.join("big.note");
    std::fs::write(&big, vec![b'a'; 10 << 20]).unwrap();
    let out = verify(&f.db, &["--checkpoint", big.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("limit"), "{}", text(&out.stderr));
    let bad = dir.join("bad.note");
    std::fs::write(&bad, b"sigil.local/audit\n\xff\xfe\n\n").unwrap();
    assert_eq!(
        verify(&f.db, &["--checkpoint", bad.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
    std::fs::write(&bad, b"hello\n").unwrap();
    assert_eq!(
        verify(&f.db, &["--checkpoint", bad.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
    // A key that is not a key.
    let not_key = dir.join("not-key.pem");
    std::fs::write(&not_key, b"\xff\xff").unwrap();
    let out = sigil(&[
        "audit",
        "verify",
        "--db",
        f.db.to_str().unwrap(),
        "--key",
        not_key.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    // The log itself was left intact by all of this.
    assert_eq!(verify(&f.db, &[]).status.code(), Some(0));
}

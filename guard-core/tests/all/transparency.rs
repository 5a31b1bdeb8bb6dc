//! The audit log's cryptography: RFC 6962 vectors, every small tree against a naive
//! implementation, hostile proofs, checkpoints, signed notes and offline bundles.

use std::path::PathBuf;

use base64::Engine as _;
use guard_core::transparency::{
    consistency_proof, decode_proof, empty_root, inclusion_proof, leaf_hash, node_hash,
    root_from_inclusion, root_of, verify_checkpoint, verify_consistency, verify_inclusion,
    BundleError, Checkpoint, CheckpointError, Frontier, Hash, MemoryTree, Note, NoteError,
    NoteVerifier, OfflineBundle, ProofError, MAX_INCLUSION_HASHES,
};
use guard_core::{PinnedKey, Scheme};
use serde::Deserialize;

const ORIGIN: &str = "sigil.test/audit";

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/transparency")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(vectors().join(name)).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hash(s: &str) -> Hash {
    unhex(s).try_into().unwrap()
}

#[derive(Deserialize)]
struct Rfc6962 {
    hashes: Vec<HashVector>,
    leaves: Vec<String>,
    roots: Vec<String>,
    inclusion: Vec<InclusionVector>,
    consistency: Vec<ConsistencyVector>,
}

#[derive(Deserialize)]
struct HashVector {
    desc: String,
    kind: String,
    #[serde(default)]
    data: String,
    want: String,
}

#[derive(Deserialize)]
struct InclusionVector {
    index: u64,
    size: u64,
    proof: Vec<String>,
}

#[derive(Deserialize)]
struct ConsistencyVector {
    first: u64,
    second: u64,
    proof: Vec<String>,
}

fn rfc6962() -> Rfc6962 {
    serde_json::from_slice(&read("rfc6962.json")).unwrap()
}

/// The RFC's recursive definition, written as plainly as possible, to check the library against.
mod naive {
    use super::*;

    fn split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    pub fn mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => d[0],
            n => {
                let k = split(n);
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    pub fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
        if d.len() <= 1 {
            return vec![];
        }
        let k = split(d.len());
        if m < k {
            let mut p = path(m, &d[..k]);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = path(m - k, &d[k..]);
            p.push(mth(&d[..k]));
            p
        }
    }

    fn subproof(m: usize, d: &[Hash], whole: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if whole { vec![] } else { vec![mth(d)] };
        }
        let k = split(n);
        if m <= k {
            let mut p = subproof(m, &d[..k], whole);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = subproof(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }

    pub fn consistency(m: usize, d: &[Hash]) -> Vec<Hash> {
        if m == 0 || m == d.len() {
            return vec![];
        }
        subproof(m, d, true)
    }
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut h = *h;
    h[bit / 8] ^= 1 << (bit % 8);
    h
}

/// Every way of damaging a proof that must be refused: each hash changed, one removed, one
/// added at either end or in the middle, two swapped.
fn damaged(proof: &[Hash]) -> Vec<(String, Vec<Hash>)> {
    let mut out = Vec::new();
    let junk = leaf_hash(b"junk");
    for i in 0..proof.len() {
        let mut p = proof.to_vec();
        p[i] = flip(&p[i], (i * 37) % 256);
        out.push((format!("hash {i} changed"), p));
        let mut p = proof.to_vec();
        p.remove(i);
        out.push((format!("hash {i} removed"), p));
        let mut p = proof.to_vec();
        p.insert(i, junk);
        out.push((format!("junk inserted at {i}"), p));
    }
    let mut p = proof.to_vec();
    p.push(junk);
    out.push(("junk appended".into(), p));
    if proof.len() > 1 {
        let mut p = proof.to_vec();
        p.swap(0, 1);
        if p != proof {
            out.push(("first two swapped".into(), p));
        }
    }
    out
}

#[test]
fn rfc6962_vectors() {
    let v = rfc6962();
    let mut ran = 0;
    for h in &v.hashes {
        let got = match h.kind.as_str() {
            "empty" => empty_root(),
            "leaf" => leaf_hash(&unhex(&h.data)),
            other => panic!("unknown kind {other}"),
        };
        assert_eq!(got, hash(&h.want), "{}", h.desc);
        ran += 1;
    }
    let leaves: Vec<Hash> = v.leaves.iter().map(|l| leaf_hash(&unhex(l))).collect();
    for (n, want) in v.roots.iter().enumerate() {
        let prefix = &leaves[..=n];
        assert_eq!(root_of(prefix), hash(want), "root of {} leaves", n + 1);
        assert_eq!(
            MemoryTree::from_leaves(prefix.iter().copied()).root(),
            hash(want)
        );
        let mut frontier = Frontier::new();
        prefix.iter().for_each(|l| frontier.push(*l));
        assert_eq!(frontier.root(), hash(want));
        ran += 1;
    }
    let tree = MemoryTree::from_leaves(leaves.iter().copied());
    for c in &v.inclusion {
        let proof: Vec<Hash> = c.proof.iter().map(|h| hash(h)).collect();
        let root = hash(&v.roots[c.size as usize - 1]);
        let leaf = leaves[c.index as usize];
        verify_inclusion(c.index, c.size, &leaf, &proof, &root).unwrap();
        assert_eq!(inclusion_proof(&tree, c.index, c.size).unwrap(), proof);
        for (what, bad) in damaged(&proof) {
            assert!(
                verify_inclusion(c.index, c.size, &leaf, &bad, &root).is_err(),
                "({}, {}) {what}",
                c.index,
                c.size
            );
        }
        for wrong_size in [c.size * 2, c.size + 8, 0] {
            assert!(verify_inclusion(c.index, wrong_size, &leaf, &proof, &root).is_err());
        }
        assert!(verify_inclusion(c.index, c.size, &leaf, &proof, &empty_root()).is_err());
        assert!(verify_inclusion(c.index, c.size, &leaf_hash(b"x"), &proof, &root).is_err());
        ran += 1;
    }
    for c in &v.consistency {
        let proof: Vec<Hash> = c.proof.iter().map(|h| hash(h)).collect();
        let r1 = hash(&v.roots[c.first as usize - 1]);
        let r2 = hash(&v.roots[c.second as usize - 1]);
        verify_consistency(c.first, c.second, &proof, &r1, &r2).unwrap();
        assert_eq!(consistency_proof(&tree, c.first, c.second).unwrap(), proof);
        if c.first != c.second {
            for (what, bad) in damaged(&proof) {
                assert!(
                    verify_consistency(c.first, c.second, &bad, &r1, &r2).is_err(),
                    "({}, {}) {what}",
                    c.first,
                    c.second
                );
            }
            assert!(verify_consistency(c.first, c.second, &proof, &r2, &r1).is_err());
            assert!(verify_consistency(c.first, c.second, &[], &r1, &r2).is_err());
            assert!(verify_consistency(c.second, c.first, &proof, &r2, &r1).is_err());
        }
        ran += 1;
    }
    assert_eq!(ran, 3 + 8 + 5 + 5, "vectors ran");
}

#[test]
fn every_tree_up_to_64_leaves_matches_the_naive_definition() {
    const N: usize = 64;
    let leaves: Vec<Hash> = (0..N).map(|i| leaf_hash(&[i as u8, 0xa5])).collect();
    let tree = MemoryTree::from_leaves(leaves.iter().copied());
    let mut frontier = Frontier::new();
    let mut checked = 0;
    for size in 1..=N {
        frontier.push(leaves[size - 1]);
        let d = &leaves[..size];
        let root = naive::mth(d);
        assert_eq!(root_of(d), root);
        assert_eq!(frontier.root(), root);
        assert_eq!(
            guard_core::transparency::root(&tree, size as u64).unwrap(),
            root
        );
        for index in 0..size {
            let proof = inclusion_proof(&tree, index as u64, size as u64).unwrap();
            assert_eq!(proof, naive::path(index, d), "path ({index}, {size})");
            assert_eq!(
                root_from_inclusion(index as u64, size as u64, &d[index], &proof).unwrap(),
                root
            );
            // The same proof places no other leaf, and this leaf nowhere else.
            for other in 0..size {
                if other != index {
                    assert!(
                        verify_inclusion(other as u64, size as u64, &d[index], &proof, &root)
                            .is_err()
                    );
                    assert!(
                        verify_inclusion(index as u64, size as u64, &d[other], &proof, &root)
                            .is_err()
                    );
                }
            }
            for (what, bad) in damaged(&proof) {
                assert!(
                    verify_inclusion(index as u64, size as u64, &d[index], &bad, &root).is_err(),
                    "({index}, {size}) {what}"
                );
            }
            checked += 1;
        }
        for first in 0..=size {
            let proof = consistency_proof(&tree, first as u64, size as u64).unwrap();
            assert_eq!(
                proof,
                naive::consistency(first, d),
                "consistency ({first}, {size})"
            );
            let r1 = naive::mth(&leaves[..first]);
            verify_consistency(first as u64, size as u64, &proof, &r1, &root).unwrap();
            if first > 0 && first < size {
                for (what, bad) in damaged(&proof) {
                    assert!(
                        verify_consistency(first as u64, size as u64, &bad, &r1, &root).is_err(),
                        "({first}, {size}) {what}"
                    );
                }
                // A tree whose first leaves were changed is not consistent with the old one.
                let mut changed = leaves[..size].to_vec();
                changed[first - 1] = leaf_hash(b"changed");
                let changed_root = naive::mth(&changed);
                assert!(
                    verify_consistency(first as u64, size as u64, &proof, &r1, &changed_root)
                        .is_err()
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, N * (N + 1) / 2 + (N * (N + 3)) / 2);
}

#[test]
fn abc_and_abcc_differ_and_their_proofs_do_not_cross() {
    let abc: Vec<Hash> = [b"A", b"B", b"C"].iter().map(|d| leaf_hash(*d)).collect();
    let mut abcc = abc.clone();
    abcc.push(leaf_hash(b"C"));
    let (t3, t4) = (
        MemoryTree::from_leaves(abc.iter().copied()),
        MemoryTree::from_leaves(abcc.iter().copied()),
    );
    // Duplicating the last leaf changes the root (unlike trees that pad by duplication).
    assert_ne!(t3.root(), t4.root());
    let c = leaf_hash(b"C");
    let p3 = inclusion_proof(&t3, 2, 3).unwrap();
    let p4 = inclusion_proof(&t4, 3, 4).unwrap();
    verify_inclusion(2, 3, &c, &p3, &t3.root()).unwrap();
    verify_inclusion(3, 4, &c, &p4, &t4.root()).unwrap();
    assert!(verify_inclusion(2, 3, &c, &p3, &t4.root()).is_err());
    assert!(verify_inclusion(2, 4, &c, &p3, &t4.root()).is_err());
    assert!(verify_inclusion(3, 4, &c, &p3, &t4.root()).is_err());
    assert!(verify_inclusion(3, 4, &c, &p4, &t3.root()).is_err());
    assert!(verify_inclusion(2, 3, &c, &p4, &t3.root()).is_err());
    // [A,B,C] is a prefix of [A,B,C,C]; [A,B,C,D] is not an extension that keeps [A,B,C,C].
    let proof = consistency_proof(&t4, 3, 4).unwrap();
    verify_consistency(3, 4, &proof, &t3.root(), &t4.root()).unwrap();
    let abcd = MemoryTree::from_leaves([b"A", b"B", b"C", b"D"].map(|d| leaf_hash(d)));
    assert!(verify_consistency(4, 4, &[], &t4.root(), &abcd.root()).is_err());
}

#[test]
fn an_interior_node_presented_as_a_leaf_is_refused() {
    let leaves = [b"A", b"B", b"C", b"D"].map(|d| leaf_hash(d));
    let tree = MemoryTree::from_leaves(leaves);
    let root = tree.root();
    let left = node_hash(&leaves[0], &leaves[1]);
    let right = node_hash(&leaves[2], &leaves[3]);
    assert_eq!(node_hash(&left, &right), root);
    // As leaf data: the leaf prefix makes its hash differ from the node's.
    let mut data = leaves[0].to_vec();
    data.extend_from_slice(&leaves[1]);
    assert_ne!(leaf_hash(&data), left);
    assert!(verify_inclusion(0, 4, &leaf_hash(&data), &[right], &root).is_err());
    assert!(verify_inclusion(0, 2, &leaf_hash(&data), &[right], &root).is_err());
    // As a leaf hash with the tree's real size: the proof is one level short.
    assert_eq!(
        verify_inclusion(0, 4, &left, &[right], &root),
        Err(ProofError::WrongLength)
    );
    assert!(verify_inclusion(1, 4, &right, &[left], &root).is_err());
    // Only with a smaller, unsigned size would it pass: bundles take the size from the
    // checkpoint (see `bundle_with_a_smaller_tree_size_is_refused`).
    assert!(verify_inclusion(0, 2, &left, &[right], &root).is_ok());
}

#[test]
fn bad_sizes_and_oversized_proofs_are_refused() {
    let leaf = leaf_hash(b"x");
    let root = leaf;
    assert_eq!(
        verify_inclusion(0, 0, &leaf, &[], &root),
        Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
    );
    assert!(verify_inclusion(1, 1, &leaf, &[], &root).is_err());
    assert!(verify_inclusion(u64::MAX, u64::MAX, &leaf, &[], &root).is_err());
    verify_inclusion(0, 1, &leaf, &[], &root).unwrap();
    assert!(verify_inclusion(0, 1, &leaf, &[leaf], &root).is_err());
    // An empty proof for a tree that needs one.
    assert_eq!(
        verify_inclusion(0, 2, &leaf, &[], &root),
        Err(ProofError::WrongLength)
    );
    // Refused by length before any hashing.
    let long = vec![leaf; MAX_INCLUSION_HASHES + 1];
    assert!(matches!(
        verify_inclusion(0, u64::MAX, &leaf, &long, &root),
        Err(ProofError::TooLong { .. })
    ));
    let huge = vec![leaf; 1 << 20];
    assert!(matches!(
        verify_consistency(1, u64::MAX, &huge, &root, &root),
        Err(ProofError::TooLong { .. })
    ));
    assert!(matches!(
        verify_consistency(3, 2, &[], &root, &root),
        Err(ProofError::SizeOrder { .. })
    ));
    // Sizes that need no proof.
    verify_consistency(0, 5, &[], &empty_root(), &root).unwrap();
    assert!(verify_consistency(0, 5, &[], &root, &root).is_err());
    assert!(verify_consistency(0, 5, &[leaf], &empty_root(), &root).is_err());
    verify_consistency(5, 5, &[], &root, &root).unwrap();
    assert!(verify_consistency(5, 5, &[], &root, &leaf_hash(b"y")).is_err());
    assert!(verify_consistency(5, 5, &[leaf], &root, &root).is_err());
    assert!(verify_consistency(1, 2, &[], &root, &root).is_err());
    // The largest trees work without overflow.
    let proof = vec![leaf; 64];
    assert!(verify_inclusion(u64::MAX - 1, u64::MAX, &leaf, &proof, &root).is_err());
    assert!(verify_consistency(u64::MAX - 1, u64::MAX, &[leaf; 65], &root, &root).is_err());
    // Proof hashes in a bundle: decoded only when few enough, each exactly 32 bytes.
    let good = base64::engine::general_purpose::STANDARD.encode(leaf);
    assert!(decode_proof(&vec![good.clone(); 65], 64).is_err());
    assert!(decode_proof(&[good.clone(), String::new()], 64).is_err());
    assert!(decode_proof(&[good[..40].to_string()], 64).is_err());
    assert_eq!(decode_proof(&[good], 64).unwrap(), vec![leaf]);
}

#[derive(Deserialize)]
struct CheckpointCases {
    cases: Vec<CheckpointCase>,
}

#[derive(Deserialize)]
struct CheckpointCase {
    desc: String,
    text: Option<String>,
    hex: Option<String>,
    size: Option<u64>,
}

#[test]
fn checkpoint_vectors() {
    let cases: CheckpointCases = serde_json::from_slice(&read("checkpoints.json")).unwrap();
    let (mut good, mut bad) = (0, 0);
    for c in &cases.cases {
        let bytes = match (&c.text, &c.hex) {
            (Some(text), None) => text.as_bytes().to_vec(),
            (None, Some(hex)) => unhex(hex),
            _ => panic!("`{}` needs text or hex", c.desc),
        };
        let parsed = Checkpoint::parse(&bytes);
        match c.size {
            Some(size) => {
                let cp = parsed.unwrap_or_else(|e| panic!("`{}`: {e}", c.desc));
                assert_eq!(cp.size, size, "{}", c.desc);
                assert_eq!(cp.root, empty_root(), "{}", c.desc);
                // Formatting gives back the same bytes.
                assert_eq!(cp.to_text().unwrap().as_bytes(), bytes, "{}", c.desc);
                good += 1;
            }
            None => {
                assert!(
                    matches!(parsed, Err(CheckpointError::Malformed(_))),
                    "`{}` should be refused: {parsed:?}",
                    c.desc
                );
                bad += 1;
            }
        }
    }
    assert!(good >= 4 && bad >= 25, "{good} good, {bad} bad vectors ran");
    // Too large to be a checkpoint.
    let mut big = b"example.com/log\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 10 << 20));
    big.push(b'\n');
    assert!(Checkpoint::parse(&big).is_err());
}

fn log_key() -> NoteVerifier {
    let key = PinnedKey::from_spki(&read("log.pub.pem"), Scheme::RsassaPkcs1v15Sha256).unwrap();
    NoteVerifier::new(ORIGIN, key).unwrap()
}

fn pss_key() -> NoteVerifier {
    let key = PinnedKey::from_spki(&read("pss.pub.pem"), Scheme::RsassaPssSha256).unwrap();
    NoteVerifier::new(ORIGIN, key).unwrap()
}

#[test]
fn signed_checkpoints_verify_only_under_their_key() {
    let root8 = hash("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328");
    let cp = verify_checkpoint(&read("checkpoint-ok.note"), &log_key()).unwrap();
    assert_eq!((cp.origin.as_str(), cp.size, cp.root), (ORIGIN, 8, root8));
    // Another signer's line (a witness) is ignored.
    verify_checkpoint(&read("checkpoint-cosigned.note"), &log_key()).unwrap();
    verify_checkpoint(&read("checkpoint-pss.note"), &pss_key()).unwrap();

    let refused = |file: &str, key: &NoteVerifier| verify_checkpoint(&read(file), key).unwrap_err();
    let bad_signature = CheckpointError::Note(NoteError::BadSignature {
        name: ORIGIN.into(),
    });
    let unknown = CheckpointError::Note(NoteError::UnknownSigners);
    assert_eq!(
        refused("checkpoint-wrong-key.note", &log_key()),
        bad_signature
    );
    assert_eq!(
        refused("checkpoint-bad-then-good.note", &log_key()),
        bad_signature
    );
    assert_eq!(
        refused("checkpoint-pss-under-pkcs1-id.note", &log_key()),
        bad_signature
    );
    assert_eq!(
        refused("checkpoint-unknown-signer.note", &log_key()),
        unknown
    );
    assert_eq!(refused("checkpoint-ok.note", &pss_key()), unknown);
    assert_eq!(refused("checkpoint-pss.note", &log_key()), unknown);
    assert!(matches!(
        refused("checkpoint-origin-mismatch.note", &log_key()),
        CheckpointError::OriginMismatch { .. }
    ));
    // Any of several log keys (a rotation): each note verifies under the set, a bad line by
    // any of them still refuses the note.
    let both = [pss_key(), log_key()];
    let any = |file: &str| guard_core::transparency::verify_checkpoint_any(&read(file), &both);
    any("checkpoint-ok.note").unwrap();
    any("checkpoint-pss.note").unwrap();
    assert_eq!(
        any("checkpoint-bad-then-good.note").unwrap_err(),
        bad_signature
    );
    assert!(any("checkpoint-origin-mismatch.note").is_err());
    assert_eq!(
        guard_core::transparency::verify_checkpoint_any(&read("checkpoint-ok.note"), &[])
            .unwrap_err(),
        unknown
    );
    // The same key under another name has another key ID.
    let renamed = NoteVerifier::new("other.test/log", log_key().key().clone()).unwrap();
    assert_ne!(renamed.key_id(), log_key().key_id());
    assert_eq!(refused("checkpoint-ok.note", &renamed), unknown);
    // The same key with the other scheme has another key ID.
    let pss_scheme = PinnedKey::from_spki(&read("log.pub.pem"), Scheme::RsassaPssSha256).unwrap();
    assert_ne!(
        NoteVerifier::new(ORIGIN, pss_scheme).unwrap().key_id(),
        log_key().key_id()
    );
    assert_eq!(
        guard_core::transparency::rsa_key_id(
            ORIGIN,
            Scheme::RsassaPkcs1v15Sha256,
            &pem_der(&read("log.pub.pem"))
        ),
        log_key().key_id()
    );
}

fn pem_der(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

#[test]
fn every_change_to_a_signed_checkpoint_is_refused() {
    let note = read("checkpoint-ok.note");
    let text = String::from_utf8(note.clone()).unwrap();
    let key = log_key();
    let mut tried = 0;
    // Every byte of the checkpoint text changed.
    let body_len = text.find("\n\n").unwrap() + 1;
    for at in 0..body_len {
        let mut bad = note.clone();
        bad[at] ^= 0x01;
        assert!(verify_checkpoint(&bad, &key).is_err(), "byte {at}");
        tried += 1;
    }
    // Every character of the signature's base64.
    let sig_start = text.rfind(' ').unwrap() + 1;
    for at in sig_start..note.len() - 1 {
        let mut bad = note.clone();
        bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
        assert!(
            verify_checkpoint(&bad, &key).is_err(),
            "signature byte {at}"
        );
        tried += 1;
    }
    assert!(tried > 300);
    let altered = [
        text.replace("\n8\n", "\n9\n"),
        text.replace("\n8\n", "\n08\n"),
        text.replace('\n', "\r\n"),
        text.replacen("\n\n", "\n", 1),
        text.trim_end().to_string(),
        text.replace('\u{2014}', "-"),
        text.replacen("\n\n", "\nextension\n\n", 1),
        format!("{text}\u{2014} {ORIGIN} AAAA\n"),
        text[..body_len].to_string(),
        String::new(),
    ];
    for bad in &altered {
        assert!(verify_checkpoint(bad.as_bytes(), &key).is_err(), "{bad:?}");
    }
    let mut not_utf8 = note.clone();
    not_utf8.insert(3, 0xff);
    assert!(matches!(
        verify_checkpoint(&not_utf8, &key),
        Err(CheckpointError::Note(NoteError::NotUtf8(3)))
    ));
    let huge = vec![b'a'; 10 << 20];
    assert!(matches!(
        verify_checkpoint(&huge, &key),
        Err(CheckpointError::Note(NoteError::TooLarge(_)))
    ));
}

#[test]
fn notes_parse_strictly_and_round_trip() {
    let note = Note::parse(&read("checkpoint-cosigned.note")).unwrap();
    assert_eq!(note.signatures().len(), 2);
    assert_eq!(note.signatures()[0].name(), "witness.test/w1");
    assert_eq!(note.to_text().as_bytes(), read("checkpoint-cosigned.note"));
    // Text may hold blank lines; the signatures start after the last one.
    let multi = "a\n\nb\n\n\u{2014} k AAAAAAE=\n";
    let parsed = Note::parse(multi.as_bytes()).unwrap();
    assert_eq!(parsed.text(), "a\n\nb\n");
    for bad in [
        "text\n",
        "text\n\n",
        "text\n\n\u{2014} k\n",
        "text\n\n\u{2014} k AAAA\n",
        "text\n\n\u{2014}  AAAAAAE=\n",
        "text\n\n\u{2014} k+1 AAAAAAE=\n",
        "text\n\n\u{2014} k AAAAAAE\n",
        "text\n\n- k AAAAAAE=\n",
        "text\n\n\u{2014} k AAAAAAE=",
        "text\r\n\r\n\u{2014} k AAAAAAE=\r\n",
        "te\txt\n\n\u{2014} k AAAAAAE=\n",
    ] {
        assert!(Note::parse(bad.as_bytes()).is_err(), "{bad:?}");
    }
    let many = format!("text\n\n{}", "\u{2014} k AAAAAAE=\n".repeat(33));
    assert_eq!(
        Note::parse(many.as_bytes()),
        Err(NoteError::TooManySignatures)
    );
}

fn bundle() -> OfflineBundle {
    OfflineBundle::from_json(&read("bundle.json")).unwrap()
}

#[test]
fn bundle_log_part_verifies() {
    let logged = bundle().verify_log(&log_key()).unwrap();
    assert_eq!(logged.checkpoint().size, 5);
    assert_eq!(logged.entry().seq, 2);
    // The envelope in the bundle is the template vectors' signed envelope.
    let envelope: guard_core::Envelope = serde_json::from_slice(
        &std::fs::read(crate::workspace().join("tests/vectors/templates/envelope.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(bundle().envelope, envelope);
    // Re-serialized, it still verifies.
    let again = serde_json::to_vec(&bundle()).unwrap();
    OfflineBundle::from_json(&again)
        .unwrap()
        .verify_log(&log_key())
        .unwrap();
}

#[test]
fn bundle_with_a_smaller_tree_size_is_refused() {
    let mut b = bundle();
    b.log.tree_size = 4;
    assert!(matches!(
        b.verify_log(&log_key()),
        Err(BundleError::TreeSizeMismatch { .. })
    ));
}

/// One way of damaging a bundle.
type Change = Box<dyn Fn(&mut OfflineBundle)>;

#[test]
fn every_change_to_a_bundle_is_refused() {
    let key = log_key();
    let mut changes: Vec<(&str, Change)> = vec![
        ("index + 1", Box::new(|b| b.log.index += 1)),
        (
            "index and seq moved",
            Box::new(|b| {
                b.log.index = 3;
                b.log.entry.seq = 3;
            }),
        ),
        ("tree size + 1", Box::new(|b| b.log.tree_size += 1)),
        ("proof emptied", Box::new(|b| b.log.inclusion_proof.clear())),
        (
            "proof truncated",
            Box::new(|b| {
                b.log.inclusion_proof.pop();
            }),
        ),
        (
            "proof extended",
            Box::new(|b| {
                let first = b.log.inclusion_proof[0].clone();
                b.log.inclusion_proof.push(first);
            }),
        ),
        (
            "proof reversed",
            Box::new(|b| b.log.inclusion_proof.reverse()),
        ),
        (
            "proof hash not base64",
            Box::new(|b| b.log.inclusion_proof[0] = "!".repeat(44)),
        ),
        (
            "entry time",
            Box::new(|b| b.log.entry.time = "2026-12-03T12:00:09Z".into()),
        ),
        (
            "entry actor",
            Box::new(|b| b.log.entry.actor = "role:admin".into()),
        ),
        ("entry subject", Box::new(|b| b.log.entry.subject = None)),
        (
            "entry kind",
            Box::new(|b| {
                b.log.entry.kind = guard_core::transparency::EntryKind::Approval;
            }),
        ),
        (
            "entry digest",
            Box::new(|b| {
                b.log
                    .entry
                    .digests
                    .insert("envelope".into(), "0".repeat(64));
            }),
        ),
        (
            "extra digest",
            Box::new(|b| {
                b.log
                    .entry
                    .digests
                    .insert("template".into(), "0".repeat(64));
            }),
        ),
        (
            "envelope payload",
            Box::new(|b| b.envelope.payload.insert(0, 'e')),
        ),
        (
            "envelope signature",
            Box::new(|b| b.envelope.signatures[0].sig.insert(0, 'A')),
        ),
        (
            "checkpoint size",
            Box::new(|b| {
                b.log.checkpoint = b.log.checkpoint.replacen("\n5\n", "\n6\n", 1);
                b.log.tree_size = 6;
            }),
        ),
        ("checkpoint dropped", Box::new(|b| b.log.checkpoint.clear())),
    ];
    for i in 0..bundle().log.inclusion_proof.len() {
        changes.push((
            "proof hash changed",
            Box::new(move |b: &mut OfflineBundle| {
                let mut h = base64::engine::general_purpose::STANDARD
                    .decode(&b.log.inclusion_proof[i])
                    .unwrap();
                h[7] ^= 0x40;
                b.log.inclusion_proof[i] = base64::engine::general_purpose::STANDARD.encode(h);
            }),
        ));
    }
    let mut ran = 0;
    for (what, change) in &changes {
        let mut b = bundle();
        change(&mut b);
        assert!(b.verify_log(&key).is_err(), "{what} was accepted");
        ran += 1;
    }
    assert!(ran >= 20);
    // The right bundle under the wrong key.
    assert!(bundle().verify_log(&pss_key()).is_err());
    // Hostile JSON.
    assert!(OfflineBundle::from_json(b"{").is_err());
    assert!(OfflineBundle::from_json(&vec![b' '; 3 << 20]).is_err());
    let mut extra: serde_json::Value = serde_json::from_slice(&read("bundle.json")).unwrap();
    extra["log"]["unknown"] = serde_json::json!(1);
    assert!(OfflineBundle::from_json(&serde_json::to_vec(&extra).unwrap()).is_err());
}

#[test]
fn entries_hold_only_digests_roles_and_pseudonyms() {
    let entry = bundle().log.entry;
    let bytes = entry.to_leaf_bytes().unwrap();
    assert_eq!(
        guard_core::transparency::AuditEntry::from_leaf_bytes(&bytes).unwrap(),
        entry
    );
    // Another serialization of the same entry is not leaf data.
    let pretty = serde_json::to_vec_pretty(&entry).unwrap();
    assert!(guard_core::transparency::AuditEntry::from_leaf_bytes(&pretty).is_err());
    for actor in ["alice@example.com", "role:root", "psn:ABC", "psn:", ""] {
        let mut e = entry.clone();
        e.actor = actor.into();
        assert!(e.to_leaf_bytes().is_err(), "{actor}");
    }
    for time in [
        "2026-12-03 12:00:00",
        "2026-12-03T12:00:00+01:00",
        "yesterday",
    ] {
        let mut e = entry.clone();
        e.time = time.into();
        assert!(e.to_leaf_bytes().is_err(), "{time}");
    }
    let mut e = entry.clone();
    e.digests.insert("envelope".into(), "not hex".into());
    assert!(e.to_leaf_bytes().is_err());
    assert!(guard_core::transparency::AuditEntry::from_leaf_bytes(b"\xff\xfe").is_err());
    assert!(guard_core::transparency::AuditEntry::from_leaf_bytes(b"{\"seq\":1}").is_err());
}

mod properties {
    use guard_core::transparency::{
        AuditEntry, Checkpoint, MemoryTree, Note, OfflineBundle, ProofError,
    };
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, rng_seed: proptest::test_runner::RngSeed::Fixed(0x5161_1a0d), ..ProptestConfig::default() })]

        #[test]
        fn checkpoints_round_trip(
            origin in "[a-z0-9./-]{1,40}",
            size in any::<u64>(),
            root in any::<[u8; 32]>(),
            extensions in proptest::collection::vec("[ -~]{1,20}", 0..3),
        ) {
            let cp = Checkpoint { origin, size, root, extensions };
            let text = cp.to_text().unwrap();
            prop_assert_eq!(Checkpoint::parse(text.as_bytes()).unwrap(), cp);
        }

        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Note::parse(&bytes);
            let _ = Checkpoint::parse(&bytes);
            let _ = AuditEntry::from_leaf_bytes(&bytes);
            let _ = OfflineBundle::from_json(&bytes);
            let _ = verify_checkpoint(&bytes, &log_key());
        }

        #[test]
        fn random_proofs_never_verify_and_never_panic(
            index in any::<u64>(),
            size in any::<u64>(),
            len in 0usize..70,
            seed in any::<u8>(),
        ) {
            let proof: Vec<Hash> = (0..len).map(|i| leaf_hash(&[seed, i as u8])).collect();
            let root = leaf_hash(b"root");
            let leaf = leaf_hash(b"leaf");
            prop_assert!(verify_inclusion(index, size, &leaf, &proof, &root).is_err());
            let (a, b) = (index.min(size), index.max(size));
            let consistent = verify_consistency(a, b, &proof, &root, &leaf);
            prop_assert!(consistent.is_err() || (a == 0 && proof.is_empty() && root == empty_root()));
            if len > 64 {
                prop_assert!(
                    matches!(
                        verify_inclusion(index, size, &leaf, &proof, &root),
                        Err(ProofError::TooLong { .. }) | Err(ProofError::IndexOutOfRange { .. })
                    ),
                    "a proof of {len} hashes was not refused by its length"
                );
            }
        }

        #[test]
        fn proofs_from_a_tree_of_any_size_verify(
            size in 1u64..3000,
            pick in any::<u64>(),
            first_pick in any::<u64>(),
        ) {
            let tree = MemoryTree::from_leaves((0..size).map(|i| leaf_hash(&i.to_le_bytes())));
            let index = pick % size;
            let proof = inclusion_proof(&tree, index, size).unwrap();
            verify_inclusion(index, size, &leaf_hash(&index.to_le_bytes()), &proof, &tree.root())
                .unwrap();
            let first = first_pick % (size + 1);
            let old = guard_core::transparency::root(&tree, first).unwrap();
            let proof = consistency_proof(&tree, first, size).unwrap();
            verify_consistency(first, size, &proof, &old, &tree.root()).unwrap();
        }
    }
}

/// DER of a PEM `PUBLIC KEY` file, base64: what keyrings and log keys in requests hold.
fn spki_base64(pem: &[u8]) -> String {
    String::from_utf8(pem.to_vec())
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect()
}

fn bundle_request() -> serde_json::Value {
    let templates = crate::workspace().join("tests/vectors/templates");
    let signer_der = std::fs::read(templates.join("signer.pub.der")).unwrap();
    let signer = PinnedKey::from_spki(&signer_der, Scheme::RsassaPkcs1v15Sha256).unwrap();
    use base64::Engine as _;
    serde_json::json!({
        "bundle": serde_json::from_slice::<serde_json::Value>(&read("bundle.json")).unwrap(),
        "log": {"origin": ORIGIN, "spki": spki_base64(&read("log.pub.pem")), "scheme": "rsassa-pkcs1v15-sha256"},
        "template": {
            "template": String::from_utf8(std::fs::read(templates.join("template.txt")).unwrap()).unwrap(),
            "keyring": {"keys": [{
                "fingerprint": signer.fingerprint(),
                "spki": base64::engine::general_purpose::STANDARD.encode(&signer_der),
                "scheme": "rsassa-pkcs1v15-sha256",
                "valid_from": "2026-01-01T00:00:00Z"
            }]},
            "now": "2027-01-01T00:00:00Z"
        }
    })
}

#[test]
fn an_offline_bundle_and_its_template_verify_in_one_request() {
    use guard_core::transparency::verify_bundle_json;
    let answer: serde_json::Value =
        serde_json::from_str(&verify_bundle_json(bundle_request().to_string().as_bytes()).unwrap())
            .unwrap();
    assert_eq!(answer["template"]["template_id"], "demo/support");
    assert_eq!(answer["log"]["origin"], ORIGIN);
    assert_eq!(answer["log"]["index"], bundle().log.index);
    let code = |r: serde_json::Value| {
        verify_bundle_json(r.to_string().as_bytes())
            .unwrap_err()
            .code()
    };
    let mut changed = bundle_request();
    changed["template"]["template"] = serde_json::json!("You are a careless assistant.");
    assert_eq!(code(changed), "digest_mismatch");
    let mut moved = bundle_request();
    moved["bundle"]["log"]["index"] = serde_json::json!(0);
    assert_eq!(code(moved), "invalid_bundle");
    let mut other_log = bundle_request();
    other_log["log"]["spki"] = serde_json::json!(spki_base64(&read("other.pub.pem")));
    assert_eq!(code(other_log), "invalid_bundle");
    // The caller's policy decides, not the copy in the bundle.
    let mut strict = bundle_request();
    let fingerprint = strict["template"]["keyring"]["keys"][0]["fingerprint"].clone();
    strict["template"]["template_policy"] = serde_json::json!({"min_version": 2});
    assert_eq!(code(strict.clone()), "below_min_version");
    strict["template"]["template_policy"] =
        serde_json::json!({"approvals": {"threshold": 1, "of": [fingerprint]}});
    assert!(verify_bundle_json(strict.to_string().as_bytes()).is_ok());
    // The envelope is the bundle's; a second one in the request is refused, not chosen from.
    let mut twice = bundle_request();
    twice["template"]["envelope"] = twice["bundle"]["envelope"].clone();
    assert_eq!(code(twice), "invalid_request");
    for bad in ["", "{", "[]", "{\"bundle\": 1}"] {
        assert_eq!(
            verify_bundle_json(bad.as_bytes()).unwrap_err().code(),
            "invalid_request"
        );
    }
}

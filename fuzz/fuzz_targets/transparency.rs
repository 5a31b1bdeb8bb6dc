//! The audit log's parsers and proof checks on any bytes: never a panic, and a checkpoint that
//! parses formats back to the same bytes.
#![no_main]

use guard_core::transparency::{
    verify_consistency, verify_inclusion, AuditEntry, Checkpoint, Hash, Note, OfflineBundle,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cp) = Checkpoint::parse(data) {
        assert_eq!(cp.to_text().ok().as_deref().map(str::as_bytes), Some(data));
    }
    if let Ok(note) = Note::parse(data) {
        assert_eq!(Note::parse(note.to_text().as_bytes()).ok(), Some(note));
    }
    let _ = AuditEntry::from_leaf_bytes(data);
    let _ = OfflineBundle::from_json(data);
    // The first 16 bytes as two sizes, the rest as proof hashes.
    let (Some(head), Some(rest)) = (data.get(..16), data.get(16..)) else {
        return;
    };
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&head[..8]);
    b.copy_from_slice(&head[8..]);
    let (x, y) = (u64::from_le_bytes(a), u64::from_le_bytes(b));
    let proof: Vec<Hash> = rest
        .chunks_exact(32)
        .filter_map(|c| Hash::try_from(c).ok())
        .collect();
    let root = [0x5a; 32];
    let _ = verify_inclusion(x, y, &[0xa5; 32], &proof, &root);
    let _ = verify_consistency(x.min(y), x.max(y), &proof, &root, &[0xa5; 32]);
});

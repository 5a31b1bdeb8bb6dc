//! RFC 6962 / RFC 9162 Merkle tree hashing, and verification of inclusion and consistency proofs.

use sha2::{Digest as _, Sha256};

/// A SHA-256 hash: a leaf hash, an interior node or a root.
pub type Hash = [u8; 32];

/// Most hashes an inclusion proof can need: a tree of at most 2^64 - 1 leaves is 64 levels high.
pub const MAX_INCLUSION_HASHES: usize = 64;
/// Most hashes a consistency proof can need: one per level, and the smaller tree's own subtree.
pub const MAX_CONSISTENCY_HASHES: usize = 65;

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `SHA-256(0x00 || data)`: the hash of a leaf. The prefix keeps a leaf from ever hashing like an
/// interior node, so no node can be passed off as an entry (a second-preimage attack).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(data);
    hasher.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The Merkle tree hash (RFC 9162 section 2.1.1) of a list of leaf hashes.
///
/// Pairs are hashed level by level and an odd node at the end of a level moves up unchanged,
/// which gives the same tree as the RFC's split at the largest power of two.
///
/// ```
/// use guard_core::transparency::{leaf_hash, node_hash, root_of};
/// let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
/// assert_eq!(root_of(&[a, b]), node_hash(&a, &b));
/// ```
pub fn root_of(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return empty_root();
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => node_hash(left, right),
                [single] => *single,
                _ => empty_root(),
            })
            .collect();
    }
    level.first().copied().unwrap_or_else(empty_root)
}

/// Why a proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is not inside a tree of {size} leaves")]
    IndexOutOfRange {
        /// The index given.
        index: u64,
        /// The tree size given.
        size: u64,
    },
    /// A consistency proof from a larger tree to a smaller one.
    #[error("tree size {first} is larger than tree size {second}")]
    SizeOrder {
        /// The first (older) size.
        first: u64,
        /// The second (newer) size.
        second: u64,
    },
    /// More hashes than any tree can need; refused before any hashing.
    #[error("proof has {len} hashes; at most {max} are possible")]
    TooLong {
        /// Hashes given.
        len: usize,
        /// The most any proof of this kind can have.
        max: usize,
    },
    /// The proof has the wrong number of hashes for its index and sizes.
    #[error("proof has the wrong number of hashes for these sizes")]
    WrongLength,
    /// The proof leads to another root.
    #[error("proof does not lead to the expected root")]
    RootMismatch,
    /// A consistency proof does not lead to the older tree's root.
    #[error("proof does not lead to the first tree's root")]
    FirstRootMismatch,
    /// A hash is not 32 bytes of base64.
    #[error("proof hash {index} is not 32 bytes of base64")]
    MalformedHash {
        /// Position in the proof.
        index: usize,
    },
}

/// The root an inclusion proof leads to (RFC 9162 section 2.1.3.2).
pub fn root_from_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    if proof.len() > MAX_INCLUSION_HASHES {
        return Err(ProofError::TooLong {
            len: proof.len(),
            max: MAX_INCLUSION_HASHES,
        });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            // A right edge with no sibling: climb until this node is a right child again.
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    Ok(r)
}

/// Checks that the leaf hash `leaf` is at `index` in the tree of `size` leaves whose root is
/// `root`.
///
/// ```
/// use guard_core::transparency::{leaf_hash, node_hash, verify_inclusion};
/// let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
/// let root = node_hash(&a, &b);
/// assert!(verify_inclusion(1, 2, &b, &[a], &root).is_ok());
/// assert!(verify_inclusion(0, 2, &b, &[a], &root).is_err());
/// ```
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion(index, size, leaf, proof)? == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Checks that the tree of `first` leaves with root `first_root` is a prefix of the tree of
/// `second` leaves with root `second_root` (RFC 9162 section 2.1.4.2): nothing in the older tree
/// was changed, reordered or removed.
///
/// Equal sizes need an empty proof and equal roots; the empty tree (whose root must be
/// [`empty_root`]) is a prefix of every tree.
pub fn verify_consistency(
    first: u64,
    second: u64,
    proof: &[Hash],
    first_root: &Hash,
    second_root: &Hash,
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::SizeOrder { first, second });
    }
    if proof.len() > MAX_CONSISTENCY_HASHES {
        return Err(ProofError::TooLong {
            len: proof.len(),
            max: MAX_CONSISTENCY_HASHES,
        });
    }
    if first == 0 || first == second {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        let expected_first = if first == 0 {
            empty_root()
        } else {
            *second_root
        };
        return if *first_root == expected_first {
            Ok(())
        } else {
            Err(ProofError::FirstRootMismatch)
        };
    }
    let mut hashes = proof.iter();
    // A smaller tree that is a perfect subtree is left out of the proof: its root stands in.
    let seed = if first.is_power_of_two() {
        *first_root
    } else {
        *hashes.next().ok_or(ProofError::WrongLength)?
    };
    let (mut fn_, mut sn) = (first - 1, second - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (seed, seed);
    for c in hashes {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *first_root {
        return Err(ProofError::FirstRootMismatch);
    }
    if sr != *second_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

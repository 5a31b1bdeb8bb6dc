//! Making proofs from stored subtree hashes, and an in-memory tree.
//!
//! A log keeps the hash of every perfect subtree (a run of `2^level` leaves starting at a
//! multiple of `2^level`). Any root or proof is then a few of those nodes, O(log n) reads, with no
//! need to rehash the leaves. The storage is behind [`NodeReader`], so the same code serves the
//! host's database and the in-memory [`MemoryTree`].

use super::merkle::{empty_root, node_hash, Hash};

/// Reads perfect subtree hashes.
pub trait NodeReader {
    /// Why a node could not be read.
    type Error;
    /// The hash of the perfect subtree of the leaves `[index << level, (index + 1) << level)`.
    /// Level 0 is the leaf hashes.
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// Why a proof could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError<E> {
    /// The store failed.
    #[error("cannot read a tree node: {0}")]
    Read(E),
    /// The sizes or index asked for do not fit.
    #[error("{0}")]
    Range(String),
}

/// The largest power of two strictly below `n` (for `n >= 2`).
fn split_point(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The Merkle tree hash of the `size` leaves from `start`, where `start` is a multiple of the
/// largest power of two not above `size` (true of every range the RFC's recursion visits).
pub fn subtree_root<R: NodeReader>(
    reader: &R,
    start: u64,
    size: u64,
) -> Result<Hash, TreeError<R::Error>> {
    if size == 0 {
        return Ok(empty_root());
    }
    // The range is its perfect subtrees, largest first; the root folds them from the right.
    let mut pieces = Vec::new();
    let (mut at, mut remaining) = (start, size);
    while remaining > 0 {
        let level = 63 - remaining.leading_zeros();
        let width = 1u64 << level;
        if at % width != 0 {
            return Err(TreeError::Range(format!(
                "range at {start} of {size} leaves is not aligned"
            )));
        }
        pieces.push(reader.node(level, at >> level).map_err(TreeError::Read)?);
        at += width;
        remaining -= width;
    }
    let mut pieces = pieces.into_iter().rev();
    let mut acc = pieces.next().unwrap_or_else(empty_root);
    for left in pieces {
        acc = node_hash(&left, &acc);
    }
    Ok(acc)
}

/// The root of the first `size` leaves.
pub fn root<R: NodeReader>(reader: &R, size: u64) -> Result<Hash, TreeError<R::Error>> {
    subtree_root(reader, 0, size)
}

/// The inclusion proof (audit path, RFC 9162 section 2.1.3.1) of leaf `index` in the tree of the
/// first `size` leaves.
pub fn inclusion_proof<R: NodeReader>(
    reader: &R,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    if index >= size {
        return Err(TreeError::Range(format!(
            "leaf index {index} is not inside a tree of {size} leaves"
        )));
    }
    let (mut m, mut start, mut n) = (index, 0u64, size);
    let mut siblings = Vec::new();
    while n > 1 {
        let k = split_point(n);
        if m < k {
            siblings.push(subtree_root(reader, start + k, n - k)?);
            n = k;
        } else {
            siblings.push(subtree_root(reader, start, k)?);
            start += k;
            m -= k;
            n -= k;
        }
    }
    // Collected from the root down; the proof runs from the leaf up.
    siblings.reverse();
    Ok(siblings)
}

/// The consistency proof (RFC 9162 section 2.1.4.1) from the tree of the first `first` leaves to
/// the tree of the first `second`.
pub fn consistency_proof<R: NodeReader>(
    reader: &R,
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, TreeError<R::Error>> {
    if first > second {
        return Err(TreeError::Range(format!(
            "tree size {first} is larger than tree size {second}"
        )));
    }
    if first == 0 || first == second {
        return Ok(Vec::new());
    }
    let (mut m, mut start, mut n, mut whole) = (first, 0u64, second, true);
    let mut out = Vec::new();
    loop {
        if m == n {
            // The older tree's own subtree is needed unless it is the older tree itself.
            if !whole {
                out.push(subtree_root(reader, start, n)?);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            out.push(subtree_root(reader, start + k, n - k)?);
            n = k;
        } else {
            out.push(subtree_root(reader, start, k)?);
            start += k;
            m -= k;
            n -= k;
            whole = false;
        }
    }
    out.reverse();
    Ok(out)
}

/// A whole tree in memory: every perfect subtree hash, level by level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

/// A node a [`MemoryTree`] does not have (the subtree is not complete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no complete subtree at level {level}, index {index}")]
pub struct MissingNode {
    /// Level asked for.
    pub level: u32,
    /// Index asked for.
    pub index: u64,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree of these leaf hashes.
    pub fn from_leaves(leaves: impl IntoIterator<Item = Hash>) -> Self {
        let mut tree = Self::new();
        for leaf in leaves {
            tree.push(leaf);
        }
        tree
    }

    /// Appends a leaf hash, completing every subtree it closes: O(log n).
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut level = 0usize;
        loop {
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
            let Some(row) = self.levels.get_mut(level) else {
                return;
            };
            row.push(hash);
            // An even count means this node is a right child: its parent is now complete.
            if row.len() % 2 != 0 {
                return;
            }
            let (Some(left), Some(right)) = (row.get(row.len() - 2), row.last()) else {
                return;
            };
            hash = node_hash(left, right);
            level += 1;
        }
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        root(self, self.size()).unwrap_or_else(|_| empty_root())
    }
}

impl NodeReader for MemoryTree {
    type Error = MissingNode;

    fn node(&self, level: u32, index: u64) -> Result<Hash, MissingNode> {
        let missing = MissingNode { level, index };
        let row = self.levels.get(level as usize).ok_or(missing)?;
        row.get(usize::try_from(index).map_err(|_| missing)?)
            .copied()
            .ok_or(missing)
    }
}

/// The right edge of a tree being built leaf by leaf: O(log n) memory, the root of every prefix
/// on the way. What a verifier streaming a whole log needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    /// Perfect subtrees from the left, as (level, hash); levels strictly decrease.
    nodes: Vec<(u32, Hash)>,
    size: u64,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        while let Some(&(level, left)) = self.nodes.last() {
            if level != node.0 {
                break;
            }
            self.nodes.pop();
            node = (level + 1, node_hash(&left, &node.1));
        }
        self.nodes.push(node);
        self.size += 1;
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = nodes.next() else {
            return empty_root();
        };
        for (_, left) in nodes {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

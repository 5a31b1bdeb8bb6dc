//! Bounded, lock-free interning of label values.
//!
//! A table of write-once slots, probed linearly from the value's hash. A slot, once set, never
//! changes, so a value is always found at the first slot of its probe sequence that is empty or
//! holds it: two threads adding the same value race for the same slot, and the loser finds the
//! winner's copy. Reads are plain loads; only the first sighting of a value writes.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The label value of everything a table could not or would not keep.
pub const OTHER: &str = "other";

/// Longest label value kept; longer ones are counted under [`OTHER`].
pub const MAX_LABEL_BYTES: usize = 128;

#[derive(Debug)]
pub(crate) struct Interner {
    slots: Box<[OnceLock<Box<str>>]>,
    /// Distinct values kept at most; the table has at least twice as many slots, so probes stay
    /// short.
    cap: usize,
    filled: AtomicUsize,
    hasher: std::collections::hash_map::RandomState,
}

impl Interner {
    pub(crate) fn new(cap: usize) -> Self {
        let len = cap.saturating_mul(2).max(1).next_power_of_two();
        Interner {
            slots: (0..len).map(|_| OnceLock::new()).collect(),
            cap,
            filled: AtomicUsize::new(0),
            hasher: Default::default(),
        }
    }

    /// Slots a counter table needs: one per table slot, and one for [`OTHER`].
    pub(crate) fn slots(&self) -> usize {
        self.slots.len() + 1
    }

    /// The slot that stands for [`OTHER`].
    pub(crate) fn other(&self) -> usize {
        self.slots.len()
    }

    /// The slot of `value`, adding it if there is room; `None` when it is to be counted under
    /// [`OTHER`] (table full, value empty, too long, holding a control character, or `other`
    /// itself, so that no two slots render the same label).
    pub(crate) fn index(&self, value: &str) -> Option<usize> {
        if value.is_empty()
            || value.len() > MAX_LABEL_BYTES
            || value == OTHER
            || value.chars().any(char::is_control)
        {
            return None;
        }
        let mask = self.slots.len() - 1;
        let start = usize::try_from(self.hasher.hash_one(value)).unwrap_or(0) & mask;
        for probe in 0..self.slots.len() {
            let i = (start + probe) & mask;
            let slot = self.slots.get(i)?;
            match slot.get() {
                Some(kept) if **kept == *value => return Some(i),
                Some(_) => continue,
                None => {
                    if self.filled.load(Ordering::Relaxed) >= self.cap {
                        return None;
                    }
                    match slot.set(value.into()) {
                        Ok(()) => {
                            self.filled.fetch_add(1, Ordering::Relaxed);
                            return Some(i);
                        }
                        // Another thread took the slot first: it may have taken it for this
                        // very value.
                        Err(_) => {
                            if slot.get().is_some_and(|kept| **kept == *value) {
                                return Some(i);
                            }
                        }
                    }
                }
            }
        }
        None
    }

    /// The value kept in `slot`, or [`OTHER`] for the other slot; `None` for an empty slot.
    pub(crate) fn value(&self, slot: usize) -> Option<&str> {
        if slot == self.other() {
            return Some(OTHER);
        }
        self.slots.get(slot)?.get().map(|v| &**v)
    }

    /// Every occupied slot and [`OTHER`], sorted by value.
    pub(crate) fn sorted(&self) -> Vec<(usize, &str)> {
        let mut kept: Vec<(usize, &str)> = (0..self.slots())
            .filter_map(|i| self.value(i).map(|v| (i, v)))
            .collect();
        kept.sort_by(|a, b| a.1.cmp(b.1));
        kept
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    #[test]
    fn values_keep_their_slot_and_the_cap_folds_the_rest() {
        let t = Interner::new(3);
        let a = t.index("a").unwrap();
        assert_eq!(t.index("a"), Some(a));
        let b = t.index("b").unwrap();
        let c = t.index("c").unwrap();
        assert_eq!(HashSet::from([a, b, c]).len(), 3);
        assert_eq!(t.index("d"), None, "the fourth value is past the cap");
        assert_eq!(t.index("b"), Some(b), "kept values are still found");
        assert_eq!(t.value(a), Some("a"));
        assert_eq!(t.value(t.other()), Some(OTHER));
    }

    #[test]
    fn unfit_values_are_other() {
        let t = Interner::new(10);
        for bad in [
            "",
            "other",
            "a\nb",
            "tab\there",
            &"x".repeat(MAX_LABEL_BYTES + 1),
        ] {
            assert_eq!(t.index(bad), None, "{bad:?}");
        }
        assert!(t.index(&"x".repeat(MAX_LABEL_BYTES)).is_some());
        assert!(t.index("ünïcode ok").is_some());
    }

    #[test]
    fn a_zero_cap_keeps_nothing() {
        let t = Interner::new(0);
        assert_eq!(t.index("a"), None);
        assert_eq!(t.sorted(), vec![(t.other(), OTHER)]);
    }

    #[test]
    fn threads_adding_the_same_values_agree_on_one_slot_each() {
        let t = Arc::new(Interner::new(64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    (0..64)
                        .map(|i| t.index(&format!("tenant-{i}")).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let seen: Vec<Vec<usize>> = threads.into_iter().map(|h| h.join().unwrap()).collect();
        for other in &seen[1..] {
            assert_eq!(other, &seen[0]);
        }
        assert_eq!(seen[0].iter().collect::<HashSet<_>>().len(), 64);
        assert_eq!(t.sorted().len(), 65);
    }
}

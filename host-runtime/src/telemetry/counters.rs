//! Counter tables striped across threads.
//!
//! Every thread adds into one of a few copies of each table (its stripe, fixed the first time it
//! records), and readers add the copies up. Threads on different cores then rarely write the same
//! cache line, which matters when every call increments the same few counters. Reading sums the
//! stripes, so a reader sees each increment exactly once, if not all at the same instant.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Copies of each table: one per core, at most eight.
fn stripes() -> usize {
    static STRIPES: OnceLock<usize> = OnceLock::new();
    *STRIPES.get_or_init(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
            .clamp(1, 8)
    })
}

/// This thread's stripe: threads take stripes in turn as they first record.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % stripes();
    }
    STRIPE.with(|s| *s)
}

/// `len` counters, striped.
#[derive(Debug)]
pub(crate) struct Counters {
    cells: Box<[AtomicU64]>,
    len: usize,
    /// Cells from one stripe's copy to the next: `len` rounded up to a 64-byte line.
    stride: usize,
}

impl Counters {
    pub(crate) fn new(len: usize) -> Self {
        let stride = len.div_ceil(8).max(1) * 8;
        Counters {
            cells: (0..stride * stripes()).map(|_| AtomicU64::new(0)).collect(),
            len,
            stride,
        }
    }

    /// Adds `n` to counter `i` (nothing for an index out of range).
    pub(crate) fn add(&self, i: usize, n: u64) {
        if i < self.len {
            if let Some(cell) = self.cells.get(stripe() * self.stride + i) {
                cell.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Every counter, summed over the stripes.
    pub(crate) fn load(&self) -> Vec<u64> {
        let mut out = vec![0u64; self.len];
        for copy in self.cells.chunks(self.stride) {
            for (total, cell) in out.iter_mut().zip(copy) {
                *total = total.wrapping_add(cell.load(Ordering::Relaxed));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::Arc;

    #[test]
    fn stripes_add_up_across_threads() {
        let c = Arc::new(Counters::new(3));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.add(0, 1);
                        c.add(2, 2);
                        c.add(3, 1); // out of range: ignored
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.load(), vec![6000, 0, 12_000]);
    }
}

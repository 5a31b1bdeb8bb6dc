//! Latency histograms with fixed buckets from 50 µs to 10 s.

use std::time::Duration;

use super::counters::Counters;

/// Upper bounds of the buckets, in seconds, as rendered in `le`; one more bucket holds the rest.
pub const BUCKETS_SECONDS: [&str; 17] = [
    "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
];

/// The same bounds in nanoseconds.
const BOUNDS_NANOS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

const BUCKETS: usize = BOUNDS_NANOS.len() + 1;

/// An observation adds at most an hour to the sum, so that no bogus duration wraps it.
const MAX_SUMMED_NANOS: u64 = 3_600_000_000_000;

/// Counts per bucket (not cumulative) and, in the cell after them, the sum of what was observed
/// in nanoseconds.
#[derive(Debug)]
pub(crate) struct Histogram {
    cells: Counters,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            cells: Counters::new(BUCKETS + 1),
        }
    }
}

impl Histogram {
    pub(crate) fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // The first bucket whose bound is at least the value: `le` is inclusive.
        let bucket = BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        self.cells.add(bucket, 1);
        self.cells.add(BUCKETS, nanos.min(MAX_SUMMED_NANOS));
    }

    pub(crate) fn snapshot(&self) -> Counts {
        let cells = self.cells.load();
        let mut buckets = [0u64; BUCKETS];
        for (out, n) in buckets.iter_mut().zip(&cells) {
            *out = *n;
        }
        Counts {
            buckets,
            sum_nanos: cells.get(BUCKETS).copied().unwrap_or(0),
        }
    }
}

/// A histogram's numbers at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) buckets: [u64; BUCKETS],
    pub(crate) sum_nanos: u64,
}

impl Counts {
    /// Observations in all buckets: the count, consistent with the buckets by construction.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }

    pub(crate) fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }

    /// What was observed since `earlier`.
    pub(crate) fn since(&self, earlier: &Counts) -> Counts {
        let mut buckets = [0u64; BUCKETS];
        for ((out, now), then) in buckets.iter_mut().zip(&self.buckets).zip(&earlier.buckets) {
            *out = now.saturating_sub(*then);
        }
        Counts {
            buckets,
            sum_nanos: self.sum_nanos.saturating_sub(earlier.sum_nanos),
        }
    }

    /// The `q` quantile (0 to 1) in seconds, interpolated linearly inside its bucket as
    /// Prometheus's `histogram_quantile` does; values past the last bound report that bound.
    /// `None` when nothing was observed.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut below = 0u64;
        let mut lower = 0.0f64;
        for (i, &n) in self.buckets.iter().enumerate() {
            let Some(&upper_nanos) = BOUNDS_NANOS.get(i) else {
                // The overflow bucket: no upper bound to interpolate to.
                return Some(lower);
            };
            let upper = upper_nanos as f64 / 1e9;
            if n > 0 && (below + n) as f64 >= rank {
                let within = (rank - below as f64) / n as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
            below += n;
            lower = upper;
        }
        Some(lower)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn bounds_match_their_labels() {
        for (label, nanos) in BUCKETS_SECONDS.iter().zip(BOUNDS_NANOS) {
            let seconds: f64 = label.parse().unwrap();
            assert_eq!((seconds * 1e9).round() as u64, nanos, "{label}");
        }
    }

    #[test]
    fn a_value_on_a_bound_is_in_that_bucket() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_nanos(50_001));
        h.observe(Duration::ZERO);
        h.observe(Duration::from_secs(11));
        h.observe(Duration::MAX);
        let c = h.snapshot();
        assert_eq!(c.buckets[0], 2, "zero and exactly 50 µs");
        assert_eq!(c.buckets[1], 1);
        assert_eq!(c.buckets[BUCKETS - 1], 2, "past 10 s");
        assert_eq!(c.count(), 5);
    }

    #[test]
    fn quantiles_interpolate_inside_a_bucket() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().quantile(0.5), None);
        // 100 observations in (1 ms, 2.5 ms].
        for _ in 0..100 {
            h.observe(Duration::from_micros(2000));
        }
        let c = h.snapshot();
        let p50 = c.quantile(0.5).unwrap();
        assert!((p50 - 0.00175).abs() < 1e-9, "{p50}");
        assert!((c.quantile(1.0).unwrap() - 0.0025).abs() < 1e-12);
        h.observe(Duration::from_secs(60));
        let c = h.snapshot();
        assert_eq!(
            c.quantile(1.0),
            Some(10.0),
            "the overflow reports the last bound"
        );
    }

    #[test]
    fn differences_count_only_the_new_observations() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        let before = h.snapshot();
        h.observe(Duration::from_millis(30));
        let delta = h.snapshot().since(&before);
        assert_eq!(delta.count(), 1);
        assert_eq!(delta.sum_nanos, 30_000_000);
        assert_eq!(
            delta.buckets[BOUNDS_NANOS.partition_point(|&b| b < 30_000_000)],
            1
        );
    }
}

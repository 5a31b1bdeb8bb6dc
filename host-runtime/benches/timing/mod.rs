//! Timing helpers the benchmarks share.

use std::time::{Duration, Instant};

/// Median of `n` timed calls of `f`, given the call's index.
pub fn median(n: usize, mut f: impl FnMut(usize)) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed()
        })
        .collect();
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// One Markdown table row: `what` and `d` in microseconds.
pub fn show(what: &str, d: Duration) {
    println!("| {what} | {:.1} µs |", d.as_secs_f64() * 1e6);
}

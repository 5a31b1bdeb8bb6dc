//! What metrics cost a guarded call, and what a scrape costs:
//! `cargo bench --package host-runtime --bench telemetry`.
//!
//! Each sample times a batch of 1,000 `record_call`s (a blocked scan with three rule hits, a
//! model hit and a tenant out of 100) and reports the median per call; once on one thread, once
//! on two threads recording into the same `Metrics` at the same time (the contended case: both
//! threads increment the same counters). Then the median time to render the Prometheus text and
//! one EMF flush of a registry with 100 tenants and 300 rules seen.

// A benchmark fails loudly: unwrapping and indexing are how it says what it expects.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use guard_core::{Action, Level};
use host_runtime::telemetry::emf::{EmfTarget, EmfWriter};
use host_runtime::telemetry::{Assessed, CallRecord, Endpoint, LabelLimits, Metrics};

const BATCH: u32 = 1_000;

fn median(samples: usize, mut f: impl FnMut() -> Duration) -> Duration {
    for _ in 0..5 {
        f();
    }
    let mut times: Vec<Duration> = (0..samples).map(|_| f()).collect();
    times.sort();
    times[times.len() / 2]
}

fn show(what: &str, d: Duration) {
    println!("| {what} | {:.1} ns |", d.as_secs_f64() * 1e9);
}

fn tenants() -> Vec<String> {
    (0..100).map(|i| format!("tenant-{i}")).collect()
}

fn record_batch(metrics: &Metrics, tenants: &[String], offset: usize) -> Duration {
    let rules = [
        "override.ignore_previous",
        "exfil.markdown_image",
        "jailbreak.dan",
    ];
    let start = Instant::now();
    for i in 0..BATCH as usize {
        metrics.record_call(black_box(&CallRecord {
            endpoint: Endpoint::Scan,
            status: 200,
            assessed: Some(Assessed {
                action: Action::Block,
                level: Level::Critical,
            }),
            tenant: Some(&tenants[(i + offset) % tenants.len()]),
            rules: &rules,
            model_hit: true,
            verify: None,
            assess: Some(Duration::from_micros(180)),
            total: Duration::from_micros(240),
        }));
    }
    start.elapsed() / BATCH
}

fn main() {
    let tenants = tenants();
    let metrics = Arc::new(Metrics::new(LabelLimits::default()));
    println!("| operation | median |");
    println!("| --- | --- |");
    show(
        "record_call, one thread",
        median(400, || record_batch(&metrics, &tenants, 0)),
    );

    let contended = median(200, || {
        let other = {
            let metrics = metrics.clone();
            let tenants = tenants.clone();
            std::thread::spawn(move || record_batch(&metrics, &tenants, 0))
        };
        let mine = record_batch(&metrics, &tenants, 0);
        let theirs = other.join().unwrap();
        mine.max(theirs)
    });
    show("record_call, two threads at once", contended);

    let full = Metrics::new(LabelLimits::default());
    for i in 0..300 {
        let rule = format!("rule.{i}");
        full.record_call(&CallRecord {
            endpoint: Endpoint::Guard,
            status: 200,
            assessed: Some(Assessed {
                action: Action::Warn,
                level: Level::Medium,
            }),
            tenant: Some(&tenants[i % 100]),
            rules: &[&rule],
            model_hit: false,
            verify: Some(Duration::from_micros(40)),
            assess: Some(Duration::from_micros(200)),
            total: Duration::from_micros(300),
        });
    }
    let mut text = String::new();
    let render = median(50, || {
        text.clear();
        let start = Instant::now();
        full.render_prometheus(&mut text);
        start.elapsed()
    });
    println!(
        "| render_prometheus, 100 tenants, 300 rules ({} bytes) | {:.1} µs |",
        text.len(),
        render.as_secs_f64() * 1e6
    );
    let full = Arc::new(full);
    let mut lines = String::new();
    let emf = median(50, || {
        // A new writer has no baseline: its first flush reports everything.
        let mut writer = EmfWriter::new(full.clone(), "Sigil", &EmfTarget::Stdout).unwrap();
        lines.clear();
        let start = Instant::now();
        writer.render(0, &mut lines);
        start.elapsed()
    });
    println!(
        "| EMF flush of the same registry ({} lines, {} bytes) | {:.1} µs |",
        lines.lines().count(),
        lines.len(),
        emf.as_secs_f64() * 1e6
    );
}

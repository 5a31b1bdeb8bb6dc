//! The metrics as CloudWatch Embedded Metric Format (EMF) lines, so that CloudWatch Logs turns
//! them into CloudWatch metrics (and alarms) with no agent.
//!
//! Every flush writes one JSON object per line: one line per combination of label values that
//! changed, each with its `_aws` metadata (`Timestamp` in milliseconds, one `CloudWatchMetrics`
//! directive naming the namespace, the dimension sets and the metrics with their units) and the
//! label values and metric values as members of the root. Names are those of the Prometheus
//! families, and dimensions are the labels, so one vocabulary serves both:
//!
//! - counters are the increase since the previous flush (unit `Count`); a series that did not
//!   change is left out, so CloudWatch sees no data for it (alarms treat that as zero);
//! - histograms become `NAME_count` (observations since the previous flush) and `NAME_p50`,
//!   `NAME_p99` (unit `Seconds`), estimated from the buckets of the observations since the
//!   previous flush, interpolated inside a bucket as Prometheus's `histogram_quantile` does; a
//!   value past the last bound (10 s) reports 10 s. They are left out when nothing was observed;
//! - gauges are the current value, written at every flush.
//!
//! `sigil_requests_total` is also published aggregated by `action` and `tenant` and by `action`
//! alone (extra dimension sets of the same line), `sigil_http_responses_total` by `status_class`
//! (`2xx`, `4xx`, `5xx`, ...), `sigil_outbox_deliveries_total` by `outcome`, and
//! `sigil_guard_exhausted_total` with no dimension, so alarms need no metric math.
//!
//! ```
//! use std::sync::Arc;
//! use host_runtime::telemetry::emf::{EmfTarget, EmfWriter};
//! use host_runtime::telemetry::{LabelLimits, Metrics};
//!
//! let metrics = Arc::new(Metrics::new(LabelLimits::default()));
//! metrics.template_refused("bad_signature");
//! let mut writer = EmfWriter::new(metrics, "Sigil", &EmfTarget::Stdout)?;
//! let mut lines = String::new();
//! writer.render(1_767_225_600_000, &mut lines);
//! assert!(lines.lines().any(|l| l.contains(r#""code":"bad_signature""#)));
//! # Ok::<(), host_runtime::telemetry::emf::EmfError>(())
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use guard_core::Level;
use serde_json::{json, Map, Value};

use super::histogram::Counts;
use super::{
    request_labels, status_label, DeliveryOutcome, Endpoint, Exhaustion, Metrics, Snapshot,
    REQUEST_CELLS, STATUS_SLOTS,
};

/// The namespace used when none is configured.
pub const DEFAULT_NAMESPACE: &str = "Sigil";

/// Where EMF lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmfTarget {
    /// Standard output (logs go to standard error, so the two never mix).
    Stdout,
    /// A file, created if missing and appended to.
    File(PathBuf),
}

impl EmfTarget {
    /// `-` for standard output, anything else a file path.
    pub fn from_path(path: &str) -> Self {
        if path == "-" {
            EmfTarget::Stdout
        } else {
            EmfTarget::File(PathBuf::from(path))
        }
    }
}

/// Why EMF lines cannot be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmfError {
    /// The namespace breaks CloudWatch's rules.
    #[error("CloudWatch namespace `{namespace}`: {reason}")]
    Namespace {
        /// The namespace given.
        namespace: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The file cannot be opened.
    #[error("cannot open the EMF file `{}`: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing failed.
    #[error("cannot write EMF lines: {0}")]
    Write(#[from] std::io::Error),
    /// The flushing thread could not be started or stopped.
    #[error("EMF writer thread: {0}")]
    Thread(String),
}

/// Checks a namespace against CloudWatch's rules: 1 to 255 characters of `0-9A-Za-z._-/#:` and
/// space, not starting with `:` or with `AWS/` (kept for AWS's own namespaces).
pub fn check_namespace(namespace: &str) -> Result<(), EmfError> {
    let fail = |reason| {
        Err(EmfError::Namespace {
            namespace: namespace.chars().take(64).collect(),
            reason,
        })
    };
    if namespace.is_empty() || namespace.len() > 255 {
        return fail("a namespace has 1 to 255 characters");
    }
    if !namespace
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-/#: ".contains(c))
    {
        return fail("a namespace has only letters, digits, spaces and `._-/#:`");
    }
    if namespace.starts_with(':') || namespace.starts_with("AWS/") {
        return fail("a namespace may not start with `:` or `AWS/`");
    }
    Ok(())
}

enum Output {
    Stdout,
    File(File),
}

/// Writes the metrics as EMF lines, each flush reporting counters as increases since the last.
pub struct EmfWriter {
    metrics: Arc<Metrics>,
    namespace: String,
    previous: Snapshot,
    output: Output,
}

impl std::fmt::Debug for EmfWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmfWriter")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl EmfWriter {
    /// A writer of `metrics` into `namespace`; a file target is opened (created, appended to)
    /// now, so a bad path fails at start rather than at the first flush.
    pub fn new(
        metrics: Arc<Metrics>,
        namespace: &str,
        target: &EmfTarget,
    ) -> Result<Self, EmfError> {
        check_namespace(namespace)?;
        let output = match target {
            EmfTarget::Stdout => Output::Stdout,
            EmfTarget::File(path) => Output::File(open_append(path)?),
        };
        Ok(EmfWriter {
            metrics,
            namespace: namespace.to_string(),
            previous: Snapshot::default(),
            output,
        })
    }

    /// Appends to `out` the lines for what changed since the previous call (or since the
    /// metrics were made), stamped `timestamp_ms` (milliseconds since the Unix epoch), and makes
    /// now the baseline of the next call.
    pub fn render(&mut self, timestamp_ms: u64, out: &mut String) {
        let now = self.render_since(timestamp_ms, out);
        self.previous = now;
    }

    /// The lines since the baseline, and the snapshot they were taken from.
    fn render_since(&self, timestamp_ms: u64, out: &mut String) -> Snapshot {
        let now = self.metrics.snapshot();
        for line in lines(&self.metrics, &now, &self.previous) {
            out.push_str(&line.to_json(&self.namespace, timestamp_ms));
            out.push('\n');
        }
        now
    }

    /// Renders at the current time and writes the lines to the target, flushed. The baseline
    /// moves only when the write succeeded, so the next flush after a failure reports the
    /// increases the failed one could not.
    pub fn flush(&mut self) -> Result<(), EmfError> {
        let timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let mut text = String::new();
        let now = self.render_since(timestamp_ms, &mut text);
        match &mut self.output {
            Output::Stdout => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
            Output::File(file) => {
                file.write_all(text.as_bytes())?;
                file.flush()?;
            }
        }
        self.previous = now;
        Ok(())
    }

    /// Flushes every `interval` on a thread of its own until [`EmfTask::stop`], which flushes
    /// once more. A failed flush is logged, and its increases are reported by the next flush that
    /// succeeds.
    pub fn start(mut self, interval: Duration) -> Result<EmfTask, EmfError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let interval = interval.max(Duration::from_secs(1));
        let thread = std::thread::Builder::new()
            .name("sigil-emf".into())
            .spawn(move || loop {
                let last = !matches!(
                    stopped.recv_timeout(interval),
                    Err(mpsc::RecvTimeoutError::Timeout)
                );
                let result = self.flush();
                if last {
                    return result;
                }
                if let Err(e) = result {
                    tracing::warn!(error = %e, "EMF flush failed; retrying at the next interval");
                }
            })
            .map_err(|e| EmfError::Thread(e.to_string()))?;
        Ok(EmfTask { stop, thread })
    }
}

/// The running flusher of [`EmfWriter::start`].
#[derive(Debug)]
pub struct EmfTask {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<Result<(), EmfError>>,
}

impl EmfTask {
    /// Stops the flusher after one last flush, and returns that flush's result.
    pub fn stop(self) -> Result<(), EmfError> {
        // A send fails only if the thread is gone already; join tells how it ended.
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| EmfError::Thread("the EMF writer thread panicked".into()))?
    }
}

fn open_append(path: &Path) -> Result<File, EmfError> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o640);
    }
    options.open(path).map_err(|source| EmfError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// One EMF line before serialization.
struct Line {
    dimensions: Vec<(&'static str, String)>,
    dimension_sets: Vec<Vec<&'static str>>,
    metrics: Vec<(String, &'static str, Value)>,
}

impl Line {
    fn new(dimensions: Vec<(&'static str, String)>) -> Self {
        let all = dimensions.iter().map(|(k, _)| *k).collect();
        Line {
            dimensions,
            dimension_sets: vec![all],
            metrics: Vec::new(),
        }
    }

    fn also_by(mut self, set: &[&'static str]) -> Self {
        self.dimension_sets.push(set.to_vec());
        self
    }

    fn count(&mut self, name: &str, n: u64) {
        self.metrics
            .push((name.to_string(), "Count", Value::from(n)));
    }

    fn seconds(&mut self, name: &str, seconds: f64) {
        // JSON has no NaN or infinity; neither can arise here, but a line must stay valid.
        if let Some(n) = serde_json::Number::from_f64(seconds) {
            self.metrics
                .push((name.to_string(), "Seconds", Value::Number(n)));
        }
    }

    /// `NAME_count`, `NAME_p50` and `NAME_p99` of what a histogram saw since the last flush.
    fn histogram(&mut self, name: &str, delta: &Counts) {
        let count = delta.count();
        if count == 0 {
            return;
        }
        self.count(&format!("{name}_count"), count);
        for (suffix, q) in [("p50", 0.5), ("p99", 0.99)] {
            if let Some(v) = delta.quantile(q) {
                self.seconds(&format!("{name}_{suffix}"), v);
            }
        }
    }

    fn to_json(&self, namespace: &str, timestamp_ms: u64) -> String {
        let definitions: Vec<Value> = self
            .metrics
            .iter()
            .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
            .collect();
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": namespace,
                    "Dimensions": self.dimension_sets,
                    "Metrics": definitions,
                }],
            }),
        );
        for (key, value) in &self.dimensions {
            root.insert((*key).into(), Value::from(value.as_str()));
        }
        for (name, _, value) in &self.metrics {
            root.insert(name.clone(), value.clone());
        }
        Value::Object(root).to_string()
    }
}

fn delta(now: &[u64], before: &[u64], i: usize) -> u64 {
    now.get(i)
        .copied()
        .unwrap_or(0)
        .saturating_sub(before.get(i).copied().unwrap_or(0))
}

fn status_class(slot: usize) -> String {
    match status_label(slot).chars().next() {
        Some(d @ '1'..='5') => format!("{d}xx"),
        _ => super::OTHER.into(),
    }
}

/// Every line of one flush. The tables' slots only ever fill, so an index means the same series
/// in both snapshots.
fn lines(m: &Metrics, now: &Snapshot, before: &Snapshot) -> Vec<Line> {
    let mut lines = Vec::new();

    for (slot, tenant) in m.tenants.sorted() {
        for cell in 0..REQUEST_CELLS {
            let index = slot * REQUEST_CELLS + cell;
            let n = delta(&now.requests, &before.requests, index);
            if n == 0 {
                continue;
            }
            let (_, endpoint, action, level) = request_labels(index);
            let mut line = Line::new(vec![
                ("endpoint", endpoint.as_str().into()),
                ("action", action.as_str().into()),
                ("level", level.as_str().into()),
                ("tenant", tenant.into()),
            ])
            .also_by(&["action", "tenant"])
            .also_by(&["action"]);
            line.count("sigil_requests_total", n);
            lines.push(line);
        }
    }

    for endpoint in Endpoint::ALL {
        for slot in 0..STATUS_SLOTS {
            let n = delta(
                &now.responses,
                &before.responses,
                endpoint.index() * STATUS_SLOTS + slot,
            );
            if n == 0 {
                continue;
            }
            let mut line = Line::new(vec![
                ("endpoint", endpoint.as_str().into()),
                ("status", status_label(slot)),
            ]);
            line.dimensions.push(("status_class", status_class(slot)));
            let mut line = line.also_by(&["status_class"]);
            line.count("sigil_http_responses_total", n);
            lines.push(line);
        }
    }

    for (slot, rule) in m.rules.sorted() {
        let n = delta(&now.rule_hits, &before.rule_hits, slot);
        if n > 0 {
            let mut line = Line::new(vec![("rule", rule.into())]);
            line.count("sigil_rule_hits_total", n);
            lines.push(line);
        }
    }

    for (endpoint, (calls, calls_before)) in Endpoint::ALL
        .iter()
        .zip(now.call.iter().zip(before.call.iter()))
    {
        let mut line = Line::new(vec![("endpoint", endpoint.as_str().into())]);
        let hits = delta(&now.model_hits, &before.model_hits, endpoint.index());
        if hits > 0 {
            line.count("sigil_model_hits_total", hits);
        }
        line.histogram("sigil_call_seconds", &calls.since(calls_before));
        if !line.metrics.is_empty() {
            lines.push(line);
        }
    }

    let mut global = Line::new(Vec::new());
    global.histogram("sigil_verify_seconds", &now.verify.since(&before.verify));
    global.histogram("sigil_assess_seconds", &now.assess.since(&before.assess));
    global.count(
        "sigil_incidents_unacknowledged",
        now.incidents_unacknowledged,
    );
    global.seconds(
        "sigil_incident_oldest_unacknowledged_seconds",
        now.oldest_unacknowledged,
    );
    global.count("sigil_outbox_depth", now.outbox_depth);
    global.count("sigil_guard_instances", now.guard_instances);
    global.count(
        "sigil_vault_write_failures_total",
        now.vault_write_failures
            .saturating_sub(before.vault_write_failures),
    );
    global.count(
        "sigil_key_backend_calls_total",
        now.vault
            .backend_calls
            .saturating_sub(before.vault.backend_calls),
    );
    global.count(
        "sigil_key_backend_failovers_total",
        now.vault.failovers.saturating_sub(before.vault.failovers),
    );
    global.count(
        "sigil_vault_records_total",
        (now.vault.sealed + now.vault.opened)
            .saturating_sub(before.vault.sealed + before.vault.opened),
    );
    lines.push(global);

    for (level, n) in Level::ALL.iter().zip(&now.incidents_open) {
        let mut line = Line::new(vec![("level", level.as_str().into())]);
        line.count("sigil_incidents_open", *n);
        lines.push(line);
    }

    for (slot, code) in m.refusal_codes.sorted() {
        let n = delta(&now.refusals, &before.refusals, slot);
        if n > 0 {
            let mut line = Line::new(vec![("code", code.into())]);
            line.count("sigil_template_refusals_total", n);
            lines.push(line);
        }
    }

    for (slot, sink) in m.sinks.sorted() {
        for outcome in DeliveryOutcome::ALL {
            let n = delta(
                &now.deliveries,
                &before.deliveries,
                slot * 3 + outcome.index(),
            );
            if n > 0 {
                let mut line = Line::new(vec![
                    ("sink", sink.into()),
                    ("outcome", outcome.as_str().into()),
                ])
                .also_by(&["outcome"]);
                line.count("sigil_outbox_deliveries_total", n);
                lines.push(line);
            }
        }
    }

    for kind in Exhaustion::ALL {
        let n = delta(&now.exhausted, &before.exhausted, kind.index());
        if n > 0 {
            let mut line = Line::new(vec![("kind", kind.as_str().into())]).also_by(&[]);
            line.count("sigil_guard_exhausted_total", n);
            lines.push(line);
        }
    }

    lines
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn namespaces_follow_cloudwatch_rules() {
        for good in ["Sigil", "acme/sigil prod", "a.b-c_d#e:f"] {
            assert!(check_namespace(good).is_ok(), "{good}");
        }
        let long = "x".repeat(256);
        for bad in ["", ":x", "AWS/Sigil", "sigil\n", "sigïl", long.as_str()] {
            assert!(check_namespace(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(super::super::status_slot(503)), "5xx");
        assert_eq!(status_class(super::super::status_slot(200)), "2xx");
        assert_eq!(status_class(super::super::status_slot(700)), "other");
    }
}

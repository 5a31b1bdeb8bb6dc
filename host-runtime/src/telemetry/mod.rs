//! What the service tells its operators: metrics in memory, rendered as Prometheus text
//! ([`Metrics::render_prometheus`]) and as CloudWatch Embedded Metric Format lines ([`emf`]), and
//! structured logs ([`logging`]).
//!
//! Recording is on the hot path of every guarded call, so it takes no lock: every series is an
//! atomic counter in a table fixed when [`Metrics`] is made. Labels whose values come from outside
//! (tenants, rule ids, refusal codes, sink names) are interned into bounded tables
//! ([`LabelLimits`]); once a table is full, or for a value longer than [`MAX_LABEL_BYTES`] or
//! holding a control character, the call is counted under the value `other`. Memory therefore
//! never grows with traffic, whatever callers send.
//!
//! The metric names are a contract with the alert rules and alarms in `docs/deploy/`; they are
//! listed in [`METRIC_NAMES`] and kept stable.
//!
//! ```
//! use std::time::Duration;
//! use guard_core::{Action, Level};
//! use host_runtime::telemetry::{Assessed, CallRecord, Endpoint, LabelLimits, Metrics};
//!
//! let metrics = Metrics::new(LabelLimits::default());
//! metrics.record_call(&CallRecord {
//!     endpoint: Endpoint::Scan,
//!     status: 200,
//!     assessed: Some(Assessed { action: Action::Block, level: Level::Critical }),
//!     tenant: Some("acme"),
//!     rules: &["override.ignore_previous"],
//!     model_hit: true,
//!     verify: None,
//!     assess: Some(Duration::from_micros(180)),
//!     total: Duration::from_micros(240),
//! });
//! let mut text = String::new();
//! metrics.render_prometheus(&mut text);
//! assert!(text.contains(
//!     r#"sigil_requests_total{endpoint="scan",action="block",level="critical",tenant="acme"} 1"#
//! ));
//! ```

mod counters;
pub mod emf;
mod histogram;
mod labels;
pub mod logging;
mod prometheus;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use guard_core::{Action, Level};

use counters::Counters;
use histogram::Histogram;
pub use histogram::BUCKETS_SECONDS;
use labels::Interner;
pub use labels::{MAX_LABEL_BYTES, OTHER};
pub use prometheus::CONTENT_TYPE;

/// Every metric family this module renders, as Prometheus names them. EMF lines use the same
/// names (histograms as `NAME_p50`, `NAME_p99` and `NAME_count`, see [`emf`]).
pub const METRIC_NAMES: [&str; 21] = [
    "sigil_requests_total",
    "sigil_http_responses_total",
    "sigil_rule_hits_total",
    "sigil_model_hits_total",
    "sigil_verify_seconds",
    "sigil_assess_seconds",
    "sigil_call_seconds",
    "sigil_template_refusals_total",
    "sigil_incidents_open",
    "sigil_incidents_unacknowledged",
    "sigil_incident_oldest_unacknowledged_seconds",
    "sigil_outbox_depth",
    "sigil_outbox_deliveries_total",
    "sigil_guard_exhausted_total",
    "sigil_guard_instances",
    "sigil_vault_records_total",
    "sigil_vault_write_failures_total",
    "sigil_key_backend_calls_total",
    "sigil_key_backend_failovers_total",
    "sigil_build_info",
    "sigil_label_values_folded_total",
];

/// The guarded endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /v1/scan`: assess text.
    Scan,
    /// `POST /v1/guard`: verify a template, render it, assess the result.
    Guard,
}

impl Endpoint {
    /// Every endpoint, in label order.
    pub const ALL: [Endpoint; 2] = [Endpoint::Scan, Endpoint::Guard];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Scan => "scan",
            Endpoint::Guard => "guard",
        }
    }

    fn index(self) -> usize {
        match self {
            Endpoint::Scan => 0,
            Endpoint::Guard => 1,
        }
    }
}

/// Why a guard call was cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exhaustion {
    /// It ran past its epoch deadline.
    Deadline,
    /// It tried to grow its memory past the limit.
    Memory,
    /// It used up its fuel (when the engine meters fuel).
    Fuel,
}

impl Exhaustion {
    /// Every kind, in label order.
    pub const ALL: [Exhaustion; 3] = [Exhaustion::Deadline, Exhaustion::Memory, Exhaustion::Fuel];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Exhaustion::Deadline => "deadline",
            Exhaustion::Memory => "memory",
            Exhaustion::Fuel => "fuel",
        }
    }

    fn index(self) -> usize {
        match self {
            Exhaustion::Deadline => 0,
            Exhaustion::Memory => 1,
            Exhaustion::Fuel => 2,
        }
    }
}

/// What one attempt to deliver an outbox message came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryOutcome {
    /// The sink accepted it.
    Delivered,
    /// It failed and will be tried again.
    Retry,
    /// It failed for good (refused, or past its maximum age) and was moved aside.
    Dead,
}

impl DeliveryOutcome {
    /// Every outcome, in label order.
    pub const ALL: [DeliveryOutcome; 3] = [
        DeliveryOutcome::Delivered,
        DeliveryOutcome::Retry,
        DeliveryOutcome::Dead,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Retry => "retry",
            DeliveryOutcome::Dead => "dead",
        }
    }

    fn index(self) -> usize {
        match self {
            DeliveryOutcome::Delivered => 0,
            DeliveryOutcome::Retry => 1,
            DeliveryOutcome::Dead => 2,
        }
    }
}

const ACTIONS: [Action; 4] = [
    Action::Allow,
    Action::Warn,
    Action::Quarantine,
    Action::Block,
];

fn action_index(action: Action) -> usize {
    match action {
        Action::Allow => 0,
        Action::Warn => 1,
        Action::Quarantine => 2,
        Action::Block => 3,
    }
}

fn level_index(level: Level) -> usize {
    match level {
        Level::VeryLow => 0,
        Level::Low => 1,
        Level::Medium => 2,
        Level::High => 3,
        Level::Critical => 4,
    }
}

/// How many distinct values each open label keeps before folding the rest into `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelLimits {
    /// Tenants (`tenant` of `sigil_requests_total`).
    pub tenants: usize,
    /// Rule ids (`rule` of `sigil_rule_hits_total`); the compiled policy has a few hundred.
    pub rules: usize,
    /// Template refusal codes (`code` of `sigil_template_refusals_total`).
    pub refusal_codes: usize,
    /// Escalation sinks (`sink` of `sigil_outbox_deliveries_total`).
    pub sinks: usize,
}

impl Default for LabelLimits {
    fn default() -> Self {
        LabelLimits {
            tenants: 100,
            rules: 1000,
            refusal_codes: 64,
            sinks: 32,
        }
    }
}

/// The outcome of an assessment, as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assessed {
    /// What the policy did.
    pub action: Action,
    /// The risk level.
    pub level: Level,
}

/// One guarded HTTP call, as the handler saw it. It holds no text of the prompt: only labels
/// and durations.
#[derive(Debug, Clone, Copy)]
pub struct CallRecord<'a> {
    /// Which endpoint answered.
    pub endpoint: Endpoint,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The assessment's action and level, when the call got as far as an assessment.
    pub assessed: Option<Assessed>,
    /// The tenant the call named (none is counted as `none`).
    pub tenant: Option<&'a str>,
    /// Ids of the rules that matched (findings whose source is a rule).
    pub rules: &'a [&'a str],
    /// Whether the model contributed a finding.
    pub model_hit: bool,
    /// Time spent verifying the template (`/v1/guard`).
    pub verify: Option<Duration>,
    /// Time spent in the assessment.
    pub assess: Option<Duration>,
    /// The whole call, from request to response.
    pub total: Duration,
}

/// What the stores hold right now; the service reads it periodically and hands it over.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StoreGauges {
    /// Open incidents by level, lowest level first (the order of [`Level::ALL`]).
    pub incidents_open: [u64; 5],
    /// Open incidents nobody has acknowledged.
    pub incidents_unacknowledged: u64,
    /// Age of the oldest unacknowledged incident; zero when there is none.
    pub oldest_unacknowledged: Duration,
    /// Messages waiting in the escalation outbox.
    pub outbox_depth: u64,
}

/// Status codes get one series each from 100 to 599; anything else is `other`.
const STATUS_SLOTS: usize = 501;

fn status_slot(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status - 100),
        _ => STATUS_SLOTS - 1,
    }
}

/// The service's metrics. Share it by `Arc`; every method takes `&self` and none takes a lock.
/// Counters are striped across threads (one copy per core, summed when read) so that cores
/// rarely write the same cache line.
#[derive(Debug)]
pub struct Metrics {
    tenants: Interner,
    rules: Interner,
    refusal_codes: Interner,
    sinks: Interner,
    /// Per tenant slot, endpoint, action, level.
    requests: Counters,
    /// Per endpoint and status slot.
    responses: Counters,
    rule_hits: Counters,
    model_hits: Counters,
    verify: Histogram,
    assess: Histogram,
    call: [Histogram; 2],
    refusals: Counters,
    incidents_open: [AtomicU64; 5],
    incidents_unacknowledged: AtomicU64,
    /// Seconds as `f64` bits.
    oldest_unacknowledged: AtomicU64,
    outbox_depth: AtomicU64,
    /// Per sink slot and outcome.
    deliveries: Counters,
    exhausted: Counters,
    guard_instances: AtomicU64,
    /// Records sealed and opened, key-backend calls and failovers, as the vault counts them.
    vault: [AtomicU64; 4],
    vault_write_failures: AtomicU64,
    /// Values counted under `other` because their table was full or the value unfit, per label.
    folded: Counters,
}

const REQUEST_CELLS: usize = 2 * 4 * 5;

/// The open labels, in the order of `Metrics::folded`.
const FOLDED_LABELS: [&str; 4] = ["tenant", "rule", "code", "sink"];

impl Metrics {
    /// Empty metrics with room for `limits` distinct values per open label.
    pub fn new(limits: LabelLimits) -> Self {
        let tenants = Interner::new(limits.tenants);
        let rules = Interner::new(limits.rules);
        let refusal_codes = Interner::new(limits.refusal_codes);
        let sinks = Interner::new(limits.sinks);
        Metrics {
            requests: Counters::new(tenants.slots() * REQUEST_CELLS),
            responses: Counters::new(2 * STATUS_SLOTS),
            rule_hits: Counters::new(rules.slots()),
            model_hits: Counters::new(2),
            verify: Histogram::default(),
            assess: Histogram::default(),
            call: Default::default(),
            refusals: Counters::new(refusal_codes.slots()),
            incidents_open: Default::default(),
            incidents_unacknowledged: AtomicU64::new(0),
            oldest_unacknowledged: AtomicU64::new(0f64.to_bits()),
            outbox_depth: AtomicU64::new(0),
            deliveries: Counters::new(sinks.slots() * 3),
            exhausted: Counters::new(3),
            guard_instances: AtomicU64::new(0),
            vault: Default::default(),
            vault_write_failures: AtomicU64::new(0),
            folded: Counters::new(4),
            tenants,
            rules,
            refusal_codes,
            sinks,
        }
    }

    /// Records one call: its response, its assessment if it had one, and its durations.
    pub fn record_call(&self, call: &CallRecord<'_>) {
        self.record_response(call.endpoint, call.status, call.total);
        if let Some(assessed) = call.assessed {
            self.record_assessment(
                call.endpoint,
                call.tenant,
                assessed,
                call.rules,
                call.model_hit,
            );
        }
        if let Some(verify) = call.verify {
            self.observe_verify(verify);
        }
        if let Some(assess) = call.assess {
            self.observe_assess(assess);
        }
    }

    /// Records the answer of one HTTP call to a guarded endpoint and how long the call took.
    pub fn record_response(&self, endpoint: Endpoint, status: u16, total: Duration) {
        let e = endpoint.index();
        self.responses
            .add(e * STATUS_SLOTS + status_slot(status), 1);
        if let Some(h) = self.call.get(e) {
            h.observe(total);
        }
    }

    /// Records one assessment (a batch of texts in one call records one per text).
    pub fn record_assessment(
        &self,
        endpoint: Endpoint,
        tenant: Option<&str>,
        assessed: Assessed,
        rules: &[&str],
        model_hit: bool,
    ) {
        let t = self.slot(0, &self.tenants, tenant.unwrap_or("none"));
        let cell = ((t * 2 + endpoint.index()) * 4 + action_index(assessed.action)) * 5
            + level_index(assessed.level);
        self.requests.add(cell, 1);
        for rule in rules {
            let r = self.slot(1, &self.rules, rule);
            self.rule_hits.add(r, 1);
        }
        if model_hit {
            self.model_hits.add(endpoint.index(), 1);
        }
    }

    /// Records the time a template verification took.
    pub fn observe_verify(&self, elapsed: Duration) {
        self.verify.observe(elapsed);
    }

    /// Records the time an assessment took.
    pub fn observe_assess(&self, elapsed: Duration) {
        self.assess.observe(elapsed);
    }

    /// Counts a template the guard refused, by the refusal's stable code.
    pub fn template_refused(&self, code: &str) {
        let c = self.slot(2, &self.refusal_codes, code);
        self.refusals.add(c, 1);
    }

    /// Counts a guard call cut short by a limit.
    pub fn guard_exhausted(&self, kind: Exhaustion) {
        self.exhausted.add(kind.index(), 1);
    }

    /// Sets how many guard instances the pool holds.
    pub fn set_guard_instances(&self, instances: u64) {
        self.guard_instances.store(instances, Ordering::Relaxed);
    }

    /// Sets the gauges read from the incident store and the outbox.
    pub fn set_store_gauges(&self, gauges: &StoreGauges) {
        for (cell, value) in self.incidents_open.iter().zip(gauges.incidents_open) {
            cell.store(value, Ordering::Relaxed);
        }
        self.incidents_unacknowledged
            .store(gauges.incidents_unacknowledged, Ordering::Relaxed);
        self.oldest_unacknowledged.store(
            gauges.oldest_unacknowledged.as_secs_f64().to_bits(),
            Ordering::Relaxed,
        );
        self.outbox_depth
            .store(gauges.outbox_depth, Ordering::Relaxed);
    }

    /// Copies the vault's own counters (they live in the vault; the pump copies them).
    pub fn set_vault_counts(&self, counts: &VaultCounts) {
        for (cell, value) in self.vault.iter().zip([
            counts.sealed,
            counts.opened,
            counts.backend_calls,
            counts.failovers,
        ]) {
            cell.store(value, Ordering::Relaxed);
        }
    }

    /// Counts an input that was to be quarantined but could not be stored encrypted.
    pub fn vault_write_failed(&self) {
        self.vault_write_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one delivery attempt of an outbox message to a sink (by its configured name).
    pub fn delivery(&self, sink: &str, outcome: DeliveryOutcome) {
        let s = self.slot(3, &self.sinks, sink);
        self.deliveries.add(s * 3 + outcome.index(), 1);
    }

    /// Appends the Prometheus text exposition (format 0.0.4) of every metric to `out`.
    pub fn render_prometheus(&self, out: &mut String) {
        prometheus::render(self, out);
    }

    /// The slot of `value` in `table`, counting a fold when it lands in `other`.
    fn slot(&self, label: usize, table: &Interner, value: &str) -> usize {
        match table.index(value) {
            Some(slot) => slot,
            None => {
                self.folded.add(label, 1);
                table.other()
            }
        }
    }

    /// Every counter and gauge as plain numbers, for renderers that need a consistent view or
    /// differences between two moments.
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            requests: self.requests.load(),
            responses: self.responses.load(),
            rule_hits: self.rule_hits.load(),
            model_hits: self.model_hits.load(),
            verify: self.verify.snapshot(),
            assess: self.assess.snapshot(),
            call: [self.call[0].snapshot(), self.call[1].snapshot()],
            refusals: self.refusals.load(),
            incidents_open: self
                .incidents_open
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            incidents_unacknowledged: self.incidents_unacknowledged.load(Ordering::Relaxed),
            oldest_unacknowledged: f64::from_bits(
                self.oldest_unacknowledged.load(Ordering::Relaxed),
            ),
            outbox_depth: self.outbox_depth.load(Ordering::Relaxed),
            deliveries: self.deliveries.load(),
            exhausted: self.exhausted.load(),
            guard_instances: self.guard_instances.load(Ordering::Relaxed),
            vault: VaultCounts {
                sealed: self.vault[0].load(Ordering::Relaxed),
                opened: self.vault[1].load(Ordering::Relaxed),
                backend_calls: self.vault[2].load(Ordering::Relaxed),
                failovers: self.vault[3].load(Ordering::Relaxed),
            },
            vault_write_failures: self.vault_write_failures.load(Ordering::Relaxed),
            folded: self.folded.load(),
        }
    }
}

/// Plain copies of every series of [`Metrics`], indexed like its tables.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    requests: Vec<u64>,
    responses: Vec<u64>,
    rule_hits: Vec<u64>,
    model_hits: Vec<u64>,
    verify: histogram::Counts,
    assess: histogram::Counts,
    call: [histogram::Counts; 2],
    refusals: Vec<u64>,
    incidents_open: Vec<u64>,
    incidents_unacknowledged: u64,
    oldest_unacknowledged: f64,
    outbox_depth: u64,
    deliveries: Vec<u64>,
    exhausted: Vec<u64>,
    guard_instances: u64,
    vault: VaultCounts,
    vault_write_failures: u64,
    folded: Vec<u64>,
}

/// The vault's counters, as [`Metrics::set_vault_counts`] takes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VaultCounts {
    /// Records sealed.
    pub sealed: u64,
    /// Records opened.
    pub opened: u64,
    /// Calls to the key backend (KMS requests, HSM operations).
    pub backend_calls: u64,
    /// Times the key backend failed over to another region (or back).
    pub failovers: u64,
}

/// A request cell's labels back from its index.
fn request_labels(cell: usize) -> (usize, Endpoint, Action, Level) {
    let level = Level::ALL.get(cell % 5).copied().unwrap_or(Level::VeryLow);
    let action = ACTIONS.get(cell / 5 % 4).copied().unwrap_or(Action::Allow);
    let endpoint = Endpoint::ALL
        .get(cell / 20 % 2)
        .copied()
        .unwrap_or(Endpoint::Scan);
    (cell / REQUEST_CELLS, endpoint, action, level)
}

/// The label value of a status slot.
fn status_label(slot: usize) -> String {
    if slot + 1 >= STATUS_SLOTS {
        OTHER.to_string()
    } else {
        (slot + 100).to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn request_cells_map_back_to_their_labels() {
        let m = Metrics::new(LabelLimits::default());
        for t in [0usize, 3] {
            for e in Endpoint::ALL {
                for a in ACTIONS {
                    for l in Level::ALL {
                        let cell = ((t * 2 + e.index()) * 4 + action_index(a)) * 5 + level_index(l);
                        assert!(cell < m.requests.load().len());
                        assert_eq!(request_labels(cell), (t, e, a, l));
                    }
                }
            }
        }
    }

    #[test]
    fn status_codes_outside_the_http_range_are_other() {
        assert_eq!(status_label(status_slot(200)), "200");
        assert_eq!(status_label(status_slot(599)), "599");
        assert_eq!(status_label(status_slot(100)), "100");
        assert_eq!(status_label(status_slot(99)), "other");
        assert_eq!(status_label(status_slot(600)), "other");
    }
}

//! The Prometheus text exposition format, version 0.0.4.
//!
//! Families whose series all exist from the start (closed label sets: exhaustion kinds, delivery
//! outcomes of a known sink, histograms) render every series, zeros included, so that
//! `increase()` sees the first event. Families over open label sets render only the series that
//! have counted something.

use std::fmt::Write as _;

use guard_core::Level;

use super::histogram::{Counts, BUCKETS_SECONDS};
use super::{
    request_labels, status_label, DeliveryOutcome, Endpoint, Exhaustion, Metrics, Snapshot,
    FOLDED_LABELS, STATUS_SLOTS,
};

/// The `Content-Type` of [`Metrics::render_prometheus`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Appends `value` escaped for a label value: backslash, double quote and line feed.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample line: `name{k="v",...} value`.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_into(out, v);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

fn histogram(out: &mut String, name: &str, labels: &[(&str, &str)], counts: &Counts) {
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    let mut with_le: Vec<(&str, &str)> = labels.to_vec();
    with_le.push(("le", ""));
    let last = with_le.len() - 1;
    for (i, n) in counts.buckets.iter().enumerate() {
        cumulative = cumulative.saturating_add(*n);
        let le = BUCKETS_SECONDS.get(i).copied().unwrap_or("+Inf");
        if let Some(slot) = with_le.get_mut(last) {
            slot.1 = le;
        }
        sample(out, &bucket, &with_le, cumulative);
    }
    sample(out, &format!("{name}_sum"), labels, counts.sum_seconds());
    sample(out, &format!("{name}_count"), labels, cumulative);
}

pub(super) fn render(m: &Metrics, out: &mut String) {
    let s: Snapshot = m.snapshot();

    header(
        out,
        "sigil_requests_total",
        "counter",
        "Assessments made, by endpoint, action, level and tenant.",
    );
    let tenants = m.tenants.sorted();
    for (slot, tenant) in &tenants {
        for cell in 0..super::REQUEST_CELLS {
            let index = slot * super::REQUEST_CELLS + cell;
            let n = s.requests.get(index).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let (_, endpoint, action, level) = request_labels(index);
            let labels = [
                ("endpoint", endpoint.as_str()),
                ("action", action.as_str()),
                ("level", level.as_str()),
                ("tenant", tenant),
            ];
            sample(out, "sigil_requests_total", &labels, n);
        }
    }

    header(
        out,
        "sigil_http_responses_total",
        "counter",
        "Answers of the guarded endpoints, by HTTP status.",
    );
    for endpoint in Endpoint::ALL {
        for slot in 0..STATUS_SLOTS {
            let n = s
                .responses
                .get(endpoint.index() * STATUS_SLOTS + slot)
                .copied()
                .unwrap_or(0);
            if n > 0 {
                let status = status_label(slot);
                let labels = [("endpoint", endpoint.as_str()), ("status", status.as_str())];
                sample(out, "sigil_http_responses_total", &labels, n);
            }
        }
    }

    header(
        out,
        "sigil_rule_hits_total",
        "counter",
        "Findings of each rule of the policy.",
    );
    for (slot, rule) in m.rules.sorted() {
        let n = s.rule_hits.get(slot).copied().unwrap_or(0);
        if n > 0 {
            sample(out, "sigil_rule_hits_total", &[("rule", rule)], n);
        }
    }

    header(
        out,
        "sigil_model_hits_total",
        "counter",
        "Assessments in which the model contributed a finding.",
    );
    for endpoint in Endpoint::ALL {
        let n = s.model_hits.get(endpoint.index()).copied().unwrap_or(0);
        sample(
            out,
            "sigil_model_hits_total",
            &[("endpoint", endpoint.as_str())],
            n,
        );
    }

    header(
        out,
        "sigil_verify_seconds",
        "histogram",
        "Time to verify a signed template.",
    );
    histogram(out, "sigil_verify_seconds", &[], &s.verify);
    header(
        out,
        "sigil_assess_seconds",
        "histogram",
        "Time to assess a prompt.",
    );
    histogram(out, "sigil_assess_seconds", &[], &s.assess);
    header(
        out,
        "sigil_call_seconds",
        "histogram",
        "Time of a whole guarded call, from request to response.",
    );
    for (endpoint, counts) in Endpoint::ALL.iter().zip(&s.call) {
        histogram(
            out,
            "sigil_call_seconds",
            &[("endpoint", endpoint.as_str())],
            counts,
        );
    }

    header(
        out,
        "sigil_template_refusals_total",
        "counter",
        "Templates the guard refused, by refusal code.",
    );
    for (slot, code) in m.refusal_codes.sorted() {
        let n = s.refusals.get(slot).copied().unwrap_or(0);
        if n > 0 {
            sample(out, "sigil_template_refusals_total", &[("code", code)], n);
        }
    }

    header(
        out,
        "sigil_incidents_open",
        "gauge",
        "Open incidents, by level.",
    );
    for (level, n) in Level::ALL.iter().zip(&s.incidents_open) {
        sample(out, "sigil_incidents_open", &[("level", level.as_str())], n);
    }
    header(
        out,
        "sigil_incidents_unacknowledged",
        "gauge",
        "Open incidents nobody has acknowledged.",
    );
    sample(
        out,
        "sigil_incidents_unacknowledged",
        &[],
        s.incidents_unacknowledged,
    );
    header(
        out,
        "sigil_incident_oldest_unacknowledged_seconds",
        "gauge",
        "Age of the oldest unacknowledged incident (0 when there is none).",
    );
    sample(
        out,
        "sigil_incident_oldest_unacknowledged_seconds",
        &[],
        s.oldest_unacknowledged,
    );

    header(
        out,
        "sigil_outbox_depth",
        "gauge",
        "Escalation messages waiting for delivery.",
    );
    sample(out, "sigil_outbox_depth", &[], s.outbox_depth);
    header(
        out,
        "sigil_outbox_deliveries_total",
        "counter",
        "Delivery attempts of escalation messages, by sink and outcome.",
    );
    for (slot, sink) in m.sinks.sorted() {
        let counts: Vec<u64> = (0..3)
            .map(|o| s.deliveries.get(slot * 3 + o).copied().unwrap_or(0))
            .collect();
        if counts.iter().all(|n| *n == 0) {
            continue;
        }
        for (outcome, n) in DeliveryOutcome::ALL.iter().zip(counts) {
            let labels = [("sink", sink), ("outcome", outcome.as_str())];
            sample(out, "sigil_outbox_deliveries_total", &labels, n);
        }
    }

    header(
        out,
        "sigil_guard_exhausted_total",
        "counter",
        "Guard calls cut short by a limit, by kind.",
    );
    for kind in Exhaustion::ALL {
        let n = s.exhausted.get(kind.index()).copied().unwrap_or(0);
        sample(
            out,
            "sigil_guard_exhausted_total",
            &[("kind", kind.as_str())],
            n,
        );
    }
    header(
        out,
        "sigil_guard_instances",
        "gauge",
        "Guard instances in the pool.",
    );
    sample(out, "sigil_guard_instances", &[], s.guard_instances);
    header(
        out,
        "sigil_vault_records_total",
        "counter",
        "Sensitive records encrypted (sealed) and decrypted (opened) by the vault.",
    );
    sample(
        out,
        "sigil_vault_records_total",
        &[("op", "sealed")],
        s.vault.sealed,
    );
    sample(
        out,
        "sigil_vault_records_total",
        &[("op", "opened")],
        s.vault.opened,
    );
    header(
        out,
        "sigil_vault_write_failures_total",
        "counter",
        "Inputs to be quarantined that could not be stored encrypted (key backend unavailable).",
    );
    sample(
        out,
        "sigil_vault_write_failures_total",
        &[],
        s.vault_write_failures,
    );
    header(
        out,
        "sigil_key_backend_calls_total",
        "counter",
        "Calls to the master key's backend (KMS requests, HSM operations).",
    );
    sample(
        out,
        "sigil_key_backend_calls_total",
        &[],
        s.vault.backend_calls,
    );
    header(
        out,
        "sigil_key_backend_failovers_total",
        "counter",
        "Times the key backend switched region: to a replica, or back to the primary.",
    );
    sample(
        out,
        "sigil_key_backend_failovers_total",
        &[],
        s.vault.failovers,
    );

    header(
        out,
        "sigil_build_info",
        "gauge",
        "The running version; always 1.",
    );
    sample(
        out,
        "sigil_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    header(
        out,
        "sigil_label_values_folded_total",
        "counter",
        "Label values counted under `other`: past the label's cap, too long or unfit.",
    );
    for (label, n) in FOLDED_LABELS.iter().zip(&s.folded) {
        sample(
            out,
            "sigil_label_values_folded_total",
            &[("label", label)],
            n,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        sample(&mut out, "m", &[("a", "x\\y\"z\nw")], 1);
        assert_eq!(out, "m{a=\"x\\\\y\\\"z\\nw\"} 1\n");
    }
}

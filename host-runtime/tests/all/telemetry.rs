//! The service's metrics as Prometheus scrapes them and as CloudWatch reads EMF lines.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use guard_core::{Action, Level};
use host_runtime::telemetry::emf::{EmfTarget, EmfWriter};
use host_runtime::telemetry::{
    Assessed, CallRecord, DeliveryOutcome, Endpoint, Exhaustion, LabelLimits, Metrics, StoreGauges,
    BUCKETS_SECONDS, METRIC_NAMES,
};
use serde_json::Value;

fn call<'a>(
    tenant: Option<&'a str>,
    level: Level,
    action: Action,
    rules: &'a [&'a str],
) -> CallRecord<'a> {
    CallRecord {
        endpoint: Endpoint::Scan,
        status: 200,
        assessed: Some(Assessed { action, level }),
        tenant,
        rules,
        model_hit: !rules.is_empty(),
        verify: None,
        assess: Some(Duration::from_micros(150)),
        total: Duration::from_micros(220),
    }
}

/// A registry with every family holding something, hostile label values included.
pub fn populated() -> Metrics {
    let m = Metrics::new(LabelLimits {
        tenants: 3,
        rules: 4,
        refusal_codes: 8,
        sinks: 4,
    });
    m.record_call(&call(
        Some("acme"),
        Level::Critical,
        Action::Block,
        &["override.ignore_previous", "exfil.markdown_image"],
    ));
    m.record_call(&call(
        Some("acme"),
        Level::Critical,
        Action::Block,
        &["override.ignore_previous"],
    ));
    m.record_call(&call(
        Some("quote\"back\\slash"),
        Level::High,
        Action::Quarantine,
        &["jailbreak.dan"],
    ));
    m.record_call(&call(None, Level::VeryLow, Action::Allow, &[]));
    // Past the cap of three tenants, unfit values: all `other`.
    m.record_call(&call(Some("late-tenant"), Level::Medium, Action::Warn, &[]));
    m.record_call(&call(Some("line\nbreak"), Level::Low, Action::Allow, &[]));
    m.record_call(&call(
        Some(&"x".repeat(10_000)),
        Level::Low,
        Action::Allow,
        &[],
    ));
    m.record_call(&CallRecord {
        endpoint: Endpoint::Guard,
        status: 200,
        assessed: Some(Assessed {
            action: Action::Allow,
            level: Level::Low,
        }),
        tenant: Some("acme"),
        rules: &[],
        model_hit: false,
        verify: Some(Duration::from_micros(60)),
        assess: Some(Duration::from_micros(300)),
        total: Duration::from_millis(2),
    });
    m.record_call(&CallRecord {
        endpoint: Endpoint::Guard,
        status: 422,
        assessed: None,
        tenant: Some("acme"),
        rules: &[],
        model_hit: false,
        verify: Some(Duration::from_micros(55)),
        assess: None,
        total: Duration::from_micros(90),
    });
    m.record_response(Endpoint::Scan, 503, Duration::from_secs(30));
    m.template_refused("bad_signature");
    m.template_refused("version_rollback");
    m.guard_exhausted(Exhaustion::Deadline);
    m.set_guard_instances(16);
    m.set_store_gauges(&StoreGauges {
        incidents_open: [0, 0, 1, 2, 3],
        incidents_unacknowledged: 4,
        oldest_unacknowledged: Duration::from_secs(900),
        outbox_depth: 7,
    });
    m.delivery("pager", DeliveryOutcome::Delivered);
    m.delivery("ops-webhook", DeliveryOutcome::Retry);
    m.delivery("ops-webhook", DeliveryOutcome::Dead);
    m
}

fn render(m: &Metrics) -> String {
    let mut text = String::new();
    m.render_prometheus(&mut text);
    text
}

/// `name{labels}` -> value, for every sample line.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse::<f64>().unwrap())
        })
        .collect()
}

#[test]
fn the_exposition_has_every_family_with_help_and_type() {
    let text = render(&populated());
    let mut declared = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(
                METRIC_NAMES.contains(&name),
                "{name} is not in METRIC_NAMES"
            );
            current = Some(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            assert_eq!(Some(name), current.as_deref(), "TYPE follows its HELP");
            let kind = parts.next().unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(declared.insert(name.to_string()), "{name} declared twice");
            continue;
        }
        let family = current.as_deref().unwrap();
        let name = line.split(['{', ' ']).next().unwrap();
        let base = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_sum"))
            .or_else(|| name.strip_suffix("_count"))
            .filter(|b| b.ends_with("_seconds"))
            .unwrap_or(name);
        assert_eq!(base, family, "sample `{line}` outside its family");
    }
    let expected: BTreeSet<String> = METRIC_NAMES.iter().map(|s| s.to_string()).collect();
    assert_eq!(declared, expected);
}

#[test]
fn samples_count_what_was_recorded() {
    let s = samples(&render(&populated()));
    let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("no series {k}"));
    assert_eq!(
        get(
            r#"sigil_requests_total{endpoint="scan",action="block",level="critical",tenant="acme"}"#
        ),
        2.0
    );
    assert_eq!(
        get(
            r#"sigil_requests_total{endpoint="scan",action="quarantine",level="high",tenant="quote\"back\\slash"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            r#"sigil_requests_total{endpoint="scan",action="allow",level="very_low",tenant="none"}"#
        ),
        1.0
    );
    // Three tenants fill the cap (acme, the quoted one, none): the rest are other.
    assert_eq!(
        get(r#"sigil_requests_total{endpoint="scan",action="warn",level="medium",tenant="other"}"#),
        1.0
    );
    assert_eq!(
        get(r#"sigil_requests_total{endpoint="scan",action="allow",level="low",tenant="other"}"#),
        2.0
    );
    assert_eq!(
        get(r#"sigil_label_values_folded_total{label="tenant"}"#),
        3.0
    );
    assert_eq!(
        get(r#"sigil_rule_hits_total{rule="override.ignore_previous"}"#),
        2.0
    );
    assert_eq!(get(r#"sigil_model_hits_total{endpoint="scan"}"#), 3.0);
    assert_eq!(
        get(r#"sigil_http_responses_total{endpoint="guard",status="422"}"#),
        1.0
    );
    assert_eq!(
        get(r#"sigil_http_responses_total{endpoint="scan",status="503"}"#),
        1.0
    );
    assert_eq!(
        get(r#"sigil_template_refusals_total{code="bad_signature"}"#),
        1.0
    );
    assert_eq!(get(r#"sigil_incidents_open{level="critical"}"#), 3.0);
    assert_eq!(get("sigil_incidents_unacknowledged"), 4.0);
    assert_eq!(get("sigil_incident_oldest_unacknowledged_seconds"), 900.0);
    assert_eq!(get("sigil_outbox_depth"), 7.0);
    assert_eq!(
        get(r#"sigil_outbox_deliveries_total{sink="ops-webhook",outcome="dead"}"#),
        1.0
    );
    assert_eq!(
        get(r#"sigil_outbox_deliveries_total{sink="ops-webhook",outcome="delivered"}"#),
        0.0,
        "a seen sink shows every outcome"
    );
    assert_eq!(get(r#"sigil_guard_exhausted_total{kind="deadline"}"#), 1.0);
    assert_eq!(
        get(r#"sigil_guard_exhausted_total{kind="fuel"}"#),
        0.0,
        "closed label sets start at zero"
    );
    assert_eq!(get("sigil_guard_instances"), 16.0);
    assert_eq!(
        get(&format!(
            "sigil_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert!(!s
        .keys()
        .any(|k| k.contains("xxxxxxxxxx") || k.contains("late-tenant")));

    // Histograms: cumulative buckets, +Inf equal to the count, a sum in seconds.
    assert_eq!(get("sigil_verify_seconds_count"), 2.0);
    assert_eq!(get(r#"sigil_verify_seconds_bucket{le="0.00005"}"#), 0.0);
    assert_eq!(get(r#"sigil_verify_seconds_bucket{le="0.0001"}"#), 2.0);
    assert!((get("sigil_verify_seconds_sum") - 0.000115).abs() < 1e-12);
    let scan_calls = get(r#"sigil_call_seconds_count{endpoint="scan"}"#);
    assert_eq!(scan_calls, 8.0);
    assert_eq!(
        get(r#"sigil_call_seconds_bucket{endpoint="scan",le="+Inf"}"#),
        scan_calls
    );
    assert_eq!(
        get(r#"sigil_call_seconds_bucket{endpoint="scan",le="10"}"#),
        7.0,
        "the 30 s call is only in +Inf"
    );
    let mut previous = 0.0;
    for le in BUCKETS_SECONDS.iter().chain(&["+Inf"]) {
        let n = get(&format!(
            "sigil_call_seconds_bucket{{endpoint=\"scan\",le=\"{le}\"}}"
        ));
        assert!(n >= previous, "buckets are cumulative");
        previous = n;
    }
}

#[test]
fn counts_are_exact_under_concurrent_recording() {
    let m = Arc::new(Metrics::new(LabelLimits::default()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..5_000 {
                    let tenant = format!("t{}", (i + t) % 150);
                    m.record_call(&call(
                        Some(&tenant),
                        Level::High,
                        Action::Quarantine,
                        &["r1", "r2"],
                    ));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = samples(&render(&m));
    let requests: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("sigil_requests_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(requests, 20_000.0);
    let tenants = s
        .keys()
        .filter(|k| k.starts_with("sigil_requests_total{"))
        .count();
    assert_eq!(tenants, 101, "100 tenants kept and other");
    assert_eq!(s[r#"sigil_rule_hits_total{rule="r1"}"#], 20_000.0);
    assert_eq!(s[r#"sigil_call_seconds_count{endpoint="scan"}"#], 20_000.0);
}

#[test]
fn promtool_accepts_the_exposition() {
    let Ok(status) = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
    else {
        println!("promtool is not on PATH (Debian package `prometheus`); check skipped");
        return;
    };
    assert!(status.success());
    for metrics in [populated(), Metrics::new(LabelLimits::default())] {
        let text = render(&metrics);
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// EMF

const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

fn members(object: &Value, allowed: &[&str], required: &[&str], what: &str) {
    let map = object
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object"));
    for key in map.keys() {
        assert!(
            allowed.contains(&key.as_str()),
            "{what} has the unknown member {key}"
        );
    }
    for key in required {
        assert!(map.contains_key(*key), "{what} lacks {key}");
    }
}

/// Checks one line against the Embedded Metric Format specification and returns the metric
/// names and values it defines.
pub fn check_emf_line(line: &str) -> Vec<(String, Value, BTreeMap<String, String>)> {
    assert!(line.len() <= 256 * 1024, "an EMF event is at most 256 KB");
    let root: Value = serde_json::from_str(line).unwrap();
    let root = root.as_object().expect("the root is an object");
    let aws = root.get("_aws").expect("the root has _aws");
    members(
        aws,
        &["Timestamp", "CloudWatchMetrics"],
        &["Timestamp", "CloudWatchMetrics"],
        "_aws",
    );
    assert!(
        aws["Timestamp"].as_u64().is_some(),
        "Timestamp is milliseconds since the epoch"
    );
    let directives = aws["CloudWatchMetrics"]
        .as_array()
        .expect("CloudWatchMetrics is an array");
    assert!(!directives.is_empty());
    let mut defined = Vec::new();
    for directive in directives {
        members(
            directive,
            &["Namespace", "Dimensions", "Metrics"],
            &["Namespace", "Dimensions", "Metrics"],
            "a MetricDirective",
        );
        let namespace = directive["Namespace"]
            .as_str()
            .expect("Namespace is a string");
        assert!((1..=255).contains(&namespace.len()));
        let sets = directive["Dimensions"]
            .as_array()
            .expect("Dimensions is an array");
        let mut dimension_values = BTreeMap::new();
        for set in sets {
            let set = set.as_array().expect("a DimensionSet is an array");
            assert!(set.len() <= 30, "at most 30 dimensions in a set");
            for key in set {
                let key = key.as_str().expect("a dimension is named by a string");
                assert!((1..=255).contains(&key.len()) && !key.starts_with(':'));
                let value = root
                    .get(key)
                    .unwrap_or_else(|| panic!("dimension {key} is not in the root"));
                let value = value
                    .as_str()
                    .unwrap_or_else(|| panic!("dimension {key} is not a string"));
                assert!(
                    (1..=1024).contains(&value.chars().count()),
                    "dimension {key} = {value:?}"
                );
                dimension_values.insert(key.to_string(), value.to_string());
            }
        }
        let metrics = directive["Metrics"]
            .as_array()
            .expect("Metrics is an array");
        assert!(
            (1..=100).contains(&metrics.len()),
            "1 to 100 metrics per directive"
        );
        for metric in metrics {
            members(
                metric,
                &["Name", "Unit", "StorageResolution"],
                &["Name"],
                "a MetricDefinition",
            );
            let name = metric["Name"].as_str().expect("Name is a string");
            assert!((1..=255).contains(&name.len()));
            if let Some(unit) = metric.get("Unit") {
                assert!(UNITS.contains(&unit.as_str().unwrap()), "unit {unit}");
            }
            let value = root
                .get(name)
                .unwrap_or_else(|| panic!("metric {name} is not in the root"));
            match value {
                Value::Number(_) => {}
                Value::Array(values) => {
                    assert!(values.len() <= 100 && values.iter().all(Value::is_number));
                }
                other => panic!("metric {name} is {other}"),
            }
            defined.push((name.to_string(), value.clone(), dimension_values.clone()));
        }
    }
    defined
}

fn emf_lines(
    writer: &mut EmfWriter,
    timestamp_ms: u64,
) -> Vec<(String, Value, BTreeMap<String, String>)> {
    let mut text = String::new();
    writer.render(timestamp_ms, &mut text);
    text.lines().flat_map(check_emf_line).collect()
}

fn value_of(
    lines: &[(String, Value, BTreeMap<String, String>)],
    name: &str,
    dims: &[(&str, &str)],
) -> Option<f64> {
    lines
        .iter()
        .filter(|(n, _, d)| {
            n == name
                && dims
                    .iter()
                    .all(|(k, v)| d.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v, _)| v.as_f64().unwrap())
        .reduce(|a, b| a + b)
}

#[test]
fn emf_lines_meet_the_specification_and_report_increases() {
    let metrics = Arc::new(populated());
    let mut writer = EmfWriter::new(metrics.clone(), "Sigil/test", &EmfTarget::Stdout).unwrap();
    let first = emf_lines(&mut writer, 1_767_225_600_000);
    let acme_blocks = [
        ("endpoint", "scan"),
        ("action", "block"),
        ("level", "critical"),
        ("tenant", "acme"),
    ];
    assert_eq!(
        value_of(&first, "sigil_requests_total", &acme_blocks),
        Some(2.0)
    );
    assert_eq!(
        value_of(&first, "sigil_requests_total", &[("action", "block")]),
        Some(2.0)
    );
    assert_eq!(
        value_of(
            &first,
            "sigil_http_responses_total",
            &[("status_class", "5xx")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &first,
            "sigil_guard_exhausted_total",
            &[("kind", "deadline")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &first,
            "sigil_outbox_deliveries_total",
            &[("outcome", "dead")]
        ),
        Some(1.0)
    );
    assert_eq!(value_of(&first, "sigil_outbox_depth", &[]), Some(7.0));
    assert_eq!(
        value_of(&first, "sigil_incidents_open", &[("level", "high")]),
        Some(2.0)
    );
    assert_eq!(
        value_of(&first, "sigil_verify_seconds_count", &[]),
        Some(2.0)
    );
    let p99 = value_of(&first, "sigil_verify_seconds_p99", &[]).unwrap();
    assert!(p99 > 0.00005 && p99 <= 0.0001, "{p99}");
    assert_eq!(
        value_of(&first, "sigil_call_seconds_count", &[("endpoint", "scan")]),
        Some(8.0)
    );
    let scan_p99 = value_of(&first, "sigil_call_seconds_p99", &[("endpoint", "scan")]).unwrap();
    assert_eq!(scan_p99, 10.0, "the 30 s call is past the last bound");

    // The next flush reports only what happened since.
    metrics.record_call(&call(Some("acme"), Level::Critical, Action::Block, &[]));
    metrics.record_call(&call(Some("acme"), Level::Critical, Action::Block, &[]));
    metrics.record_call(&call(Some("acme"), Level::Critical, Action::Block, &[]));
    let second = emf_lines(&mut writer, 1_767_225_660_000);
    assert_eq!(
        value_of(&second, "sigil_requests_total", &acme_blocks),
        Some(3.0)
    );
    assert_eq!(
        value_of(&second, "sigil_call_seconds_count", &[("endpoint", "scan")]),
        Some(3.0)
    );
    assert_eq!(
        value_of(&second, "sigil_template_refusals_total", &[]),
        None,
        "unchanged counters are left out"
    );
    assert_eq!(value_of(&second, "sigil_verify_seconds_count", &[]), None);
    assert_eq!(
        value_of(&second, "sigil_outbox_depth", &[]),
        Some(7.0),
        "gauges are written every time"
    );
    let third = emf_lines(&mut writer, 1_767_225_720_000);
    assert_eq!(value_of(&third, "sigil_requests_total", &[]), None);
}

#[test]
fn every_emf_metric_is_named_after_a_prometheus_family() {
    let metrics = Arc::new(populated());
    let mut writer = EmfWriter::new(metrics, "Sigil", &EmfTarget::Stdout).unwrap();
    let names: BTreeSet<String> = emf_lines(&mut writer, 0)
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    for name in &names {
        let family = ["_p50", "_p99", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(METRIC_NAMES.contains(&family), "{name}");
    }
    assert!(names.len() >= 18, "{names:?}");
}

#[test]
fn the_emf_file_is_appended_to_and_flushed_when_the_writer_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("emf.log");
    std::fs::write(&path, "an earlier line\n").unwrap();
    let metrics = Arc::new(populated());
    let writer = EmfWriter::new(metrics.clone(), "Sigil", &EmfTarget::File(path.clone())).unwrap();
    // A long interval: only the final flush of stop() writes.
    let task = writer.start(Duration::from_secs(3600)).unwrap();
    metrics.template_refused("bad_signature");
    task.stop().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("an earlier line"));
    let defined: Vec<_> = lines.flat_map(check_emf_line).collect();
    assert_eq!(
        value_of(
            &defined,
            "sigil_template_refusals_total",
            &[("code", "bad_signature")]
        ),
        Some(2.0)
    );

    let missing = dir.path().join("no/such/dir/emf.log");
    let err = EmfWriter::new(metrics.clone(), "Sigil", &EmfTarget::File(missing)).unwrap_err();
    assert!(
        err.to_string().contains("cannot open the EMF file"),
        "{err}"
    );
    let err = EmfWriter::new(metrics, "AWS/Sigil", &EmfTarget::Stdout).unwrap_err();
    assert!(err.to_string().contains("AWS/"), "{err}");
}

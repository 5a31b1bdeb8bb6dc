//! The deployment guide (`docs/deploy/`) holds to what the code does: every file parses, the
//! example configurations load, the KMS policies allow what the signer calls and nothing else,
//! and the alerts and alarms watch metrics the service writes.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use guard_core::Scheme;
use host_runtime::config::ServiceConfig;
use host_runtime::signer::KmsOptions;
use host_runtime::telemetry::emf::{EmfTarget, EmfWriter, DEFAULT_NAMESPACE};
use serde_json::{Map, Value};
use yaml_rust2::{Yaml, YamlLoader};

use crate::telemetry::{check_emf_line, populated};

fn deploy_dir() -> PathBuf {
    crate::workspace().join("docs/deploy")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(deploy_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn yaml_to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(r) => Value::from(r.parse::<f64>().unwrap()),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::from(s.as_str()),
        Yaml::Boolean(b) => Value::from(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Hash(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    other => panic!("a key that is not a string: {other:?}"),
                };
                assert!(
                    out.insert(key.clone(), yaml_to_json(v)).is_none(),
                    "duplicate key {key}"
                );
            }
            Value::Object(out)
        }
        Yaml::Null => Value::Null,
        other => panic!("unsupported YAML value {other:?}"),
    }
}

/// Every document of a YAML file.
fn yaml(name: &str) -> Vec<Value> {
    YamlLoader::load_from_str(&read(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .iter()
        .map(yaml_to_json)
        .collect()
}

fn json(name: &str) -> Value {
    serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_json_and_yaml_file_parses() {
    let mut parsed = 0;
    for entry in std::fs::read_dir(deploy_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                assert!(json(&name).is_object(), "{name}");
                parsed += 1;
            }
            Some("yml" | "yaml") => {
                let docs = yaml(&name);
                assert!(
                    !docs.is_empty() && docs.iter().all(Value::is_object),
                    "{name}"
                );
                parsed += 1;
            }
            _ => {}
        }
    }
    assert_eq!(parsed, 7, "json and yaml files in docs/deploy");
}

/// A policy's statements, as a list.
fn statements(policy: &Value) -> Vec<&Value> {
    match &policy["Statement"] {
        Value::Array(s) => s.iter().collect(),
        one @ Value::Object(_) => vec![one],
        other => panic!("Statement is {other}"),
    }
}

fn actions(statement: &Value) -> Vec<String> {
    match &statement["Action"] {
        Value::String(a) => vec![a.clone()],
        Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_string()).collect(),
        other => panic!("Action is {other}"),
    }
}

/// The algorithm and message type the signer sends with every `Sign`, from the code.
fn what_the_signer_sends() -> (String, String) {
    let source =
        std::fs::read_to_string(crate::workspace().join("host-runtime/src/signer/aws_kms.rs"))
            .unwrap();
    assert!(
        source.contains(".message_type(MessageType::Digest)"),
        "the signer signs digests"
    );
    assert!(source.contains(".signing_algorithm(algorithm(scheme))"));
    // The scheme signers use unless a spec asks for PSS.
    let algorithm = match KmsOptions::new("alias/x").scheme {
        Scheme::RsassaPkcs1v15Sha256 => SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
        Scheme::RsassaPssSha256 => SigningAlgorithmSpec::RsassaPssSha256,
    };
    (
        algorithm.as_str().to_string(),
        MessageType::Digest.as_str().to_string(),
    )
}

/// Every statement allowing `kms:Sign` pins the algorithm and the message type.
fn check_sign_conditions(name: &str, policy: &Value) -> usize {
    let (algorithm, message_type) = what_the_signer_sends();
    let mut allowing = 0;
    for s in statements(policy) {
        let acts = actions(s);
        assert!(
            !acts.iter().any(|a| a == "*" || a == "kms:*"),
            "{name}: a wildcard action"
        );
        if s["Effect"] == "Allow" && acts.iter().any(|a| a == "kms:Sign" || a == "kms:Sign*") {
            let equals = &s["Condition"]["StringEquals"];
            assert_eq!(equals["kms:SigningAlgorithm"], algorithm, "{name}: {s}");
            assert_eq!(equals["kms:MessageType"], message_type, "{name}: {s}");
            allowing += 1;
        }
    }
    allowing
}

#[test]
fn the_signing_key_policy_allows_only_what_the_signer_calls() {
    let policy = json("aws-kms-key-policy.json");
    assert_eq!(check_sign_conditions("aws-kms-key-policy.json", &policy), 1);
    let (algorithm, message_type) = what_the_signer_sends();
    let service = "arn:aws:iam::111122223333:role/sigil-service";
    let mut granted = BTreeSet::new();
    let mut denies = Vec::new();
    for s in statements(&policy) {
        if s["Effect"] == "Deny" {
            denies.push(s["Condition"]["StringNotEquals"].clone());
            continue;
        }
        if s["Principal"]["AWS"] == service {
            granted.extend(actions(s));
        } else {
            assert!(
                !actions(s).contains(&"kms:Sign".to_string()),
                "administrators cannot sign: {s}"
            );
        }
    }
    // The SDK calls of host-runtime/src/signer/aws_kms.rs when the service signs: GetPublicKey
    // when it opens the key, Sign for each template.
    assert_eq!(
        granted,
        BTreeSet::from(["kms:GetPublicKey".to_string(), "kms:Sign".to_string()])
    );
    let denied: BTreeSet<(String, String)> = denies
        .iter()
        .flat_map(|c| {
            c.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        })
        .collect();
    assert!(denied.contains(&("kms:SigningAlgorithm".into(), algorithm)));
    assert!(denied.contains(&("kms:MessageType".into(), message_type)));
}

#[test]
fn data_keys_are_used_only_with_the_expected_encryption_context() {
    let policy = json("aws-kms-data-key-policy.json");
    let role = json("iam-role.json");
    for (name, doc) in [
        ("aws-kms-data-key-policy.json", &policy),
        ("iam-role.json", &role["PermissionsPolicy"]),
    ] {
        let mut found = 0;
        for s in statements(doc) {
            let acts = actions(s);
            if acts
                .iter()
                .any(|a| a == "kms:GenerateDataKey" || a == "kms:Decrypt")
            {
                assert_eq!(
                    s["Condition"]["StringEquals"]["kms:EncryptionContext:sigil:purpose"],
                    "tenant-key",
                    "{name}"
                );
                let keys =
                    &s["Condition"]["ForAllValues:StringEquals"]["kms:EncryptionContextKeys"];
                assert!(
                    keys.as_array().is_some_and(|k| k.len() == 3),
                    "{name}: {keys}"
                );
                assert!(
                    acts.iter()
                        .all(|a| a == "kms:GenerateDataKey" || a == "kms:Decrypt"),
                    "{name}"
                );
                found += 1;
            }
        }
        assert_eq!(found, 1, "{name}");
    }
}

#[test]
fn the_service_role_is_least_privilege() {
    let role = json("iam-role.json");
    let trust = statements(&role["AssumeRolePolicyDocument"]);
    assert_eq!(trust.len(), 1);
    assert_eq!(trust[0]["Action"], "sts:AssumeRole");
    assert!(trust[0]["Condition"]["StringEquals"]["aws:SourceAccount"].is_string());
    let permissions = &role["PermissionsPolicy"];
    assert_eq!(check_sign_conditions("iam-role.json", permissions), 1);
    let allowed = [
        "kms:GetPublicKey",
        "kms:Sign",
        "kms:GenerateDataKey",
        "kms:Decrypt",
        "kms:DescribeKey",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "logs:DescribeLogStreams",
    ];
    for s in statements(permissions) {
        assert_eq!(s["Effect"], "Allow");
        for a in actions(s) {
            assert!(allowed.contains(&a.as_str()), "iam-role.json grants {a}");
        }
        let resource = s["Resource"].as_str().unwrap();
        assert!(
            resource.starts_with("arn:aws:") && !resource.ends_with(":*") && resource != "*",
            "{resource}"
        );
    }
}

/// The metric names in a PromQL expression (recorded series have colons and are not ours).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut token = String::new();
    let mut in_string = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_string = !in_string;
            token.clear();
            continue;
        }
        if in_string {
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            token.push(c);
        } else {
            if token.starts_with("sigil_") {
                names.insert(token.clone());
            }
            token.clear();
        }
    }
    names
}

/// Every series name the service renders for a populated registry.
fn rendered_names() -> BTreeSet<String> {
    let mut text = String::new();
    populated().render_prometheus(&mut text);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

#[test]
fn alerts_use_only_metrics_the_service_renders() {
    let rendered = rendered_names();
    let rules = &yaml("alerts.yml")[0];
    let mut used = BTreeSet::new();
    let mut alerts = 0;
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            used.extend(metric_names(rule["expr"].as_str().unwrap()));
            alerts += usize::from(rule.get("alert").is_some());
        }
    }
    assert_eq!(alerts, 8);
    let tests = &yaml("alerts.test.yml")[0];
    for test in tests["tests"].as_array().unwrap() {
        for series in test["input_series"].as_array().unwrap() {
            used.extend(metric_names(series["series"].as_str().unwrap()));
        }
    }
    for name in &used {
        assert!(
            rendered.contains(name),
            "alerts use `{name}`, which the service does not render"
        );
    }
    for wanted in [
        "sigil_requests_total",
        "sigil_incident_oldest_unacknowledged_seconds",
        "sigil_outbox_depth",
        "sigil_outbox_deliveries_total",
        "sigil_guard_exhausted_total",
    ] {
        assert!(used.contains(wanted), "no alert on {wanted}");
    }
}

fn promtool() -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if !found {
        println!("promtool is not on PATH (Debian package `prometheus`); rule checks skipped");
    }
    found
}

#[test]
fn promtool_checks_and_tests_the_rules() {
    if !promtool() {
        return;
    }
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(deploy_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn cloudwatch_alarms_watch_series_the_emf_lines_publish() {
    // (metric, dimensions with values) of every EMF line of a populated registry.
    let mut writer =
        EmfWriter::new(Arc::new(populated()), DEFAULT_NAMESPACE, &EmfTarget::Stdout).unwrap();
    let mut text = String::new();
    writer.render(0, &mut text);
    let mut published: BTreeSet<(String, Vec<(String, String)>)> = BTreeSet::new();
    for line in text.lines() {
        let root: Value = serde_json::from_str(line).unwrap();
        check_emf_line(line);
        let directive = &root["_aws"]["CloudWatchMetrics"][0];
        for set in directive["Dimensions"].as_array().unwrap() {
            let dims: Vec<(String, String)> = set
                .as_array()
                .unwrap()
                .iter()
                .map(|k| {
                    let k = k.as_str().unwrap();
                    (k.to_string(), root[k].as_str().unwrap().to_string())
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            for metric in directive["Metrics"].as_array().unwrap() {
                published.insert((metric["Name"].as_str().unwrap().to_string(), dims.clone()));
            }
        }
    }

    let template = &yaml("cloudwatch-alarms.yml")[0];
    assert_eq!(
        template["Parameters"]["Namespace"]["Default"],
        DEFAULT_NAMESPACE
    );
    let mut watched = BTreeSet::new();
    let mut alarms = 0;
    for (name, resource) in template["Resources"].as_object().unwrap() {
        assert_eq!(resource["Type"], "AWS::CloudWatch::Alarm", "{name}");
        alarms += 1;
        let mut metrics = Vec::new();
        if resource["Properties"].get("MetricName").is_some() {
            metrics.push(&resource["Properties"]);
        }
        if let Some(list) = resource["Properties"]["Metrics"].as_array() {
            metrics.extend(
                list.iter()
                    .filter_map(|m| m.get("MetricStat"))
                    .map(|s| &s["Metric"]),
            );
        }
        assert!(!metrics.is_empty(), "{name} watches no metric");
        for metric in metrics {
            assert_eq!(metric["Namespace"]["Ref"], "Namespace", "{name}");
            let metric_name = metric["MetricName"].as_str().unwrap().to_string();
            let dims: Vec<(String, String)> = metric["Dimensions"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .map(|d| {
                            (
                                d["Name"].as_str().unwrap().to_string(),
                                d["Value"].as_str().unwrap().to_string(),
                            )
                        })
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect()
                })
                .unwrap_or_default();
            assert!(
                published.contains(&(metric_name.clone(), dims.clone())),
                "{name}: {metric_name} {dims:?} is not a series the EMF lines publish"
            );
            watched.insert(metric_name);
        }
    }
    assert_eq!(alarms, 8);
    for wanted in [
        "sigil_requests_total",
        "sigil_incident_oldest_unacknowledged_seconds",
        "sigil_outbox_depth",
        "sigil_outbox_deliveries_total",
        "sigil_guard_exhausted_total",
    ] {
        assert!(watched.contains(wanted), "no alarm on {wanted}");
    }
}

/// The secrets the example configurations read from the environment.
fn example_secrets() -> Vec<(String, String)> {
    [
        ("SIGIL_PAGERDUTY_ROUTING_KEY", "R0UT1NGK3Y0123456789"),
        (
            "SIGIL_SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/X",
        ),
        ("SIGIL_WEBHOOK_SECRET", "0123456789abcdef0123"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn the_example_configurations_load() {
    let config =
        ServiceConfig::from_sources(Some(("sigil.toml", &read("sigil.toml"))), example_secrets())
            .unwrap();
    assert_eq!(config.escalation.sinks.len(), 3);
    assert!(config.telemetry.emf.enabled);
    // Without the secrets, the file is refused: they are required, and not in it.
    assert!(
        ServiceConfig::from_sources(Some(("sigil.toml", &read("sigil.toml"))), Vec::new()).is_err()
    );

    let docs = yaml("kubernetes.yaml");
    let config_map = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let toml = config_map["data"]["sigil.toml"].as_str().unwrap();
    let config =
        ServiceConfig::from_sources(Some(("kubernetes.yaml", toml)), example_secrets()).unwrap();
    let metrics_port = config
        .metrics_listen
        .as_ref()
        .unwrap()
        .as_str()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse::<i64>()
        .unwrap();
    let api_port = config
        .listen
        .as_str()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse::<i64>()
        .unwrap();

    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    let ports: BTreeSet<i64> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, BTreeSet::from([api_port, metrics_port]));
    let env = container["env"].as_array().unwrap();
    let config_path = env.iter().find(|e| e["name"] == "SIGIL_CONFIG").unwrap()["value"]
        .as_str()
        .unwrap();
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().any(
        |m| config_path.starts_with(m["mountPath"].as_str().unwrap()) && m["name"] == "config"
    ));
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPath"] == config.data_dir.to_str().unwrap()),
        "the data dir is writable"
    );
    let metrics_service = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "sigil-metrics")
        .unwrap();
    assert_eq!(
        metrics_service["spec"]["ports"][0]["port"].as_i64(),
        Some(metrics_port)
    );
}

#[test]
fn the_systemd_unit_is_hardened_and_valid() {
    let unit = read("sigil.service");
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |k: &str| settings.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    assert_eq!(get("ExecStart"), Some("/usr/local/bin/sigil serve"));
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(get(key), Some(value), "{key}");
    }
    // wasmtime maps compiled code executable.
    assert_ne!(get("MemoryDenyWriteExecute"), Some("yes"));
    let data_dir = settings.contains(&("Environment", "SIGIL_DATA_DIR=/var/lib/sigil"));
    assert!(
        data_dir
            && get("StateDirectory")
                .is_some_and(|dirs| dirs.split_whitespace().any(|d| d == "sigil")),
        "state in the unit's own directory"
    );
    // The vault's key store in the example configuration is a state directory of its own.
    let example =
        std::fs::read_to_string(crate::workspace().join("docs/deploy/sigil.toml")).unwrap();
    assert!(example.contains("key_store = \"/var/lib/sigil-keys/"));
    assert!(get("StateDirectory")
        .is_some_and(|dirs| dirs.split_whitespace().any(|d| d == "sigil-keys")));
    // systemd stops the service only after its grace period and the outbox flush.
    let stop = get("TimeoutStopSec").and_then(|v| v.trim_end_matches('s').parse::<u64>().ok());
    assert!(stop.is_some_and(|s| s >= 30), "{stop:?}");

    if Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        println!("systemd-analyze is not on PATH; unit verification skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sigil.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/sigil", env!("CARGO_BIN_EXE_sigil")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown keys are only warned about: any output is a finding.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

//! The service's configuration: defaults, a full file, environment overrides, refusals.

use std::time::Duration;

use guard_core::Level;
use host_runtime::config::{
    env_name, ConfigError, ServiceConfig, SinkKind, StoreSetting, ENV_KEYS,
};
use host_runtime::store::StoreSpec;
use host_runtime::telemetry::emf::EmfTarget;
use host_runtime::telemetry::logging::LogFormat;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(file: &str, vars: &[(&str, &str)]) -> Result<ServiceConfig, ConfigError> {
    ServiceConfig::from_sources(Some(("sigil.toml", file)), env(vars))
}

/// The error's text, which must name what is wrong.
fn refusal(file: &str, vars: &[(&str, &str)]) -> String {
    match load(file, vars) {
        Ok(config) => panic!("accepted: {file} {vars:?} -> {config:?}"),
        Err(e) => e.to_string(),
    }
}

pub const FULL: &str = r#"
listen = "0.0.0.0:9443"
metrics_listen = "127.0.0.1:9464"
data_dir = "/var/lib/sigil"
store = "postgres://sigil@db.internal:5432/sigil"

[limits]
max_body_bytes = "4MiB"
max_prompt_bytes = 262144
max_batch = 32
guard_deadline = "500ms"
guard_deadline_per_mib = "1s"
guard_memory = "256MiB"
guard_instances = 8
header_read_timeout = "20s"
max_connections = 2000
shutdown_grace = "30s"

[incidents]
group_window = "30m"

[escalation]
retry_base = "2s"
retry_cap = "10m"
retry_max_age = "2d"
attempt_timeout = "5s"
lease = "2m"

[[escalation.sinks]]
name = "ops"
kind = "webhook"
url = "https://hooks.example.com/sigil"
secret_env = "SIGIL_TEST_WEBHOOK_SECRET"

[[escalation.sinks]]
kind = "slack"
url_env = "SLACK_URL"

[[escalation.sinks]]
kind = "pagerduty"
routing_key = "R0UT1NGK3Y"

[telemetry]
log_format = "text"
log_level = "warn,host_runtime=debug"
log_prompts = false
tenant_label_cap = 50
rule_label_cap = 400

[telemetry.emf]
enabled = true
path = "/var/log/sigil/emf.log"
interval = "1m"
namespace = "Acme/Sigil"

[detections]
min_level = "high"
keep_excerpts = true

[retention]
detections = "30d"
profiles = "7d"
incidents = "180d"
purge_every = "2h"

[vault]
master_key = "aws-kms:alias/sigil-vault;region=eu-west-1"
key_store = "/var/lib/sigil-keys/keys.db"
on_unavailable = "proceed"
cache_max_age = "10m"
cache_max_uses = 5000
"#;

const SECRETS: [(&str, &str); 2] = [
    ("SIGIL_TEST_WEBHOOK_SECRET", "0123456789abcdef-secret"),
    (
        "SLACK_URL",
        "https://hooks.slack.com/services/T000/B000/XXXX",
    ),
];

#[test]
fn defaults_run_with_no_file_and_no_environment() {
    let config = ServiceConfig::from_sources(None, Vec::new()).unwrap();
    assert_eq!(config, ServiceConfig::default());
    assert_eq!(config.listen.as_str(), "127.0.0.1:8080");
    assert_eq!(config.metrics_listen, None);
    assert_eq!(config.data_dir.to_str(), Some(".sigil"));
    assert_eq!(config.store, StoreSetting::DataFolder);
    assert_eq!(config.limits.max_body_bytes.bytes(), 16 << 20);
    assert_eq!(config.limits.max_batch, 64);
    assert_eq!(
        config.limits.engine_limits(),
        host_runtime::engine::EngineLimits::default()
    );
    assert_eq!(
        config.incidents.group_window.duration(),
        Duration::from_secs(900)
    );
    assert!(config.escalation.sinks.is_empty());
    assert_eq!(config.telemetry.log_format, LogFormat::Json);
    assert_eq!(config.telemetry.log_level, "info");
    assert!(!config.telemetry.log_prompts);
    assert_eq!(config.telemetry.label_limits().tenants, 100);
    assert!(!config.telemetry.emf.enabled);
    assert_eq!(config.telemetry.emf.target(), EmfTarget::Stdout);
    assert_eq!(
        config.telemetry.emf.interval.duration(),
        Duration::from_secs(60)
    );
    assert_eq!(config.telemetry.emf.namespace, "Sigil");
    assert_eq!(
        config.detections.options(),
        host_runtime::store::DetectionOptions::default()
    );
    assert_eq!(
        config.retention.store_retention(),
        host_runtime::store::Retention::default()
    );
    // An empty file is the defaults too, and so is the process with no SIGIL_ variables set
    // for the configuration.
    assert_eq!(load("", &[]).unwrap(), config);
}

#[test]
fn a_full_file_sets_every_section() {
    let c = load(FULL, &SECRETS).unwrap();
    assert_eq!(c.listen.as_str(), "0.0.0.0:9443");
    assert_eq!(
        c.metrics_listen.as_ref().unwrap().as_str(),
        "127.0.0.1:9464"
    );
    assert_eq!(c.data_dir.to_str(), Some("/var/lib/sigil"));
    assert!(matches!(c.store, StoreSetting::At(StoreSpec::Postgres(_))));
    let l = c.limits;
    assert_eq!(l.max_body_bytes.bytes(), 4 << 20);
    assert_eq!(l.max_prompt_bytes.bytes(), 262_144);
    assert_eq!(l.max_batch, 32);
    let engine = l.engine_limits();
    assert_eq!(engine.deadline_base, Duration::from_millis(500));
    assert_eq!(engine.deadline_per_mib, Duration::from_secs(1));
    assert_eq!(engine.memory_bytes, 256 << 20);
    assert_eq!(engine.max_instances, 8);
    assert_eq!(
        c.incidents.group_window.duration(),
        Duration::from_secs(1800)
    );
    let e = &c.escalation;
    assert_eq!(e.retry_base.duration(), Duration::from_secs(2));
    assert_eq!(e.retry_cap.duration(), Duration::from_secs(600));
    assert_eq!(e.retry_max_age.duration(), Duration::from_secs(2 * 86_400));
    assert_eq!(e.attempt_timeout.duration(), Duration::from_secs(5));
    assert_eq!(e.lease.duration(), Duration::from_secs(120));
    assert_eq!(e.sinks.len(), 3);
    assert_eq!(e.sinks[0].name(), "ops");
    assert_eq!(e.sinks[0].kind, SinkKind::Webhook);
    assert_eq!(
        e.sinks[0].secret.as_ref().unwrap().expose(),
        SECRETS[0].1,
        "read from secret_env"
    );
    assert_eq!(e.sinks[1].name(), "slack");
    assert_eq!(
        e.sinks[1].url.as_ref().unwrap().expose(),
        SECRETS[1].1,
        "read from url_env"
    );
    assert_eq!(e.sinks[2].kind, SinkKind::Pagerduty);
    assert_eq!(e.sinks[2].url, None);
    assert_eq!(
        e.sinks[2].routing_key.as_ref().unwrap().expose(),
        "R0UT1NGK3Y"
    );
    assert!(
        !format!("{c:?}").contains("R0UT1NGK3Y"),
        "secrets stay out of debug output"
    );
    assert!(!format!("{c:?}").contains("hooks.slack.com"));
    let t = &c.telemetry;
    assert_eq!(t.log_format, LogFormat::Text);
    assert_eq!(t.log_options().filter, "warn,host_runtime=debug");
    assert_eq!(t.label_limits().tenants, 50);
    assert_eq!(t.label_limits().rules, 400);
    assert!(t.emf.enabled);
    assert_eq!(
        t.emf.target(),
        EmfTarget::File("/var/log/sigil/emf.log".into())
    );
    assert_eq!(t.emf.namespace, "Acme/Sigil");
    assert_eq!(c.detections.min_level, Level::High);
    assert!(c.detections.keep_excerpts);
    let r = c.retention.store_retention();
    assert_eq!((r.detections_days, r.profiles_days), (30, 7));
    assert_eq!(
        c.retention.incidents.duration(),
        Duration::from_secs(180 * 86_400)
    );
    assert_eq!(
        c.retention.purge_every.duration(),
        Duration::from_secs(7200)
    );
}

#[test]
fn the_environment_wins_over_the_file() {
    let mut vars = SECRETS.to_vec();
    vars.extend([
        ("SIGIL_LISTEN", "127.0.0.1:7000"),
        ("SIGIL_LIMITS_MAX_BODY_BYTES", "8MiB"),
        ("SIGIL_LIMITS_MAX_BATCH", "5"),
        ("SIGIL_TELEMETRY_EMF_ENABLED", "false"),
        ("SIGIL_TELEMETRY_LOG_FORMAT", "json"),
        ("SIGIL_RETENTION_PROFILES", "14d"),
        // Not ours: other SIGIL_ variables of the project and of anyone else are left alone.
        ("SIGIL_TOKEN", "whatever"),
        ("SIGIL_CONFIG", "/etc/sigil/sigil.toml"),
        ("PATH", "/usr/bin"),
    ]);
    let c = load(FULL, &vars).unwrap();
    assert_eq!(c.listen.as_str(), "127.0.0.1:7000");
    assert_eq!(c.limits.max_body_bytes.bytes(), 8 << 20);
    assert_eq!(c.limits.max_batch, 5);
    assert!(!c.telemetry.emf.enabled);
    assert_eq!(c.telemetry.log_format, LogFormat::Json);
    assert_eq!(c.retention.store_retention().profiles_days, 14);
    // What the environment does not name keeps the file's value.
    assert_eq!(c.limits.max_prompt_bytes.bytes(), 262_144);
    // And with no file, the environment alone sets a section.
    let c = ServiceConfig::from_sources(None, env(&[("SIGIL_TELEMETRY_EMF_NAMESPACE", "Other")]))
        .unwrap();
    assert_eq!(c.telemetry.emf.namespace, "Other");
}

/// A valid value for every overridable key, different from its default.
const EXAMPLES: [(&str, &str); 40] = [
    ("listen", "127.0.0.1:1"),
    ("metrics_listen", "localhost:9464"),
    ("data_dir", "/srv/sigil"),
    ("store", "sqlite:/srv/sigil/b.db"),
    ("limits.max_body_bytes", "2MB"),
    ("limits.max_prompt_bytes", "1000"),
    ("limits.max_batch", "3"),
    ("limits.guard_deadline", "3s"),
    ("limits.guard_deadline_per_mib", "3s"),
    ("limits.guard_memory", "64MiB"),
    ("limits.guard_instances", "3"),
    ("limits.header_read_timeout", "5s"),
    ("limits.max_connections", "100"),
    ("limits.shutdown_grace", "1m"),
    ("incidents.group_window", "1h"),
    ("escalation.retry_base", "3s"),
    ("escalation.retry_cap", "1h"),
    ("escalation.retry_max_age", "3d"),
    ("escalation.attempt_timeout", "3s"),
    ("escalation.lease", "5m"),
    ("telemetry.log_format", "text"),
    ("telemetry.log_level", "debug"),
    ("telemetry.log_prompts", "true"),
    ("telemetry.tenant_label_cap", "7"),
    ("telemetry.rule_label_cap", "7"),
    ("telemetry.emf.enabled", "1"),
    ("telemetry.emf.path", "/tmp/emf"),
    ("telemetry.emf.interval", "10s"),
    ("telemetry.emf.namespace", "X"),
    ("detections.min_level", "critical"),
    ("detections.keep_excerpts", "true"),
    ("retention.detections", "3d"),
    ("retention.profiles", "3d"),
    ("retention.incidents", "3d"),
    ("retention.purge_every", "3h"),
    ("vault.master_key", "local:/tmp/master.key"),
    ("vault.key_store", "/tmp/keys.db"),
    ("vault.on_unavailable", "proceed"),
    ("vault.cache_max_age", "1m"),
    ("vault.cache_max_uses", "10"),
];

#[test]
fn every_key_can_be_overridden_and_the_list_is_complete() {
    let listed: Vec<&str> = ENV_KEYS.iter().map(|(k, _)| *k).collect();
    let examples: Vec<&str> = EXAMPLES.iter().map(|(k, _)| *k).collect();
    assert_eq!(listed, examples);
    let defaults = ServiceConfig::default();
    for (key, value) in EXAMPLES {
        let var = env_name(key);
        let c = ServiceConfig::from_sources(None, env(&[(&var, value)]))
            .unwrap_or_else(|e| panic!("{var}={value}: {e}"));
        assert_ne!(c, defaults, "{var} changed nothing");
    }
    assert_eq!(
        env_name("limits.max_body_bytes"),
        "SIGIL_LIMITS_MAX_BODY_BYTES"
    );

    // Every scalar key of the full file is in the list (sinks are configured in the file only).
    fn leaves(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
        for (k, v) in table {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => leaves(&path, t, out),
                toml::Value::Array(_) => assert_eq!(path, "escalation.sinks"),
                _ => out.push(path),
            }
        }
    }
    let mut keys = Vec::new();
    leaves("", &toml::from_str(FULL).unwrap(), &mut keys);
    for key in &keys {
        assert!(listed.contains(&key.as_str()), "{key} cannot be overridden");
    }
    assert_eq!(keys.len(), listed.len(), "the full file sets every key");
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let e = refusal("listne = \"127.0.0.1:1\"\n", &[]);
    assert!(
        e.contains("unknown field `listne`") && e.contains("line 1"),
        "{e}"
    );
    let e = refusal("[limits]\nmax_bodybytes = 5\n", &[]);
    assert!(e.contains("`max_bodybytes`"), "{e}");
    let e = refusal("[telemetry.emf]\nnamespce = \"x\"\n", &[]);
    assert!(e.contains("`namespce`"), "{e}");
    let e = refusal(
        "[[escalation.sinks]]\nkind = \"webhook\"\nurl = \"https://x\"\nsecrets = \"x\"\n",
        &[],
    );
    assert!(e.contains("`secrets`"), "{e}");
    let e = refusal("[bogus]\n", &[]);
    assert!(e.contains("`bogus`"), "{e}");
    let e = refusal("", &[("SIGIL_LIMITS_MAX_BODYBYTES", "5")]);
    assert!(
        e.contains("SIGIL_LIMITS_MAX_BODYBYTES") && e.contains("no configuration key"),
        "{e}"
    );
    let e = refusal("", &[("SIGIL_ESCALATION_SINKS", "[]")]);
    assert!(e.contains("configured in the file"), "{e}");
}

#[test]
fn bad_values_are_refused_with_their_key() {
    let cases: &[(&str, &str)] = &[
        ("listen = \"localhost\"", "not a listen address"),
        ("listen = \"1.2.3.4:99999\"", "not a listen address"),
        ("listen = \"-bad-:80\"", "not a listen address"),
        ("listen = 8080", "invalid type"),
        ("metrics_listen = \"\"", "not a listen address"),
        (
            "listen = \"0.0.0.0:80\"\nmetrics_listen = \"0.0.0.0:80\"",
            "differs from `listen`",
        ),
        ("store = \"mysql://x\"", "sqlite:PATH"),
        ("data_dir = \"\"", "data_dir"),
        ("[limits]\nmax_body_bytes = \"16 parsecs\"", "not a size"),
        ("[limits]\nmax_body_bytes = -1", "negative"),
        (
            "[limits]\nmax_body_bytes = \"99999999999999999999GiB\"",
            "not a size",
        ),
        (
            "[limits]\nmax_body_bytes = \"18446744073709551615GiB\"",
            "too large",
        ),
        ("[limits]\nmax_body_bytes = 10", "limits.max_body_bytes"),
        (
            "[limits]\nmax_body_bytes = \"2GiB\"",
            "limits.max_body_bytes",
        ),
        (
            "[limits]\nmax_prompt_bytes = \"32MiB\"",
            "limits.max_prompt_bytes",
        ),
        ("[limits]\nmax_prompt_bytes = 0", "limits.max_prompt_bytes"),
        ("[limits]\nmax_batch = 0", "limits.max_batch"),
        ("[limits]\nmax_batch = \"many\"", "invalid type"),
        ("[limits]\nguard_deadline = 30", "needs a unit"),
        (
            "[limits]\nguard_deadline = \"30 seconds\"",
            "not a duration",
        ),
        (
            "[limits]\nguard_deadline = \"1ms\"",
            "limits.guard_deadline",
        ),
        ("[limits]\nguard_deadline = \"\"", "not a duration"),
        ("[limits]\nguard_memory = \"1MiB\"", "limits.guard_memory"),
        ("[limits]\nguard_instances = 0", "limits.guard_instances"),
        (
            "[limits]\nheader_read_timeout = \"0s\"",
            "limits.header_read_timeout",
        ),
        ("[limits]\nmax_connections = 1", "limits.max_connections"),
        ("[limits]\nshutdown_grace = \"1h\"", "limits.shutdown_grace"),
        (
            "[incidents]\ngroup_window = \"0s\"",
            "incidents.group_window",
        ),
        (
            "[escalation]\nretry_base = \"10s\"\nretry_cap = \"1s\"",
            "escalation.retry_cap",
        ),
        ("[escalation]\nretry_base = \"0s\"", "escalation.retry_base"),
        ("[escalation]\nlease = \"0s\"", "escalation.lease"),
        (
            "[escalation]\nattempt_timeout = \"0s\"",
            "escalation.attempt_timeout",
        ),
        ("[telemetry]\nlog_format = \"xml\"", "unknown variant `xml`"),
        (
            "[telemetry]\nlog_level = \"host_runtime=loud\"",
            "telemetry.log_level",
        ),
        (
            "[telemetry]\ntenant_label_cap = 0",
            "telemetry.tenant_label_cap",
        ),
        (
            "[telemetry.emf]\nnamespace = \"AWS/Mine\"",
            "telemetry.emf.namespace",
        ),
        (
            "[telemetry.emf]\ninterval = \"100ms\"",
            "telemetry.emf.interval",
        ),
        ("[telemetry.emf]\npath = \"\"", "telemetry.emf.path"),
        ("[detections]\nmin_level = \"severe\"", "not a level"),
        ("[retention]\nprofiles = \"1h\"", "retention.profiles"),
        ("[retention]\npurge_every = \"1s\"", "retention.purge_every"),
        ("telemetry = 5", "invalid type"),
        ("[limits\n", "TOML parse error"),
        ("listen = \"a\"\nlisten = \"b\"", "duplicate key"),
    ];
    for (file, expected) in cases {
        let e = refusal(file, &[]);
        assert!(e.contains(expected), "{file:?}: {e}");
    }
}

#[test]
fn bad_sinks_are_refused() {
    let sink = |body: &str| format!("[[escalation.sinks]]\n{body}\n");
    let cases: &[(&str, &str)] = &[
        ("kind = \"email\"", "unknown variant `email`"),
        ("url = \"https://x\"", "missing field `kind`"),
        ("kind = \"webhook\"", "needs `url` or `url_env`"),
        ("kind = \"slack\"", "needs `url` or `url_env`"),
        ("kind = \"webhook\"\nurl = \"ftp://x\"", "http:// or https://"),
        ("kind = \"webhook\"\nurl = \"https://\"", "http:// or https://"),
        ("kind = \"pagerduty\"", "routing_key"),
        ("kind = \"slack\"\nurl = \"https://x\"\nrouting_key = \"k\"", "only pagerduty"),
        ("kind = \"slack\"\nurl = \"https://x\"\nsecret = \"0123456789abcdef\"", "only webhook"),
        ("kind = \"webhook\"\nurl = \"https://x\"\nsecret = \"short\"", "at least 16"),
        ("kind = \"webhook\"\nname = \"Ops Team\"\nurl = \"https://x\"", "a-z 0-9"),
        ("kind = \"webhook\"\nurl = \"https://x\"\nsecret = \"0123456789abcdef\"\nsecret_env = \"S\"", "not both"),
        ("kind = \"webhook\"\nurl = \"https://x\"\nsecret_env = \"SIGIL_UNSET_SECRET\"", "`SIGIL_UNSET_SECRET` is not set"),
    ];
    for (body, expected) in cases {
        let e = refusal(&sink(body), &[("S", "0123456789abcdef")]);
        assert!(e.contains(expected), "{body:?}: {e}");
    }
    let two = format!(
        "{}{}",
        sink("kind = \"webhook\"\nurl = \"https://a\""),
        sink("kind = \"webhook\"\nurl = \"https://b\"")
    );
    assert!(refusal(&two, &[]).contains("two sinks are named `webhook`"));
    // A secret variable may have any name, our prefix included.
    let named =
        sink("kind = \"webhook\"\nurl = \"https://a\"\nsecret_env = \"SIGIL_ESCALATION_HOOK_KEY\"");
    let c = load(&named, &[("SIGIL_ESCALATION_HOOK_KEY", "0123456789abcdef")]).unwrap();
    assert_eq!(
        c.escalation.sinks[0].secret.as_ref().unwrap().expose(),
        "0123456789abcdef"
    );
    // A URL is a credential: an error about it does not repeat it.
    let e = refusal(
        &sink("kind = \"slack\"\nurl = \"https://hooks slack.com/T0/SECRETPART\""),
        &[],
    );
    assert!(!e.contains("SECRETPART"), "{e}");
}

#[test]
fn bad_environment_values_are_refused_with_the_variable() {
    let cases: &[(&str, &str, &str)] = &[
        ("SIGIL_LIMITS_MAX_BATCH", "ten", "not a whole number"),
        ("SIGIL_LIMITS_MAX_BATCH", "-1", "not a whole number"),
        (
            "SIGIL_TELEMETRY_EMF_ENABLED",
            "yes please",
            "not true, false",
        ),
        ("SIGIL_LISTEN", "nowhere", "not a listen address"),
        ("SIGIL_LIMITS_GUARD_DEADLINE", "5", "not a duration"),
        ("SIGIL_TELEMETRY_LOG_FORMAT", "yaml", "unknown variant"),
        (
            "SIGIL_LIMITS_MAX_PROMPT_BYTES",
            "1GiB",
            "limits.max_prompt_bytes",
        ),
    ];
    for (var, value, expected) in cases {
        let e = refusal("", &[(var, value)]);
        assert!(e.contains(expected), "{var}={value}: {e}");
        if !expected.starts_with("limits.") {
            assert!(e.contains(var), "{var}: {e}");
        }
    }
    // A section the file made a scalar cannot take a key.
    let e = refusal("limits = 1", &[("SIGIL_LIMITS_MAX_BATCH", "2")]);
    assert!(e.contains("invalid type"), "{e}");
}

#[test]
fn hostile_files_are_refused_not_choked_on() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; 2 << 20]).unwrap();
    let e = ServiceConfig::load(Some(&big)).unwrap_err().to_string();
    assert!(e.contains("at most"), "{e}");
    let binary = dir.path().join("bin.toml");
    std::fs::write(&binary, b"listen = \"\xff\xfe\"\n").unwrap();
    let e = ServiceConfig::load(Some(&binary)).unwrap_err().to_string();
    assert!(e.contains("not UTF-8"), "{e}");
    let e = ServiceConfig::load(Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a file"), "{e}");
    let e = ServiceConfig::load(Some(&dir.path().join("missing.toml")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.toml"), "{e}");
    // Deep nesting and control characters: an error, never a crash.
    let deep = format!("x = {}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(load(&deep, &[]).is_err());
    let deep_tables = format!("x = {}1{}", "{a = ".repeat(10_000), "}".repeat(10_000));
    assert!(load(&deep_tables, &[]).is_err());
    let e = refusal("listen = \"\u{1b}[31m:80\"", &[]);
    assert!(
        !e.contains('\u{1b}'),
        "control characters are not echoed: {e:?}"
    );
    // A good file loads through the same path.
    let good = dir.path().join("sigil.toml");
    std::fs::write(&good, "listen = \"127.0.0.1:9\"\n").unwrap();
    assert_eq!(
        ServiceConfig::load(Some(&good)).unwrap().listen.as_str(),
        "127.0.0.1:9"
    );
}

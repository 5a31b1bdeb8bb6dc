//! `sigil demo`: the main job end to end on the bundled samples.
//!
//! The bundled template goes through the registry as a team would publish it: a publisher's
//! key signs it after the validation pipeline, a reviewer's key approves it (the demo's policy
//! needs both), and every step lands in the audit log. The guard then verifies it inside
//! wasmtime as any verifier would (and refuses a tampered copy); each bundled prompt is placed
//! into the verified template as an untrusted segment and assessed, with each user's profile
//! carried from one prompt to the next.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use guard_core::time::Timestamp;
use guard_core::AssessmentOutput;
use serde::Deserialize;

use super::GuardOptions;
use crate::engine::{Context, Segment, Trust};
use crate::registry::{PublishRequest, Registry, RegistryError, Role, Session};
use crate::signer::{LocalSigner, Signer};

const SAMPLE_TEMPLATE: &str = include_str!("../../samples/support-answer.txt");
const SAMPLE_PROMPTS: &str = include_str!("../../samples/prompts.jsonl");
const TEMPLATE_ID: &str = "support/answer";
const PLACEHOLDER: &str = "{{question}}";

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the demo keeps its key and signed template.
    #[arg(long, default_value = ".sigil")]
    data_dir: PathBuf,
    #[command(flatten)]
    guard: GuardOptions,
}

#[derive(Deserialize)]
struct Prompt {
    id: String,
    user: String,
    text: String,
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let demo = args.data_dir.join("demo");
    let now = args.guard.now()?;
    let at = Timestamp::parse(&now)?;
    let engine = args.guard.engine()?;
    let mut people = DemoRegistry::open(&demo, at, &engine)?;

    // The bundled template is written once; after that the one in the data folder is published,
    // so an edited copy becomes the next version.
    let templates = args.data_dir.join("templates");
    fs::create_dir_all(&templates)
        .with_context(|| format!("cannot create `{}`", templates.display()))?;
    let template_path = templates.join("support-answer.txt");
    if !template_path.exists() {
        fs::write(&template_path, SAMPLE_TEMPLATE)
            .with_context(|| format!("cannot write `{}`", template_path.display()))?;
    }
    let template_text = super::read_text(&template_path, "template")?;
    let template_text = template_text.as_str();
    let schema =
        serde_json::json!({"question": {"type": "string", "max_length": 4000}}).to_string();
    let registry = &mut people.registry;
    let active = registry
        .show(&people.reviewer, TEMPLATE_ID, None)
        .ok()
        .filter(|v| v.template == template_text.as_bytes());
    match active {
        Some(v) => outln!(
            "`{TEMPLATE_ID}` v{} is published and active (unchanged since)",
            v.info.version
        ),
        None => {
            // Validate, sign with the publisher's key, wait for the reviewer's approval.
            let request = PublishRequest {
                template_id: TEMPLATE_ID,
                template: template_text.as_bytes(),
                variables_schema: schema.as_bytes(),
                valid_days: 30,
                validation: crate::validate::ValidationOptions {
                    max_template_bytes: crate::validate::DEFAULT_MAX_TEMPLATE_BYTES,
                    allow_personal_data: false,
                    now: at,
                },
            };
            let published = match registry.publish(
                &people.publisher,
                &request,
                &people.publisher_key,
                &people.log_key,
                &engine,
            ) {
                Err(RegistryError::Validation(report)) => {
                    for stage in report.failures() {
                        for issue in &stage.issues {
                            outln!("  {}: {}", issue.code, issue.message);
                        }
                    }
                    anyhow::bail!(
                        "the template `{}` did not pass validation; nothing was published",
                        template_path.display()
                    );
                }
                other => other?,
            };
            if let Some(report) = &published.report {
                outln!(
                    "validated `{TEMPLATE_ID}`: {} stages passed, report sha256:{}",
                    report.stages.len(),
                    report.digest()
                );
            }
            outln!(
                "published `{TEMPLATE_ID}` v{} signed by the publisher: {}",
                published.version,
                published.state.as_str()
            );
            let approved = registry.approve(
                &people.reviewer,
                TEMPLATE_ID,
                published.version,
                &people.reviewer_key,
                &people.log_key,
                &engine,
                at,
            )?;
            outln!(
                "approved by the reviewer: v{} is {} (audit log at {} entries)",
                approved.version,
                approved.state.as_str(),
                approved.recorded.checkpoint.checkpoint.size
            );
        }
    }

    // Verify it inside the guard as any verifier would (keyring, 2-of-2 policy, pinned
    // nothing), and watch a tampered copy fail.
    let request = registry.verification_request(&people.reviewer, TEMPLATE_ID, None, at)?;
    let report = engine
        .verify_json(&request.to_string())?
        .map_err(|r| anyhow::anyhow!("the published template did not verify: {r}"))?;
    let report: guard_core::VerificationReport = serde_json::from_str(&report)?;
    outln!(
        "template {} v{} verified in the guard (sha256:{}…, {} approvals)",
        report.template_id,
        report.version,
        report.digest.get(..16).unwrap_or_default(),
        report.approvals.len()
    );
    // The envelope beside the template, for `sigil template verify --keyring` by hand.
    let envelope_path = templates.join("support-answer.envelope.json");
    fs::write(
        &envelope_path,
        serde_json::to_vec_pretty(request.get("envelope").unwrap_or(&serde_json::Value::Null))?,
    )
    .with_context(|| format!("cannot write `{}`", envelope_path.display()))?;
    let mut tampered = request.clone();
    if let Some(text) = tampered.get_mut("template") {
        *text = serde_json::Value::String(template_text.replacen("support", "unrestricted", 1));
    }
    match engine.verify_json(&tampered.to_string())? {
        Ok(_) => anyhow::bail!("a tampered template verified; refusing to continue"),
        Err(refusal) => outln!("tampered copy refused: {}", refusal.code),
    }
    let (before, after) = template_text.split_once(PLACEHOLDER).with_context(|| {
        format!(
            "`{}` has no `{PLACEHOLDER}` placeholder",
            template_path.display()
        )
    })?;

    // Guard each prompt inside the verified template.
    outln!();
    outln!(
        "{:<4} {:<6} {:<9} {:<10} {:>6}  rules",
        "id",
        "user",
        "level",
        "action",
        "score"
    );
    let mut profiles: BTreeMap<String, String> = BTreeMap::new();
    let (mut total, mut stopped) = (0, 0);
    for line in SAMPLE_PROMPTS.lines().filter(|l| !l.trim().is_empty()) {
        let prompt: Prompt = serde_json::from_str(line).context("bundled prompt is malformed")?;
        let segments = [
            Segment {
                text: before.to_string(),
                trust: Trust::Trusted,
                role: None,
                source: Some(TEMPLATE_ID.into()),
            },
            Segment {
                text: prompt.text.clone(),
                trust: Trust::Untrusted,
                role: None,
                source: Some("question".into()),
            },
            Segment {
                text: after.to_string(),
                trust: Trust::Trusted,
                role: None,
                source: Some(TEMPLATE_ID.into()),
            },
        ];
        let context = Context {
            tenant: None,
            user: Some(prompt.user.clone()),
            now: now.clone(),
            profile: profiles.get(&prompt.user).cloned(),
        };
        let json = engine.assess(&segments, &context)?;
        let output: AssessmentOutput = serde_json::from_str(&json)?;
        profiles.insert(prompt.user.clone(), serde_json::to_string(&output.profile)?);
        let a = &output.assessment;
        let mut rules: Vec<&str> = a
            .explanation
            .contributions
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        rules.dedup();
        outln!(
            "{:<4} {:<6} {:<9} {:<10} {:>6.3}  {}",
            prompt.id,
            prompt.user,
            a.level.as_str(),
            a.action.as_str(),
            a.score,
            if rules.is_empty() {
                "-".to_string()
            } else {
                rules.join(", ")
            }
        );
        total += 1;
        stopped += usize::from(a.action.stops());
    }
    outln!();
    outln!(
        "{total} prompts guarded in wasmtime: {stopped} kept from the model (quarantine or block), {} forwarded",
        total - stopped
    );
    outln!(
        "the registry, its audit log and the demo's keys are in {}",
        demo.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The demo's own registry (`<data-dir>/demo/`): an admin, a publisher and a reviewer with
/// local keys, and a policy that needs both their signatures.
struct DemoRegistry {
    registry: Registry,
    publisher: Session,
    reviewer: Session,
    publisher_key: LocalSigner,
    reviewer_key: LocalSigner,
    log_key: LocalSigner,
}

impl DemoRegistry {
    fn open(dir: &Path, now: Timestamp, engine: &crate::engine::GuardEngine) -> Result<Self> {
        let keys = dir.join("keys");
        let key = |name: &str| -> Result<LocalSigner> {
            let path = keys.join(format!("{name}.pem"));
            Ok(if path.exists() {
                LocalSigner::from_pem_file(&path)?
            } else {
                LocalSigner::generate_files(&keys, name, 2048, false)?.0
            })
        };
        let log_key = key("log")?;
        let publisher_key = key("publisher")?;
        let reviewer_key = key("reviewer")?;
        let db = dir.join("sigil.db");
        let mut registry = Registry::open(&db)
            .with_context(|| format!("cannot open the demo registry `{}`", db.display()))?;
        let token_path = |name: &str| dir.join(format!("{name}.token"));
        let read_token = |name: &str| -> Result<String> {
            Ok(fs::read_to_string(token_path(name))
                .with_context(|| format!("the demo registry lacks its {name} token"))?
                .trim()
                .to_string())
        };
        if !token_path("admin").exists() {
            let admin_token = registry.bootstrap("demo-admin", now, &log_key)?;
            let admin = registry.authenticate(&admin_token)?;
            let mut approvers = Vec::new();
            for (name, role, signer) in [
                ("publisher", Role::Publisher, &publisher_key),
                ("reviewer", Role::Reviewer, &reviewer_key),
            ] {
                let token = registry.add_identity(
                    &admin,
                    &format!("demo-{name}"),
                    &BTreeSet::from([role]),
                    now,
                    &log_key,
                )?;
                approvers.push(registry.add_key(
                    &admin,
                    &format!("demo-{name}"),
                    signer.public_key_der(),
                    signer.scheme(),
                    now,
                    None,
                    now,
                    &log_key,
                )?);
                super::registry::write_secret(&token_path(name), &token)?;
            }
            registry.set_approvals(
                &admin,
                TEMPLATE_ID,
                Some(guard_core::provenance::Approvals {
                    threshold: 2,
                    of: approvers,
                }),
                now,
                &log_key,
                engine,
            )?;
            super::registry::write_secret(&token_path("admin"), &admin_token)?;
            outln!(
                "created the demo registry {} (admin, publisher, reviewer)",
                db.display()
            );
        }
        let publisher = registry.authenticate(&read_token("publisher")?)?;
        let reviewer = registry.authenticate(&read_token("reviewer")?)?;
        Ok(DemoRegistry {
            registry,
            publisher,
            reviewer,
            publisher_key,
            reviewer_key,
            log_key,
        })
    }
}

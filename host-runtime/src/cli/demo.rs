//! `sigil demo`: the main job end to end on the bundled samples.
//!
//! A local key signs the bundled template; the guard verifies it inside wasmtime (and refuses a
//! tampered copy); each bundled prompt is placed into the verified template as an untrusted
//! segment and assessed, with each user's profile carried from one prompt to the next.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use guard_core::time::Timestamp;
use guard_core::AssessmentOutput;
use serde::Deserialize;

use super::GuardOptions;
use crate::engine::{Context, Scheme, Segment, Trust};
use crate::signer::{LocalSigner, Signer};
use crate::template::{sign_template, SignRequest};

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
    let keys = args.data_dir.join("keys");
    let private = keys.join("signing-key.pem");
    let signer = if private.exists() {
        LocalSigner::from_pem_file(&private)?
    } else {
        let (signer, files) = LocalSigner::generate_files(&keys, "signing-key", 3072, false)?;
        outln!(
            "generated a local signing key {} ({})",
            files.private_key.display(),
            files.fingerprint
        );
        signer
    };
    let public_key = signer.public_key_der().to_vec();

    // Sign the bundled template.
    let templates = args.data_dir.join("templates");
    fs::create_dir_all(&templates)
        .with_context(|| format!("cannot create `{}`", templates.display()))?;
    // The bundled template is written once; after that the one in the data folder is signed, so
    // an edited copy is what the demo guards.
    let template_path = templates.join("support-answer.txt");
    if !template_path.exists() {
        fs::write(&template_path, SAMPLE_TEMPLATE)
            .with_context(|| format!("cannot write `{}`", template_path.display()))?;
    }
    let template_text = super::read_text(&template_path, "template")?;
    let template_text = template_text.as_str();
    let now = args.guard.now()?;
    let signed_at = Timestamp::parse(&now)?;
    let schema = serde_json::json!({"question": {"type": "string", "max_length": 4000}});
    let engine = args.guard.engine()?;
    // The validation pipeline first: nothing that fails it is signed.
    let validation = crate::validate::validate(
        &crate::validate::Candidate {
            template_id: TEMPLATE_ID,
            template: template_text.as_bytes(),
            schema: schema.to_string().as_bytes(),
            previous: None,
        },
        &crate::validate::ValidationOptions {
            max_template_bytes: crate::validate::DEFAULT_MAX_TEMPLATE_BYTES,
            allow_personal_data: false,
            now: signed_at,
        },
        &engine,
    )?;
    if !validation.passed {
        for stage in validation.failures() {
            for issue in &stage.issues {
                outln!("  {}: {}", issue.code, issue.message);
            }
        }
        anyhow::bail!(
            "the template `{}` did not pass validation; nothing was signed",
            template_path.display()
        );
    }
    outln!(
        "validated `{TEMPLATE_ID}`: {} stages passed, report sha256:{}",
        validation.stages.len(),
        validation.digest()
    );
    let envelope = sign_template(
        &SignRequest {
            template_id: TEMPLATE_ID,
            version: 1,
            template: template_text.as_bytes(),
            variables_schema: &schema,
            prev_digest: None,
            signer: "sigil-demo",
            signed_at,
            not_after: Timestamp::from_unix_seconds(signed_at.unix_seconds() + 30 * 86_400),
            validation_digest: Some(validation.digest()),
        },
        &signer,
    )?;
    let envelope_json = serde_json::to_vec_pretty(&envelope)?;
    let envelope_path = templates.join("support-answer.envelope.json");
    fs::write(&envelope_path, &envelope_json)
        .with_context(|| format!("cannot write `{}`", envelope_path.display()))?;

    // Verify it inside the guard, and watch a tampered copy fail.
    let scheme = Scheme::RsassaPkcs1v15Sha256;
    let report = engine
        .verify_template(
            &envelope_json,
            template_text.as_bytes(),
            &public_key,
            scheme,
            Some(&now),
        )?
        .map_err(|r| anyhow::anyhow!("the bundled template did not verify: {r}"))?;
    let report: guard_core::VerificationReport = serde_json::from_str(&report)?;
    outln!(
        "template {} v{} verified in the guard (sha256:{}…, key {}…)",
        report.template_id,
        report.version,
        report.digest.get(..16).unwrap_or_default(),
        report.key_fingerprint.get(..16).unwrap_or_default()
    );
    let mut tampered = template_text.as_bytes().to_vec();
    if let Some(first) = tampered.first_mut() {
        *first ^= 0x20;
    }
    match engine.verify_template(&envelope_json, &tampered, &public_key, scheme, Some(&now))? {
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
    outln!("signed template and key are in {}", args.data_dir.display());
    Ok(ExitCode::SUCCESS)
}

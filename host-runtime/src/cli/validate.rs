//! `sigil template validate`: the validation pipeline on a candidate template, before signing.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use guard_core::time::Timestamp;

use super::{read_bytes, GuardOptions};
use crate::validate::{
    validate, Candidate, Stage, Status, ValidationOptions, DEFAULT_MAX_TEMPLATE_BYTES,
};

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The template file, exactly as it would be signed.
    #[arg(long)]
    template: PathBuf,
    /// Template id, recorded in the report.
    #[arg(long)]
    id: String,
    /// Variable schema (JSON). Without it, `{}`: a template with no variables.
    #[arg(long, value_name = "FILE")]
    variables: Option<PathBuf>,
    /// The previous version's template file, for the diff.
    #[arg(long, value_name = "FILE")]
    previous: Option<PathBuf>,
    /// Report e-mail addresses and phone numbers as warnings instead of refusing them.
    #[arg(long)]
    allow_personal_data: bool,
    /// Largest template accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_TEMPLATE_BYTES)]
    max_bytes: usize,
    /// Write the report (JSON, as digested) here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Print the report as JSON instead of a summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    guard: GuardOptions,
}

pub fn run(args: ValidateArgs) -> Result<ExitCode> {
    if !guard_core::provenance::is_template_id(&args.id) {
        anyhow::bail!(
            "template id `{}` must be 1 to 128 of a-z 0-9 - _ . / in non-empty path parts",
            args.id
        );
    }
    let template = read_bytes(&args.template, "template")?;
    let schema = match &args.variables {
        Some(path) => read_bytes(path, "variable schema")?,
        None => b"{}".to_vec(),
    };
    let previous = args
        .previous
        .as_ref()
        .map(|p| read_bytes(p, "previous template"))
        .transpose()?;
    let engine = args.guard.engine()?;
    let options = ValidationOptions {
        max_template_bytes: args.max_bytes,
        allow_personal_data: args.allow_personal_data,
        now: Timestamp::parse(&args.guard.now()?)?,
    };
    let candidate = Candidate {
        template_id: &args.id,
        template: &template,
        schema: &schema,
        previous: previous.as_deref(),
    };
    let report = validate(&candidate, &options, &engine)?;
    if let Some(path) = &args.report {
        std::fs::write(path, report.to_json())
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    if args.json {
        outln!("{}", report.to_json());
    } else {
        for stage in &report.stages {
            let name = serde_json::to_value(stage.stage)?;
            let status = serde_json::to_value(stage.status)?;
            outln!(
                "{:<14} {}",
                name.as_str().unwrap_or_default(),
                status.as_str().unwrap_or_default()
            );
            let shown = match (stage.stage, stage.status) {
                // The diff is worth reading when it passed; the rest only when it did not.
                (Stage::Diff, _) => true,
                (_, Status::Passed | Status::Skipped) => false,
                _ => true,
            };
            if shown {
                for issue in &stage.issues {
                    outln!("    {:<22} {}", issue.code, issue.message);
                }
                if stage.more > 0 {
                    outln!("    … and {} more", stage.more);
                }
            }
        }
        outln!(
            "{} `{}`  report sha256:{}",
            if report.passed { "passed" } else { "refused" },
            report.template_id,
            report.digest()
        );
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

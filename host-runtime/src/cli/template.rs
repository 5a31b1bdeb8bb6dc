//! `sigil template …`: signing and verifying files, the validation pipeline, and the registry
//! (`publish`, `approve`, `list`, `show`, `history`, keys and policies; see `registry.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use guard_core::time::Timestamp;

use super::{now_utc, read_bytes, read_text};
use crate::engine::{EngineLimits, GuardEngine, Scheme};
use crate::signer::{self, SignerSpec};
use crate::template::{sign_template, SignRequest};

#[derive(Debug, clap::Subcommand)]
pub enum TemplateCommand {
    /// Sign a template (a local key, AWS KMS or a PKCS#11 token) and write its DSSE envelope.
    // Boxed: a signer spec makes these arguments much larger than `verify`'s.
    Sign(Box<SignArgs>),
    /// Verify a template against its envelope and a pinned public key (inside the guard).
    Verify(VerifyArgs),
    /// Run the validation pipeline on a candidate template: placeholders and schema, hidden
    /// text, the guard's analysis, secrets and personal data, and the diff to the previous one.
    Validate(super::validate::ValidateArgs),
    /// Publish the next version into the registry: validate, sign with your key, record it in
    /// the audit log; active at once if its policy's approvals are met, else pending (publisher).
    Publish(Box<super::registry::PublishArgs>),
    /// Approve a pending version with your signature over its envelope (reviewer).
    Approve(Box<super::registry::ApproveArgs>),
    /// List the registry's templates with their active, latest and pending versions.
    List(super::registry::ListArgs),
    /// Show a version (the active one by default): summary, text, envelope, schema, report,
    /// verification request or offline bundle.
    Show(super::registry::ShowArgs),
    /// Every version of a template with its state and signatures.
    History(super::registry::HistoryArgs),
    /// Add a public key to the registry's keyring for an identity (admin).
    AddKey(Box<super::registry::AddKeyArgs>),
    /// Revoke a key: none of its signatures counts from then on (admin).
    RevokeKey(super::registry::RevokeKeyArgs),
    /// Replace a key with a new one (a new KMS key behind the alias, or a new key file), the
    /// old one kept until it retires (admin).
    RotateKey(Box<super::registry::RotateKeyArgs>),
    /// Print the registry's keyring, as verifiers pin it.
    Keyring(super::registry::KeyringArgs),
    /// Show a template's policy, or set the approvals it needs (admin).
    Policy(super::registry::PolicyArgs),
    /// Withdraw a version for good; an approved one raises the policy's `min_version` (admin).
    Withdraw(super::registry::WithdrawArgs),
}

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The template file; its exact bytes are signed.
    #[arg(long)]
    template: PathBuf,
    /// Private key (PKCS#8 PEM) from `sigil keys generate`: short for `--signer local:FILE`.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "signer",
        conflicts_with = "signer"
    )]
    key: Option<PathBuf>,
    /// The signing backend: `local:FILE`, `aws-kms:alias/NAME[;region=…]` or
    /// `pkcs11:module=LIB;token=LABEL;key=LABEL` (PIN from `SIGIL_PKCS11_PIN` or `pin-file=`).
    #[arg(long, value_name = "SPEC")]
    signer: Option<SignerSpec>,
    /// Template id: lowercase letters, digits and `-_./`.
    #[arg(long)]
    id: String,
    /// Version, from 1.
    #[arg(long, default_value_t = 1)]
    version: u64,
    /// Variable schema (JSON). Without it, `{}`.
    #[arg(long, value_name = "FILE")]
    variables: Option<PathBuf>,
    /// The previous version's template file (required after version 1).
    #[arg(long, value_name = "FILE", conflicts_with = "prev_digest")]
    prev: Option<PathBuf>,
    /// The previous version's template digest, hex SHA-256.
    #[arg(long, value_name = "HEX")]
    prev_digest: Option<String>,
    /// Who signs (the statement's `signer`).
    #[arg(long, default_value = "local-dev")]
    signed_by: String,
    /// Days the signature stays valid (1 to 36500).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    valid_days: u32,
    /// Skip the validation pipeline (`sigil template validate`) that runs before signing.
    #[arg(long)]
    no_validate: bool,
    /// Hex SHA-256 of a validation report made elsewhere; only with `--no-validate`.
    #[arg(long, value_name = "HEX", requires = "no_validate")]
    validation_digest: Option<String>,
    /// Write the validation report (JSON, as digested) here.
    #[arg(long, value_name = "FILE", conflicts_with = "no_validate")]
    validation_report: Option<PathBuf>,
    /// Let e-mail addresses and phone numbers through the pipeline as warnings.
    #[arg(long, conflicts_with = "no_validate")]
    allow_personal_data: bool,
    /// Policy (JSON) for the pipeline's analysis of the template. Without it, the default policy.
    #[arg(long, value_name = "FILE", conflicts_with = "no_validate")]
    policy: Option<PathBuf>,
    /// Where to write the envelope. Without it, standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The template file.
    #[arg(long)]
    template: PathBuf,
    /// The envelope (JSON).
    #[arg(long)]
    envelope: PathBuf,
    /// The pinned public key, SPKI PEM or DER.
    #[arg(long, required_unless_present = "keyring", conflicts_with = "keyring")]
    public_key: Option<PathBuf>,
    /// A keyring (JSON, see docs/contract.md) instead of one key: validity windows, revocation,
    /// approvals and the high-water mark apply.
    #[arg(long, value_name = "FILE")]
    keyring: Option<PathBuf>,
    /// The template's policy (JSON: `min_version`, `approvals`, `withdrawn`); with `--keyring`.
    #[arg(long, value_name = "FILE", requires = "keyring")]
    template_policy: Option<PathBuf>,
    /// The high-water mark kept for this template (JSON `{version, digest}`), read if the file
    /// exists and written with the new mark when the template verifies; with `--keyring`.
    #[arg(long, value_name = "FILE", requires = "keyring")]
    high_water: Option<PathBuf>,
    /// The template id asked for; with `--keyring`.
    #[arg(long, requires = "keyring")]
    id: Option<String>,
    /// Ask for this version instead of the active one; with `--keyring`.
    #[arg(long, requires = "keyring")]
    version: Option<u64>,
    /// The key's scheme.
    #[arg(long, value_enum, default_value_t = SchemeArg::RsassaPkcs1v15Sha256)]
    scheme: SchemeArg,
    /// The time to check validity at (RFC 3339 UTC). Without it, the system clock.
    #[arg(long)]
    now: Option<String>,
    /// Print the verification report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SchemeArg {
    RsassaPkcs1v15Sha256,
    RsassaPssSha256,
}

/// The guard's scheme for a `--scheme` argument.
pub fn scheme(arg: SchemeArg) -> guard_core::Scheme {
    match arg {
        SchemeArg::RsassaPkcs1v15Sha256 => guard_core::Scheme::RsassaPkcs1v15Sha256,
        SchemeArg::RsassaPssSha256 => guard_core::Scheme::RsassaPssSha256,
    }
}

fn engine_scheme(arg: SchemeArg) -> Scheme {
    match arg {
        SchemeArg::RsassaPkcs1v15Sha256 => Scheme::RsassaPkcs1v15Sha256,
        SchemeArg::RsassaPssSha256 => Scheme::RsassaPssSha256,
    }
}

pub fn run(command: TemplateCommand) -> Result<ExitCode> {
    match command {
        TemplateCommand::Sign(args) => sign(*args),
        TemplateCommand::Verify(args) => verify(args),
        TemplateCommand::Validate(args) => super::validate::run(args),
        TemplateCommand::Publish(args) => super::registry::publish(*args),
        TemplateCommand::Approve(args) => super::registry::approve(*args),
        TemplateCommand::List(args) => super::registry::list(args),
        TemplateCommand::Show(args) => super::registry::show(args),
        TemplateCommand::History(args) => super::registry::history(args),
        TemplateCommand::AddKey(args) => super::registry::add_key(*args),
        TemplateCommand::RevokeKey(args) => super::registry::revoke_key(args),
        TemplateCommand::RotateKey(args) => super::registry::rotate_key(*args),
        TemplateCommand::Keyring(args) => super::registry::keyring(args),
        TemplateCommand::Policy(args) => super::registry::policy(args),
        TemplateCommand::Withdraw(args) => super::registry::withdraw(args),
    }
}

fn sign(args: SignArgs) -> Result<ExitCode> {
    let template = read_bytes(&args.template, "template")?;
    let spec = match (&args.signer, &args.key) {
        (Some(spec), _) => spec.clone(),
        (None, Some(path)) => SignerSpec::Local {
            path: path.clone(),
            scheme: guard_core::Scheme::RsassaPkcs1v15Sha256,
        },
        (None, None) => anyhow::bail!("name the key: `--key FILE` or `--signer SPEC`"),
    };
    let signer = signer::open(&spec)?;
    let schema_text = match &args.variables {
        Some(path) => read_text(path, "variable schema")?,
        None => "{}".to_string(),
    };
    let schema: serde_json::Value = serde_json::from_str(&schema_text).with_context(|| {
        format!(
            "variable schema `{}` is not JSON",
            args.variables
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        )
    })?;
    let previous = args
        .prev
        .as_ref()
        .map(|path| read_bytes(path, "previous template"))
        .transpose()?;
    let prev_digest = match (&previous, &args.prev_digest) {
        (Some(bytes), _) => Some(guard_core::provenance::sha256_hex(bytes)),
        (None, Some(hex)) => Some(hex.clone()),
        (None, None) => None,
    };
    let signed_at = Timestamp::parse(&now_utc())?;
    let validation_digest = if args.no_validate {
        args.validation_digest.clone()
    } else {
        let options = super::GuardOptions {
            policy: args.policy.clone(),
            now: None,
            model: None,
        };
        let report = crate::validate::validate(
            &crate::validate::Candidate {
                template_id: &args.id,
                template: &template,
                schema: schema_text.as_bytes(),
                previous: previous.as_deref(),
            },
            &crate::validate::ValidationOptions {
                max_template_bytes: crate::validate::DEFAULT_MAX_TEMPLATE_BYTES,
                allow_personal_data: args.allow_personal_data,
                now: signed_at,
            },
            &options.engine()?,
        )?;
        if let Some(path) = &args.validation_report {
            std::fs::write(path, report.to_json())
                .with_context(|| format!("cannot write `{}`", path.display()))?;
        }
        if !report.passed {
            for stage in report.failures() {
                let name = serde_json::to_value(stage.stage)?;
                for issue in &stage.issues {
                    eprintln!(
                        "{}: {} {}",
                        name.as_str().unwrap_or_default(),
                        issue.code,
                        issue.message
                    );
                }
            }
            eprintln!(
                "refused: `{}` did not pass validation (see `sigil template validate`); nothing was signed",
                args.id
            );
            return Ok(ExitCode::from(1));
        }
        Some(report.digest())
    };
    let not_after = Timestamp::from_unix_seconds(
        signed_at.unix_seconds() + i64::from(args.valid_days) * 86_400,
    );
    let request = SignRequest {
        template_id: &args.id,
        version: args.version,
        template: &template,
        variables_schema: &schema,
        prev_digest,
        signer: &args.signed_by,
        signed_at,
        not_after,
        validation_digest,
    };
    let envelope = sign_template(&request, signer.as_ref())?;
    let json = serde_json::to_string_pretty(&envelope)?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, format!("{json}\n"))
                .with_context(|| format!("cannot write `{}`", path.display()))?;
            eprintln!(
                "signed `{}` v{} -> {}",
                args.id,
                args.version,
                path.display()
            );
        }
        None => outln!("{json}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let template = read_bytes(&args.template, "template")?;
    let envelope = read_bytes(&args.envelope, "envelope")?;
    let now = match &args.now {
        Some(now) => Timestamp::parse(now)?.to_string(),
        None => now_utc(),
    };
    let engine = GuardEngine::new("{}", EngineLimits::default())?;
    let (answer, key_file) = match (&args.public_key, &args.keyring) {
        (Some(path), _) => {
            let key = read_bytes(path, "public key")?;
            let scheme = engine_scheme(args.scheme);
            (
                engine.verify_template(&envelope, &template, &key, scheme, Some(&now))?,
                path.clone(),
            )
        }
        (None, Some(keyring)) => (
            engine.verify_json(&keyring_request(
                &args, keyring, &envelope, &template, &now,
            )?)?,
            keyring.clone(),
        ),
        (None, None) => anyhow::bail!("name the key: `--public-key FILE` or `--keyring FILE`"),
    };
    match answer {
        Ok(report) => {
            if let (Some(path), Some(_)) = (&args.high_water, &args.keyring) {
                let r: guard_core::VerificationReport = serde_json::from_str(&report)?;
                std::fs::write(path, format!("{}\n", serde_json::to_string(&r.high_water)?))
                    .with_context(|| format!("cannot write `{}`", path.display()))?;
            }
            if args.json {
                outln!("{report}");
            } else {
                let r: guard_core::VerificationReport = serde_json::from_str(&report)?;
                outln!("verified     {} v{}", r.template_id, r.version);
                outln!("digest       sha256:{}", r.digest);
                outln!("key          {}", r.key_fingerprint);
                outln!("signer       {} at {}", r.signer, r.signed_at);
                outln!("valid until  {}", r.not_after);
            }
            Ok(ExitCode::SUCCESS)
        }
        // A key that cannot be used is the caller's mistake, not a verdict on the template.
        Err(refusal)
            if matches!(
                refusal.code.as_str(),
                "invalid_key" | "invalid_keyring" | "invalid_template_policy" | "invalid_request"
            ) =>
        {
            // Name the file the problem is in, where one file holds it.
            match (refusal.code.as_str(), &args.template_policy) {
                ("invalid_key" | "invalid_keyring", _) => {
                    anyhow::bail!("`{}`: {}", key_file.display(), refusal.message)
                }
                ("invalid_template_policy", Some(policy)) => {
                    anyhow::bail!("`{}`: {}", policy.display(), refusal.message)
                }
                _ => anyhow::bail!(
                    "the keyring, template policy or high-water file: {}",
                    refusal.message
                ),
            }
        }
        Err(refusal) => {
            if args.json {
                outln!(
                    "{}",
                    serde_json::json!({"verified": false, "code": refusal.code, "message": refusal.message})
                );
            }
            eprintln!("refused ({}): {}", refusal.code, refusal.message);
            Ok(ExitCode::from(1))
        }
    }
}

/// The verification request for `--keyring`: the files are read as JSON and passed on as they
/// are, so the guard's strict parsing sees them whole.
fn keyring_request(
    args: &VerifyArgs,
    keyring: &std::path::Path,
    envelope: &[u8],
    template: &[u8],
    now: &str,
) -> Result<String> {
    let json_file = |path: &std::path::Path, what: &str| -> Result<String> {
        let text = read_text(path, what)?;
        serde_json::from_str::<&serde_json::value::RawValue>(&text)
            .with_context(|| format!("{what} `{}` is not JSON", path.display()))?;
        Ok(text)
    };
    let template = String::from_utf8(template.to_vec()).map_err(|e| {
        anyhow::anyhow!(
            "template `{}` is not UTF-8 (byte {})",
            args.template.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let envelope = String::from_utf8(envelope.to_vec())
        .map_err(|_| anyhow::anyhow!("envelope `{}` is not UTF-8", args.envelope.display()))?;
    let mut request = format!(
        "{{\"envelope\":{},\"template\":{},\"keyring\":{},\"now\":{}",
        serde_json::to_string(&envelope)?,
        serde_json::to_string(&template)?,
        json_file(keyring, "keyring")?,
        serde_json::to_string(now)?
    );
    if let Some(path) = &args.template_policy {
        request.push_str(&format!(
            ",\"template_policy\":{}",
            json_file(path, "template policy")?
        ));
    }
    if let Some(path) = args.high_water.as_ref().filter(|p| p.exists()) {
        request.push_str(&format!(
            ",\"high_water\":{}",
            json_file(path, "high-water mark")?
        ));
    }
    if let Some(id) = &args.id {
        request.push_str(&format!(",\"template_id\":{}", serde_json::to_string(id)?));
    }
    if let Some(version) = args.version {
        request.push_str(&format!(",\"version\":{version}"));
    }
    request.push('}');
    Ok(request)
}

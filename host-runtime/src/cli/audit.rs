//! `sigil audit`: record, inspect, prove and verify the tamper-evident audit log.
//!
//! Exit codes: 0 the log is intact (or the command succeeded), 1 tampering was found, 2 error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use guard_core::transparency::{AuditEntry, EntryKind, MAX_BUNDLE_BYTES};
use guard_core::{Envelope, PinnedKey, Scheme};

use super::template::SchemeArg;
use super::{now_utc, read_bytes};
use crate::audit::{AuditLog, NewEntry, VerifyReport};
use crate::signer::LocalSigner;

/// The largest checkpoint file read; a signed note is a few KiB.
const MAX_CHECKPOINT_FILE: u64 = 1 << 20;

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Prove the log intact: every entry, leaf and root recomputed and checked against the
    /// signed checkpoints (and one kept elsewhere). Exit 0 intact, 1 tampering, 2 error.
    Verify(VerifyArgs),
    /// Print the entries and the latest checkpoint.
    Show(ShowArgs),
    /// Print an inclusion proof (`--index`) or a consistency proof (`--from`) as JSON.
    Proof(ProofArgs),
    /// Print the latest signed checkpoint (a C2SP signed note); `--sign` signs the current tree.
    Checkpoint(CheckpointArgs),
    /// Record a signed template's publication and sign the new checkpoint.
    Publish(PublishArgs),
    /// Write an offline bundle for a published template: envelope, policy, log proof.
    Bundle(BundleArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct Location {
    /// The data folder (keys in `keys/`, the log in `sigil.db` beside the template registry).
    #[arg(long, default_value = ".sigil")]
    data_dir: PathBuf,
    /// The audit database. Without it, `<data-dir>/sigil.db`.
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
}

impl Location {
    fn db(&self) -> PathBuf {
        self.db
            .clone()
            .unwrap_or_else(|| self.data_dir.join("sigil.db"))
    }

    fn open_existing(&self) -> Result<AuditLog> {
        let db = self.db();
        AuditLog::open_existing(&db).with_context(|| format!("cannot open `{}`", db.display()))
    }

    fn signing_key(&self, key: &Option<PathBuf>) -> Result<LocalSigner> {
        let path = key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys/signing-key.pem"));
        Ok(LocalSigner::from_pem_file(&path)?)
    }
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    at: Location,
    /// A checkpoint kept outside the log (published, or from a monitor). With it, entries cut
    /// off together with their checkpoints are found too.
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// The log's public key, SPKI PEM or DER; repeat it for keys the current one replaced.
    /// Without it, `<data-dir>/keys/signing-key.pub.pem`.
    #[arg(long, value_name = "PUBLIC.pem")]
    key: Vec<PathBuf>,
    /// The key's scheme.
    #[arg(long, value_enum, default_value_t = SchemeArg::RsassaPkcs1v15Sha256)]
    scheme: SchemeArg,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    at: Location,
    /// Print each entry's stored JSON, one a line.
    #[arg(long)]
    json: bool,
    /// The first entry to print.
    #[arg(long, default_value_t = 0, value_name = "N")]
    from: u64,
    /// How many entries to print at most.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct ProofArgs {
    #[command(flatten)]
    at: Location,
    /// The entry to prove included.
    #[arg(
        long,
        value_name = "N",
        required_unless_present = "from",
        conflicts_with = "from"
    )]
    index: Option<u64>,
    /// The older tree size to prove consistent with the newer one.
    #[arg(long, value_name = "M")]
    from: Option<u64>,
    /// The tree to prove against. Without it, the latest checkpoint's size.
    #[arg(long, value_name = "M")]
    tree_size: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct CheckpointArgs {
    #[command(flatten)]
    at: Location,
    /// Sign a checkpoint of the current tree first.
    #[arg(long)]
    sign: bool,
    /// Private key for `--sign`. Without it, `<data-dir>/keys/signing-key.pem`.
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    #[command(flatten)]
    at: Location,
    /// The signed template's envelope (JSON).
    #[arg(long, value_name = "FILE")]
    envelope: PathBuf,
    /// The template the envelope signs: it is verified (inside the guard) before anything is
    /// recorded.
    #[arg(long, value_name = "FILE")]
    template: PathBuf,
    /// The public key the envelope must verify under. Without it,
    /// `<data-dir>/keys/signing-key.pub.pem`.
    #[arg(long, value_name = "PUBLIC.pem")]
    template_key: Option<PathBuf>,
    /// The template key's scheme.
    #[arg(long, value_enum, default_value_t = SchemeArg::RsassaPkcs1v15Sha256)]
    template_scheme: SchemeArg,
    /// Who publishes: `role:<role>` or a pseudonym `psn:<32 hex>`; never a name or address.
    #[arg(long, default_value = "role:publisher")]
    actor: String,
    /// Private key that signs the checkpoint. Without it, `<data-dir>/keys/signing-key.pem`.
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// Origin of a new log (its checkpoints' first line and key name).
    #[arg(long)]
    origin: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct BundleArgs {
    #[command(flatten)]
    at: Location,
    /// The `template.published` entry.
    #[arg(long, value_name = "N")]
    index: u64,
    /// The envelope that entry records.
    #[arg(long, value_name = "FILE")]
    envelope: PathBuf,
    /// The template policy record (JSON). Without it, `null`.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Where to write the bundle. Without it, standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(command: AuditCommand) -> Result<ExitCode> {
    match command {
        AuditCommand::Verify(args) => verify(args),
        AuditCommand::Show(args) => show(args),
        AuditCommand::Proof(args) => proof(args),
        AuditCommand::Checkpoint(args) => checkpoint(args),
        AuditCommand::Publish(args) => publish(args),
        AuditCommand::Bundle(args) => bundle(args),
    }
}

/// Reads at most `limit` bytes, refusing a larger file before reading it.
fn read_limited(path: &Path, what: &str, limit: u64) -> Result<Vec<u8>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what} `{}`", path.display()))?
        .len();
    if size > limit {
        anyhow::bail!(
            "{what} `{}` is {size} bytes; the limit is {limit}",
            path.display()
        );
    }
    read_bytes(path, what)
}

fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let log = args.at.open_existing()?;
    let key_paths = if args.key.is_empty() {
        vec![args.at.data_dir.join("keys/signing-key.pub.pem")]
    } else {
        args.key.clone()
    };
    let scheme = match args.scheme {
        SchemeArg::RsassaPkcs1v15Sha256 => Scheme::RsassaPkcs1v15Sha256,
        SchemeArg::RsassaPssSha256 => Scheme::RsassaPssSha256,
    };
    let mut verifiers = Vec::new();
    for path in &key_paths {
        let key = PinnedKey::from_spki(&read_bytes(path, "public key")?, scheme)
            .with_context(|| format!("`{}`", path.display()))?;
        verifiers.push(log.verifier(key)?);
    }
    let external = match &args.checkpoint {
        Some(path) => Some(read_limited(path, "checkpoint", MAX_CHECKPOINT_FILE)?),
        None => None,
    };
    let report = log
        .verify_with_keys(&verifiers, external.as_deref())
        .context("cannot verify the log")?;
    // A registry beside the log must say what the log says.
    let registry_problems = if crate::registry::Registry::is_registry(&log)? {
        let registry = crate::registry::Registry::open(&args.at.db())?;
        Some(registry.check()?)
    } else {
        None
    };
    let agrees = registry_problems.as_ref().is_none_or(Vec::is_empty);
    if args.json {
        let mut json = report_json(&report);
        if let Some(problems) = &registry_problems {
            if let Some(object) = json.as_object_mut() {
                object.insert(
                    "registry".into(),
                    serde_json::json!({"consistent": problems.is_empty(), "problems": problems}),
                );
            }
        }
        outln!("{json}");
    } else {
        outln!("entries      {}", report.entries);
        outln!("root         {}", STANDARD.encode(report.root));
        match report.latest_checkpoint {
            Some(size) => outln!(
                "checkpoints  {} valid, latest at size {size}",
                report.checkpoints
            ),
            None => outln!("checkpoints  none valid"),
        }
        if report.unsigned_tail > 0 {
            outln!(
                "unsigned     {} entries after the latest checkpoint",
                report.unsigned_tail
            );
        }
        if let Some(size) = report.external_checkpoint {
            outln!("external     checkpoint at size {size}");
        }
        for problem in &report.problems {
            outln!("TAMPERED     {problem}");
        }
        if report.omitted > 0 {
            outln!("TAMPERED     and {} more problems", report.omitted);
        }
        outln!(
            "{}",
            if report.intact() {
                "log intact"
            } else {
                "log TAMPERED"
            }
        );
        if let Some(problems) = &registry_problems {
            for problem in problems {
                outln!("REGISTRY     {problem}");
            }
            outln!(
                "{}",
                if problems.is_empty() {
                    "registry agrees with the log"
                } else {
                    "registry DIFFERS from the log"
                }
            );
        }
    }
    Ok(if report.intact() && agrees {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn report_json(report: &VerifyReport) -> serde_json::Value {
    serde_json::json!({
        "intact": report.intact(),
        "entries": report.entries,
        "root": STANDARD.encode(report.root),
        "checkpoints": report.checkpoints,
        "latest_checkpoint": report.latest_checkpoint,
        "unsigned_tail": report.unsigned_tail,
        "external_checkpoint": report.external_checkpoint,
        "problems": report.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "omitted": report.omitted,
    })
}

fn show(args: ShowArgs) -> Result<ExitCode> {
    const PAGE: u64 = 1000;
    let log = args.at.open_existing()?;
    let mut next = args.from;
    let mut left = args.limit.unwrap_or(u64::MAX);
    // Page by page, so a long log is never held in memory.
    while left > 0 {
        let page = log.entries(next, left.min(PAGE))?;
        let Some(&(last, _)) = page.last() else {
            break;
        };
        for (seq, bytes) in &page {
            if args.json {
                outln!("{}", String::from_utf8_lossy(bytes));
            } else {
                outln!("{}", describe(*seq, bytes));
            }
        }
        left = left.saturating_sub(page.len() as u64);
        next = last + 1;
    }
    if !args.json {
        outln!("origin  {}", log.origin());
        match log.latest_checkpoint()? {
            Some(cp) => outln!(
                "latest checkpoint: size {}, root {} (unverified; `sigil audit verify` checks it)",
                cp.checkpoint.size,
                STANDARD.encode(cp.checkpoint.root)
            ),
            None => outln!("no checkpoint yet"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One entry as a line of `show`.
fn describe(seq: u64, bytes: &[u8]) -> String {
    match AuditEntry::from_leaf_bytes(bytes) {
        Ok(e) => {
            let digests: Vec<String> = e
                .digests
                .iter()
                .map(|(name, d)| format!("{name}={}", d.get(..16).unwrap_or(d)))
                .collect();
            format!(
                "{seq:>6}  {}  {:<18}  {:<38}  {}  {}",
                e.time,
                e.kind.as_str(),
                e.actor,
                e.subject.as_deref().unwrap_or("-"),
                digests.join(" ")
            )
        }
        Err(err) => format!("{seq:>6}  INVALID: {err}"),
    }
}

fn proof(args: ProofArgs) -> Result<ExitCode> {
    let log = args.at.open_existing()?;
    let size = match args.tree_size {
        Some(size) => size,
        None => match log.latest_checkpoint()? {
            Some(cp) => cp.checkpoint.size,
            None => log.size()?,
        },
    };
    let checkpoint = log.checkpoint_at(size)?.map(|c| c.note);
    let encode = |hashes: &[[u8; 32]]| -> Vec<String> {
        hashes.iter().map(|h| STANDARD.encode(h)).collect()
    };
    let out = if let Some(index) = args.index {
        let proof = log.inclusion_proof(index, size)?;
        let bytes = log.entry_bytes(index)?;
        serde_json::json!({
            "index": index,
            "tree_size": size,
            "leaf_hash": STANDARD.encode(guard_core::transparency::leaf_hash(&bytes)),
            "inclusion_proof": encode(&proof),
            "root": STANDARD.encode(log.root(size)?),
            "entry": String::from_utf8_lossy(&bytes),
            "checkpoint": checkpoint,
        })
    } else {
        let first = args.from.unwrap_or(0);
        let proof = log.consistency_proof(first, size)?;
        serde_json::json!({
            "first": first,
            "tree_size": size,
            "consistency_proof": encode(&proof),
            "first_root": STANDARD.encode(log.root(first.min(size))?),
            "root": STANDARD.encode(log.root(size)?),
            "checkpoint": checkpoint,
        })
    };
    outln!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

fn checkpoint(args: CheckpointArgs) -> Result<ExitCode> {
    let note = if args.sign {
        let signer = args.at.signing_key(&args.signing_key)?;
        let mut log = args.at.open_existing()?;
        log.sign_checkpoint(&signer)?.note
    } else {
        let log = args.at.open_existing()?;
        match log.latest_checkpoint()? {
            Some(cp) => cp.note,
            None => anyhow::bail!("the log has no checkpoint yet (sign one with --sign)"),
        }
    };
    // The note is printed exactly, so it can be saved and given to `verify --checkpoint`.
    use std::io::Write as _;
    std::io::stdout().lock().write_all(note.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn read_envelope(path: &Path) -> Result<Envelope> {
    let bytes = read_limited(
        path,
        "envelope",
        guard_core::provenance::MAX_ENVELOPE_BYTES as u64,
    )?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("envelope `{}` is not a DSSE envelope", path.display()))
}

fn publish(args: PublishArgs) -> Result<ExitCode> {
    let envelope = read_envelope(&args.envelope)?;
    let signer = args.at.signing_key(&args.signing_key)?;
    // Only a template that verifies is recorded as published.
    let template = read_limited(
        &args.template,
        "template",
        guard_core::provenance::MAX_TEMPLATE_BYTES as u64,
    )?;
    let key_path = args
        .template_key
        .clone()
        .unwrap_or_else(|| args.at.data_dir.join("keys/signing-key.pub.pem"));
    let key = read_limited(&key_path, "public key", 1 << 20)?;
    let envelope_json = serde_json::to_vec(&envelope)?;
    let engine = crate::engine::GuardEngine::new("{}", crate::engine::EngineLimits::default())?;
    let now = now_utc();
    let scheme = match args.template_scheme {
        SchemeArg::RsassaPkcs1v15Sha256 => crate::engine::Scheme::RsassaPkcs1v15Sha256,
        SchemeArg::RsassaPssSha256 => crate::engine::Scheme::RsassaPssSha256,
    };
    if let Err(refusal) =
        engine.verify_template(&envelope_json, &template, &key, scheme, Some(&now))?
    {
        eprintln!(
            "refused ({}): {}; nothing was recorded",
            refusal.code, refusal.message
        );
        return Ok(ExitCode::from(1));
    }
    let entry = NewEntry::template_published(&envelope, &args.actor, &now)?;
    let db = args.at.db();
    if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create `{}`", parent.display()))?;
    }
    let mut log = AuditLog::open_with_origin(&db, args.origin.as_deref())
        .with_context(|| format!("cannot open `{}`", db.display()))?;
    // A registry's log is written by the registry alone: it checks who publishes, with which
    // key, under which policy. Recording beside it would let anyone put words in its mouth.
    if crate::registry::Registry::is_registry(&log)? {
        eprintln!(
            "refused: `{}` holds a template registry; publish with `sigil template publish`, which records it here",
            db.display()
        );
        return Ok(ExitCode::from(1));
    }
    if let Some(conflict) = history_conflict(&log, &entry)? {
        eprintln!("refused: {conflict}; nothing was recorded");
        return Ok(ExitCode::from(1));
    }
    let (appended, signed) = log.append_and_checkpoint(entry, &signer)?;
    outln!(
        "published    entry {} ({})",
        appended.seq,
        STANDARD.encode(appended.leaf_hash)
    );
    outln!(
        "checkpoint   size {}, root {}",
        signed.checkpoint.size,
        STANDARD.encode(signed.checkpoint.root)
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether the log already holds this template at this version or a later one: publishing
/// again, publishing another text under a version, or an older version after a newer one would
/// make the record say two things.
fn history_conflict(log: &AuditLog, entry: &NewEntry) -> Result<Option<String>> {
    let Some((id, version)) = entry
        .subject
        .as_deref()
        .and_then(|s| s.rsplit_once('@'))
        .and_then(|(id, v)| Some((id.to_string(), v.parse::<u64>().ok()?)))
    else {
        return Ok(None);
    };
    let digest = entry.digests.get("template").cloned().unwrap_or_default();
    let mut from = 0;
    loop {
        let page = log.entries(from, 1000)?;
        let Some(&(last, _)) = page.last() else {
            return Ok(None);
        };
        for (_, bytes) in &page {
            let Ok(old) = AuditEntry::from_leaf_bytes(bytes) else {
                continue;
            };
            if old.kind != EntryKind::TemplatePublished {
                continue;
            }
            let Some((old_id, old_version)) = old
                .subject
                .as_deref()
                .and_then(|s| s.rsplit_once('@'))
                .and_then(|(i, v)| Some((i, v.parse::<u64>().ok()?)))
            else {
                continue;
            };
            if old_id != id {
                continue;
            }
            let old_digest = old
                .digests
                .get("template")
                .map(String::as_str)
                .unwrap_or("");
            if old_version == version && old_digest != digest {
                return Ok(Some(format!(
                    "`{id}` v{version} was published (entry {}) with another text",
                    old.seq
                )));
            }
            if old_version >= version {
                return Ok(Some(format!(
                    "`{id}` v{old_version} is already published (entry {}); a version is published once, in order",
                    old.seq
                )));
            }
        }
        from = last + 1;
    }
}

fn bundle(args: BundleArgs) -> Result<ExitCode> {
    let log = args.at.open_existing()?;
    let envelope = read_envelope(&args.envelope)?;
    let policy = match &args.policy {
        Some(path) => serde_json::from_slice(&read_limited(
            path,
            "template policy",
            MAX_BUNDLE_BYTES as u64,
        )?)
        .with_context(|| format!("template policy `{}` is not JSON", path.display()))?,
        None => serde_json::Value::Null,
    };
    let bundle = log.offline_bundle(args.index, &envelope, policy)?;
    let json = serde_json::to_string_pretty(&bundle)?;
    match &args.out {
        Some(path) => std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("cannot write `{}`", path.display()))?,
        None => outln!("{json}"),
    }
    Ok(ExitCode::SUCCESS)
}

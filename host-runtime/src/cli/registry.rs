//! The registry's commands: `sigil init`, `sigil identity …`, and the registry side of
//! `sigil template …` (publish, approve, list, show, history, keys, policies, withdrawals).
//!
//! Every command but `init` acts as the identity whose token it is given (`SIGIL_TOKEN` or
//! `--token-file`); the registry checks that identity's roles itself.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use guard_core::provenance::Approvals;
use guard_core::time::Timestamp;

use super::{now_utc, read_bytes, read_text};
use crate::engine::{EngineLimits, GuardEngine};
use crate::registry::{Publication, Registry, RegistryError, Role, Session, VersionState};
use crate::signer::{self, AwsKmsSigner, LocalSigner, Signer, SignerSpec};
use crate::validate::{ValidationOptions, DEFAULT_MAX_TEMPLATE_BYTES};

/// The environment variable that carries an identity's token.
pub const TOKEN_ENV: &str = "SIGIL_TOKEN";

/// Where the registry is and who is asking.
#[derive(Debug, Clone, clap::Args)]
pub struct Access {
    /// The data folder (the database `sigil.db`, keys in `keys/`).
    #[arg(long, default_value = ".sigil")]
    pub(super) data_dir: PathBuf,
    /// The database. Without it, `<data-dir>/sigil.db`.
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// A file holding the identity's token. Without it, the `SIGIL_TOKEN` variable.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The key that signs the audit log's checkpoints. Without it,
    /// `local:<data-dir>/keys/signing-key.pem`.
    #[arg(long, value_name = "SPEC")]
    log_signer: Option<SignerSpec>,
}

impl Access {
    pub(super) fn db(&self) -> PathBuf {
        self.db
            .clone()
            .unwrap_or_else(|| self.data_dir.join("sigil.db"))
    }

    /// Changes are dated by the system clock, never by the caller: the log's times and every
    /// key-window check depend on it.
    pub(super) fn now(&self) -> Result<Timestamp> {
        Ok(Timestamp::parse(&now_utc())?)
    }

    fn open(&self) -> Result<Registry> {
        let db = self.db();
        if !db.is_file() {
            anyhow::bail!(
                "no registry at `{}`: run `sigil init --data-dir {}` first",
                db.display(),
                self.data_dir.display()
            );
        }
        Registry::open(&db).with_context(|| format!("cannot open `{}`", db.display()))
    }

    fn token(&self) -> Result<String> {
        let token = match &self.token_file {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read token file `{}`", path.display()))?;
                if bytes.len() > 256 {
                    anyhow::bail!("token file `{}` is too large to be a token", path.display());
                }
                String::from_utf8(bytes)
                    .map_err(|_| anyhow::anyhow!("token file `{}` is not text", path.display()))?
            }
            None => std::env::var(TOKEN_ENV).map_err(|_| {
                anyhow::anyhow!("no identity: set {TOKEN_ENV} or pass --token-file")
            })?,
        };
        Ok(token.trim().to_string())
    }

    /// The registry and the session of the caller's token.
    pub(super) fn session(&self) -> Result<(Registry, Session)> {
        let registry = self.open()?;
        let session = registry.authenticate(&self.token()?)?;
        Ok((registry, session))
    }

    pub(super) fn log_signer(&self) -> Result<Box<dyn Signer>> {
        let spec = match &self.log_signer {
            Some(spec) => spec.clone(),
            None => SignerSpec::Local {
                path: self.data_dir.join("keys/signing-key.pem"),
                scheme: guard_core::Scheme::RsassaPkcs1v15Sha256,
            },
        };
        signer::open(&spec).context("cannot open the audit log's signing key")
    }
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    #[command(flatten)]
    at: Access,
    /// The first identity's name; it gets the admin role.
    #[arg(long, default_value = "admin")]
    admin: String,
    /// Where to write the admin's token (mode 0600). Without it, `<data-dir>/admin.token`.
    #[arg(long, value_name = "FILE")]
    token_out: Option<PathBuf>,
    /// Origin of the new audit log (its checkpoints' first line and key name).
    #[arg(long)]
    origin: Option<String>,
}

impl Access {
    /// Local access to a data folder (no token), for the service.
    pub(super) fn local(data_dir: PathBuf, log_signer: Option<SignerSpec>) -> Self {
        Access {
            data_dir,
            db: None,
            token_file: None,
            log_signer,
        }
    }

    /// Makes the log's local signing key (unless another signer is named) and the database's
    /// folder, when missing. Returns the new key's path and fingerprint when one was made.
    pub(super) fn prepare(&self) -> Result<Option<(PathBuf, String)>> {
        let keys = self.data_dir.join("keys");
        let log_key = keys.join("signing-key.pem");
        let made = if self.log_signer.is_none() && !log_key.exists() {
            let (_, files) = LocalSigner::generate_files(&keys, "signing-key", 3072, false)?;
            Some((files.private_key, files.fingerprint))
        } else {
            None
        };
        let db = self.db();
        if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create `{}`", parent.display()))?;
        }
        Ok(made)
    }

    /// The registry, made when missing (local access: no token).
    pub(super) fn open_or_create(&self) -> Result<Registry> {
        self.prepare()?;
        let db = self.db();
        Registry::open(&db).with_context(|| format!("cannot open `{}`", db.display()))
    }
}

/// `sigil init`: the data folder, the log's signing key, the database and the first admin.
pub fn init(args: InitArgs) -> Result<ExitCode> {
    if let Some((path, fingerprint)) = args.at.prepare()? {
        outln!("log key      {} ({})", path.display(), fingerprint);
    }
    let db = args.at.db();
    let token_path = args
        .token_out
        .clone()
        .unwrap_or_else(|| args.at.data_dir.join("admin.token"));
    // The token's file is made before the admin is: a token that cannot be written would leave
    // a registry nobody can administer.
    let mut token_file = create_secret(&token_path)?;
    let bootstrapped = Registry::open_with_origin(&db, args.origin.as_deref())
        .with_context(|| format!("cannot open `{}`", db.display()))
        .and_then(|mut registry| {
            Ok(registry.bootstrap(&args.admin, args.at.now()?, args.at.log_signer()?.as_ref())?)
        });
    let token = match bootstrapped {
        Ok(token) => token,
        Err(e) => {
            drop(token_file);
            let _ = std::fs::remove_file(&token_path);
            return Err(e);
        }
    };
    fill_secret(&mut token_file, &token_path, &token)?;
    outln!("registry     {}", db.display());
    outln!(
        "admin        {} (token in {})",
        args.admin,
        token_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes a token readable by its owner only, never over an existing file.
pub(super) fn write_secret(path: &Path, token: &str) -> Result<()> {
    let mut file = create_secret(path)?;
    fill_secret(&mut file, path, token)
}

/// A new file readable by its owner only; an existing one is never replaced.
pub(super) fn create_secret(path: &Path) -> Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path).with_context(|| {
        if path.exists() {
            format!(
                "`{}` exists; a token is never written over a file",
                path.display()
            )
        } else {
            format!("cannot create `{}`", path.display())
        }
    })
}

pub(super) fn fill_secret(file: &mut std::fs::File, path: &Path, token: &str) -> Result<()> {
    use std::io::Write as _;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write `{}`", path.display()))
}

#[derive(Debug, clap::Subcommand)]
pub enum IdentityCommand {
    /// Add an identity with roles and write its token (admin).
    Add(IdentityAddArgs),
    /// List identities and their roles (admin, auditor).
    List(ListArgs),
    /// Replace an identity's roles (admin).
    Roles(IdentityRolesArgs),
    /// Disable an identity: its token stops working (admin).
    Disable(IdentityNameArgs),
    /// Give an identity a new token; the old one stops working (admin).
    Reissue(IdentityTokenArgs),
}

#[derive(Debug, clap::Args)]
pub struct IdentityAddArgs {
    #[command(flatten)]
    at: Access,
    /// Name: 1 to 64 of a-z 0-9 . _ -.
    name: String,
    /// A role (admin, publisher, reviewer, scanner, auditor); repeat for more.
    #[arg(long = "role", required = true)]
    roles: Vec<Role>,
    /// Where to write the token (mode 0600). Without it, `<data-dir>/<name>.token`.
    #[arg(long, value_name = "FILE")]
    token_out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct IdentityRolesArgs {
    #[command(flatten)]
    at: Access,
    /// The identity.
    name: String,
    /// Its roles from now on; repeat for more. None removes every role.
    #[arg(long = "role")]
    roles: Vec<Role>,
}

#[derive(Debug, clap::Args)]
pub struct IdentityNameArgs {
    #[command(flatten)]
    at: Access,
    /// The identity.
    name: String,
}

#[derive(Debug, clap::Args)]
pub struct IdentityTokenArgs {
    #[command(flatten)]
    at: Access,
    /// The identity.
    name: String,
    /// Where to write the new token (mode 0600; it must not exist).
    #[arg(long, value_name = "FILE")]
    token_out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    at: Access,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl clap::ValueEnum for Role {
    fn value_variants<'a>() -> &'a [Self] {
        &Role::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

pub fn identity(command: IdentityCommand) -> Result<ExitCode> {
    match command {
        IdentityCommand::Add(args) => {
            let (mut registry, session) = args.at.session()?;
            let roles: BTreeSet<Role> = args.roles.iter().copied().collect();
            let path = args
                .token_out
                .clone()
                .unwrap_or_else(|| args.at.data_dir.join(format!("{}.token", args.name)));
            if !crate::registry::is_identity_name(&args.name) {
                anyhow::bail!(
                    "identity name `{}` must be 1 to 64 of a-z 0-9 . _ -, starting with a letter or digit",
                    args.name.escape_debug()
                );
            }
            // The file first: an identity whose token cannot be written is no use.
            let mut file = create_secret(&path)?;
            let added = args.at.log_signer().and_then(|log_signer| {
                Ok(registry.add_identity(
                    &session,
                    &args.name,
                    &roles,
                    args.at.now()?,
                    log_signer.as_ref(),
                )?)
            });
            let token = match added {
                Ok(token) => token,
                Err(e) => {
                    drop(file);
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
            };
            fill_secret(&mut file, &path, &token)?;
            outln!("added        {} (token in {})", args.name, path.display());
        }
        IdentityCommand::List(args) => {
            let (registry, session) = args.at.session()?;
            let identities = registry.identities(&session)?;
            if args.json {
                outln!("{}", serde_json::to_string_pretty(&identities)?);
            } else {
                for identity in identities {
                    outln!(
                        "{:<24} {:<36} {}",
                        identity.name,
                        identity.roles.join(","),
                        identity
                            .disabled_at
                            .map_or(String::new(), |at| format!("disabled {at}"))
                    );
                }
            }
        }
        IdentityCommand::Roles(args) => {
            let (mut registry, session) = args.at.session()?;
            let roles: BTreeSet<Role> = args.roles.iter().copied().collect();
            registry.set_roles(
                &session,
                &args.name,
                &roles,
                args.at.now()?,
                args.at.log_signer()?.as_ref(),
            )?;
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            outln!(
                "roles        {} now {}",
                args.name,
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(",")
                }
            );
        }
        IdentityCommand::Disable(args) => {
            let (mut registry, session) = args.at.session()?;
            registry.disable_identity(
                &session,
                &args.name,
                args.at.now()?,
                args.at.log_signer()?.as_ref(),
            )?;
            outln!("disabled     {}", args.name);
        }
        IdentityCommand::Reissue(args) => {
            let (mut registry, session) = args.at.session()?;
            if args.token_out.exists() {
                anyhow::bail!(
                    "`{}` exists; name another --token-out",
                    args.token_out.display()
                );
            }
            let token = registry.reissue_token(
                &session,
                &args.name,
                args.at.now()?,
                args.at.log_signer()?.as_ref(),
            )?;
            write_secret(&args.token_out, &token)?;
            outln!(
                "reissued     {} (token in {})",
                args.name,
                args.token_out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A signing key named on the command line: `--signer SPEC` or `--key FILE`.
#[derive(Debug, Clone, clap::Args)]
pub struct SigningKey {
    /// Private key (PKCS#8 PEM): short for `--signer local:FILE`.
    #[arg(long, value_name = "FILE", conflicts_with = "signer")]
    key: Option<PathBuf>,
    /// The signing backend: `local:FILE`, `aws-kms:alias/NAME[;region=…]` or
    /// `pkcs11:module=LIB;token=LABEL;key=LABEL`.
    #[arg(long, value_name = "SPEC")]
    signer: Option<SignerSpec>,
}

impl SigningKey {
    fn open(&self) -> Result<Box<dyn Signer>> {
        let spec = match (&self.signer, &self.key) {
            (Some(spec), _) => spec.clone(),
            (None, Some(path)) => SignerSpec::Local {
                path: path.clone(),
                scheme: guard_core::Scheme::RsassaPkcs1v15Sha256,
            },
            (None, None) => anyhow::bail!("name your key: `--key FILE` or `--signer SPEC`"),
        };
        Ok(signer::open(&spec)?)
    }
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    #[command(flatten)]
    at: Access,
    /// Template id: lowercase letters, digits and `-_./`.
    #[arg(long)]
    id: String,
    /// The template file; its exact bytes are published.
    #[arg(long)]
    template: PathBuf,
    /// Variable schema (JSON). Without it, `{}`.
    #[arg(long, value_name = "FILE")]
    variables: Option<PathBuf>,
    #[command(flatten)]
    key: SigningKey,
    /// Days the signature stays valid (1 to 36500).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    valid_days: u32,
    /// Let e-mail addresses and phone numbers through the pipeline as warnings.
    #[arg(long)]
    allow_personal_data: bool,
    /// Guard policy (JSON) for the pipeline's analysis. Without it, the default policy.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Write the envelope here.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    at: Access,
    /// Template id.
    #[arg(long)]
    id: String,
    /// The pending version.
    #[arg(long)]
    version: u64,
    #[command(flatten)]
    key: SigningKey,
    /// Write the envelope here.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    at: Access,
    /// Template id.
    #[arg(long)]
    id: String,
    /// The version. Without it, the active one.
    #[arg(long)]
    version: Option<u64>,
    /// What to print: a summary, the exact text, the envelope, the schema, the validation
    /// report, a verification request (keyring and policy included) or an offline bundle.
    #[arg(long, value_enum, default_value_t = ShowPart::Summary)]
    part: ShowPart,
    /// The verification time written into `--part request` (RFC 3339 UTC). Without it, now.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ShowPart {
    Summary,
    Text,
    Envelope,
    Schema,
    Report,
    Request,
    Bundle,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    at: Access,
    /// Template id.
    #[arg(long)]
    id: String,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct AddKeyArgs {
    #[command(flatten)]
    at: Access,
    /// The identity whose key it is (their signatures are made with it).
    #[arg(long)]
    owner: String,
    /// The public key, SPKI PEM or DER.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "signer",
        conflicts_with = "signer"
    )]
    public_key: Option<PathBuf>,
    /// Or the signer whose public key it is (read from KMS or the token).
    #[arg(long, value_name = "SPEC")]
    signer: Option<SignerSpec>,
    /// The key's scheme (with `--public-key`).
    #[arg(long, value_enum, default_value_t = super::template::SchemeArg::RsassaPkcs1v15Sha256)]
    scheme: super::template::SchemeArg,
    /// From when its signatures count (RFC 3339 UTC). Without it, now.
    #[arg(long)]
    valid_from: Option<String>,
    /// When it retires (RFC 3339 UTC).
    #[arg(long)]
    valid_until: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RevokeKeyArgs {
    #[command(flatten)]
    at: Access,
    /// The key's fingerprint.
    #[arg(long)]
    key: String,
    /// From when none of its signatures counts (RFC 3339 UTC). Without it, now.
    #[arg(long)]
    at_time: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RotateKeyArgs {
    #[command(flatten)]
    at: Access,
    /// The fingerprint of the key being replaced.
    #[arg(long)]
    key: String,
    /// The new key: a signer spec. With `--create`, an `aws-kms:alias/…` spec makes a new KMS
    /// key and moves the alias to it, and a `local:FILE` spec generates the key file.
    #[arg(long, value_name = "SPEC")]
    signer: SignerSpec,
    /// Create the new key instead of using an existing one.
    #[arg(long)]
    create: bool,
    /// Modulus size of a created key.
    #[arg(long, default_value_t = 3072)]
    bits: u32,
    /// Retire the old key this many days from now (its signatures stop counting then).
    /// Without it, the old key stays until retired or revoked.
    #[arg(long, value_name = "DAYS")]
    retire_after: Option<u32>,
}

#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    #[command(flatten)]
    at: Access,
    /// Template id.
    #[arg(long)]
    id: String,
    /// Signatures by distinct signers a version needs (admin); with `--of`.
    #[arg(long, requires = "of")]
    threshold: Option<u32>,
    /// Fingerprints whose signatures count, comma-separated; with `--threshold`.
    #[arg(long, value_delimiter = ',', requires = "threshold")]
    of: Vec<String>,
    /// Go back to one signature by any key of the keyring (admin).
    #[arg(long, conflicts_with = "threshold")]
    clear_approvals: bool,
}

#[derive(Debug, clap::Args)]
pub struct WithdrawArgs {
    #[command(flatten)]
    at: Access,
    /// Template id.
    #[arg(long)]
    id: String,
    /// The version.
    #[arg(long)]
    version: u64,
}

#[derive(Debug, clap::Args)]
pub struct KeyringArgs {
    #[command(flatten)]
    at: Access,
    /// With owners and when each key was added (not the verifier's format).
    #[arg(long)]
    details: bool,
}

/// An `--out` that could not be written after the change committed would lose the envelope's
/// copy only, but say so before anything is done.
fn check_out(out: Option<&Path>) -> Result<()> {
    if let Some(parent) = out
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
    {
        if !parent.is_dir() {
            anyhow::bail!("--out: `{}` is not a folder", parent.display());
        }
    }
    Ok(())
}

pub fn publish(args: PublishArgs) -> Result<ExitCode> {
    check_out(args.out.as_deref())?;
    let (mut registry, session) = args.at.session()?;
    let template = read_bytes(&args.template, "template")?;
    let schema = match &args.variables {
        Some(path) => read_text(path, "variable schema")?.into_bytes(),
        None => b"{}".to_vec(),
    };
    let signer = args.key.open()?;
    let guard = super::GuardOptions {
        policy: args.policy.clone(),
        now: None,
        model: None,
    };
    let engine = guard.engine()?;
    let request = crate::registry::PublishRequest {
        template_id: &args.id,
        template: &template,
        variables_schema: &schema,
        valid_days: args.valid_days,
        validation: ValidationOptions {
            max_template_bytes: DEFAULT_MAX_TEMPLATE_BYTES,
            allow_personal_data: args.allow_personal_data,
            now: args.at.now()?,
        },
    };
    let log_signer = args.at.log_signer()?;
    match registry.publish(
        &session,
        &request,
        signer.as_ref(),
        log_signer.as_ref(),
        &engine,
    ) {
        Ok(publication) => {
            print_publication(&publication, args.out.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Err(RegistryError::Validation(report)) => {
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
                "refused: `{}` did not pass validation; the refusal and its report (sha256:{}) are in the audit log",
                args.id,
                report.digest()
            );
            Ok(ExitCode::from(1))
        }
        Err(e @ RegistryError::Refused { .. }) => {
            eprintln!("refused: {e}; nothing was published");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

pub fn approve(args: ApproveArgs) -> Result<ExitCode> {
    check_out(args.out.as_deref())?;
    let (mut registry, session) = args.at.session()?;
    // The version first: starting the guard takes a moment, and a typo should not wait for it.
    let version = registry.show(&session, &args.id, Some(args.version))?;
    if version.info.state != VersionState::Pending {
        return Err(RegistryError::Conflict(format!(
            "`{}` v{} is {}, not waiting for approvals",
            args.id,
            args.version,
            version.info.state.as_str()
        ))
        .into());
    }
    let signer = args.key.open()?;
    let engine = GuardEngine::new("{}", EngineLimits::default())?;
    let log_signer = args.at.log_signer()?;
    match registry.approve(
        &session,
        &args.id,
        args.version,
        signer.as_ref(),
        log_signer.as_ref(),
        &engine,
        args.at.now()?,
    ) {
        Ok(publication) => {
            print_publication(&publication, args.out.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ RegistryError::Refused { .. }) => {
            eprintln!("refused: {e}; nothing was recorded");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

fn print_publication(publication: &Publication, out: Option<&Path>) -> Result<()> {
    let state = match (publication.state, &publication.waiting_for) {
        (VersionState::Approved, _) => "approved and active".to_string(),
        (_, Some(why)) => format!("pending: {why}"),
        (state, None) => state.as_str().to_string(),
    };
    outln!(
        "{:<12} {} v{}",
        publication.state.as_str(),
        publication.template_id,
        publication.version
    );
    outln!("state        {state}");
    if let Some(report) = &publication.report {
        outln!("validation   sha256:{}", report.digest());
    }
    for entry in &publication.recorded.entries {
        outln!(
            "audit        entry {} ({})",
            entry.seq,
            STANDARD.encode(entry.leaf_hash)
        );
    }
    outln!(
        "checkpoint   size {}, root {}",
        publication.recorded.checkpoint.checkpoint.size,
        STANDARD.encode(publication.recorded.checkpoint.checkpoint.root)
    );
    if let Some(path) = out {
        let json = serde_json::to_string_pretty(&publication.envelope)?;
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("cannot write `{}`", path.display()))?;
        outln!("envelope     {}", path.display());
    }
    Ok(())
}

pub fn list(args: ListArgs) -> Result<ExitCode> {
    let (registry, session) = args.at.session()?;
    let templates = registry.list(&session)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&templates)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<40} {:>7} {:>7} {:>8}  approvals",
        "template",
        "active",
        "latest",
        "pending"
    );
    let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for t in templates {
        let approvals = t.policy.approvals.as_ref().map_or_else(
            || "any 1 key".to_string(),
            |a| format!("{} of {}", a.threshold, a.of.len()),
        );
        outln!(
            "{:<40} {:>7} {:>7} {:>8}  {approvals}",
            t.template_id,
            show(t.active),
            show(t.latest),
            show(t.pending)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn history(args: HistoryArgs) -> Result<ExitCode> {
    let (registry, session) = args.at.session()?;
    let versions = registry.history(&session, &args.id)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&versions)?);
        return Ok(ExitCode::SUCCESS);
    }
    for v in versions {
        outln!(
            "v{:<5} {:<10}{} {}  by {} at {}",
            v.version,
            v.state.as_str(),
            if v.active { " active" } else { "       " },
            v.digest.get(..16).unwrap_or(&v.digest),
            v.publisher,
            v.submitted_at
        );
        for s in &v.signatures {
            outln!(
                "         signed by {} with {} at {} (entry {})",
                s.identity,
                s.fingerprint.get(..16).unwrap_or(&s.fingerprint),
                s.signed_at,
                s.audit_seq
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn show(args: ShowArgs) -> Result<ExitCode> {
    use std::io::Write as _;
    let (registry, session) = args.at.session()?;
    match args.part {
        ShowPart::Bundle => {
            let bundle = registry.bundle(&session, &args.id, args.version)?;
            outln!("{}", serde_json::to_string_pretty(&bundle)?);
            return Ok(ExitCode::SUCCESS);
        }
        ShowPart::Request => {
            let now = match &args.now {
                Some(now) => Timestamp::parse(now)
                    .map_err(|e| anyhow::anyhow!("--now `{}`: {e}", now.escape_debug()))?,
                None => args.at.now()?,
            };
            let request = registry.verification_request(&session, &args.id, args.version, now)?;
            outln!("{}", serde_json::to_string_pretty(&request)?);
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let stored = registry.show(&session, &args.id, args.version)?;
    match args.part {
        ShowPart::Text => std::io::stdout().lock().write_all(&stored.template)?,
        ShowPart::Envelope => outln!("{}", serde_json::to_string_pretty(&stored.envelope)?),
        ShowPart::Schema => outln!("{}", stored.variables_schema),
        ShowPart::Report => {
            let digest = stored
                .info
                .validation_digest
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("this version has no validation report"))?;
            outln!("{}", registry.report(&session, digest)?);
        }
        ShowPart::Summary | ShowPart::Request | ShowPart::Bundle => {
            outln!("{}", serde_json::to_string_pretty(&stored.info)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn add_key(args: AddKeyArgs) -> Result<ExitCode> {
    let (mut registry, session) = args.at.session()?;
    let now = args.at.now()?;
    let (spki, scheme) = match (&args.public_key, &args.signer) {
        (Some(path), _) => {
            let bytes = read_bytes(path, "public key")?;
            let scheme = super::template::scheme(args.scheme);
            let der = spki_der(&bytes)?;
            (der, scheme)
        }
        (None, Some(spec)) => {
            let signer = signer::open(spec)?;
            (signer.public_key_der().to_vec(), signer.scheme())
        }
        (None, None) => anyhow::bail!("name the key: `--public-key FILE` or `--signer SPEC`"),
    };
    let valid_from = match &args.valid_from {
        Some(t) => Timestamp::parse(t).context("--valid-from")?,
        None => now,
    };
    let valid_until = args
        .valid_until
        .as_deref()
        .map(Timestamp::parse)
        .transpose()
        .context("--valid-until")?;
    let fp = registry.add_key(
        &session,
        &args.owner,
        &spki,
        scheme,
        valid_from,
        valid_until,
        now,
        args.at.log_signer()?.as_ref(),
    )?;
    outln!("added key    {fp} for {}", args.owner);
    Ok(ExitCode::SUCCESS)
}

/// The DER of a public key file that may be PEM.
fn spki_der(bytes: &[u8]) -> Result<Vec<u8>> {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.trim_start().starts_with("-----BEGIN") => {
            let (label, der) = pem_rfc7468::decode_vec(text.trim().as_bytes())
                .map_err(|e| anyhow::anyhow!("not a PEM public key ({e})"))?;
            if label != "PUBLIC KEY" {
                anyhow::bail!("expected a `PUBLIC KEY` PEM block, found `{label}`");
            }
            Ok(der)
        }
        _ => Ok(bytes.to_vec()),
    }
}

pub fn revoke_key(args: RevokeKeyArgs) -> Result<ExitCode> {
    let (mut registry, session) = args.at.session()?;
    let now = args.at.now()?;
    let at = match &args.at_time {
        Some(t) => Timestamp::parse(t).context("--at-time")?,
        None => now,
    };
    registry.revoke_key(&session, &args.key, at, now, args.at.log_signer()?.as_ref())?;
    outln!("revoked      {} from {at}", args.key);
    Ok(ExitCode::SUCCESS)
}

pub fn rotate_key(args: RotateKeyArgs) -> Result<ExitCode> {
    let (mut registry, session) = args.at.session()?;
    let now = args.at.now()?;
    // Before anything moves: the old key must be the registry's, and an admin's to rotate.
    let keys = registry.keys(&session)?;
    if !keys.iter().any(|k| k.record.fingerprint == args.key) {
        anyhow::bail!("no key {} in the keyring", args.key);
    }
    if !session.roles().contains(&Role::Admin) {
        return Err(RegistryError::Forbidden {
            identity: session.name().to_string(),
            action: "rotate keys",
            role: Role::Admin,
        }
        .into());
    }
    let mut created_files: Vec<PathBuf> = Vec::new();
    let (spki, scheme) = match (&args.signer, args.create) {
        (SignerSpec::AwsKms(options), true) => {
            let current = AwsKmsSigner::open(options)?;
            let current_fp = signer::fingerprint(current.public_key_der());
            if current_fp != args.key {
                anyhow::bail!(
                    "`{}` names key {current_fp}, not {}; rotate the alias of the key being replaced",
                    options.key,
                    args.key
                );
            }
            let rotation = AwsKmsSigner::rotate(options)?;
            outln!(
                "kms          {} moved from {} to {}",
                rotation.alias,
                rotation.previous.key_arn,
                rotation.current.key_arn
            );
            (rotation.current.public_key_der, options.scheme)
        }
        (SignerSpec::Local { path, scheme }, true) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pem"))
                .ok_or_else(|| anyhow::anyhow!("a created local key is named `<name>.pem`"))?;
            let (created, files) = LocalSigner::generate_files(dir, name, args.bits, false)
                .map_err(|e| anyhow::anyhow!("{e}; name a new file for the new key"))?;
            outln!("generated    {}", files.private_key.display());
            created_files = vec![files.private_key.clone(), files.public_key.clone()];
            (created.public_key_der().to_vec(), *scheme)
        }
        (SignerSpec::Pkcs11(_), true) => {
            anyhow::bail!(
                "create the new key on the token first, then rotate to it without --create"
            )
        }
        (spec, false) => {
            let opened = signer::open(spec)?;
            (opened.public_key_der().to_vec(), opened.scheme())
        }
    };
    let retire = args
        .retire_after
        .map(|days| now.saturating_add_seconds(i64::from(days) * 86_400));
    let rotated = args.at.log_signer().and_then(|log_signer| {
        Ok(registry.rotate_key(
            &session,
            &args.key,
            &spki,
            scheme,
            retire,
            now,
            log_signer.as_ref(),
        )?)
    });
    let fp = match rotated {
        Ok(fp) => fp,
        Err(e) => {
            // A key the keyring never took is no key: its files go, so a retry starts clean.
            for file in &created_files {
                let _ = std::fs::remove_file(file);
            }
            return Err(e);
        }
    };
    outln!("rotated      {} -> {fp}", args.key);
    if let Some(retire) = retire {
        outln!("retires      {} at {retire}", args.key);
        // What only the old key signed stops verifying when it retires.
        for template in registry.list(&session)? {
            let Some(active) = template.active else {
                continue;
            };
            let history = registry.history(&session, &template.template_id)?;
            let signed_by_old = history
                .iter()
                .find(|v| v.version == active)
                .is_some_and(|v| v.signatures.iter().any(|s| s.fingerprint == args.key));
            if signed_by_old {
                eprintln!(
                    "warning: `{}` v{active} is signed with the old key; publish it again with the new key before {retire}, or verifiers refuse it from then on (expired_key)",
                    template.template_id
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn keyring(args: KeyringArgs) -> Result<ExitCode> {
    let (registry, session) = args.at.session()?;
    if args.details {
        outln!(
            "{}",
            serde_json::to_string_pretty(&registry.keys(&session)?)?
        );
    } else {
        let keys = registry.keyring(&session)?;
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "keys": keys }))?
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn policy(args: PolicyArgs) -> Result<ExitCode> {
    let (mut registry, session) = args.at.session()?;
    let engine = || GuardEngine::new("{}", EngineLimits::default());
    let policy = match (args.threshold, args.clear_approvals) {
        (Some(threshold), _) => registry.set_approvals(
            &session,
            &args.id,
            Some(Approvals {
                threshold,
                of: args.of.iter().map(|fp| fp.trim().to_string()).collect(),
            }),
            args.at.now()?,
            args.at.log_signer()?.as_ref(),
            &engine()?,
        )?,
        (None, true) => registry.set_approvals(
            &session,
            &args.id,
            None,
            args.at.now()?,
            args.at.log_signer()?.as_ref(),
            &engine()?,
        )?,
        (None, false) => registry.template_policy(&session, &args.id)?,
    };
    outln!("{}", serde_json::to_string_pretty(&policy)?);
    Ok(ExitCode::SUCCESS)
}

pub fn withdraw(args: WithdrawArgs) -> Result<ExitCode> {
    let (mut registry, session) = args.at.session()?;
    let policy = registry.withdraw(
        &session,
        &args.id,
        args.version,
        args.at.now()?,
        args.at.log_signer()?.as_ref(),
    )?;
    outln!("withdrawn    {} v{}", args.id, args.version);
    outln!("policy       {}", serde_json::to_string(&policy)?);
    Ok(ExitCode::SUCCESS)
}

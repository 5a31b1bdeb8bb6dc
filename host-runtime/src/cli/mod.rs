//! The `sigil` command line: one file per command group.

/// `println!` that returns the write error instead of panicking, so a closed pipe
/// (`sigil … | head`) ends the command quietly.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

mod apikey;
mod audit;
mod demo;
mod eval;
mod incidents;
mod keys;
mod registry;
mod scan;
mod serve;
mod template;
mod train;
mod users;
mod validate;
mod vault;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use guard_core::time::Timestamp;
use guard_core::Policy;

use crate::engine::{EngineLimits, GuardEngine};

/// Sigil guards the calls an application makes to a language model.
#[derive(Debug, Parser)]
#[command(name = "sigil", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Assess prompts for injection and jailbreak risk.
    Scan(scan::ScanArgs),
    /// Measure accuracy on labeled JSON Lines (`text`, `label` = attack or benign).
    Eval(eval::EvalArgs),
    /// Train the text classifier on labeled JSON Lines and write a model file.
    Train(train::TrainArgs),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Sign and verify prompt templates.
    #[command(subcommand)]
    Template(template::TemplateCommand),
    /// Serve the HTTP API: guarded calls, scanning, the registry, incidents and metrics.
    Serve(serve::ServeArgs),
    /// Record, prove and verify the tamper-evident audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Create a registry: the data folder, the audit log's key, the database and its first
    /// admin identity.
    Init(registry::InitArgs),
    /// Manage the identities that may use the registry, and their roles.
    #[command(subcommand)]
    Identity(registry::IdentityCommand),
    /// Make API keys for the HTTP service (local access to the data folder).
    #[command(subcommand)]
    Apikey(apikey::ApikeyCommand),
    /// A user's behaviour data: export it, erase it, purge what is past its retention.
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Run the main job on the bundled samples: sign a template, verify it, guard prompts.
    Demo(demo::DemoArgs),
    /// Incidents: list them, export them with detections for a SIEM.
    #[command(subcommand)]
    Incidents(incidents::IncidentsCommand),
}

/// Options shared by commands that run the guard.
#[derive(Debug, Clone, clap::Args)]
struct GuardOptions {
    /// Policy file (JSON). Without it, the default policy.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The time the guard is told it is (RFC 3339 UTC). Without it, the system clock.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
    /// A model file from `sigil train`, used in place of the built-in model (it becomes the
    /// policy's `model.data`).
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
}

impl GuardOptions {
    fn policy_json(&self) -> Result<String> {
        let policy = match &self.policy {
            Some(path) => read_text(path, "policy")?,
            None => "{}".to_string(),
        };
        match &self.model {
            Some(path) => with_model(&policy, &read_bytes(path, "model")?),
            None => Ok(policy),
        }
    }

    fn engine(&self) -> Result<GuardEngine> {
        Ok(self.engine_and_policy()?.0)
    }

    /// The guard, and the policy it runs as data (for commands that need its thresholds), both
    /// from one reading of the policy file.
    fn engine_and_policy(&self) -> Result<(GuardEngine, Policy)> {
        self.engine_with(EngineLimits::default())
    }

    /// As [`GuardOptions::engine_and_policy`], with the guard's limits.
    fn engine_with(&self, limits: EngineLimits) -> Result<(GuardEngine, Policy)> {
        let json = self.policy_json()?;
        let engine = GuardEngine::new(&json, limits).context("cannot start the guard")?;
        let policy = Policy::from_json(&json).context("cannot read the policy")?;
        Ok((engine, policy))
    }

    fn now(&self) -> Result<String> {
        match &self.now {
            Some(now) => Ok(Timestamp::parse(now)?.to_string()),
            None => Ok(now_utc()),
        }
    }
}

/// The policy JSON with `model.data` set to a model file, base64.
fn with_model(policy: &str, model: &[u8]) -> Result<String> {
    use base64::Engine as _;
    let mut value: serde_json::Value =
        serde_json::from_str(policy).context("the policy is not JSON")?;
    let Some(object) = value.as_object_mut() else {
        anyhow::bail!("the policy is not a JSON object");
    };
    let entry = object
        .entry("model")
        .or_insert_with(|| serde_json::json!({}));
    let Some(model_config) = entry.as_object_mut() else {
        anyhow::bail!("the policy's `model` is not an object");
    };
    model_config.insert(
        "data".into(),
        base64::engine::general_purpose::STANDARD
            .encode(model)
            .into(),
    );
    Ok(value.to_string())
}

/// The system clock as RFC 3339 UTC, to the second.
pub fn now_utc() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Timestamp::from_unix_seconds(i64::try_from(seconds).unwrap_or(i64::MAX)).to_string()
}

fn read_bytes(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} `{}`", path.display()))
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    let bytes = read_bytes(path, what)?;
    utf8(bytes, &format!("{what} `{}`", path.display()))
}

/// UTF-8 or a clear error naming where it breaks.
fn utf8(bytes: Vec<u8>, what: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{what} is not valid UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// `f` over `items` on every core, results in input order. The engine's instance pool gives
/// each thread its own guard instance.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = worker_threads(items.len());
    if threads <= 1 {
        return items.iter().map(&f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut indexed: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    indexed.sort_by_key(|(i, _)| *i);
    indexed.into_iter().map(|(_, r)| r).collect()
}

/// The threads [`parallel_map`] uses for `items` items: one per core, at most one per item.
fn worker_threads(items: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(items.max(1))
}

/// Whether an error is the registry refusing what was asked, rather than failing.
fn is_refusal(e: &anyhow::Error) -> bool {
    use crate::registry::RegistryError;
    let refused = |r: &RegistryError| {
        matches!(
            r,
            RegistryError::Forbidden { .. }
                | RegistryError::Unauthenticated(_)
                | RegistryError::Conflict(_)
                | RegistryError::Refused { .. }
                | RegistryError::Validation(_)
        )
    };
    e.chain().any(|cause| {
        // A transparent wrapper hides the registry's error from the chain; look inside it.
        let wrapped = match cause.downcast_ref::<crate::store::UsersError>() {
            Some(crate::store::UsersError::Registry(r)) => Some(r),
            _ => None,
        };
        cause
            .downcast_ref::<RegistryError>()
            .or(wrapped)
            .is_some_and(refused)
    })
}

/// Whether an error is the reader of our output going away.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Parses the command line and runs it. Errors print and exit with 2.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Scan(args) => scan::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Train(args) => train::run(args),
        Command::Keys(command) => keys::run(command),
        Command::Template(command) => template::run(command),
        Command::Serve(args) => serve::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Audit(command) => audit::run(command),
        Command::Init(args) => registry::init(args),
        Command::Identity(command) => registry::identity(command),
        Command::Apikey(command) => apikey::run(command),
        Command::Users(command) => users::run(command),
        Command::Incidents(command) => incidents::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        // Refusals (not allowed, not now, not that way) exit 1, as other verdicts do; 2 is
        // for a command that could not run.
        Err(e) if is_refusal(&e) => {
            eprintln!("refused: {}", printable(&format!("{e:#}")));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {}", printable(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}

/// `text` with control characters other than line breaks escaped: a message may quote what
/// the user typed, and an escape sequence in it must not reach the terminal.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

//! `sigil users export|erase|purge`: a user's requests and the retention purge, on the behaviour
//! store, as a registry identity with the admin role, each recorded in the audit log.
//!
//! Also the behaviour options that `sigil serve` and `sigil scan` share.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use guard_core::Level;

use super::registry::Access;
use crate::store::{
    self, erase_user, export_user, purge_recorded, Behaviour, DetectionOptions, EraseTarget,
    Retention, StoreSpec,
};

/// Where the behaviour store is, and what it keeps.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct BehaviourArgs {
    /// Keep users' behaviour profiles and detection records here: `sqlite:PATH` or
    /// `postgres://USER@HOST:PORT/DATABASE`.
    #[arg(long, value_name = "SPEC")]
    pub(super) store: Option<StoreSpec>,
    /// The lowest level recorded as a detection.
    #[arg(long, value_name = "LEVEL", default_value = "medium", value_parser = parse_level)]
    detections_from: Level,
    /// Keep a redacted excerpt of what was found in each detection, sealed under the user's
    /// key in the key store `--key-store` names (by default no prompt text is stored).
    #[arg(long, requires = "key_store")]
    keep_excerpts: bool,
    /// The key store excerpts are sealed with (see `sigil keys`); its master key is
    /// `--master-key`, or `local:` the file `keys/master.key` beside it.
    #[arg(long, value_name = "PATH", requires = "keep_excerpts")]
    key_store: Option<PathBuf>,
    /// The master key of `--key-store`: `local:PATH`, `aws-kms:…` or `pkcs11:…`.
    #[arg(long, value_name = "SPEC", requires = "key_store")]
    master_key: Option<String>,
}

impl BehaviourArgs {
    /// The store and options, when `--store` was given.
    pub(super) fn open(&self) -> Result<Option<Behaviour>> {
        let Some(spec) = &self.store else {
            return Ok(None);
        };
        self.open_spec(spec).map(Some)
    }

    /// The store `spec` names, with these options.
    pub(super) fn open_spec(&self, spec: &StoreSpec) -> Result<Behaviour> {
        let store = store::open(spec).with_context(|| format!("cannot open the store `{spec}`"))?;
        let vault = match &self.key_store {
            Some(key_store) => {
                let beside = key_store.parent().unwrap_or(Path::new("."));
                let args = super::vault::VaultArgs {
                    master_key: self.master_key.clone(),
                    key_store: Some(key_store.clone()),
                };
                Some(Arc::new(args.open(beside)?))
            }
            None => None,
        };
        Ok(Behaviour {
            store,
            detections: DetectionOptions {
                min_level: self.detections_from,
                keep_excerpts: self.keep_excerpts,
            },
            vault,
        })
    }
}

/// How long records are kept.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(super) struct RetentionArgs {
    /// Delete detection records older than this many days.
    #[arg(long, value_name = "N", default_value_t = Retention::default().detections_days)]
    detections_days: u32,
    /// Delete profiles of users not seen for this many days.
    #[arg(long, value_name = "M", default_value_t = Retention::default().profiles_days)]
    profiles_days: u32,
}

impl RetentionArgs {
    pub(super) fn retention(self) -> Retention {
        Retention {
            detections_days: self.detections_days,
            profiles_days: self.profiles_days,
        }
    }
}

fn parse_level(s: &str) -> Result<Level, String> {
    Level::ALL
        .into_iter()
        .find(|l| l.as_str() == s)
        .ok_or_else(|| "a level is very_low, low, medium, high or critical".to_string())
}

#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Print everything the behaviour store holds about a user, as JSON (admin).
    Export(UserArgs),
    /// Erase a user's profiles and detection records in every tenant (or one), and record in
    /// the audit log that it happened (admin).
    Erase(UserArgs),
    /// Delete detection records and profiles past their retention (admin).
    Purge(PurgeArgs),
}

#[derive(Debug, clap::Args)]
pub struct UserArgs {
    #[command(flatten)]
    at: Access,
    /// Where the user's encryption keys are (erasure destroys them).
    #[command(flatten)]
    vault: super::vault::VaultArgs,
    /// The user or API key id, exactly as callers give it in `context.user`.
    id: OsString,
    /// Only this tenant's records. Without it, every tenant's.
    #[arg(long)]
    tenant: Option<OsString>,
    /// The behaviour store. Without it, the registry's database (`--db`, or
    /// `<data-dir>/sigil.db`).
    #[arg(long, value_name = "SPEC")]
    store: Option<StoreSpec>,
}

#[derive(Debug, clap::Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    at: Access,
    /// The behaviour store. Without it, the registry's database.
    #[arg(long, value_name = "SPEC")]
    store: Option<StoreSpec>,
    #[command(flatten)]
    retention: RetentionArgs,
}

fn text(value: &OsString, what: &str) -> Result<String> {
    value
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("the {what} is not valid UTF-8"))
}

fn spec(store: &Option<StoreSpec>, at: &Access) -> StoreSpec {
    store.clone().unwrap_or_else(|| StoreSpec::Sqlite(at.db()))
}

/// Whether two paths name one file (one that does not exist yet only by the same path).
pub(super) fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

pub fn run(command: UsersCommand) -> Result<ExitCode> {
    match command {
        UsersCommand::Export(args) => {
            let id = text(&args.id, "user id")?;
            let tenant = args
                .tenant
                .as_ref()
                .map(|t| text(t, "tenant"))
                .transpose()?;
            let (mut registry, session) = args.at.session()?;
            let store = open(&spec(&args.store, &args.at))?;
            let vault = args.vault.open(&args.at.data_dir)?;
            let (export, _) = export_user(
                &mut registry,
                &session,
                store.as_ref(),
                Some(&vault),
                &id,
                tenant.as_deref(),
                args.at.now()?,
                args.at.log_signer()?.as_ref(),
            )?;
            outln!("{}", serde_json::to_string_pretty(&export)?);
        }
        UsersCommand::Erase(args) => {
            let id = text(&args.id, "user id")?;
            let tenant = args
                .tenant
                .as_ref()
                .map(|t| text(t, "tenant"))
                .transpose()?;
            let (mut registry, session) = args.at.session()?;
            let spec = spec(&args.store, &args.at);
            let signer = args.at.log_signer()?;
            let now = args.at.now()?;
            // In the registry's own database the erasure and its audit entry are one
            // transaction; elsewhere the erasure commits first.
            let opened;
            let target = match &spec {
                StoreSpec::Sqlite(path) if same_file(path, &args.at.db()) => {
                    EraseTarget::RegistryDatabase
                }
                other => {
                    opened = open(other)?;
                    EraseTarget::Store(opened.as_ref())
                }
            };
            let vault = args.vault.open(&args.at.data_dir)?;
            let (erased, recorded) = erase_user(
                &mut registry,
                &session,
                target,
                Some(&vault),
                &id,
                tenant.as_deref(),
                now,
                signer.as_ref(),
            )?;
            outln!(
                "erased       {} profiles, {} detections of user {}",
                erased.profiles,
                erased.detections,
                erased.pseudonym
            );
            print_entries(&recorded)?;
        }
        UsersCommand::Purge(args) => {
            let (mut registry, session) = args.at.session()?;
            let store = open(&spec(&args.store, &args.at))?;
            let retention = args.retention.retention();
            let (purged, recorded) = purge_recorded(
                &mut registry,
                &session,
                store.as_ref(),
                args.at.now()?,
                retention,
                args.at.log_signer()?.as_ref(),
            )?;
            outln!(
                "purged       {} detections older than {} days, {} profiles unseen for {} days",
                purged.detections,
                retention.detections_days,
                purged.profiles,
                retention.profiles_days
            );
            print_entries(&recorded)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn open(spec: &StoreSpec) -> Result<std::sync::Arc<dyn store::ProfileStore>> {
    // A mistyped path must not become an empty store that answers "nothing held".
    if let StoreSpec::Sqlite(path) = spec {
        if !path.is_file() {
            anyhow::bail!("no store at `{}`", path.display());
        }
    }
    store::open(spec).with_context(|| format!("cannot open the store `{spec}`"))
}

fn print_entries(recorded: &crate::registry::Recorded) -> Result<()> {
    for entry in &recorded.entries {
        outln!("audit entry  {}", entry.seq);
    }
    Ok(())
}

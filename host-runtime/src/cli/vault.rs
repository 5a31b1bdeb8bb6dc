//! `sigil keys status|rotate|rewrap|retire|check`: the vault's master key and key store, as an
//! admin, each change recorded in the audit log.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use guard_core::transparency::EntryKind;

use super::registry::Access;
use crate::audit::NewEntry;
use crate::registry::{RegistryError, Role};
use crate::vault::{self, CacheLimits, Vault};

/// Where the vault's keys are.
#[derive(Debug, Clone, clap::Args)]
pub struct VaultArgs {
    /// The master key: `local:PATH`, `aws-kms:KEY;region=…;replicas=…` or
    /// `pkcs11:module=…;token=…;key=…`. Without it, `local:<data-dir>/keys/master.key`.
    #[arg(long, value_name = "SPEC")]
    pub master_key: Option<String>,
    /// The key store. Without it, `<data-dir>/keys.db`.
    #[arg(long, value_name = "PATH")]
    pub key_store: Option<PathBuf>,
}

impl VaultArgs {
    /// The vault these arguments name, with the data folder's defaults.
    pub(super) fn open(&self, data_dir: &std::path::Path) -> Result<Vault> {
        let spec = self
            .master_key
            .clone()
            .unwrap_or_else(|| format!("local:{}", data_dir.join("keys/master.key").display()));
        let key_store = self
            .key_store
            .clone()
            .unwrap_or_else(|| data_dir.join("keys.db"));
        let master = vault::open_master_for(&spec, &key_store, &data_dir.join("sigil.db"))
            .with_context(|| format!("cannot open the master key `{spec}`"))?;
        Vault::open(master, &key_store, CacheLimits::default())
            .with_context(|| format!("cannot open the key store `{}`", key_store.display()))
    }
}

/// A vault command's arguments.
#[derive(Debug, clap::Args)]
pub struct VaultCommandArgs {
    #[command(flatten)]
    at: Access,
    #[command(flatten)]
    vault: VaultArgs,
}

/// The vault's commands.
#[derive(Debug, clap::Subcommand)]
pub enum VaultCommand {
    /// The master key, and how many keys it wraps.
    Status(VaultCommandArgs),
    /// Make a new master key (version) current (KMS: a new key, the alias moved to it). Run
    /// `sigil keys rewrap` next, then `sigil keys retire`.
    Rotate(VaultCommandArgs),
    /// Wrap every stored tenant key again under the current master key, without touching the
    /// data; resumable (run it again after a crash); ends by unwrapping every key and opening
    /// every sealed record.
    Rewrap(VaultCommandArgs),
    /// Retire a master key (version): KMS disables it, the HSM and the key file drop it.
    /// Refused while any stored key is still wrapped under it.
    Retire {
        /// The master key id, as `sigil keys status` lists it.
        id: String,
        #[command(flatten)]
        args: VaultCommandArgs,
    },
    /// Unwrap every key and open every sealed record, changing nothing.
    Check(VaultCommandArgs),
}

fn record(args: &VaultCommandArgs, action: &'static str, subject: String) -> Result<Vec<u64>> {
    let (mut registry, session) = args.at.session()?;
    let now = args.at.now()?;
    let signer = args.at.log_signer()?;
    let ((), recorded) = registry.change_with(
        &session,
        Role::Admin,
        action,
        now,
        signer.as_ref(),
        |_, actor| {
            Ok::<_, RegistryError>((
                (),
                vec![NewEntry {
                    time: now.to_string(),
                    kind: EntryKind::Admin,
                    actor,
                    subject: Some(subject),
                    digests: Default::default(),
                }],
            ))
        },
    )?;
    Ok(recorded.entries.iter().map(|e| e.seq).collect())
}

/// Checks, as an admin, before a change.
fn authorize(args: &VaultCommandArgs, action: &'static str) -> Result<()> {
    let (registry, session) = args.at.session()?;
    registry.authorize(&session, &[Role::Admin], action)?;
    Ok(())
}

/// Every key unwraps and every sealed record opens.
fn check_all(args: &VaultCommandArgs, vault: &Vault) -> Result<(u64, u64, u64)> {
    let keys = vault.check_keys()?;
    let db = args.at.db();
    let records = if db.is_file() {
        let conn = crate::sqlite::open(&db, false)
            .with_context(|| format!("cannot open `{}`", db.display()))?;
        crate::incidents::init_in(&conn)?;
        crate::incidents::check_sealed(&conn, vault)?
    } else {
        0
    };
    Ok((keys.tenant_keys, keys.subject_keys, records))
}

/// The vault of a `sigil keys` command, which works on a key store that exists: a mistyped
/// path must not pass for an empty store.
fn existing(args: &VaultCommandArgs) -> Result<Vault> {
    let key_store = args
        .vault
        .key_store
        .clone()
        .unwrap_or_else(|| args.at.data_dir.join("keys.db"));
    if !key_store.is_file() {
        anyhow::bail!(
            "no key store at `{}` (sigil serve makes it with the first sealed record)",
            key_store.display()
        );
    }
    args.vault.open(&args.at.data_dir)
}

pub fn run(command: VaultCommand) -> Result<ExitCode> {
    match command {
        VaultCommand::Status(args) => {
            authorize(&args, "read the vault's status")?;
            let vault = existing(&args)?;
            outln!("master key   {}", vault.master().describe());
            outln!("current      {}", vault.master().current_key_id()?);
            for (id, n) in vault.key_store().tenant_keys_by_master()? {
                outln!("wraps        {n} tenant keys under {id}");
            }
            outln!("user keys    {}", vault.key_store().subject_key_count()?);
            outln!("key store    {}", vault.key_store().path().display());
        }
        VaultCommand::Rotate(args) => {
            authorize(&args, "rotate the master key")?;
            let vault = existing(&args)?;
            let before = vault.master().current_key_id()?;
            let after = vault.master().rotate()?;
            let entries = record(
                &args,
                "rotate the master key",
                format!("master key rotated: {before} -> {after}"),
            )?;
            outln!("rotated      {before} -> {after}");
            outln!("next         sigil keys rewrap, then sigil keys retire {before}");
            print_entries(&entries)?;
        }
        VaultCommand::Rewrap(args) => {
            authorize(&args, "rewrap the vault's keys")?;
            let vault = existing(&args)?;
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("rewrap {bar:40} {pos}/{len} {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let plain = bar.is_hidden();
            let report = vault.rewrap(|done, total| {
                bar.set_length(total);
                bar.set_position(done);
                // Without a terminal, a line now and then (and the log of a crash shows how far
                // it got).
                if plain && (done % 100 == 0 || done == total) {
                    eprintln!("rewrapped {done}/{total}");
                }
            })?;
            bar.finish_and_clear();
            let (tenant_keys, subject_keys, records) = check_all(&args, &vault)?;
            let entries = record(
                &args,
                "rewrap the vault's keys",
                format!(
                    "vault keys rewrapped under {}: {} tenant keys",
                    report.current_master_key, report.rewrapped
                ),
            )?;
            outln!(
                "rewrapped    {} tenant keys under {}",
                report.rewrapped,
                report.current_master_key
            );
            outln!("checked      {tenant_keys} tenant keys, {subject_keys} user keys, {records} sealed records: all open");
            print_entries(&entries)?;
        }
        VaultCommand::Retire { id, args } => {
            authorize(&args, "retire a master key")?;
            let vault = existing(&args)?;
            let still = vault
                .key_store()
                .tenant_keys_by_master()?
                .into_iter()
                .find(|(master, n)| *master == id && *n > 0);
            if let Some((_, n)) = still {
                anyhow::bail!(
                    "{n} tenant keys are still wrapped under {id}: run `sigil keys rewrap` first"
                );
            }
            vault.master().retire(&id)?;
            let entries = record(
                &args,
                "retire a master key",
                format!("master key retired: {id}"),
            )?;
            outln!("retired      {id}");
            print_entries(&entries)?;
        }
        VaultCommand::Check(args) => {
            authorize(&args, "check the vault")?;
            let vault = existing(&args)?;
            let (tenant_keys, subject_keys, records) = check_all(&args, &vault)?;
            outln!("checked      {tenant_keys} tenant keys, {subject_keys} user keys, {records} sealed records: all open");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_entries(entries: &[u64]) -> Result<()> {
    for seq in entries {
        outln!("audit entry  {seq}");
    }
    Ok(())
}

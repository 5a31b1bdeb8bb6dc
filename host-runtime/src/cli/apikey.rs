//! `sigil apikey create`: a new API key for the service, made with local access to the data
//! folder (whoever can write the database needs no key to make one).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::registry::{write_secret, Access};
use crate::registry::Role;

#[derive(Debug, clap::Subcommand)]
pub enum ApikeyCommand {
    /// Make a key with a role and print it once (it is stored only as its hash).
    Create(CreateArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    at: Access,
    /// Its role (admin, publisher, reviewer, scanner, auditor); repeat for more.
    #[arg(long = "role", required = true)]
    roles: Vec<Role>,
    /// The key's name (1 to 64 of a-z 0-9 . _ -). Without it, the role and a random suffix.
    #[arg(long)]
    name: Option<String>,
    /// Write the key to this new file (mode 0600) instead of printing it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn random_suffix() -> Result<String> {
    use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
    let mut bytes = [0u8; 4];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness for a key name"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub fn run(command: ApikeyCommand) -> Result<ExitCode> {
    match command {
        ApikeyCommand::Create(args) => {
            let roles: BTreeSet<Role> = args.roles.iter().copied().collect();
            let name = match &args.name {
                Some(name) => name.clone(),
                None => {
                    let first = roles.iter().next().map_or("key", |r| r.as_str());
                    format!("{first}-{}", random_suffix()?)
                }
            };
            let mut registry = args.at.open_or_create()?;
            let signer = args.at.log_signer()?;
            let token =
                registry.add_identity_locally(&name, &roles, args.at.now()?, signer.as_ref())?;
            match &args.out {
                Some(path) => {
                    write_secret(path, &token)?;
                    eprintln!("key `{name}` written to {}", path.display());
                }
                None => {
                    eprintln!("key `{name}` (shown once; it is stored only as its hash):");
                    outln!("{token}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

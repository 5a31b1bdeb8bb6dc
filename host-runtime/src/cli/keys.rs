//! `sigil keys`: local development keys.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::signer::LocalSigner;

#[derive(Debug, clap::Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per process from the command line; boxing the vault's commands buys nothing"
)]
pub enum KeysCommand {
    /// Generate a local RSA key pair: `<name>.pem` (PKCS#8, mode 0600) and `<name>.pub.pem`.
    Generate {
        /// Folder for the key files.
        #[arg(long, default_value = "keys")]
        out: PathBuf,
        /// File name stem.
        #[arg(long, default_value = "signing-key")]
        name: String,
        /// Modulus size: 2048, 3072 or 4096.
        #[arg(long, default_value_t = 3072)]
        bits: u32,
        /// Replace existing key files.
        #[arg(long)]
        force: bool,
    },
    /// The vault's master key and key store.
    #[command(flatten)]
    Vault(super::vault::VaultCommand),
}

pub fn run(command: KeysCommand) -> Result<ExitCode> {
    match command {
        KeysCommand::Generate {
            out,
            name,
            bits,
            force,
        } => {
            let (_, files) = LocalSigner::generate_files(&out, &name, bits, force)?;
            outln!("private key  {}", files.private_key.display());
            outln!("public key   {}", files.public_key.display());
            outln!("fingerprint  {}", files.fingerprint);
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Vault(command) => super::vault::run(command),
    }
}

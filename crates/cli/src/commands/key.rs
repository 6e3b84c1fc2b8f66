//! `wasmcell key generate`: a sigstore key pair in the format cosign and skopeo read.

use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use wasmcell_runtime::Error;

use super::Format;

/// Manage signing keys.
#[derive(Args, Debug)]
pub struct KeyCommand {
    #[command(subcommand)]
    command: KeySubcommand,
}

#[derive(Subcommand, Debug)]
enum KeySubcommand {
    Generate(GenerateCommand),
}

/// Generate an ECDSA P-256 key pair: NAME.key, the private key encrypted with a password (scrypt +
/// secretbox, cosign's `ENCRYPTED SIGSTORE PRIVATE KEY`, mode 0600), and NAME.pub, the PEM public key
/// a policy's `keyPath` names. The password comes from WASMCELL_PASSWORD, or a prompt on a terminal.
#[derive(Args, Debug)]
struct GenerateCommand {
    /// Where to write: PREFIX.key and PREFIX.pub.
    #[arg(long = "output-key-prefix", value_name = "PREFIX", default_value = "cosign")]
    prefix: PathBuf,

    /// Replace existing files.
    #[arg(long)]
    force: bool,

    /// Output format (json prints the files and the key's fingerprint).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(serde::Serialize)]
struct Generated {
    private_key: PathBuf,
    public_key: PathBuf,
    /// SHA-256 of the public key's DER, as `wasmcell verify` prints it.
    fingerprint: String,
}

impl KeyCommand {
    pub fn execute(self) -> Result<()> {
        match self.command {
            KeySubcommand::Generate(c) => c.execute(),
        }
    }
}

impl GenerateCommand {
    fn execute(self) -> Result<()> {
        let private = with_extension(&self.prefix, "key");
        let public = with_extension(&self.prefix, "pub");
        for path in [&private, &public] {
            if !self.force && path.exists() {
                return Err(Error::Config(format!("{} exists; give --force to replace it", path.display())).into());
            }
        }
        let password = password(true)?;
        let keys = wasmcell_sign::generate(&password)?;
        // The private key is 0600 from its first byte (atomic_write creates it so).
        wasmcell_fsutil::atomic_write(&private, keys.private_pem.as_bytes())
            .with_context(|| format!("failed to write {}", private.display()))?;
        wasmcell_fsutil::atomic_write(&public, keys.public_pem.as_bytes())
            .with_context(|| format!("failed to write {}", public.display()))?;
        std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644))?;
        let report = Generated { private_key: private, public_key: public, fingerprint: keys.private_key.public_key().fingerprint() };
        super::print_report(self.format, false, &report, || {
            format!(
                "wrote {} (private, 0600) and {} (public); key sha256:{}",
                report.private_key.display(),
                report.public_key.display(),
                report.fingerprint
            )
        })
    }
}

fn with_extension(prefix: &Path, ext: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

/// The private key's password: WASMCELL_PASSWORD (may be empty), else asked on the terminal (twice
/// when `confirm`), never echoed or logged.
pub fn password(confirm: bool) -> Result<Vec<u8>> {
    if let Some(p) = std::env::var_os("WASMCELL_PASSWORD") {
        return Ok(p.into_encoded_bytes());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::Config("no password for the private key: set WASMCELL_PASSWORD, or run on a terminal".into()).into());
    }
    let first = rpassword::prompt_password("Enter password for private key: ").context("failed to read the password")?;
    if confirm {
        let again = rpassword::prompt_password("Enter password for private key again: ").context("failed to read the password")?;
        if again != first {
            return Err(Error::Config("the passwords do not match".into()).into());
        }
    }
    Ok(first.into_bytes())
}

/// Reads and decrypts the private key at `path` (the password as [`password`] gets it).
pub fn private_key(path: &Path) -> Result<wasmcell_sign::PrivateKey> {
    let password = password(false)?;
    Ok(wasmcell_sign::PrivateKey::from_file(path, &password)?)
}

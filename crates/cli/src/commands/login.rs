//! `wasmcell login` / `wasmcell logout`: registry credentials, kept in a 0600 file under the home.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, Result};
use clap::Args;
use wasmcell_oci::Reference;
use wasmcell_oci::auth::{Credential, Secret};
use wasmcell_oci::registry::Client;
use wasmcell_runtime::Error;

use crate::images::{self, RegistryFlags};

/// Log in to REGISTRY: check the credentials against it, then store them (mode 0600, never logged).
#[derive(Args, Debug)]
pub struct LoginCommand {
    #[command(flatten)]
    registry_flags: RegistryFlags,

    /// User name.
    #[arg(short, long)]
    username: String,

    /// Read the password from standard input (the safe way: it stays out of the process list).
    #[arg(long = "password-stdin")]
    password_stdin: bool,

    /// The password (visible to other users in the process list; prefer --password-stdin).
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,

    /// The registry, e.g. 127.0.0.1:5000.
    #[arg(value_name = "REGISTRY")]
    registry: String,
}

impl LoginCommand {
    pub fn execute(self) -> Result<()> {
        let registry = normalize(&self.registry)?;
        let password = match (&self.password, self.password_stdin) {
            (Some(p), _) => p.clone(),
            (None, true) => {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line).context("failed to read the password from stdin")?;
                line.trim_end_matches(['\n', '\r']).to_string()
            }
            (None, false) if std::io::stdin().is_terminal() => {
                return Err(Error::Config("give the password with --password-stdin (or -p)".into()).into());
            }
            (None, false) => return Err(Error::Config("give the password with --password-stdin".into()).into()),
        };
        if password.is_empty() {
            return Err(Error::Config("empty password".into()).into());
        }
        let credential = Credential { username: self.username.clone(), secret: Secret::new(password) };
        // Check against the registry with exactly these credentials before keeping them.
        let dir = tempfile::tempdir().context("failed to create a temporary directory")?;
        let probe = wasmcell_oci::auth::CredentialStore::new(dir.path().join("auth.json"), None);
        probe.save(&registry, &credential)?;
        let mut options = images::options(&self.registry_flags, false);
        options.credentials = std::sync::Arc::new(probe);
        let reference: Reference = format!("{registry}/wasmcell-login-check:latest").parse()?;
        let client = Client::new(options, &reference)?;
        images::tokio()?.block_on(client.check_login(&reference))?;
        images::credentials().save(&registry, &credential)?;
        println!("Login Succeeded");
        Ok(())
    }
}

/// Log out of REGISTRY: forget the credentials `login` stored.
#[derive(Args, Debug)]
pub struct LogoutCommand {
    #[arg(value_name = "REGISTRY")]
    registry: String,
}

impl LogoutCommand {
    pub fn execute(self) -> Result<()> {
        let registry = normalize(&self.registry)?;
        if images::credentials().remove(&registry)? {
            println!("Removed login credentials for {registry}");
        } else {
            println!("Not logged in to {registry}");
        }
        Ok(())
    }
}

/// `https://host:port/` and `host:port` name the same registry.
fn normalize(registry: &str) -> Result<String> {
    let r = registry.trim_start_matches("https://").trim_start_matches("http://");
    let r = r.split('/').next().unwrap_or(r);
    if r.is_empty() || r.chars().any(|c| c.is_whitespace() || c == '@') {
        return Err(Error::Config(format!("invalid registry {registry:?}")).into());
    }
    Ok(r.to_string())
}

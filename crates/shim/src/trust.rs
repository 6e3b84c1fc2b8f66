//! The node's signature policy: with `WASMCELL_SIGNATURE_POLICY` naming a containers-policy.json in the
//! shim's environment (containerd's, which starts it), a container starts only if its image, as
//! containerd resolved it, satisfies the policy; its signatures come from the image's registry (the
//! `sha256-<hex>.sig` tag: containerd's content store holds none), with `wasmcell login`'s credentials
//! under `WASMCELL_HOME` or the docker config. Without the variable nothing is checked (containerd
//! already checked every byte against the digest it pulled).

use std::path::PathBuf;

use wasmcell_oci::auth::CredentialStore;
use wasmcell_oci::registry::{Client as Registry, Options};
use wasmcell_oci::{Digest, Reference, trust};
use wasmcell_runtime::home::Home;
use wasmcell_sign::Policy;

use crate::containerd::Client;
use crate::error::{Error, Result};

/// The environment variable that names the policy file.
pub const POLICY_ENV: &str = "WASMCELL_SIGNATURE_POLICY";

/// Refuses `image` (containerd's name for it; `digest` what its target is) unless the policy accepts it.
pub fn check(client: &Client, image: &str, digest: &Digest) -> Result<()> {
    let Some(path) = std::env::var_os(POLICY_ENV).filter(|p| !p.is_empty()).map(PathBuf::from) else {
        return Ok(());
    };
    let policy = Policy::load(&path).map_err(|e| Error::InvalidSpec(format!("{POLICY_ENV}={}: {e}", path.display())))?;
    let reference: Reference = image.parse()?;
    trust::refuse_early(&policy, &reference)?;
    let signatures = if policy.needs_signatures(&trust::identity(&reference)?) {
        let registry = Registry::new(Options::new(CredentialStore::from_env(Home::from_env().root())), &reference)?;
        client.block_on(registry.signatures(&reference, digest))?.layers
    } else {
        Vec::new()
    };
    trust::evaluate(&policy, &reference, digest, &signatures)?;
    Ok(())
}

//! The node's signature policy: with `WASMCELL_SIGNATURE_POLICY` naming a containers-policy.json in the
//! shim's environment (containerd's, which starts it), a container starts only if its image, as
//! containerd resolved it, satisfies the policy; its signatures come from the image's registry (the
//! `sha256-<hex>.sig` tag: containerd's content store holds none), with `wasmcell login`'s credentials
//! under `WASMCELL_HOME` or the docker config. Without the variable nothing is checked (containerd
//! already checked every byte against the digest it pulled). Such an image's precompiled code is taken
//! on a compiled-code cache miss when the same policy trusts its signer, as `wasmcell run` takes it.

use std::path::PathBuf;
use std::sync::Arc;

use wasmcell_oci::auth::CredentialStore;
use wasmcell_oci::registry::{Client as Registry, Options};
use wasmcell_oci::{Digest, Reference, trust};
use wasmcell_runtime::WasmtimeEngine;
use wasmcell_runtime::home::Home;
use wasmcell_runtime::inspect::Input;
use wasmcell_sign::Policy;

use crate::containerd::Client;
use crate::error::{Error, Result};

/// The environment variable that names the policy file.
pub const POLICY_ENV: &str = "WASMCELL_SIGNATURE_POLICY";

/// Refuses `image` (containerd's name for it; `digest` what its target is) unless the policy accepts it.
/// When the policy requires a signer for it, where precompiled code trusted like it may come from.
pub fn check(client: &Client, image: &str, digest: &Digest) -> Result<Option<CodeSource>> {
    let Some(path) = std::env::var_os(POLICY_ENV).filter(|p| !p.is_empty()).map(PathBuf::from) else {
        return Ok(None);
    };
    let policy = Policy::load(&path).map_err(|e| Error::InvalidSpec(format!("{POLICY_ENV}={}: {e}", path.display())))?;
    let reference: Reference = image.parse()?;
    trust::refuse_early(&policy, &reference)?;
    let signed = policy.needs_signatures(&trust::identity(&reference)?);
    let signatures = if signed { client.block_on(registry(&reference)?.signatures(&reference, digest))?.layers } else { Vec::new() };
    trust::evaluate(&policy, &reference, digest, &signatures)?;
    Ok(signed.then(|| CodeSource { reference, digest: digest.clone(), policy: Arc::new(policy) }))
}

/// A registry client with `wasmcell login`'s credentials under `WASMCELL_HOME`, else the docker config's.
fn registry(reference: &Reference) -> Result<Registry> {
    Ok(Registry::new(Options::new(CredentialStore::from_env(Home::from_env().root())), reference)?)
}

/// An image whose signer the node's policy requires: its registry may hold precompiled code for it
/// (`wasmcell push --precompile`), which the node takes only when that signer's key signed the code too.
#[derive(Debug, Clone)]
pub struct CodeSource {
    pub reference: Reference,
    /// The image's top-level digest, as containerd resolved it.
    pub digest: Digest,
    pub policy: Arc<Policy>,
}

/// On a compiled-code cache miss: takes the precompiled code `source` has for this engine and this
/// wasm into `engine` (see `wasmcell_oci::precompiled`), else logs why not; the load compiles then.
pub fn take_precompiled(engine: &WasmtimeEngine, input: &Input, source: Option<&CodeSource>) {
    let Some(source) = source else { return };
    if input.precompiled || !matches!(engine.is_cached(input), Ok(false)) {
        return;
    }
    let image = &source.reference;
    // Each reason names the image once (`trusted_code`'s do already).
    let taken = (|| {
        let named = |e: String| format!("{image}: {e}");
        let fingerprint = engine.code_fingerprint(input).map_err(|e| named(e.to_string()))?;
        let wasm = Digest::from_sha256(input.sha256());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| named(e.to_string()))?;
        let registry = registry(image).map_err(|e| named(e.to_string()))?;
        let trusted = runtime
            .block_on(registry.trusted_code(image, &source.digest, &wasm, &fingerprint, &source.policy))
            .map_err(wasmcell_oci::precompiled::NotUsed::into_line)?;
        engine.adopt_code(input, trusted.bytes).map_err(|e| format!("warning: precompiled code {} of {image}: {e}", trusted.digest))?;
        Ok::<_, String>((trusted.digest, trusted.verdict))
    })();
    match taken {
        Ok((code, verdict)) => log::info!("{image}: using precompiled code {code} ({verdict})"),
        Err(why) => match why.strip_prefix("warning: ") {
            Some(why) => log::warn!("{why}; compiling here"),
            None => log::info!("{why}; compiling here"),
        },
    }
}

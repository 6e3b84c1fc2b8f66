//! `wasmcell run`: run a WASI module or component in a deny-by-default sandbox.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use wasmcell_runtime::inspect::Input;
use wasmcell_runtime::policy;
use wasmcell_runtime::{Engine, Instance, SandboxPolicy, Stdio};

use super::sandbox::SandboxFlags;

use crate::images::{self, PullPolicy, RegistryFlags, TrustFlags};
use wasmcell_exit as exit;
use wasmcell_oci::launch::Launch;

/// Run a WASI module or component (a file: binary or .wat; or an image reference) with ARGS as
/// its argv[1..].
///
/// Nothing is granted unless asked: no environment, no files, no network. An image brings its
/// own environment (Env) and default arguments (Cmd); a compat image's rootfs is mounted
/// read-only at /.
#[derive(Args, Debug)]
#[command(after_help = exit::TABLE)]
pub struct RunCommand {
    #[command(flatten)]
    sandbox: SandboxFlags,

    /// Stop the guest after this long (e.g. 500ms, 2s, 1m).
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,

    #[command(flatten)]
    engine: super::EngineFlag,

    /// Neither read nor write the compiled-code cache.
    #[arg(long = "no-cache")]
    no_cache: bool,

    /// Allow running precompiled artifacts from `wasmcell compile` (they are trusted native code).
    #[arg(long = "allow-precompiled")]
    allow_precompiled: bool,

    /// When to pull an IMAGE: missing (not in the local store), always, never.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing, value_name = "WHEN")]
    pull: PullPolicy,

    #[command(flatten)]
    registry: RegistryFlags,

    #[command(flatten)]
    trust: TrustFlags,

    /// The module or component to run: a file (.wasm, .wat, or with --allow-precompiled a
    /// .cwasm), or an image reference such as 127.0.0.1:5000/team/app:1.0.
    #[arg(value_name = "FILE|IMAGE")]
    target: String,

    /// Arguments passed to the guest.
    #[arg(value_name = "ARGS", trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

impl RunCommand {
    pub fn execute(self) -> Result<ExitCode> {
        // The engine comes from the flags alone (an image adds no limits), so an image that downloads
        // can bring the precompiled code for it along.
        let max_stack = self.policy(std::path::Path::new(&self.target), None)?.limits.max_stack;
        let engine = super::engine(self.engine.choice, !self.no_cache, max_stack, self.allow_precompiled)?;
        let mut target = images::resolve_target(&self.target, self.pull, &self.registry, &self.trust, &engine)?;
        let (path, image) = (&target.path, target.launch.as_ref());
        let policy = self.policy(path, image)?;
        let input = Input::read(path)?;
        images::take_precompiled(&engine, &input, target.origin.as_mut(), "compiling here");
        let ran = (|| {
            let program = engine.load_command(&input, None)?;
            let grants = super::sandbox::grants(policy)?;
            let instance = Instance::create(&program, &grants, &Stdio::inherit())?;
            Ok::<_, anyhow::Error>(instance.run()?)
        })();
        // Code compiled or taken for this run reaches the cache while the guest runs; the next run
        // finds it there.
        engine.wait_for_cache_writes();
        let status = ran?;
        Ok(ExitCode::from(exit::for_guest(status.code)))
    }

    /// Translates the flags into the sandbox policy: the only thing the runtime is given.
    /// An image contributes its argv[0], default arguments (replaced by ARGS when given),
    /// environment (under the flags'), and a compat image its rootfs, read-only at `/`.
    fn policy(&self, path: &std::path::Path, image: Option<&Launch>) -> Result<SandboxPolicy> {
        let mut p = SandboxPolicy::default();
        let argv0 = match image {
            Some(img) => img.argv0.clone(),
            None => path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        let args = match image {
            Some(img) if self.args.is_empty() => img.default_args.clone(),
            _ => self.args.clone(),
        };
        p.args = std::iter::once(argv0).chain(args).collect();
        if let Some(img) = image {
            super::sandbox::apply_image(&mut p, img)?;
        }
        p.app = super::sandbox::default_app(&self.target, image.is_some());
        self.sandbox.apply(&mut p)?;
        p.limits.timeout = self.timeout.as_deref().map(policy::parse_duration).transpose().map_err(super::sandbox::config)?;
        tracing::debug!(policy = %serde_json::to_string(&p.redacted()).unwrap_or_default(), "sandbox policy");
        Ok(p)
    }
}

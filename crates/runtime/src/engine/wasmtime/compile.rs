//! Compiled code: compiling an input, loading it from the compiled-code cache (or a trusted
//! precompiled artifact), and the fingerprint of the engine's settings that keys the cache.

use std::hash::Hasher;

use sha2::{Digest, Sha256};
use wasmtime::Module;
use wasmtime::component::Component;

use super::outcome::{engine_err, root_cause};
use super::tier::Upgrade;
use super::{Compiler, Flavor, Tier, WasmtimeEngine};
use crate::Result;
use crate::cache::{Cache, Lookup};
use crate::engine::not_runnable;
use crate::inspect::{Input, WasmKind};

/// An input's compiled code, ready to link.
#[derive(Clone)]
pub(super) enum Compiled {
    Module(Module),
    Component(Component),
}

impl WasmtimeEngine {
    /// The engine of `tier` an input's code is compiled for: the concurrent one for a component that
    /// uses the async ABI, the plain one otherwise (see [`WasmtimeEngine`]).
    fn flavor_for(&self, tier: Tier, input: &Input, kind: WasmKind) -> Result<&Flavor> {
        self.engine_for(tier, kind == WasmKind::Component && crate::inspect::uses_component_async(&input.bytes))
    }

    /// Compiles `input` for the engine of `tier` that [`Self::flavor_for`] picks, or the concurrent
    /// one when the plain one refuses a component the scan misread: the code ready to link and
    /// serialized (for the cache, or a precompiled artifact).
    pub(super) fn compile(&self, tier: Tier, input: &Input, kind: WasmKind) -> Result<(&Flavor, Compiled, Vec<u8>)> {
        let flavor = self.flavor_for(tier, input, kind)?;
        match self.compile_with(flavor, input, kind) {
            Err(first) if kind == WasmKind::Component && !flavor.engine.get_concurrency_support() => {
                let concurrent = self.engine_for(tier, true)?;
                match self.compile_with(concurrent, input, kind) {
                    Ok((code, bytes)) => Ok((concurrent, code, bytes)),
                    Err(_) => Err(first),
                }
            }
            compiled => {
                let (code, bytes) = compiled?;
                Ok((flavor, code, bytes))
            }
        }
    }

    fn compile_with(&self, flavor: &Flavor, input: &Input, kind: WasmKind) -> Result<(Compiled, Vec<u8>)> {
        let what = match kind {
            WasmKind::Module => "module",
            WasmKind::Component => "component",
        };
        let compiler = match flavor.tier {
            Tier::Main => self.options.compiler,
            Tier::Baseline => Compiler::Winch,
        };
        // Only Cranelift compiles everything wasmtime runs: say which compiler refused.
        let by = if compiler == Compiler::Cranelift { String::new() } else { format!(" for --engine {}", compiler.name()) };
        let invalid = |e: wasmtime::Error| not_runnable(format!("{}: invalid {what}{by}: {}", input.name, root_cause(&e)));
        let start = std::time::Instant::now();
        // The compiled code is used as it is: serializing copies it, loading those bytes back would
        // copy and map it once more (35 MB for CPython) before the first start.
        let (code, bytes) = match kind {
            WasmKind::Module => {
                let module = Module::new(&flavor.engine, &input.bytes).map_err(invalid)?;
                let bytes = module.serialize().map_err(engine_err)?;
                (Compiled::Module(module), bytes)
            }
            WasmKind::Component => {
                let component = Component::new(&flavor.engine, &input.bytes).map_err(invalid)?;
                let bytes = component.serialize().map_err(engine_err)?;
                (Compiled::Component(component), bytes)
            }
        };
        tracing::debug!(input = %input.name, compiler = compiler.name(), elapsed = ?start.elapsed(), "compiled");
        Ok((code, bytes))
    }

    fn deserialize(flavor: &Flavor, kind: WasmKind, compiled: &[u8]) -> wasmtime::Result<Compiled> {
        // SAFETY: `compiled` was produced by this engine's `serialize` (the cache verified its checksum
        // and key, which includes the engine's compatibility hash), or the user explicitly allowed a
        // precompiled artifact; wasmtime re-checks version and settings compatibility itself.
        Ok(match kind {
            WasmKind::Module => Compiled::Module(unsafe { Module::deserialize(&flavor.engine, compiled)? }),
            WasmKind::Component => Compiled::Component(unsafe { Component::deserialize(&flavor.engine, compiled)? }),
        })
    }

    /// The input's compiled code: a trusted precompiled artifact as is, else from the cache, else
    /// compiled now (and cached). With tiered start ([`Self::tiers`]) a miss gives Winch's code now
    /// and the [`Upgrade`] that makes Cranelift's; the caller decides what to do with it.
    pub(super) fn load_compiled(&self, input: &Input) -> Result<(Compiled, Option<Upgrade>)> {
        if input.precompiled {
            return Ok((self.load_precompiled(input)?, None));
        }
        let kind = input.kind()?;
        if let Some(adopted) = self.take_adopted(input, kind)? {
            return Ok((adopted, None));
        }
        if let Some(hit) = self.cached(Tier::Main, input, kind)? {
            return Ok((hit, None));
        }
        if self.tiers(input) {
            let baseline = match self.cached(Tier::Baseline, input, kind)? {
                Some(hit) => Ok(hit),
                None => self.compile_cached(Tier::Baseline, input, kind),
            };
            match baseline {
                Ok(code) => return Ok((code, Some(Upgrade::new(self.clone(), input.clone(), kind)))),
                Err(e) => tracing::debug!("{e}; compiling with Cranelift before the start"),
            }
        }
        Ok((self.compile_cached(Tier::Main, input, kind)?, None))
    }

    /// The input's code for `tier` from the cache, if it is there and the engine accepts it.
    fn cached(&self, tier: Tier, input: &Input, kind: WasmKind) -> Result<Option<Compiled>> {
        let Some(cache) = &self.options.cache else { return Ok(None) };
        let flavor = self.flavor_for(tier, input, kind)?;
        // The plain engine's code first; a component the scan misread was cached for the concurrent one.
        let mut candidates = vec![flavor];
        if kind == WasmKind::Component && !flavor.engine.get_concurrency_support() && self.made(tier, true) {
            candidates.push(self.engine_for(tier, true)?);
        }
        for flavor in candidates {
            let key = Cache::key(&input.bytes, &flavor.fingerprint);
            if let Lookup::Hit(compiled) = cache.get(&key) {
                match Self::deserialize(flavor, kind, &compiled) {
                    Ok(loaded) => {
                        tracing::debug!(input = %input.name, %key, ?tier, "compiled-code cache hit");
                        return Ok(Some(loaded));
                    }
                    Err(e) => tracing::warn!(%key, "cached code rejected by the engine, recompiling: {e:#}"),
                }
            }
        }
        tracing::debug!(input = %input.name, ?tier, "compiled-code cache miss");
        Ok(None)
    }

    /// Compiles the input for `tier` now and puts the code in the cache.
    pub(super) fn compile_cached(&self, tier: Tier, input: &Input, kind: WasmKind) -> Result<Compiled> {
        let (flavor, code, bytes) = self.compile(tier, input, kind)?;
        if let Some(cache) = &self.options.cache {
            let key = Cache::key(&input.bytes, &flavor.fingerprint);
            if let Err(e) = cache.put(&key, &bytes) {
                tracing::warn!(dir = %cache.dir().display(), "failed to write the compiled-code cache: {e}");
            }
        }
        Ok(code)
    }

    fn load_precompiled(&self, input: &Input) -> Result<Compiled> {
        if !self.options.allow_precompiled {
            return Err(not_runnable(format!(
                "{}: is a precompiled artifact; pass --allow-precompiled to run trusted precompiled code",
                input.name
            )));
        }
        let kind = match wasmtime::Engine::detect_precompiled(&input.bytes) {
            Some(wasmtime::Precompiled::Module) => WasmKind::Module,
            Some(wasmtime::Precompiled::Component) => WasmKind::Component,
            None => return Err(not_runnable(format!("{}: not a wasmtime precompiled artifact", input.name))),
        };
        // The artifact says which engine made it only by being accepted: the plain one, then the
        // concurrent one for a component.
        let cannot = |e: wasmtime::Error| not_runnable(format!("{}: cannot load precompiled artifact: {}", input.name, root_cause(&e)));
        match Self::deserialize(&self.plain, kind, &input.bytes) {
            Err(first) if kind == WasmKind::Component => {
                Self::deserialize(self.engine_for(Tier::Main, true)?, kind, &input.bytes).map_err(|_| cannot(first))
            }
            loaded => loaded.map_err(cannot),
        }
    }
}

/// Code compiled on one machine and run on another (precompiled code shipped beside an image): the
/// engine says what it needs and takes it into its cache; the image side finds and checks it.
impl WasmtimeEngine {
    /// The fingerprint (hex) that code for `input` must have been compiled for to load on this
    /// engine's main tier: wasmtime's version, settings and CPU features, and the compiler.
    pub fn code_fingerprint(&self, input: &Input) -> Result<String> {
        Ok(hex::encode(self.flavor_for(Tier::Main, input, input.kind()?)?.fingerprint))
    }

    /// Whether the main tier's code for `input` is in the cache (a load would not compile).
    pub fn is_cached(&self, input: &Input) -> Result<bool> {
        let Some(cache) = &self.options.cache else { return Ok(false) };
        let flavor = self.flavor_for(Tier::Main, input, input.kind()?)?;
        Ok(cache.path(&Cache::key(&input.bytes, &flavor.fingerprint)).exists())
    }

    /// Compiles `input` for this engine's main tier: the code and the fingerprint it is for.
    pub fn compile_code(&self, input: &Input) -> Result<(Vec<u8>, String)> {
        if input.precompiled {
            return Err(not_runnable(format!("{}: is already precompiled", input.name)));
        }
        let (flavor, _, bytes) = self.compile(Tier::Main, input, input.kind()?)?;
        Ok((bytes, hex::encode(flavor.fingerprint)))
    }

    /// Takes `code`, compiled elsewhere for [`Self::code_fingerprint`] (the caller checked that and
    /// who made it): wasmtime loads it now, checking its version and settings, and the next load of
    /// `input` uses it. With a compiled-code cache it is written there on a thread of its own (35 MB
    /// take a fifth of a second to write here, which the first answer need not wait for): join the
    /// handle where the process would otherwise end before it is written.
    pub fn adopt_code(&self, input: &Input, code: Vec<u8>) -> Result<Option<std::thread::JoinHandle<()>>> {
        let kind = input.kind()?;
        let expected = match kind {
            WasmKind::Module => wasmtime::Precompiled::Module,
            WasmKind::Component => wasmtime::Precompiled::Component,
        };
        if wasmtime::Engine::detect_precompiled(&code) != Some(expected) {
            return Err(not_runnable(format!("{}: the precompiled code is not a wasmtime {kind:?}", input.name)));
        }
        let flavor = self.flavor_for(Tier::Main, input, kind)?;
        let loaded = Self::deserialize(flavor, kind, &code)
            .map_err(|e| not_runnable(format!("{}: this engine refuses the precompiled code: {}", input.name, root_cause(&e))))?;
        let key = Cache::key(&input.bytes, &flavor.fingerprint);
        *self.lazy.adopted.lock().unwrap() = Some((key.clone(), loaded));
        let Some(cache) = self.options.cache.clone() else { return Ok(None) };
        std::thread::Builder::new()
            .name("wasmcell-cache-write".into())
            .spawn(move || {
                if let Err(e) = cache.put(&key, &code) {
                    tracing::warn!(dir = %cache.dir().display(), "failed to write the compiled-code cache: {e}");
                }
            })
            .map(Some)
            .map_err(|e| crate::Error::Config(format!("cannot start a thread: {e}")))
    }

    /// The code [`Self::adopt_code`] loaded for `input`, if any.
    fn take_adopted(&self, input: &Input, kind: WasmKind) -> Result<Option<Compiled>> {
        let mut adopted = self.lazy.adopted.lock().unwrap();
        let Some((key, _)) = adopted.as_ref() else { return Ok(None) };
        let flavor = self.flavor_for(Tier::Main, input, kind)?;
        if *key != Cache::key(&input.bytes, &flavor.fingerprint) {
            return Ok(None);
        }
        tracing::debug!(input = %input.name, %key, "adopted precompiled code");
        Ok(adopted.take().map(|(_, code)| code))
    }

    /// The main tier's engine in words: "wasmtime 48.0.8, cranelift, x86_64".
    pub fn describe(&self) -> String {
        format!("wasmtime 48.0.8, {}, {}", self.options.compiler.name(), std::env::consts::ARCH)
    }
}

/// Hashes wasmtime's compatibility hash (version, compiler settings, CPU features) to stable bytes.
pub(super) fn fingerprint(engine: &wasmtime::Engine, compiler: Compiler) -> [u8; 32] {
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = ShaHasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    h.0.update(b"wasmtime-48.0.8");
    h.0.update(compiler.name().as_bytes());
    h.0.finalize().into()
}

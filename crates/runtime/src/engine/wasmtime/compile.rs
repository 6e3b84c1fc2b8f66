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

impl Compiled {
    /// The code as bytes, for the cache or a precompiled artifact (a copy of all of it).
    pub(super) fn serialize(&self) -> Result<Vec<u8>> {
        match self {
            Compiled::Module(m) => m.serialize(),
            Compiled::Component(c) => c.serialize(),
        }
        .map_err(engine_err)
    }
}

impl WasmtimeEngine {
    /// The engine of `tier` an input's code is compiled for: the concurrent one for a component that
    /// uses the async ABI, the plain one otherwise (see [`WasmtimeEngine`]).
    fn flavor_for(&self, tier: Tier, input: &Input, kind: WasmKind) -> Result<&Flavor> {
        self.engine_for(tier, kind == WasmKind::Component && input.uses_component_async())
    }

    /// Compiles `input` for the engine of `tier` that [`Self::flavor_for`] picks, or the concurrent
    /// one when the plain one refuses a component the scan misread: the code ready to link (see
    /// [`Compiled::serialize`] for the cache, or a precompiled artifact).
    pub(super) fn compile(&self, tier: Tier, input: &Input, kind: WasmKind) -> Result<(&Flavor, Compiled)> {
        let flavor = self.flavor_for(tier, input, kind)?;
        match self.compile_with(flavor, input, kind) {
            Err(first) if kind == WasmKind::Component && !flavor.engine.get_concurrency_support() => {
                let concurrent = self.engine_for(tier, true)?;
                match self.compile_with(concurrent, input, kind) {
                    Ok(code) => Ok((concurrent, code)),
                    Err(_) => Err(first),
                }
            }
            compiled => Ok((flavor, compiled?)),
        }
    }

    fn compile_with(&self, flavor: &Flavor, input: &Input, kind: WasmKind) -> Result<Compiled> {
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
        // The compiled code is used as it is: loading serialized bytes back would copy and map it
        // once more (35 MB for CPython) before the first start.
        let code = match kind {
            WasmKind::Module => Compiled::Module(Module::new(&flavor.engine, &input.bytes).map_err(invalid)?),
            WasmKind::Component => Compiled::Component(Component::new(&flavor.engine, &input.bytes).map_err(invalid)?),
        };
        tracing::debug!(input = %input.name, compiler = compiler.name(), elapsed = ?start.elapsed(), "compiled");
        Ok(code)
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
            let key = Cache::key_of(input.sha256(), &flavor.fingerprint);
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

    /// Compiles the input for `tier` now; its code goes to the cache on a thread of its own.
    pub(super) fn compile_cached(&self, tier: Tier, input: &Input, kind: WasmKind) -> Result<Compiled> {
        let (flavor, code) = self.compile(tier, input, kind)?;
        let key = Cache::key_of(input.sha256(), &flavor.fingerprint);
        let serialized = code.clone();
        self.write_cache_later(key, move || serialized.serialize());
        Ok(code)
    }

    /// Writes the code `bytes` makes to the cache under `key` on a thread of its own: the code is in
    /// memory already and the first start need not wait for it to be serialized (a copy) and written
    /// (35 MB take a fifth of a second to write and fsync here). [`Self::wait_for_cache_writes`]
    /// waits for it; a process that ends first leaves no entry (at most a temporary file, never a
    /// half-written entry: the cache writes atomically).
    fn write_cache_later(&self, key: String, bytes: impl FnOnce() -> Result<Vec<u8>> + Send + 'static) {
        let Some(cache) = self.options.cache.clone() else { return };
        let write = move || {
            super::tier::background_priority();
            let written = bytes().and_then(|bytes| {
                cache
                    .put(&key, &bytes)
                    .map_err(|source| crate::Error::Io { context: "failed to write the compiled-code cache".into(), source })
            });
            if let Err(e) = written {
                tracing::warn!(dir = %cache.dir().display(), "{e}");
            }
        };
        let mut writes = self.lazy.writes.lock().unwrap();
        writes.retain(|w| !w.is_finished());
        match std::thread::Builder::new().name("wasmcell-cache-write".into()).spawn(write) {
            Ok(handle) => writes.push(handle),
            Err(e) => tracing::warn!("cannot start a thread to write the compiled-code cache: {e}"),
        }
    }

    /// Waits until every compiled-code cache write started so far is done (a command before it
    /// exits, a server once it has drained), so the next start finds the code.
    pub fn wait_for_cache_writes(&self) {
        let writes = std::mem::take(&mut *self.lazy.writes.lock().unwrap());
        for write in writes {
            let _ = write.join();
        }
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

    /// What to look for beside an image before its wasm is read: the fingerprint code for a wasm
    /// that uses no async ABI (a core module or a WASI 0.2 component, the usual case) must have to
    /// load on this engine's main tier, and whether the cache holds such code for the wasm whose
    /// SHA-256 is `wasm` already. [`Self::code_fingerprint`] says for sure once the wasm is read.
    pub fn plain_code(&self, wasm: &[u8; 32]) -> (String, bool) {
        self.code_for(&self.plain, wasm)
    }

    /// As [`Self::plain_code`], for a component that uses the async ABI (WASI 0.3): its engine is
    /// made now if it was not yet (the load of such a component makes it anyway).
    pub fn async_abi_code(&self, wasm: &[u8; 32]) -> Result<(String, bool)> {
        Ok(self.code_for(self.engine_for(Tier::Main, true)?, wasm))
    }

    fn code_for(&self, flavor: &Flavor, wasm: &[u8; 32]) -> (String, bool) {
        let cached = self.options.cache.as_ref().is_some_and(|c| c.path(&Cache::key_of(wasm, &flavor.fingerprint)).exists());
        (hex::encode(flavor.fingerprint), cached)
    }

    /// Whether the main tier's code for `input` is in the cache (a load would not compile).
    pub fn is_cached(&self, input: &Input) -> Result<bool> {
        let Some(cache) = &self.options.cache else { return Ok(false) };
        let flavor = self.flavor_for(Tier::Main, input, input.kind()?)?;
        Ok(cache.path(&Cache::key_of(input.sha256(), &flavor.fingerprint)).exists())
    }

    /// Compiles `input` for this engine's main tier: the code and the fingerprint it is for.
    pub fn compile_code(&self, input: &Input) -> Result<(Vec<u8>, String)> {
        if input.precompiled {
            return Err(not_runnable(format!("{}: is already precompiled", input.name)));
        }
        let (flavor, code) = self.compile(Tier::Main, input, input.kind()?)?;
        Ok((code.serialize()?, hex::encode(flavor.fingerprint)))
    }

    /// Takes `code`, compiled elsewhere for [`Self::code_fingerprint`] (the caller checked that and
    /// who made it): wasmtime loads it now, checking its version and settings, and the next load of
    /// `input` uses it. With a compiled-code cache it is written there as a compile's code is
    /// (see [`Self::wait_for_cache_writes`]).
    pub fn adopt_code(&self, input: &Input, code: Vec<u8>) -> Result<()> {
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
        let key = Cache::key_of(input.sha256(), &flavor.fingerprint);
        *self.lazy.adopted.lock().unwrap() = Some((key.clone(), loaded));
        self.write_cache_later(key, move || Ok(code));
        Ok(())
    }

    /// The code [`Self::adopt_code`] loaded for `input`, if any.
    fn take_adopted(&self, input: &Input, kind: WasmKind) -> Result<Option<Compiled>> {
        let mut adopted = self.lazy.adopted.lock().unwrap();
        let Some((key, _)) = adopted.as_ref() else { return Ok(None) };
        let flavor = self.flavor_for(Tier::Main, input, kind)?;
        if *key != Cache::key_of(input.sha256(), &flavor.fingerprint) {
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

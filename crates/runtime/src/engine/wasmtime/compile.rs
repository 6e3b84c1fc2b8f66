//! Compiled code: compiling an input, loading it from the compiled-code cache (or a trusted
//! precompiled artifact), and the fingerprint of the engine's settings that keys the cache.

use std::hash::Hasher;

use sha2::{Digest, Sha256};
use wasmtime::Module;
use wasmtime::component::Component;

use super::outcome::{engine_err, root_cause};
use super::{Flavor, WasmtimeEngine};
use crate::Result;
use crate::cache::{Cache, Lookup};
use crate::engine::not_runnable;
use crate::inspect::{Input, WasmKind};

/// An input's compiled code, ready to link.
pub(super) enum Compiled {
    Module(Module),
    Component(Component),
}

impl WasmtimeEngine {
    /// The engine an input's code is compiled for: the concurrent one for a component that uses the
    /// async ABI, the plain one otherwise (see [`WasmtimeEngine`]).
    fn flavor_for(&self, input: &Input, kind: WasmKind) -> Result<&Flavor> {
        if kind == WasmKind::Component && crate::inspect::uses_component_async(&input.bytes) {
            return self.concurrent();
        }
        Ok(&self.plain)
    }

    /// Compiles `input` for the engine it needs: the one [`Self::flavor_for`] picks, or the
    /// concurrent one when the plain one refuses a component the scan misread.
    pub(super) fn compile(&self, input: &Input, kind: WasmKind) -> Result<(&Flavor, Vec<u8>)> {
        let flavor = self.flavor_for(input, kind)?;
        match self.compile_with(flavor, input, kind) {
            Err(first) if kind == WasmKind::Component && std::ptr::eq(flavor, &self.plain) => {
                let concurrent = self.concurrent()?;
                match self.compile_with(concurrent, input, kind) {
                    Ok(bytes) => Ok((concurrent, bytes)),
                    Err(_) => Err(first),
                }
            }
            compiled => Ok((flavor, compiled?)),
        }
    }

    fn compile_with(&self, flavor: &Flavor, input: &Input, kind: WasmKind) -> Result<Vec<u8>> {
        let what = match kind {
            WasmKind::Module => "module",
            WasmKind::Component => "component",
        };
        let invalid = |e: wasmtime::Error| not_runnable(format!("{}: invalid {what}: {}", input.name, root_cause(&e)));
        let start = std::time::Instant::now();
        let bytes = match kind {
            WasmKind::Module => Module::new(&flavor.engine, &input.bytes).map_err(invalid)?.serialize(),
            WasmKind::Component => Component::new(&flavor.engine, &input.bytes).map_err(invalid)?.serialize(),
        }
        .map_err(engine_err)?;
        tracing::debug!(input = %input.name, elapsed = ?start.elapsed(), "compiled");
        Ok(bytes)
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
    /// compiled now (and cached).
    pub(super) fn load_compiled(&self, input: &Input) -> Result<Compiled> {
        if input.precompiled {
            return self.load_precompiled(input);
        }
        let kind = input.kind()?;
        let Some(cache) = &self.options.cache else {
            let (flavor, compiled) = self.compile(input, kind)?;
            return Self::deserialize(flavor, kind, &compiled).map_err(engine_err);
        };
        let flavor = self.flavor_for(input, kind)?;
        // The plain engine's code first; a component the scan misread was cached for the concurrent one.
        let mut candidates = vec![flavor];
        if kind == WasmKind::Component && std::ptr::eq(flavor, &self.plain) && self.concurrent.made.get().is_some() {
            candidates.push(self.concurrent()?);
        }
        for flavor in candidates {
            let key = Cache::key(&input.bytes, &flavor.fingerprint);
            if let Lookup::Hit(compiled) = cache.get(&key) {
                match Self::deserialize(flavor, kind, &compiled) {
                    Ok(loaded) => {
                        tracing::debug!(input = %input.name, %key, "compiled-code cache hit");
                        return Ok(loaded);
                    }
                    Err(e) => tracing::warn!(%key, "cached code rejected by the engine, recompiling: {e:#}"),
                }
            }
        }
        tracing::debug!(input = %input.name, "compiled-code cache miss, compiling");
        let (flavor, compiled) = self.compile(input, kind)?;
        let key = Cache::key(&input.bytes, &flavor.fingerprint);
        if let Err(e) = cache.put(&key, &compiled) {
            tracing::warn!(dir = %cache.dir().display(), "failed to write the compiled-code cache: {e}");
        }
        Self::deserialize(flavor, kind, &compiled).map_err(engine_err)
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
                Self::deserialize(self.concurrent()?, kind, &input.bytes).map_err(|_| cannot(first))
            }
            loaded => loaded.map_err(cannot),
        }
    }
}

/// Hashes wasmtime's compatibility hash (version, compiler settings, CPU features) to stable bytes.
pub(super) fn fingerprint(engine: &wasmtime::Engine) -> [u8; 32] {
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
    h.0.finalize().into()
}

//! Reading wasm inputs without compiling them: the text format, module vs component, the WASI version,
//! imports and exports. Used by `run` to pick the right path and by `wasmcell inspect`.

use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmparser::{ComponentExternalKind, ComponentTypeRef, ExternalKind, Parser, Payload, TypeRef, Validator, WasmFeatures};

use crate::{Error, Result};

/// Whether a binary is a core module or a component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WasmKind {
    Module,
    Component,
}

/// An input read from disk: binary wasm (the text format already translated), or an engine's
/// precompiled artifact.
#[derive(Clone)]
pub struct Input {
    /// A short name for messages and argv[0] (the file name).
    pub name: String,
    /// The binary bytes.
    pub bytes: Vec<u8>,
    /// Whether the bytes are a precompiled artifact (`wasmcell compile` output).
    pub precompiled: bool,
    /// The SHA-256 of `bytes`, once asked for (the cache key and image checks need it; 18 MB take
    /// ~10 ms to hash).
    sha256: std::sync::OnceLock<[u8; 32]>,
    /// [`uses_component_async`] of `bytes`, once asked for (a parse of all of it).
    async_abi: std::sync::OnceLock<bool>,
}

impl Input {
    /// Reads `path`: 127-class [`Error::NotFound`] when it does not exist, 126-class
    /// [`Error::NotRunnable`] when it is neither wasm, nor WAT, nor a precompiled artifact.
    pub fn read(path: &Path) -> Result<Input> {
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound(path.to_path_buf()),
            std::io::ErrorKind::IsADirectory => Error::NotRunnable(format!("{}: is a directory, not a wasm file", path.display())),
            _ => Error::Io { context: format!("failed to read {}", path.display()), source: e },
        })?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Input::from_bytes(name, bytes)
    }

    /// Classifies bytes already in memory (see [`Input::read`]).
    pub fn from_bytes(name: String, bytes: Vec<u8>) -> Result<Input> {
        if bytes.starts_with(b"\0asm") {
            return Ok(Input { name, bytes, precompiled: false, sha256: Default::default(), async_abi: Default::default() });
        }
        if bytes.starts_with(b"\x7fELF") {
            return Ok(Input { name, bytes, precompiled: true, sha256: Default::default(), async_abi: Default::default() });
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| Error::NotRunnable(format!("{name}: not a WebAssembly file (no wasm magic number)")))?;
        let looks_like_wat = text.trim_start().starts_with('(') || text.trim_start().starts_with(";;");
        if !looks_like_wat {
            return Err(Error::NotRunnable(format!("{name}: not a WebAssembly file (no wasm magic number)")));
        }
        let bytes = wat::parse_str(text)
            .map_err(|e| Error::NotRunnable(format!("{name}: invalid WebAssembly text: {}", one_line(&e.to_string()))))?;
        Ok(Input { name, bytes, precompiled: false, sha256: Default::default(), async_abi: Default::default() })
    }

    /// The SHA-256 of the bytes (computed once).
    pub fn sha256(&self) -> &[u8; 32] {
        self.sha256.get_or_init(|| {
            use sha2::Digest;
            sha2::Sha256::digest(&self.bytes).into()
        })
    }

    /// Whether the input is a component that uses the async ABI ([`uses_component_async`], computed once).
    pub fn uses_component_async(&self) -> bool {
        *self.async_abi.get_or_init(|| uses_component_async(&self.bytes))
    }

    pub fn kind(&self) -> Result<WasmKind> {
        kind_of(&self.bytes).ok_or_else(|| Error::NotRunnable(format!("{}: unsupported wasm binary version", self.name)))
    }
}

/// Module or component, from the header.
pub fn kind_of(bytes: &[u8]) -> Option<WasmKind> {
    if Parser::is_core_wasm(bytes) {
        Some(WasmKind::Module)
    } else if Parser::is_component(bytes) {
        Some(WasmKind::Component)
    } else {
        None
    }
}

/// What `wasmcell inspect` reports.
#[derive(Debug, Serialize)]
pub struct WasmInfo {
    pub kind: WasmKind,
    /// `preview1`, `0.2.x` or `0.3.x` (the highest wasi:* version a component names), or `none`.
    pub wasi: String,
    /// Every WASI release series a component targets, the highest version named in each (`0.2.4`,
    /// `0.3.0`: a Rust wasm32-wasip3 program imports both); a module's one (`preview1`), if any.
    pub wasi_versions: Vec<String>,
    pub size: usize,
    pub sha256: String,
    /// The post-MVP proposals the binary uses (Wasm 2.0 and 3.0, and the component model's async),
    /// by their proposal names: `gc`, `exceptions`, `tail-call`, `memory64`, ...
    pub proposals: Vec<&'static str>,
    pub imports: Vec<Item>,
    pub exports: Vec<Item>,
}

impl WasmInfo {
    /// Whether the binary is a wasi:http service: a component exporting `wasi:http/handler@0.3.x` or
    /// `wasi:http/incoming-handler@0.2.x`.
    pub fn serves_http(&self) -> bool {
        self.kind == WasmKind::Component
            && self.exports.iter().any(|e| e.name.starts_with("wasi:http/handler@0.3") || e.name.starts_with("wasi:http/incoming-handler@"))
    }
}

/// The proposals [`proposals`] looks for.
const PROPOSALS: &[(&str, WasmFeatures)] = &[
    ("mutable-global", WasmFeatures::MUTABLE_GLOBAL),
    ("sign-extension", WasmFeatures::SIGN_EXTENSION),
    ("saturating-float-to-int", WasmFeatures::SATURATING_FLOAT_TO_INT),
    ("multi-value", WasmFeatures::MULTI_VALUE),
    ("reference-types", WasmFeatures::REFERENCE_TYPES),
    ("bulk-memory", WasmFeatures::BULK_MEMORY),
    ("simd", WasmFeatures::SIMD),
    ("relaxed-simd", WasmFeatures::RELAXED_SIMD),
    ("extended-const", WasmFeatures::EXTENDED_CONST),
    ("tail-call", WasmFeatures::TAIL_CALL),
    ("function-references", WasmFeatures::FUNCTION_REFERENCES),
    ("gc", WasmFeatures::GC.union(WasmFeatures::GC_TYPES)),
    ("exceptions", WasmFeatures::EXCEPTIONS),
    ("memory64", WasmFeatures::MEMORY64),
    ("multi-memory", WasmFeatures::MULTI_MEMORY),
    ("threads", WasmFeatures::THREADS),
    ("component-model-async", WasmFeatures::CM_ASYNC),
];

/// The proposals `bytes` uses: those the validator cannot do without (the binary validates with every
/// feature on, and not with that one off). A binary that does not validate at all uses none.
pub fn proposals(bytes: &[u8]) -> Vec<&'static str> {
    let valid = |features: WasmFeatures| Validator::new_with_features(features).validate_all(bytes).is_ok();
    if !valid(WasmFeatures::all()) {
        return Vec::new();
    }
    PROPOSALS.iter().filter(|(_, f)| !valid(WasmFeatures::all().difference(*f))).map(|(name, _)| *name).collect()
}

/// Whether a component uses the component model's async ABI (WASI 0.3 is built on it): an async lift or
/// lower, an async function type, a stream or future type, or any of the task, stream, future,
/// waitable and thread built-ins. Only such a component needs an engine with concurrency support,
/// which costs every other component's calls (see the engine's `Flavor`). A parse, no validation: a
/// binary this misreads is compiled by the concurrent engine after the plain one refuses it.
pub fn uses_component_async(bytes: &[u8]) -> bool {
    use wasmparser::{CanonicalFunction as F, CanonicalOption, ComponentDefinedType as D, ComponentType as T};
    let async_options =
        |options: &[CanonicalOption]| options.iter().any(|o| matches!(o, CanonicalOption::Async | CanonicalOption::Callback(_)));
    let async_type = |ty: &T| match ty {
        T::Func(f) => f.async_,
        T::Defined(d) => matches!(d, D::Stream(_) | D::Future(_)),
        _ => false,
    };
    if kind_of(bytes) != Some(WasmKind::Component) {
        return false;
    }
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else { return false };
        match payload {
            Payload::ComponentCanonicalSection(r) => {
                for f in r {
                    let Ok(f) = f else { return false };
                    let plain = match &f {
                        F::Lift { options, .. } | F::Lower { options, .. } => !async_options(options),
                        F::ResourceNew { .. } | F::ResourceDrop { .. } | F::ResourceRep { .. } => true,
                        _ => false,
                    };
                    if !plain {
                        return true;
                    }
                }
            }
            Payload::ComponentTypeSection(r) => {
                for ty in r {
                    let Ok(ty) = ty else { return false };
                    let nested = match &ty {
                        T::Component(decls) => {
                            decls.iter().any(|d| matches!(d, wasmparser::ComponentTypeDeclaration::Type(t) if async_type(t)))
                        }
                        T::Instance(decls) => {
                            decls.iter().any(|d| matches!(d, wasmparser::InstanceTypeDeclaration::Type(t) if async_type(t)))
                        }
                        _ => false,
                    };
                    if nested || async_type(&ty) {
                        return true;
                    }
                }
            }
            _ => {}
        }
    }
    false
}

/// One import or export: `module::name` for core modules, the interface or function name for
/// components; `kind` is func, memory, table, global, tag, instance, component, module, type or value.
#[derive(Debug, Serialize)]
pub struct Item {
    pub name: String,
    pub kind: &'static str,
}

/// Parses a binary's top level (nested modules and components are skipped).
pub fn inspect(bytes: &[u8]) -> Result<WasmInfo> {
    let malformed = |e: wasmparser::BinaryReaderError| Error::NotRunnable(format!("malformed wasm: {e}"));
    let kind = kind_of(bytes).ok_or_else(|| Error::NotRunnable("not a WebAssembly binary".into()))?;
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(malformed)?;
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ImportSection(r) if depth == 0 => {
                for imp in r.into_imports() {
                    let imp = imp.map_err(malformed)?;
                    imports.push(Item { name: format!("{}::{}", imp.module, imp.name), kind: core_ref_kind(imp.ty) });
                }
            }
            Payload::ExportSection(r) if depth == 0 => {
                for exp in r {
                    let exp = exp.map_err(malformed)?;
                    exports.push(Item { name: exp.name.to_string(), kind: core_kind(exp.kind) });
                }
            }
            Payload::ComponentImportSection(r) if depth == 0 => {
                for imp in r {
                    let imp = imp.map_err(malformed)?;
                    imports.push(Item { name: imp.name.name.to_string(), kind: component_ref_kind(imp.ty) });
                }
            }
            Payload::ComponentExportSection(r) if depth == 0 => {
                for exp in r {
                    let exp = exp.map_err(malformed)?;
                    exports.push(Item { name: exp.name.name.to_string(), kind: component_kind(exp.kind) });
                }
            }
            _ => {}
        }
    }
    let wasi_versions = wasi_versions(kind, &imports, &exports);
    let wasi = wasi_versions.last().cloned().unwrap_or_else(|| "none".into());
    let proposals = proposals(bytes);
    let sha256 = hex::encode(Sha256::digest(bytes));
    Ok(WasmInfo { kind, wasi, wasi_versions, size: bytes.len(), sha256, proposals, imports, exports })
}

/// The WASI versions a binary targets, lowest first (see [`WasmInfo::wasi_versions`]).
fn wasi_versions(kind: WasmKind, imports: &[Item], exports: &[Item]) -> Vec<String> {
    match kind {
        WasmKind::Module => {
            if imports.iter().any(|i| i.name.starts_with("wasi_snapshot_preview1::")) {
                vec!["preview1".into()]
            } else if imports.iter().any(|i| i.name.starts_with("wasi_unstable::")) {
                vec!["preview0".into()]
            } else {
                Vec::new()
            }
        }
        WasmKind::Component => {
            // The highest version of each series (0.2, 0.3, ...), by the series.
            let mut series: std::collections::BTreeMap<Vec<u64>, String> = std::collections::BTreeMap::new();
            let versions = imports
                .iter()
                .chain(exports)
                .filter(|i| i.name.starts_with("wasi:"))
                .filter_map(|i| i.name.rsplit_once('@').map(|(_, v)| v.to_string()));
            for v in versions {
                let key = version_key(&v);
                let entry = series.entry(key.iter().take(2).copied().collect()).or_insert_with(|| v.clone());
                if version_key(entry) < key {
                    *entry = v;
                }
            }
            series.into_values().collect()
        }
    }
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(['.', '-']).map(|p| p.parse().unwrap_or(0)).collect()
}

fn core_ref_kind(ty: TypeRef) -> &'static str {
    match ty {
        TypeRef::Func(_) => "func",
        TypeRef::Table(_) => "table",
        TypeRef::Memory(_) => "memory",
        TypeRef::Global(_) => "global",
        TypeRef::Tag(_) => "tag",
        #[allow(unreachable_patterns)]
        _ => "func",
    }
}

fn core_kind(kind: ExternalKind) -> &'static str {
    match kind {
        ExternalKind::Func => "func",
        ExternalKind::Table => "table",
        ExternalKind::Memory => "memory",
        ExternalKind::Global => "global",
        ExternalKind::Tag => "tag",
        #[allow(unreachable_patterns)]
        _ => "func",
    }
}

fn component_ref_kind(ty: ComponentTypeRef) -> &'static str {
    match ty {
        ComponentTypeRef::Module(_) => "module",
        ComponentTypeRef::Func(_) => "func",
        ComponentTypeRef::Value(_) => "value",
        ComponentTypeRef::Type(_) => "type",
        ComponentTypeRef::Instance(_) => "instance",
        ComponentTypeRef::Component(_) => "component",
    }
}

fn component_kind(kind: ComponentExternalKind) -> &'static str {
    match kind {
        ComponentExternalKind::Module => "module",
        ComponentExternalKind::Func => "func",
        ComponentExternalKind::Value => "value",
        ComponentExternalKind::Type => "type",
        ComponentExternalKind::Instance => "instance",
        ComponentExternalKind::Component => "component",
    }
}

/// Folds a multi-line message (the text parser's, with a source excerpt) into its first line.
pub(crate) fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_imports_and_exports() {
        let wasm = wat::parse_str(
            r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                 (memory (export "memory") 1) (func (export "_start")))"#,
        )
        .unwrap();
        let info = inspect(&wasm).unwrap();
        assert_eq!(info.kind, WasmKind::Module);
        assert_eq!(info.wasi, "preview1");
        assert_eq!(info.imports[0].name, "wasi_snapshot_preview1::fd_write");
        assert_eq!(info.exports.len(), 2);
    }

    #[test]
    fn not_wasm() {
        assert!(matches!(Input::from_bytes("x".into(), b"#!/bin/sh\n".to_vec()), Err(Error::NotRunnable(_))));
        assert!(matches!(Input::from_bytes("x".into(), b"(module (func $f (i32.bogus)))".to_vec()), Err(Error::NotRunnable(_))));
        assert!(matches!(inspect(b"\0asm\x01\0\0\0\x01\xff"), Err(Error::NotRunnable(_))));
    }

    #[test]
    fn component_async_abi_is_seen_where_wasi_0_3_uses_it() {
        let uses = |wat: &str| uses_component_async(&wat::parse_str(wat).unwrap());
        // No async ABI: a 0.2-style component with a lifted sync function and a resource.
        assert!(!uses(
            r#"(component
                 (core module $m (func (export "f") (result i32) i32.const 0))
                 (core instance $i (instantiate $m))
                 (type $r (resource (rep i32)))
                 (func (export "f") (result u32) (canon lift (core func $i "f"))))"#
        ));
        assert!(!uses("(module)"), "a core module never needs it");
        // Each way WASI 0.3 needs it: a stream type, an async function type, an async lift, a built-in.
        assert!(uses("(component (type (stream u8)))"));
        assert!(uses("(component (type (func async (result u32))))"));
        assert!(uses(r#"(component (type (instance (type (future u32)))))"#));
        assert!(uses(
            r#"(component
                 (core module $m (func (export "f") (result i32) i32.const 0))
                 (core instance $i (instantiate $m))
                 (func (export "f") (canon lift (core func $i "f") async)))"#
        ));
        assert!(uses(r#"(component (core func (canon backpressure.inc)))"#));
    }
}

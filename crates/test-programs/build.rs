//! Builds the test guests from source: C through Debian's clang + wasi-libc (core modules, WASI
//! preview 1), each C module also wrapped into a component with the WASI adapter from the jco npm
//! package, and WAT through the `wat` crate. Writes `artifacts.rs` with one path constant per guest.
//!
//! Needs `clang` with the wasm32-wasi target (Debian: clang lld wasi-libc libclang-rt-dev-wasm32) and
//! the adapter (`WASMCELL_WASI_ADAPTER`, or `.deps/jco/package/lib/wasi_snapshot_preview1.command.wasm`
//! in the workspace). `scripts/test` installs both.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let workspace = manifest.parent().unwrap().parent().unwrap();
    println!("cargo:rerun-if-env-changed=WASMCELL_WASI_ADAPTER");
    println!("cargo:rerun-if-env-changed=CLANG");

    let mut consts = String::new();
    let adapter = adapter_path(workspace);
    let adapter_bytes = std::fs::read(&adapter).unwrap_or_else(|e| {
        panic!(
            "cannot read the WASI adapter at {} ({e}); run scripts/test, which fetches it, or set WASMCELL_WASI_ADAPTER",
            adapter.display()
        )
    });
    println!("cargo:rerun-if-changed={}", adapter.display());

    for src in sources(&manifest.join("c"), "c") {
        let name = stem(&src);
        let module = out.join(format!("{name}.wasm"));
        compile_c(&src, &module);
        let component = out.join(format!("{name}.component.wasm"));
        componentize(&module, &adapter_bytes, &component);
        constant(&mut consts, &format!("{name}_c"), &module);
        constant(&mut consts, &format!("{name}_component"), &component);
    }
    for src in sources(&manifest.join("wat"), "wat") {
        let name = stem(&src);
        let wasm = out.join(format!("{name}.wat.wasm"));
        let bytes = wat::parse_file(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        std::fs::write(&wasm, bytes).unwrap();
        constant(&mut consts, &format!("{name}_wat"), &src);
        constant(&mut consts, &format!("{name}_wasm"), &wasm);
    }
    std::fs::write(out.join("artifacts.rs"), consts).unwrap();
}

fn adapter_path(workspace: &Path) -> PathBuf {
    match std::env::var_os("WASMCELL_WASI_ADAPTER") {
        Some(p) => PathBuf::from(p),
        None => workspace.join(".deps/jco/package/lib/wasi_snapshot_preview1.command.wasm"),
    }
}

fn sources(dir: &Path, ext: &str) -> Vec<PathBuf> {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    for p in &v {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    v
}

fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}

fn compile_c(src: &Path, out: &Path) {
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .args(["--target=wasm32-wasi", "-O2", "-Wall", "-Werror", "-Wl,--strip-debug", "-o"])
        .arg(out)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {clang} ({e}); install clang lld wasi-libc libclang-rt-dev-wasm32 (scripts/test does)"));
    assert!(status.success(), "{clang} failed on {}", src.display());
}

fn componentize(module: &Path, adapter: &[u8], out: &Path) {
    let bytes = std::fs::read(module).unwrap();
    let component = wit_component::ComponentEncoder::default()
        .module(&bytes)
        .and_then(|e| e.adapter("wasi_snapshot_preview1", adapter))
        .and_then(|e| e.validate(true).encode())
        .unwrap_or_else(|e| panic!("cannot componentize {}: {e:#}", module.display()));
    std::fs::write(out, component).unwrap();
}

fn constant(consts: &mut String, name: &str, path: &Path) {
    writeln!(consts, "pub const {}: &str = {:?};", name.to_uppercase(), path.display().to_string()).unwrap();
}

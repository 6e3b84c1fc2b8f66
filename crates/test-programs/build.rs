//! Builds the test guests from source: C through Debian's clang + wasi-libc (core modules, WASI
//! preview 1), each C module also wrapped into a component with the WASI adapter from the jco npm
//! package, and WAT through the `wat` crate. Writes `artifacts.rs` with one path constant per guest.
//!
//! The wasi:http guests in `http/` are C too, with the C bindings that wit-bindgen 0.63 generated
//! for the `wasi:http/proxy` world (committed in `http/bindings/`; `scripts/gen-http-bindings`
//! regenerates them from the same WIT). clang builds each guest as a reactor, this script embeds
//! the world's component type (parsed from the WIT that ships in the jco package), and the jco
//! reactor adapter turns it into a component exporting `wasi:http/incoming-handler`.
//!
//! Needs `clang` with the wasm32-wasi target (Debian: clang lld wasi-libc libclang-rt-dev-wasm32),
//! the adapter (`WASMCELL_WASI_ADAPTER`, or `.deps/jco/package/lib/wasi_snapshot_preview1.command.wasm`
//! in the workspace; the reactor adapter and WIT are found next to it, or set
//! `WASMCELL_WASI_REACTOR_ADAPTER`). `scripts/test` installs all of them.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let workspace = manifest.parent().unwrap().parent().unwrap();
    println!("cargo:rerun-if-env-changed=WASMCELL_WASI_ADAPTER");
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=WASMCELL_WASI_REACTOR_ADAPTER");
    println!("cargo:rerun-if-env-changed=WASMCELL_WIT_BINDGEN");

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
    build_http_guests(&manifest.join("http"), &adapter, &out, &mut consts);
    std::fs::write(out.join("artifacts.rs"), consts).unwrap();
}

/// The version of the WASI WIT (in the jco package) the wasi:http guests are built against.
const WASI_WIT_VERSION: &str = "0.2.12";

/// `http/NAME.c` -> `NAME.http.wasm`, a `wasi:http/proxy` component; constant `HTTP_<NAME>`.
fn build_http_guests(src_dir: &Path, command_adapter: &Path, out: &Path, consts: &mut String) {
    let reactor_adapter = match std::env::var_os("WASMCELL_WASI_REACTOR_ADAPTER") {
        Some(p) => PathBuf::from(p),
        None => command_adapter.with_file_name("wasi_snapshot_preview1.reactor.wasm"),
    };
    let adapter_bytes = std::fs::read(&reactor_adapter).unwrap_or_else(|e| {
        panic!(
            "cannot read the WASI reactor adapter at {} ({e}); run scripts/test, which fetches it, or set WASMCELL_WASI_REACTOR_ADAPTER",
            reactor_adapter.display()
        )
    });
    println!("cargo:rerun-if-changed={}", reactor_adapter.display());

    // wit-bindgen wants the main package's WIT at the top and the packages it uses in `deps/`.
    let wit_src = command_adapter.with_file_name("wit").join("builtin").join(WASI_WIT_VERSION);
    assert!(
        wit_src.join("wasi-http").is_dir(),
        "no wasi:http WIT at {}; run scripts/test, which fetches the jco package that ships it",
        wit_src.display()
    );
    println!("cargo:rerun-if-changed={}", wit_src.display());
    let work = out.join("http");
    let wit = work.join("wit");
    let _ = std::fs::remove_dir_all(&work);
    for pkg in std::fs::read_dir(&wit_src).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()) {
        let name = pkg.file_name().unwrap();
        let dest = if name == "wasi-http" { wit.clone() } else { wit.join("deps").join(name) };
        std::fs::create_dir_all(&dest).unwrap();
        for file in std::fs::read_dir(&pkg).unwrap().map(|e| e.unwrap().path()) {
            if file.extension().is_some_and(|e| e == "wit") {
                std::fs::copy(&file, dest.join(file.file_name().unwrap())).unwrap();
            }
        }
    }

    // The bindings are committed source; the component type they describe is embedded here,
    // from the same WIT, instead of wit-bindgen's `proxy_component_type.o`.
    let bindings = src_dir.join("bindings");
    println!("cargo:rerun-if-changed={}", bindings.display());
    let bindings_obj = work.join("proxy.o");
    run(
        clang().args(["--target=wasm32-wasi", "-O2", "-c", "-o"]).arg(&bindings_obj).arg(bindings.join("proxy.c")),
        "clang (wit-bindgen's proxy.c)",
    );
    let stub = work.join("component_type_stub.c");
    std::fs::write(&stub, "// wit-bindgen's proxy.c links its component-type object through this symbol.\nvoid __component_type_object_force_link_proxy(void) {}\n").unwrap();
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve.push_dir(&wit).unwrap_or_else(|e| panic!("cannot parse the WIT at {}: {e:#}", wit.display()));
    let world = resolve.select_world(&[pkg], Some("proxy")).expect("the wasi:http WIT has a proxy world");

    sources(src_dir, "h"); // only to register the headers with rerun-if-changed
    for src in sources(src_dir, "c") {
        let name = stem(&src);
        let module = work.join(format!("{name}.core.wasm"));
        run(
            clang()
                .args(["--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-Wall", "-Werror", "-Wl,--strip-debug", "-I"])
                .arg(&bindings)
                .arg("-o")
                .arg(&module)
                .arg(&src)
                .arg(&bindings_obj)
                .arg(&stub),
            &format!("clang ({})", src.display()),
        );
        // The world's component type, the custom section wit-component reads.
        let mut bytes = std::fs::read(&module).unwrap();
        wit_component::embed_component_metadata(&mut bytes, &resolve, world, wit_component::StringEncoding::UTF8)
            .unwrap_or_else(|e| panic!("cannot embed the component type into {}: {e:#}", module.display()));
        std::fs::write(&module, bytes).unwrap();
        let component = out.join(format!("{name}.http.wasm"));
        componentize(&module, &adapter_bytes, &component);
        constant(consts, &format!("http_{name}"), &component);
    }
}

fn clang() -> Command {
    Command::new(std::env::var_os("CLANG").unwrap_or_else(|| "clang".into()))
}

fn run(cmd: &mut Command, what: &str) {
    let program = cmd.get_program().to_owned();
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run {} ({e})", Path::new(&program).display()));
    assert!(status.success(), "{what} failed: {} {:?}", Path::new(&program).display(), cmd.get_args().collect::<Vec<&OsStr>>());
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

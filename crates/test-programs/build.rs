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
//! The wasi:keyvalue@0.2.0-draft2 guests in `kv/` are built the same way against the worlds of
//! `kv/wit/world.wit` (the keyvalue WIT is the runtime's, `crates/runtime/wit/keyvalue-draft2`), with
//! bindings committed in `kv/bindings/` (also from `scripts/gen-http-bindings`): `kv.c` is a
//! wasi:http/proxy component that also imports keyvalue (reactor adapter), `kvcmd.c` a command
//! component importing keyvalue (command adapter).
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
    let reactor_adapter = reactor_adapter(&adapter);
    let wasi_wit = wasi_wit_dir(&adapter);
    build_http_guests(&manifest.join("http"), &wasi_wit, &reactor_adapter, &out, &mut consts);
    let keyvalue_wit = workspace.join("crates/runtime/wit/keyvalue-draft2");
    build_kv_guests(&manifest.join("kv"), &wasi_wit, &keyvalue_wit, &adapter_bytes, &reactor_adapter, &out, &mut consts);
    std::fs::write(out.join("artifacts.rs"), consts).unwrap();
}

/// The version of the WASI WIT (in the jco package) the wasi:http guests are built against.
const WASI_WIT_VERSION: &str = "0.2.12";

/// The jco reactor adapter's bytes (next to the command adapter unless `WASMCELL_WASI_REACTOR_ADAPTER`).
fn reactor_adapter(command_adapter: &Path) -> Vec<u8> {
    let reactor_adapter = match std::env::var_os("WASMCELL_WASI_REACTOR_ADAPTER") {
        Some(p) => PathBuf::from(p),
        None => command_adapter.with_file_name("wasi_snapshot_preview1.reactor.wasm"),
    };
    println!("cargo:rerun-if-changed={}", reactor_adapter.display());
    std::fs::read(&reactor_adapter).unwrap_or_else(|e| {
        panic!(
            "cannot read the WASI reactor adapter at {} ({e}); run scripts/test, which fetches it, or set WASMCELL_WASI_REACTOR_ADAPTER",
            reactor_adapter.display()
        )
    })
}

/// The directory of jco's WASI WIT packages (`wasi-http`, `wasi-cli`, ...), next to the command adapter.
fn wasi_wit_dir(command_adapter: &Path) -> PathBuf {
    let wit_src = command_adapter.with_file_name("wit").join("builtin").join(WASI_WIT_VERSION);
    assert!(
        wit_src.join("wasi-http").is_dir(),
        "no wasi:http WIT at {}; run scripts/test, which fetches the jco package that ships it",
        wit_src.display()
    );
    println!("cargo:rerun-if-changed={}", wit_src.display());
    wit_src
}

/// Copies the `.wit` files of `from` into `to` (created).
fn copy_wit(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in std::fs::read_dir(from).unwrap().map(|e| e.unwrap().path()) {
        if file.extension().is_some_and(|e| e == "wit") {
            std::fs::copy(&file, to.join(file.file_name().unwrap())).unwrap();
        }
    }
}

/// Copies every package directory of `wasi_wit` except `skip` into `deps`.
fn copy_wasi_deps(wasi_wit: &Path, deps: &Path, skip: Option<&str>) {
    for pkg in std::fs::read_dir(wasi_wit).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()) {
        let name = pkg.file_name().unwrap();
        if skip.is_some_and(|s| name == s) {
            continue;
        }
        copy_wit(&pkg, &deps.join(name));
    }
}

/// Compiles wit-bindgen's `<world>.c` (committed in `bindings`) to an object, plus the stub that
/// stands in for its `<world>_component_type.o`: this script embeds the component type itself.
/// Returns the two files to link into every guest of that world.
fn compile_bindings(bindings: &Path, world: &str, work: &Path) -> [PathBuf; 2] {
    println!("cargo:rerun-if-changed={}", bindings.display());
    let c_name = world.replace('-', "_");
    let obj = work.join(format!("{c_name}.o"));
    run(
        clang().args(["--target=wasm32-wasi", "-O2", "-c", "-o"]).arg(&obj).arg(bindings.join(format!("{c_name}.c"))),
        &format!("clang (wit-bindgen's {c_name}.c)"),
    );
    let stub = work.join(format!("{c_name}_component_type_stub.c"));
    std::fs::write(
        &stub,
        format!("// wit-bindgen's {c_name}.c links its component-type object through this symbol.\nvoid __component_type_object_force_link_{c_name}(void) {{}}\n"),
    )
    .unwrap();
    [obj, stub]
}

/// Embeds the component type of `world` (the custom section wit-component reads) into `module`.
fn embed_world(module: &Path, resolve: &wit_parser::Resolve, world: wit_parser::WorldId) {
    let mut bytes = std::fs::read(module).unwrap();
    wit_component::embed_component_metadata(&mut bytes, resolve, world, wit_component::StringEncoding::UTF8)
        .unwrap_or_else(|e| panic!("cannot embed the component type into {}: {e:#}", module.display()));
    std::fs::write(module, bytes).unwrap();
}

/// `http/NAME.c` -> `NAME.http.wasm`, a `wasi:http/proxy` component; constant `HTTP_<NAME>`.
fn build_http_guests(src_dir: &Path, wasi_wit: &Path, adapter_bytes: &[u8], out: &Path, consts: &mut String) {
    // wit-bindgen wants the main package's WIT at the top and the packages it uses in `deps/`.
    let work = out.join("http");
    let wit = work.join("wit");
    let _ = std::fs::remove_dir_all(&work);
    copy_wit(&wasi_wit.join("wasi-http"), &wit);
    copy_wasi_deps(wasi_wit, &wit.join("deps"), Some("wasi-http"));

    // The bindings are committed source; the component type they describe is embedded here,
    // from the same WIT, instead of wit-bindgen's `proxy_component_type.o`.
    let bindings = src_dir.join("bindings");
    let bindings_objs = compile_bindings(&bindings, "proxy", &work);
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve.push_dir(&wit).unwrap_or_else(|e| panic!("cannot parse the WIT at {}: {e:#}", wit.display()));
    let world = resolve.select_world(&[pkg], Some("proxy")).expect("the wasi:http WIT has a proxy world");

    sources(src_dir, "h"); // only to register the headers with rerun-if-changed
    for src in sources(src_dir, "c") {
        let name = stem(&src);
        let module = work.join(format!("{name}.core.wasm"));
        let component = out.join(format!("{name}.http.wasm"));
        let bindings = Bindings { dir: &bindings, objects: &bindings_objs, resolve: &resolve, world };
        bindgen_component(&src, &["-mexec-model=reactor"], &bindings, &module, adapter_bytes, &component);
        constant(consts, &format!("http_{name}"), &component);
    }
}

/// `kv/kv.c` -> `kv.http.wasm` (world `kv-proxy`, reactor adapter), constant `HTTP_KV`;
/// `kv/kvcmd.c` -> `kvcmd.component.wasm` (world `kv-command`, command adapter), constant
/// `KVCMD_COMPONENT`. Both import wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2.
fn build_kv_guests(
    src_dir: &Path,
    wasi_wit: &Path,
    keyvalue_wit: &Path,
    command_adapter: &[u8],
    reactor_adapter: &[u8],
    out: &Path,
    consts: &mut String,
) {
    let work = out.join("kv");
    let wit = work.join("wit");
    let _ = std::fs::remove_dir_all(&work);
    sources(&src_dir.join("wit"), "wit"); // only to register them with rerun-if-changed
    copy_wit(&src_dir.join("wit"), &wit);
    copy_wasi_deps(wasi_wit, &wit.join("deps"), None);
    assert!(keyvalue_wit.is_dir(), "no wasi:keyvalue WIT at {}", keyvalue_wit.display());
    sources(keyvalue_wit, "wit");
    copy_wit(keyvalue_wit, &wit.join("deps").join("wasi-keyvalue"));
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve.push_dir(&wit).unwrap_or_else(|e| panic!("cannot parse the WIT at {}: {e:#}", wit.display()));

    let bindings = src_dir.join("bindings");
    sources(&bindings, "h");
    sources(src_dir, "c"); // kv.c also includes http/common.h, registered by build_http_guests
    // (source stem, world, extra clang flags, adapter, component file, constant)
    type Guest<'a> = (&'a str, &'a str, &'a [&'a str], &'a [u8], &'a str, &'a str);
    let guests: [Guest; 2] = [
        ("kv", "kv-proxy", &["-mexec-model=reactor"], reactor_adapter, "kv.http.wasm", "http_kv"),
        ("kvcmd", "kv-command", &[], command_adapter, "kvcmd.component.wasm", "kvcmd_component"),
    ];
    for (name, world_name, flags, adapter, file, const_name) in guests {
        let world = resolve.select_world(&[pkg], Some(world_name)).unwrap_or_else(|e| panic!("no world {world_name}: {e:#}"));
        let bindings_objs = compile_bindings(&bindings, world_name, &work);
        let module = work.join(format!("{name}.core.wasm"));
        let src = src_dir.join(format!("{name}.c"));
        let component = out.join(file);
        let b = Bindings { dir: &bindings, objects: &bindings_objs, resolve: &resolve, world };
        bindgen_component(&src, flags, &b, &module, adapter, &component);
        constant(consts, const_name, &component);
    }
}

/// wit-bindgen's C bindings of one world: their headers, compiled objects, and the world they describe.
struct Bindings<'a> {
    dir: &'a Path,
    objects: &'a [PathBuf],
    resolve: &'a wit_parser::Resolve,
    world: wit_parser::WorldId,
}

/// `src` (C against `bindings`) compiled with `flags` into `module`, its world embedded, and wrapped with
/// `adapter` into the component `component`.
fn bindgen_component(src: &Path, flags: &[&str], bindings: &Bindings<'_>, module: &Path, adapter: &[u8], component: &Path) {
    run(
        clang()
            .args(["--target=wasm32-wasi", "-O2", "-Wall", "-Werror", "-Wl,--strip-debug"])
            .args(flags)
            .arg("-I")
            .arg(bindings.dir)
            .arg("-o")
            .arg(module)
            .arg(src)
            .args(bindings.objects),
        &format!("clang ({})", src.display()),
    );
    embed_world(module, bindings.resolve, bindings.world);
    componentize(module, adapter, component);
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
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == ext)).collect();
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

//! The `wasmcell` binary: the only crate that knows clap. One file per subcommand under `commands/`;
//! each parses its flags, translates them into runtime types, and calls `wasmcell-runtime`.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// mimalloc: fewer cycles per request than glibc malloc for serve's many short-lived allocations (bench/serve).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

wasmcell_runtime::disable_transparent_huge_pages_before_main!();

mod commands;
mod images;

use wasmcell_exit as exit;

#[derive(Parser)]
#[command(
    name = "wasmcell",
    version,
    about = "Run WebAssembly workloads the way containers run: deny-by-default sandboxes, limits, cached compiled code",
    after_help = exit::TABLE,
    after_long_help = concat!(
        "Environment:\n  WASMCELL_HOME  where state lives (default /var/lib/wasmcell for root, else ~/.local/share/wasmcell)\n",
        "  WASMCELL_LOG   log filter for stderr, e.g. debug or wasmcell=debug\n",
        "  WASMCELL_PASSWORD  the password of a private signing key (key generate, sign, push --sign)\n\n",
    ),
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(commands::run::RunCommand),
    Serve(commands::serve::ServeCommand),
    Compile(commands::compile::CompileCommand),
    Inspect(commands::inspect::InspectCommand),
    Cache(commands::cache::CacheCommand),
    Pull(commands::pull::PullCommand),
    Push(commands::push::PushCommand),
    Images(commands::images::ImagesCommand),
    Rmi(commands::rmi::RmiCommand),
    Tag(commands::tag::TagCommand),
    Login(commands::login::LoginCommand),
    Logout(commands::login::LogoutCommand),
    Save(commands::save::SaveCommand),
    Load(commands::load::LoadCommand),
    Prune(commands::prune::PruneCommand),
    System(commands::system::SystemCommand),
    Kv(commands::kv::KvCommand),
    Key(commands::key::KeyCommand),
    Sign(commands::sign::SignCommand),
    Verify(commands::sign::VerifyCommand),
}

fn main() -> ExitCode {
    wasmcell_runtime::disable_transparent_huge_pages();
    init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let result = match cli.command {
        Command::Run(c) => c.execute(),
        Command::Serve(c) => c.execute().map(|()| ExitCode::SUCCESS),
        Command::Compile(c) => c.execute().map(|()| ExitCode::SUCCESS),
        Command::Inspect(c) => c.execute().map(|()| ExitCode::SUCCESS),
        Command::Cache(c) => c.execute().map(|()| ExitCode::SUCCESS),
        Command::Pull(c) => c.execute().map(|()| ExitCode::SUCCESS),
        Command::Push(c) => c.execute().map(|()| ExitCode::SUCCESS),
        Command::Images(c) => c.execute().map(|()| ExitCode::SUCCESS),
        Command::Rmi(c) => c.execute().map(|()| ExitCode::SUCCESS),
        Command::Tag(c) => c.execute().map(|()| ExitCode::SUCCESS),
        Command::Login(c) => c.execute().map(|()| ExitCode::SUCCESS),
        Command::Logout(c) => c.execute().map(|()| ExitCode::SUCCESS),
        Command::Save(c) => c.execute().map(|()| ExitCode::SUCCESS),
        Command::Load(c) => c.execute().map(|()| ExitCode::SUCCESS),
        Command::Prune(c) => c.execute().map(|()| ExitCode::SUCCESS),
        Command::System(c) => c.execute(),
        Command::Kv(c) => c.execute().map(|()| ExitCode::SUCCESS),
        Command::Key(c) => c.execute().map(|()| ExitCode::SUCCESS),
        Command::Sign(c) => c.execute().map(|()| ExitCode::SUCCESS),
        Command::Verify(c) => c.execute().map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err);
            ExitCode::from(exit::for_error(&err))
        }
    }
}

/// Prints the error chain on one line; a trap adds its wasm backtrace below.
fn report(err: &anyhow::Error) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "wasmcell: {err:#}");
    if let Some(wasmcell_runtime::Error::Trap { backtrace, .. }) = err.downcast_ref()
        && !backtrace.is_empty()
    {
        let _ = writeln!(stderr, "wasm backtrace:");
        for (i, frame) in backtrace.iter().enumerate().take(20) {
            let _ = writeln!(stderr, "  {i:>2}: {frame}");
        }
    }
}

/// clap's errors become one line and exit 125; `--help` and `--version` print and exit 0.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(exit::WASMCELL_ERROR)
        } else {
            ExitCode::SUCCESS
        };
    }
    // clap's message runs until the first blank line (then comes usage); fold it onto one line.
    let rendered = e.render().to_string();
    let message: Vec<&str> = rendered.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
    let message = message.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    eprintln!("wasmcell: {message} (see `wasmcell --help`)");
    ExitCode::from(exit::WASMCELL_ERROR)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Logging costs start-up time, so it is only set up when asked for.
fn init_logging() {
    let Some(filter) = std::env::var_os("WASMCELL_LOG") else { return };
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter.to_string_lossy()).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log written to a file or a pipe is plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).with_ansi(ansi).init();
}

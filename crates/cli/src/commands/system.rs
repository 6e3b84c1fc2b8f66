//! `wasmcell system check`: re-verify every blob in the store.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::Format;
use crate::images;

/// Look after the local store.
#[derive(Args, Debug)]
pub struct SystemCommand {
    #[command(subcommand)]
    command: SystemSub,
}

#[derive(Subcommand, Debug)]
enum SystemSub {
    /// Re-hash every blob and check that every image's content is present. Exits 1 if damage
    /// is found; with --repair, damaged blobs are removed so that a pull fetches them again.
    Check {
        #[arg(long)]
        repair: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

impl SystemCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let SystemSub::Check { repair, format } = self.command;
        let report = images::store()?.check(repair)?;
        let mut out = std::io::stdout().lock();
        match format {
            Format::Json => {
                serde_json::to_writer(&mut out, &report)?;
                writeln!(out)?;
            }
            Format::Text => {
                writeln!(out, "checked {} blobs ({})", report.blobs, super::images::human(report.bytes))?;
                for d in &report.corrupt {
                    writeln!(out, "corrupt: {d}{}", if repair { " (removed)" } else { "" })?;
                }
                for (name, d) in &report.missing {
                    writeln!(out, "missing: {d} (needed by {name})")?;
                }
                for p in &report.stray {
                    writeln!(out, "stray file: {}", p.display())?;
                }
            }
        }
        Ok(if report.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(wasmcell_exit::CHECK_FAILED) })
    }
}

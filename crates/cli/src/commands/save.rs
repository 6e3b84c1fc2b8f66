//! `wasmcell save`: write images as an OCI image-layout tar (what `ctr images import` takes).

use std::io::{IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use wasmcell_oci::{Error, Reference};

use crate::images;

/// Save IMAGEs to an OCI image-layout tar, each named by its full reference
/// (io.containerd.image.name), so `ctr images import` and `wasmcell load` restore the names. An image's
/// signatures (kept by a pull under a signature policy) go along as its `sha256-<hex>.sig` tag.
#[derive(Args, Debug)]
pub struct SaveCommand {
    /// Write to FILE (atomically) instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<String>,
}

impl SaveCommand {
    pub fn execute(self) -> Result<()> {
        let store = images::store()?;
        let mut list = Vec::new();
        for image in &self.images {
            let reference: Reference = images::parse_ref(image)?;
            let record = store.get_name(&reference.to_string())?.ok_or_else(|| Error::ImageNotFound(reference.to_string()))?;
            // The signatures kept beside it travel with it, so a node without the registry can verify.
            let signatures = wasmcell_oci::trust::signature_name(&reference, &record.target.digest)?;
            if let Some(sig) = store.get_name(&signatures)? {
                list.push((images::parse_ref(&signatures)?, sig));
            }
            list.push((reference, record));
        }
        match &self.output {
            Some(path) => {
                // Written beside the target and renamed into place: never a half-written archive.
                let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                let mut tmp = tempfile::Builder::new()
                    .prefix(".wasmcell-save-")
                    .tempfile_in(dir)
                    .with_context(|| format!("failed to create a file in {}", dir.display()))?;
                {
                    let mut w = std::io::BufWriter::new(tmp.as_file_mut());
                    wasmcell_oci::layout::save(&store, &list, &mut w)?;
                    w.flush().with_context(|| format!("failed to write {}", path.display()))?;
                }
                tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
                tmp.as_file().sync_all().with_context(|| format!("failed to write {}", path.display()))?;
                tmp.persist(path).map_err(|e| e.error).with_context(|| format!("failed to write {}", path.display()))?;
            }
            None => {
                if std::io::stdout().is_terminal() {
                    return Err(
                        wasmcell_runtime::Error::Config("refusing to write a tar to a terminal; use -o FILE or redirect".into()).into()
                    );
                }
                let mut out = std::io::stdout().lock();
                wasmcell_oci::layout::save(&store, &list, &mut out)?;
                out.flush()?;
            }
        }
        Ok(())
    }
}

//! `wasmcell kv`: look inside an application's key-value stores from the host (list, get, set,
//! delete), through the same backends the guests use.
//!
//! The embedded database admits one process at a time: while `wasmcell serve` has an
//! application's stores open, `wasmcell kv` on them says so (a store backed by Redis can be read
//! and written alongside). Memory stores live only inside the process that serves them.

use std::io::{Read, Write};

use anyhow::Result;
use clap::{Args, Subcommand};
use wasmcell_runtime::Error;
use wasmcell_runtime::home::Home;
use wasmcell_runtime::kv::{self, KvError};
use wasmcell_runtime::policy::{self, KvBackend, KvGrant};

use super::Format;
use super::sandbox::config;

/// Look inside an application's key-value stores.
#[derive(Args, Debug)]
pub struct KvCommand {
    #[command(subcommand)]
    op: Op,
}

#[derive(Subcommand, Debug)]
enum Op {
    /// List a store's keys, one per line.
    List(Which),
    /// Print a key's value (exit 127 when absent).
    Get {
        #[command(flatten)]
        which: Which,
        key: String,
    },
    /// Set a key to VALUE, or to standard input when VALUE is omitted.
    Set {
        #[command(flatten)]
        which: Which,
        key: String,
        value: Option<String>,
    },
    /// Delete a key.
    Delete {
        #[command(flatten)]
        which: Which,
        key: String,
    },
}

#[derive(Args, Debug)]
struct Which {
    /// The store, as granted to the application: NAME (embedded) or NAME=redis://…
    #[arg(long, value_name = "NAME[=BACKEND]")]
    store: String,

    /// The application the store belongs to (see `run --app`).
    #[arg(long, value_name = "NAME")]
    app: String,

    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

impl Which {
    fn open(&self) -> Result<(kv::Store, KvGrant)> {
        policy::check_name("application", &self.app).map_err(config)?;
        let grant = self.store.parse::<KvGrant>().map_err(config)?;
        if grant.backend == KvBackend::Memory {
            return Err(Error::Config("a memory store lives only inside the wasmcell process that serves it".into()).into());
        }
        let store = kv::open(&Home::from_env(), &self.app, &grant).map_err(|e| failed(&grant, e))?;
        Ok((store, grant))
    }
}

fn failed(grant: &KvGrant, e: KvError) -> anyhow::Error {
    Error::Config(format!("key-value store `{}`: {e}", grant.name)).into()
}

impl KvCommand {
    pub fn execute(self) -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(self.op.run())
    }
}

impl Op {
    async fn run(self) -> Result<()> {
        let mut out = std::io::stdout().lock();
        match self {
            Op::List(which) => {
                let (store, grant) = which.open()?;
                let keys = kv::all_keys(&store).await.map_err(|e| failed(&grant, e))?;
                match which.format {
                    Format::Json => writeln!(out, "{}", serde_json::json!({ "keys": keys }))?,
                    Format::Text => {
                        for k in keys {
                            writeln!(out, "{k}")?;
                        }
                    }
                }
            }
            Op::Get { which, key } => {
                let (store, grant) = which.open()?;
                let Some(value) = store.get(&key).await.map_err(|e| failed(&grant, e))? else {
                    return Err(Error::Absent(format!("key `{key}` in store `{}` of application `{}`", grant.name, which.app)).into());
                };
                match which.format {
                    Format::Json => {
                        let v = match std::str::from_utf8(&value) {
                            Ok(s) => serde_json::json!({ "key": key, "value": s }),
                            Err(_) => serde_json::json!({ "key": key, "value_hex": hex::encode(&value) }),
                        };
                        writeln!(out, "{v}")?;
                    }
                    Format::Text => out.write_all(&value)?,
                }
            }
            Op::Set { which, key, value } => {
                let (store, grant) = which.open()?;
                let value = match value {
                    Some(v) => v.into_bytes(),
                    None => {
                        let mut v = Vec::new();
                        std::io::stdin().take(kv::MAX_VALUE_BYTES as u64 + 1).read_to_end(&mut v)?;
                        v
                    }
                };
                store.set(&key, value).await.map_err(|e| failed(&grant, e))?;
            }
            Op::Delete { which, key } => {
                let (store, grant) = which.open()?;
                store.delete(&key).await.map_err(|e| failed(&grant, e))?;
            }
        }
        Ok(())
    }
}

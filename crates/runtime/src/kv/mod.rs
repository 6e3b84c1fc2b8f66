//! The key-value capability: wasi:keyvalue for guests, with the backend chosen by the host.
//!
//! A guest asks for a store by name (`store.open("default")`); the policy's grants
//! ([`crate::policy::KvGrant`]) say whether it may have it and what backs it: the embedded
//! database (redb, one file per application under `WASMCELL_HOME/kv/`, crash-safe), Redis
//! (`redis://…`, keys under `wasmcell:APP:STORE:`), or memory (gone when the process exits). A store
//! that was not granted answers `access-denied`. The same component runs unchanged on all three.
//!
//! - [`Store`] is one granted store: limits checked once here, then the backend.
//! - [`Stores`] opens the store a grant names once and shares it with every instance; a front end
//!   makes one and hands it in (no process-wide state).
//! - `host` binds the WIT (0.2.0-draft2, what Spin links, and 0.2.0-draft, what
//!   wasmtime-wasi-keyvalue's guests use) to [`Store`]: [`KvCtx`], [`KvView`], [`add_to_linker`].
//!
//! Architecture Invariant: increment and compare-and-swap are decided inside the backend (one
//! write transaction, one Lua script, one lock), never read-modify-write across calls.

mod embedded;
mod host;
mod memory;
mod redis;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use host::{KvCtx, KvView, add_to_linker};
pub use redis::redact;

use crate::home::Home;
use crate::policy::{KvBackend, KvGrant};

/// Longest key a guest may use, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;
/// Largest value a guest may store, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Most keys one `list-keys` page or one batch call may carry.
pub const MAX_BATCH: usize = 1000;

/// What a store operation can fail with; the guest sees the same three cases.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("no such store")]
    NoSuchStore,
    #[error("access denied")]
    AccessDenied,
    #[error("{0}")]
    Other(String),
}

pub(crate) fn other(e: impl std::fmt::Display) -> KvError {
    KvError::Other(e.to_string())
}

/// One page of keys and where the next one starts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    pub cursor: Option<String>,
}

#[derive(Clone)]
enum Backend {
    Embedded(embedded::Store),
    Memory(Arc<memory::Store>),
    Redis(redis::Store),
}

/// A granted, opened store. Cheap to clone; every instance of the application shares it.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::Other(format!("key of {} bytes is over the limit of {MAX_KEY_BYTES} bytes", key.len())));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvError::Other(format!("value of {} bytes is over the limit of {MAX_VALUE_BYTES} bytes", value.len())));
    }
    Ok(())
}

fn check_batch(n: usize) -> Result<(), KvError> {
    if n > MAX_BATCH {
        return Err(KvError::Other(format!("batch of {n} keys is over the limit of {MAX_BATCH}")));
    }
    Ok(())
}

/// Reads a counter: absent is 0, otherwise ASCII decimal (what Redis's INCRBY keeps, so a value
/// written by one backend reads the same on another).
pub(crate) fn parse_counter(value: Option<&[u8]>) -> Result<i64, KvError> {
    match value {
        None => Ok(0),
        Some(v) => {
            std::str::from_utf8(v).ok().and_then(|s| s.parse::<i64>().ok()).ok_or_else(|| KvError::Other("value is not an integer".into()))
        }
    }
}

pub(crate) fn add_counter(current: i64, delta: i64) -> Result<i64, KvError> {
    current.checked_add(delta).ok_or_else(|| KvError::Other("increment would overflow".into()))
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match &$self.backend {
            Backend::Embedded($s) => $e,
            Backend::Memory($s) => $e,
            Backend::Redis($s) => $e,
        }
    };
}

impl Store {
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        dispatch!(self, s => s.get(key).await)
    }

    pub async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        check_key(key)?;
        check_value(&value)?;
        dispatch!(self, s => s.set(key, value).await)
    }

    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        check_key(key)?;
        dispatch!(self, s => s.delete(key).await)
    }

    pub async fn exists(&self, key: &str) -> Result<bool, KvError> {
        check_key(key)?;
        dispatch!(self, s => s.exists(key).await)
    }

    /// Keys in pages of at most [`MAX_BATCH`]; `cursor` is the previous page's.
    pub async fn list(&self, cursor: Option<&str>) -> Result<KeyPage, KvError> {
        dispatch!(self, s => s.list(cursor, MAX_BATCH).await)
    }

    /// Adds `delta` to the decimal counter at `key` (absent: 0) atomically; returns the new value.
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        check_key(key)?;
        dispatch!(self, s => s.increment(key, delta).await)
    }

    /// Sets `key` to `value` only if it still holds `expected` (None: absent); tells whether it did.
    pub async fn swap(&self, key: &str, expected: Option<&[u8]>, value: Vec<u8>) -> Result<bool, KvError> {
        check_key(key)?;
        check_value(&value)?;
        dispatch!(self, s => s.swap(key, expected, value).await)
    }

    pub async fn get_many(&self, keys: Vec<String>) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        check_batch(keys.len())?;
        keys.iter().try_for_each(|k| check_key(k))?;
        dispatch!(self, s => s.get_many(keys).await)
    }

    pub async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        check_batch(entries.len())?;
        entries.iter().try_for_each(|(k, v)| check_key(k).and_then(|()| check_value(v)))?;
        dispatch!(self, s => s.set_many(entries).await)
    }

    pub async fn delete_many(&self, keys: Vec<String>) -> Result<(), KvError> {
        check_batch(keys.len())?;
        keys.iter().try_for_each(|k| check_key(k))?;
        dispatch!(self, s => s.delete_many(keys).await)
    }
}

/// Opens the stores a process's guests are granted, each once, and hands out the opened store to every
/// instance of the application: the embedded database admits one opener per file, so two containers of a
/// pod (or every request of a server) share one handle. A front end makes one and hands it in
/// ([`crate::grants::Grants::new`]); nothing here is process-wide.
#[derive(Clone)]
pub struct Stores {
    home: Home,
    opened: Arc<Mutex<HashMap<(String, KvGrant), Store>>>,
}

impl Stores {
    /// Opens nothing yet; embedded databases will live under `home`'s `kv/`.
    pub fn new(home: Home) -> Stores {
        Stores { home, opened: Arc::default() }
    }

    /// The store `grant` names for application `app` (see [`crate::policy::SandboxPolicy::app`]),
    /// opened now or the one already open.
    pub fn open(&self, app: &str, grant: &KvGrant) -> Result<Store, KvError> {
        let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        let id = (app.to_string(), grant.clone());
        if let Some(s) = opened.get(&id) {
            return Ok(s.clone());
        }
        let store = open(&self.home, app, grant)?;
        opened.insert(id, store.clone());
        Ok(store)
    }
}

/// Opens the store a grant names for application `app`, for one user of it (`wasmcell kv`); guests get
/// theirs through [`Stores`]. The embedded database lives at `home`'s `kv/APP.redb`.
pub fn open(home: &Home, app: &str, grant: &KvGrant) -> Result<Store, KvError> {
    let backend = match &grant.backend {
        KvBackend::Embedded => Backend::Embedded(embedded::Store::open(&home.kv_dir(), app, &grant.name)?),
        KvBackend::Memory => Backend::Memory(Arc::new(memory::Store::default())),
        KvBackend::Redis { url } => Backend::Redis(redis::Store::open(url, app, &grant.name)?),
    };
    Ok(Store { backend })
}

/// Lists the keys of a store from outside a guest (`wasmcell kv`), all pages.
pub async fn all_keys(store: &Store) -> Result<Vec<String>, KvError> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list(cursor.as_deref()).await?;
        keys.extend(page.keys);
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(keys),
        }
    }
}

//! The embedded backend: redb, one database file per application (`kv/APP.redb` under the home),
//! one table per store.
//!
//! Writes go to one writer thread per file, which applies whatever is queued in one write
//! transaction and commits it (fsync) before answering anyone: a write is acknowledged only once
//! it is durable, so it survives a kill -9 of the host, and concurrent writers share the cost of
//! the fsync (group commit). Increment and swap are decided inside that transaction, so they are
//! exact under any concurrency. Reads use their own read transactions and never wait for writes.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};

use super::{KeyPage, KvError, add_counter, other, parse_counter};

/// Jobs the writer takes into one transaction at most.
const MAX_GROUP: usize = 512;

#[derive(Clone)]
pub(super) struct Store {
    db: Arc<Db>,
    table: Arc<str>,
}

struct Db {
    database: Arc<Database>,
    jobs: mpsc::Sender<Job>,
    writer: Option<std::thread::JoinHandle<()>>,
}

enum Write {
    Set(String, Vec<u8>),
    Delete(String),
    Increment(String, i64),
    Swap(String, Option<Vec<u8>>, Vec<u8>),
    SetMany(Vec<(String, Vec<u8>)>),
    DeleteMany(Vec<String>),
}

enum Done {
    Unit,
    Int(i64),
    Bool(bool),
}

struct Job {
    table: Arc<str>,
    write: Write,
    reply: tokio::sync::oneshot::Sender<Result<Done, KvError>>,
}

/// The database files open in this process. Not a grant (those are `kv::Stores`, handed in): redb admits
/// one opener of a file per process, and an application's stores are tables of one file, so every store
/// of `kv/APP.redb` — from `Stores` or from `wasmcell kv` — shares the one handle.
static DATABASES: Mutex<Option<HashMap<PathBuf, Arc<Db>>>> = Mutex::new(None);

fn definition(table: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(table)
}

impl Store {
    pub(super) fn open(dir: &Path, app: &str, name: &str) -> Result<Store, KvError> {
        let path = dir.join(format!("{app}.redb"));
        let mut dbs = DATABASES.lock().unwrap_or_else(|e| e.into_inner());
        let dbs = dbs.get_or_insert_with(HashMap::new);
        let db = match dbs.get(&path) {
            Some(db) => db.clone(),
            None => {
                let db = Arc::new(Db::open(&path)?);
                dbs.insert(path, db.clone());
                db
            }
        };
        Ok(Store { db, table: format!("store:{name}").into() })
    }

    /// Forgets the open database of `app` in `dir`: it closes once the last of its stores is dropped,
    /// and the next [`Store::open`] opens the file anew (a restart, for the tests of durability).
    #[cfg(test)]
    pub(super) fn forget(dir: &Path, app: &str) {
        let mut dbs = DATABASES.lock().unwrap_or_else(|e| e.into_inner());
        dbs.get_or_insert_with(HashMap::new).remove(&dir.join(format!("{app}.redb")));
    }

    async fn write(&self, write: Write) -> Result<Done, KvError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.db
            .jobs
            .send(Job { table: self.table.clone(), write, reply })
            .map_err(|_| KvError::Other("the embedded store's writer has stopped".into()))?;
        answer.await.map_err(|_| KvError::Other("the embedded store's writer has stopped".into()))?
    }

    /// Runs `f` on the store's table in a read transaction; a table never written reads as empty.
    fn read<R>(
        &self,
        empty: R,
        f: impl FnOnce(&redb::ReadOnlyTable<&'static str, &'static [u8]>) -> Result<R, redb::StorageError>,
    ) -> Result<R, KvError> {
        let txn = self.db.database.begin_read().map_err(other)?;
        match txn.open_table(definition(&self.table)) {
            Ok(t) => f(&t).map_err(other),
            Err(TableError::TableDoesNotExist(_)) => Ok(empty),
            Err(e) => Err(other(e)),
        }
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.read(None, |t| Ok(t.get(key)?.map(|v| v.value().to_vec())))
    }

    pub(super) async fn exists(&self, key: &str) -> Result<bool, KvError> {
        self.read(false, |t| Ok(t.get(key)?.is_some()))
    }

    pub(super) async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<KeyPage, KvError> {
        let keys = self.read(Vec::new(), |t| {
            let start = match cursor {
                Some(c) => Bound::Excluded(c),
                None => Bound::Unbounded,
            };
            let mut keys = Vec::new();
            for entry in t.range::<&str>((start, Bound::Unbounded))?.take(limit + 1) {
                keys.push(entry?.0.value().to_string());
            }
            Ok(keys)
        })?;
        Ok(super::memory::page(keys, limit))
    }

    pub(super) async fn get_many(&self, keys: Vec<String>) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        let none: Vec<(String, Option<Vec<u8>>)> = keys.iter().map(|k| (k.clone(), None)).collect();
        self.read(none, |t| {
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                let v = t.get(k.as_str())?.map(|v| v.value().to_vec());
                out.push((k, v));
            }
            Ok(out)
        })
    }

    pub(super) async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        self.write(Write::Set(key.to_string(), value)).await.map(|_| ())
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.write(Write::Delete(key.to_string())).await.map(|_| ())
    }

    pub(super) async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        match self.write(Write::Increment(key.to_string(), delta)).await? {
            Done::Int(n) => Ok(n),
            _ => Err(KvError::Other("unexpected answer from the writer".into())),
        }
    }

    pub(super) async fn swap(&self, key: &str, expected: Option<&[u8]>, value: Vec<u8>) -> Result<bool, KvError> {
        match self.write(Write::Swap(key.to_string(), expected.map(<[u8]>::to_vec), value)).await? {
            Done::Bool(b) => Ok(b),
            _ => Err(KvError::Other("unexpected answer from the writer".into())),
        }
    }

    pub(super) async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        self.write(Write::SetMany(entries)).await.map(|_| ())
    }

    pub(super) async fn delete_many(&self, keys: Vec<String>) -> Result<(), KvError> {
        self.write(Write::DeleteMany(keys)).await.map(|_| ())
    }
}

impl Db {
    fn open(path: &Path) -> Result<Db, KvError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| KvError::Other(format!("cannot create {}: {e}", dir.display())))?;
        let database = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => KvError::Other(format!("{} is in use by another wasmcell process", path.display())),
            e => KvError::Other(format!("cannot open {}: {e}", path.display())),
        })?;
        let database = Arc::new(database);
        let (jobs, queue) = mpsc::channel();
        let writer = database.clone();
        let writer = std::thread::Builder::new()
            .name("wasmcell-kv-writer".into())
            .spawn(move || write_loop(&writer, &queue))
            .map_err(|e| KvError::Other(format!("cannot start the key-value writer: {e}")))?;
        Ok(Db { database, jobs, writer: Some(writer) })
    }
}

/// A database is open for the rest of the process (`DATABASES` keeps it), except in tests: there, its
/// writer finishes what is queued and ends, then the file closes.
impl Drop for Db {
    fn drop(&mut self) {
        drop(std::mem::replace(&mut self.jobs, mpsc::channel().0));
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Takes what is queued (up to [`MAX_GROUP`]), applies it in one transaction, commits, answers.
fn write_loop(db: &Database, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let results = apply(db, &jobs);
        for (job, result) in jobs.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

fn apply(db: &Database, jobs: &[Job]) -> Vec<Result<Done, KvError>> {
    let all = |e: KvError| jobs.iter().map(|_| Err(e.clone())).collect();
    let txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => return all(other(e)),
    };
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        let result = txn.open_table(definition(&job.table)).map_err(other).and_then(|mut t| apply_one(&mut t, &job.write));
        results.push(result);
    }
    match txn.commit() {
        Ok(()) => results,
        Err(e) => all(KvError::Other(format!("commit failed: {e}"))),
    }
}

fn apply_one(t: &mut redb::Table<'_, &'static str, &'static [u8]>, write: &Write) -> Result<Done, KvError> {
    match write {
        Write::Set(k, v) => {
            t.insert(k.as_str(), v.as_slice()).map_err(other)?;
            Ok(Done::Unit)
        }
        Write::Delete(k) => {
            t.remove(k.as_str()).map_err(other)?;
            Ok(Done::Unit)
        }
        Write::Increment(k, delta) => {
            let current = t.get(k.as_str()).map_err(other)?.map(|v| v.value().to_vec());
            let n = add_counter(parse_counter(current.as_deref())?, *delta)?;
            t.insert(k.as_str(), n.to_string().as_bytes()).map_err(other)?;
            Ok(Done::Int(n))
        }
        Write::Swap(k, expected, v) => {
            let current = t.get(k.as_str()).map_err(other)?.map(|v| v.value().to_vec());
            if current != *expected {
                return Ok(Done::Bool(false));
            }
            t.insert(k.as_str(), v.as_slice()).map_err(other)?;
            Ok(Done::Bool(true))
        }
        Write::SetMany(entries) => {
            for (k, v) in entries {
                t.insert(k.as_str(), v.as_slice()).map_err(other)?;
            }
            Ok(Done::Unit)
        }
        Write::DeleteMany(keys) => {
            for k in keys {
                t.remove(k.as_str()).map_err(other)?;
            }
            Ok(Done::Unit)
        }
    }
}

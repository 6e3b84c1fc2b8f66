//! The in-memory backend: a sorted map behind a lock, shared by the process's instances and gone
//! when it exits. Every operation, increment and swap included, holds the lock once.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use super::{KeyPage, KvError, add_counter, parse_counter};

#[derive(Default)]
pub(super) struct Store {
    map: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl Store {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.map().get(key).cloned())
    }

    pub(super) async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        self.map().insert(key.to_string(), value);
        Ok(())
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.map().remove(key);
        Ok(())
    }

    pub(super) async fn exists(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.map().contains_key(key))
    }

    pub(super) async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<KeyPage, KvError> {
        let map = self.map();
        let start = match cursor {
            Some(c) => Bound::Excluded(c),
            None => Bound::Unbounded,
        };
        let keys: Vec<String> = map.range::<str, _>((start, Bound::Unbounded)).take(limit + 1).map(|(k, _)| k.clone()).collect();
        Ok(page(keys, limit))
    }

    pub(super) async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let mut map = self.map();
        let n = add_counter(parse_counter(map.get(key).map(Vec::as_slice))?, delta)?;
        map.insert(key.to_string(), n.to_string().into_bytes());
        Ok(n)
    }

    pub(super) async fn swap(&self, key: &str, expected: Option<&[u8]>, value: Vec<u8>) -> Result<bool, KvError> {
        let mut map = self.map();
        if map.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        map.insert(key.to_string(), value);
        Ok(true)
    }

    pub(super) async fn get_many(&self, keys: Vec<String>) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        let map = self.map();
        Ok(keys
            .into_iter()
            .map(|k| {
                let v = map.get(&k).cloned();
                (k, v)
            })
            .collect())
    }

    pub(super) async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        self.map().extend(entries);
        Ok(())
    }

    pub(super) async fn delete_many(&self, keys: Vec<String>) -> Result<(), KvError> {
        let mut map = self.map();
        for k in keys {
            map.remove(&k);
        }
        Ok(())
    }
}

/// Cuts `keys` (up to `limit + 1` of them, in order) to one page: the last key of a full page is
/// the cursor of the next.
pub(super) fn page(mut keys: Vec<String>, limit: usize) -> KeyPage {
    let cursor = if keys.len() > limit {
        keys.truncate(limit);
        keys.last().cloned()
    } else {
        None
    };
    KeyPage { keys, cursor }
}

//! The Redis backend: a `redis::aio::ConnectionManager` (one multiplexed connection, reconnected in
//! the background) per store, keys under `wasmcell:APP:STORE:`.
//!
//! The manager lives on a runtime thread of its own, so it outlives any one instance's or serving
//! thread's runtime. Calls time out after [`TIMEOUT`]: with Redis down the guest gets an error at
//! once instead of hanging, and the manager reconnects by itself when Redis is back. Increment is
//! INCRBY; swap is one Lua script (compare, then set), atomic inside Redis.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{KeyPage, KvError};

/// How long one Redis call (or connecting) may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Compare-and-set: ARGV[1] is "1" when a value is expected (ARGV[2]), "0" when absence is.
const SWAP: &str = r"
local v = redis.call('GET', KEYS[1])
if (ARGV[1] == '0' and v == false) or (ARGV[1] == '1' and v == ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[3])
  return 1
end
return 0
";

#[derive(Clone)]
pub(super) struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    prefix: String,
    swap: redis::Script,
}

/// The runtime Redis connections live on.
fn runtime() -> Result<tokio::runtime::Handle, KvError> {
    static HANDLE: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| KvError::Other(format!("cannot start the Redis runtime: {e}")))?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("wasmcell-redis".into())
        .spawn(move || rt.block_on(std::future::pending::<()>()))
        .map_err(|e| KvError::Other(format!("cannot start the Redis runtime: {e}")))?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

fn err(e: redis::RedisError) -> KvError {
    KvError::Other(format!("redis: {e}"))
}

fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Store {
    pub(super) fn open(url: &str, app: &str, name: &str) -> Result<Store, KvError> {
        let client = redis::Client::open(url).map_err(|e| KvError::Other(format!("bad Redis URL {}: {e}", redact(url))))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let handle = runtime()?;
        let _entered = handle.enter();
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(err)?;
        Ok(Store { inner: Arc::new(Inner { conn, prefix: format!("wasmcell:{app}:{name}:"), swap: redis::Script::new(SWAP) }) })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.conn().get(self.key(key)).await.map_err(err)
    }

    pub(super) async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        self.conn().set(self.key(key), value).await.map_err(err)
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.conn().del(self.key(key)).await.map_err(err)
    }

    pub(super) async fn exists(&self, key: &str) -> Result<bool, KvError> {
        self.conn().exists(self.key(key)).await.map_err(err)
    }

    pub(super) async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<KeyPage, KvError> {
        let cursor = cursor.unwrap_or("0");
        let pattern = format!("{}*", escape_glob(&self.inner.prefix));
        let (next, keys): (String, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.conn())
            .await
            .map_err(err)?;
        let mut keys: Vec<String> = keys.into_iter().filter_map(|k| k.strip_prefix(&self.inner.prefix).map(str::to_string)).collect();
        keys.sort();
        Ok(KeyPage { keys, cursor: (next != "0").then_some(next) })
    }

    pub(super) async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.conn().incr(self.key(key), delta).await.map_err(err)
    }

    pub(super) async fn swap(&self, key: &str, expected: Option<&[u8]>, value: Vec<u8>) -> Result<bool, KvError> {
        let mut invocation = self.inner.swap.key(self.key(key));
        match expected {
            Some(v) => invocation.arg("1").arg(v),
            None => invocation.arg("0").arg(""),
        };
        let done: i64 = invocation.arg(value).invoke_async(&mut self.conn()).await.map_err(err)?;
        Ok(done == 1)
    }

    pub(super) async fn get_many(&self, keys: Vec<String>) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(full).query_async(&mut self.conn()).await.map_err(err)?;
        Ok(keys.into_iter().zip(values).collect())
    }

    pub(super) async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("MSET");
        for (k, v) in entries {
            cmd.arg(self.key(&k)).arg(v);
        }
        cmd.query_async(&mut self.conn()).await.map_err(err)
    }

    pub(super) async fn delete_many(&self, keys: Vec<String>) -> Result<(), KvError> {
        if keys.is_empty() {
            return Ok(());
        }
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        self.conn().del(full).await.map_err(err)
    }
}

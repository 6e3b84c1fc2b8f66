//! One behavioural suite for every backend that runs in-process (memory, embedded), through the same
//! [`Store`] a guest's calls go through (the limits included), so that the backends cannot drift apart.
//! Redis has the same contract; it is exercised by the integration tests that have a server.

use std::path::Path;
use std::sync::Arc;

use super::{Backend, KeyPage, KvError, MAX_BATCH, MAX_KEY_BYTES, MAX_VALUE_BYTES, Store, all_keys, embedded, memory};

/// Opens stores of one backend: `open(name)` is the store a grant of that name gets.
trait Backing {
    fn open(&self, name: &str) -> Store;
}

struct Memory;

impl Backing for Memory {
    fn open(&self, _name: &str) -> Store {
        Store { backend: Backend::Memory(Arc::new(memory::Store::default())) }
    }
}

/// One database file in a directory of its own; its stores are tables of that file.
struct Embedded {
    dir: tempfile::TempDir,
}

impl Embedded {
    fn new() -> Embedded {
        Embedded { dir: tempfile::tempdir().unwrap() }
    }
}

impl Backing for Embedded {
    fn open(&self, name: &str) -> Store {
        Store { backend: Backend::Embedded(embedded::Store::open(self.dir.path(), "app", name).unwrap()) }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        embedded::Store::forget(self.dir.path(), "app");
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

fn err_text(e: KvError) -> String {
    match e {
        KvError::Other(s) => s,
        e => panic!("expected KvError::Other, got {e:?}"),
    }
}

/// `n` keys that sort in the order of their number.
fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("key-{i:05}")).collect()
}

async fn fill(s: &Store, keys: &[String]) {
    for chunk in keys.chunks(MAX_BATCH) {
        s.set_many(chunk.iter().map(|k| (k.clone(), k.as_bytes().to_vec())).collect()).await.unwrap();
    }
}

async fn get_set_delete_exists(b: &dyn Backing) {
    let s = b.open("default");
    assert_eq!(s.get("a").await.unwrap(), None);
    assert!(!s.exists("a").await.unwrap());

    s.set("a", b"one".to_vec()).await.unwrap();
    assert_eq!(s.get("a").await.unwrap().as_deref(), Some(&b"one"[..]));
    assert!(s.exists("a").await.unwrap());

    s.set("a", b"two".to_vec()).await.unwrap();
    assert_eq!(s.get("a").await.unwrap().as_deref(), Some(&b"two"[..]), "set overwrites");

    // An empty value is a value, not an absent key; binary values are kept byte for byte.
    s.set("empty", Vec::new()).await.unwrap();
    assert_eq!(s.get("empty").await.unwrap(), Some(Vec::new()));
    assert!(s.exists("empty").await.unwrap());
    let binary: Vec<u8> = (0..=255).collect();
    s.set("bin", binary.clone()).await.unwrap();
    assert_eq!(s.get("bin").await.unwrap(), Some(binary));

    s.delete("a").await.unwrap();
    assert_eq!(s.get("a").await.unwrap(), None);
    assert!(!s.exists("a").await.unwrap());
    s.delete("a").await.expect("deleting an absent key is not an error");
    assert!(s.exists("empty").await.unwrap(), "delete removes only its key");
}

async fn stores_are_separate(b: &dyn Backing) {
    let one = b.open("one");
    let two = b.open("two");
    one.set("k", b"1".to_vec()).await.unwrap();
    assert_eq!(two.get("k").await.unwrap(), None);
    assert_eq!(two.list(None).await.unwrap(), KeyPage::default());
    two.set("k", b"2".to_vec()).await.unwrap();
    assert_eq!(one.get("k").await.unwrap().as_deref(), Some(&b"1"[..]));
}

async fn list_pages_at_max_batch(b: &dyn Backing) {
    let s = b.open("default");
    assert_eq!(s.list(None).await.unwrap(), KeyPage { keys: vec![], cursor: None }, "an empty store has one empty page");

    let all = keys(2 * MAX_BATCH + 500);
    // Written out of order: pages come in key order whatever the order of writing.
    let mut shuffled = all.clone();
    shuffled.reverse();
    fill(&s, &shuffled).await;

    let first = s.list(None).await.unwrap();
    assert_eq!(first.keys, all[..MAX_BATCH]);
    assert_eq!(first.cursor.as_deref(), Some(all[MAX_BATCH - 1].as_str()), "a full page's cursor is its last key");
    let second = s.list(first.cursor.as_deref()).await.unwrap();
    assert_eq!(second.keys, all[MAX_BATCH..2 * MAX_BATCH]);
    let third = s.list(second.cursor.as_deref()).await.unwrap();
    assert_eq!(third.keys, all[2 * MAX_BATCH..]);
    assert_eq!(third.cursor, None, "the last page has no cursor");

    assert_eq!(all_keys(&s).await.unwrap(), all);

    // A cursor whose key was deleted since still continues after it.
    s.delete(&all[MAX_BATCH - 1]).await.unwrap();
    let again = s.list(Some(&all[MAX_BATCH - 1])).await.unwrap();
    assert_eq!(again.keys.first(), Some(&all[MAX_BATCH]));
}

async fn exactly_max_batch_keys_is_one_page(b: &dyn Backing) {
    let s = b.open("default");
    let all = keys(MAX_BATCH);
    fill(&s, &all).await;
    let page = s.list(None).await.unwrap();
    assert_eq!(page.keys, all);
    assert_eq!(page.cursor, None, "no empty page after a full last one");

    s.set("zzz", Vec::new()).await.unwrap();
    let page = s.list(None).await.unwrap();
    assert_eq!(page.keys.len(), MAX_BATCH);
    let rest = s.list(page.cursor.as_deref()).await.unwrap();
    assert_eq!(rest, KeyPage { keys: vec!["zzz".into()], cursor: None });
}

async fn increment_counts_in_decimal_text(b: &dyn Backing) {
    let s = b.open("default");
    assert_eq!(s.increment("n", 5).await.unwrap(), 5, "an absent counter is 0");
    assert_eq!(s.increment("n", 1).await.unwrap(), 6);
    assert_eq!(s.increment("n", -10).await.unwrap(), -4);
    assert_eq!(s.increment("n", 0).await.unwrap(), -4);
    assert_eq!(s.get("n").await.unwrap().as_deref(), Some(&b"-4"[..]), "kept as ASCII decimal, as Redis's INCRBY");

    s.set("m", b"41".to_vec()).await.unwrap();
    assert_eq!(s.increment("m", 1).await.unwrap(), 42, "a decimal value written by set counts on");

    s.delete("n").await.unwrap();
    assert_eq!(s.increment("n", 2).await.unwrap(), 2, "a deleted counter starts again at 0");
}

async fn increment_refuses_what_is_not_a_counter(b: &dyn Backing) {
    let s = b.open("default");
    for bad in [&b"abc"[..], b"", b" 1", b"1.5", b"\xff\xfe", b"99999999999999999999"] {
        s.set("x", bad.to_vec()).await.unwrap();
        let e = err_text(s.increment("x", 1).await.unwrap_err());
        assert_eq!(e, "value is not an integer", "for {bad:?}");
        assert_eq!(s.get("x").await.unwrap().as_deref(), Some(bad), "a refused increment changes nothing");
    }
}

async fn increment_refuses_to_overflow(b: &dyn Backing) {
    let s = b.open("default");
    s.set("max", i64::MAX.to_string().into_bytes()).await.unwrap();
    assert_eq!(err_text(s.increment("max", 1).await.unwrap_err()), "increment would overflow");
    assert_eq!(s.get("max").await.unwrap(), Some(i64::MAX.to_string().into_bytes()), "unchanged");
    assert_eq!(s.increment("max", 0).await.unwrap(), i64::MAX);

    s.set("min", i64::MIN.to_string().into_bytes()).await.unwrap();
    assert_eq!(err_text(s.increment("min", -1).await.unwrap_err()), "increment would overflow");
    assert_eq!(s.increment("min", i64::MAX).await.unwrap(), -1);
}

async fn increments_are_exact_under_concurrency(b: &dyn Backing) {
    let s = b.open("default");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.increment("hits", 2).await.unwrap() }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort();
    assert_eq!(seen, (1..=50).map(|i| i * 2).collect::<Vec<i64>>(), "every increment saw a value of its own");
    assert_eq!(s.get("hits").await.unwrap().as_deref(), Some(&b"100"[..]));
}

async fn swap_succeeds_only_on_the_expected_value(b: &dyn Backing) {
    let s = b.open("default");
    assert!(s.swap("k", None, b"first".to_vec()).await.unwrap(), "expected absent, is absent");
    assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"first"[..]));

    assert!(!s.swap("k", None, b"other".to_vec()).await.unwrap(), "expected absent, is present");
    assert!(!s.swap("k", Some(b"wrong"), b"other".to_vec()).await.unwrap());
    assert!(!s.swap("k", Some(b""), b"other".to_vec()).await.unwrap(), "an empty value is not a wildcard");
    assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"first"[..]), "a failed swap changes nothing");

    assert!(s.swap("k", Some(b"first"), b"second".to_vec()).await.unwrap());
    assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"second"[..]));
    assert!(!s.swap("k", Some(b"first"), b"third".to_vec()).await.unwrap(), "the old value no longer matches");

    assert!(!s.swap("absent", Some(b"x"), b"y".to_vec()).await.unwrap(), "expected a value, is absent");
    assert!(!s.exists("absent").await.unwrap());
    s.set("empty", Vec::new()).await.unwrap();
    assert!(s.swap("empty", Some(b""), b"full".to_vec()).await.unwrap(), "an empty value is matched by an empty one");
}

async fn batches(b: &dyn Backing) {
    let s = b.open("default");
    s.set_many(vec![("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec()), ("c".into(), b"3".to_vec())]).await.unwrap();
    let got = s.get_many(vec!["c".into(), "missing".into(), "a".into()]).await.unwrap();
    assert_eq!(got, [("c".into(), Some(b"3".to_vec())), ("missing".into(), None), ("a".into(), Some(b"1".to_vec()))], "in the order asked");

    s.delete_many(vec!["a".into(), "c".into(), "missing".into()]).await.unwrap();
    assert_eq!(all_keys(&s).await.unwrap(), ["b"]);

    // Within one batch, the last write of a key wins.
    s.set_many(vec![("d".into(), b"old".to_vec()), ("d".into(), b"new".to_vec())]).await.unwrap();
    assert_eq!(s.get("d").await.unwrap().as_deref(), Some(&b"new"[..]));

    assert!(s.get_many(vec![]).await.unwrap().is_empty());
    s.set_many(vec![]).await.unwrap();
    s.delete_many(vec![]).await.unwrap();

    let full = keys(MAX_BATCH);
    fill(&s, &full).await;
    assert_eq!(s.get_many(full.clone()).await.unwrap().len(), MAX_BATCH, "a batch of MAX_BATCH is allowed");
    s.delete_many(full).await.unwrap();
    assert_eq!(all_keys(&s).await.unwrap(), ["b", "d"]);
}

async fn limits_are_checked_before_the_backend(b: &dyn Backing) {
    let s = b.open("default");
    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    let ok_key = "k".repeat(MAX_KEY_BYTES);
    let e = err_text(s.set(&long_key, Vec::new()).await.unwrap_err());
    assert_eq!(e, format!("key of {} bytes is over the limit of {MAX_KEY_BYTES} bytes", MAX_KEY_BYTES + 1));
    assert!(s.get(&long_key).await.is_err());
    assert!(s.exists(&long_key).await.is_err());
    assert!(s.delete(&long_key).await.is_err());
    assert!(s.increment(&long_key, 1).await.is_err());
    assert!(s.swap(&long_key, None, Vec::new()).await.is_err());
    s.set(&ok_key, Vec::new()).await.expect("a key of MAX_KEY_BYTES is allowed");

    let e = err_text(s.set("v", vec![0; MAX_VALUE_BYTES + 1]).await.unwrap_err());
    assert_eq!(e, format!("value of {} bytes is over the limit of {MAX_VALUE_BYTES} bytes", MAX_VALUE_BYTES + 1));
    assert!(s.swap("v", None, vec![0; MAX_VALUE_BYTES + 1]).await.is_err());
    s.set("v", vec![7; MAX_VALUE_BYTES]).await.expect("a value of MAX_VALUE_BYTES is allowed");
    assert_eq!(s.get("v").await.unwrap().map(|v| v.len()), Some(MAX_VALUE_BYTES));

    let over = keys(MAX_BATCH + 1);
    let e = err_text(s.get_many(over.clone()).await.unwrap_err());
    assert_eq!(e, format!("batch of {} keys is over the limit of {MAX_BATCH}", MAX_BATCH + 1));
    assert!(s.delete_many(over.clone()).await.is_err());
    assert!(s.set_many(over.iter().map(|k| (k.clone(), Vec::new())).collect()).await.is_err());
    assert!(s.set_many(vec![("a".into(), Vec::new()), (long_key.clone(), Vec::new())]).await.is_err());
    assert!(s.set_many(vec![("a".into(), vec![0; MAX_VALUE_BYTES + 1])]).await.is_err());
    assert!(s.get_many(vec![long_key]).await.is_err());
    assert!(!s.exists("a").await.unwrap(), "a refused batch writes nothing, not even its valid entries");
    assert!(!s.exists(&over[0]).await.unwrap());
}

/// The suite, once per backend: `$make` makes a fresh backing for each test.
macro_rules! suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            macro_rules! case {
                ($name:ident) => {
                    #[test]
                    fn $name() {
                        let b = $make;
                        block_on(super::$name(&b));
                    }
                };
            }

            case!(get_set_delete_exists);
            case!(stores_are_separate);
            case!(list_pages_at_max_batch);
            case!(exactly_max_batch_keys_is_one_page);
            case!(increment_counts_in_decimal_text);
            case!(increment_refuses_what_is_not_a_counter);
            case!(increment_refuses_to_overflow);
            case!(increments_are_exact_under_concurrency);
            case!(swap_succeeds_only_on_the_expected_value);
            case!(batches);
            case!(limits_are_checked_before_the_backend);
        }
    };
}

suite!(memory_backend, Memory);
suite!(embedded_backend, Embedded::new());

/// Closes the embedded database of `dir` and opens it again, as a restarted host would.
fn reopen(dir: &Path, name: &str, before: Store) -> Store {
    embedded::Store::forget(dir, "app");
    drop(before);
    Store { backend: Backend::Embedded(embedded::Store::open(dir, "app", name).unwrap()) }
}

#[test]
fn the_embedded_store_keeps_what_it_acknowledged_across_a_reopen() {
    let b = Embedded::new();
    let dir = b.dir.path().to_path_buf();
    block_on(async {
        let s = b.open("default");
        s.set("plain", b"value".to_vec()).await.unwrap();
        s.set("gone", b"x".to_vec()).await.unwrap();
        s.delete("gone").await.unwrap();
        s.increment("n", 7).await.unwrap();
        assert!(s.swap("cas", None, b"won".to_vec()).await.unwrap());
        fill(&s, &keys(1500)).await;
        b.open("other").set("k", b"other".to_vec()).await.unwrap();

        let s = reopen(&dir, "default", s);
        assert_eq!(s.get("plain").await.unwrap().as_deref(), Some(&b"value"[..]));
        assert!(!s.exists("gone").await.unwrap(), "a delete is durable too");
        assert_eq!(s.increment("n", 1).await.unwrap(), 8);
        assert_eq!(s.get("cas").await.unwrap().as_deref(), Some(&b"won"[..]));
        assert_eq!(all_keys(&s).await.unwrap().len(), 1500 + 3);
        assert_eq!(b.open("other").get("k").await.unwrap().as_deref(), Some(&b"other"[..]));

        // And once more, after writes made on the reopened file.
        let s = reopen(&dir, "default", s);
        assert_eq!(s.get("n").await.unwrap().as_deref(), Some(&b"8"[..]));
    });
    assert!(dir.join("app.redb").is_file(), "one file per application");
}

#[test]
fn the_embedded_store_makes_its_directory_and_keeps_applications_apart() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("kv/nested");
    block_on(async {
        let a = Store { backend: Backend::Embedded(embedded::Store::open(&dir, "a", "default").unwrap()) };
        let b = Store { backend: Backend::Embedded(embedded::Store::open(&dir, "b", "default").unwrap()) };
        a.set("k", b"a".to_vec()).await.unwrap();
        assert_eq!(b.get("k").await.unwrap(), None, "another application's store of the same name is another file");
        assert!(dir.join("a.redb").is_file());
        assert!(dir.join("b.redb").is_file());
    });
    embedded::Store::forget(&dir, "a");
    embedded::Store::forget(&dir, "b");
}

#[test]
fn opening_the_same_store_twice_shares_it() {
    let b = Embedded::new();
    block_on(async {
        let one = b.open("default");
        let two = b.open("default");
        one.set("k", b"v".to_vec()).await.unwrap();
        assert_eq!(two.get("k").await.unwrap().as_deref(), Some(&b"v"[..]), "a write is visible to every opener at once");
    });
}

#[test]
fn a_reopen_really_opens_the_file_again() {
    // What makes the test above one of durability: after `forget`, `open` opens the file anew, which
    // fails while the old database is still open.
    let b = Embedded::new();
    let held = b.open("default");
    embedded::Store::forget(b.dir.path(), "app");
    let e = match embedded::Store::open(b.dir.path(), "app", "default") {
        Ok(_) => panic!("the file was opened twice"),
        Err(e) => err_text(e),
    };
    assert!(e.ends_with("app.redb is in use by another wasmcell process"), "{e}");
    drop(held);
    embedded::Store::open(b.dir.path(), "app", "default").expect("opens once the old database is closed");
}

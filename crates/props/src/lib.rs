//! wasmcell-props: what the property tests of every parser a stranger controls share (dev-only, never
//! shipped): the one runner ([`check`]: case count from [`CASES_ENV`], timing, the line `bench/fuzz`
//! reads), the one-line-error check, and strategies for hostile text and near-valid JSON.
//!
//! The properties themselves live beside their parsers: `crates/oci/tests/props/` (references, digests,
//! manifests, configs, indexes, tar unpacking, OCI layouts), `crates/runtime/tests/all/props.rs` (`--dir`,
//! `-v`, `--net`, `--allow-outbound`, `--kv`, sizes, durations), `crates/shim/src/spec/props.rs` (the OCI
//! runtime spec → policy).

use std::fmt::{Debug, Display};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde_json::Value;

/// The environment variable that sets how many cases every property runs (`bench/fuzz` sets 1,000,000).
pub const CASES_ENV: &str = "WASMCELL_PROPTEST_CASES";

/// Cases of a property that parses text or bytes in memory, when [`CASES_ENV`] is unset.
pub const DEFAULT_CASES: u32 = 5000;

/// Cases of a property whose every case builds files (tar unpacking, layouts, bundles) when [`CASES_ENV`]
/// is unset: fewer, so the suite stays within a few minutes of `scripts/test` on two cores.
pub const DEFAULT_DISK_CASES: u32 = 2000;

/// The longest error message a property accepts, in characters.
pub const MAX_ERROR_CHARS: usize = 1000;

/// How many cases to run: [`CASES_ENV`] if set, else `default`.
pub fn cases(default: u32) -> u32 {
    match std::env::var(CASES_ENV) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{CASES_ENV}={v:?} is not a number of cases")),
        Err(_) => default,
    }
}

/// Runs `property` on [`cases`]`(default)` values of `strategy` (proptest: a failure is shrunk to a
/// minimal input; a panic is a failure), prints `NAME: N cases in T s (X cases/s), F failures`, and
/// panics with the minimal failing input if there was one. `PROPTEST_RNG_SEED` replays a seed.
pub fn check<S>(name: &str, default: u32, strategy: S, property: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    let n = cases(default);
    let config = Config { cases: n, failure_persistence: None, max_global_rejects: n.saturating_mul(4), ..Config::default() };
    let mut runner = TestRunner::new(config);
    let ran = AtomicU64::new(0); // cases run, shrinking steps included
    let start = Instant::now();
    let result = runner.run(&strategy, |value| {
        ran.fetch_add(1, Ordering::Relaxed);
        property(value)
    });
    let secs = start.elapsed().as_secs_f64();
    let (ran, failures) = (ran.into_inner(), u32::from(result.is_err()));
    eprintln!("{name}: {ran} cases in {secs:.2} s ({:.0} cases/s), {failures} failures", ran as f64 / secs.max(1e-9));
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => panic!("{name}: property failed: {why}\nminimal failing input: {input:#?}"),
        Err(TestError::Abort(why)) => panic!("{name}: aborted: {why}"),
    }
}

/// Fails unless `e`'s message is one line (no line break) of at most [`MAX_ERROR_CHARS`] characters.
pub fn one_line(e: &dyn Display) -> Result<(), TestCaseError> {
    let msg = e.to_string();
    prop_assert!(!msg.contains(['\n', '\r', '\u{2028}', '\u{2029}']), "error is not one line: {msg:?}");
    prop_assert!(!msg.is_empty(), "error has no message");
    let chars = msg.chars().count();
    prop_assert!(chars <= MAX_ERROR_CHARS, "error is {chars} characters long: {:?}…", msg.chars().take(200).collect::<String>());
    Ok(())
}

/// Characters parsers split on or treat specially, and some that no input should carry.
const SPECIAL: &[char] = &[
    '/', ':', '.', '@', '[', ']', '*', '-', '_', '=', '#', '%', '\\', ' ', '\n', '\r', '\t', '\0', 'a', 'Z', '0', '9', '~', '+', '?',
    '\u{7f}', '\u{85}', '\u{2028}', 'é', '\u{202e}',
];

fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![3 => proptest::sample::select(SPECIAL), 1 => any::<char>()]
}

/// Arbitrary text: mostly short strings of separators, control characters and any Unicode; sometimes a
/// few thousand characters, for length limits.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => proptest::collection::vec(hostile_char(), 0..40).prop_map(String::from_iter),
        1 => (hostile_char(), 1000usize..6000).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

/// One edit of a string.
#[derive(Clone, Debug)]
enum Edit {
    Insert(Index, String),
    Delete(Index, usize),
    Replace(Index, char),
    Repeat(usize),
}

/// A valid string with up to four random edits (insertions of hostile text, deletions, replacements,
/// repetition): the near-misses a parser meets most.
pub fn mutated(valid: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    let edit = prop_oneof![
        (any::<Index>(), text()).prop_map(|(i, s)| Edit::Insert(i, s)),
        (any::<Index>(), 1usize..8).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<Index>(), hostile_char()).prop_map(|(i, c)| Edit::Replace(i, c)),
        (2usize..5).prop_map(Edit::Repeat),
    ];
    (valid, proptest::collection::vec(edit, 1..5)).prop_map(|(s, edits)| edits.into_iter().fold(s, apply))
}

fn apply(s: String, edit: Edit) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len) };
    match edit {
        Edit::Insert(i, t) => {
            let p = if chars.is_empty() { 0 } else { i.index(chars.len() + 1) };
            chars.splice(p..p, t.chars());
        }
        Edit::Delete(i, n) => {
            let p = at(&i, chars.len());
            chars.drain(p..(p + n).min(chars.len()));
        }
        Edit::Replace(i, c) if !chars.is_empty() => {
            let p = at(&i, chars.len());
            chars[p] = c;
        }
        Edit::Replace(..) => {}
        Edit::Repeat(n) => return s.repeat(n),
    }
    chars.into_iter().collect()
}

/// Any JSON value: scalars of every type and extreme, hostile strings, small nested arrays and objects.
pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        proptest::sample::select(&[0u64, 1, 2, 255, 65535, u32::MAX as u64, u64::MAX][..]).prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(text(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One edit of a JSON document, at the node an [`Index`] picks among all of them.
#[derive(Clone, Debug)]
enum JsonEdit {
    Replace(Index, Value),
    Remove(Index),
    Add(Index, String, Value),
    /// Repeats an array's last element (or a string) this many times: sizes nobody expects.
    Grow(Index, usize),
}

/// A valid JSON document with one to four random edits: a field set to another value of any type,
/// removed, added, or grown to thousands of elements.
pub fn mutate_json(valid: Value) -> impl Strategy<Value = Value> {
    let edit = prop_oneof![
        4 => (any::<Index>(), json()).prop_map(|(i, v)| JsonEdit::Replace(i, v)),
        2 => any::<Index>().prop_map(JsonEdit::Remove),
        1 => (any::<Index>(), text(), json()).prop_map(|(i, k, v)| JsonEdit::Add(i, k, v)),
        1 => (any::<Index>(), 0usize..3000).prop_map(|(i, n)| JsonEdit::Grow(i, n)),
    ];
    proptest::collection::vec(edit, 1..5).prop_map(move |edits| edits.into_iter().fold(valid.clone(), apply_json))
}

fn apply_json(mut doc: Value, edit: JsonEdit) -> Value {
    let mut pointers = Vec::new();
    collect_pointers(&doc, String::new(), &mut pointers);
    let pick = |i: &Index| pointers[i.index(pointers.len())].clone();
    match edit {
        JsonEdit::Replace(i, v) => *doc.pointer_mut(&pick(&i)).expect("a collected pointer") = v,
        JsonEdit::Remove(i) => {
            let p = pick(&i);
            let (parent, key) = p.rsplit_once('/').unwrap_or(("", ""));
            match doc.pointer_mut(parent) {
                Some(Value::Object(m)) => drop(m.remove(&key.replace("~1", "/").replace("~0", "~"))),
                Some(Value::Array(a)) => drop(key.parse::<usize>().ok().filter(|k| *k < a.len()).map(|k| a.remove(k))),
                _ => {}
            }
        }
        JsonEdit::Add(i, k, v) => match doc.pointer_mut(&pick(&i)) {
            Some(Value::Object(m)) => drop(m.insert(k, v)),
            Some(Value::Array(a)) => a.push(v),
            Some(other) => *other = v,
            None => {}
        },
        JsonEdit::Grow(i, n) => match doc.pointer_mut(&pick(&i)) {
            Some(Value::Array(a)) if !a.is_empty() => a.extend(std::iter::repeat_n(a[a.len() - 1].clone(), n)),
            Some(Value::String(s)) if s.len() * n < 1 << 16 => *s = s.repeat(n),
            _ => {}
        },
    }
    doc
}

fn collect_pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                collect_pointers(child, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                collect_pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// A fresh private directory for one case's files: on `/dev/shm` (memory, so a million cases cost no
/// disk writes) when there is one, else in the system's temporary directory.
pub fn scratch() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let made = if shm.is_dir() { tempfile::Builder::new().prefix("wasmcell-props-").tempdir_in(shm).ok() } else { None };
    made.unwrap_or_else(|| tempfile::Builder::new().prefix("wasmcell-props-").tempdir().expect("a temporary directory"))
}

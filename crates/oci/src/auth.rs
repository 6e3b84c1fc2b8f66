//! Registry credentials for pulls and pushes.
//!
//! This module owns wasmcell's own credential file (written by `wasmcell login`, removed from by
//! `wasmcell logout`) and the read-only bridge to the docker CLI's configuration, so that a user who
//! already ran `docker login` does not have to log in twice. Both files use docker's format:
//! `{"auths": {"<registry>": {"auth": base64("user:pass")}}}`.
//!
//! Secrets live in [`Secret`], whose `Debug` and `Display` never show the value; nothing here logs
//! a secret, puts one in an error message, or writes one to a file that others can read.

use std::fmt;
use std::fs::{self, File, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The key docker uses for Docker Hub in `auths`, `credHelpers` and credential stores.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
/// What [`normalize_registry`] turns every Docker Hub alias into.
const DOCKER_HUB: &str = "docker.io";
/// How long a credential helper may run before it is killed.
const DEFAULT_HELPER_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a helper's stdout or stderr that is read.
const HELPER_OUTPUT_LIMIT: u64 = 1 << 20;
/// The username a docker credential helper returns when the secret is an identity token.
const HELPER_TOKEN_USERNAME: &str = "<token>";

/// A secret whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password or token.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where it is sent to a registry or written to the 0600 file.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A username and its password (or token) for one registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub secret: Secret,
}

/// Where credentials come from, in this order: wasmcell's own file (written by `wasmcell login`),
/// then the docker config (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`):
/// `credHelpers[registry]`, then `auths[registry]`, then `credsStore`.
///
/// Registry names are matched after normalization: the scheme (`http://`, `https://`) and any path
/// are dropped, and `docker.io`, `index.docker.io` and `registry-1.docker.io` all match docker's
/// `https://index.docker.io/v1/`.
#[derive(Clone, Debug)]
pub struct CredentialStore {
    own: PathBuf,
    docker_config: Option<PathBuf>,
    /// Directories searched for `docker-credential-<name>`; `None` means `$PATH`.
    helper_path: Option<Vec<PathBuf>>,
    helper_timeout: Duration,
}

impl CredentialStore {
    /// A store that reads and writes `own_file` and, if given, reads the docker config file
    /// `docker_config` (the `config.json` itself, not its directory).
    ///
    /// Grants nothing else: the docker config is never written, and credential helpers it names
    /// are only run when a lookup reaches them, found on `$PATH` (see [`Self::with_helper_path`])
    /// and killed after 10 seconds.
    pub fn new(own_file: PathBuf, docker_config: Option<PathBuf>) -> Self {
        CredentialStore { own: own_file, docker_config, helper_path: None, helper_timeout: DEFAULT_HELPER_TIMEOUT }
    }

    /// The store for this user: `<wasmcell_home>/auth.json`, and the docker config at
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`, else none.
    pub fn from_env(wasmcell_home: &Path) -> Self {
        Self::from_vars(wasmcell_home, std::env::var_os("DOCKER_CONFIG"), std::env::var_os("HOME"))
    }

    fn from_vars(wasmcell_home: &Path, docker_config_dir: Option<std::ffi::OsString>, home: Option<std::ffi::OsString>) -> Self {
        let docker_config = match (docker_config_dir, home) {
            (Some(dir), _) if !dir.is_empty() => Some(PathBuf::from(dir).join("config.json")),
            (_, Some(home)) if !home.is_empty() => Some(PathBuf::from(home).join(".docker").join("config.json")),
            _ => None,
        };
        Self::new(wasmcell_home.join("auth.json"), docker_config)
    }

    /// Searches these directories for `docker-credential-<name>` instead of `$PATH`.
    pub fn with_helper_path(mut self, dirs: Vec<PathBuf>) -> Self {
        self.helper_path = Some(dirs);
        self
    }

    /// Kills a credential helper that runs longer than `timeout` (default 10 seconds).
    pub fn with_helper_timeout(mut self, timeout: Duration) -> Self {
        self.helper_timeout = timeout;
        self
    }

    /// The credential for `registry`, or `None` when no source has one.
    ///
    /// A missing file means no credentials; a malformed one, a docker `auths` entry that only
    /// holds an `identitytoken`, or a failing credential helper is an [`Error::Credentials`].
    pub fn lookup(&self, registry: &str) -> Result<Option<Credential>> {
        let key = registry_key(registry)?;

        if let Some(doc) = read_json(&self.own)? {
            warn_if_loose_mode(&self.own);
            if let Some(cred) = find_in_auths(&doc, &key, &self.own)? {
                tracing::debug!(registry = %key, source = %self.own.display(), "using wasmcell credentials");
                return Ok(Some(cred));
            }
        }

        let Some(docker_path) = &self.docker_config else {
            return Ok(None);
        };
        let Some(doc) = read_json(docker_path)? else {
            return Ok(None);
        };
        let root = as_object(&doc, docker_path)?;

        if let Some(helpers) = root.get("credHelpers") {
            let helpers = helpers
                .as_object()
                .ok_or_else(|| Error::Credentials(format!("credHelpers in {} is not an object", docker_path.display())))?;
            let helper = helpers.iter().find(|(k, _)| normalize_registry(k) == key);
            if let Some((_, name)) = helper {
                let name = name.as_str().ok_or_else(|| {
                    Error::Credentials(format!("credHelpers entry for {key} in {} is not a string", docker_path.display()))
                })?;
                if let Some(cred) = self.run_helper(name, &key)? {
                    tracing::debug!(registry = %key, helper = name, "using docker credHelpers credentials");
                    return Ok(Some(cred));
                }
            }
        }

        if let Some(cred) = find_in_auths(&doc, &key, docker_path)? {
            tracing::debug!(registry = %key, source = %docker_path.display(), "using docker auths credentials");
            return Ok(Some(cred));
        }

        match root.get("credsStore") {
            Some(Value::String(name)) if !name.is_empty() => {
                let cred = self.run_helper(name, &key)?;
                if cred.is_some() {
                    tracing::debug!(registry = %key, helper = %name, "using docker credsStore credentials");
                }
                Ok(cred)
            }
            Some(Value::String(_)) | Some(Value::Null) | None => Ok(None),
            Some(_) => Err(Error::Credentials(format!("credsStore in {} is not a string", docker_path.display()))),
        }
    }

    /// Stores `cred` for `registry` in wasmcell's own file (`wasmcell login`), replacing any entry
    /// that matches the same registry and keeping every other one.
    ///
    /// The file is replaced atomically and always ends with mode 0600; its directory is created
    /// with mode 0700 if missing.
    pub fn save(&self, registry: &str, cred: &Credential) -> Result<()> {
        let key = registry_key(registry)?;
        if cred.username.is_empty() {
            return Err(Error::Credentials("the username is empty".into()));
        }
        if cred.username.contains(':') {
            return Err(Error::Credentials("the username must not contain ':'".into()));
        }

        let mut doc = read_json(&self.own)?.unwrap_or_else(|| Value::Object(Map::new()));
        let auths = auths_mut(&mut doc, &self.own)?;
        auths.retain(|k, _| normalize_registry(k) != key);
        let encoded = BASE64.encode(format!("{}:{}", cred.username, cred.secret.expose()));
        let mut entry = Map::new();
        entry.insert("auth".into(), Value::String(encoded));
        auths.insert(storage_key(&key), Value::Object(entry));

        self.write_own(&doc)?;
        tracing::debug!(registry = %key, file = %self.own.display(), "saved credentials");
        Ok(())
    }

    /// Removes the entries for `registry` from wasmcell's own file (`wasmcell logout`); `false` when
    /// there was none. The docker config is never touched.
    pub fn remove(&self, registry: &str) -> Result<bool> {
        let key = registry_key(registry)?;
        let Some(mut doc) = read_json(&self.own)? else {
            return Ok(false);
        };
        let auths = auths_mut(&mut doc, &self.own)?;
        let before = auths.len();
        auths.retain(|k, _| normalize_registry(k) != key);
        if auths.len() == before {
            return Ok(false);
        }
        self.write_own(&doc)?;
        tracing::debug!(registry = %key, file = %self.own.display(), "removed credentials");
        Ok(true)
    }

    /// Replaces the own file with `doc`: a 0600 temp file in the same directory (mode set before any
    /// secret is written), write, fsync, rename, fsync the directory.
    fn write_own(&self, doc: &Value) -> Result<()> {
        let dir = match self.own.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.exists() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| Error::io("failed to create directory", &dir, e))?;
        }

        let file_name = self.own.file_name().map(|n| n.to_string_lossy().into_owned());
        let prefix = format!(".{}.", file_name.as_deref().unwrap_or("auth.json"));
        let mut tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            .permissions(Permissions::from_mode(0o600))
            .tempfile_in(&dir)
            .map_err(|e| Error::io("failed to create temporary file in", &dir, e))?;
        // The umask may have narrowed the mode at creation; make it exactly 0600 before writing.
        tmp.as_file().set_permissions(Permissions::from_mode(0o600)).map_err(|e| Error::io("failed to set mode of", tmp.path(), e))?;

        let mut bytes = serde_json::to_vec_pretty(doc).map_err(|e| Error::Credentials(format!("failed to encode credentials: {e}")))?;
        bytes.push(b'\n');
        tmp.write_all(&bytes).map_err(|e| Error::io("failed to write", tmp.path(), e))?;
        tmp.as_file().sync_all().map_err(|e| Error::io("failed to sync", tmp.path(), e))?;
        tmp.persist(&self.own).map_err(|e| Error::io("failed to replace", &self.own, e.error))?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("failed to sync directory", &dir, e))?;
        Ok(())
    }

    /// Runs `docker-credential-<name> get` with the registry on stdin.
    fn run_helper(&self, name: &str, key: &str) -> Result<Option<Credential>> {
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(Error::Credentials(format!("invalid credential helper name {name:?}")));
        }
        let program = format!("docker-credential-{name}");
        let exe = self.find_helper(&program).ok_or_else(|| Error::Credentials(format!("credential helper {program} not found on PATH")))?;
        let server = storage_key(key);

        let mut command = Command::new(&exe);
        command.arg("get").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = spawn(&mut command).map_err(|e| Error::Credentials(format!("failed to run credential helper {program}: {e}")))?;

        if let Some(mut stdin) = child.stdin.take() {
            // The helper may exit without reading; its answer tells what went wrong.
            let _ = stdin.write_all(server.as_bytes());
        }
        let stdout = read_in_background(child.stdout.take());
        let stderr = read_in_background(child.stderr.take());

        let deadline = Instant::now() + self.helper_timeout;
        let status: ExitStatus = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::Credentials(format!(
                        "credential helper {program} did not answer within {:?}; killed it",
                        self.helper_timeout
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::Credentials(format!("failed to wait for credential helper {program}: {e}")));
                }
            }
        };
        // A grandchild may still hold the pipes open; do not wait for it past the deadline.
        let grace = deadline.max(Instant::now() + Duration::from_millis(500));
        let stdout = stdout.recv_timeout(grace.saturating_duration_since(Instant::now())).unwrap_or_default();
        let stderr = stderr.recv_timeout(grace.saturating_duration_since(Instant::now())).unwrap_or_default();

        if !status.success() {
            let out = String::from_utf8_lossy(&stdout);
            let err = String::from_utf8_lossy(&stderr);
            let not_found = "credentials not found";
            if out.to_ascii_lowercase().contains(not_found) || err.to_ascii_lowercase().contains(not_found) {
                tracing::debug!(registry = %key, helper = %program, "credential helper has no credentials");
                return Ok(None);
            }
            // Helpers built on docker-credential-helpers print their errors on stdout; a failed
            // run never carries credentials, but skip anything that looks like a JSON answer.
            let reason = first_line(&err)
                .or_else(|| if out.trim_start().starts_with('{') { None } else { first_line(&out) })
                .unwrap_or_else(|| status.to_string());
            return Err(Error::Credentials(format!("credential helper {program} failed: {reason}")));
        }

        parse_helper_output(&stdout, &program, key).map(Some)
    }

    fn find_helper(&self, program: &str) -> Option<PathBuf> {
        let dirs: Vec<PathBuf> = match &self.helper_path {
            Some(dirs) => dirs.clone(),
            None => std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default(),
        };
        dirs.into_iter()
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(program))
            .find(|path| fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
    }
}

/// Spawns `command`, retrying briefly on ETXTBSY: another thread's fork can hold a just-written
/// executable open for writing until that child execs.
fn spawn(command: &mut Command) -> std::io::Result<std::process::Child> {
    let mut attempts = 0;
    loop {
        match command.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempts < 5 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(pipe) = pipe {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.take(HELPER_OUTPUT_LIMIT).read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    } else {
        let _ = tx.send(Vec::new());
    }
    rx
}

/// The first non-empty line, trimmed and cut to a readable length.
fn first_line(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(200).collect())
}

/// Parses a helper's `{"ServerURL", "Username", "Secret"}` answer. Errors never quote the output.
fn parse_helper_output(stdout: &[u8], program: &str, key: &str) -> Result<Credential> {
    let value: Value = serde_json::from_slice(stdout).map_err(|e| {
        Error::Credentials(format!("credential helper {program} printed invalid JSON (line {} column {})", e.line(), e.column()))
    })?;
    let field = |name: &str| value.get(name).and_then(Value::as_str);
    let (Some(username), Some(secret)) = (field("Username"), field("Secret")) else {
        return Err(Error::Credentials(format!("credential helper {program} answered without a Username and Secret")));
    };
    if username == HELPER_TOKEN_USERNAME {
        return Err(Error::Credentials(format!(
            "credential helper {program} returned an identity token for {key}, which wasmcell does \
             not support; use `wasmcell login {key}` with a username and password or access token"
        )));
    }
    Ok(Credential { username: username.to_owned(), secret: Secret::new(secret) })
}

/// The file as JSON, `None` when it does not exist. Parse errors give only the position, never text.
fn read_json(path: &Path) -> Result<Option<Value>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("failed to read", path, e)),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Value::Object(Map::new())));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Credentials(format!("{} is not valid JSON (line {} column {})", path.display(), e.line(), e.column())))
}

fn as_object<'a>(doc: &'a Value, path: &Path) -> Result<&'a Map<String, Value>> {
    doc.as_object().ok_or_else(|| Error::Credentials(format!("{} is not a JSON object", path.display())))
}

fn auths_mut<'a>(doc: &'a mut Value, path: &Path) -> Result<&'a mut Map<String, Value>> {
    let root = doc.as_object_mut().ok_or_else(|| Error::Credentials(format!("{} is not a JSON object", path.display())))?;
    root.entry("auths")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| Error::Credentials(format!("auths in {} is not an object", path.display())))
}

/// The credential in `doc.auths` for the normalized registry `key`; an exact docker key wins
/// over other spellings of the same registry.
fn find_in_auths(doc: &Value, key: &str, path: &Path) -> Result<Option<Credential>> {
    let root = as_object(doc, path)?;
    let Some(auths) = root.get("auths") else {
        return Ok(None);
    };
    let auths = auths.as_object().ok_or_else(|| Error::Credentials(format!("auths in {} is not an object", path.display())))?;
    let preferred = storage_key(key);
    let mut matches: Vec<(&String, &Value)> = auths.iter().filter(|(k, _)| normalize_registry(k) == key).collect();
    matches.sort_by_key(|(k, _)| **k != preferred);
    for (entry_key, entry) in matches {
        if let Some(cred) = parse_auth_entry(entry_key, entry, path)? {
            return Ok(Some(cred));
        }
    }
    Ok(None)
}

/// One `auths` entry: `auth` (base64 `user:pass`) or `username`/`password`. An entry with neither
/// is empty (docker writes those when a credsStore holds the secret); one with only an
/// `identitytoken` is an error, since wasmcell cannot use it.
fn parse_auth_entry(entry_key: &str, entry: &Value, path: &Path) -> Result<Option<Credential>> {
    let where_ = || format!("auths entry {entry_key:?} in {}", path.display());
    let entry = entry.as_object().ok_or_else(|| Error::Credentials(format!("{} is not an object", where_())))?;
    let text = |name: &str| entry.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());

    let mut cred = None;
    if let Some(auth) = text("auth") {
        let decoded = BASE64
            .decode(auth.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| Error::Credentials(format!("{}: auth is not valid base64", where_())))?;
        let (user, pass) =
            decoded.split_once(':').ok_or_else(|| Error::Credentials(format!("{}: auth is not of the form user:password", where_())))?;
        cred = Some(Credential { username: user.to_owned(), secret: Secret::new(pass) });
    } else if let Some(user) = text("username") {
        let pass = entry.get("password").and_then(Value::as_str).unwrap_or("");
        cred = Some(Credential { username: user.to_owned(), secret: Secret::new(pass) });
    }

    let has_token = text("identitytoken").is_some();
    let usable = cred.as_ref().filter(|c| !c.username.is_empty() && !c.secret.expose().is_empty());
    if has_token && usable.is_none() {
        return Err(Error::Credentials(format!(
            "{} holds only an identity token (identitytoken), which wasmcell does not support; \
             log in with `wasmcell login` using a username and password or access token",
            where_()
        )));
    }
    Ok(usable.cloned())
}

/// `registry` normalized, or an error when nothing is left of it.
fn registry_key(registry: &str) -> Result<String> {
    let key = normalize_registry(registry);
    if key.is_empty() {
        return Err(Error::Credentials(format!("invalid registry name {registry:?}")));
    }
    Ok(key)
}

/// Drops the scheme and any path, lower-cases the host, and folds Docker Hub's aliases into
/// `docker.io`.
fn normalize_registry(registry: &str) -> String {
    let s = registry.trim();
    let lower = s.to_ascii_lowercase();
    let s = if lower.starts_with("https://") {
        &s["https://".len()..]
    } else if lower.starts_with("http://") {
        &s["http://".len()..]
    } else {
        s
    };
    let host = s.split('/').next().unwrap_or("").to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
        _ => host,
    }
}

/// The key an entry is stored under and sent to helpers as: docker's own for Docker Hub, the host
/// (with port) otherwise.
fn storage_key(normalized: &str) -> String {
    if normalized == DOCKER_HUB { DOCKER_HUB_KEY.to_owned() } else { normalized.to_owned() }
}

fn warn_if_loose_mode(path: &Path) {
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format_args!("{mode:o}"),
                "credential file is readable by others; it will be made 0600 on the next save"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// A fake `docker-credential-wctest` implementing the `get` protocol, written once for all tests
    /// (writing executables while other threads fork and exec invites ETXTBSY).
    fn helper_dir() -> PathBuf {
        static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
        let dir = DIR.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let script = r#"#!/bin/sh
[ "$1" = get ] || { echo "unsupported action $1" >&2; exit 2; }
server=$(cat)
case "$server" in
  helper.example.com|https://index.docker.io/v1/)
    printf '{"ServerURL":"%s","Username":"helperuser","Secret":"helper-secret"}\n' "$server" ;;
  broken.example.com)
    echo "keychain is locked" >&2
    echo "second line" >&2
    exit 3 ;;
  token.example.com)
    printf '{"ServerURL":"%s","Username":"<token>","Secret":"tok-secret"}\n' "$server" ;;
  hang.example.com)
    exec sleep 30 ;;
  *)
    echo "credentials not found in native keychain"
    exit 1 ;;
esac
"#;
            let path = dir.path().join("docker-credential-wctest");
            fs::write(&path, script).unwrap();
            fs::set_permissions(&path, Permissions::from_mode(0o755)).unwrap();
            dir
        });
        dir.path().to_path_buf()
    }

    fn cred(user: &str, pass: &str) -> Credential {
        Credential { username: user.into(), secret: Secret::new(pass) }
    }

    /// A store with no own file and the given docker config, helpers from [`helper_dir`].
    fn docker_store(dir: &Path, config: &str) -> CredentialStore {
        let config_path = dir.join("config.json");
        fs::write(&config_path, config).unwrap();
        CredentialStore::new(dir.join("own").join("auth.json"), Some(config_path)).with_helper_path(vec![helper_dir()])
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn b64(s: &str) -> String {
        BASE64.encode(s)
    }

    #[test]
    fn secret_debug_and_display_hide_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(secret.expose(), "hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(!format!("{secret}").contains("hunter2"));
    }

    #[test]
    fn credential_debug_hides_secret() {
        let c = cred("alice", "hunter2");
        let shown = format!("{c:?} {c:#?}");
        assert!(shown.contains("alice"));
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn own_file_round_trip_keeps_other_entries_and_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("home").join("auth.json");
        let store = CredentialStore::new(own.clone(), None);

        assert_eq!(store.lookup("127.0.0.1:5000").unwrap(), None);
        store.save("127.0.0.1:5000", &cred("alice", "pw:with:colons")).unwrap();
        store.save("other.example.com", &cred("bob", "bobpw")).unwrap();

        assert_eq!(mode(&own), 0o600);
        assert_eq!(mode(own.parent().unwrap()), 0o700);
        let doc: Value = serde_json::from_slice(&fs::read(&own).unwrap()).unwrap();
        assert_eq!(doc["auths"]["127.0.0.1:5000"]["auth"], b64("alice:pw:with:colons"));

        assert_eq!(store.lookup("127.0.0.1:5000").unwrap(), Some(cred("alice", "pw:with:colons")));
        assert_eq!(store.lookup("http://127.0.0.1:5000/v2/").unwrap(), Some(cred("alice", "pw:with:colons")));

        store.save("127.0.0.1:5000", &cred("alice", "newpw")).unwrap();
        assert_eq!(store.lookup("127.0.0.1:5000").unwrap(), Some(cred("alice", "newpw")));

        assert!(store.remove("https://127.0.0.1:5000").unwrap());
        assert!(!store.remove("127.0.0.1:5000").unwrap());
        assert_eq!(store.lookup("127.0.0.1:5000").unwrap(), None);
        assert_eq!(store.lookup("other.example.com").unwrap(), Some(cred("bob", "bobpw")));
        assert_eq!(mode(&own), 0o600);

        // No temp files are left behind.
        let names: Vec<_> = fs::read_dir(own.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("auth.json")]);
    }

    #[test]
    fn save_keeps_unknown_entries_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("auth.json");
        fs::write(&own, r#"{"auths":{"keep.example.com":{"auth":"a2VlcDpwdw==","email":"x"}},"other":1}"#).unwrap();
        let store = CredentialStore::new(own.clone(), None);
        store.save("new.example.com", &cred("n", "p")).unwrap();
        let doc: Value = serde_json::from_slice(&fs::read(&own).unwrap()).unwrap();
        assert_eq!(doc["other"], 1);
        assert_eq!(doc["auths"]["keep.example.com"]["email"], "x");
        assert_eq!(store.lookup("keep.example.com").unwrap(), Some(cred("keep", "pw")));
    }

    #[test]
    fn loose_mode_is_read_then_fixed_on_save() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("auth.json");
        fs::write(&own, format!(r#"{{"auths":{{"r.example.com":{{"auth":"{}"}}}}}}"#, b64("u:p"))).unwrap();
        fs::set_permissions(&own, Permissions::from_mode(0o644)).unwrap();
        let store = CredentialStore::new(own.clone(), None);
        assert_eq!(store.lookup("r.example.com").unwrap(), Some(cred("u", "p")));
        assert_eq!(mode(&own), 0o644);
        store.save("s.example.com", &cred("v", "q")).unwrap();
        assert_eq!(mode(&own), 0o600);
        assert_eq!(store.lookup("r.example.com").unwrap(), Some(cred("u", "p")));
    }

    #[test]
    fn save_rejects_colon_in_username() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::new(dir.path().join("auth.json"), None);
        let err = store.save("r.example.com", &cred("a:b", "p")).unwrap_err();
        assert!(matches!(err, Error::Credentials(_)), "{err}");
        assert!(!dir.path().join("auth.json").exists());
    }

    #[test]
    fn missing_files_mean_no_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::new(dir.path().join("nope.json"), Some(dir.path().join("missing/config.json")));
        assert_eq!(store.lookup("r.example.com").unwrap(), None);
        assert!(!store.remove("r.example.com").unwrap());
    }

    #[test]
    fn malformed_file_is_an_error_without_content() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("auth.json");
        fs::write(&own, r#"{"auths": {"r": {"auth": "c2VjcmV0"}"#).unwrap();
        let store = CredentialStore::new(own, None);
        let err = store.lookup("r").unwrap_err().to_string();
        assert!(err.contains("not valid JSON"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        assert!(store.save("r", &cred("u", "p")).is_err());
    }

    #[test]
    fn own_file_wins_over_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let store = docker_store(dir.path(), &format!(r#"{{"auths":{{"r.example.com":{{"auth":"{}"}}}}}}"#, b64("docker:dpw")));
        assert_eq!(store.lookup("r.example.com").unwrap(), Some(cred("docker", "dpw")));
        store.save("r.example.com", &cred("own", "opw")).unwrap();
        assert_eq!(store.lookup("r.example.com").unwrap(), Some(cred("own", "opw")));
    }

    #[test]
    fn docker_auths_auth_field() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            docker_store(dir.path(), &format!(r#"{{"auths":{{"registry.example.com:5000":{{"auth":"{}"}}}}}}"#, b64("alice:s3cret")));
        assert_eq!(store.lookup("registry.example.com:5000").unwrap(), Some(cred("alice", "s3cret")));
        assert_eq!(store.lookup("registry.example.com").unwrap(), None);
    }

    #[test]
    fn docker_auths_username_password() {
        let dir = tempfile::tempdir().unwrap();
        let store = docker_store(dir.path(), r#"{"auths":{"registry.example.com":{"username":"bob","password":"pw"}}}"#);
        assert_eq!(store.lookup("registry.example.com").unwrap(), Some(cred("bob", "pw")));
    }

    #[test]
    fn docker_io_aliases_match_docker_hub_key() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            docker_store(dir.path(), &format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#, b64("hub:hubpw")));
        for name in ["docker.io", "index.docker.io", "registry-1.docker.io", "https://registry-1.docker.io/v2/"] {
            assert_eq!(store.lookup(name).unwrap(), Some(cred("hub", "hubpw")), "{name}");
        }
        // Saving for Docker Hub uses docker's key, and replaces other spellings.
        let own = dir.path().join("own").join("auth.json");
        fs::create_dir_all(own.parent().unwrap()).unwrap();
        fs::write(&own, format!(r#"{{"auths":{{"docker.io":{{"auth":"{}"}}}}}}"#, b64("old:old"))).unwrap();
        store.save("registry-1.docker.io", &cred("me", "mine")).unwrap();
        let doc: Value = serde_json::from_slice(&fs::read(&own).unwrap()).unwrap();
        let keys: Vec<_> = doc["auths"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, vec![DOCKER_HUB_KEY.to_owned()]);
        assert_eq!(store.lookup("docker.io").unwrap(), Some(cred("me", "mine")));
    }

    #[test]
    fn scheme_and_path_prefixed_keys_match() {
        let dir = tempfile::tempdir().unwrap();
        let store = docker_store(
            dir.path(),
            &format!(
                r#"{{"auths":{{"https://Secure.example.com/v2/":{{"auth":"{}"}},"http://plain.example.com:8080":{{"auth":"{}"}}}}}}"#,
                b64("s:spw"),
                b64("p:ppw")
            ),
        );
        assert_eq!(store.lookup("secure.example.com").unwrap(), Some(cred("s", "spw")));
        assert_eq!(store.lookup("plain.example.com:8080").unwrap(), Some(cred("p", "ppw")));
        assert_eq!(store.lookup("https://plain.example.com:8080/some/repo").unwrap(), Some(cred("p", "ppw")));
    }

    #[test]
    fn normalize_registry_forms() {
        assert_eq!(normalize_registry("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_registry("HTTP://LocalHost:5000/v2"), "localhost:5000");
        assert_eq!(normalize_registry("ghcr.io/owner/repo"), "ghcr.io");
        assert_eq!(normalize_registry("  127.0.0.1:5000 "), "127.0.0.1:5000");
        assert!(registry_key("https://").is_err());
    }

    #[test]
    fn identitytoken_only_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = docker_store(dir.path(), r#"{"auths":{"acr.example.com":{"identitytoken":"tok-secret-value"}}}"#);
        let err = store.lookup("acr.example.com").unwrap_err();
        assert!(matches!(err, Error::Credentials(_)), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("identity token"), "{msg}");
        assert!(!msg.contains("tok-secret-value"), "{msg}");
    }

    #[test]
    fn empty_auths_entry_falls_through_to_creds_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = docker_store(dir.path(), r#"{"auths":{"helper.example.com":{}},"credsStore":"wctest"}"#);
        assert_eq!(store.lookup("helper.example.com").unwrap(), Some(cred("helperuser", "helper-secret")));
    }

    #[test]
    fn cred_helpers_used_for_registry() {
        let dir = tempfile::tempdir().unwrap();
        let store = docker_store(
            dir.path(),
            &format!(
                r#"{{"credHelpers":{{"helper.example.com":"wctest","https://index.docker.io/v1/":"wctest"}},
                    "auths":{{"helper.example.com":{{"auth":"{}"}}}}}}"#,
                b64("fromauths:pw")
            ),
        );
        // credHelpers comes before auths.
        assert_eq!(store.lookup("helper.example.com").unwrap(), Some(cred("helperuser", "helper-secret")));
        // Docker Hub is sent to the helper under docker's key.
        assert_eq!(store.lookup("docker.io").unwrap(), Some(cred("helperuser", "helper-secret")));
        // A registry without a credHelpers entry never runs the helper.
        assert_eq!(store.lookup("unknown.example.com").unwrap(), None);
    }

    #[test]
    fn cred_helper_not_found_falls_through_to_auths() {
        let dir = tempfile::tempdir().unwrap();
        let store = docker_store(
            dir.path(),
            &format!(
                r#"{{"credHelpers":{{"elsewhere.example.com":"wctest"}},
                    "auths":{{"elsewhere.example.com":{{"auth":"{}"}}}}}}"#,
                b64("fromauths:pw")
            ),
        );
        assert_eq!(store.lookup("elsewhere.example.com").unwrap(), Some(cred("fromauths", "pw")));
    }

    #[test]
    fn creds_store_known_and_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = docker_store(dir.path(), r#"{"credsStore":"wctest"}"#);
        assert_eq!(store.lookup("https://helper.example.com").unwrap(), Some(cred("helperuser", "helper-secret")));
        assert_eq!(store.lookup("nothing.example.com").unwrap(), None);
    }

    #[test]
    fn helper_failure_reports_stderr_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = docker_store(dir.path(), r#"{"credsStore":"wctest"}"#);
        let msg = store.lookup("broken.example.com").unwrap_err().to_string();
        assert!(msg.contains("docker-credential-wctest"), "{msg}");
        assert!(msg.contains("keychain is locked"), "{msg}");
        assert!(!msg.contains("second line"), "{msg}");
    }

    #[test]
    fn helper_identity_token_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = docker_store(dir.path(), r#"{"credsStore":"wctest"}"#);
        let msg = store.lookup("token.example.com").unwrap_err().to_string();
        assert!(msg.contains("identity token"), "{msg}");
        assert!(!msg.contains("tok-secret"), "{msg}");
    }

    #[test]
    fn helper_missing_or_badly_named_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = docker_store(dir.path(), r#"{"credsStore":"absent"}"#);
        let msg = store.lookup("r.example.com").unwrap_err().to_string();
        assert!(msg.contains("docker-credential-absent not found"), "{msg}");

        let dir = tempfile::tempdir().unwrap();
        let store = docker_store(dir.path(), r#"{"credsStore":"../../bin/sh"}"#);
        let msg = store.lookup("r.example.com").unwrap_err().to_string();
        assert!(msg.contains("invalid credential helper name"), "{msg}");
    }

    #[test]
    fn hanging_helper_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let store = docker_store(dir.path(), r#"{"credsStore":"wctest"}"#).with_helper_timeout(Duration::from_millis(300));
        let start = Instant::now();
        let msg = store.lookup("hang.example.com").unwrap_err().to_string();
        assert!(msg.contains("did not answer"), "{msg}");
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    }

    #[test]
    fn from_env_paths() {
        let home = Path::new("/h/.wasmcell");
        let s = CredentialStore::from_vars(home, Some("/dc".into()), Some("/home/u".into()));
        assert_eq!(s.own, PathBuf::from("/h/.wasmcell/auth.json"));
        assert_eq!(s.docker_config, Some(PathBuf::from("/dc/config.json")));
        let s = CredentialStore::from_vars(home, None, Some("/home/u".into()));
        assert_eq!(s.docker_config, Some(PathBuf::from("/home/u/.docker/config.json")));
        let s = CredentialStore::from_vars(home, Some("".into()), None);
        assert_eq!(s.docker_config, None);
    }
}

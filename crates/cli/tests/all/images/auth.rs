//! Registry authentication: htpasswd (Basic) and token (Bearer) registries, `wasmcell login`
//! (0600 file, never logged), and credentials from the docker config and its helpers.

use std::os::unix::fs::PermissionsExt;

use crate::services::registry::Registry;
use crate::{Cell, guests};

const USER: &str = "alice";
const PASS: &str = "s3cret-Pa55word";

fn login(cell: &Cell, registry: &str, pass: &str) -> crate::Out {
    cell.run_stdin(&["login", "-u", USER, "--password-stdin", registry], format!("{pass}\n").as_bytes())
}

fn assert_no_secret(out: &crate::Out) {
    assert!(!out.stdout().contains(PASS) && !out.stderr().contains(PASS), "the password was printed");
}

#[test]
fn htpasswd_registry_login_push_pull_logout() {
    let registry = Registry::start_htpasswd(USER, PASS);
    let cell = Cell::new();
    let image = format!("{}/team/hello:1", registry.addr());
    cell.run(&["push", guests::HELLO_C, &image]).expect_code(125).expect_error_line("wasmcell login");

    let out = login(&cell, &registry.addr(), "wrong-password");
    out.expect_code(125).expect_error_line("refused the credentials");
    assert!(!cell.home().join("auth.json").exists(), "bad credentials were saved");

    let out = login(&cell, &registry.addr(), PASS);
    out.expect_ok();
    assert_no_secret(&out);
    let auth = cell.home().join("auth.json");
    assert_eq!(std::fs::metadata(&auth).unwrap().permissions().mode() & 0o777, 0o600);

    let out = cell.run_env(&[("WASMCELL_LOG", "trace")], &["push", guests::HELLO_C, &image]);
    out.expect_ok();
    assert_no_secret(&out);
    cell.run(&["rmi", &image]).expect_ok();
    let out = cell.run_env(&[("WASMCELL_LOG", "trace")], &["run", &image]);
    out.expect_ok();
    assert_no_secret(&out);
    assert_eq!(out.stdout(), "hello from C\n");

    cell.run(&["logout", &registry.addr()]).expect_ok();
    cell.run(&["rmi", &image]).expect_ok();
    cell.run(&["pull", &image]).expect_code(125).expect_error_line("wasmcell login");
}

#[test]
fn token_registry_bearer_flow() {
    let (registry, tokens) = Registry::start_token(USER, PASS);
    let cell = Cell::new();
    let image = format!("{}/team/hello:1", registry.addr());
    cell.run(&["push", guests::HELLO_C, &image]).expect_code(125).expect_error_line("authentication failed");
    login(&cell, &registry.addr(), "nope").expect_code(125).expect_error_line("authentication failed");
    login(&cell, &registry.addr(), PASS).expect_ok();
    let before = tokens.issued();
    cell.run(&["push", guests::HELLO_C, &image]).expect_ok();
    assert!(tokens.issued() > before, "push went through the token server");
    let other = Cell::new();
    login(&other, &registry.addr(), PASS).expect_ok();
    assert_eq!(other.run(&["run", &image]).expect_ok().stdout(), "hello from C\n");
    assert!(tokens.scopes().iter().any(|s| s.contains("repository:team/hello:pull")), "{:?}", tokens.scopes());
}

#[test]
fn credentials_never_go_to_a_plain_http_realm_on_another_host() {
    // A registry may name any token server in its challenge. One on another host over plain HTTP
    // (127.0.0.2 here, a listener that records what reaches it) must never see the password.
    let trap = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let realm = format!("http://{}/token", trap.local_addr().unwrap());
    let (registry, _tokens) = Registry::start_token_realm(USER, PASS, &realm);
    let cell = Cell::new();
    let out = login(&cell, &registry.addr(), PASS);
    out.expect_code(125).expect_error_line("token realm");
    assert_no_secret(&out);
    // Credentials stored anyway (from a docker config, say) are not sent on a pull either.
    let docker = tempfile::tempdir().unwrap();
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    let config = format!(r#"{{"auths":{{"{}":{{"auth":"{basic}"}}}}}}"#, registry.addr());
    std::fs::write(docker.path().join("config.json"), config).unwrap();
    let image = format!("{}/team/hello:1", registry.addr());
    let out = cell.run_env(&[("DOCKER_CONFIG", docker.path().to_str().unwrap())], &["pull", &image]);
    out.expect_code(125).expect_error_line("token realm");
    match trap.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("something connected to the lying realm: {other:?}"),
    }
}

#[test]
fn docker_config_auths_and_credential_helpers() {
    use base64::Engine as _;
    let registry = Registry::start_htpasswd(USER, PASS);
    let image = format!("{}/team/hello:1", registry.addr());
    let pusher = Cell::new();
    login(&pusher, &registry.addr(), PASS).expect_ok();
    pusher.run(&["push", guests::HELLO_C, &image]).expect_ok();

    // ~/.docker/config.json with an `auths` entry.
    let docker = crate::scratch();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    std::fs::write(docker.path().join("config.json"), serde_json::json!({"auths": {registry.addr(): {"auth": auth}}}).to_string()).unwrap();
    let cell = Cell::new();
    let docker_dir = docker.path().to_str().unwrap();
    cell.run_env(&[("DOCKER_CONFIG", docker_dir)], &["pull", &image]).expect_ok();

    // credHelpers: a docker-credential-* program answering the `get` protocol.
    let bin = crate::scratch();
    let helper = bin.path().join("docker-credential-wctest");
    std::fs::write(
        &helper,
        format!("#!/bin/sh\nread host\nif [ \"$host\" = \"{}\" ]; then echo '{{\"ServerURL\":\"'$host'\",\"Username\":\"{USER}\",\"Secret\":\"{PASS}\"}}'; else echo 'credentials not found in native keychain'; exit 1; fi\n", registry.addr()),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker2 = crate::scratch();
    std::fs::write(docker2.path().join("config.json"), serde_json::json!({"credHelpers": {registry.addr(): "wctest"}}).to_string())
        .unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap());
    let cell = Cell::new();
    let out = cell.run_env(&[("DOCKER_CONFIG", docker2.path().to_str().unwrap()), ("PATH", &path)], &["run", &image]);
    out.expect_ok();
    assert_eq!(out.stdout(), "hello from C\n");
    assert_no_secret(&out);
}

use super::*;
use crate::key::tests::{other_keys, test_keys};
use serde_json::json;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const OTHER_DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn key_data(pem: &str) -> String {
    STANDARD.encode(pem)
}

fn policy(value: serde_json::Value) -> Policy {
    Policy::parse(&serde_json::to_vec(&value).unwrap()).unwrap()
}

fn parse_err(text: &str) -> String {
    let err = Policy::parse(text.as_bytes()).unwrap_err().to_string();
    assert!(!err.contains('\n') && err.len() <= 1000, "{err}");
    err
}

fn signed_policy(identity: serde_json::Value) -> Policy {
    policy(json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {"r.example": [
            {"type": "sigstoreSigned", "keyData": key_data(&test_keys().public_pem), "signedIdentity": identity}
        ]}}
    }))
}

fn signature(reference: &str, digest: &str) -> SignatureLayer {
    SignatureLayer::sign(&test_keys().private_key, &Payload::new(reference, digest).unwrap())
}

fn image(reference: &str) -> ImageIdentity {
    ImageIdentity::parse(reference).unwrap()
}

#[test]
fn parse_errors_are_one_line_and_say_what() {
    let pem = key_data(&test_keys().public_pem);
    let cases = [
        ("{", "EOF"),
        ("{}", "missing field `default`"),
        (r#"{"default": []}"#, "must not be empty"),
        (r#"{"default": [{"type": "acceptEverything"}]}"#, "unknown variant `acceptEverything`"),
        (r#"{"default": [{"kind": "reject"}]}"#, "missing field `type`"),
        (r#"{"default": [{"type": "reject", "extra": 1}]}"#, "unknown field `extra`"),
        (r#"{"default": [{"type": "reject"}], "other": {}}"#, "unknown field `other`"),
        (
            r#"{"default": [{"type": "reject"}], "transports": {"docker": {"a": [{"type": "reject"}], "a": [{"type": "reject"}]}}}"#,
            "duplicate key \"a\"",
        ),
        (r#"{"default": [{"type": "sigstoreSigned"}]}"#, "exactly one of keyPath"),
        (&format!(r#"{{"default": [{{"type": "sigstoreSigned", "keyPath": "/k.pub", "keyData": "{pem}"}}]}}"#), "exactly one of keyPath"),
        (r#"{"default": [{"type": "sigstoreSigned", "keyPath": "k.pub"}]}"#, "not an absolute path"),
        (r#"{"default": [{"type": "sigstoreSigned", "keyPaths": []}]}"#, "keyPaths must not be empty"),
        (r#"{"default": [{"type": "sigstoreSigned", "keyData": "!!"}]}"#, "keyData is not base64"),
        (r#"{"default": [{"type": "sigstoreSigned", "keyData": "aGVsbG8="}]}"#, "no PEM block"),
        (
            r#"{"default": [{"type": "sigstoreSigned", "keyPath": "/k", "signedIdentity": {"type": "matchAnything"}}]}"#,
            "unknown variant `matchAnything`",
        ),
        (
            r#"{"default": [{"type": "sigstoreSigned", "keyPath": "/k", "signedIdentity": {"type": "exactReference", "dockerReference": "r.example/app"}}]}"#,
            "neither a tag nor a digest",
        ),
        (
            r#"{"default": [{"type": "sigstoreSigned", "keyPath": "/k", "signedIdentity": {"type": "exactReference"}}]}"#,
            "missing field `dockerReference`",
        ),
        (
            r#"{"default": [{"type": "sigstoreSigned", "keyPath": "/k", "signedIdentity": {"type": "remapIdentity", "prefix": "r.example/a:tag", "signedPrefix": "x.example"}}]}"#,
            "prefix \"r.example/a:tag\" is not valid",
        ),
        (r#"{"default": [{"type": "signedBy", "keyType": "PGP", "keyPath": "/k"}]}"#, "unknown keyType"),
        (r#"{"default": [{"type": "signedBy", "keyType": "GPGKeys"}]}"#, "exactly one of keyPath, keyPaths and keyData"),
        (r#"{"default": [{"type": "reject", "type": "reject"}]}"#, "duplicate field `type`"),
        (r#"{"default": [{"type": "insecureAcceptAnything"}], "transports": {"docker": {"x": []}}}"#, "transports.docker.\"x\": the list"),
    ];
    for (text, want) in cases {
        let err = parse_err(text);
        assert!(err.starts_with("invalid policy: "), "{err}");
        assert!(err.contains(want), "{text}\n{err}");
    }
}

#[test]
fn the_debian_default_and_unknown_transports_parse() {
    let p = Policy::parse(br#"{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker-daemon":{"":[{"type":"insecureAcceptAnything"}]},"oci":{"/some/path":[{"type":"reject"}]},"atomic":{}}}"#).unwrap();
    assert_eq!(p.requirements_for(&image("busybox")), [Requirement::InsecureAcceptAnything]);
}

#[test]
fn gpg_requirements_parse_and_reject_at_evaluation() {
    let p = policy(json!({
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {"registry.access.redhat.com": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release"}]}}
    }));
    let err = p.evaluate(&image("registry.access.redhat.com/ubi9:latest"), DIGEST, &[]).unwrap_err();
    assert_eq!(err.to_string(), "not supported: GPG signatures (signedBy) (policy docker scope \"registry.access.redhat.com\")");
    p.evaluate(&image("quay.io/x/y:1"), DIGEST, &[]).unwrap();
    let fulcio = policy(json!({"default": [{"type": "sigstoreSigned", "fulcio": {"caPath": "/ca"}, "rekorPublicKeyPath": "/r"}]}));
    let err = fulcio.evaluate(&image("a.example/b:c"), DIGEST, &[]).unwrap_err();
    assert!(err.to_string().starts_with("not supported: Fulcio certificates"), "{err}");
}

#[test]
fn scope_precedence_follows_containers_image() {
    let tagged = |name: &str| json!([{"type": "sigstoreSigned", "keyPath": format!("/keys/{name}")}]);
    let p = policy(json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {
            "": [{"type": "insecureAcceptAnything"}],
            "reg.example.com:5000/ns/app:v1": tagged("tag"),
            "reg.example.com:5000/ns/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef": tagged("digest"),
            "reg.example.com:5000/ns/app": tagged("repo"),
            "reg.example.com:5000/ns": tagged("ns"),
            "reg.example.com:5000": tagged("host"),
            "*.example.com": tagged("wild"),
            "*.com": tagged("widest"),
            "docker.io/library": tagged("library"),
        }}
    }));
    let scope_of = |reference: &str| match p.scope_for(&image(reference)).0 {
        Scope::Transport { scope, .. } => scope,
        Scope::Default => "<default>".into(),
    };
    assert_eq!(scope_of("reg.example.com:5000/ns/app:v1"), "reg.example.com:5000/ns/app:v1");
    assert_eq!(scope_of(&format!("reg.example.com:5000/ns/app@{DIGEST}")), format!("reg.example.com:5000/ns/app@{DIGEST}"));
    assert_eq!(scope_of("reg.example.com:5000/ns/app:v2"), "reg.example.com:5000/ns/app");
    assert_eq!(scope_of("reg.example.com:5000/ns/other:v1"), "reg.example.com:5000/ns");
    assert_eq!(scope_of("reg.example.com:5000/top:v1"), "reg.example.com:5000");
    assert_eq!(scope_of("reg.example.com/ns/app:v1"), "*.example.com", "the port is part of the host scope");
    assert_eq!(scope_of("a.b.example.com/x:1"), "*.example.com");
    assert_eq!(scope_of("other.com/x:1"), "*.com");
    assert_eq!(scope_of("busybox"), "docker.io/library");
    assert_eq!(scope_of("quay.io/x:1"), "");
    let no_docker = policy(json!({"default": [{"type": "reject"}], "transports": {"oci": {"": [{"type": "insecureAcceptAnything"}]}}}));
    assert_eq!(no_docker.scope_for(&image("quay.io/x:1")).0, Scope::Default);
    assert_eq!(
        image("busybox").scopes(),
        ["docker.io/library/busybox:latest", "docker.io/library/busybox", "docker.io/library", "docker.io", "*.io"]
    );
}

#[test]
fn accepts_a_good_signature_and_says_what_it_verified() {
    let p = signed_policy(json!({"type": "matchRepoDigestOrExact"}));
    let verdict = p.evaluate(&image("r.example/app:v1"), DIGEST, &[signature("r.example/app:v1", DIGEST)]).unwrap();
    let fingerprint = test_keys().private_key.public_key().fingerprint();
    assert_eq!(
        verdict.accepted,
        [Acceptance::Signed { key_fingerprint: fingerprint.clone(), docker_reference: "r.example/app:v1".into() }]
    );
    assert_eq!(
        verdict.to_string(),
        format!("accepted by policy docker scope \"r.example\": signed as \"r.example/app:v1\" by key sha256:{fingerprint}")
    );
}

#[test]
fn rejections_name_the_reason_and_the_scope() {
    let p = signed_policy(json!({"type": "matchRepoDigestOrExact"}));
    let img = image("r.example/app:v1");
    let reason = |sigs: &[SignatureLayer], digest: &str| {
        let r = p.evaluate(&img, digest, sigs).unwrap_err();
        assert_eq!(r.scope, Scope::Transport { transport: "docker".into(), scope: "r.example".into() });
        let line = r.to_string();
        assert!(!line.contains('\n') && line.ends_with("(policy docker scope \"r.example\")"), "{line}");
        r.reason
    };
    assert_eq!(reason(&[], DIGEST), Reason::NoSignature);
    let other_key = SignatureLayer::sign(&other_keys().private_key, &Payload::new("r.example/app:v1", DIGEST).unwrap());
    assert_eq!(reason(std::slice::from_ref(&other_key), DIGEST), Reason::NotVerified);
    let mut tampered = signature("r.example/app:v1", DIGEST);
    tampered.payload = Payload::new("r.example/app:v1", OTHER_DIGEST).unwrap().to_bytes();
    assert_eq!(reason(&[tampered], DIGEST), Reason::NotVerified);
    assert_eq!(reason(&[signature("r.example/app:v1", OTHER_DIGEST)], DIGEST), Reason::OtherDigest(OTHER_DIGEST.into()));
    assert_eq!(
        reason(&[signature("r.example/app:v2", DIGEST)], DIGEST).to_string(),
        "signed identity \"r.example/app:v2\" does not match \"r.example/app:v1\""
    );
    let mut garbled = signature("r.example/app:v1", DIGEST);
    garbled.signature_b64 = "%%%".into();
    assert!(matches!(reason(&[garbled], DIGEST), Reason::InvalidSignature(_)));
    let two = reason(&[other_key.clone(), other_key], DIGEST).to_string();
    assert_eq!(two, "none of the 2 signatures was accepted; the first: signature does not verify with any trusted key");
    // one good signature among bad ones is enough
    p.evaluate(&img, DIGEST, &[signature("r.example/app:v2", DIGEST), signature("r.example/app:v1", DIGEST)]).unwrap();
    // a reference by digest must name the manifest
    let by_digest = image(&format!("r.example/app@{OTHER_DIGEST}"));
    assert!(matches!(p.evaluate(&by_digest, DIGEST, &[]).unwrap_err().reason, Reason::Image(_)));
    let rejected = p.evaluate(&image("elsewhere.example/app:v1"), DIGEST, &[]).unwrap_err();
    assert_eq!(rejected.to_string(), "rejected by policy (reject) (policy default)");
}

#[test]
fn key_paths_are_read_at_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.pub");
    std::fs::write(&good, &test_keys().public_pem).unwrap();
    let missing = dir.path().join("missing.pub");
    let p = policy(json!({"default": [{"type": "sigstoreSigned", "keyPaths": [missing, good]}]}));
    let err = p.evaluate(&image("r.example/app:v1"), DIGEST, &[signature("r.example/app:v1", DIGEST)]).unwrap_err();
    assert!(err.to_string().starts_with(&format!("cannot read public key file {}: ", missing.display())), "{err}");
    let other = dir.path().join("other.pub");
    std::fs::write(&other, &other_keys().public_pem).unwrap();
    let p = policy(json!({"default": [{"type": "sigstoreSigned", "keyPaths": [other, good]}]}));
    let verdict = p.evaluate(&image("r.example/app:v1"), DIGEST, &[signature("r.example/app:v1", DIGEST)]).unwrap();
    assert_eq!(verdict.scope, Scope::Default);
    let big = dir.path().join("big.pub");
    std::fs::write(&big, vec![b'a'; crate::KEY_FILE_LIMIT + 1]).unwrap();
    let p = policy(json!({"default": [{"type": "sigstoreSigned", "keyPath": big}]}));
    let err = p.evaluate(&image("r.example/app:v1"), DIGEST, &[]).unwrap_err();
    assert!(err.to_string().contains("is larger than 65536 bytes"), "{err}");
}

#[test]
fn all_requirements_must_accept() {
    let p = policy(json!({"default": [
        {"type": "insecureAcceptAnything"},
        {"type": "sigstoreSigned", "keyData": key_data(&test_keys().public_pem)},
        {"type": "sigstoreSigned", "keyData": key_data(&other_keys().public_pem)},
    ]}));
    let err = p.evaluate(&image("r.example/app:v1"), DIGEST, &[signature("r.example/app:v1", DIGEST)]).unwrap_err();
    assert_eq!(err.reason, Reason::NotVerified);
    let both = [
        signature("r.example/app:v1", DIGEST),
        SignatureLayer::sign(&other_keys().private_key, &Payload::new("r.example/app:v1", DIGEST).unwrap()),
    ];
    let verdict = p.evaluate(&image("r.example/app:v1"), DIGEST, &both).unwrap();
    assert_eq!(verdict.accepted.len(), 3);
}

/// Each signedIdentity type, against the tagged image `r.example/ns/app:v1` and the same by digest.
#[test]
fn signed_identities() {
    let tagged = image("r.example/ns/app:v1");
    let by_digest = image(&format!("r.example/ns/app@{DIGEST}"));
    let check = |identity: serde_json::Value, img: &ImageIdentity, signed: &str| {
        signed_policy(identity).evaluate(img, DIGEST, &[signature(signed, DIGEST)]).is_ok()
    };
    let default = json!({"type": "matchRepoDigestOrExact"});
    assert!(check(default.clone(), &tagged, "r.example/ns/app:v1"));
    assert!(!check(default.clone(), &tagged, "r.example/ns/app:v2"));
    assert!(!check(default.clone(), &tagged, "r.example/ns/app"), "a name-only signed reference never matches");
    assert!(check(default.clone(), &by_digest, "r.example/ns/app:anything"));
    assert!(check(default.clone(), &by_digest, &format!("r.example/ns/app@{OTHER_DIGEST}")));
    assert!(!check(default.clone(), &by_digest, "r.example/ns/other:v1"));
    assert!(!check(default, &tagged, "not a reference"));

    let exact = json!({"type": "matchExact"});
    assert!(check(exact.clone(), &tagged, "r.example/ns/app:v1"));
    assert!(!check(exact.clone(), &by_digest, "r.example/ns/app:v1"));
    assert!(check(exact, &by_digest, &format!("r.example/ns/app@{DIGEST}")));

    let repository = json!({"type": "matchRepository"});
    assert!(check(repository.clone(), &tagged, "r.example/ns/app:v2"));
    assert!(check(repository.clone(), &tagged, "r.example/ns/app"));
    assert!(!check(repository, &tagged, "r.example/ns/app2:v1"));

    let exact_reference = json!({"type": "exactReference", "dockerReference": "other.example/signed:1"});
    assert!(check(exact_reference.clone(), &tagged, "other.example/signed:1"));
    assert!(!check(exact_reference.clone(), &tagged, "r.example/ns/app:v1"));
    assert!(!check(exact_reference, &tagged, "other.example/signed:2"));

    let exact_repository = json!({"type": "exactRepository", "dockerRepository": "other.example/signed"});
    assert!(check(exact_repository.clone(), &tagged, "other.example/signed:9"));
    assert!(!check(exact_repository, &tagged, "r.example/ns/app:v1"));

    // docker hub names normalize on both sides
    let hub = json!({"type": "exactReference", "dockerReference": "busybox:1"});
    assert!(check(hub, &tagged, "docker.io/library/busybox:1"));

    let remap = json!({"type": "remapIdentity", "prefix": "r.example/ns", "signedPrefix": "upstream.example/team"});
    assert!(check(remap.clone(), &tagged, "upstream.example/team/app:v1"));
    assert!(!check(remap.clone(), &tagged, "r.example/ns/app:v1"));
    assert!(check(remap.clone(), &by_digest, "upstream.example/team/app:v7"));
    // not at a component boundary: no remapping
    let partial = json!({"type": "remapIdentity", "prefix": "r.example/n", "signedPrefix": "upstream.example/team"});
    assert!(check(partial, &tagged, "r.example/ns/app:v1"));
    let err = signed_policy(remap).evaluate(&tagged, DIGEST, &[signature("r.example/ns/app:v1", DIGEST)]).unwrap_err();
    assert_eq!(
        err.reason.to_string(),
        "signed identity \"r.example/ns/app:v1\" does not match \"upstream.example/team/app:v1\" (remapIdentity)"
    );
}

#[test]
fn a_hand_made_identity_is_normalized() {
    let id = ImageIdentity { registry: "index.docker.io".into(), repository: "busybox".into(), tag: Some("1".into()), digest: None };
    assert_eq!(id.name(), "docker.io/library/busybox");
    assert_eq!(id.to_string(), "docker.io/library/busybox:1");
    let local = ImageIdentity { registry: "myregistry".into(), repository: "app".into(), tag: None, digest: Some(DIGEST.into()) };
    assert_eq!(local.scopes()[..3], [format!("myregistry/app@{DIGEST}"), "myregistry/app".into(), "myregistry".into()]);
}

//! Image references (`Reference::from_str`) and digests (`Digest::from_str`).

use proptest::prelude::*;
use wasmcell_oci::{Digest, Reference};
use wasmcell_props::{DEFAULT_CASES, check, mutated, one_line, text};

/// A reference with a registry (so no docker.io normalization applies), and its parts.
fn valid_parts() -> impl Strategy<Value = (String, String, Option<String>, Option<Digest>)> {
    let registry = prop_oneof![
        Just("localhost".to_string()),
        "[a-z]([a-z0-9-]{0,8}[a-z0-9])?\\.[a-z]{2,5}(:[1-9][0-9]{0,3})?",
        "127\\.0\\.0\\.[0-9]{1,2}:[1-9][0-9]{3}",
        "localhost:[1-9][0-9]{0,4}",
    ];
    let component = "[a-z0-9]{1,8}(([._]|__|-{1,3})[a-z0-9]{1,8}){0,2}";
    let repository = proptest::collection::vec(component, 1..5).prop_map(|c| c.join("/"));
    let tag = proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}");
    let digest = proptest::option::of(any::<[u8; 8]>().prop_map(|b| Digest::of(&b)));
    (registry, repository, tag, digest)
}

fn join((registry, repository, tag, digest): &(String, String, Option<String>, Option<Digest>)) -> String {
    let mut s = format!("{registry}/{repository}");
    if let Some(t) = tag {
        s += &format!(":{t}");
    }
    if let Some(d) = digest {
        s += &format!("@{d}");
    }
    s
}

/// Whatever the input: an error is one short line; an accepted reference has a lower-case repository
/// and a valid digest, prints as one line, and parses back from what it prints to itself.
fn reference_holds(input: &str) -> Result<(), TestCaseError> {
    let r = match input.parse::<Reference>() {
        Ok(r) => r,
        Err(e) => return one_line(&e),
    };
    prop_assert!(!r.registry().is_empty());
    for c in r.repository().split('/') {
        prop_assert!(!c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)), "{c:?}");
    }
    if let Some(t) = r.tag() {
        prop_assert!(!t.is_empty() && t.len() <= 128 && !t.contains(['/', ':', '@']), "tag {t:?}");
    }
    let shown = r.to_string();
    prop_assert!(!shown.contains(char::is_whitespace), "{shown:?}");
    let again: Reference = shown.parse().map_err(|e| TestCaseError::fail(format!("{shown:?} does not parse back: {e}")))?;
    prop_assert_eq!(&again, &r);
    prop_assert_eq!(again.to_string(), shown);
    Ok(())
}

#[test]
fn image_references() {
    let input = prop_oneof![text(), mutated(valid_parts().prop_map(|p| join(&p)))];
    check("image references", DEFAULT_CASES, input, |s| reference_holds(&s));
}

#[test]
fn well_formed_references_are_accepted_as_written() {
    check("image references (well-formed)", DEFAULT_CASES, valid_parts(), |parts| {
        let s = join(&parts);
        let r: Reference = s.parse().map_err(|e| TestCaseError::fail(format!("{s:?} refused: {e}")))?;
        prop_assert_eq!(r.registry(), parts.0.as_str());
        prop_assert_eq!(r.repository(), parts.1.as_str());
        prop_assert_eq!(r.tag(), parts.2.as_deref().or(parts.3.is_none().then_some("latest")));
        prop_assert_eq!(r.digest(), parts.3.clone());
        reference_holds(&s)
    });
}

#[test]
fn digests() {
    let valid = any::<[u8; 8]>().prop_map(|b| Digest::of(&b).to_string());
    let input = prop_oneof![text(), mutated(valid.clone()), valid];
    check("digests", DEFAULT_CASES, input, |s| match s.parse::<Digest>() {
        Err(e) => one_line(&e),
        Ok(d) => {
            prop_assert_eq!(d.to_string(), s.clone(), "a digest prints as it was written");
            prop_assert!(d.hex().len() == 64 && d.hex().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            prop_assert_eq!(d.to_string().parse::<Digest>().ok(), Some(d));
            Ok(())
        }
    });
}

/// The parser against oci-spec's (a regex of distribution's grammar, which wasmcell no longer compiles
/// at run time), on the same inputs: what wasmcell accepts, oci-spec reads the same way; what oci-spec
/// accepts and wasmcell's own checks allow (an ASCII line of at most 4096 bytes, lower-case path, a
/// sha256 digest in lower case), wasmcell accepts.
#[test]
fn references_are_read_as_oci_spec_reads_them() {
    let prefix = prop_oneof![Just(""), Just("index.docker.io/"), Just("docker.io/"), Just("localhost/"), Just("library/"), Just("A.b:5/")];
    let short = (prefix, "[a-z0-9]{1,6}(/[a-z0-9]{1,6})?(:[A-Za-z0-9_.-]{1,8})?").prop_map(|(p, rest)| format!("{p}{rest}"));
    let input =
        prop_oneof![text(), mutated(valid_parts().prop_map(|p| join(&p))), mutated("[a-z0-9./:_@-]{1,24}"), short.clone(), mutated(short)];
    check("image references (against oci-spec)", DEFAULT_CASES, input, |s| {
        let ours = s.parse::<Reference>();
        let theirs = oci_spec::distribution::Reference::try_from(s.as_str());
        match (&ours, &theirs) {
            (Ok(r), Ok(o)) => {
                prop_assert_eq!(r.registry(), o.registry(), "{:?}", s);
                prop_assert_eq!(r.repository(), o.repository(), "{:?}", s);
                prop_assert_eq!(r.tag(), o.tag(), "{:?}", s);
                prop_assert_eq!(r.digest().map(|d| d.to_string()), o.digest().map(str::to_string), "{:?}", s);
            }
            (Ok(r), Err(e)) => prop_assert!(false, "{s:?}: wasmcell read {r}, oci-spec refused it: {e}"),
            (Err(e), Ok(o)) => {
                let ours_allow = s.is_ascii()
                    && s.len() <= 4096
                    && !s.contains(|c: char| c.is_whitespace() || c.is_control())
                    && o.repository().split('/').all(wasmcell_sign::is_path_component)
                    && o.digest().is_none_or(|d| d.parse::<Digest>().is_ok());
                prop_assert!(!ours_allow, "{s:?}: oci-spec read {o}, wasmcell refused it: {e}");
            }
            (Err(_), Err(_)) => {}
        }
        Ok(())
    });
}

//! Precompiled code's documents, all of which a registry (or whoever can push to it) writes: the
//! referrers index, the referrer's manifest and its config (`wasmcell_oci::precompiled`).

use proptest::prelude::*;
use serde_json::{Value, json};
use wasmcell_oci::Digest;
use wasmcell_oci::image;
use wasmcell_oci::precompiled::{
    ARTIFACT_TYPE, CODE_TYPE, CONFIG_TYPE, FINGERPRINT_ANNOTATION, MAX_CODE_BYTES, check_config, check_manifest, parse_referrers,
};
use wasmcell_props::{DEFAULT_CASES, check, one_line};

use super::manifest::near_valid;

const FINGERPRINT: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn subject() -> Digest {
    Digest::of(b"the image")
}

fn wasm() -> Digest {
    Digest::of(b"the wasm")
}

fn config() -> Value {
    json!({"fingerprint": FINGERPRINT, "wasm": wasm().to_string(), "engine": "wasmtime 48.0.8, cranelift, x86_64"})
}

fn documents() -> Vec<Value> {
    let config_bytes = serde_json::to_vec(&config()).unwrap();
    vec![
        json!({"schemaVersion": 2, "mediaType": image::OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
               "config": {"mediaType": CONFIG_TYPE, "digest": Digest::of(&config_bytes).to_string(), "size": config_bytes.len()},
               "layers": [{"mediaType": CODE_TYPE, "digest": Digest::of(b"code").to_string(), "size": 4}],
               "subject": {"mediaType": image::OCI_MANIFEST, "digest": subject().to_string(), "size": 300},
               "annotations": {FINGERPRINT_ANNOTATION: FINGERPRINT}}),
        json!({"schemaVersion": 2, "mediaType": image::OCI_INDEX, "manifests": [
            {"mediaType": image::OCI_MANIFEST, "digest": Digest::of(b"r").to_string(), "size": 500, "artifactType": ARTIFACT_TYPE,
             "annotations": {FINGERPRINT_ANNOTATION: FINGERPRINT}},
            {"mediaType": image::OCI_MANIFEST, "digest": Digest::of(b"s").to_string(), "size": 9,
             "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"}]}),
        config(),
    ]
}

/// Whatever the bytes: a refusal is one short line; an accepted manifest is for this image, with one
/// code layer under the limit; an accepted config is for this wasm and engine; the referrers kept are
/// precompiled code only.
#[test]
fn precompiled_code_documents() {
    check("precompiled-code manifests, configs, referrers", DEFAULT_CASES, near_valid(documents()), |bytes| {
        match check_manifest(&bytes, &subject()) {
            Ok((config, layer)) => {
                let manifest: Value = serde_json::from_slice(&bytes).expect("accepted bytes are JSON");
                let subject = subject().to_string();
                prop_assert_eq!(manifest["subject"]["digest"].as_str(), Some(subject.as_str()));
                prop_assert_eq!(config.media_type.as_str(), CONFIG_TYPE);
                prop_assert_eq!(layer.media_type.as_str(), CODE_TYPE);
                prop_assert!(layer.size <= MAX_CODE_BYTES);
            }
            Err(e) => one_line(&e)?,
        }
        match check_config(&bytes, &Digest::of(&bytes), &wasm(), FINGERPRINT) {
            Ok(config) => {
                prop_assert_eq!(config.wasm, wasm());
                prop_assert_eq!(config.fingerprint.as_str(), FINGERPRINT);
            }
            Err(e) => one_line(&e)?,
        }
        // The digest the manifest names must be the config's: another one is refused whatever it says.
        prop_assert!(check_config(&bytes, &Digest::of(b"other"), &wasm(), FINGERPRINT).is_err());
        match parse_referrers(&bytes) {
            Ok(referrers) => prop_assert!(referrers.iter().all(|r| r.artifact_type.as_deref() == Some(ARTIFACT_TYPE))),
            Err(e) => one_line(&e)?,
        }
        Ok(())
    });
}

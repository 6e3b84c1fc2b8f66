//! Manifests, indexes (`Content::parse`) and configs (`image::classify_for`).

use proptest::prelude::*;
use proptest::strategy::Union;
use serde_json::{Value, json};
use wasmcell_oci::Digest;
use wasmcell_oci::image::{self, Content, ImageKind};
use wasmcell_props::{DEFAULT_CASES, check, json as any_json, mutate_json, one_line, text};

fn descriptor(media_type: &str, title: Option<&str>) -> Value {
    let mut d = json!({"mediaType": media_type, "digest": Digest::of(media_type.as_bytes()).to_string(), "size": 12});
    if let Some(t) = title {
        d["annotations"] = json!({ image::TITLE_ANNOTATION: t });
    }
    d
}

/// One valid document of each kind: artifact, wasm-layer and compat manifests, an index.
fn valid_manifests() -> Vec<Value> {
    let tar = "application/vnd.oci.image.layer.v1.tar+gzip";
    vec![
        json!({"schemaVersion": 2, "mediaType": image::OCI_MANIFEST, "config": descriptor(image::WASM_CONFIG, None),
               "layers": [descriptor(image::WASM_LAYER, Some("app.wasm"))], "annotations": {"k": "v"}}),
        json!({"schemaVersion": 2, "mediaType": image::OCI_MANIFEST, "config": descriptor(image::OCI_CONFIG, None),
               "layers": [descriptor(image::COMPONENT_LAYER, Some("/a.wasm")), descriptor(image::WASM_LAYER, Some("b.wasm"))]}),
        json!({"schemaVersion": 2, "config": descriptor(image::DOCKER_CONFIG, None), "layers": [descriptor(tar, None)],
               "annotations": { image::VARIANT_ANNOTATION: "compat" }}),
        json!({"schemaVersion": 2, "mediaType": image::OCI_INDEX, "manifests": [
            {"mediaType": image::OCI_MANIFEST, "digest": Digest::of(b"m").to_string(), "size": 7,
             "platform": {"architecture": "wasm", "os": "wasip2"}},
            {"mediaType": image::OCI_MANIFEST, "digest": Digest::of(b"n").to_string(), "size": 9,
             "platform": {"architecture": "amd64", "os": "linux", "variant": "v2"}}]}),
    ]
}

fn valid_configs() -> Vec<Value> {
    vec![
        json!({"architecture": "wasm", "os": "wasip1", "layerDigests": [Digest::of(b"w").to_string()],
               "component": {"exports": ["wasi:cli/run@0.2.0"], "imports": []}}),
        json!({"architecture": "wasm", "os": "wasip1", "config": {"Entrypoint": ["/a.wasm"], "Cmd": ["x"], "Env": ["A=1"]}}),
        json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/app.wasm"], "WorkingDir": "/"}}),
    ]
}

/// Mostly `docs` (each as is, or mutated), sometimes random bytes, text or JSON (also the precompiled-code
/// property's input).
pub(crate) fn near_valid(docs: Vec<Value>) -> impl Strategy<Value = Vec<u8>> {
    let each = docs.into_iter().flat_map(|d| [(1, Just(d.clone()).boxed()), (4, mutate_json(d).boxed())]);
    let mutated = Union::new_weighted(each.collect()).prop_map(|v| serde_json::to_vec(&v).expect("a value serializes"));
    prop_oneof![
        8 => mutated,
        1 => proptest::collection::vec(any::<u8>(), 0..200),
        1 => text().prop_map(String::into_bytes),
        1 => any_json().prop_map(|v| serde_json::to_vec(&v).expect("a value serializes")),
    ]
}

fn media_type() -> impl Strategy<Value = Option<String>> {
    let known = vec![image::OCI_MANIFEST, image::OCI_INDEX, image::DOCKER_MANIFEST, image::DOCKER_LIST, "application/json"];
    prop_oneof![Just(None), proptest::sample::select(known).prop_map(|m| Some(m.to_string())), text().prop_map(Some)]
}

/// An error is one short line; what parses is schema version 2, and serializes to bytes that parse
/// (with the same media type) to the same document.
#[test]
fn manifests_and_indexes() {
    check("manifests and indexes", DEFAULT_CASES, (near_valid(valid_manifests()), media_type()), |(bytes, media_type)| {
        let parsed = match Content::parse(&bytes, media_type.as_deref()) {
            Ok(c) => c,
            Err(e) => return one_line(&e),
        };
        let (again, before) = match &parsed {
            Content::Manifest(m) => {
                prop_assert_eq!(m.schema_version, 2);
                (serde_json::to_vec(m), serde_json::to_value(m))
            }
            Content::Index(i) => {
                prop_assert_eq!(i.schema_version, 2);
                (serde_json::to_vec(i), serde_json::to_value(i))
            }
        };
        let again = Content::parse(&again.expect("serializes"), media_type.as_deref())
            .map_err(|e| TestCaseError::fail(format!("re-serialized content does not parse: {e}")))?;
        let after = match &again {
            Content::Manifest(m) => serde_json::to_value(m),
            Content::Index(i) => serde_json::to_value(i),
        };
        prop_assert_eq!(before.expect("serializes"), after.expect("serializes"));
        Ok(())
    });
}

/// An error is one short line; an accepted image is what its kind promises: an artifact's one
/// `application/wasm` layer, a wasm-layer image's architecture `wasm` and one of its wasm layers, a
/// compat image's tar layers (all of them) and an Entrypoint or Cmd.
#[test]
fn configs_classified() {
    let input = (near_valid(valid_manifests()), near_valid(valid_configs()), any::<bool>(), proptest::option::of(text()));
    check("manifests + configs (classify)", DEFAULT_CASES, input, |(manifest, config, from_wasm_platform, module)| {
        let Ok(Content::Manifest(m)) = Content::parse(&manifest, None) else { return Ok(()) };
        let img = match image::classify_for(m.clone(), &config, from_wasm_platform, module.as_deref()) {
            Ok(img) => img,
            Err(e) => return one_line(&e),
        };
        match img.kind {
            ImageKind::Artifact => {
                prop_assert_eq!(m.layers.len(), 1);
                prop_assert_eq!(img.wasm_layer.as_ref(), Some(&m.layers[0]));
                prop_assert_eq!(m.layers[0].media_type.as_str(), image::WASM_LAYER);
            }
            ImageKind::WasmLayer => {
                prop_assert_eq!(img.architecture.as_str(), "wasm");
                let layer = img.wasm_layer.as_ref().expect("a wasm-layer image names its layer");
                prop_assert!(m.layers.contains(layer) && image::is_wasm_layer(&layer.media_type));
            }
            ImageKind::Compat => {
                prop_assert!(img.wasm_layer.is_none());
                prop_assert_eq!(&img.rootfs_layers, &m.layers);
                prop_assert!(m.layers.iter().all(|l| l.media_type.contains(".tar")), "{:?}", m.layers);
                prop_assert!(!img.entrypoint.is_empty() || !img.cmd.is_empty());
            }
        }
        Ok(())
    });
}

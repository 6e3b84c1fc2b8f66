//! Image formats: the three wasmcell reads and the one it writes.
//!
//! 1. **CNCF Wasm artifact** (TAG-Runtime's `wasm-oci-artifact` layout, what wkg, Spin and wasmCloud
//!    use): config `application/vnd.wasm.config.v0+json`, exactly one `application/wasm` layer.
//!    This is what `wasmcell push FILE` writes ([`build_artifact`]).
//! 2. **runwasi wasm-layer images**: an ordinary image config with architecture `wasm`, whose layers
//!    are `application/vnd.bytecodealliance.wasm.component.layer.v0+wasm` or `application/wasm`.
//! 3. **Compat images**: tar layers holding the `.wasm` in a rootfs, marked by the manifest
//!    annotation `module.wasm.image/variant=compat|compat-smart` or by a wasm platform. The config's
//!    Entrypoint/Cmd names the module.
//!
//! From an index, [`choose_platform`] picks the wasm platform.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER: &str = "application/wasm";
pub const COMPONENT_LAYER: &str = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
/// The layer media types taken as a module or component in a wasm-layer image (the artifact's
/// own is [`WASM_LAYER`] alone), for `wasmcell run` and the shim alike.
pub const WASM_LAYER_TYPES: &[&str] = &[WASM_LAYER, COMPONENT_LAYER];
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const VARIANT_ANNOTATION: &str = "module.wasm.image/variant";
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

/// Media types a manifest GET asks for, most preferred first.
pub const ACCEPT: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// An OCI descriptor as found in manifests and indexes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Top-level content: a manifest or an index.
#[derive(Clone, Debug)]
pub enum Content {
    Manifest(Manifest),
    Index(Index),
}

impl Content {
    /// Parses manifest bytes. `media_type` is what the registry or descriptor said, if anything.
    pub fn parse(bytes: &[u8], media_type: Option<&str>) -> Result<Content> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            schema_version: Option<u32>,
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(|e| Error::InvalidImage(format!("manifest is not JSON: {e}")))?;
        if probe.schema_version != Some(2) {
            return Err(Error::InvalidImage(format!("unsupported manifest schema version {:?} (only 2)", probe.schema_version)));
        }
        let media_type = probe.media_type.as_deref().or(media_type).filter(|m| !m.is_empty() && !m.starts_with("application/json"));
        let is_index = match media_type {
            Some(OCI_INDEX | DOCKER_LIST) => true,
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
            Some(other) => return Err(Error::UnsupportedMediaType(other.to_string())),
            None => probe.manifests.is_some(),
        };
        let invalid = |e: serde_json::Error| Error::InvalidImage(format!("malformed manifest: {e}"));
        Ok(if is_index {
            Content::Index(serde_json::from_slice(bytes).map_err(invalid)?)
        } else {
            Content::Manifest(serde_json::from_slice(bytes).map_err(invalid)?)
        })
    }
}

/// Whether a platform is a Wasm one, and how much we like it (higher is better).
fn wasm_platform_rank(p: &Platform) -> Option<u8> {
    match (p.os.as_str(), p.architecture.as_str()) {
        ("wasip3", _) => Some(4),
        ("wasip2", _) => Some(3),
        ("wasip1", _) => Some(2),
        ("wasi", _) => Some(1),
        (_, "wasm" | "wasm32") => Some(1),
        _ => None,
    }
}

/// Picks the wasm platform's manifest from an index. An index whose only entry has no platform
/// (as artifact tools write) yields that entry.
pub fn choose_platform(index: &Index) -> Result<&Descriptor> {
    let best = index.manifests.iter().filter_map(|d| Some((wasm_platform_rank(d.platform.as_ref()?)?, d))).max_by_key(|(rank, _)| *rank);
    if let Some((_, d)) = best {
        return Ok(d);
    }
    if let [only] = index.manifests.as_slice()
        && only.platform.is_none()
    {
        return Ok(only);
    }
    let platforms: Vec<String> = index
        .manifests
        .iter()
        .map(|d| d.platform.as_ref().map_or("(none)".to_string(), |p| format!("{}/{}", p.os, p.architecture)))
        .collect();
    Err(Error::InvalidImage(format!("no wasm platform in the image index (has: {})", platforms.join(", "))))
}

/// Which of the three formats an image is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageKind {
    /// CNCF Wasm OCI artifact.
    Artifact,
    /// runwasi wasm-layer image.
    WasmLayer,
    /// Ordinary image with the .wasm in its rootfs.
    Compat,
}

impl std::fmt::Display for ImageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImageKind::Artifact => "artifact",
            ImageKind::WasmLayer => "wasm-layer",
            ImageKind::Compat => "compat",
        })
    }
}

/// The config of an ordinary (OCI or Docker) image; only what running needs.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
}

/// The CNCF Wasm artifact config (`application/vnd.wasm.config.v0+json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub layer_digests: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<ComponentInfo>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ComponentInfo {
    #[serde(default)]
    pub exports: Vec<String>,
    #[serde(default)]
    pub imports: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A classified image manifest: what it is and where its wasm is.
#[derive(Clone, Debug)]
pub struct Image {
    pub kind: ImageKind,
    pub manifest: Manifest,
    /// The layer that is the module or component (artifact and wasm-layer images).
    pub wasm_layer: Option<Descriptor>,
    /// The compat image's rootfs layers, in order.
    pub rootfs_layers: Vec<Descriptor>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub os: String,
    pub architecture: String,
    /// The CNCF config, for artifacts.
    pub wasm_config: Option<WasmConfig>,
}

fn is_tar_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.v1.tar")
        || media_type.starts_with("application/vnd.docker.image.rootfs.diff.tar")
}

/// Decides which format `manifest` is, given its config blob.
///
/// `from_wasm_platform` says the manifest was picked from an index by a wasm platform.
pub fn classify(manifest: Manifest, config: &[u8], from_wasm_platform: bool) -> Result<Image> {
    classify_for(manifest, config, from_wasm_platform, None)
}

/// [`classify`], with the module the caller names (an OCI runtime spec's `args[0]`) instead of the
/// config's Entrypoint picking among several wasm layers by their title.
pub fn classify_for(manifest: Manifest, config: &[u8], from_wasm_platform: bool, module: Option<&str>) -> Result<Image> {
    if manifest.config.media_type == WASM_CONFIG {
        return classify_artifact(manifest, config);
    }
    if manifest.config.media_type != OCI_CONFIG && manifest.config.media_type != DOCKER_CONFIG {
        return Err(Error::UnsupportedMediaType(manifest.config.media_type.clone()));
    }
    let image_config: ImageConfig =
        serde_json::from_slice(config).map_err(|e| Error::InvalidImage(format!("malformed image config: {e}")))?;
    let cc = image_config.config.clone().unwrap_or_default();
    let wasm_platform = from_wasm_platform
        || wasm_platform_rank(&Platform { architecture: image_config.architecture.clone(), os: image_config.os.clone(), variant: None })
            .is_some();
    let image = Image {
        kind: ImageKind::Compat,
        wasm_layer: None,
        rootfs_layers: Vec::new(),
        entrypoint: cc.entrypoint.unwrap_or_default(),
        cmd: cc.cmd.unwrap_or_default(),
        env: cc.env.unwrap_or_default(),
        os: image_config.os,
        architecture: image_config.architecture,
        wasm_config: None,
        manifest,
    };
    if image.manifest.layers.iter().any(|l| is_wasm_layer(&l.media_type)) {
        classify_wasm_layer(image, module)
    } else {
        classify_compat(image, wasm_platform)
    }
}

/// Whether a layer of this media type is a module or component (see [`WASM_LAYER_TYPES`]).
pub fn is_wasm_layer(media_type: &str) -> bool {
    WASM_LAYER_TYPES.contains(&media_type)
}

/// The CNCF Wasm artifact: exactly one `application/wasm` layer.
fn classify_artifact(manifest: Manifest, config: &[u8]) -> Result<Image> {
    let wasm_layers: Vec<&Descriptor> = manifest.layers.iter().filter(|l| l.media_type == WASM_LAYER).collect();
    if manifest.layers.len() != 1 || wasm_layers.len() != 1 {
        return Err(Error::InvalidImage(format!(
            "a Wasm artifact has exactly one {WASM_LAYER} layer, this one has {} layers ({} wasm)",
            manifest.layers.len(),
            wasm_layers.len()
        )));
    }
    let wasm_config: WasmConfig =
        serde_json::from_slice(config).map_err(|e| Error::InvalidImage(format!("malformed {WASM_CONFIG} config: {e}")))?;
    let layer = wasm_layers[0].clone();
    Ok(Image {
        kind: ImageKind::Artifact,
        wasm_layer: Some(layer),
        rootfs_layers: Vec::new(),
        entrypoint: Vec::new(),
        cmd: Vec::new(),
        env: Vec::new(),
        os: wasm_config.os.clone(),
        architecture: wasm_config.architecture.clone(),
        wasm_config: Some(wasm_config),
        manifest,
    })
}

/// runwasi's wasm-layer image (architecture `wasm`). Several wasm layers: `module`, else the
/// entrypoint, names the one to run by its title.
fn classify_wasm_layer(mut image: Image, module: Option<&str>) -> Result<Image> {
    if image.architecture != "wasm" {
        return Err(Error::InvalidImage(format!("wasm layers in an image whose architecture is {:?}, not \"wasm\"", image.architecture)));
    }
    let wasm_layers: Vec<&Descriptor> = image.manifest.layers.iter().filter(|l| is_wasm_layer(&l.media_type)).collect();
    let layer = match wasm_layers.as_slice() {
        [one] => (*one).clone(),
        many => {
            let want = module.or(image.entrypoint.first().map(String::as_str)).map(|e| e.trim_start_matches('/'));
            let title = |l: &Descriptor| l.annotations.get(TITLE_ANNOTATION).map(|t| t.trim_start_matches('/').to_string());
            many.iter().find(|l| want.is_some() && title(l).as_deref() == want).map(|l| (*l).clone()).ok_or_else(|| {
                let titles: Vec<String> = many.iter().filter_map(|l| title(l)).collect();
                let named = match want {
                    None => "no entrypoint naming one of them".to_string(),
                    Some(w) => format!("none titled {w:?}"),
                };
                Error::InvalidImage(format!("{} wasm layers and {named} by its {TITLE_ANNOTATION} ({})", many.len(), titles.join(", ")))
            })?
        }
    };
    image.kind = ImageKind::WasmLayer;
    image.wasm_layer = Some(layer);
    Ok(image)
}

/// A compat image: tar layers, marked by the variant annotation or a wasm platform, whose
/// Entrypoint/Cmd names the module.
fn classify_compat(mut image: Image, wasm_platform: bool) -> Result<Image> {
    let variant = image.manifest.annotations.get(VARIANT_ANNOTATION).map(String::as_str);
    let marked = matches!(variant, Some("compat" | "compat-smart"));
    if !marked && !wasm_platform {
        return Err(Error::InvalidImage(format!(
            "not a wasm image: platform {}/{}, no wasm layers and no {VARIANT_ANNOTATION} annotation",
            image.os, image.architecture
        )));
    }
    if let Some(bad) = image.manifest.layers.iter().find(|l| !is_tar_layer(&l.media_type)) {
        return Err(Error::UnsupportedMediaType(bad.media_type.clone()));
    }
    if image.entrypoint.is_empty() && image.cmd.is_empty() {
        return Err(Error::InvalidImage("compat image has neither Entrypoint nor Cmd to name its module".into()));
    }
    image.rootfs_layers = image.manifest.layers.clone();
    Ok(image)
}

/// A CNCF Wasm artifact ready to store or push: config and manifest bytes, and the layer.
#[derive(Clone, Debug)]
pub struct Artifact {
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub layer: Descriptor,
}

impl Artifact {
    pub fn manifest_digest(&self) -> Digest {
        Digest::of(&self.manifest)
    }
}

/// What the wasm binary says about itself, for the artifact config and annotations.
#[derive(Clone, Debug, Default)]
pub struct WasmFacts {
    pub is_component: bool,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    /// Top-level metadata custom sections (`version`, `description`, ...), as OCI annotations.
    pub annotations: BTreeMap<String, String>,
    pub authors: Option<String>,
}

/// Reads imports, exports and metadata of a module or component (never runs it).
pub fn wasm_facts(wasm: &[u8]) -> Result<WasmFacts> {
    let mut facts = WasmFacts::default();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| Error::InvalidImage(format!("not a valid wasm binary: {e}")))?;
        match payload {
            wasmparser::Payload::Version { encoding, .. } => {
                if depth == 0 {
                    facts.is_component = encoding == wasmparser::Encoding::Component;
                }
                depth += 1;
            }
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::CustomSection(c) if depth == 1 => {
                let key = match c.name() {
                    "version" => "org.opencontainers.image.version",
                    "description" => "org.opencontainers.image.description",
                    "source" => "org.opencontainers.image.source",
                    "homepage" => "org.opencontainers.image.url",
                    "revision" => "org.opencontainers.image.revision",
                    "licenses" => "org.opencontainers.image.licenses",
                    "authors" => "org.opencontainers.image.authors",
                    _ => continue,
                };
                if let Ok(text) = std::str::from_utf8(c.data()) {
                    let text = text.trim().to_string();
                    if !text.is_empty() {
                        if c.name() == "authors" {
                            facts.authors = Some(text.clone());
                        }
                        facts.annotations.insert(key.to_string(), text);
                    }
                }
            }
            _ => {}
        }
    }
    if facts.is_component
        && let Ok(wit_component::DecodedWasm::Component(resolve, world)) = wit_component::decode(wasm)
    {
        let world = &resolve.worlds[world];
        facts.imports = world.imports.keys().map(|k| resolve.name_world_key(k)).collect();
        facts.exports = world.exports.keys().map(|k| resolve.name_world_key(k)).collect();
    }
    Ok(facts)
}

impl WasmFacts {
    /// The artifact config's `os`: `wasip3` for a component that names any WASI 0.3 interface (it may
    /// import 0.2 ones too), `wasip2` for other components, `wasip1` for modules.
    pub fn os(&self) -> &'static str {
        let p3 = self.imports.iter().chain(&self.exports).any(|n| n.starts_with("wasi:") && n.contains("@0.3."));
        match (self.is_component, p3) {
            (false, _) => "wasip1",
            (true, true) => "wasip3",
            (true, false) => "wasip2",
        }
    }
}

/// Builds the CNCF Wasm artifact for `wasm`. `title` names the layer (usually the file name);
/// `annotations` (from `--annotation`) override those read from the binary.
pub fn build_artifact(wasm: &[u8], title: &str, annotations: &BTreeMap<String, String>, created: &str) -> Result<Artifact> {
    let facts = wasm_facts(wasm)?;
    let layer_digest = Digest::of(wasm);
    let config = WasmConfig {
        created: Some(created.to_string()),
        author: facts.authors.clone(),
        architecture: "wasm".into(),
        os: facts.os().into(),
        layer_digests: vec![layer_digest.to_string()],
        component: facts.is_component.then(|| ComponentInfo {
            exports: facts.exports.clone(),
            imports: facts.imports.clone(),
            target: None,
        }),
    };
    let config = serde_json::to_vec(&config).expect("config serializes");
    let mut manifest_annotations = facts.annotations.clone();
    manifest_annotations.insert("org.opencontainers.image.created".into(), created.to_string());
    manifest_annotations.extend(annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
    let layer = Descriptor {
        media_type: WASM_LAYER.into(),
        digest: layer_digest,
        size: wasm.len() as u64,
        platform: None,
        annotations: BTreeMap::from([(TITLE_ANNOTATION.to_string(), title.to_string())]),
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor {
            media_type: WASM_CONFIG.into(),
            digest: Digest::of(&config),
            size: config.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        },
        layers: vec![layer.clone()],
        annotations: manifest_annotations,
    };
    let manifest = serde_json::to_vec(&manifest).expect("manifest serializes");
    Ok(Artifact { config, manifest, layer })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: &str = r#"(module (@custom "version" "1.2.3") (@custom "description" "a test") (func (export "_start")))"#;

    #[test]
    fn the_artifact_os_names_the_newest_wasi_a_component_uses() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p2 = WasmFacts { is_component: true, imports: names(&["wasi:cli/stdout@0.2.4"]), ..WasmFacts::default() };
        assert_eq!(p2.os(), "wasip2");
        // What a Rust wasm32-wasip3 program imports: 0.2 and 0.3 both.
        let both = WasmFacts { imports: names(&["wasi:io/poll@0.2.4", "wasi:cli/environment@0.3.0"]), ..p2.clone() };
        assert_eq!(both.os(), "wasip3");
        let p3_export = WasmFacts { exports: names(&["wasi:http/handler@0.3.0"]), ..p2.clone() };
        assert_eq!(p3_export.os(), "wasip3");
        assert_eq!(WasmFacts { is_component: false, ..both }.os(), "wasip1");
        assert_eq!(WasmFacts { imports: names(&["acme:lib/api@0.3.0"]), ..p2 }.os(), "wasip2", "only wasi: names count");
    }

    #[test]
    fn artifact_of_a_module() {
        let wasm = wat::parse_str(MODULE).unwrap();
        let a = build_artifact(&wasm, "app.wasm", &BTreeMap::from([("k".into(), "v".into())]), "2026-11-21T00:00:00Z").unwrap();
        let Content::Manifest(m) = Content::parse(&a.manifest, None).unwrap() else { panic!("index") };
        assert_eq!(m.config.media_type, WASM_CONFIG);
        assert_eq!(m.annotations["org.opencontainers.image.version"], "1.2.3");
        assert_eq!(m.annotations["org.opencontainers.image.description"], "a test");
        assert_eq!(m.annotations["k"], "v");
        assert_eq!(m.layers[0].annotations[TITLE_ANNOTATION], "app.wasm");
        let img = classify(m, &a.config, false).unwrap();
        assert_eq!(img.kind, ImageKind::Artifact);
        assert_eq!(img.os, "wasip1");
        assert_eq!(img.wasm_config.unwrap().layer_digests, vec![Digest::of(&wasm).to_string()]);
    }

    #[test]
    fn component_facts() {
        let wasm = wat::parse_str(
            r#"(component
                (import "wasi:cli/environment@0.2.0" (instance))
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (instance $run (export "run" (func $f)))
                (export "wasi:cli/run@0.2.0" (instance $run)))"#,
        )
        .unwrap();
        let facts = wasm_facts(&wasm).unwrap();
        assert!(facts.is_component);
        assert_eq!(facts.imports, vec!["wasi:cli/environment@0.2.0"]);
        assert_eq!(facts.exports, vec!["wasi:cli/run@0.2.0"]);
    }

    fn manifest(config_type: &str, layers: &[&str], annotations: &[(&str, &str)]) -> Manifest {
        let d = |t: &str| Descriptor {
            media_type: t.into(),
            digest: Digest::of(t.as_bytes()),
            size: 1,
            platform: None,
            annotations: BTreeMap::new(),
        };
        Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            artifact_type: None,
            config: d(config_type),
            layers: layers.iter().map(|l| d(l)).collect(),
            annotations: annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn classifies_the_three_formats() {
        let artifact_cfg = br#"{"architecture":"wasm","os":"wasip2","layerDigests":[]}"#;
        assert!(classify(manifest(WASM_CONFIG, &[WASM_LAYER, WASM_LAYER], &[]), artifact_cfg, false).is_err());
        assert!(classify(manifest(WASM_CONFIG, &["application/octet-stream"], &[]), artifact_cfg, false).is_err());

        let wasm_cfg = br#"{"architecture":"wasm","os":"wasip1"}"#;
        let img = classify(manifest(OCI_CONFIG, &[COMPONENT_LAYER], &[]), wasm_cfg, false).unwrap();
        assert_eq!(img.kind, ImageKind::WasmLayer);

        let compat_cfg = br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/app.wasm"]}}"#;
        let tar = "application/vnd.oci.image.layer.v1.tar+gzip";
        let img = classify(manifest(OCI_CONFIG, &[tar], &[(VARIANT_ANNOTATION, "compat")]), compat_cfg, false).unwrap();
        assert_eq!(img.kind, ImageKind::Compat);
        assert_eq!(img.entrypoint, vec!["/app.wasm"]);
        let err = classify(manifest(OCI_CONFIG, &[tar], &[]), compat_cfg, false).unwrap_err();
        assert!(err.to_string().contains("not a wasm image"), "{err}");
        let wasi_cfg = br#"{"architecture":"wasm","os":"wasi","config":{"Cmd":["/app.wasm"]}}"#;
        assert_eq!(classify(manifest(OCI_CONFIG, &[tar], &[]), wasi_cfg, false).unwrap().kind, ImageKind::Compat);
        assert!(matches!(classify(manifest("application/x-unknown", &[tar], &[]), wasi_cfg, false), Err(Error::UnsupportedMediaType(_))));
        assert!(matches!(
            classify(
                manifest(OCI_CONFIG, &["application/vnd.oci.image.layer.v1.tar+zstd-unknown+x"], &[(VARIANT_ANNOTATION, "compat")]),
                compat_cfg,
                false
            ),
            Err(Error::UnsupportedMediaType(_)) | Ok(_)
        ));
    }

    #[test]
    fn picks_the_wasm_platform() {
        let entry = |os: &str, arch: &str| Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::of(format!("{os}{arch}").as_bytes()),
            size: 1,
            platform: Some(Platform { architecture: arch.into(), os: os.into(), variant: None }),
            annotations: BTreeMap::new(),
        };
        let index = Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            manifests: vec![entry("linux", "amd64"), entry("wasip1", "wasm"), entry("wasip2", "wasm")],
            annotations: BTreeMap::new(),
        };
        assert_eq!(choose_platform(&index).unwrap().platform.as_ref().unwrap().os, "wasip2");
        let index = Index { manifests: vec![entry("linux", "amd64")], ..index };
        let err = choose_platform(&index).unwrap_err();
        assert!(err.to_string().contains("linux/amd64"), "{err}");
    }

    #[test]
    fn rejects_unknown_manifest_media_types() {
        let bytes = br#"{"schemaVersion":2,"mediaType":"application/vnd.example.thing+json","layers":[]}"#;
        assert!(matches!(Content::parse(bytes, None), Err(Error::UnsupportedMediaType(_))));
        let bytes = br#"{"schemaVersion":1,"name":"x"}"#;
        assert!(matches!(Content::parse(bytes, None), Err(Error::InvalidImage(_))));
    }
}

//! The "simple signing" payload: the JSON document a cosign signature signs.
//!
//! ```json
//! {"critical":{"identity":{"docker-reference":"registry.example/app:v1"},
//!              "image":{"docker-manifest-digest":"sha256:<64 hex>"},
//!              "type":"cosign container image signature"},
//!  "optional":null}
//! ```
//!
//! [`Payload::parse`] reads it as containers/image does (`signature/internal/sigstore_payload.go`): the
//! top level has exactly `critical` and `optional` (both present, no duplicates), `critical` has exactly
//! `type`, `image` and `identity`, each of those exactly its one field; `optional` is `null` or an object
//! whose other members are ignored, `creator` being a string and `timestamp` an integer when present.
//! Stricter than containers/image: the digest must be `sha256:` and 64 lowercase hex digits (containers/image
//! also accepts other algorithms), and a payload is at most [`PAYLOAD_LIMIT`] bytes.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result, shown, shown_err};

/// The largest payload [`Payload::parse`] reads (containers/image allows 4 MiB; cosign writes ~250 bytes).
pub const PAYLOAD_LIMIT: usize = 64 * 1024;
/// The value of `critical.type`.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

/// A parsed or new simple-signing payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// `critical.identity.docker-reference`: the reference the signer meant (as written, not normalized).
    pub docker_reference: String,
    /// `critical.image.docker-manifest-digest`: `sha256:<hex>` of the signed manifest.
    pub manifest_digest: String,
    /// `optional`: `None` for `null` (what cosign writes without annotations).
    optional: Option<Map<String, Value>>,
}

#[derive(Serialize)]
struct Doc {
    critical: Critical,
    optional: Value,
}

#[derive(Serialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Serialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Serialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

impl Payload {
    /// A payload for `manifest_digest` (checked: `sha256:` + 64 lowercase hex) signed as `docker_reference`
    /// (a full reference such as `registry.example/ns/app:v1`), with `"optional": null` as cosign writes.
    pub fn new(docker_reference: &str, manifest_digest: &str) -> Result<Payload> {
        check_digest(manifest_digest)?;
        Ok(Payload { docker_reference: docker_reference.to_owned(), manifest_digest: manifest_digest.to_owned(), optional: None })
    }

    /// Reads a payload a stranger wrote (see the module documentation for the rules).
    pub fn parse(bytes: &[u8]) -> Result<Payload> {
        if bytes.len() > PAYLOAD_LIMIT {
            return Err(Error::Payload(format!("{} bytes, more than the limit of {PAYLOAD_LIMIT}", bytes.len())));
        }
        let doc = strict_json(bytes).map_err(Error::Payload)?;
        let bad = |m: String| Error::Payload(m);
        let top = exact_object(&doc, "the payload", &["critical", "optional"]).map_err(bad)?;
        let critical = exact_object(&top["critical"], "critical", &["type", "image", "identity"]).map_err(bad)?;
        let kind = string(&critical["type"], "critical.type").map_err(bad)?;
        let image = exact_object(&critical["image"], "critical.image", &["docker-manifest-digest"]).map_err(bad)?;
        let digest = string(&image["docker-manifest-digest"], "docker-manifest-digest").map_err(bad)?;
        let identity = exact_object(&critical["identity"], "critical.identity", &["docker-reference"]).map_err(bad)?;
        let docker_reference = string(&identity["docker-reference"], "docker-reference").map_err(bad)?;
        if kind != SIGNATURE_TYPE {
            return Err(Error::Payload(format!("type \"{}\" is not \"{SIGNATURE_TYPE}\"", shown(kind))));
        }
        let optional = match top["optional"].clone() {
            Value::Null => None,
            Value::Object(map) => {
                if let Some(creator) = map.get("creator")
                    && !creator.is_string()
                {
                    return Err(Error::Payload("optional.creator is not a string".into()));
                }
                if let Some(timestamp) = map.get("timestamp")
                    && integral(timestamp).is_none()
                {
                    return Err(Error::Payload("optional.timestamp is not an integer".into()));
                }
                Some(map)
            }
            _ => return Err(Error::Payload("optional is neither null nor an object".into())),
        };
        check_digest(digest).map_err(|_| {
            Error::Payload(format!("docker-manifest-digest \"{}\" is not sha256: and 64 lowercase hex digits", shown(digest)))
        })?;
        Ok(Payload { docker_reference: docker_reference.to_owned(), manifest_digest: digest.to_owned(), optional })
    }

    /// The JSON bytes to sign (members in cosign's order, no whitespace).
    pub fn to_bytes(&self) -> Vec<u8> {
        let doc = Doc {
            critical: Critical {
                identity: Identity { docker_reference: self.docker_reference.clone() },
                image: Image { docker_manifest_digest: self.manifest_digest.clone() },
                kind: SIGNATURE_TYPE.to_owned(),
            },
            optional: self.optional.clone().map_or(Value::Null, Value::Object),
        };
        serde_json::to_vec(&doc).expect("a payload serializes")
    }

    /// `optional.creator`, if the signer named its tool.
    pub fn creator(&self) -> Option<&str> {
        self.optional.as_ref()?.get("creator")?.as_str()
    }

    /// `optional.timestamp` (seconds since the epoch), if the signer wrote one.
    pub fn timestamp(&self) -> Option<i64> {
        integral(self.optional.as_ref()?.get("timestamp")?)
    }
}

/// `bytes` as one JSON value, refusing duplicate object keys (as containers/image's "paranoid" decoding
/// does; serde_json alone keeps the last).
pub(crate) fn strict_json(bytes: &[u8]) -> std::result::Result<Value, String> {
    use serde::de::DeserializeSeed as _;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue.deserialize(&mut de).map_err(shown_err)?;
    de.end().map_err(shown_err)?;
    Ok(value)
}

struct StrictValue;

impl<'de> serde::de::DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> std::result::Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StrictValue {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        use serde::de::Error as _;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(A::Error::custom(format!("duplicate key \"{}\"", shown(&key))));
            }
            let value = map.next_value_seed(StrictValue)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// `value` as an object with exactly the members `fields`.
fn exact_object<'a>(value: &'a Value, what: &str, fields: &[&str]) -> std::result::Result<&'a Map<String, Value>, String> {
    let Value::Object(map) = value else {
        return Err(format!("{what} is not a JSON object"));
    };
    if let Some(unknown) = map.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(format!("{what} has an unknown member \"{}\"", shown(unknown)));
    }
    if let Some(missing) = fields.iter().find(|f| !map.contains_key(**f)) {
        return Err(format!("{what} has no member \"{missing}\""));
    }
    Ok(map)
}

fn string<'a>(value: &'a Value, what: &str) -> std::result::Result<&'a str, String> {
    value.as_str().ok_or_else(|| format!("{what} is not a string"))
}

/// A JSON number that is an integer (containers/image reads a float64 and requires it to be integral).
fn integral(value: &Value) -> Option<i64> {
    if let Some(i) = value.as_i64() {
        return Some(i);
    }
    let f = value.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 9.0e18).then_some(f as i64)
}

/// Checks that `digest` is `sha256:` followed by 64 lowercase hex digits.
pub fn check_digest(digest: &str) -> Result<()> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => Ok(()),
        _ => Err(Error::Digest(shown(digest))),
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn new_writes_the_cosign_bytes() {
        let p = Payload::new("registry.example/app:v1", DIGEST).unwrap();
        let expected = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"registry.example/app:v1"}},"image":{{"docker-manifest-digest":"{DIGEST}"}},"type":"cosign container image signature"}},"optional":null}}"#
        );
        assert_eq!(String::from_utf8(p.to_bytes()).unwrap(), expected);
        assert_eq!(Payload::parse(expected.as_bytes()).unwrap(), p);
        assert!(Payload::new("x", "sha256:ABC").is_err());
    }

    #[test]
    fn optional_fields_are_read_leniently() {
        let text = format!(
            r#"{{"critical":{{"type":"{SIGNATURE_TYPE}","image":{{"docker-manifest-digest":"{DIGEST}"}},"identity":{{"docker-reference":"a/b"}}}},"optional":{{"creator":"containers/image 5.23","timestamp":1700000000,"extra":[1,2]}}}}"#
        );
        let p = Payload::parse(text.as_bytes()).unwrap();
        assert_eq!(p.creator(), Some("containers/image 5.23"));
        assert_eq!(p.timestamp(), Some(1_700_000_000));
        assert_eq!(Payload::parse(&p.to_bytes()).unwrap(), p);
        let float = text.replace("1700000000", "1700000000.0");
        assert_eq!(Payload::parse(float.as_bytes()).unwrap().timestamp(), Some(1_700_000_000));
    }

    #[test]
    fn strict_checks() {
        let good = String::from_utf8(Payload::new("a/b", DIGEST).unwrap().to_bytes()).unwrap();
        let cases = [
            (good.replace(",\"optional\":null", ""), "has no member \"optional\""),
            (good.replace("cosign container image signature", "atomic container signature"), "type \"atomic"),
            (good.replace("\"type\"", "\"kind\""), "unknown member \"kind\""),
            (good.replace("null}", "null,\"x\":1}"), "unknown member \"x\""),
            (good.replace("abcdef\"", "ABCDEF\""), "docker-manifest-digest"),
            (good.replace("sha256:", "sha512:"), "docker-manifest-digest"),
            (good.replace("null", "{\"timestamp\":1.5}"), "timestamp is not an integer"),
            (good.replace("null", "{\"creator\":3}"), "creator is not a string"),
            (good.replace("null", "[]"), "neither null nor an object"),
            (
                good.replace("{\"docker-reference\":\"a/b\"}", "{\"docker-reference\":\"a/b\",\"docker-reference\":\"c\"}"),
                "duplicate key \"docker-reference\"",
            ),
            (good.replace("{\"docker-manifest-digest\":", "[").replace("abcdef\"}", "abcdef\"]"), "critical.image is not a JSON object"),
            (good.replace("null", "{\"a\":1,\"a\":2}"), "duplicate key"),
            ("[]".into(), "the payload is not a JSON object"),
            ("{} x".into(), "trailing characters"),
        ];
        for (text, want) in cases {
            let err = Payload::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{text}\n{err}");
        }
        let huge = vec![b' '; PAYLOAD_LIMIT + 1];
        assert!(Payload::parse(&huge).unwrap_err().to_string().contains("limit"));
    }

    #[test]
    fn digest_helpers() {
        check_digest(DIGEST).unwrap();
        assert!(check_digest("sha256:abc").is_err());
        assert_eq!(sha256_digest(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}

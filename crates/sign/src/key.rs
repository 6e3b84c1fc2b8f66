//! Keys in the files cosign and skopeo/containers-image read and write.
//!
//! * The public key is a `PUBLIC KEY` PEM block: the DER SubjectPublicKeyInfo of an ECDSA P-256 key (what
//!   `cosign generate-key-pair` writes to `cosign.pub`). Other algorithms and curves are refused.
//! * The private key is an `ENCRYPTED SIGSTORE PRIVATE KEY` PEM block (older cosign: `ENCRYPTED COSIGN
//!   PRIVATE KEY`, also read) whose body is the JSON of go-tuf's `encrypted` package:
//!   `{"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":"<base64>"},
//!   "cipher":{"name":"nacl/secretbox","nonce":"<base64>"},"ciphertext":"<base64>"}`.
//!   The secretbox key is `scrypt(password, salt, N, r, p)` (32 bytes) and the box holds the PKCS#8 DER of
//!   the EC private key. Decryption refuses scrypt parameters that would take more than
//!   [`SCRYPT_MAX_N`] and a bounded amount of memory and time, so a hostile key file cannot hang or
//!   exhaust the host.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Key, Nonce, XSalsa20Poly1305};
use p256::pkcs8::der::Decode as _;
use p256::pkcs8::spki::SubjectPublicKeyInfoRef;
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, ObjectIdentifier};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, shown, shown_err};

/// PEM type of the private key file sigstore (and cosign 2) writes.
pub const SIGSTORE_PRIVATE_KEY_PEM: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// PEM type of the private key file older cosign versions wrote; read, never written.
pub const COSIGN_PRIVATE_KEY_PEM: &str = "ENCRYPTED COSIGN PRIVATE KEY";
/// PEM type of the public key file.
pub const PUBLIC_KEY_PEM: &str = "PUBLIC KEY";
/// The most bytes of a key file (PEM) this crate reads.
pub const KEY_FILE_LIMIT: usize = 64 * 1024;
/// The largest scrypt `N` a private key may ask for (cosign uses 2^16).
pub const SCRYPT_MAX_N: u64 = 1 << 20;
/// The largest `N * r * p` (128 bytes each: time) and `N * r` (memory) a private key may ask for:
/// 2^21 is four times what cosign uses (`N` = 2^16, `r` = 8, `p` = 1), 256 MiB of memory at most.
pub const SCRYPT_MAX_WORK: u64 = 1 << 21;

/// The scrypt parameters [`generate`] writes: those of cosign and go-tuf's "standard" set.
pub const SCRYPT_N: u64 = 65536;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
const SALT_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// A PKCS#8 P-256 key is about 140 bytes; anything much larger is not one.
const MAX_PLAINTEXT: usize = 4096;

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// A freshly generated key pair, as the two files `cosign generate-key-pair` writes.
pub struct KeyPair {
    /// `ENCRYPTED SIGSTORE PRIVATE KEY` PEM (write it with mode 0600).
    pub private_pem: String,
    /// `PUBLIC KEY` PEM.
    pub public_pem: String,
    /// The private key itself, so the caller need not decrypt what it just encrypted.
    pub private_key: PrivateKey,
}

/// An ECDSA P-256 signing key.
#[derive(Clone)]
pub struct PrivateKey {
    pub(crate) key: p256::SecretKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey(public {})", self.public_key().fingerprint())
    }
}

/// An ECDSA P-256 verification key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub(crate) key: p256::PublicKey,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// Generates a P-256 key pair and encrypts the private key with `password` (which may be empty, as
/// cosign allows) in the sigstore format, with cosign's scrypt parameters.
pub fn generate(password: &[u8]) -> Result<KeyPair> {
    generate_with_cost(password, SCRYPT_N)
}

/// [`generate`] with another scrypt `N` (a power of two, at most [`SCRYPT_MAX_N`]); `r` and `p` stay 8
/// and 1. For tests, where a cheap key is enough; real keys should use [`generate`].
pub fn generate_with_cost(password: &[u8], n: u64) -> Result<KeyPair> {
    check_scrypt(n, SCRYPT_R, SCRYPT_P)?;
    let key = p256::SecretKey::random(&mut OsRng);
    let private_key = PrivateKey { key };
    let private_pem = private_key.encrypt_with_cost(password, n)?;
    let public_pem = private_key.public_key().to_pem();
    Ok(KeyPair { private_pem, public_pem, private_key })
}

#[derive(Serialize, Deserialize)]
struct EncryptedKey {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

impl PrivateKey {
    /// Reads an encrypted private key file: PEM type `ENCRYPTED SIGSTORE PRIVATE KEY` or `ENCRYPTED
    /// COSIGN PRIVATE KEY`, kdf `scrypt` within bounds, cipher `nacl/secretbox`, a P-256 PKCS#8 key
    /// inside. A password that does not open the box is [`Error::WrongPassword`].
    pub fn decrypt(pem: &[u8], password: &[u8]) -> Result<PrivateKey> {
        let bad = |m: String| Error::PrivateKey(m);
        if pem.len() > KEY_FILE_LIMIT {
            return Err(bad(format!("larger than {KEY_FILE_LIMIT} bytes")));
        }
        let (label, body) = pem_decode(pem).map_err(bad)?;
        if label != SIGSTORE_PRIVATE_KEY_PEM && label != COSIGN_PRIVATE_KEY_PEM {
            return Err(bad(format!("PEM type \"{}\" is not {SIGSTORE_PRIVATE_KEY_PEM} or {COSIGN_PRIVATE_KEY_PEM}", shown(&label))));
        }
        let doc: EncryptedKey = serde_json::from_slice(&body).map_err(|e| bad(format!("key JSON: {}", shown_err(e))))?;
        if doc.kdf.name != "scrypt" {
            return Err(bad(format!("kdf \"{}\" is not scrypt", shown(&doc.kdf.name))));
        }
        if doc.cipher.name != "nacl/secretbox" {
            return Err(bad(format!("cipher \"{}\" is not nacl/secretbox", shown(&doc.cipher.name))));
        }
        let ScryptParams { n, r, p } = doc.kdf.params;
        let params = check_scrypt(n, r, p)?;
        let salt = decode_field("salt", &doc.kdf.salt, 64)?;
        if !(16..=64).contains(&salt.len()) {
            return Err(bad(format!("salt is {} bytes, expected 16 to 64 (cosign writes 32)", salt.len())));
        }
        let nonce = decode_field("nonce", &doc.cipher.nonce, 64)?;
        if nonce.len() != NONCE_LEN {
            return Err(bad(format!("nonce is {} bytes, expected {NONCE_LEN}", nonce.len())));
        }
        let ciphertext = decode_field("ciphertext", &doc.ciphertext, MAX_PLAINTEXT + TAG_LEN)?;
        if ciphertext.len() <= TAG_LEN {
            return Err(bad(format!("ciphertext is {} bytes, too short for a sealed key", ciphertext.len())));
        }
        let mut secret = [0u8; KEY_LEN];
        scrypt::scrypt(password, &salt, &params, &mut secret).map_err(|e| bad(format!("scrypt: {e}")))?;
        let plain = XSalsa20Poly1305::new(Key::from_slice(&secret))
            .decrypt(Nonce::from_slice(&nonce), ciphertext.as_slice())
            .map_err(|_| Error::WrongPassword)?;
        let key =
            p256::SecretKey::from_pkcs8_der(&plain).map_err(|_| bad("the decrypted key is not a PKCS#8 ECDSA P-256 private key".into()))?;
        Ok(PrivateKey { key })
    }

    /// Reads and decrypts a private key file (at most [`KEY_FILE_LIMIT`] bytes).
    pub fn from_file(path: &Path, password: &[u8]) -> Result<PrivateKey> {
        PrivateKey::decrypt(&read_key_file(path, "private key file")?, password)
    }

    /// This key encrypted with `password` as an `ENCRYPTED SIGSTORE PRIVATE KEY` PEM, with a fresh salt
    /// and nonce and cosign's scrypt parameters.
    pub fn encrypt(&self, password: &[u8]) -> Result<String> {
        self.encrypt_with_cost(password, SCRYPT_N)
    }

    fn encrypt_with_cost(&self, password: &[u8], n: u64) -> Result<String> {
        let params = check_scrypt(n, SCRYPT_R, SCRYPT_P)?;
        let mut salt = [0u8; SALT_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.try_fill_bytes(&mut salt).map_err(|e| Error::Random(e.to_string()))?;
        OsRng.try_fill_bytes(&mut nonce).map_err(|e| Error::Random(e.to_string()))?;
        let mut secret = [0u8; KEY_LEN];
        scrypt::scrypt(password, &salt, &params, &mut secret).map_err(|e| Error::PrivateKey(format!("scrypt: {e}")))?;
        let der = self.key.to_pkcs8_der().map_err(|e| Error::PrivateKey(format!("PKCS#8 encoding: {e}")))?;
        let ciphertext = XSalsa20Poly1305::new(Key::from_slice(&secret))
            .encrypt(Nonce::from_slice(&nonce), der.as_bytes())
            .map_err(|_| Error::PrivateKey("secretbox sealing failed".into()))?;
        let doc = EncryptedKey {
            kdf: Kdf { name: "scrypt".into(), params: ScryptParams { n, r: SCRYPT_R, p: SCRYPT_P }, salt: STANDARD.encode(salt) },
            cipher: Cipher { name: "nacl/secretbox".into(), nonce: STANDARD.encode(nonce) },
            ciphertext: STANDARD.encode(ciphertext),
        };
        let json = serde_json::to_vec(&doc).expect("the key document serializes");
        Ok(pem_encode(SIGSTORE_PRIVATE_KEY_PEM, &json))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_p256(self.key.public_key())
    }
}

impl PublicKey {
    fn from_p256(key: p256::PublicKey) -> PublicKey {
        let spki_der = key.to_public_key_der().expect("a P-256 key encodes").into_vec();
        PublicKey { key, spki_der }
    }

    /// Reads a `PUBLIC KEY` PEM block (the first block of the text; text before it is ignored, as Go's
    /// `pem.Decode` does): an ECDSA P-256 SubjectPublicKeyInfo. RSA, Ed25519 and other curves are refused.
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey> {
        let bad = |m: String| Error::PublicKey(m);
        if pem.len() > KEY_FILE_LIMIT {
            return Err(bad(format!("larger than {KEY_FILE_LIMIT} bytes")));
        }
        let (label, der) = pem_decode(pem).map_err(bad)?;
        if label != PUBLIC_KEY_PEM {
            return Err(bad(format!("PEM type \"{}\" is not {PUBLIC_KEY_PEM}", shown(&label))));
        }
        PublicKey::from_der(&der)
    }

    /// Reads a DER SubjectPublicKeyInfo holding an ECDSA P-256 key.
    pub fn from_der(der: &[u8]) -> Result<PublicKey> {
        let bad = |m: String| Error::PublicKey(m);
        let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(|e| bad(format!("not a DER SubjectPublicKeyInfo: {}", shown_err(e))))?;
        let oid = spki.algorithm.oid;
        if oid == OID_RSA {
            return Err(bad("RSA keys are not supported (only ECDSA P-256)".into()));
        }
        if oid == OID_ED25519 {
            return Err(bad("Ed25519 keys are not supported (only ECDSA P-256)".into()));
        }
        if oid != OID_EC_PUBLIC_KEY {
            return Err(bad(format!("key algorithm {oid} is not supported (only ECDSA P-256)")));
        }
        match spki.algorithm.parameters_oid() {
            Ok(curve) if curve == OID_P256 => {}
            Ok(curve) => return Err(bad(format!("elliptic curve {curve} is not supported (only P-256)"))),
            Err(_) => return Err(bad("the EC key names no curve".into())),
        }
        let key = p256::PublicKey::from_public_key_der(der).map_err(|e| bad(format!("not a valid P-256 point: {}", shown_err(e))))?;
        Ok(PublicKey::from_p256(key))
    }

    /// Reads a public key file (at most [`KEY_FILE_LIMIT`] bytes).
    pub fn from_file(path: &Path) -> Result<PublicKey> {
        PublicKey::from_pem(&read_key_file(path, "public key file")?)
    }

    /// The `PUBLIC KEY` PEM of this key (LF line endings, 64-column base64), as cosign writes it.
    pub fn to_pem(&self) -> String {
        pem_encode(PUBLIC_KEY_PEM, &self.spki_der)
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn to_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The key's identity for messages: the SHA-256 of its DER SubjectPublicKeyInfo, 64 lowercase hex
    /// digits (`openssl pkey -pubin -outform der | sha256sum` prints the same).
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.spki_der))
    }
}

/// Reads a key file of at most [`KEY_FILE_LIMIT`] bytes; the error names the path.
pub(crate) fn read_key_file(path: &Path, what: &'static str) -> Result<Vec<u8>> {
    read_limited(path, what, KEY_FILE_LIMIT)
}

pub(crate) fn read_limited(path: &Path, what: &'static str, limit: usize) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let io = |source| Error::Io { what, path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() > limit {
        return Err(Error::TooLarge { what, path: path.to_owned(), limit });
    }
    Ok(bytes)
}

fn check_scrypt(n: u64, r: u32, p: u32) -> Result<scrypt::Params> {
    let bad = |why: &str| Err(Error::PrivateKey(format!("scrypt parameters N={n} r={r} p={p} refused: {why}")));
    if n < 2 || !n.is_power_of_two() {
        return bad("N must be a power of two");
    }
    if n > SCRYPT_MAX_N {
        return bad("N is larger than 2^20");
    }
    if r == 0 || p == 0 {
        return bad("r and p must be at least 1");
    }
    let memory = n.saturating_mul(u64::from(r));
    let work = memory.saturating_mul(u64::from(p));
    if memory > SCRYPT_MAX_WORK || work > SCRYPT_MAX_WORK {
        return bad("N*r*p is larger than 2^21");
    }
    scrypt::Params::new(n.trailing_zeros() as u8, r, p, KEY_LEN).or_else(|_| bad("scrypt rejects them"))
}

fn decode_field(name: &str, value: &str, max_bytes: usize) -> Result<Vec<u8>> {
    if value.len() > max_bytes.div_ceil(3) * 4 + 4 {
        return Err(Error::PrivateKey(format!("{name} is longer than {max_bytes} bytes")));
    }
    STANDARD.decode(value).map_err(|e| Error::PrivateKey(format!("{name} is not base64: {}", shown_err(e))))
}

/// The first PEM block of `text`: its type and its decoded body. Text before the `-----BEGIN` line is
/// ignored (as Go's `pem.Decode` does), and so is text after the `-----END` line; header lines
/// (`Key: value`) are refused.
pub(crate) fn pem_decode(text: &[u8]) -> std::result::Result<(String, Vec<u8>), String> {
    let text = std::str::from_utf8(text).map_err(|_| "not a PEM file (not UTF-8 text)".to_string())?;
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    let label = loop {
        let Some(line) = lines.next() else {
            return Err("no PEM block (no -----BEGIN line)".into());
        };
        if let Some(rest) = line.trim().strip_prefix("-----BEGIN ")
            && let Some(label) = rest.strip_suffix("-----")
        {
            break label.to_string();
        }
    };
    let end = format!("-----END {label}-----");
    let mut b64 = String::new();
    loop {
        let Some(line) = lines.next() else {
            return Err(format!("PEM block \"{}\" has no END line", shown(&label)));
        };
        let line = line.trim();
        if line == end {
            break;
        }
        if line.contains(':') {
            return Err("PEM headers are not supported".into());
        }
        if b64.len() + line.len() > KEY_FILE_LIMIT {
            return Err("PEM block is too large".into());
        }
        b64.push_str(line);
    }
    let body = STANDARD.decode(&b64).map_err(|e| format!("PEM body is not base64: {}", shown_err(e)))?;
    Ok((label, body))
}

/// A PEM block as Go's `pem.Encode` writes it.
pub(crate) fn pem_encode(label: &str, body: &[u8]) -> String {
    let b64 = STANDARD.encode(body);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// One cheap key pair (scrypt N = 2^10) shared by the crate's unit tests, password "pw".
    pub(crate) fn test_keys() -> &'static KeyPair {
        static KEYS: OnceLock<KeyPair> = OnceLock::new();
        KEYS.get_or_init(|| generate_with_cost(b"pw", 1 << 10).unwrap())
    }

    /// A second, unrelated key pair.
    pub(crate) fn other_keys() -> &'static KeyPair {
        static KEYS: OnceLock<KeyPair> = OnceLock::new();
        KEYS.get_or_init(|| generate_with_cost(b"other", 1 << 10).unwrap())
    }

    #[test]
    fn generated_files_have_the_sigstore_shape() {
        let keys = test_keys();
        assert!(keys.private_pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        assert!(keys.public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let (_, body) = pem_decode(keys.private_pem.as_bytes()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["kdf"]["name"], "scrypt");
        assert_eq!(v["kdf"]["params"]["N"], 1024);
        assert_eq!(v["kdf"]["params"]["r"], 8);
        assert_eq!(v["cipher"]["name"], "nacl/secretbox");
        assert_eq!(STANDARD.decode(v["kdf"]["salt"].as_str().unwrap()).unwrap().len(), 32);
        assert_eq!(STANDARD.decode(v["cipher"]["nonce"].as_str().unwrap()).unwrap().len(), 24);
    }

    #[test]
    fn real_cost_generate_decrypts() {
        let keys = generate(b"").unwrap();
        assert!(keys.private_pem.contains("BEGIN ENCRYPTED SIGSTORE PRIVATE KEY"));
        let key = PrivateKey::decrypt(keys.private_pem.as_bytes(), b"").unwrap();
        assert_eq!(key.public_key(), keys.private_key.public_key());
    }

    #[test]
    fn decrypt_round_trips_and_names_a_wrong_password() {
        let keys = test_keys();
        let key = PrivateKey::decrypt(keys.private_pem.as_bytes(), b"pw").unwrap();
        assert_eq!(key.public_key(), PublicKey::from_pem(keys.public_pem.as_bytes()).unwrap());
        let err = PrivateKey::decrypt(keys.private_pem.as_bytes(), b"wrong").unwrap_err();
        assert!(matches!(err, Error::WrongPassword), "{err}");
        assert!(err.to_string().contains("wrong password"));
    }

    #[test]
    fn the_cosign_pem_type_is_read_too() {
        let keys = test_keys();
        let old = keys.private_pem.replace(SIGSTORE_PRIVATE_KEY_PEM, COSIGN_PRIVATE_KEY_PEM);
        PrivateKey::decrypt(old.as_bytes(), b"pw").unwrap();
        let other = keys.private_pem.replace(SIGSTORE_PRIVATE_KEY_PEM, "EC PRIVATE KEY");
        let err = PrivateKey::decrypt(other.as_bytes(), b"pw").unwrap_err();
        assert!(err.to_string().contains("PEM type \"EC PRIVATE KEY\""), "{err}");
    }

    fn with_doc(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let (_, body) = pem_decode(test_keys().private_pem.as_bytes()).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        edit(&mut v);
        pem_encode(SIGSTORE_PRIVATE_KEY_PEM, &serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn hostile_parameters_are_refused_before_any_work() {
        for (n, r, p) in [(1u64 << 40, 8, 1), (1 << 21, 1, 1), (1 << 20, 8, 1), (1 << 16, 8, 64), (1000, 8, 1), (0, 8, 1)] {
            let pem = with_doc(|v| v["kdf"]["params"] = serde_json::json!({"N": n, "r": r, "p": p}));
            let started = std::time::Instant::now();
            let err = PrivateKey::decrypt(pem.as_bytes(), b"pw").unwrap_err();
            assert!(started.elapsed().as_millis() < 100, "N={n}");
            assert!(err.to_string().contains("scrypt parameters"), "{err}");
        }
        let pem = with_doc(|v| v["kdf"]["name"] = "pbkdf2".into());
        assert!(PrivateKey::decrypt(pem.as_bytes(), b"pw").unwrap_err().to_string().contains("kdf \"pbkdf2\""));
        let pem = with_doc(|v| v["cipher"]["name"] = "aes-gcm".into());
        assert!(PrivateKey::decrypt(pem.as_bytes(), b"pw").unwrap_err().to_string().contains("cipher"));
        let pem = with_doc(|v| v["cipher"]["nonce"] = STANDARD.encode([0u8; 12]).into());
        assert!(PrivateKey::decrypt(pem.as_bytes(), b"pw").unwrap_err().to_string().contains("nonce is 12 bytes"));
        let pem = with_doc(|v| v["kdf"]["salt"] = "!!".into());
        assert!(PrivateKey::decrypt(pem.as_bytes(), b"pw").unwrap_err().to_string().contains("salt is not base64"));
        let pem = with_doc(|v| v["ciphertext"] = STANDARD.encode([0u8; 8]).into());
        assert!(PrivateKey::decrypt(pem.as_bytes(), b"pw").unwrap_err().to_string().contains("too short"));
    }

    #[test]
    fn a_tampered_ciphertext_does_not_open() {
        let pem = with_doc(|v| {
            let mut c = STANDARD.decode(v["ciphertext"].as_str().unwrap()).unwrap();
            c[20] ^= 1;
            v["ciphertext"] = STANDARD.encode(c).into();
        });
        assert!(matches!(PrivateKey::decrypt(pem.as_bytes(), b"pw"), Err(Error::WrongPassword)));
    }

    #[test]
    fn other_public_keys_are_refused_with_a_clear_line() {
        fn spki_pem(algorithm: &[u8], key: &[u8]) -> String {
            let mut inner = algorithm.to_vec();
            inner.extend([0x03, key.len() as u8 + 1, 0]);
            inner.extend(key);
            let mut der = vec![0x30, inner.len() as u8];
            der.extend(inner);
            pem_encode(PUBLIC_KEY_PEM, &der)
        }
        // AlgorithmIdentifier { rsaEncryption, NULL }
        let rsa = spki_pem(&[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00], &[0x30, 0]);
        let err = PublicKey::from_pem(rsa.as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "invalid public key: RSA keys are not supported (only ECDSA P-256)");
        // AlgorithmIdentifier { id-ecPublicKey, secp384r1 }
        let p384 = spki_pem(
            &[0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
            &[0x04],
        );
        let err = PublicKey::from_pem(p384.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("elliptic curve 1.3.132.0.34 is not supported"), "{err}");
        let err = PublicKey::from_pem(test_keys().private_pem.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("is not PUBLIC KEY"), "{err}");
        assert!(PublicKey::from_pem(b"hello").unwrap_err().to_string().contains("no PEM block"));
    }

    #[test]
    fn fingerprint_is_sha256_of_the_spki() {
        let key = test_keys().private_key.public_key();
        let (_, der) = pem_decode(test_keys().public_pem.as_bytes()).unwrap();
        assert_eq!(key.fingerprint(), hex::encode(Sha256::digest(&der)));
        assert_eq!(key.fingerprint().len(), 64);
        // text before the block is ignored, like Go's pem.Decode
        let with_preamble = format!("comment\n{}", test_keys().public_pem);
        assert_eq!(PublicKey::from_pem(with_preamble.as_bytes()).unwrap(), key);
    }

    #[test]
    fn missing_key_file_names_the_path() {
        let err = PublicKey::from_file(Path::new("/nonexistent/cosign.pub")).unwrap_err();
        assert!(err.to_string().starts_with("cannot read public key file /nonexistent/cosign.pub: "), "{err}");
    }
}

//! wasmcell's images: how Wasm travels and where it is kept.
//!
//! - [`reference`]: image references (`127.0.0.1:5000/team/app:1.0`, `name@sha256:...`).
//! - [`digest`]: content digests, and hashing while streaming.
//! - [`store`]: the local content-addressed store (immutable blobs named by digest, ingests
//!   invisible until committed, names kept apart from blobs, prune and check).
//! - [`image`]: the three formats read (CNCF Wasm artifact, runwasi wasm-layer, compat) and the
//!   one written (the CNCF Wasm artifact).
//! - [`launch`]: the one launch model: an image (from the local store or containerd's) → the wasm
//!   file to run, argv[0], default args, env, rootfs; and finding a module inside a rootfs.
//! - [`registry`]: the registry client (oci-client underneath): pull, push, auth, retries.
//! - [`auth`]: credentials from `wasmcell login` and the docker config, never logged.
//! - [`unpack`]: safe extraction of compat rootfs layers.
//! - [`layout`]: OCI image-layout tar archives (`save` / `load`).
//! - [`precompiled`]: compiled code as a signed OCI referrer of its image (push, find, trust).
//! - [`trust`]: signatures: fetched from the `.sig` tag, judged by the policy, kept in the store, signed.
//!
//! Architecture Invariant: this crate never links wasmtime; wasm is bytes here.

pub mod auth;
pub mod digest;
pub mod error;
pub mod image;
pub mod launch;
pub mod layout;
pub mod precompiled;
pub mod reference;
pub mod registry;
pub mod store;
pub mod trust;
pub mod unpack;

pub use digest::Digest;
pub use error::{Error, Result};
pub use reference::Reference;
pub use store::Store;

//! Property tests of every parser of this crate a stranger controls: image references and digests,
//! manifests, configs and indexes, precompiled-code referrers, tar layers, OCI layout archives. Each runs
//! `wasmcell_props::cases` cases (`WASMCELL_PROPTEST_CASES`; `bench/fuzz` runs a million) on arbitrary
//! input and on near-valid input, and checks what the parser promises, not only that it returns.

mod layout;
mod manifest;
mod precompiled;
mod reference;
mod unpack;

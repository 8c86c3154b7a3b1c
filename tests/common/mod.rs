//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` next to the repository (fixtures, vocabulary, corpus).
pub fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

pub fn hf_tiny() -> PathBuf {
    shared().join("fixtures/hf-tiny")
}

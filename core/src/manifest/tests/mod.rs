//! Tests of manifest parsing as a user sees it: workloads, warnings and error lines.

mod documents;
mod kubernetes;
mod marathon;
mod native;
mod proptests;

use super::*;

/// Parses one file, expecting success.
pub(super) fn parse_ok(name: &str, content: &str) -> Parsed {
    match parse_manifests(&[ManifestFile { name, content }]) {
        Ok(parsed) => parsed,
        Err(e) => panic!("{name} should parse, got:\n{e}"),
    }
}

/// Parses one file, expecting failure; the error lines.
pub(super) fn parse_err(name: &str, content: &str) -> Vec<String> {
    match parse_manifests(&[ManifestFile { name, content }]) {
        Ok(parsed) => panic!("{name} should fail, got {parsed:#?}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

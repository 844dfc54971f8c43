//! The conformance vectors of `docs/chain-format.md` (`tests/vectors/`, built by
//! `tests/vectors/make.py`): valid and invalid bundles, each run through `custody verify` and
//! the independent Python verifier, which must agree with `expected.json` and with each other,
//! problem kind for problem kind.

use std::collections::BTreeSet;
use std::process::Command;

use custody_tests::{custody_command, manifest_dir, python};
use serde_json::Value;

fn kinds(problems: impl Iterator<Item = Value>) -> BTreeSet<String> {
    problems
        .map(|p| p["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn both_verifiers_agree_with_every_vector() {
    let vectors = manifest_dir().join("vectors");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(vectors.join("expected.json")).unwrap())
            .unwrap();
    let key = std::fs::read_to_string(vectors.join("trusted.pub"))
        .unwrap()
        .trim()
        .to_string();
    let expected = expected.as_object().unwrap();
    assert!(expected.len() >= 15, "{expected:?}");
    for (name, want) in expected {
        let dir = vectors.join(name);
        let rust = custody_command()
            .args(["verify", "--json", "--trusted-key", &key, "--export"])
            .arg(&dir)
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        let rust_reports: Value = serde_json::from_slice(&rust.stdout)
            .unwrap_or_else(|e| panic!("{name}: {e}: {}", String::from_utf8_lossy(&rust.stderr)));
        let rust_kinds = kinds(
            rust_reports
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r["problems"].as_array().cloned().unwrap_or_default()),
        );
        let py = Command::new(python())
            .arg(manifest_dir().join("py/verify_bundle.py"))
            .arg(&dir)
            .args(["--trusted-key", &key])
            .output()
            .unwrap();
        let py_reports: Value = serde_json::from_slice(&py.stdout)
            .unwrap_or_else(|e| panic!("{name}: {e}: {}", String::from_utf8_lossy(&py.stderr)));
        let py_kinds = kinds(
            py_reports
                .as_object()
                .unwrap()
                .values()
                .flat_map(|r| r["problems"].as_array().cloned().unwrap_or_default()),
        );
        let ok = want["ok"].as_bool().unwrap();
        assert_eq!(rust.status.success(), ok, "{name}: rust: {rust_reports}");
        assert_eq!(py.status.success(), ok, "{name}: python: {py_reports}");
        assert_eq!(rust_kinds, py_kinds, "{name}: the verifiers disagree");
        if let Some(kind) = want["kind"].as_str() {
            assert!(rust_kinds.contains(kind), "{name}: {rust_kinds:?}");
        }
    }
}

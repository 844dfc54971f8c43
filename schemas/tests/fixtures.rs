//! Parse tests over `schemas/testdata`: every `event_*.json` fixture either decodes, or is listed
//! in `expected_reasons.json` with the reason (prefix) it must be rejected with.

use std::collections::BTreeMap;

use custody_schemas::decode_event;

#[test]
fn fixtures_decode_or_fail_with_their_reason() {
    let dir = manifest_dir().join("testdata");
    let expected: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected_reasons.json")).unwrap())
            .unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !name.starts_with("event_") {
            continue;
        }
        seen += 1;
        let result = decode_event(&std::fs::read(&path).unwrap());
        match (expected.get(&name), result) {
            (None, Ok(_)) => {}
            (None, Err(e)) => panic!("{name} should decode, got: {e}"),
            (Some(reason), Ok(_)) => panic!("{name} should fail with {reason:?}"),
            (Some(reason), Err(e)) => assert!(
                e.to_string().starts_with(reason.as_str()),
                "{name}: got {e:?} ({e}), want prefix {reason:?}"
            ),
        }
    }
    assert_eq!(seen, expected.len() + 4);
}

#[test]
fn malformed_bytes_have_precise_reasons() {
    let cases: [(&[u8], &str); 4] = [
        (b"{not json", "invalid json: "),
        (b"[1,2,3]", "event must be a json object"),
        (
            b"{\"schema_version\": 1}",
            "invalid envelope: `schema_version` must be a string, got number",
        ),
        (b"\xff\xfe{}", "invalid utf-8: "),
    ];
    for (bytes, reason) in cases {
        let e = decode_event(bytes).unwrap_err().to_string();
        assert!(e.starts_with(reason), "{e:?} vs {reason:?}");
    }
}

/// The package directory: taken at run time from cargo (the build may have been made in
/// another checkout sharing the target directory), at build time otherwise.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}

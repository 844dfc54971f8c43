//! A bounded fuzz run in CI (`custody fuzz`, 20 s; run it for 10 minutes or more by hand):
//! the decoder, the timestamp parser and every API query-parameter parser, 0 panics.

use custody_tests::custody;

#[test]
fn fuzzing_the_decoder_timestamps_and_api_parameters_finds_no_panic() {
    let out = custody(&["fuzz", "--duration", "20s", "--seed", "2026"]);
    assert!(out.contains(", 0 panics"), "{out}");
}

//! `custody bench`: single-core throughput of the chain-of-custody stages, each measured
//! against raw SHA-256 over the same bytes in the same run.

use std::time::Instant;

use custody_operators::checkpoint::Signer;
use custody_operators::hashing::canonical_json;
use custody_operators::merkle;
use custody_operators::pii::Tokenizer;
use custody_operators::record::SourcedEvent;
use custody_operators::transforms::hash_chain::{ChainState, append};
use custody_operators::transforms::tokenize_pii::tokenize_event;
use custody_operators::verify::{EventRow, Verifier};
use custody_schemas::decode_event;
use sha2::{Digest, Sha256};

use crate::generate::{Generator, GeneratorConfig};

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut out = None;
    for _ in 0..runs {
        let start = Instant::now();
        let r = f();
        best = best.min(start.elapsed().as_secs_f64());
        out = Some(r);
    }
    // Panic-free: runs >= 1.
    (best, out.expect("at least one run"))
}

/// Runs the benchmarks over `events` generated events of one tenant and prints the figures.
pub fn run(events: u64) {
    let mut tokenizer = Tokenizer::new(b"bench");
    let inputs: Vec<SourcedEvent> = Generator::new(GeneratorConfig {
        events,
        tenants: 1,
        ..GeneratorConfig::default()
    })
    .enumerate()
    .map(|(i, bytes)| {
        // Panic-free: the generator only produces valid events (its tests check).
        let event = decode_event(&bytes).expect("generated events are valid");
        let mut sourced = SourcedEvent {
            partition: 0,
            offset: i as i64,
            event,
            raw_sha256: [0; 32],
            payload_json: None,
        };
        tokenize_event(&mut tokenizer, &mut sourced, &mut [0; 7]);
        sourced
    })
    .collect();
    let n = inputs.len() as f64;

    // The exact bytes the chain stage hashes: the canonical event encodings.
    let canonical: Vec<Vec<u8>> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            custody_operators::hashing::canonical_event(
                &s.event,
                &canonical_json(&s.event.payload),
                i as u64,
            )
        })
        .collect();
    let bytes: usize = canonical.iter().map(Vec::len).sum();

    let (raw, _) = best_of(3, || {
        canonical
            .iter()
            .map(|c| Sha256::digest(c)[0])
            .fold(0u8, |a, b| a ^ b)
    });
    let mut chain = f64::MAX;
    let mut chained = Vec::new();
    for _ in 0..3 {
        let batch = inputs.clone();
        let start = Instant::now();
        let mut chains = ChainState::new();
        chained = batch
            .into_iter()
            .map(|s| append(&mut chains, s))
            .collect::<Vec<_>>();
        chain = chain.min(start.elapsed().as_secs_f64());
    }
    let (hash_only, _) = best_of(3, || {
        let mut prev = [0u8; 32];
        let mut range = merkle::CompactRange::new();
        for c in &canonical {
            let leaf = custody_operators::hashing::leaf_hash(c);
            prev = custody_operators::hashing::chain_hash(&prev, &leaf);
            range.append(leaf);
        }
        range.root()[0] ^ prev[0]
    });
    println!(
        "chain + hash stage, 1 core, {} events, {:.1} MB canonical:",
        n,
        bytes as f64 / 1e6
    );
    println!(
        "  raw sha2 over the canonical bytes: {:>10.0} events/s  {:>7.0} MB/s",
        n / raw,
        bytes as f64 / 1e6 / raw
    );
    println!(
        "  leaf + chain + merkle (hashing only): {:>7.0} events/s  ({:.0}% of raw sha2)",
        n / hash_only,
        100.0 * raw / hash_only
    );
    println!(
        "  full stage (canonical encoding + hashing): {:>7.0} events/s  ({:.0}% of raw sha2)",
        n / chain,
        100.0 * raw / chain
    );

    let signer = Signer::from_seed(&[1; 32]);
    let leaves: Vec<[u8; 32]> = chained.iter().map(|c| c.leaf_hash).collect();
    let last = chained.last().map_or([0; 32], |c| c.hash);
    let cp = signer.checkpoint(
        "tenant-0000",
        leaves.len() as u64,
        &merkle::root(&leaves),
        &last,
        0,
        0,
    );
    let rows: Vec<EventRow> = chained.iter().map(EventRow::from_chained).collect();
    let row_bytes: usize = rows
        .iter()
        .map(|r| serde_json::to_string(r).map_or(0, |s| s.len()))
        .sum();
    let verifier = Verifier::new([signer.public_key()]);
    let mut rows_copy = rows.clone();
    let (verify, report) = best_of(3, || {
        verifier.verify_tenant(
            "tenant-0000",
            &mut rows_copy,
            std::slice::from_ref(&cp),
            &[],
        )
    });
    assert!(report.ok(), "benchmark log must verify: {report:?}");
    let (raw_rows, _) = best_of(3, || {
        rows.iter()
            .map(|r| Sha256::digest(serde_json::to_vec(r).unwrap_or_default())[0])
            .fold(0u8, |a, b| a ^ b)
    });
    println!(
        "verification, 1 core: {:.0} MB/s of exported rows ({:.0} events/s); raw sha2 + row encoding over the same rows: {:.0} MB/s",
        row_bytes as f64 / 1e6 / verify,
        n / verify,
        row_bytes as f64 / 1e6 / raw_rows
    );
}

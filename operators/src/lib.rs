//! Custody's dataflow building blocks: sources, transforms and sinks.
//!
//! The pipeline is `source → decode (and tokenize_pii) → hash_chain → views → sink`; see the
//! top-level README for the diagram. Every operator file opens with its contract (inputs,
//! outputs, state, progress, metrics, failure modes).
#![deny(missing_docs)]

pub mod checkpoint;
pub mod compaction;
pub mod config_log;
pub mod cosign;
pub mod error;
pub mod export;
pub mod export_bundle;
pub mod failpoint;
pub mod file_index;
pub mod hashing;
pub mod holds;
pub mod identity;
pub mod layout;
pub mod merkle;
pub mod metrics;
pub mod proof_store;
pub mod record;
pub mod residency;
pub mod retention;
pub mod seal;
pub mod sinks;
pub mod sources;
pub mod table_storage;
pub mod test_util;
pub mod transforms;
pub mod vault;
pub mod verify;

pub use custody_pii as pii;
pub use custody_pii::corpus as pii_corpus;
pub use error::{Error, Result};
pub use metrics::Metrics;
pub use sinks::forward::ForwardToSink;
pub use transforms::decode::Decode;
pub use transforms::hash_chain::HashChain;

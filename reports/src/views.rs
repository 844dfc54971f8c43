//! One differential view per file.

pub mod event_counts;
pub mod hitl_latency;

#[cfg(test)]
pub(crate) mod oracle;

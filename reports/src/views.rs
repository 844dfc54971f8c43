//! One differential view per file.

pub mod alerts;
pub mod causal_chains;
pub mod drift_windows;
pub mod epoch_stash;
pub mod event_counts;
pub mod event_id;
pub mod hitl_groups;
pub mod hitl_latency;
pub mod model_versions;
pub mod name;
pub mod policy_violations;
pub mod review_sketches;
pub mod reviewers;
pub mod reviews;
pub mod session_scoped;
pub mod sessions;
pub mod sla_breaches;

#[cfg(test)]
pub(crate) mod oracle;

//! Sinks: where records leave the dataflow.

pub mod forward;
pub mod iceberg;

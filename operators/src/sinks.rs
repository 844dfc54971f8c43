//! Sinks: where records leave the dataflow.

pub mod dead_letter;
pub mod event_writer;
pub mod forward;
pub mod iceberg;

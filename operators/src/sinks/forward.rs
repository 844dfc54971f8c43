//! Forward every sink record to the lake writer thread, on worker 0.
//!
//! # Inputs
//! [`SinkRecord`]s at [`Epoch`] timestamps, exchanged to worker 0.
//!
//! # Outputs
//! An empty stream whose frontier tells the driver (by a probe) that every record of an epoch
//! has been handed to the writer; the driver then seals the epoch ([`SinkMsg::Seal`]).
//!
//! # State
//! None: records are sent as they arrive.
//!
//! # Progress
//! Holds no capabilities.
//!
//! # Metrics
//! `custody_operator_events_{received,sent}_total{operator="sink_forward"}`.
//!
//! # Failure modes
//! The channel is bounded, so a slow writer blocks worker 0 and, through the driver's bound on
//! epochs in flight, stops reading the source (backpressure, never unbounded buffering). If the
//! writer has stopped, records are counted as errors and the driver stops the pipeline; nothing
//! was committed for them, so no source offset moves past them.

use std::sync::mpsc::SyncSender;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Operator;

use crate::metrics::Metrics;
use crate::record::{Epoch, SinkRecord};
use crate::sinks::iceberg::SinkMsg;

/// Forwards sink records; see the module docs.
pub trait ForwardToSink<'scope> {
    /// Sends every record to `tx` (worker 0 only; other workers pass `None`).
    fn forward_to_sink(
        self,
        tx: Option<SyncSender<SinkMsg>>,
        metrics: &Metrics,
    ) -> StreamVec<'scope, Epoch, ()>;
}

impl<'scope> ForwardToSink<'scope> for StreamVec<'scope, Epoch, SinkRecord> {
    fn forward_to_sink(
        self,
        tx: Option<SyncSender<SinkMsg>>,
        metrics: &Metrics,
    ) -> StreamVec<'scope, Epoch, ()> {
        let op = metrics.operator("sink_forward");
        self.unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_: &SinkRecord| 0),
            "SinkForward",
            move |_, _| {
                move |input, _output| {
                    input.for_each(|cap, data| {
                        let records = std::mem::take(data);
                        let n = records.len() as u64;
                        op.received.inc_by(n);
                        // Panic: the pact routes every record to worker 0, which holds the sender.
                        let tx = tx.as_ref().expect("sink records only reach worker 0");
                        // Panic: epochs are totally ordered, so every message has a least time.
                        let epoch = *cap.least().expect("a message has a time");
                        match tx.send(SinkMsg::Records(epoch, records)) {
                            Ok(()) => op.sent.inc_by(n),
                            Err(_) => op.errors.inc_by(n),
                        }
                    });
                }
            },
        )
    }
}

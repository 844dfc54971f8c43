//! Write each worker's chained events to `custody.events` data files, on that worker.
//!
//! # Inputs
//! The hash chain's [`SinkRecord`]s, pipelined (no exchange): every event is written by the
//! worker that chained it, so events never cross threads to a single writer, and memory is
//! freed where it was allocated.
//!
//! # Outputs
//! Every record but `Event`s, passed on as it arrives (to [`super::forward`]). For each epoch
//! with events, once the input frontier passes it, one [`SinkMsg::Events`] to the commit
//! coordinator (the sink thread): the Parquet files written (not yet visible), their SHA-256,
//! and a [`WrittenEvent`] digest per event, in `(tenant, seq)` order. The message is sent
//! before the epoch's capability is released, so it reaches the coordinator before the
//! driver seals the epoch ([`SinkMsg::Seal`]).
//!
//! # State
//! The events of epochs not yet complete (bounded by the driver's epochs in flight).
//!
//! # Progress
//! Holds a capability per buffered epoch until its files are sent.
//!
//! # Metrics
//! `custody_operator_events_{received,sent}_total{operator="event_writer"}`,
//! `custody_operator_errors_total{operator="event_writer"}` (events of an epoch whose files
//! could not be written).
//!
//! # Failure modes
//! A write that fails, or a coordinator that has stopped, is reported to the coordinator as
//! [`SinkMsg::WriterFailed`] (or counted, if it is gone): the epoch is never committed, so no
//! source offset moves past its events, and the pipeline stops.

use std::collections::BTreeMap;
use std::sync::mpsc::SyncSender;

use iceberg::table::Table;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};

use crate::metrics::Metrics;
use crate::record::{ChainedEvent, Epoch, SinkRecord, VaultEvent, WrittenEvent};
use crate::sinks::iceberg::{
    EventFiles, SinkMsg, data_file_sha256, events_batch, write_data_files,
};

/// What a worker needs to write events: the events table (its schema, location and file IO)
/// and the source's name (a column of every row).
#[derive(Clone, Debug)]
pub struct EventWriter {
    /// `custody.events`.
    pub table: Table,
    /// The source's name.
    pub source: String,
}

/// Writes events on their worker; see the module docs.
pub trait WriteEvents<'scope> {
    /// Writes the `Event` records to data files and reports them on `tx`; passes the rest on.
    fn write_events(
        self,
        writer: EventWriter,
        tx: SyncSender<SinkMsg>,
        metrics: &Metrics,
    ) -> StreamVec<'scope, Epoch, SinkRecord>;
}

impl<'scope> WriteEvents<'scope> for StreamVec<'scope, Epoch, SinkRecord> {
    fn write_events(
        self,
        writer: EventWriter,
        tx: SyncSender<SinkMsg>,
        metrics: &Metrics,
    ) -> StreamVec<'scope, Epoch, SinkRecord> {
        let op = metrics.operator("event_writer");
        self.unary_frontier::<CapacityContainerBuilder<Vec<SinkRecord>>, _, _, _>(
            Pipeline,
            "EventWriter",
            move |_, _| {
                let mut pending: BTreeMap<Epoch, (Capability<Epoch>, Vec<ChainedEvent>)> =
                    BTreeMap::new();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        let mut session = output.session(&cap);
                        for record in data.drain(..) {
                            match record {
                                SinkRecord::Event(e) => {
                                    op.received.inc();
                                    // Panic: epochs are totally ordered, so every message has
                                    // a least time.
                                    let time = *cap.least().expect("a message has a time");
                                    pending
                                        .entry(time)
                                        .or_insert_with(|| (cap.delayed(&time, 0), Vec::new()))
                                        .1
                                        .push(*e);
                                }
                                other => session.give(other),
                            }
                        }
                    });
                    while let Some((&epoch, _)) = pending.first_key_value() {
                        if frontier.frontier().less_equal(&epoch) {
                            break;
                        }
                        let Some((_cap, events)) = pending.remove(&epoch) else {
                            break;
                        };
                        let n = events.len() as u64;
                        let msg = match &runtime {
                            Ok(runtime) => runtime
                                .block_on(write(&writer, epoch, events))
                                .map(|files| SinkMsg::Events(epoch, files))
                                .unwrap_or_else(|e| SinkMsg::WriterFailed(epoch, e.to_string())),
                            Err(e) => SinkMsg::WriterFailed(epoch, format!("no runtime: {e}")),
                        };
                        let failed = matches!(msg, SinkMsg::WriterFailed(..));
                        match tx.send(msg) {
                            Ok(()) if !failed => op.sent.inc_by(n),
                            _ => op.errors.inc_by(n),
                        }
                        // The capability is released here, after the send.
                    }
                }
            },
        )
    }
}

/// Writes one epoch's events (of one worker), in `(tenant, seq)` order.
pub(crate) async fn write(
    writer: &EventWriter,
    epoch: Epoch,
    events: Vec<ChainedEvent>,
) -> crate::error::Result<EventFiles> {
    let events = sorted_by_tenant_and_seq(events);
    let batch = events_batch(&events, &writer.source, epoch)?;
    let files = write_data_files(&writer.table, epoch, batch).await?;
    let mut sha256 = Vec::with_capacity(files.len());
    for file in &files {
        let digest = data_file_sha256(&writer.table, file.file_path()).await?;
        sha256.push((file.file_path().to_string(), digest));
    }
    let mut vault = Vec::new();
    let written = events
        .into_iter()
        .map(|mut e| {
            if !e.vault.is_empty() {
                vault.push(VaultEvent {
                    tenant_id: e.event.tenant_id.as_str().to_string(),
                    event_id: e.event.event_id.clone(),
                    items: std::mem::take(&mut e.vault),
                });
            }
            WrittenEvent::take(e)
        })
        .collect();
    Ok(EventFiles {
        files,
        sha256,
        events: written,
        vault,
    })
}

/// `events` in `(tenant, seq)` order, each moved twice (sorting the events themselves would
/// move each of these large records many times).
fn sorted_by_tenant_and_seq(events: Vec<ChainedEvent>) -> Vec<ChainedEvent> {
    let mut order: Vec<u32> = (0..events.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        let (a, b) = (&events[a as usize], &events[b as usize]);
        (a.event.tenant_id.as_str(), a.seq).cmp(&(b.event.tenant_id.as_str(), b.seq))
    });
    let mut slots: Vec<Option<ChainedEvent>> = events.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(|i| slots[i as usize].take())
        .collect()
}

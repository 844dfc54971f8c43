//! Custody's materialized compliance views, maintained incrementally with differential dataflow.
//!
//! Each view is one file under `views/`, a function from input collections to an output
//! collection, with an oracle test that the incremental result equals a from-scratch
//! recomputation at every epoch. [`render_views`] wires them to the chained event stream and
//! turns their changes into [`ViewUpdate`]s for the sink and the live serving state ([`live`]).
#![deny(missing_docs)]

pub mod live;
pub mod proofs;
pub mod views;

use custody_operators::record::{ChainedEvent, Epoch, SinkRecord, ViewUpdate};
use differential_dataflow::{AsCollection, VecCollection};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;
use timely::dataflow::operators::vec::Map;

use views::hitl_latency::{Decision, Escalation, FromEvent, HitlConfig};

/// Turns each event `f` maps to `Some(d)` into an insertion of `d` at the event's epoch.
pub fn inserts<'scope, D, F>(
    stream: StreamVec<'scope, Epoch, SinkRecord>,
    name: &str,
    mut f: F,
) -> VecCollection<'scope, Epoch, D>
where
    D: Clone + 'static,
    F: FnMut(&ChainedEvent) -> Option<D> + 'static,
{
    stream
        .unary::<CapacityContainerBuilder<Vec<(D, Epoch, isize)>>, _, _, _>(
            Pipeline,
            name,
            |_, _| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        // Panic: epochs are totally ordered, so every message has a least time.
                        let time = *cap.least().expect("a message has a time");
                        let mut session = output.session(&cap);
                        for record in data.iter() {
                            if let SinkRecord::Event(event) = record
                                && let Some(d) = f(event)
                            {
                                session.give((d, time, 1));
                            }
                        }
                    });
                }
            },
        )
        .as_collection()
}

/// Whether the views read the payload of events of this type (the others only need the
/// envelope): what a restart must load to rebuild their state.
pub fn view_needs_payload(event_type: custody_schemas::EventType) -> bool {
    matches!(
        event_type,
        custody_schemas::EventType::HumanEscalationTriggered
            | custody_schemas::EventType::HumanReviewDecision
    )
}

/// Builds every view over the chained events (the `Event` records of the hash chain's
/// output); returns their changes.
pub fn render_views<'scope>(
    events: StreamVec<'scope, Epoch, SinkRecord>,
    hitl: HitlConfig,
) -> StreamVec<'scope, Epoch, ViewUpdate> {
    let typed = inserts(events.clone(), "EventTypes", |e| {
        Some((
            e.event.tenant_id.as_str().to_string(),
            e.event.event_type.as_str().to_string(),
        ))
    });
    let escalations = inserts(events.clone(), "Escalations", Escalation::from_event);
    let decisions = inserts(events, "Decisions", Decision::from_event);

    let counts = views::event_counts::event_counts(typed).inner.map(
        |(((tenant_id, event_type), count), _time, diff)| ViewUpdate::EventCount {
            tenant_id,
            event_type,
            count: count as i64,
            diff: diff as i64,
        },
    );
    let latency = views::hitl_latency::hitl_latency(escalations, decisions, hitl)
        .inner
        .map(
            |((tenant_id, stats), _time, diff)| ViewUpdate::HitlLatency {
                tenant_id,
                stats,
                diff: diff as i64,
            },
        );
    use timely::dataflow::operators::Concat;
    counts.concat(latency)
}

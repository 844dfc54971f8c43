//! The views' state at a snapshot epoch, and the operator that keeps a collection's contents
//! to snapshot them.
//!
//! Every `snapshot_every` epochs (those the pipeline's clock ticks at: live epochs, never
//! replayed ones) each stateful view operator sends its state as [`StatePart`]s; the sink
//! writes them, one JSON line each, as the epoch's snapshot file under the epoch's seal. A
//! restart reads the newest snapshot back at its epoch and replays only the events committed
//! after it, so restart time and memory depend on the views' (bounded) state, not on history.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use custody_operators::record::Epoch;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};

use crate::views::alerts::{AgentKey, DriftFact};
use crate::views::model_versions::Usage;
use crate::views::name::Name;
use crate::views::review_sketches::{Sketch, SketchKey};
use crate::views::reviews::PairingState;
use crate::views::session_scoped::SessionState;

/// One part of the views' state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum StatePart {
    /// An event count: `((tenant, event_type), count)`.
    Count((Name, Name), isize),
    /// The escalation/decision pairing's state.
    Pairing(PairingState),
    /// A tenant's or group's review latency sketch.
    Sketch(SketchKey, Sketch),
    /// A drift fact of `(tenant, agent)`, with its multiplicity.
    Drift((AgentKey, DriftFact), isize),
    /// An open (or recently retired) session.
    Session(SessionState),
    /// One model version's use: `((tenant, model), usage)`.
    Model((String, String), Usage),
}

/// Whether the views snapshot their state at `epoch`.
pub fn is_snapshot_epoch(epoch: Epoch, every: u64) -> bool {
    every > 0 && epoch.is_multiple_of(every)
}

/// Keeps `collection`'s contents (consolidated: one entry per distinct record, so bounded as
/// the collection is) and, at every ticked snapshot epoch, sends them mapped by `part`.
pub fn mirror<'scope, D, F>(
    collection: VecCollection<'scope, Epoch, D>,
    ticks: StreamVec<'scope, Epoch, ()>,
    every: u64,
    name: &str,
    part: F,
) -> StreamVec<'scope, Epoch, StatePart>
where
    D: differential_dataflow::ExchangeData + Hash,
    F: Fn(&D, isize) -> StatePart + 'static,
{
    type Pending<D> = BTreeMap<Epoch, (Option<Capability<Epoch>>, Vec<(D, isize)>)>;
    collection
        .inner
        .binary_frontier(ticks, Pipeline, Pipeline, name, move |_, _| {
            let mut pending: Pending<D> = BTreeMap::new();
            let mut contents: HashMap<D, isize> = HashMap::new();
            move |(data, data_frontier), (ticks, ticks_frontier), output| {
                data.for_each(|cap, updates| {
                    for (d, t, r) in updates.drain(..) {
                        pending.entry(t).or_default().1.push((d, r));
                    }
                    let _ = cap;
                });
                ticks.for_each(|cap, _| {
                    // Panic: epochs are totally ordered, so every message has a least time.
                    let time = *cap.least().expect("a message has a time");
                    pending.entry(time).or_default().0 = Some(cap.delayed(&time, 0));
                });
                while let Some(entry) = pending.first_entry() {
                    let t = *entry.key();
                    if data_frontier.less_equal(&t) || ticks_frontier.less_equal(&t) {
                        break;
                    }
                    let (cap, updates) = entry.remove();
                    for (d, r) in updates {
                        match contents.entry(d) {
                            Entry::Occupied(mut o) => {
                                *o.get_mut() += r;
                                if *o.get() == 0 {
                                    o.remove();
                                }
                            }
                            Entry::Vacant(v) if r != 0 => {
                                v.insert(r);
                            }
                            Entry::Vacant(_) => {}
                        }
                    }
                    if let Some(cap) = cap.filter(|_| is_snapshot_epoch(t, every)) {
                        let mut session = output.session(&cap);
                        for (d, n) in &contents {
                            session.give(part(d, *n));
                        }
                    }
                }
            }
        })
}

//! Per-epoch stash of the operators with a `ticks` input (`binary_frontier` over records and
//! the driver's live epochs): an epoch's records and tick wait here until both inputs'
//! frontiers have passed it, then are handed over whole, oldest epoch first.
//!
//! # State and its bound
//! The records of epochs not yet complete: at most the epochs in flight.

use std::collections::BTreeMap;

use custody_operators::record::Epoch;
use timely::communication::Pull;
use timely::dataflow::channels::Message;
use timely::dataflow::operators::generic::InputHandleCore;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::progress::frontier::MutableAntichain;

/// One complete epoch.
pub struct Ready<D> {
    /// The epoch.
    pub time: Epoch,
    /// A capability for the operator's (first) output at `time`.
    pub cap: Capability<Epoch>,
    /// Its records, in arrival order.
    pub data: Vec<D>,
    /// Whether the driver ticked this epoch (a live epoch: snapshots are taken at ticks).
    pub ticked: bool,
}

struct Pending<D> {
    cap: Option<Capability<Epoch>>,
    data: Vec<D>,
    ticked: bool,
}

impl<D> Default for Pending<D> {
    fn default() -> Self {
        Pending {
            cap: None,
            data: Vec::new(),
            ticked: false,
        }
    }
}

/// Records and ticks per epoch; see the module documentation.
pub struct EpochStash<D> {
    epochs: BTreeMap<Epoch, Pending<D>>,
}

impl<D> Default for EpochStash<D> {
    fn default() -> Self {
        EpochStash {
            epochs: BTreeMap::new(),
        }
    }
}

fn time_of(cap: &InputCapability<Epoch>) -> Epoch {
    // Panic: epochs are totally ordered, so every message has a least time.
    *cap.least().expect("a message has a time")
}

impl<D> EpochStash<D> {
    fn entry(&mut self, cap: &InputCapability<Epoch>) -> &mut Pending<D> {
        self.entry_at(time_of(cap), cap)
    }

    /// The stash of epoch `time`, at or after `cap`'s.
    fn entry_at(&mut self, time: Epoch, cap: &InputCapability<Epoch>) -> &mut Pending<D> {
        let entry = self.epochs.entry(time).or_default();
        entry.cap.get_or_insert_with(|| cap.delayed(&time, 0));
        entry
    }

    /// Stashes records received with `cap`.
    fn records(&mut self, cap: &InputCapability<Epoch>, data: &mut Vec<D>) {
        self.entry(cap).data.append(data);
    }

    /// Notes the tick received with `cap`.
    fn tick(&mut self, cap: &InputCapability<Epoch>) {
        self.entry(cap).ticked = true;
    }

    /// Stashes everything `records` and `ticks` hold.
    pub fn receive<P1, P2>(
        &mut self,
        records: &mut InputHandleCore<Epoch, Vec<D>, P1>,
        ticks: &mut InputHandleCore<Epoch, Vec<()>, P2>,
    ) where
        P1: Pull<Message<Epoch, Vec<D>>>,
        P2: Pull<Message<Epoch, Vec<()>>>,
    {
        records.for_each(|cap, data| self.records(&cap, data));
        ticks.for_each(|cap, _| self.tick(&cap));
    }

    /// The oldest stashed epoch that neither frontier can still send to, if any.
    pub fn next_ready(
        &mut self,
        records: &MutableAntichain<Epoch>,
        ticks: &MutableAntichain<Epoch>,
    ) -> Option<Ready<D>> {
        loop {
            let entry = self.epochs.first_entry()?;
            let time = *entry.key();
            if records.less_equal(&time) || ticks.less_equal(&time) {
                return None;
            }
            let pending = entry.remove();
            if let Some(cap) = pending.cap {
                return Some(Ready {
                    time,
                    cap,
                    data: pending.data,
                    ticked: pending.ticked,
                });
            }
        }
    }
}

impl<T> EpochStash<(T, isize)> {
    /// Stashes a collection's updates `(record, time, diff)` as `(record, diff)`, each at its own
    /// time (which may be later than its message's capability), and the ticks.
    pub fn receive_updates<P1, P2>(
        &mut self,
        updates: &mut InputHandleCore<Epoch, Vec<(T, Epoch, isize)>, P1>,
        ticks: &mut InputHandleCore<Epoch, Vec<()>, P2>,
    ) where
        P1: Pull<Message<Epoch, Vec<(T, Epoch, isize)>>>,
        P2: Pull<Message<Epoch, Vec<()>>>,
    {
        updates.for_each(|cap, data| {
            for (record, time, diff) in data.drain(..) {
                self.entry_at(time, &cap).data.push((record, diff));
            }
        });
        ticks.for_each(|cap, _| self.tick(&cap));
    }
}

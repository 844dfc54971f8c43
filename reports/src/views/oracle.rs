//! Helpers for oracle tests: seeded randomness and replaying captured output to full states.

use std::collections::BTreeMap;
use std::sync::mpsc::Receiver;

use timely::dataflow::operators::capture::Event;

/// A seeded linear congruential generator.
pub fn lcg(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    }
}

/// Captured differential updates.
pub type Captured<D> = Receiver<Event<u64, Vec<(D, u64, isize)>>>;

/// The accumulated output collection at each epoch `0..epochs`.
pub fn accumulate_by_epoch<D: Ord + Clone>(
    rx: Captured<D>,
    epochs: u64,
) -> BTreeMap<u64, BTreeMap<D, isize>> {
    let updates: Vec<(D, u64, isize)> = rx
        .try_iter()
        .flat_map(|e| match e {
            Event::Messages(_, data) => data,
            Event::Progress(_) => Vec::new(),
        })
        .collect();
    (0..epochs)
        .map(|epoch| {
            let mut state: BTreeMap<D, isize> = BTreeMap::new();
            for (d, t, r) in &updates {
                if *t <= epoch {
                    *state.entry(d.clone()).or_default() += r;
                }
            }
            state.retain(|_, r| *r != 0);
            (epoch, state)
        })
        .collect()
}

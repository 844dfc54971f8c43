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

/// Feeds `inputs` (each with its epoch) through `build` and returns the accumulated output at
/// each epoch `0..epochs`.
pub fn run<I, O, F>(
    inputs: Vec<(u64, I)>,
    epochs: u64,
    build: F,
) -> BTreeMap<u64, BTreeMap<O, isize>>
where
    I: differential_dataflow::ExchangeData + std::hash::Hash + Sync,
    O: differential_dataflow::ExchangeData + Ord + Clone + Sync,
    F: for<'a> FnOnce(
            differential_dataflow::VecCollection<'a, u64, I>,
        ) -> differential_dataflow::VecCollection<'a, u64, O>
        + Send
        + Sync
        + 'static,
{
    use differential_dataflow::input::Input;
    use timely::dataflow::operators::Capture;
    let rx = timely::example(move |scope| {
        let (mut handle, coll) = scope.new_collection::<I, isize>();
        let rx = build(coll).inner.capture();
        for epoch in 0..epochs {
            handle.advance_to(epoch);
            for (_, i) in inputs.iter().filter(|(t, _)| *t == epoch) {
                handle.insert(i.clone());
            }
        }
        rx
    });
    accumulate_by_epoch(rx, epochs)
}

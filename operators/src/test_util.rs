//! Helpers for dataflow tests.

use std::sync::mpsc::Receiver;

use timely::dataflow::operators::capture::Event;

/// Every record captured from a `Vec` stream, in arrival order (timestamps dropped).
pub fn captured<T, D>(rx: Receiver<Event<T, Vec<D>>>) -> Vec<D> {
    rx.try_iter()
        .flat_map(|event| match event {
            Event::Messages(_, data) => data,
            Event::Progress(_) => Vec::new(),
        })
        .collect()
}

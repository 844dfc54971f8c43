//! Per-tenant event counts by event type.
//!
//! # Inputs
//! `(tenant_id, event_type)` insertions, one per accepted event.
//!
//! # Outputs
//! `((tenant_id, event_type), count)`: a retraction of the old count and an insertion of the
//! new one whenever a count changes.
//!
//! # State
//! One arrangement keyed by `(tenant_id, event_type)` (interned [`super::name::Name`]s in
//! the pipeline): at most tenants × event types keys.

use custody_operators::record::Epoch;
use differential_dataflow::{ExchangeData, Hashable, VecCollection};

/// Counts events per key (`(tenant, type)`).
pub fn event_counts<'scope, K: ExchangeData + Hashable>(
    events: VecCollection<'scope, Epoch, K>,
) -> VecCollection<'scope, Epoch, (K, isize)> {
    events.count()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use differential_dataflow::input::Input;
    use timely::dataflow::operators::Capture;

    use super::*;
    use crate::views::oracle::{accumulate_by_epoch, lcg};

    /// The incremental view equals a from-scratch count at every epoch.
    #[test]
    fn oracle_matches_recomputation() {
        for seed in 1..=5u64 {
            let mut rng = lcg(seed);
            let epochs: Vec<Vec<(String, String)>> = (0..8)
                .map(|_| {
                    (0..rng() % 40)
                        .map(|_| (format!("t{}", rng() % 4), format!("TYPE_{}", rng() % 3)))
                        .collect()
                })
                .collect();
            let input = epochs.clone();
            let rx = timely::example(move |scope| {
                let (mut handle, coll) = scope.new_collection::<(String, String), isize>();
                let rx = event_counts(coll).inner.capture();
                for (epoch, batch) in input.into_iter().enumerate() {
                    handle.advance_to(epoch as u64);
                    for row in batch {
                        handle.insert(row);
                    }
                }
                rx
            });
            let states = accumulate_by_epoch(rx, 8);
            let mut expected: BTreeMap<(String, String), isize> = BTreeMap::new();
            for (epoch, batch) in epochs.iter().enumerate() {
                for row in batch {
                    *expected.entry(row.clone()).or_default() += 1;
                }
                let want: BTreeMap<((String, String), isize), isize> =
                    expected.iter().map(|(k, c)| ((k.clone(), *c), 1)).collect();
                assert_eq!(states[&(epoch as u64)], want, "seed {seed} epoch {epoch}");
            }
        }
    }
}

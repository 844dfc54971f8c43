//! Escalations still waiting for a human past their SLA, detected as time passes.
//!
//! # Inputs
//! - the escalations still waiting for a decision (`Pending` of [`super::reviews`]);
//! - `clock`: the pipeline's wall clock (UTC micros), one value at a time; the driver moves it
//!   at every epoch, and opens an epoch on a timer when no input arrives, so a breach shows up
//!   even when nothing else happens.
//!
//! # Outputs
//! `((tenant_id, escalation_event_id), SlaBreach)` for every escalation with no decision whose
//! deadline (`presented_at + sla_seconds`) is before the clock. The row leaves the view when a
//! decision arrives (a late decision then counts in `over_sla` of the latency views).
//!
//! # State and its bound
//! Undecided escalations (open work) and the current clock.

use custody_operators::record::Epoch;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

use super::hitl_latency::{Escalation, EscalationFact};

/// One row of the SLA breaches view.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SlaBreach {
    /// The escalation.
    pub escalation_event_id: String,
    /// The agent waiting on it.
    pub agent_id: String,
    /// Its risk tier.
    pub risk_tier: String,
    /// When it was presented, UTC micros.
    pub presented_us: i64,
    /// When the SLA ran out, UTC micros.
    pub deadline_us: i64,
}

impl SlaBreach {
    fn new(id: &str, e: &EscalationFact) -> SlaBreach {
        SlaBreach {
            escalation_event_id: id.to_string(),
            agent_id: e.agent_id.clone(),
            risk_tier: e.risk_tier.clone(),
            presented_us: e.presented_us,
            deadline_us: deadline(e),
        }
    }
}

/// When the escalation's SLA runs out.
pub fn deadline(e: &EscalationFact) -> i64 {
    e.presented_us
        .saturating_add(e.sla_s.saturating_mul(1_000_000))
}

/// Undecided escalations past their deadline at the current clock.
pub fn sla_breaches<'scope>(
    pending: VecCollection<'scope, Epoch, Escalation>,
    clock: VecCollection<'scope, Epoch, i64>,
) -> VecCollection<'scope, Epoch, ((String, String), SlaBreach)> {
    pending
        .map(|(key, e)| ((), (key, e)))
        .join_map(clock.map(|now| ((), now)), |_, (key, e), now| {
            (deadline(e) < *now).then(|| (key.clone(), SlaBreach::new(&key.1, e)))
        })
        .flat_map(|x| x)
}

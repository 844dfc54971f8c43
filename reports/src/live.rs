//! The live state of every view, as served over HTTP.
//!
//! Fed with the view changes of each epoch once that epoch is committed to the lake, so what
//! is served is always backed by a committed snapshot (the `epoch` field says which).

use std::collections::BTreeMap;

use custody_operators::record::{Epoch, HitlStats, ViewUpdate};
use serde::Serialize;

/// Current view contents, per tenant.
#[derive(Clone, Debug, Default)]
pub struct LiveViews {
    counts: BTreeMap<String, BTreeMap<String, i64>>,
    hitl: BTreeMap<String, HitlStats>,
    epoch: Option<Epoch>,
}

/// The event counts of one tenant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventCountsView {
    /// Tenant.
    pub tenant_id: String,
    /// Last committed epoch reflected.
    pub epoch: Option<Epoch>,
    /// Total events.
    pub total: i64,
    /// Count per event type.
    pub by_type: BTreeMap<String, i64>,
}

/// The HITL latency statistics of one tenant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HitlLatencyView {
    /// Tenant.
    pub tenant_id: String,
    /// Last committed epoch reflected.
    pub epoch: Option<Epoch>,
    /// The statistics (all zero before the first completed review).
    #[serde(flatten)]
    pub stats: HitlStats,
}

impl LiveViews {
    /// Applies one committed epoch's changes. Retractions are applied before insertions.
    pub fn apply(&mut self, epoch: Epoch, updates: &[ViewUpdate]) {
        let mut ordered: Vec<&ViewUpdate> = updates.iter().collect();
        ordered.sort_by_key(|u| match u {
            ViewUpdate::EventCount { diff, .. } | ViewUpdate::HitlLatency { diff, .. } => *diff > 0,
        });
        for update in ordered {
            match update {
                ViewUpdate::EventCount {
                    tenant_id,
                    event_type,
                    count,
                    diff,
                } => {
                    let tenant = self.counts.entry(tenant_id.clone()).or_default();
                    if *diff > 0 {
                        tenant.insert(event_type.clone(), *count);
                    } else if tenant.get(event_type) == Some(count) {
                        tenant.remove(event_type);
                    }
                }
                ViewUpdate::HitlLatency {
                    tenant_id,
                    stats,
                    diff,
                } => {
                    if *diff > 0 {
                        self.hitl.insert(tenant_id.clone(), stats.clone());
                    } else if self.hitl.get(tenant_id) == Some(stats) {
                        self.hitl.remove(tenant_id);
                    }
                }
            }
        }
        self.epoch = Some(epoch);
    }

    /// Tenants with at least one event.
    pub fn tenants(&self) -> Vec<String> {
        self.counts.keys().cloned().collect()
    }

    /// The event counts of `tenant`, if it has events.
    pub fn event_counts(&self, tenant: &str) -> Option<EventCountsView> {
        let by_type = self.counts.get(tenant)?.clone();
        Some(EventCountsView {
            tenant_id: tenant.to_string(),
            epoch: self.epoch,
            total: by_type.values().sum(),
            by_type,
        })
    }

    /// The HITL statistics of `tenant`, if it has events.
    pub fn hitl_latency(&self, tenant: &str) -> Option<HitlLatencyView> {
        self.counts.get(tenant)?;
        Some(HitlLatencyView {
            tenant_id: tenant.to_string(),
            epoch: self.epoch,
            stats: self.hitl.get(tenant).cloned().unwrap_or_default(),
        })
    }

    /// Total events over all tenants.
    pub fn total_events(&self) -> i64 {
        self.counts.values().flat_map(|m| m.values()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(t: &str, ty: &str, count: i64, diff: i64) -> ViewUpdate {
        ViewUpdate::EventCount {
            tenant_id: t.into(),
            event_type: ty.into(),
            count,
            diff,
        }
    }

    #[test]
    fn applies_changes_in_any_order() {
        let mut live = LiveViews::default();
        live.apply(0, &[count("a", "X", 2, 1)]);
        live.apply(1, &[count("a", "X", 5, 1), count("a", "X", 2, -1)]);
        let v = live.event_counts("a").unwrap();
        assert_eq!((v.total, v.epoch), (5, Some(1)));
        assert!(live.event_counts("b").is_none());
        assert_eq!(live.hitl_latency("a").unwrap().stats, HitlStats::default());
    }
}

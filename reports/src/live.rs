//! The live state of every view, as served over HTTP.
//!
//! Fed with the view changes of each epoch once that epoch is committed to the lake, so what
//! is served is always backed by a committed snapshot (the `epoch` field says which).

use std::collections::BTreeMap;

use custody_operators::record::{ChainedEvent, Epoch, HitlStats, ViewId, ViewUpdate};
use serde::Serialize;

/// Current view contents, per tenant.
#[derive(Clone, Debug, Default)]
pub struct LiveViews {
    counts: BTreeMap<String, BTreeMap<String, i64>>,
    hitl: BTreeMap<String, HitlStats>,
    rows: BTreeMap<(ViewId, String), BTreeMap<String, String>>,
    coverage: BTreeMap<String, Coverage>,
    epoch: Option<Epoch>,
}

/// Which input a tenant's view state covers: the report rows' provenance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// Committed events.
    pub events: i64,
    /// First and last epoch holding the tenant's events.
    pub epochs: (Epoch, Epoch),
    /// Per source partition, the first and last offset of the tenant's events.
    pub offsets: BTreeMap<i32, (i64, i64)>,
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
        ordered.sort_by_key(|u| u.diff() > 0);
        for update in ordered {
            match update {
                ViewUpdate::Row {
                    view,
                    tenant_id,
                    key,
                    row,
                    diff,
                } => {
                    let rows = self.rows.entry((*view, tenant_id.clone())).or_default();
                    if *diff > 0 {
                        rows.insert(key.clone(), row.clone());
                    } else if rows.get(key) == Some(row) {
                        rows.remove(key);
                    }
                }
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

    /// Records which committed events the views now reflect.
    pub fn observe(&mut self, epoch: Epoch, events: &[ChainedEvent]) {
        for e in events {
            let c = self
                .coverage
                .entry(e.event.tenant_id.as_str().to_string())
                .or_insert_with(|| Coverage {
                    epochs: (epoch, epoch),
                    ..Coverage::default()
                });
            c.events += 1;
            c.epochs = (c.epochs.0.min(epoch), c.epochs.1.max(epoch));
            let o = c.offsets.entry(e.partition).or_insert((e.offset, e.offset));
            *o = (o.0.min(e.offset), o.1.max(e.offset));
        }
    }

    /// Forgets the coverage (before observing every committed event again).
    pub fn reset_coverage(&mut self) {
        self.coverage.clear();
    }

    /// What `tenant`'s view state covers.
    pub fn coverage(&self, tenant: &str) -> Option<&Coverage> {
        self.coverage.get(tenant)
    }

    /// The rows of a keyed view for `tenant`, by key, as JSON.
    pub fn rows(&self, view: ViewId, tenant: &str) -> Option<&BTreeMap<String, String>> {
        self.rows.get(&(view, tenant.to_string()))
    }

    /// The rows of a keyed view for `tenant`, parsed.
    pub fn rows_as<T: serde::de::DeserializeOwned>(&self, view: ViewId, tenant: &str) -> Vec<T> {
        self.rows(view, tenant)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect()
    }

    /// The last committed epoch reflected.
    pub fn epoch(&self) -> Option<Epoch> {
        self.epoch
    }

    /// Tenants with at least one event.
    pub fn tenants(&self) -> Vec<String> {
        self.counts.keys().cloned().collect()
    }

    /// Whether `tenant` has events.
    pub fn has_tenant(&self, tenant: &str) -> bool {
        self.counts.contains_key(tenant)
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
